"""registrar, the floor and a Go daemon of registrator's design, side by side on one engine and one agent.

Three daemons watch the same containers in one run, each under its own host name so that their
registrations never collide:

- registrar (``python -m registrar run``);
- the floor (bench/floor.py): the least a Python daemon can do on the timed paths, standard library
  only; registrar's targets are multiples of it;
- the Go stand-in of registrator (bench/standin; gliderlabs/registrator itself cannot be built on this
  machine): registrator's event loop, lock and Sync in Go's standard library.

Latencies run from the Docker event's own time to each daemon's log line, written once the agent
answered. Cold starts are timed for each daemon alone, alternately, on the same containers, from the
process's start to the log line of its last registration (its resident memory then is printed for
reference); the agent forgets each daemon's services after it, and the catalog catches up, before
the next one starts. Memory growth (started with a few containers, then more started), the in-sync
resync and the idle CPU are registrar's alone. The table gives each figure as registrar / floor /
Go, then registrar's ratio to the floor and to Go, then the target and whether it is met; it asserts
nothing. Run it through bench/run-side-by-side.sh, which builds the stand-in.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from bench.bench import Bench, Registrar, pct, registered_all, wait_until

HERE = Path(__file__).resolve().parent
STANDIN = HERE.parent / "build" / "standin"
FLOOR = HERE / "floor.py"
LIBRARIES = "requests,consul.base,structlog,click,prometheus_client,http.server"
"""The libraries ``registrar run`` imports before its first request: what the floor imports first for
the cold-start row that measures their cost (``floor.py -import``). prometheus_client and http.server
because the metrics are on by default (as the bench runs registrar); not docker-py (imported only for
a TCP DOCKER_HOST)."""

Target = tuple[str, float]
"""A target against another daemon: ("floor" or "Go", the largest ratio registrar may have to it).
A ratio of 1.0 against Go means below Go."""

LAG_TARGETS: dict[tuple[int, int], Sequence[Target]] = {(100, 8): [("floor", 1.1)]}
"""Targets of the bursts' lags (p50 and p99), by burst (count, parallel)."""
CPU_TARGETS: dict[tuple[int, int], Sequence[Target]] = {(300, 16): [("floor", 1.5), ("Go", 1.0)]}
"""Targets of the CPU per container start, by burst."""
COLD_TARGETS: Sequence[Target] = [("floor", 1.15), ("Go", 0.7)]
RSS_LIMIT_MIB, GROWTH_LIMIT_MIB, IDLE_LIMIT_PCT = 40.0, 2.0, 0.2
SETTLE_SECONDS = 5.0
"""How long after its last registration registrar's resident memory is read (the memory figures are of
a daemon at rest, past the transient garbage of the last requests)."""


def ratio(a: float, b: float) -> float | None:
    """a / b, or None when b is zero (a figure too small to measure, such as CPU under one tick)."""
    return a / b if b else None


def judged(text: str, met: bool | None) -> str:
    """A target with its verdict (none when it could not be judged)."""
    return text + {True: ": met", False: ": NOT MET", None: ": ?"}[met]


def registrar_version() -> str:
    """Where the ``python -m registrar`` the bench starts comes from, and its git commit."""
    try:
        where = subprocess.run(
            [sys.executable, "-c", "import registrar; print(registrar.__file__)"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
        package = Path(where).parent
        git = ["git", "-C", str(package)]
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "."], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        return f"unknown ({e})"
    if commit.returncode:
        return str(package)
    return f"{package} at {commit.stdout.strip()}" + (" with uncommitted changes" if dirty.stdout.strip() else "")


class SideBySide(Bench):
    """bench.py's Bench with three daemons: registrar under the bench's host name, the floor and the
    stand-in under theirs; its own table."""

    def __init__(self, workdir: Path, floor_workers: int) -> None:
        super().__init__(workdir)
        self.floor_host = self.host + "-floor"
        self.go_host = self.host + "-go"
        self.hosts = (self.host, self.floor_host, self.go_host)
        self.libs_host = self.host + "-floor-libs"
        """The floor importing registrar's libraries first (cold starts only)."""
        """registrar's, the floor's and the stand-in's host names, in the table's order."""
        self.floor_workers = floor_workers

    def start(self, host: str) -> Registrar:
        """The daemon of this host name: registrar under the bench's own, the floor and the stand-in under theirs."""
        argv = {
            self.floor_host: [sys.executable, str(FLOOR), "-hostname", host, "-workers", str(self.floor_workers)],
            self.go_host: [str(STANDIN), "-hostname", host],
            self.libs_host: [sys.executable, str(FLOOR), "-hostname", host, "-import", LIBRARIES],
        }.get(host)
        return Registrar(host, self.workdir, argv=argv)

    def daemons(self) -> list[Registrar]:
        """The three daemons, in the table's order, each ready (its first reconcile done)."""
        daemons = [self.start(host) for host in self.hosts]
        for daemon in daemons:
            wait_until(partial(daemon.find, "reconcile_done"), f"{daemon.host} ready")
        return daemons

    def ids(self, host: str, containers: Sequence[Any] | None = None) -> set[str]:
        """The service IDs a daemon of this host name gives the containers (the bench's all by default)."""
        return {f"{host}:{c.name}:80" for c in (self.containers if containers is None else containers)}

    # The table -----------------------------------------------------------------------------------

    def line(self, what: str, figure: str, ratios: str = "", target: str = "") -> None:
        """One row of the table: the figure, registrar's ratios to the floor and to Go, the target."""
        self.rows.append((what, figure, target))
        print(f"  {what:<58} {figure:>27} {ratios:>15}   {target}", flush=True)

    def trio(
        self, what: str, unit: str, values: Sequence[float], targets: Sequence[Target] = (), digits: int = 1
    ) -> None:
        """One figure of the three daemons: the values, registrar's ratios to the floor and to Go, and
        the targets with their verdict."""
        py, floor, go = values
        against = {"floor": ratio(py, floor), "Go": ratio(py, go)}
        ratios = " ".join(f"{'-' if r is None else f'{r:.2f}x':>7}" for r in against.values())
        texts, verdicts = [], []
        for name, most in targets:
            r = against[name]
            below = name == "Go" and most == 1.0
            texts.append(f"< {name}" if below else f"<= {most:g}x {name}")
            verdicts.append(None if r is None else r < most if below else r <= most)
        met = None if None in verdicts else all(verdicts)
        figure = " / ".join(f"{v:.{digits}f}" for v in values) + f" {unit}"
        self.line(what, figure, ratios, judged(" and ".join(texts), met) if texts else "")

    # The figures ---------------------------------------------------------------------------------

    def latencies(self, daemons: Sequence[Registrar], samples: int) -> None:
        """Start -> registered and die -> deregistered, one container at a time, all three watching."""
        up, down = self.lags_one_at_a_time(daemons, samples)
        for what, lags in (
            (f"start -> registered, one at a time (n={samples})", up),
            (f"die -> deregistered, one at a time (n={samples})", down),
        ):
            for q in (50, 99):
                targets = [("floor", 1.1)] if q == 50 else []
                self.trio(f"{what}, p{q}", "ms", [pct(lags[h], q) for h in self.hosts], targets)

    def bursts(self, daemons: Sequence[Registrar], count: int, parallel: int) -> list[Any]:
        """A burst with all three watching: how many each registered, the lags from the start events,
        and each process's CPU (from /proc) per container start."""
        made, registered, cpu = self.burst_times(daemons, count, parallel)
        what = f"burst of {count} ({parallel} at a time)"
        got = [len(registered[h]) for h in self.hosts]
        self.line(
            f"{what}: registered", " / ".join(map(str, got)) + f" of {count}", "", judged("all", min(got) == count)
        )
        lags = [self.lags_from_start(registered[h]) for h in self.hosts]
        if all(lags):
            for q in (50, 99):
                self.trio(
                    f"{what}: lag from start event, p{q}",
                    "ms",
                    [pct(lag, q) for lag in lags],
                    LAG_TARGETS.get((count, parallel), ()),
                )
        self.trio(
            f"{what}: CPU per container start",
            "ms",
            [cpu[h] / count * 1000 for h in self.hosts],
            CPU_TARGETS.get((count, parallel), ()),
            digits=2,
        )
        return made

    def resize(self, count: int) -> None:
        """Remove containers or start more until ``count`` run."""
        if count < len(self.containers):
            self.remove(self.containers[count:])
        elif count > len(self.containers):
            self.start_many(count - len(self.containers), f"{self.host}-n{count}-{len(self.containers)}")

    def registered_alone(self, daemon: Registrar) -> None:
        """Wait until the daemon has registered every container the bench runs."""
        wait_until(partial(registered_all, daemon, self.ids(daemon.host)), f"{daemon.host}'s registrations")

    def memory(self, low: int, high: int) -> None:
        """registrar alone, started with ``low`` containers running, then more started until ``high``
        run: its resident memory at rest (``SETTLE_SECONDS`` after it has registered each level), the
        growth between them, and at the moment the last of ``high`` is registered."""
        self.resize(low)
        self.forget(self.host)
        reg = self.start(self.host)
        self.registered_alone(reg)
        time.sleep(SETTLE_SECONDS)
        at_low = reg.rss_mib()
        self.resize(high)
        self.registered_alone(reg)
        at_once = reg.rss_mib()
        time.sleep(SETTLE_SECONDS)
        at_high = reg.rss_mib()
        reg.stop()
        self.forget(self.host)
        self.line(f"registrar alone: resident memory, {low} containers", f"{at_low:.1f} MiB")
        self.line(f"registrar alone: resident memory, {high}, as the last is registered", f"{at_once:.1f} MiB")
        self.line(
            f"registrar alone: resident memory, {high} (started with {low})",
            f"{at_high:.1f} MiB",
            "",
            judged(f"<= {RSS_LIMIT_MIB:g} MiB", at_high <= RSS_LIMIT_MIB),
        )
        self.line(
            f"registrar alone: memory growth, {low} -> {high} containers",
            f"{at_high - at_low:+.1f} MiB",
            "",
            judged(f"<= {GROWTH_LIMIT_MIB:g} MiB", at_high - at_low <= GROWTH_LIMIT_MIB),
        )

    def cold_start_alone(self, host: str) -> tuple[float, float]:
        """The daemon of this host name alone, from none of its services on the agent: seconds from
        its process's start to its last registration's log line, and its resident memory then (MiB).
        The agent forgets its services again afterwards."""
        self.forget(host)
        ids = self.ids(host)
        daemon = self.start(host)
        wait_until(partial(registered_all, daemon, ids), f"{host}'s cold start")
        rss = daemon.rss_mib()
        took = max(e["t"] for e in daemon.find("service_registered") if e["service_id"] in ids) - daemon.started
        daemon.stop()
        self.forget(host)
        return took, rss

    def cold_starts(self, rounds: int) -> None:
        """Cold starts of each daemon alone, alternately, with the containers that run; medians. The floor
        importing registrar's libraries first takes its turn too: how much of the gap is their import."""
        hosts = (*self.hosts, self.libs_host)
        took: dict[str, list[float]] = {h: [] for h in hosts}
        rss: dict[str, list[float]] = {h: [] for h in hosts}
        for _ in range(rounds):
            for host in hosts:
                seconds, mib = self.cold_start_alone(host)
                took[host].append(seconds)
                rss[host].append(mib)
        count = len(self.containers)
        self.trio(
            f"cold start, {count} running: all registered (median of {rounds})",
            "s",
            [statistics.median(took[h]) for h in self.hosts],
            COLD_TARGETS,
            digits=2,
        )
        self.trio(
            f"resident memory after the cold start of {count}", "MiB", [statistics.median(rss[h]) for h in self.hosts]
        )
        libs_took, floor_took = statistics.median(took[self.libs_host]), statistics.median(took[self.floor_host])
        self.line(
            f"  the floor importing registrar's libraries first, {count}",
            f"{libs_took:.2f} s (+{libs_took - floor_took:.2f}), {statistics.median(rss[self.libs_host]):.1f} MiB",
            f"{ratio(statistics.median(took[self.host]), libs_took) or 0:.2f}x",
        )

    def resync_and_idle(self, idle: float) -> None:
        """registrar alone: a resync with every container in sync (``--resync 1``) writes nothing; its idle CPU."""
        count, rounds = len(self.containers), 5
        done, unchanged = self.resyncs(count, rounds)
        what = f"registrar alone, resync of {count} in sync"
        if all("consul_write" in e for e in done):
            writes = sum(e["consul_write"] for e in done)
            self.line(f"{what}: Consul writes", f"{writes} in {len(done)} resyncs", "", judged("0", writes == 0))
            reads = statistics.median(e.get("consul_read", 0) for e in done)
            self.line(f"{what}: Consul reads", f"{reads:g} per resync")
        else:  # registrar's log changed: say so rather than end a long run on a KeyError
            self.line(f"{what}: Consul writes", "not in reconcile_done", "", judged("0", None))
        if all("duration_ms" in e for e in done):
            self.line(f"{what}: wall time", f"{statistics.median(e['duration_ms'] for e in done):.1f} ms")
        # Informative: on a shared agent, anyone's write moves the index.
        self.line(f"{what}: X-Consul-Index", "unchanged" if unchanged else "changed")
        if idle:
            cpu, _ = self.idle_usage(idle)
            target = judged(f"<= {IDLE_LIMIT_PCT:g} %", cpu <= IDLE_LIMIT_PCT)
            self.line(f"registrar alone, idle {idle:g} s with {count} (resync 30 s): CPU", f"{cpu:.2f} %", "", target)
        self.forget(self.host)

    def cleanup(self) -> None:
        """Bench's cleanup, and the floor's and the stand-in's services forgotten too."""
        super().cleanup()
        self.forget(self.floor_host)
        self.forget(self.go_host)
        self.forget(self.libs_host)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=100, help="one-at-a-time latency samples (default 100)")
    parser.add_argument("--bursts", default="100x8,300x16", help="bursts: COUNTxPARALLEL,... (default 100x8,300x16)")
    parser.add_argument(
        "--sizes",
        default="200,500",
        help="container counts of the cold starts (default 200,500); registrar's memory grows from a tenth of "
        "the largest (at most 50) to the largest; the resync and idle run with the smallest",
    )
    parser.add_argument("--rounds", type=int, default=3, help="cold starts of each daemon per size (default 3)")
    parser.add_argument(
        "--floor-workers", type=int, default=0, help="the floor's -workers: threads for its work (default 0: none)"
    )
    parser.add_argument("--idle", type=float, default=30, help="seconds of registrar's idle CPU (default 30; 0: skip)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind through cleanup on SIGTERM too
    if not os.access(STANDIN, os.X_OK):
        raise SystemExit(f"bench: no Go stand-in at {STANDIN}; bench/run-side-by-side.sh builds it")
    bursts = [tuple(int(n) for n in b.split("x")) for b in args.bursts.split(",") if b]
    sizes = sorted({int(s) for s in args.sizes.split(",") if s}, reverse=True)  # largest first: then only removals
    with tempfile.TemporaryDirectory() as tmp:
        bench = SideBySide(Path(tmp), args.floor_workers)
        print(
            f"registrar / floor / Go stand-in of registrator, side by side: {time.strftime('%Y-%m-%d %H:%M')}, "
            f"{os.cpu_count()} cores, Python {platform.python_version()}"
        )
        print(f"  registrar: {registrar_version()}")
        print(
            f"  floor: bench/floor.py -workers {args.floor_workers}; Go: {STANDIN.relative_to(HERE.parent)}; "
            f"host names {', '.join(bench.hosts)}"
        )
        others = len(bench.client.containers.list())
        if others:
            print(f"  NOTE: the engine runs {others} other container(s): the daemons register them too, and any churn")
            print("  of theirs shows in every figure (the resync's writes and the idle CPU first)")
        print(f"  {'figure':<58} {'registrar / floor / Go':>27} {'/floor     /Go':>15}   target", flush=True)
        began = time.monotonic()
        try:
            daemons = bench.daemons()
            if args.samples:
                bench.latencies(daemons, args.samples)
            for count, parallel in bursts:
                bench.bursts(daemons, count, parallel)
            for daemon in daemons:
                daemon.stop()
            for host in bench.hosts:
                bench.forget(host)
            if sizes:
                bench.memory(min(50, max(1, sizes[0] // 10)), sizes[0])
                for size in sizes:
                    bench.resize(size)
                    bench.cold_starts(args.rounds)
                bench.resync_and_idle(args.idle)
        finally:
            bench.cleanup()
        print(f"  ({(time.monotonic() - began) / 60:.1f} minutes)")


if __name__ == "__main__":
    main()
