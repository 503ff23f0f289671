"""Where registrar's CPU goes: ``registrar run`` under yappi on the CPU clock, across all threads,
while a burst of containers starts and is removed. Prints the functions that used the most CPU
themselves (own time, summed over threads), that time by package, the inclusive time of registrar's own functions and
what each thread used; asserts nothing.

    bench/run-cpu-profile.sh [--count 300] [--parallel 16] [--top 25]

yappi's CPU clock counts only time a thread spends running, so a thread waiting on a socket or a
queue costs nothing here, unlike a wall-clock profile. yappi's hooks on every call make each call
dearer, though, so the profile tells where the CPU goes, not how much a start costs: for that, a
plain registrar (no profiler, its own host name) watches the same burst, and the CPU seconds per
container start and removal of both processes are read from /proc, as bench/bench.py reads them.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import signal
import site
import sys
import sysconfig
import tempfile
import threading
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Any

from bench.bench import Bench, Registrar, registered_all, wait_until


def thread_group(name: str) -> str:
    """A thread's name without its numbers, so that a pool's threads count as one:
    ``registrar-worker_3`` -> ``registrar-worker``, ``Thread-2 (_read)`` -> ``Thread (_read)``."""
    return re.sub(r"[-_]\d+", "", name)


def thread_name() -> str | None:
    """yappi's context name callback: the running thread's group (yappi's own names only the class).
    Reads ``threading._active`` as yappi's default does: ``current_thread()`` can deadlock here."""
    thread = threading._active.get(threading.get_ident())  # type: ignore[attr-defined]
    return None if thread is None else thread_group(thread.name)


def profiled_run(stats_path: str, argv: list[str]) -> None:
    """In the child: ``registrar run`` under yappi; on exit, CPU time per function and per thread."""
    import yappi

    import registrar
    from registrar.cli import main

    yappi.set_clock_type("cpu")
    yappi.set_context_name_callback(thread_name)
    yappi.start(builtins=False, profile_threads=True)
    try:
        main(["run", *argv])
    except SystemExit:
        pass
    finally:
        yappi.stop()
        mine = str(Path(registrar.__file__).resolve().parent) + os.sep
        roots = sorted({str(Path(mine).parent), *site.getsitepackages(), sysconfig.get_paths()["stdlib"]}, key=len)
        functions: dict[str, list[Any]] = defaultdict(lambda: [0.0, 0, 0.0, False])
        for f in yappi.get_func_stats():
            module = str(Path(f.module).resolve()) if f.lineno else ""
            short = next((module[len(r) + 1 :] for r in reversed(roots) if module.startswith(r + os.sep)), module)
            entry = functions[f"{short}:{f.lineno} {f.name}" if f.lineno else f.name]
            entry[0] += f.tsub
            entry[1] += f.ncall
            entry[2] += f.ttot
            entry[3] = module.startswith(mine)
        threads: dict[str, float] = defaultdict(float)
        for t in yappi.get_thread_stats():
            threads[t.name or "?"] += t.ttot
        with open(stats_path, "wb") as out:
            pickle.dump({"functions": dict(functions), "threads": dict(threads)}, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300, help="containers in the burst (default 300)")
    parser.add_argument("--parallel", type=int, default=16, help="containers started at once (default 16)")
    parser.add_argument("--top", type=int, default=25, help="functions listed (default 25)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind through cleanup on SIGTERM too
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(Path(tmp))
        plain_host = bench.host + "-plain"
        stats = Path(tmp) / "stats.pickle"
        flags = ["--log-format", "json", "--metrics-addr", ""]
        argv = [sys.executable, "-m", "bench.cpu_profile", "--child", str(stats), "--",
                *flags, "--hostname", bench.host]  # fmt: skip
        try:
            profiled = Registrar(bench.host, Path(tmp), argv=argv)
            plain = Registrar(plain_host, Path(tmp), "--metrics-addr", "")
            daemons = [profiled, plain]
            for daemon in daemons:
                wait_until(partial(daemon.find, "reconcile_done"), f"{daemon.host} ready")
            made, registered, starts = bench.burst_times(daemons, args.count, args.parallel)
            cpu0 = {d.host: d.cpu_seconds() for d in daemons}
            bench.remove(made)
            removals = {}
            for d in daemons:
                gone = {f"{d.host}:{c.name}:80" for c in made if c.name in registered[d.host]}
                wait_until(partial(registered_all, d, gone, "service_deregistered"), "the burst deregistered")
                removals[d.host] = d.cpu_seconds() - cpu0[d.host]
            lifetime = profiled.cpu_seconds()
            profiled.stop()
            plain.stop()
        finally:
            bench.cleanup()
            bench.forget(plain_host)
        print(f"registrar, a burst of {args.count} ({args.parallel} at a time), then all removed")
        print("  CPU per container from /proc (user + system, all threads):")
        for name, d in (("registrar", plain), ("registrar under yappi", profiled)):
            done = len(registered[d.host])
            start, removal = starts[d.host] / args.count * 1000, removals[d.host] / max(1, done) * 1000
            print(f"  {name:<24} start {start:6.2f} ms   removal {removal:6.2f} ms   ({done}/{args.count} registered)")
        report(pickle.loads(stats.read_bytes()), args.count, args.top, lifetime)


def report(stats: dict[str, Any], count: int, top: int, lifetime: float) -> None:
    """The profile: functions by own CPU time, registrar's functions by inclusive time, threads."""
    functions: dict[str, list[Any]] = stats["functions"]
    total = sum(own for own, *_ in functions.values())
    print(f"registrar under yappi (CPU clock, all threads, the process's whole life: start-up, the burst's starts"
          f" and removals): {total:.2f} s on yappi's clock, {lifetime:.2f} s from /proc")  # fmt: skip
    print(f"  {'own CPU':>9} {'share':>6} {'calls':>8}  function")
    by_own = sorted(functions.items(), key=lambda kv: -kv[1][0])
    for where, (own, calls, *_) in by_own[:top]:
        print(f"  {own * 1000:>7.0f}ms {own / total * 100:>5.1f}% {calls:>8}  {where}")
    print("  own CPU by package (the standard library's by module):")
    packages: dict[str, float] = defaultdict(float)
    for where, (own, *_) in functions.items():
        packages[where.split(":")[0].split("/")[0].removesuffix(".py") if ":" in where else "other"] += own
    for name, own in sorted(packages.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {own * 1000:>7.0f}ms {own / total * 100:>5.1f}%  {name}")
    print("  inclusive CPU, registrar's own functions:")
    mine = [(where, inclusive) for where, (_, _, inclusive, is_mine) in functions.items() if is_mine]
    for where, inclusive in sorted(mine, key=lambda kv: -kv[1])[:top]:
        print(f"  {inclusive * 1000:>7.0f}ms {inclusive / total * 100:>5.1f}%  {where}")
    busiest = sorted(stats["threads"].items(), key=lambda kv: -kv[1])
    print("  CPU by thread (seconds on yappi's clock):", ", ".join(f"{name} {t:.2f}" for name, t in busiest))
    print(f"  ({count} containers: {total / count * 1000:.2f} ms a container on yappi's clock, all life included)")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        profiled_run(sys.argv[2], sys.argv[sys.argv.index("--") + 1 :])
    else:
        main()
