"""Helpers for tests against the real Docker engine and Consul agent that tests/run.sh starts."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import requests
from docker.transport import unixconn

T = TypeVar("T")
IMAGE = os.environ.get("REGISTRAR_TEST_IMAGE", "registrar-test/busybox:2")
CONSUL = os.environ.get("REGISTRAR_TEST_CONSUL", "http://127.0.0.1:8500")
TEST_LABEL = "registrar-test"
DEADLINE = 20.0


def wait_until(probe: Callable[[], T], what: str, timeout: float = DEADLINE) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port free on ``address`` now."""
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def pings(socket_path: str | Path) -> bool:
    """A Docker or Podman engine answers ``GET /_ping`` on this unix socket. Asked on a socket of its own,
    closed whatever happens: docker-py's client leaves the socket of a failed connect to the garbage collector,
    so a client polled while its engine is down would leak one per try."""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(socket_path))
            s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return s.recv(64).split(b" ")[1:2] == [b"200"]
    except OSError:
        return False


HAPROXY_CONFIG = Path(__file__).parents[2] / "deploy" / "haproxy.cfg"

# Serves until SIGTERM, then keeps serving for 3 s while it "shuts down", then exits 0.
SLOW_STOP = "hostname > /www/index.html; httpd -f -p 80 -h /www & pid=$!; trap 'sleep 3; kill $pid; exit 0' TERM; wait"


@contextlib.contextmanager
def haproxy(service: str, listen: str, consul_dns: str, log: Path) -> Iterator[str]:
    """HAProxy from Debian with deploy/haproxy.cfg balancing ``service`` over Consul DNS; yields its URL."""
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    env = {"APP_SERVICE": service, "LISTEN": listen, "CONSUL_DNS": consul_dns, "PATH": "/usr/sbin:/usr/bin"}
    with log.open("w") as out:
        args = [binary, "-db", "-f", str(HAPROXY_CONFIG)]
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield f"http://{listen}/"
        finally:
            proc.terminate()
            proc.wait(10)


def answers(url: str, tries: int = 40) -> set[str]:
    """Host names that answer through the balancer over ``tries`` fresh requests."""
    seen = set()
    for _ in range(tries):
        try:
            reply = requests.get(url, timeout=2, headers={"Connection": "close"})
        except requests.RequestException:
            continue
        if reply.status_code == 200:
            seen.add(reply.text.strip())
    return seen


class Steady:
    """Requests at a steady rate through a balancer in a thread, each outcome kept ("ok" or what failed)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.outcomes: list[str] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._send)

    def _send(self) -> None:
        with requests.Session() as session:
            while not self.done.is_set():
                try:
                    reply = session.get(self.url, timeout=2, headers={"Connection": "close"})
                    self.outcomes.append("ok" if reply.status_code == 200 else f"HTTP {reply.status_code}")
                except requests.RequestException as e:
                    self.outcomes.append(type(e).__name__)
                self.done.wait(0.01)  # the request rate, not a wait for a condition

    def __enter__(self) -> Steady:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(10)

    def more(self, count: int) -> None:
        """Wait for ``count`` more outcomes than there are now."""
        target = len(self.outcomes) + count
        wait_until(lambda: len(self.outcomes) >= target, f"{count} more requests through the balancer")

    def failed(self) -> list[str]:
        return [o for o in self.outcomes if o != "ok"]


def unique_host(prefix: str = "t") -> str:
    """A host identity of one test, so tests never see each other's registrations."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Consul:
    """Reads what a user would look at on the agent."""

    def __init__(
        self, url: str = CONSUL, token: str = "", verify: bool | str = True, cert: Any = None, unix_socket: str = ""
    ) -> None:
        self.url = "http+unix://consul" if unix_socket else url
        self.session = requests.Session()
        if unix_socket:
            self.session.mount("http+unix://", UnixAdapter("http+unix://" + unix_socket))
        self.session.trust_env = False  # else REQUESTS_CA_BUNDLE in the environment overrides verify
        self.session.verify = verify
        self.session.cert = cert
        if token:
            self.session.headers["X-Consul-Token"] = token

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        response = self.session.get(self.url + path, timeout=5, **kwargs)
        response.raise_for_status()
        return response

    def up(self) -> bool:
        try:
            return ":" in self.get("/v1/status/leader").text
        except requests.RequestException:
            return False

    def services(self, host: str) -> dict[str, Any]:
        """The agent's services that the registrar with this --hostname owns."""
        return {
            k: v
            for k, v in self.get("/v1/agent/services").json().items()
            if (v.get("Meta") or {}).get("registrar-host") == host
        }

    def checks(self, service_id: str) -> list[dict[str, Any]]:
        return [c for c in self.get("/v1/agent/checks").json().values() if c.get("ServiceID") == service_id]

    def register(self, body: dict[str, Any]) -> None:
        self.session.put(self.url + "/v1/agent/service/register", json=body, timeout=5).raise_for_status()

    def put(self, path: str, body: dict[str, Any]) -> Any:
        response = self.session.put(self.url + path, json=body, timeout=5)
        response.raise_for_status()
        return response.json()

    def deregister(self, service_id: str) -> None:
        self.session.put(self.url + f"/v1/agent/service/deregister/{service_id}", timeout=5)

    def clean(self, host: str) -> None:
        for service_id in self.services(host):
            self.deregister(service_id)

    def close(self) -> None:
        """Close the session's connections (idempotent)."""
        self.session.close()


class _UnixConnection(unixconn.UnixHTTPConnection):  # type: ignore[misc]  # docker-py has no type hints
    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_socket)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _UnixPool(unixconn.UnixHTTPConnectionPool):  # type: ignore[misc]
    def _new_conn(self) -> _UnixConnection:
        return _UnixConnection(self.base_url, self.socket_path, self.timeout)


class UnixAdapter(unixconn.UnixHTTPAdapter):  # type: ignore[misc]
    """docker-py's requests adapter for a unix socket, except that a failed connect closes its socket: docker-py's
    leaves it to the garbage collector, one leaked socket per try while a test waits for an agent to listen."""

    def get_connection(self, url: str, proxies: Any = None) -> _UnixPool:
        with self.pools.lock:
            pool: _UnixPool | None = self.pools.get(url)
            if pool is None:
                pool = self.pools[url] = _UnixPool(url, self.socket_path, self.timeout, maxsize=self.max_pool_size)
            return pool


def registrar_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "registrar", *args]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a one-shot registrar command; capture its output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        registrar_cmd(*args), capture_output=True, text=True, env=full_env, timeout=timeout, check=False
    )


def log_events(path: Path) -> list[dict[str, Any]]:
    """The lines of a JSON log file of registrar's, parsed (a line that is not JSON as a "raw" event)."""
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            out.append({"event": "raw", "line": line})
    return out


class Daemon:
    """``registrar run`` as a subprocess, with its JSON log lines readable."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self.log_file = log_path.open("w")
        self.proc = subprocess.Popen(
            registrar_cmd("run", "--log-format", "json", *args),
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )

    def events(self) -> list[dict[str, Any]]:
        return log_events(self.log_path)

    def count(self, event: str) -> int:
        return sum(1 for e in self.events() if e.get("event") == event)

    def wait_for_event(self, event: str, count: int = 1, timeout: float = DEADLINE) -> None:
        done = lambda: self.count(event) >= count or self.proc.poll() is not None  # noqa: E731
        try:
            wait_until(done, f"log event {event}", timeout)
        except AssertionError as e:
            tail = "\n".join(self.log_path.read_text().splitlines()[-40:])
            raise AssertionError(f"{e} (seen {self.count(event)} of {count}); registrar's log ends:\n{tail}") from None
        assert self.proc.poll() is None, f"registrar exited {self.proc.returncode}:\n{self.log_path.read_text()}"

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()
        return self.proc.returncode


def consul_binary() -> str:
    """The consul binary tests/run.sh chose (REGISTRAR_CONSUL), else the one on PATH."""
    import shutil

    found = os.environ.get("REGISTRAR_CONSUL") or shutil.which("consul")
    if not found:
        raise AssertionError("no consul binary: run the suite through tests/run.sh")
    return found


class ConsulAgent:
    """A Consul dev agent owned by one test, on its own loopback ports, that it may stop and restart."""

    PORTS: ClassVar[dict[str, int]] = {
        "http": 18500,
        "https": -1,
        "dns": 18600,
        "serf_lan": 18301,
        "serf_wan": 18302,
        "server": 18300,
        "grpc": -1,
    }

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.url = f"http://127.0.0.1:{self.PORTS['http']}"
        self.uri = f"consul://127.0.0.1:{self.PORTS['http']}"
        self.hcl: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = Consul(self.url)

    def configure(self, hcl: str, client: Consul | None = None, **ports: int) -> None:
        """Extra agent configuration (HCL), other ports, and the client tests read it with."""
        self.hcl.append(hcl)
        self.ports = {**self.PORTS, **ports}
        if client is not None:
            self.client.close()
            self.client = client

    def start(self) -> None:
        ports = getattr(self, "ports", self.PORTS)
        hcl = "ports { " + ", ".join(f"{k} = {v}" for k, v in ports.items()) + " }"
        args = ["-hcl", hcl]
        for extra in self.hcl:
            args += ["-hcl", extra]
        with (self.workdir / "consul-agent.log").open("ab") as log:  # the agent keeps its own descriptor
            self.proc = subprocess.Popen(
                [consul_binary(), "agent", "-dev", "-client", "127.0.0.1", "-bind", "127.0.0.1", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        wait_until(self.client.up, "the test's Consul agent to elect itself", timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        wait_until(lambda: not self.client.up(), "the test's Consul agent to stop")

    def close(self) -> None:
        """Close the client's connections (after ``stop``)."""
        self.client.close()

    def tls(self) -> dict[str, str]:
        """Make a CA, a server and a client certificate with ``consul tls`` in the work directory."""
        for args in (
            ["ca", "create"],
            ["cert", "create", "-server", "-dc", "dc1"],
            ["cert", "create", "-client", "-dc", "dc1"],
        ):
            subprocess.run([consul_binary(), "tls", *args], cwd=self.workdir, check=True, capture_output=True)
        files = {
            "ca": "consul-agent-ca.pem",
            "server_cert": "dc1-server-consul-0.pem",
            "server_key": "dc1-server-consul-0-key.pem",
            "client_cert": "dc1-client-consul-0.pem",
            "client_key": "dc1-client-consul-0-key.pem",
        }
        return {k: str(self.workdir / v) for k, v in files.items()}


class Engine:
    """A service tests/run.sh started (its pid file in REGISTRAR_STATE): a container engine, or the Consul
    dev agent; a test may stop and start it."""

    name = ""
    """The process name (``/proc/<pid>/comm``) and the stem of its pid and log files."""
    stem = ""
    """The stem of its pid and log files when it is not ``name`` (a second engine of the same program)."""

    def __init__(self) -> None:
        self.state = Path(os.environ.get("REGISTRAR_STATE", "/tmp/registrar-services"))
        self.pid_file = self.state / f"{self.stem or self.name}.pid"

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        """The environment it runs in, when not the tests' own."""
        return None

    def available(self) -> bool:
        """A pid file that names a running engine (a stale file from an earlier run does not count)."""
        try:
            pid = int(self.pid_file.read_text())
            return _alive(pid) and Path(f"/proc/{pid}/comm").read_text().strip() == self.name
        except (OSError, ValueError):
            return False

    def restart(self, ping: Callable[[], bool]) -> None:
        """Stop the engine (every event stream on it ends) and start it again as tests/run.sh did."""
        self.stop()
        self.start(ping)

    def stop(self) -> None:
        pid = int(self.pid_file.read_text())
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not _alive(pid), f"{self.name} to stop", timeout=90)

    def start(self, ping: Callable[[], bool]) -> None:
        with (self.state / f"{self.stem or self.name}.log").open("ab") as log:
            # In /, not this checkout: the engine may outlive it (Podman's conmon needs its cwd to exist).
            proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, cwd="/", env=self.environment()
            )
        self.pid_file.write_text(str(proc.pid))
        _OUTLIVING.append(proc)  # runs on after the test; tests/run.sh stops it by its pid file
        wait_until(ping, f"{self.name} to answer again", timeout=90)


class DockerEngine(Engine):
    """The dockerd that tests/run.sh started."""

    name = "dockerd"
    socket = "/var/run/docker.sock"
    """Where it serves its API (``command`` names no other)."""

    def command(self) -> list[str]:
        return ["dockerd", "--ip", "127.0.0.1"]


class Docker26Engine(DockerEngine):
    """Debian trixie's Docker 26 that tests/run.sh started beside the first engine, on a socket, data, bridge
    and containerd of its own (deploy/services.sh's ``start_docker26``, whose command this one repeats)."""

    stem = "docker26"

    def __init__(self) -> None:
        super().__init__()
        self.packages = Path(os.environ.get("REGISTRAR_DOCKER26", "/nonexistent"))
        """Where deploy/bootstrap.sh unpacked trixie's docker.io and containerd."""
        self.socket = os.environ.get("REGISTRAR_DOCKER26_SOCKET", str(self.state / "docker26.sock"))
        self.url = f"unix://{self.socket}"

    def command(self) -> list[str]:
        root = self.state / "docker26"
        return [
            str(self.packages / "usr/sbin/dockerd"),
            *("-H", self.url, "--data-root", str(root / "data"), "--exec-root", str(root / "exec")),
            *("--pidfile", str(root / "dockerd.pid"), "--bridge", "regdocker26", "--ip", "127.0.0.1"),
            *("--iptables=false", "--userland-proxy-path", str(self.packages / "usr/sbin/docker-proxy")),
        ]

    def environment(self) -> dict[str, str]:
        """trixie's containerd and shims first on PATH, then bookworm's runc (trixie's needs glibc 2.38)."""
        path = f"{self.packages}/usr/sbin:{self.packages}/usr/bin:{os.environ.get('PATH', '')}"
        return {**os.environ, "PATH": path}


def docker_engine_named(docker_host: str) -> DockerEngine:
    """The engine of tests/run.sh's that DOCKER_HOST names: Docker 26 on its own socket, else the first."""
    docker26 = Docker26Engine()
    return docker26 if docker_host == docker26.url else DockerEngine()


class ConsulDevAgent(Engine):
    """The Consul dev agent on 127.0.0.1 that tests/run.sh started (deploy/services.sh's command)."""

    name = "consul"

    def command(self) -> list[str]:
        dev = ["agent", "-dev", "-client", "127.0.0.1", "-bind", "127.0.0.1"]
        return [consul_binary(), *dev, "-hcl", "enable_script_checks = true"]


class PodmanEngine(Engine):
    """The ``podman system service`` that tests/run.sh started, serving Podman's Docker-compatible API."""

    name = "podman"

    def __init__(self) -> None:
        super().__init__()
        self.socket = os.environ.get("REGISTRAR_PODMAN_SOCKET", str(self.state / "podman.sock"))
        self.url = f"unix://{self.socket}"

    def command(self) -> list[str]:
        return ["podman", "system", "service", "--time=0", self.url]


_OUTLIVING: list[subprocess.Popen[bytes]] = []
"""Processes a test starts that outlive it (kept referenced, so no finalizer warns they still run)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
