"""A/B: CPU per container start in one burst for variants of registrar and of the floor, side by side.

    bench/run-ab.sh [--count 300] [--parallel 16] [--rounds 3] [--samples 0] VARIANT...

A variant is a directory holding a copy of the ``registrar`` package (run as ``python -m registrar
run`` with that directory first on PYTHONPATH), optionally followed by ``@NAME=VALUE`` environment
settings (``/tmp/v1@MALLOC_ARENA_MAX=1``), or ``floor:N``: bench/floor.py with ``-workers N`` (0: on
its event thread). Every variant watches the same bursts on the engine and agent tests/run.sh brings
up, so the machine's load is the same for all of them; each round starts ``count`` containers,
``parallel`` at a time, waits until every variant has registered them all, reads each process's
user and system CPU from /proc, then removes them. Prints each round and the median per start, and
each variant against the first; asserts nothing. With ``--samples N``, first N containers are started
and killed one at a time, all variants watching: start -> registered and die -> deregistered, p50
and p99 of each (``--rounds 0`` skips the bursts).

Sampling profiles (yappi, py-spy) put their own cost on every call and find costs of a few percent
that are not there; a change is judged by this A/B instead (docs/performance.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

from bench.bench import TICKS, Bench, Registrar, pct, registered_all, wait_until

FLOOR = Path(__file__).with_name("floor.py")


def cpu(pid: int) -> tuple[float, float]:
    """A process's user and system CPU seconds, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def start(variant: str, host: str, workdir: Path) -> Registrar:
    """Start one variant under its own host name."""
    if variant.startswith("floor:"):
        argv = [sys.executable, str(FLOOR), "-hostname", host, "-workers", variant.removeprefix("floor:")]
        return Registrar(host, workdir, argv=argv)
    directory, *settings = variant.split("@")
    saved, cwd = dict(os.environ), os.getcwd()
    os.environ["PYTHONPATH"] = directory
    for setting in settings:
        name, _, value = setting.partition("=")
        os.environ[name] = value
    # ``python -m`` puts the working directory first on sys.path, before PYTHONPATH: started from a
    # checkout, every variant would run the checkout's package.
    os.chdir(directory)
    try:
        # Compiled, as bench/run-ab.sh compiles the checkout's (deploy/up.sh): no variant compiles at start.
        subprocess.run([sys.executable, "-m", "compileall", "-q", "registrar"], check=True, capture_output=True)
        found = subprocess.run(
            [sys.executable, "-c", "import registrar; print(registrar.__file__)"], capture_output=True, text=True
        ).stdout.strip()
        if not Path(found).resolve().is_relative_to(Path(directory).resolve()):
            raise SystemExit(f"{variant}: python -m registrar would run {found or 'nothing'}, not {directory}'s")
        return Registrar(host, workdir, "--metrics-addr", "")
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(saved)


def latencies(bench: Bench, daemons: list[Registrar], variants: list[str], samples: int) -> None:
    """Start -> registered and die -> deregistered, one container at a time, every variant watching."""
    up, down = bench.lags_one_at_a_time(daemons, samples)
    for what, lags in (("start -> registered", up), ("die -> deregistered", down)):
        first = {q: pct(lags[daemons[0].host], q) for q in (50, 99)}
        print(f"{what}, one at a time (n={samples}), ms:")
        for daemon, variant in zip(daemons, variants, strict=True):
            figures = "  ".join(
                f"p{q} {pct(lags[daemon.host], q):5.1f} ({pct(lags[daemon.host], q) / first[q]:.2f}x)" for q in (50, 99)
            )
            print(f"  {variant:<40} {figures}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--parallel", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=0, help="one-at-a-time latency samples first (default 0: none)")
    parser.add_argument("variants", nargs="+")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(Path(tmp))
        daemons = [start(v, f"{bench.host}-v{i}", Path(tmp)) for i, v in enumerate(args.variants)]
        try:
            for daemon, variant in zip(daemons, args.variants, strict=True):
                wait_until(partial(daemon.find, "reconcile_done"), f"{variant} ready")
            if args.samples:
                latencies(bench, daemons, args.variants, args.samples)
            if not args.rounds:
                return
            per_start: dict[str, list[tuple[float, float]]] = {d.host: [] for d in daemons}
            for n in range(args.rounds):
                before = {d.host: cpu(d.proc.pid) for d in daemons}
                made, _, _ = bench.burst_times(daemons, args.count, args.parallel)
                for daemon, variant in zip(daemons, args.variants, strict=True):
                    (u0, s0), (u1, s1) = before[daemon.host], cpu(daemon.proc.pid)
                    user, system = (u1 - u0) / args.count * 1000, (s1 - s0) / args.count * 1000
                    per_start[daemon.host].append((user, system))
                    print(f"round {n + 1}  {variant:<40} user {user:.2f}  system {system:.2f} ms per start", flush=True)
                bench.remove(made)
                for daemon in daemons:
                    gone = {f"{daemon.host}:{c.name}:80" for c in made}
                    wait_until(partial(registered_all, daemon, gone, "service_deregistered"), "removed", timeout=60)
            first = statistics.median(u + s for u, s in per_start[daemons[0].host])
            print(f"CPU per start (user + system), burst of {args.count}, {args.parallel} at a time:")
            for daemon, variant in zip(daemons, args.variants, strict=True):
                totals = [u + s for u, s in per_start[daemon.host]]
                median = statistics.median(totals)
                rounds = " ".join(f"{t:.2f}" for t in totals)
                print(f"  {variant:<40} {rounds}  median {median:.2f} ms  {median / first:.2f}x the first")
        finally:
            for daemon in daemons:
                daemon.stop()
                bench.forget(daemon.host)
            bench.cleanup()


if __name__ == "__main__":
    main()
