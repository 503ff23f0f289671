"""registrar on many hosts: the fleet of tests/fleet.py (Docker engines, client agents, registrars, three
Consul servers), measured. Prints figures; asserts nothing. Run it through bench/run-fleet.sh.

1. One host: 100 containers started 8 at a time; registrar's CPU seconds and RSS on that host.
2. Three hosts, a blue/green-style deploy: 100 containers per host, 8 at a time per host, all hosts at
   once; time from the first start until all are registered and until all are passing, read on a
   server's health API; registrar's CPU seconds and RSS per host (to compare with 1: the per-host cost
   must not grow with the cluster). Then the old colour is retired: all removed, time until none is left.
3. Host loss: with 10 containers per host, host 2 is killed (agent, registrar, engine, containers);
   time until its instances leave host 1's DNS SRV answers and a server's passing set.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parents[1]))

from bench.bench import cpu_seconds, rss_mib
from tests.fleet import Agent, Fleet, Host, fleet

IDLE = 20.0
LABELS = {"SERVICE_CHECK_HTTP": "/", "SERVICE_CHECK_INTERVAL": "1s"}


def health(server: Agent, service: str) -> tuple[int, int]:
    """(registered, passing) instances of a service, read on a server's health API."""
    entries = server.get(f"/v1/health/service/{service}")
    passing = sum(all(c["Status"] == "passing" for c in e["Checks"]) for e in entries)
    return len(entries), passing


def until(probe: Any, what: str, timeout: float = 300, poll: float = 0.1) -> float:
    """Seconds until ``probe()`` is true, polled gently (figures come from the clock, not the poll)."""
    start = time.monotonic()
    while not probe():
        if time.monotonic() - start > timeout:
            raise SystemExit(f"bench: timed out waiting for {what}")
        time.sleep(poll)
    return time.monotonic() - start


def start_on(host: Host, service: str, count: int, parallel: int) -> tuple[list[Any], float]:
    """Start ``count`` containers, ``parallel`` at a time; they and when the last start returned."""
    with ThreadPoolExecutor(parallel) as pool:
        started = list(pool.map(lambda _: host.run({"SERVICE_NAME": service, **LABELS}), range(count)))
    return started, time.monotonic()


def remove_on(containers: list[Any], parallel: int) -> None:
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(lambda c: c.remove(force=True), containers))


def deploy(f: Fleet, service: str, per_host: int, parallel: int) -> dict[str, Any]:
    """Start ``per_host`` containers on every host at once; time to all registered and all passing."""
    server = f.servers[-1]
    total = per_host * len(f.hosts)
    idle = {h.name: cpu_seconds(h.registrar.pid or 0) for h in f.hosts}
    time.sleep(IDLE)  # registrar's idle cost, to tell it from the deploy's in runs of different lengths
    cpu = {h.name: cpu_seconds(h.registrar.pid or 0) for h in f.hosts}
    idle = {name: (cpu[name] - idle[name]) / IDLE for name in cpu}
    start = time.monotonic()
    with ThreadPoolExecutor(len(f.hosts)) as pool:
        futures = [pool.submit(start_on, h, service, per_host, parallel) for h in f.hosts]
        registered = until(lambda: health(server, service)[0] == total, f"{total} registered")
        passing = registered + until(lambda: health(server, service)[1] == total, f"{total} passing")
        results = {h.name: fut.result() for h, fut in zip(f.hosts, futures, strict=True)}
    return {
        "registered": registered,
        "passing": passing,
        "last_start": max(done for _, done in results.values()) - start,
        "containers": {name: started for name, (started, _) in results.items()},
        "seconds": time.monotonic() - start,
        "cpu": {h.name: cpu_seconds(h.registrar.pid or 0) - cpu[h.name] for h in f.hosts},
        "idle": idle,
        "rss": {h.name: rss_mib(h.registrar.pid or 0) for h in f.hosts},
    }


def report_hosts(title: str, figures: dict[str, Any]) -> None:
    for name in sorted(figures["cpu"]):
        cpu, above = figures["cpu"][name], figures["cpu"][name] - figures["idle"][name] * figures["seconds"]
        print(
            f"  {title} {name}: registrar CPU {cpu:.2f} s over the {figures['seconds']:.0f} s of the deploy"
            f" ({above:.2f} s above its idle cost), RSS {figures['rss'][name]:.1f} MiB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-host", type=int, default=100, help="containers per host (default 100)")
    parser.add_argument("--parallel", type=int, default=8, help="starts at a time per host (default 8)")
    parser.add_argument("--root", type=Path, help="work directory (default: a temporary one)")
    args = parser.parse_args()
    n, k = args.per_host, args.parallel

    print(f"== one host: {n} containers, {k} at a time")
    with fleet(args.root and args.root / "one", hosts=1) as f:
        one = deploy(f, "bench-one", n, k)
        print(f"  all {n} registered {one['registered']:.2f} s, passing {one['passing']:.2f} s (server health API);")
        print(f"  the last start returned at {one['last_start']:.2f} s")
        report_hosts("1 host:", one)

    print(f"== three hosts, blue/green: {n} per host, {k} at a time per host, all hosts at once")
    with fleet(args.root and args.root / "three", hosts=3) as f:
        green = deploy(f, "bench-green", n, k)
        total = 3 * n
        print(f"  all {total} registered {green['registered']:.2f} s, passing {green['passing']:.2f} s;")
        print(f"  the last start returned at {green['last_start']:.2f} s")
        report_hosts("3 hosts:", green)
        retire_start = time.monotonic()
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda cs: remove_on(cs, k), green["containers"].values()))
        until(lambda: health(f.servers[-1], "bench-green")[0] == 0, "all deregistered")
        retired = time.monotonic() - retire_start
        print(f"  retire all {total} (removed {k} at a time per host): none left after {retired:.2f} s")

        print("== host loss: 10 containers per host, host 2 killed")
        deploy(f, "bench-loss", 10, k)
        h1, h2, _ = f.hosts
        on_h2 = {(address, port) for _, address, port in h2.running("bench-loss")}
        until(lambda: len(h1.agent.srv("bench-loss")) == 30, "all 30 in host 1's DNS answers")
        killed = time.monotonic()
        h2.lose()
        dns = until(lambda: not (h1.agent.srv("bench-loss") & on_h2), "host 2 to leave DNS answers", poll=0.05)
        until(lambda: health(f.servers[-1], "bench-loss")[1] == 20, "host 2 to leave the passing set", poll=0.05)
        passing = time.monotonic() - killed
        print(f"  host 2 out of host 1's DNS SRV answers {dns:.2f} s after the kill, out of passing {passing:.2f} s")


if __name__ == "__main__":
    main()
