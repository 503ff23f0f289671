"""Where registrar's CPU goes: ``registrar run`` under yappi on the CPU clock, across all threads,
while a burst of containers starts and is removed. Prints the functions that used the most CPU
themselves (own time, summed over threads) and what each thread used; asserts nothing.

    bench/run-cpu-profile.sh [--count 300] [--parallel 16] [--top 25]

yappi's CPU clock counts only time a thread spends running, so a thread waiting on a socket or a
queue costs nothing here, unlike a wall-clock profile.
"""

from __future__ import annotations

import argparse
import os
import pickle
import signal
import sys
import tempfile
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Any

from bench.bench import Bench, Registrar, registered_all, wait_until


def profiled_run(stats_path: str, argv: list[str]) -> None:
    """In the child: ``registrar run`` under yappi; on exit, own CPU time per function and per thread."""
    import yappi

    from registrar.cli import main

    yappi.set_clock_type("cpu")
    yappi.start(builtins=False, profile_threads=True)
    try:
        main(["run", *argv])
    except SystemExit:
        pass
    finally:
        yappi.stop()
        functions: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
        inclusive: dict[str, float] = defaultdict(float)
        for f in yappi.get_func_stats():
            where = f"{Path(f.module).name}:{f.lineno} {f.name}" if f.lineno else f.name
            functions[where][0] += f.tsub
            functions[where][1] += f.ncall
            inclusive[where] += f.ttot
        threads = defaultdict(float)
        for t in yappi.get_thread_stats():
            threads[t.name.split("-")[0] if t.name.startswith("Thread") else t.name] += t.ttot
        with open(stats_path, "wb") as out:
            pickle.dump({"functions": dict(functions), "inclusive": dict(inclusive), "threads": dict(threads)}, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=300, help="containers in the burst")
    parser.add_argument("--parallel", type=int, default=16, help="containers started at once")
    parser.add_argument("--top", type=int, default=25, help="functions listed")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(Path(tmp))
        stats = Path(tmp) / "stats.pickle"
        argv = [sys.executable, "-m", "bench.cpu_profile", "--child", str(stats), "--",
                "--log-format", "json", "--hostname", bench.host, "--metrics-addr", ""]  # fmt: skip
        try:
            reg = Registrar(bench.host, Path(tmp), argv=argv)
            wait_until(partial(reg.find, "reconcile_done"), "registrar ready")
            made = bench.start_many(args.count, f"{bench.host}-p", parallel=args.parallel)
            ids = {f"{bench.host}:{c.name}:80" for c in made}
            wait_until(partial(registered_all, reg, ids), "the burst registered")
            bench.remove(made)
            wait_until(lambda: len(reg.find("service_deregistered")) >= args.count, "the burst deregistered")
            reg.stop()
        finally:
            bench.cleanup()
        report(pickle.loads(stats.read_bytes()), args.count, args.top)


REGISTRAR_FILES = {p.name for p in (Path(__file__).resolve().parent.parent / "registrar").glob("*.py")}


def report(stats: dict[str, Any], count: int, top: int) -> None:
    functions: dict[str, list[float]] = stats["functions"]
    total = sum(t for t, _ in functions.values())
    print(f"registrar's CPU under yappi (CPU clock, all threads): {total:.2f} s for {count} starts and removals,"
          f" {total / count * 1000:.2f} ms a container")  # fmt: skip
    print(f"  {'own CPU':>9} {'share':>6} {'calls':>8}  function")
    for where, (own, calls) in sorted(functions.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"  {own * 1000:>7.0f}ms {own / total * 100:>5.1f}% {calls:>8}  {where}")
    print("  inclusive, registrar's own functions:")
    mine = {k: v for k, v in stats["inclusive"].items() if k.split(":")[0] in REGISTRAR_FILES}
    for where, t in sorted(mine.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {t * 1000:>7.0f}ms {t / total * 100:>5.1f}%  {where}")
    print("  by thread (CPU seconds):", ", ".join(f"{n} {t:.2f}" for n, t in sorted(stats["threads"].items())))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        profiled_run(sys.argv[2], sys.argv[sys.argv.index("--") + 1 :])
    else:
        main()
