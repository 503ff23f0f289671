// A stand-in for gliderlabs/registrator in the benchmark: its design, in Go's standard library.
//
// registrator itself cannot be built here (its Go modules cannot be fetched), so bench/side_by_side.py
// measures registrar against this program instead. It does what registrator v7 does on the paths the
// bench times, in the same order, and no more:
//
//   - subscribe to Docker events, then Sync: list running containers and, under the bridge's lock,
//     inspect and register each one, one after another (bridge.Sync -> bridge.add);
//   - on each "start" event, a goroutine takes the lock, inspects the container and registers one
//     service per published port (bridge.Add); on each "die", a goroutine takes the lock and
//     deregisters what that container had registered (bridge.RemoveOnExit, -deregister always);
//   - service ID "<hostname>:<container name>:<port>", name the image's base name (with "-<port>"
//     when a container publishes several ports), address and port those of the host binding.
//
// It is leaner than registrator (no go-dockerclient or consul/api layers, no retries, no TTL
// timer), so a registrar faster than this stand-in is faster than registrator. It writes one JSON
// line per registration once the agent has answered, in the shape of registrar's log, so the bench
// reads both daemons the same way; its services carry Meta registrar-host=<hostname> only so that
// the bench can tell them apart (registrar ignores services of other hosts).
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path"
	"sort"
	"strings"
	"sync"
	"time"
)

type inspected struct {
	Name   string
	Config struct {
		Image string
	}
	NetworkSettings struct {
		Ports map[string][]struct {
			HostIp   string
			HostPort string
		}
	}
}

type registration struct {
	ID      string
	Name    string
	Address string
	Port    int
	Tags    []string
	Meta    map[string]string
}

type bridge struct {
	sync.Mutex
	hostname string
	docker   *http.Client
	consul   *http.Client
	consulAt string
	services map[string][]string // container ID -> service IDs
	out      sync.Mutex
}

func (b *bridge) log(event string, fields map[string]any) {
	fields["event"] = event
	fields["level"] = "info"
	fields["timestamp"] = time.Now().UTC().Format("2006-01-02T15:04:05.000000Z")
	line, _ := json.Marshal(fields)
	b.out.Lock()
	os.Stdout.Write(append(line, '\n'))
	b.out.Unlock()
}

func (b *bridge) inspect(id string) (*inspected, error) {
	resp, err := b.docker.Get("http://docker/containers/" + id + "/json")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("inspect %s: %s", id, resp.Status)
	}
	var c inspected
	return &c, json.NewDecoder(resp.Body).Decode(&c)
}

func (b *bridge) put(url string, body []byte) error {
	req, err := http.NewRequest("PUT", "http://"+b.consulAt+url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := b.consul.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("PUT %s: %s", url, resp.Status)
	}
	return nil
}

// add is bridge.add: inspect, then register one service per published port (the lock is held).
func (b *bridge) add(id string) {
	if _, ok := b.services[id]; ok {
		return
	}
	c, err := b.inspect(id)
	if err != nil {
		b.log("error", map[string]any{"error": err.Error()})
		return
	}
	name := strings.TrimPrefix(c.Name, "/")
	image := path.Base(strings.SplitN(c.Config.Image, ":", 2)[0])
	var ports []string
	for port, bindings := range c.NetworkSettings.Ports {
		if len(bindings) > 0 {
			ports = append(ports, port)
		}
	}
	sort.Strings(ports)
	var ids []string
	for _, port := range ports {
		binding := c.NetworkSettings.Ports[port][0]
		number, proto, _ := strings.Cut(port, "/")
		r := registration{ID: b.hostname + ":" + name + ":" + number, Name: image, Address: binding.HostIp,
			Meta: map[string]string{"registrar-host": b.hostname}, Tags: []string{}}
		if proto == "udp" {
			r.ID += ":udp"
		}
		if len(ports) > 1 {
			r.Name += "-" + number
		}
		fmt.Sscan(binding.HostPort, &r.Port)
		body, _ := json.Marshal(r)
		if err := b.put("/v1/agent/service/register", body); err != nil {
			b.log("error", map[string]any{"error": err.Error()})
			continue
		}
		ids = append(ids, r.ID)
		b.log("service_registered", map[string]any{"service_id": r.ID})
	}
	b.services[id] = ids
}

// Add is bridge.Add (one goroutine per start event).
func (b *bridge) Add(id string) {
	b.Lock()
	defer b.Unlock()
	b.add(id)
}

// RemoveOnExit is bridge.RemoveOnExit with -deregister always (one goroutine per die event).
func (b *bridge) RemoveOnExit(id string) {
	b.Lock()
	defer b.Unlock()
	for _, sid := range b.services[id] {
		if err := b.put("/v1/agent/service/deregister/"+sid, nil); err != nil {
			b.log("error", map[string]any{"error": err.Error()})
			continue
		}
		b.log("service_deregistered", map[string]any{"service_id": sid})
	}
	delete(b.services, id)
}

// Sync is bridge.Sync at start: list the running containers and add each, one after another.
func (b *bridge) Sync() error {
	b.Lock()
	defer b.Unlock()
	resp, err := b.docker.Get("http://docker/containers/json")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var listing []struct{ Id string }
	if err := json.NewDecoder(resp.Body).Decode(&listing); err != nil {
		return err
	}
	for _, c := range listing {
		b.add(c.Id)
	}
	return nil
}

func main() {
	hostname := flag.String("hostname", "", "the host name in service IDs")
	socket := flag.String("docker-socket", "/var/run/docker.sock", "the Docker engine's socket")
	consulAt := flag.String("consul", "127.0.0.1:8500", "the Consul agent's HTTP address")
	flag.Parse()
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", *socket)
	}
	b := &bridge{
		hostname: *hostname,
		docker:   &http.Client{Transport: &http.Transport{DialContext: dial, MaxIdleConnsPerHost: 64}},
		consul:   &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 10 * time.Second},
		consulAt: *consulAt,
		services: map[string][]string{},
	}
	// Subscribe before listing, as registrator does, so nothing between the two is missed.
	events, err := (&http.Client{Transport: &http.Transport{DialContext: dial}}).Get(
		`http://docker/events?filters={"type":["container"],"event":["start","die"]}`)
	if err != nil {
		fmt.Fprintln(os.Stderr, "standin:", err)
		os.Exit(1)
	}
	b.log("registrar_started", map[string]any{})
	if err := b.Sync(); err != nil {
		fmt.Fprintln(os.Stderr, "standin:", err)
		os.Exit(1)
	}
	b.log("reconcile_done", map[string]any{})
	scanner := bufio.NewScanner(events.Body)
	scanner.Buffer(make([]byte, 1<<20), 1<<20)
	for scanner.Scan() {
		var msg struct {
			Status string `json:"status"`
			ID     string `json:"id"`
		}
		if json.Unmarshal(scanner.Bytes(), &msg) != nil {
			continue
		}
		switch msg.Status {
		case "start":
			go b.Add(msg.ID)
		case "die":
			go b.RemoveOnExit(msg.ID)
		}
	}
}
