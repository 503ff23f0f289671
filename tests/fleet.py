"""Many Docker hosts and one Consul cluster on this machine, with real processes.

Each simulated host is its own Docker engine (own socket, data and exec roots, bridge and subnet,
published ports on its own loopback address 127.0.0.1N), its own Consul client agent on that
address, and its own ``registrar run``. Three Consul servers on 127.0.1.1-3 form the cluster the
client agents join. Everything is started by pid and stopped by pid, also when a test fails.

Used by tests/integration/test_fleet.py and bench/fleet.py; ``python -m tests.fleet`` brings the
fleet up by hand (see docs/guides/many-hosts.md).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dns.exception
import dns.resolver
import docker
import docker.errors
import requests

from tests.integration.harness import IMAGE, Consul, _alive, consul_binary, log_events, pings, wait_until

LABEL = "registrar-fleet"
SERVER_ADDRESSES = ("127.0.1.1", "127.0.1.2", "127.0.1.3")
# Consul's default raft timing is for slow cloud networks; 1 is its advice for production on good ones.
SERVER_HCL = "performance { raft_multiplier = 1 }"


def _processes() -> dict[int, tuple[int, str]]:
    """Every process: pid -> (parent pid, command line)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        out[int(entry.name)] = (ppid, cmdline)
    return out


def kill_tree(roots: list[int], mentioning: str = "") -> None:
    """SIGKILL these processes, every process whose command line names ``mentioning`` (an engine's
    containerd shims, which re-parent themselves to init), and all their descendants, at once."""
    table = _processes()
    doomed = {pid for pid in roots if pid in table}
    if mentioning:
        doomed |= {pid for pid, (_, cmd) in table.items() if mentioning in cmd and pid != os.getpid()}
    grew = True
    while grew:
        children = {pid for pid, (ppid, _) in table.items() if ppid in doomed} - doomed
        doomed |= children
        grew = bool(children)
    for pid in doomed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not any(_alive(p) for p in doomed), "killed processes to go", timeout=20)


class Process:
    """One long-lived process of the fleet, its output in a log file, started in / (it may outlive a checkout)."""

    def __init__(self, name: str, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.args = args
        self.log = log
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args, stdout=out, stderr=subprocess.STDOUT, cwd="/", env={**os.environ, **(self.env or {})}
            )

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        """Signal and reap; SIGKILL if it has not gone within ``timeout``."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def reap(self) -> None:
        """Forget a process killed from outside (kill_tree), collecting its exit status."""
        if self.proc is not None:
            self.proc.wait(20)
            self.proc = None


class Agent:
    """A Consul agent (server or client) with a data dir, reachable over HTTP on its own address."""

    def __init__(self, root: Path, node: str, address: str, server: bool) -> None:
        self.node, self.address, self.server = node, address, server
        self.data = root / "consul"
        self.url = f"http://{address}:8500"
        self.http = Consul(self.url)
        args = [consul_binary(), "agent", "-node", node, "-bind", address, "-client", address]
        args += ["-data-dir", str(self.data), "-retry-interval", "1s", "-log-level", "info"]
        for join in SERVER_ADDRESSES:
            args += ["-retry-join", join]
        if server:
            args += ["-server", "-bootstrap-expect", str(len(SERVER_ADDRESSES)), "-hcl", SERVER_HCL]
        self.process = Process(f"consul {node}", args, root / "consul.log")

    def start(self, fresh: bool = False) -> None:
        if fresh:
            shutil.rmtree(self.data, ignore_errors=True)
        self.data.mkdir(parents=True, exist_ok=True)
        self.process.start()

    def get(self, path: str, **params: Any) -> Any:
        return self.http.get(path, params=params).json()

    def close(self) -> None:
        """Close the HTTP client's connections (the process is stopped apart)."""
        self.http.close()

    def leader(self) -> str:
        try:
            return str(self.get("/v1/status/leader"))
        except (requests.RequestException, ValueError):
            return ""

    def ready(self) -> bool:
        """Answers, knows a leader, and is in the catalog as a node."""
        if not self.leader():
            return False
        try:
            return bool(self.get(f"/v1/catalog/node/{self.node}"))
        except (requests.RequestException, ValueError):
            return False

    def passing(self, service: str) -> set[tuple[str, str, int]]:
        """(node, address, port) of the passing instances of a service, as this agent's health API says."""
        try:
            entries = self.get(f"/v1/health/service/{service}", passing="1")
        except (requests.RequestException, ValueError):
            return set()
        return {(e["Node"]["Node"], e["Service"]["Address"], e["Service"]["Port"]) for e in entries}

    def srv(self, service: str) -> set[tuple[str, int]]:
        """(address, port) of the instances this agent's DNS interface answers for ``_service._tcp``."""
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [self.address]
        resolver.port = 8600
        resolver.use_edns(0, 0, 8192)  # as HAProxy asks; without EDNS Consul answers at most 3 records over UDP
        try:
            answer = resolver.resolve(f"_{service}._tcp.service.consul", "SRV", lifetime=2)
        except dns.resolver.NXDOMAIN:
            return set()
        except dns.exception.DNSException as e:
            raise AssertionError(f"{self.node}'s DNS interface did not answer: {e}") from e
        addresses = {
            rrset.name.to_text(): item.address
            for rrset in answer.response.additional
            if rrset.rdtype == 1
            for item in rrset
        }
        return {(addresses[r.target.to_text()], r.port) for r in answer}

    def catalog(self, service: str) -> list[tuple[str, str, str, int]]:
        """(node, service ID, address, port) of every catalog entry of a service, duplicates kept."""
        entries = self.get(f"/v1/catalog/service/{service}")
        return sorted((e["Node"], e["ServiceID"], e["ServiceAddress"], e["ServicePort"]) for e in entries)


class Host:
    """A simulated Docker host: engine, client agent and registrar, all on loopback address 127.0.0.1N."""

    def __init__(self, root: Path, n: int) -> None:
        self.n = n
        self.name = f"host{n}"
        self.address = f"127.0.0.{10 + n}"
        self.root = root / self.name
        self.root.mkdir(parents=True, exist_ok=True)
        self.bridge = f"regfleet{n}"
        self.socket = self.root / "docker.sock"
        self.docker_url = f"unix://{self.socket}"
        self.engine = Process(
            f"dockerd {self.name}",
            [
                "dockerd",
                "-H",
                self.docker_url,
                "--data-root",
                str(self.root / "data"),
                "--exec-root",
                str(self.root / "exec"),
                "--pidfile",
                str(self.root / "docker.pid"),
                "--bridge",
                self.bridge,
                "--ip",
                self.address,
                "--iptables=false",
            ],
            self.root / "dockerd.log",
        )
        self.agent = Agent(self.root, self.name, self.address, server=False)
        self.registrar = Process(
            f"registrar {self.name}",
            [
                sys.executable,
                "-m",
                "registrar",
                "run",
                "--hostname",
                self.name,
                "--docker-host",
                self.docker_url,
                "--retry-attempts",
                "-1",
                "--log-format",
                "json",
                "--metrics-addr",
                f"{self.address}:0",
                f"consul://{self.address}:8500",
            ],
            self.root / "registrar.log",
        )
        # A fixed API version: the engine may not be up yet (1.41 is Docker 20.10; newer engines accept it).
        self.docker = docker.DockerClient(base_url=self.docker_url, version="1.41", timeout=60)

    # Engine ------------------------------------------------------------------------------------

    def start_engine(self) -> None:
        if not Path(f"/sys/class/net/{self.bridge}").exists():
            subnet = f"172.30.{self.n}.1/24"
            for cmd in (
                ["ip", "link", "add", self.bridge, "type", "bridge"],
                ["ip", "addr", "add", subnet, "dev", self.bridge],
                ["ip", "link", "set", self.bridge, "up"],
            ):
                subprocess.run(cmd, check=True, capture_output=True)
        self.engine.start()

    def engine_up(self) -> bool:
        """The engine answers ``/_ping`` (asked on a socket of its own: docker-py leaks one per failed connect)."""
        return pings(self.socket)

    def run(self, labels: dict[str, str], restart: bool = False, **kwargs: Any) -> Any:
        """Start a busybox web container publishing port 80 on this host's address."""
        if restart:
            kwargs["restart_policy"] = {"Name": "always"}
        kwargs.setdefault("stop_signal", "SIGKILL")  # busybox httpd as PID 1 ignores SIGTERM
        return self.docker.containers.run(
            IMAGE, detach=True, labels={LABEL: "1", **labels}, ports={"80/tcp": (self.address, None)}, **kwargs
        )

    def running(self, service: str) -> set[tuple[str, str, int]]:
        """(node, address, host port) of this host's running containers of a service."""
        out = set()
        for c in self.docker.containers.list(filters={"label": [LABEL, f"SERVICE_NAME={service}"]}):
            for binding in (c.ports.get("80/tcp") or [])[:1]:
                out.add((self.name, binding["HostIp"], int(binding["HostPort"])))
        return out

    def remove_containers(self) -> None:
        for c in self.docker.containers.list(all=True, filters={"label": LABEL}):
            with contextlib.suppress(docker.errors.NotFound):
                c.remove(force=True)

    # Registrar ---------------------------------------------------------------------------------

    def log_events(self, event: str) -> int:
        """How many times registrar has logged ``event`` on this host (over all its runs)."""
        if not self.registrar.log.exists():
            return 0
        return sum(1 for e in log_events(self.registrar.log) if e.get("event") == event)

    def start_registrar(self) -> None:
        before = self.log_events("reconcile_done")
        self.registrar.start()
        wait_until(
            lambda: self.log_events("reconcile_done") > before or self.registrar.pid is None,
            f"{self.name}'s registrar to reconcile",
        )
        if self.registrar.pid is None:
            raise AssertionError(f"{self.name}'s registrar exited: see {self.registrar.log}")

    # The whole host ----------------------------------------------------------------------------

    def lose(self) -> None:
        """The host disappears at once: SIGKILL its agent, registrar, engine, containerd, shims, containers."""
        roots = [p for p in (self.agent.process.pid, self.registrar.pid, self.engine.pid) if p]
        kill_tree(roots, mentioning=str(self.root) + "/")
        for process in (self.agent.process, self.registrar, self.engine):
            process.reap()

    def stop(self) -> None:
        """Stop everything of this host, remove its containers, and its bridge; close its clients."""
        try:
            self.registrar.stop()
            if self.engine_up():
                self.remove_containers()
            self.agent.process.stop(signal.SIGKILL)  # no graceful leave: the whole cluster goes
            self.engine.stop(timeout=30)
            kill_tree([], mentioning=str(self.root) + "/")  # whatever an engine killed earlier left behind
        finally:
            self.docker.close()
            self.agent.close()
        unmount_under(self.root)
        # The cgroups of containers that died with a killed engine (no engine came back to remove them).
        with contextlib.suppress(OSError):
            for container in (self.root / "data" / "containers").iterdir():
                cgroups = Path("/sys/fs/cgroup")
                for group in [*cgroups.glob(f"docker/{container.name}"), *cgroups.glob(f"*/docker/{container.name}")]:
                    with contextlib.suppress(OSError):
                        group.rmdir()
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)


def unmount_under(root: Path) -> None:
    """Lazily unmount what a killed engine left mounted under its roots (deepest first)."""
    prefix = str(root) + "/"
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


class Fleet:
    """Three Consul servers and ``hosts`` simulated Docker hosts, under one work directory."""

    def __init__(self, root: Path, hosts: int = 3, image: str = IMAGE) -> None:
        self.root = root
        self.image = image
        self.servers = [
            Agent(self._dir(f"server{i + 1}"), f"server{i + 1}", address, server=True)
            for i, address in enumerate(SERVER_ADDRESSES)
        ]
        self.hosts = [Host(root, n) for n in range(1, hosts + 1)]

    def _dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def start(self) -> None:
        """Servers and engines first, then client agents and images, then one registrar per host."""
        for server in self.servers:
            server.start()
        for host in self.hosts:
            host.start_engine()
        for host in self.hosts:
            host.agent.start()
        wait_until(lambda: all(h.engine_up() for h in self.hosts), "every host's engine to answer", timeout=60)
        self.load_image(self.hosts)
        wait_until(lambda: all(s.leader() for s in self.servers), "the servers to elect a leader", timeout=60)
        wait_until(lambda: all(h.agent.ready() for h in self.hosts), "every client agent to join", timeout=60)
        with ThreadPoolExecutor(len(self.hosts)) as pool:
            list(pool.map(Host.start_registrar, self.hosts))

    def load_image(self, hosts: list[Host]) -> None:
        """``docker save`` the image once from the default engine, ``docker load`` it into each host's."""
        tar = self.root / "image.tar"
        if not tar.exists():
            subprocess.run(["docker", "save", "-o", str(tar), self.image], check=True, capture_output=True)
        for host in hosts:
            load = ["docker", "-H", host.docker_url, "load", "-q", "-i", str(tar)]
            subprocess.run(load, check=True, capture_output=True)

    def stop(self) -> None:
        """Stop and remove everything the fleet started (safe to call twice, and after a failure)."""
        errors = []
        for host in self.hosts:
            try:
                host.stop()
            except Exception as e:  # one host's trouble must not leave the others running
                errors.append(f"{host.name}: {e}")
        for server in self.servers:
            server.process.stop(signal.SIGKILL)
            server.close()
        unmount_under(self.root)
        if errors:
            raise RuntimeError("fleet: stopping left trouble: " + "; ".join(errors))

    # What users look at ------------------------------------------------------------------------

    def leader(self) -> Agent:
        """The server that is the raft leader now."""

        def find() -> Agent | None:
            live = [s for s in self.servers if s.process.pid is not None]
            for server in live:
                leader = server.leader()
                if leader:  # a server may name a leader that was just killed: only a live one counts
                    return next((s for s in live if leader.startswith(s.address + ":")), None)
            return None

        leader = wait_until(find, "a leader")
        assert leader is not None
        return leader

    def running(self, service: str) -> set[tuple[str, str, int]]:
        """(node, address, port) of every running container of a service on every live host."""
        return set().union(*(h.running(service) for h in self.hosts if h.engine_up()))


@contextlib.contextmanager
def fleet(root: Path | None = None, hosts: int = 3) -> Iterator[Fleet]:
    """A started fleet, stopped and removed on the way out whatever happens."""
    with contextlib.ExitStack() as stack:
        if root is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="registrar-fleet-")))
        f = Fleet(root, hosts)
        stack.callback(f.stop)
        f.start()
        yield f


def main() -> None:
    """``python -m tests.fleet``: bring the fleet up, print how to reach it, stop it on Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m tests.fleet", description=main.__doc__)
    parser.add_argument("--hosts", type=int, default=3, help="simulated Docker hosts (default 3)")
    parser.add_argument("--root", type=Path, help="work directory (default: a new temporary one)")
    args = parser.parse_args()
    stop: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):  # the handlers only set a flag; the loop below looks at it
        signal.signal(sig, lambda signum, _: stop.append(signum))
    with fleet(args.root, args.hosts) as f:
        print("fleet is up; Ctrl-C stops and removes it")
        for s in f.servers:
            print(f"  {s.node}: consul server http://{s.address}:8500")
        for h in f.hosts:
            print(f"  {h.name}: DOCKER_HOST={h.docker_url}  agent {h.agent.url}  DNS {h.address}:8600")
            print(f"         publish with -p {h.address}::PORT; registrar log {h.registrar.log}")
        while not stop:
            time.sleep(0.5)
        print("stopping the fleet")


if __name__ == "__main__":
    main()
