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
from typing import Any

from bench.bench import Bench, Registrar, pct, wait_until

STANDIN = Path(__file__).resolve().parent.parent / "build" / "standin"


class SideBySide(Bench):
    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.go_host = self.host + "-go"

    def start(self, host: str) -> Registrar:
        """registrar under the bench's host name, the stand-in under its own."""
        return Registrar(host, self.workdir, argv=[str(STANDIN), "-hostname", host] if host == self.go_host else None)

    def daemons(self) -> tuple[Registrar, Registrar]:
        """registrar and the stand-in, each ready (its first reconcile done)."""
        daemons = self.start(self.host), self.start(self.go_host)
        for daemon in daemons:
            wait_until(partial(daemon.find, "reconcile_done"), "a daemon ready")
        return daemons

    def pair(self, what: str, unit: str, py: float, go: float) -> None:
        """One figure of both daemons: registrar's, the stand-in's, and which is faster."""
        if py <= go:
            verdict = f"registrar faster, {go / py:.2f}x" if py else ""
        else:
            verdict = f"Go faster, {py / go:.2f}x" if go else ""
        self.row(what, f"{py:.1f} / {go:.1f} {unit}", verdict)

    def latencies(self, daemons: tuple[Registrar, Registrar], samples: int) -> None:
        up, down = self.lags_one_at_a_time(daemons, samples)
        py, go = (d.host for d in daemons)
        for what, lags in ((f"start -> registered, one at a time (n={samples})", up),
                           (f"die -> deregistered, one at a time (n={samples})", down)):  # fmt: skip
            for q in (50, 99):
                self.pair(f"{what}, p{q}", "ms", pct(lags[py], q), pct(lags[go], q))

    def bursts(self, daemons: tuple[Registrar, Registrar], count: int, parallel: int) -> list[Any]:
        made, registered, cpu = self.burst_times(daemons, count, parallel)
        py, go = (self.lags_from_start(registered[d.host]) for d in daemons)
        what = f"burst of {count} ({parallel} at a time)"
        for q in (50, 99):
            self.pair(f"{what}: lag from start event, p{q}", "ms", pct(py, q), pct(go, q))
        self.row(f"{what}: CPU used", f"{cpu[self.host]:.2f} / {cpu[self.go_host]:.2f} s")
        return made

    def cold_starts(self, count: int, rounds: int) -> None:
        """Process start -> all ``count`` registered, each daemon alone, alternately; medians."""
        took: dict[str, list[float]] = {self.host: [], self.go_host: []}
        for _ in range(rounds):
            for host in took:
                self.forget(host)
                started = time.monotonic()
                daemon = self.start(host)
                wait_until(partial(self.has, host, count), "cold start registrations", timeout=60)
                took[host].append(time.monotonic() - started)
                daemon.stop()
        self.pair(f"cold start, {count} running: all registered (median of {rounds})", "s",
                  sorted(took[self.host])[rounds // 2], sorted(took[self.go_host])[rounds // 2])  # fmt: skip
        for host in took:
            self.forget(host)

    def cleanup(self) -> None:
        super().cleanup()
        self.forget(self.go_host)


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
            made: list[Any] = []
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
