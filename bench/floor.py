"""The floor: the least a Python daemon can do to register containers, standard library only.

The bench times registrar against this program (bench/side_by_side.py). It does what registrator does
on the timed paths and nothing else: no labels, checks, retries, ownership or health. One thread
reads the Docker event stream (``http.client`` over the unix socket, filtered to start and die) and,
for each ``start``, inspects and registers one service per published port on keep-alive
connections; for each ``die`` it deregisters what it registered. With ``-workers N`` (N > 0) that
work runs on N threads instead of the event thread. At start it lists the running containers and
inspects and registers them on 8 threads. Service IDs are ``<hostname>:<container name>:<port>``,
the name is the image's base name (``-<port>`` appended when a container publishes several). It
writes one JSON line per registration once the agent has answered, in the shape of registrar's log.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib
import json
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

OUT = threading.Lock()
LOCAL = threading.local()


class UnixConnection(http.client.HTTPConnection):
    """An HTTP connection to the engine's unix socket."""

    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=None)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def log(event: str, **fields: Any) -> None:
    """One JSON line in the shape of registrar's log, stamped now."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
    line = json.dumps({"event": event, "level": "info", "timestamp": stamp, **fields})
    with OUT:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class Floor:
    """The daemon: what it registered, by container ID, and its connections."""

    def __init__(self, hostname: str, socket_path: str, consul: str) -> None:
        self.hostname, self.socket_path, self.consul = hostname, socket_path, consul
        self.registered: dict[str, list[str]] = {}

    def connections(self) -> tuple[http.client.HTTPConnection, http.client.HTTPConnection]:
        """This thread's keep-alive connections to the engine and the agent."""
        if not hasattr(LOCAL, "docker"):
            host, _, port = self.consul.partition(":")
            LOCAL.docker = UnixConnection(self.socket_path)
            LOCAL.consul = http.client.HTTPConnection(host, int(port), timeout=10)
        return LOCAL.docker, LOCAL.consul

    def get(self, path: str) -> Any:
        """A GET from the engine: the decoded JSON body, or None unless it answered 200."""
        docker, _ = self.connections()
        docker.request("GET", path)
        response = docker.getresponse()
        body = response.read()
        return json.loads(body) if response.status == 200 else None

    def put(self, path: str, body: bytes = b"") -> bool:
        """A PUT to the agent: whether it answered 200."""
        _, consul = self.connections()
        consul.request("PUT", path, body=body)
        response = consul.getresponse()
        response.read()
        return response.status == 200

    def add(self, container_id: str) -> None:
        """Inspect a container and register one service per published port."""
        c = self.get(f"/containers/{container_id}/json")
        if c is None:
            return
        name = c["Name"].lstrip("/")
        image = c["Config"]["Image"].split(":", 1)[0].rsplit("/", 1)[-1]
        ports = sorted(p for p, bindings in (c["NetworkSettings"]["Ports"] or {}).items() if bindings)
        ids = []
        for port in ports:
            binding = c["NetworkSettings"]["Ports"][port][0]
            number, _, proto = port.partition("/")
            service_id = f"{self.hostname}:{name}:{number}" + (":udp" if proto == "udp" else "")
            body = {"ID": service_id, "Name": image + (f"-{number}" if len(ports) > 1 else ""),
                    "Address": binding["HostIp"], "Port": int(binding["HostPort"]),
                    "Meta": {"registrar-host": self.hostname}}  # fmt: skip
            if self.put("/v1/agent/service/register", json.dumps(body).encode()):
                ids.append(service_id)
                log("service_registered", service_id=service_id)
        self.registered[container_id] = ids

    def remove(self, container_id: str) -> None:
        """Deregister what was registered for a container."""
        for service_id in self.registered.pop(container_id, []):
            if self.put(f"/v1/agent/service/deregister/{service_id}"):
                log("service_deregistered", service_id=service_id)

    def follow(self, workers: int) -> None:
        """Subscribe, list and register what runs, then act on each start and die."""
        stream = UnixConnection(self.socket_path)
        filters = json.dumps({"type": ["container"], "event": ["start", "die"]})
        stream.request("GET", "/events?filters=" + filters.replace(" ", ""))
        events = stream.getresponse()
        log("registrar_started")
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(self.add, [c["Id"] for c in self.get("/containers/json")]))
        log("reconcile_done")
        work = ThreadPoolExecutor(workers) if workers else None
        while line := events.readline():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            act = {"start": self.add, "die": self.remove}.get(event.get("Action"))
            if act is not None:
                if work is None:
                    act(event["Actor"]["ID"])
                else:
                    work.submit(act, event["Actor"]["ID"])


def main() -> None:
    """Parse the options (Go-style single dashes, as the stand-in's) and follow events until stopped."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-hostname", required=True)
    parser.add_argument("-docker-socket", default="/var/run/docker.sock")
    parser.add_argument("-consul", default="127.0.0.1:8500")
    parser.add_argument("-workers", type=int, default=0, help="threads for start/die work (0: the event thread)")
    parser.add_argument(
        "-import",
        dest="modules",
        default="",
        help="modules to import first, comma-separated (what the libraries of a real daemon cost at start)",
    )
    args = parser.parse_args()
    for module in filter(None, args.modules.split(",")):
        importlib.import_module(module)
    with contextlib.suppress(KeyboardInterrupt):
        Floor(args.hostname, args.docker_socket, args.consul).follow(args.workers)


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    main()
