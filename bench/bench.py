"""registrar's benchmark: real Docker engine, real Consul agent, registrar as a subprocess.

Prints a table of figures; asserts nothing. Run it through bench/run.sh, which brings up the engine
and agent the way tests/run.sh does. Latencies are measured from the Docker event's own time
(``timeNano``) to the timestamp of registrar's ``service_registered`` / ``service_deregistered``
log line, which is written once the agent has answered the registration request.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import docker
import requests

IMAGE = os.environ.get("REGISTRAR_TEST_IMAGE", "registrar-test/busybox:2")
CONSUL = "http://127.0.0.1:8500"
SERVICE = IMAGE.rsplit("/", 1)[-1].split(":")[0]
"""The name registrar gives the test containers' services: the image's base name."""
LABEL = "registrar-bench"
TICKS = os.sysconf("SC_CLK_TCK")


def wait_until(probe: Callable[[], Any], what: str, timeout: float = 120, poll: float = 0.05) -> Any:
    """Poll gently: figures come from timestamps, so polling faster would only steal CPU from registrar."""
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out waiting for {what}")
        time.sleep(poll)
    return value


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid: int) -> float:
    """A process's resident memory, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


class Events:
    """The bench's own Docker event subscription: event time of start/die by container name, and
    every health_status event (time, status) by container name."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.times: dict[tuple[str, str], float] = {}
        self.health: dict[str, list[tuple[float, str]]] = {}
        filters = {"type": "container", "event": ["start", "die", "health_status"]}
        self.stream = client.api.events(decode=True, filters=filters)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for event in self.stream:
                name = event["Actor"]["Attributes"].get("name", "")
                action, _, status = event["Action"].partition(": ")
                if action == "health_status":
                    self.health.setdefault(name, []).append((event["timeNano"] / 1e9, status))
                else:
                    self.times[(action, name)] = event["timeNano"] / 1e9
        except Exception:
            pass

    def health_since(self, name: str, status: str, since: float) -> list[float]:
        """Times of the container's health_status events with this status, at or after ``since``."""
        return [t for t, s in self.health.get(name, []) if s == status and t >= since]

    def close(self) -> None:
        self.stream.close()


class Registrar:
    """``registrar run`` as a subprocess with its JSON log parsed as it grows."""

    running: ClassVar[list[Registrar]] = []
    """Every registrar started and not yet stopped: the bench stops them all, however it ends."""

    def __init__(self, host: str, workdir: Path, *flags: str, argv: list[str] | None = None) -> None:
        """``argv``: another daemon that writes the same JSON lines (bench/side_by_side.py's stand-in)."""
        self.host = host
        self.log_path = workdir / f"registrar-{uuid.uuid4().hex[:6]}.log"
        self.log_file = self.log_path.open("w")
        self.started = time.time()
        self.proc = subprocess.Popen(
            argv or [sys.executable, "-m", "registrar", "run", "--log-format", "json", "--hostname", host, *flags],
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
        )
        self._offset = 0
        self.lines: list[dict[str, Any]] = []
        Registrar.running.append(self)

    def read(self) -> list[dict[str, Any]]:
        with self.log_path.open() as f:
            f.seek(self._offset)
            chunk = f.read()
        complete, _, _rest = chunk.rpartition("\n")
        if complete:
            self._offset += len(complete) + 1
            for line in complete.splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                entry["t"] = datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()
                self.lines.append(entry)
        return self.lines

    def find(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        return [e for e in self.read() if e["event"] == event and all(e.get(k) == v for k, v in fields.items())]

    def since(self, t: float, event: str, **fields: Any) -> list[dict[str, Any]]:
        return [e for e in self.find(event, **fields) if e["t"] >= t]

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def rss_mib(self) -> float:
        return rss_mib(self.proc.pid)

    def stop(self) -> None:
        if self in Registrar.running:
            Registrar.running.remove(self)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log_file.close()


class Bench:
    def __init__(self, workdir: Path) -> None:
        self.client = docker.from_env(max_pool_size=16)
        self.http = requests.Session()
        self.host = f"bench-{uuid.uuid4().hex[:6]}"
        self.workdir = workdir
        self.containers: list[Any] = []
        self.rows: list[tuple[str, str, str]] = []
        self.events = Events(self.client)

    def row(self, what: str, figure: str, target: str = "") -> None:
        self.rows.append((what, figure, target))
        print(f"  {what:<58} {figure:>18}   {target}", flush=True)

    def owned(self, host: str = "") -> dict[str, Any]:
        """The agent's services of this host name (the bench's own by default)."""
        services = self.http.get(CONSUL + "/v1/agent/services", timeout=10).json()
        host = host or self.host
        return {k: v for k, v in services.items() if (v.get("Meta") or {}).get("registrar-host") == host}

    def index(self) -> str:
        return str(self.http.get(CONSUL + "/v1/catalog/services", timeout=10).headers["X-Consul-Index"])

    def run_container(self, name: str) -> Any:
        """What ``docker run -d`` does: create, then start (docker-py's run() would also inspect)."""
        api = self.client.api
        host_config = api.create_host_config(port_bindings={80: ("127.0.0.1", None)})
        created = api.create_container(IMAGE, name=name, labels={LABEL: "1"}, host_config=host_config,
                                       ports=[80], stop_signal="SIGKILL")  # fmt: skip
        api.start(created["Id"])
        c = self.client.containers.prepare_model({"Id": created["Id"], "Name": "/" + name})
        self.containers.append(c)
        return c

    def start_many(self, count: int, prefix: str, parallel: int = 8) -> list[Any]:
        with ThreadPoolExecutor(parallel) as pool:
            return list(pool.map(lambda i: self.run_container(f"{prefix}-{i}"), range(count)))

    def remove(self, containers: list[Any]) -> None:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda c: c.remove(force=True), containers))
        for c in containers:
            self.containers.remove(c)

    def cleanup(self) -> None:
        """Stop every daemon still running, remove the bench's containers and forget its services.

        Containers are also looked up by label and name, so that one whose start failed halfway
        (created, never tracked) goes too."""
        for reg in list(Registrar.running):
            reg.stop()
        self.events.close()
        self.remove(list(self.containers))
        for c in self.client.containers.list(all=True, filters={"label": LABEL, "name": self.host}):
            c.remove(force=True)
        self.forget()

    # The figures ---------------------------------------------------------------------------------

    def lags_one_at_a_time(
        self, daemons: Sequence[Registrar], samples: int
    ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
        """Start -> registered and die -> deregistered lags (ms) of each daemon, by its host name, with
        ``samples`` containers started and killed one at a time."""
        up: dict[str, list[float]] = {d.host: [] for d in daemons}
        down: dict[str, list[float]] = {d.host: [] for d in daemons}
        made = []
        for i in range(samples):
            time.sleep(0.2)  # one at a time: let the engine finish the previous container's teardown
            name = f"{self.host}-lat-{i}"
            c = self.run_container(name)
            start = wait_until(partial(self.events.times.get, ("start", name)), "start event")
            for d in daemons:
                done = wait_until(partial(d.find, "service_registered", service_id=f"{d.host}:{name}:80"), "a write")
                up[d.host].append((done[0]["t"] - start) * 1000)
            c.kill()
            die = wait_until(partial(self.events.times.get, ("die", name)), "die event")
            for d in daemons:
                gone = wait_until(partial(d.find, "service_deregistered", service_id=f"{d.host}:{name}:80"), "a write")
                down[d.host].append((gone[0]["t"] - die) * 1000)
            made.append(c)
        self.remove(made)
        return up, down

    def one_at_a_time(self, reg: Registrar, samples: int) -> None:
        ups, downs = self.lags_one_at_a_time([reg], samples)
        up, down = ups[reg.host], downs[reg.host]
        self.row(f"start -> registered, one at a time (n={samples}), p50", f"{pct(up, 50):.1f} ms", "<= 5.0 ms")
        self.row("start -> registered, one at a time, p99", f"{pct(up, 99):.1f} ms", "<= 12 ms")
        self.row(f"die -> deregistered, one at a time (n={samples}), p50", f"{pct(down, 50):.1f} ms", "<= 3.5 ms")
        self.row("die -> deregistered, one at a time, p99", f"{pct(down, 99):.1f} ms", "<= 20 ms")

    def burst_times(
        self, daemons: Sequence[Registrar], count: int, parallel: int, timeout: float = 60
    ) -> tuple[list[Any], dict[str, dict[str, float]], dict[str, float]]:
        """Start ``count`` containers, ``parallel`` at a time, and wait until every daemon registered them
        all, or ``timeout`` seconds after the last start: the containers, when each daemon registered
        each one (by host name, then container name; a daemon that missed some has fewer), and each
        daemon's CPU seconds from the first start until it had registered all it did."""
        cpu0 = {d.host: d.cpu_seconds() for d in daemons}
        made = self.start_many(count, f"{self.host}-burst{count}", parallel=parallel)
        deadline = time.monotonic() + timeout
        registered: dict[str, dict[str, float]] = {}
        cpu: dict[str, float] = {}
        for d in daemons:
            ids = {f"{d.host}:{c.name}:80": c.name for c in made}
            wait_until(partial(registered_all_or_late, d, set(ids), deadline), "burst", timeout=timeout + 10)
            cpu[d.host] = d.cpu_seconds() - cpu0[d.host]
            registered[d.host] = {
                ids[e["service_id"]]: e["t"] for e in d.find("service_registered") if e["service_id"] in ids
            }
        return made, registered, cpu

    def lags_from_start(self, registered: dict[str, float]) -> list[float]:
        """Lags (ms) from each container's start event to its registration (by container name)."""
        return [(t - self.events.times[("start", name)]) * 1000 for name, t in registered.items()]

    def burst(self, reg: Registrar, count: int, parallel: int, targets: tuple[str, str]) -> list[Any]:
        t0 = time.monotonic()
        made, registered_by, cpu_by = self.burst_times([reg], count, parallel)
        wall = time.monotonic() - t0
        registered, cpu = registered_by[reg.host], cpu_by[reg.host]
        what = f"burst of {count} ({parallel} at a time)"
        self.row(f"{what}: registered", f"{len(registered)}/{count}", f"{count}/{count}")
        if not registered:
            return made
        lags = self.lags_from_start(registered)
        after_last = (max(registered.values()) - max(self.events.times[("start", n)] for n in registered)) * 1000
        self.row(f"{what}: lag from start event, p50", f"{pct(lags, 50):.1f} ms", targets[0])
        self.row(f"{what}: lag from start event, p99", f"{pct(lags, 99):.1f} ms", targets[1])
        self.row(f"{what}: all registered after the last start", f"{after_last:.1f} ms")
        self.row(f"{what}: registrar's CPU", f"{cpu:.2f} s in {wall:.1f} s")
        return made

    def resyncs(self, count: int, rounds: int) -> tuple[list[dict[str, Any]], bool]:
        """registrar alone with ``--resync 1`` and ``count`` containers running: the ``reconcile_done``
        lines of ``rounds`` full reconciles once the first two are done (they bring the agent in sync)
        and the catalog holds the ``count`` services, and whether its X-Consul-Index stayed the same."""
        reg = Registrar(self.host, self.workdir, "--resync", "1")
        wait_until(lambda: len(reg.find("reconcile_done")) >= 2, "first resyncs")
        wait_until(lambda: self.in_catalog(self.host) >= count, "the catalog to catch up", timeout=60)
        index, first = self.index(), len(reg.find("reconcile_done"))
        wait_until(lambda: len(reg.find("reconcile_done")) >= first + rounds, "resyncs", timeout=60)
        done = reg.find("reconcile_done")[first : first + rounds]
        unchanged = self.index() == index
        reg.stop()
        return done, unchanged

    def resync(self, count: int, rounds: int = 5) -> float:
        """Median full-reconcile time with ``count`` containers in sync; checks no writes happen."""
        done, unchanged = self.resyncs(count, rounds)
        writes = sum(e["consul_write"] for e in done)
        assert all(e["services"] == count for e in done), done
        self.row(
            f"resync, {count} containers in sync: wall time (median of {rounds})",
            f"{statistics.median(e['duration_ms'] for e in done):.1f} ms",
            "<= 300 ms" if count == 200 else "",
        )
        self.row(
            f"resync, {count} in sync: requests per resync",
            f"consul {done[0]['consul_read']}r+{writes}w, docker {done[0]['docker_list']}+{done[0]['docker_inspect']}",
            "0 writes" if count == 200 else "",
        )
        if count == 200:
            self.row("resync, 200 in sync: catalog X-Consul-Index", "unchanged" if unchanged else "CHANGED",
                     "unchanged")  # fmt: skip
        return float(statistics.median(e["duration_ms"] for e in done))

    def health(self, reg: Registrar, samples: int) -> None:
        """Docker's health_status event -> registrar's health_updated line (written once the agent answered)."""
        name = f"{self.host}-health"
        check = f"{self.host}:{name}:80:docker-health"
        probe = {"test": ["CMD-SHELL", "test -f /tmp/ok"], "interval": 100_000_000, "retries": 1}
        c = self.client.containers.run(IMAGE, name=name, detach=True, labels={LABEL: "1"}, healthcheck=probe,
                                       ports={"80/tcp": ("127.0.0.1", None)}, stop_signal="SIGKILL")  # fmt: skip
        self.containers.append(c)
        wait_until(partial(reg.find, "service_registered", service_id=f"{self.host}:{name}:80"), "registration")
        lags = []
        for i in range(samples):
            healthy = i % 2 == 0
            status, want = ("healthy", "passing") if healthy else ("unhealthy", "critical")
            since = time.time()
            c.exec_run(["touch", "/tmp/ok"] if healthy else ["rm", "-f", "/tmp/ok"])
            event = wait_until(partial(self.events.health_since, name, status, since), "health_status event")[0]
            done = wait_until(partial(reg.since, event, "health_updated", check_id=check, status=want), "the update")
            lags.append((done[0]["t"] - event) * 1000)
        self.remove([c])
        self.row(f"health_status -> check status on the agent (n={samples}), p50", f"{pct(lags, 50):.1f} ms")
        self.row(f"health_status -> check status on the agent (n={samples}), p99", f"{pct(lags, 99):.1f} ms")

    def forget(self, host: str = "") -> None:
        """Deregister a host's services (the bench's own by default), and wait until the catalog has
        caught up: a cold start measured while the agent still syncs them would time the agent."""
        for service_id in self.owned(host):
            self.http.put(CONSUL + f"/v1/agent/service/deregister/{service_id}", timeout=10)
        host = host or self.host
        wait_until(partial(self.gone_from_catalog, host), f"the catalog to forget {host}'s services", timeout=60)

    def has(self, host: str, count: int) -> bool:
        """Whether the agent holds at least ``count`` services of ``host``."""
        return len(self.owned(host)) >= count

    def in_catalog(self, host: str) -> int:
        """How many instances of the test image's service from ``host`` the catalog holds."""
        params = {"filter": f'ServiceMeta["registrar-host"] == "{host}"'}
        return len(self.http.get(CONSUL + f"/v1/catalog/service/{SERVICE}", params=params, timeout=10).json())

    def gone_from_catalog(self, host: str) -> bool:
        """Whether the catalog holds no instance of the test image's service from ``host``."""
        return not self.in_catalog(host)

    def cold_start(self, count: int) -> None:
        self.forget()
        started = time.monotonic()
        reg = Registrar(self.host, self.workdir)
        wait_until(partial(self.has, self.host, count), "cold start registrations", timeout=60)
        elapsed = time.monotonic() - started
        rss = reg.rss_mib()
        reg.stop()
        target = {200: "<= 0.6 s", 500: "<= 1.5 s"}.get(count, "")
        self.row(f"cold start, {count} running: process start -> all registered", f"{elapsed:.2f} s", target)
        self.row(f"cold start, {count} running: resident memory then", f"{rss:.1f} MiB")

    def idle_usage(self, seconds: float) -> tuple[float, float]:
        """registrar alone (``--resync 30``) with the containers running, once it has settled: its CPU
        over ``seconds`` (percent of one core) and its resident memory (MiB) at the end."""
        reg = Registrar(self.host, self.workdir, "--resync", "30")
        wait_until(lambda: reg.find("reconcile_done"), "ready")
        time.sleep(2)  # let start-up work settle before measuring the idle state
        cpu0, t0 = reg.cpu_seconds(), time.monotonic()
        time.sleep(seconds)
        cpu = (reg.cpu_seconds() - cpu0) / (time.monotonic() - t0) * 100
        rss = reg.rss_mib()
        reg.stop()
        return cpu, rss

    def idle(self, seconds: float) -> None:
        cpu, rss = self.idle_usage(seconds)
        what = f"idle {seconds:.0f} s (resync 30 s, {len(self.containers)} containers): CPU"
        self.row(what, f"{cpu:.2f} % of a core", "<= 0.3 %")
        self.row(f"idle: resident memory ({len(self.containers)} containers)", f"{rss:.1f} MiB", "<= 40 MiB")


def registered_all(daemon: Registrar, ids: set[str], event: str = "service_registered") -> bool:
    """Whether the daemon has logged the registration (or ``event``) of every one of these service IDs."""
    return ids <= {e["service_id"] for e in daemon.find(event)}


def registered_all_or_late(daemon: Registrar, ids: set[str], deadline: float) -> bool:
    """Whether the daemon has registered all these service IDs, or the ``time.monotonic()`` deadline has passed."""
    return registered_all(daemon, ids) or time.monotonic() > deadline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=100, help="one-at-a-time latency samples")
    parser.add_argument("--health-samples", type=int, default=40, help="health_status latency samples")
    parser.add_argument("--idle", type=float, default=60, help="seconds of the idle measurement")
    parser.add_argument("--sizes", default="50,200,500", help="container counts for the reconcile figures")
    parser.add_argument("--bursts", default="100x8,300x16", help="bursts: COUNTxPARALLEL,...")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind through cleanup on SIGTERM too
    sizes = [int(s) for s in args.sizes.split(",") if s]
    bursts = [tuple(int(n) for n in b.split("x")) for b in args.bursts.split(",") if b]
    targets = {(100, 8): ("<= 12 ms", "<= 50 ms"), (300, 16): ("", "<= 100 ms")}

    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(Path(tmp))
        print(f"registrar benchmark: {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}, host id {bench.host}")
        try:
            reg = Registrar(bench.host, Path(tmp), "--resync", "30")
            wait_until(lambda: reg.find("reconcile_done"), "registrar ready")
            if args.samples:
                bench.one_at_a_time(reg, args.samples)
            if args.health_samples:
                bench.health(reg, args.health_samples)
            made = []
            for count, parallel in bursts:
                made += bench.burst(reg, count, parallel, targets.get((count, parallel), ("", "")))
            bench.row(f"resident memory after the bursts ({len(made)} containers)", f"{reg.rss_mib():.1f} MiB",
                      "<= 40 MiB")  # fmt: skip
            reg.stop()
            if not sizes:
                return
            bench.remove(made[100:])
            bench.start_many(200 - len(bench.containers), f"{bench.host}-more")
            bench.cold_start(200)
            bench.resync(200)
            if args.idle:
                bench.idle(args.idle)
            for size in sizes:
                if size == 200:
                    continue  # measured above
                have = len(bench.containers)
                if size < have:
                    bench.remove(bench.containers[size:])
                elif size > have:
                    bench.start_many(size - have, f"{bench.host}-n{size}")
                bench.cold_start(size)
                bench.resync(size, rounds=3)
        finally:
            bench.cleanup()


if __name__ == "__main__":
    main()
