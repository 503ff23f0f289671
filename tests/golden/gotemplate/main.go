// Command gotemplate writes the golden file of registrar's Go template tests: each case's template,
// rendered by Go's own text/template against a container's inspect decoded into go-dockerclient's field
// names, with registrator's 13 tag functions; its output, or its error. Standard library only.
//
//	cd tests/golden/gotemplate && go run . cases.json ../../unit/payloads/gotemplate_golden.json
//
// The functions below behave as registrator's (gliderlabs/registrator, bridge/bridge.go, MIT licence:
// Copyright (c) 2014 Glider Labs), argument order and edge rules included; jsonParse reads the path as
// buger/jsonparser does for well-formed JSON, and httpGet answers from the cases' "http" table.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"runtime"
	"strings"
	"text/template"
	"time"
)

type Port string

type Container struct {
	ID              string            `json:"Id"`
	Created         time.Time         `json:"Created,omitempty"`
	Path            string            `json:"Path,omitempty"`
	Args            []string          `json:"Args,omitempty"`
	Config          *Config           `json:"Config,omitempty"`
	State           State             `json:"State,omitempty"`
	Image           string            `json:"Image,omitempty"`
	Node            *SwarmNode        `json:"Node,omitempty"`
	NetworkSettings *NetworkSettings  `json:"NetworkSettings,omitempty"`
	SysInitPath     string            `json:"SysInitPath,omitempty"`
	ResolvConfPath  string            `json:"ResolvConfPath,omitempty"`
	HostnamePath    string            `json:"HostnamePath,omitempty"`
	HostsPath       string            `json:"HostsPath,omitempty"`
	LogPath         string            `json:"LogPath,omitempty"`
	Name            string            `json:"Name,omitempty"`
	Driver          string            `json:"Driver,omitempty"`
	Mounts          []Mount           `json:"Mounts,omitempty"`
	Volumes         map[string]string `json:"Volumes,omitempty"`
	VolumesRW       map[string]bool   `json:"VolumesRW,omitempty"`
	HostConfig      *HostConfig       `json:"HostConfig,omitempty"`
	ExecIDs         []string          `json:"ExecIDs,omitempty"`
	GraphDriver     *GraphDriver      `json:"GraphDriver,omitempty"`
	RestartCount    int               `json:"RestartCount,omitempty"`
	AppArmorProfile string            `json:"AppArmorProfile,omitempty"`
	MountLabel      string            `json:"MountLabel,omitempty"`
	ProcessLabel    string            `json:"ProcessLabel,omitempty"`
	Platform        string            `json:"Platform,omitempty"`
	SizeRw          int64             `json:"SizeRw,omitempty"`
	SizeRootFs      int64             `json:"SizeRootFs,omitempty"`
}

type State struct {
	Status            string    `json:"Status,omitempty"`
	Running           bool      `json:"Running,omitempty"`
	Paused            bool      `json:"Paused,omitempty"`
	Restarting        bool      `json:"Restarting,omitempty"`
	OOMKilled         bool      `json:"OOMKilled,omitempty"`
	RemovalInProgress bool      `json:"RemovalInProgress,omitempty"`
	Dead              bool      `json:"Dead,omitempty"`
	Pid               int       `json:"Pid,omitempty"`
	ExitCode          int       `json:"ExitCode,omitempty"`
	Error             string    `json:"Error,omitempty"`
	StartedAt         time.Time `json:"StartedAt,omitempty"`
	FinishedAt        time.Time `json:"FinishedAt,omitempty"`
	Health            Health    `json:"Health,omitempty"`
}

type Health struct {
	Status        string        `json:"Status,omitempty"`
	FailingStreak int           `json:"FailingStreak,omitempty"`
	Log           []HealthCheck `json:"Log,omitempty"`
}

type HealthCheck struct {
	Start    time.Time `json:"Start,omitempty"`
	End      time.Time `json:"End,omitempty"`
	ExitCode int       `json:"ExitCode,omitempty"`
	Output   string    `json:"Output,omitempty"`
}

type SwarmNode struct {
	ID     string            `json:"ID,omitempty"`
	IP     string            `json:"IP,omitempty"`
	Addr   string            `json:"Addr,omitempty"`
	Name   string            `json:"Name,omitempty"`
	CPUs   int64             `json:"CPUs,omitempty"`
	Memory int64             `json:"Memory,omitempty"`
	Labels map[string]string `json:"Labels,omitempty"`
}

type Mount struct {
	Name        string
	Source      string
	Destination string
	Driver      string
	Mode        string
	RW          bool
}

type GraphDriver struct {
	Name string            `json:"Name,omitempty"`
	Data map[string]string `json:"Data,omitempty"`
}

type Config struct {
	Hostname          string              `json:"Hostname,omitempty"`
	Domainname        string              `json:"Domainname,omitempty"`
	User              string              `json:"User,omitempty"`
	Memory            int64               `json:"Memory,omitempty"`
	MemorySwap        int64               `json:"MemorySwap,omitempty"`
	MemoryReservation int64               `json:"MemoryReservation,omitempty"`
	KernelMemory      int64               `json:"KernelMemory,omitempty"`
	CPUShares         int64               `json:"CpuShares,omitempty"`
	CPUSet            string              `json:"Cpuset,omitempty"`
	PortSpecs         []string            `json:"PortSpecs,omitempty"`
	ExposedPorts      map[Port]struct{}   `json:"ExposedPorts,omitempty"`
	PublishService    string              `json:"PublishService,omitempty"`
	StopSignal        string              `json:"StopSignal,omitempty"`
	StopTimeout       int                 `json:"StopTimeout,omitempty"`
	Env               []string            `json:"Env,omitempty"`
	Cmd               []string            `json:"Cmd"`
	Shell             []string            `json:"Shell,omitempty"`
	DNS               []string            `json:"Dns,omitempty"`
	Image             string              `json:"Image,omitempty"`
	Volumes           map[string]struct{} `json:"Volumes,omitempty"`
	VolumeDriver      string              `json:"VolumeDriver,omitempty"`
	WorkingDir        string              `json:"WorkingDir,omitempty"`
	MacAddress        string              `json:"MacAddress,omitempty"`
	Entrypoint        []string            `json:"Entrypoint"`
	SecurityOpts      []string            `json:"SecurityOpts,omitempty"`
	OnBuild           []string            `json:"OnBuild,omitempty"`
	Mounts            []Mount             `json:"Mounts,omitempty"`
	Labels            map[string]string   `json:"Labels,omitempty"`
	AttachStdin       bool                `json:"AttachStdin,omitempty"`
	AttachStdout      bool                `json:"AttachStdout,omitempty"`
	AttachStderr      bool                `json:"AttachStderr,omitempty"`
	ArgsEscaped       bool                `json:"ArgsEscaped,omitempty"`
	Tty               bool                `json:"Tty,omitempty"`
	OpenStdin         bool                `json:"OpenStdin,omitempty"`
	StdinOnce         bool                `json:"StdinOnce,omitempty"`
	NetworkDisabled   bool                `json:"NetworkDisabled,omitempty"`
	VolumesFrom       string              `json:"VolumesFrom,omitempty"`
}

type NetworkSettings struct {
	Networks               map[string]ContainerNetwork `json:"Networks,omitempty"`
	IPAddress              string                      `json:"IPAddress,omitempty"`
	IPPrefixLen            int                         `json:"IPPrefixLen,omitempty"`
	MacAddress             string                      `json:"MacAddress,omitempty"`
	Gateway                string                      `json:"Gateway,omitempty"`
	Bridge                 string                      `json:"Bridge,omitempty"`
	Ports                  map[Port][]PortBinding      `json:"Ports,omitempty"`
	NetworkID              string                      `json:"NetworkID,omitempty"`
	EndpointID             string                      `json:"EndpointID,omitempty"`
	SandboxKey             string                      `json:"SandboxKey,omitempty"`
	GlobalIPv6Address      string                      `json:"GlobalIPv6Address,omitempty"`
	GlobalIPv6PrefixLen    int                         `json:"GlobalIPv6PrefixLen,omitempty"`
	IPv6Gateway            string                      `json:"IPv6Gateway,omitempty"`
	LinkLocalIPv6Address   string                      `json:"LinkLocalIPv6Address,omitempty"`
	LinkLocalIPv6PrefixLen int                         `json:"LinkLocalIPv6PrefixLen,omitempty"`
	SecondaryIPAddresses   []string                    `json:"SecondaryIPAddresses,omitempty"`
	SecondaryIPv6Addresses []string                    `json:"SecondaryIPv6Addresses,omitempty"`
}

type ContainerNetwork struct {
	Aliases             []string `json:"Aliases,omitempty"`
	MacAddress          string   `json:"MacAddress,omitempty"`
	GlobalIPv6PrefixLen int      `json:"GlobalIPv6PrefixLen,omitempty"`
	GlobalIPv6Address   string   `json:"GlobalIPv6Address,omitempty"`
	IPv6Gateway         string   `json:"IPv6Gateway,omitempty"`
	IPPrefixLen         int      `json:"IPPrefixLen,omitempty"`
	IPAddress           string   `json:"IPAddress,omitempty"`
	Gateway             string   `json:"Gateway,omitempty"`
	EndpointID          string   `json:"EndpointID,omitempty"`
	NetworkID           string   `json:"NetworkID,omitempty"`
	Links               []string `json:"Links,omitempty"`
}

type PortBinding struct {
	HostIP   string `json:"HostIp,omitempty"`
	HostPort string `json:"HostPort,omitempty"`
}

type HostConfig struct {
	Binds             []string               `json:"Binds,omitempty"`
	CapAdd            []string               `json:"CapAdd,omitempty"`
	CapDrop           []string               `json:"CapDrop,omitempty"`
	ContainerIDFile   string                 `json:"ContainerIDFile,omitempty"`
	PortBindings      map[Port][]PortBinding `json:"PortBindings,omitempty"`
	Links             []string               `json:"Links,omitempty"`
	DNS               []string               `json:"Dns,omitempty"`
	DNSOptions        []string               `json:"DnsOptions,omitempty"`
	DNSSearch         []string               `json:"DnsSearch,omitempty"`
	ExtraHosts        []string               `json:"ExtraHosts,omitempty"`
	VolumesFrom       []string               `json:"VolumesFrom,omitempty"`
	UsernsMode        string                 `json:"UsernsMode,omitempty"`
	NetworkMode       string                 `json:"NetworkMode,omitempty"`
	IpcMode           string                 `json:"IpcMode,omitempty"`
	PidMode           string                 `json:"PidMode,omitempty"`
	UTSMode           string                 `json:"UTSMode,omitempty"`
	RestartPolicy     RestartPolicy          `json:"RestartPolicy,omitempty"`
	Privileged        bool                   `json:"Privileged,omitempty"`
	PublishAllPorts   bool                   `json:"PublishAllPorts,omitempty"`
	ReadonlyRootfs    bool                   `json:"ReadonlyRootfs,omitempty"`
	AutoRemove        bool                   `json:"AutoRemove,omitempty"`
	Memory            int64                  `json:"Memory,omitempty"`
	MemorySwap        int64                  `json:"MemorySwap,omitempty"`
	MemoryReservation int64                  `json:"MemoryReservation,omitempty"`
	NanoCPUs          int64                  `json:"NanoCpus,omitempty"`
	CPUShares         int64                  `json:"CpuShares,omitempty"`
	ShmSize           int64                  `json:"ShmSize,omitempty"`
	GroupAdd          []string               `json:"GroupAdd,omitempty"`
	SecurityOpt       []string               `json:"SecurityOpt,omitempty"`
	Runtime           string                 `json:"Runtime,omitempty"`
	LogConfig         LogConfig              `json:"LogConfig,omitempty"`
	Tmpfs             map[string]string      `json:"Tmpfs,omitempty"`
	Sysctls           map[string]string      `json:"Sysctls,omitempty"`
}

type RestartPolicy struct {
	Name              string `json:"Name,omitempty"`
	MaximumRetryCount int    `json:"MaximumRetryCount,omitempty"`
}

type LogConfig struct {
	Type   string            `json:"Type,omitempty"`
	Config map[string]string `json:"Config,omitempty"`
}

// tagFunctions are registrator's template functions, with its argument order and its edge rules (an
// index past what Go allows panics, which text/template reports as the call's error).
func tagFunctions(client *http.Client) template.FuncMap {
	pick := func(i int, s []string) string {
		if i < 0 {
			i = -i
			if i >= len(s) {
				return s[0]
			}
			return s[len(s)-i]
		}
		if i >= len(s) {
			return s[len(s)-1]
		}
		return s[i]
	}
	return template.FuncMap{
		"strSlice": func(v string, i ...int) string {
			if len(i) == 1 && len(v) >= i[0] {
				return v[i[0]:]
			}
			if len(i) == 2 && len(v) >= i[0] && len(v) >= i[1] {
				if i[0] == 0 {
					return v[:i[1]]
				}
				if i[1] < i[0] {
					return v[i[0]:]
				}
				return v[i[0]:i[1]]
			}
			return v
		},
		"sIndex":  pick,
		"mIndex":  func(k string, m map[string]string) string { return m[k] },
		"toUpper": strings.ToUpper,
		"toLower": strings.ToLower,
		"replace": func(n int, old, new, v string) string { return strings.Replace(v, old, new, n) },
		"join":    func(sep string, s []string) string { return strings.Join(s, sep) },
		"split":   func(sep, v string) []string { return strings.Split(v, sep) },
		"splitIndex": func(i int, sep, v string) string {
			return pick(i, strings.Split(v, sep))
		},
		"matchFirstElement": func(r string, s []string) string {
			re := regexp.MustCompile(r)
			for _, e := range s {
				if re.MatchString(e) {
					return e
				}
			}
			return ""
		},
		"matchAllElements": func(r string, s []string) []string {
			var m []string
			re := regexp.MustCompile(r)
			for _, e := range s {
				if re.MatchString(e) {
					m = append(m, e)
				}
			}
			return m
		},
		"httpGet": func(url string) []byte {
			res, err := client.Get(url)
			if err != nil {
				return []byte("")
			}
			defer res.Body.Close()
			body, err := io.ReadAll(res.Body)
			if err != nil {
				return []byte("")
			}
			return body
		},
		"jsonParse": func(b []byte, k string) string {
			return string(jsonPath(b, strings.Split(k, "::")))
		},
	}
}

// jsonPath is the value at keys ("name", or "[N]" in an array): a string without its quotes and not
// unescaped, anything else as its JSON text; nil when it is not there.
func jsonPath(doc []byte, keys []string) []byte {
	raw := json.RawMessage(bytes.TrimSpace(doc))
	for _, key := range keys {
		if strings.HasPrefix(key, "[") && strings.HasSuffix(key, "]") {
			var list []json.RawMessage
			var n int
			if json.Unmarshal(raw, &list) != nil || json.Unmarshal([]byte(key[1:len(key)-1]), &n) != nil || n < 0 || n >= len(list) {
				return nil
			}
			raw = list[n]
			continue
		}
		var object map[string]json.RawMessage
		if json.Unmarshal(raw, &object) != nil {
			return nil
		}
		value, ok := object[key]
		if !ok {
			return nil
		}
		raw = value
	}
	if !json.Valid(raw) {
		return nil
	}
	if len(raw) > 1 && raw[0] == '"' {
		return raw[1 : len(raw)-1]
	}
	return raw
}

type table map[string]string

// RoundTrip answers from the table, so that the goldens do not depend on a network.
func (t table) RoundTrip(req *http.Request) (*http.Response, error) {
	body, ok := t[req.URL.String()]
	if !ok {
		return nil, errors.New("no such URL in the cases")
	}
	rec := httptest.NewRecorder()
	rec.WriteString(body)
	return rec.Result(), nil
}

type input struct {
	Containers map[string]json.RawMessage `json:"containers"`
	HTTP       table                      `json:"http"`
	Cases      []struct {
		Name      string `json:"name"`
		Template  string `json:"template"`
		Container string `json:"container"`
		Python    string `json:"python,omitempty"`
	} `json:"cases"`
}

type result struct {
	Name      string  `json:"name"`
	Template  string  `json:"template"`
	Container string  `json:"container"`
	Output    *string `json:"output,omitempty"`
	Error     string  `json:"error,omitempty"`
	Python    string  `json:"python,omitempty"`
}

func main() {
	data, err := os.ReadFile(os.Args[1])
	if err != nil {
		panic(err)
	}
	var in input
	if err := json.Unmarshal(data, &in); err != nil {
		panic(err)
	}
	funcs := tagFunctions(&http.Client{Transport: in.HTTP, Timeout: 5 * time.Second})
	out := struct {
		Go         string                     `json:"go"`
		Containers map[string]json.RawMessage `json:"containers"`
		HTTP       table                      `json:"http"`
		Cases      []result                   `json:"cases"`
	}{Go: "text/template of " + runtime.Version(), Containers: in.Containers, HTTP: in.HTTP}
	for _, c := range in.Cases {
		r := result{Name: c.Name, Template: c.Template, Container: c.Container, Python: c.Python}
		var container Container
		if err := json.Unmarshal(in.Containers[c.Container], &container); err != nil {
			panic(c.Name + ": " + err.Error())
		}
		t, err := template.New("tags").Funcs(funcs).Parse(c.Template)
		if err == nil {
			var b strings.Builder
			if err = t.Execute(&b, &container); err == nil {
				s := b.String()
				r.Output = &s
			}
		}
		if err != nil {
			r.Error = err.Error()
		}
		out.Cases = append(out.Cases, r)
	}
	f, err := os.Create(os.Args[2])
	if err != nil {
		panic(err)
	}
	defer f.Close()
	enc := json.NewEncoder(f)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		panic(err)
	}
}
