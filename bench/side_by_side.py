"""registrar against a Go daemon of registrator's design, side by side on one engine and one agent.

gliderlabs/registrator cannot be built on this machine (its Go modules cannot be fetched), so the Go
side is bench/standin: registrator's event loop, lock and Sync in Go's standard library (see its
header). Both daemons watch the same containers in one run, as the speed issue measured them;
latencies run from the Docker event's own time to each daemon's log line, written once the agent
answered. Cold starts are measured for each daemon alone, alternately, on the same containers.
Prints a table; asserts nothing. Run it through bench/run-side-by-side.sh.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from bench.bench import Bench, Registrar, pct, wait_until

STANDIN = Path(__file__).resolve().parent.parent / "build" / "standin"


class SideBySide(Bench):
    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.go_host = self.host + "-go"

    def daemons(self) -> tuple[Registrar, Registrar]:
        """registrar and the stand-in, each ready (its first reconcile done)."""
        py = Registrar(self.host, self.workdir, "--resync", "30")
        go = Registrar(self.go_host, self.workdir, argv=[str(STANDIN), "-hostname", self.go_host])
        for daemon in (py, go):
            wait_until(partial(daemon.find, "reconcile_done"), "a daemon ready")
        return py, go

    def pair(self, what: str, unit: str, py: float, go: float) -> None:
        """One figure of both daemons: registrar's, the stand-in's, and which is faster."""
        if py <= go:
            verdict = f"registrar faster, {go / py:.2f}x" if py else ""
        else:
            verdict = f"Go faster, {py / go:.2f}x" if go else ""
        self.row(what, f"{py:.1f} / {go:.1f} {unit}", verdict)

    def latencies(self, daemons: tuple[Registrar, Registrar], samples: int) -> None:
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
        py, go = (d.host for d in daemons)
        for what, lags in ((f"start -> registered, one at a time (n={samples})", up),
                           (f"die -> deregistered, one at a time (n={samples})", down)):  # fmt: skip
            for q in (50, 99):
                self.pair(f"{what}, p{q}", "ms", pct(lags[py], q), pct(lags[go], q))

    def bursts(self, daemons: tuple[Registrar, Registrar], count: int, parallel: int) -> list[object]:
        cpu0 = [d.cpu_seconds() for d in daemons]
        made = self.start_many(count, f"{self.host}-burst{count}", parallel=parallel)
        names = [c.name for c in made]
        lags: list[list[float]] = []
        for d in daemons:
            ids = {f"{d.host}:{n}:80": n for n in names}
            wait_until(partial(registered_all, d, set(ids)), "a burst")
            registered = {e["service_id"]: e["t"] for e in d.find("service_registered") if e["service_id"] in ids}
            lags.append([(registered[sid] - self.events.times[("start", n)]) * 1000 for sid, n in ids.items()])
        cpu = [d.cpu_seconds() - c for d, c in zip(daemons, cpu0, strict=True)]
        what = f"burst of {count} ({parallel} at a time)"
        for q in (50, 99):
            self.pair(f"{what}: lag from start event, p{q}", "ms", pct(lags[0], q), pct(lags[1], q))
        self.row(f"{what}: CPU used", f"{cpu[0]:.2f} / {cpu[1]:.2f} s")
        return made

    def cold_starts(self, count: int, rounds: int) -> None:
        """Process start -> all ``count`` registered, each daemon alone, alternately; medians."""
        took: dict[str, list[float]] = {self.host: [], self.go_host: []}
        for _ in range(rounds):
            for host, argv in ((self.host, None), (self.go_host, [str(STANDIN), "-hostname", self.go_host])):
                self.forget(host)
                started = time.monotonic()
                daemon = Registrar(host, self.workdir, argv=argv)
                wait_until(partial(self.has, host, count), "cold start registrations", timeout=60)
                took[host].append(time.monotonic() - started)
                daemon.stop()
        self.pair(f"cold start, {count} running: all registered (median of {rounds})", "s",
                  sorted(took[self.host])[rounds // 2], sorted(took[self.go_host])[rounds // 2])  # fmt: skip
        for host in took:
            self.forget(host)

    def has(self, host: str, count: int) -> bool:
        return len(self.owned(host)) >= count

    def cleanup(self) -> None:
        super().cleanup()
        self.forget(self.go_host)


def registered_all(daemon: Registrar, ids: set[str]) -> bool:
    return ids <= {e["service_id"] for e in daemon.find("service_registered")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=100, help="one-at-a-time latency samples")
    parser.add_argument("--bursts", default="100x8,300x16", help="bursts: COUNTxPARALLEL,...")
    parser.add_argument("--sizes", default="200,500", help="container counts for the cold starts")
    parser.add_argument("--rounds", type=int, default=3, help="cold starts of each daemon per size")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind through cleanup on SIGTERM too
    bursts = [tuple(int(n) for n in b.split("x")) for b in args.bursts.split(",") if b]
    with tempfile.TemporaryDirectory() as tmp:
        bench = SideBySide(Path(tmp))
        print(f"registrar / Go stand-in of registrator: {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
        print(f"  {'figure':<58} {'registrar / Go':>18}")
        try:
            daemons = bench.daemons()
            if args.samples:
                bench.latencies(daemons, args.samples)
            made: list[object] = []
            for count, parallel in bursts:
                made += bench.bursts(daemons, count, parallel)
            for daemon in daemons:
                daemon.stop()
            for size in (int(s) for s in args.sizes.split(",") if s):
                if size < len(bench.containers):
                    bench.remove(bench.containers[size:])
                elif size > len(bench.containers):
                    bench.start_many(size - len(bench.containers), f"{bench.host}-n{size}")
                bench.cold_starts(size, args.rounds)
        finally:
            bench.cleanup()


if __name__ == "__main__":
    main()
