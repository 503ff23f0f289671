"""registrar on hosts without a Consul agent (``run --catalog``, issue 35), measured. Prints figures, one line
each; asserts nothing. Run it through bench/run-catalog.sh (arguments go here: --ttls, --repeats, --per-host,
--services, --idle, --windows, --skip, --root); only the fleets' own processes are used (servers on
127.0.1.1-3, engines of their own, the test image imported into each from the busybox binary), all stopped by
pid at the end.

1. A host's SIGKILL to its services gone from DNS: the fleet of tests/integration/test_catalog_sessions.py
   (three Consul servers, three hosts of a Docker engine and ``registrar run --catalog --node-ttl T``, no client
   agent), ``--per-host`` containers of one service on each host. One host's registrar is killed with SIGKILL
   (host 2, then 3, then 1), a random 0 to T/2 after all instances were seen in DNS (the kill's phase against
   the session's renewal, every T/2, moves the figure by up to T/2). SRV ``<service>.service.consul`` is asked
   of server 1's DNS interface (dnspython, EDNS as tests/fleet.py asks) every 50 ms until none of that host's
   instances is in the answer: seconds from the SIGKILL. The registrar is then started again (its node comes
   back) before the next kill. ``--repeats`` kills per TTL, each printed, then the median; for each TTL of
   ``--ttls`` (default 10 and the default 30 s) on a fleet of its own.
2. CPU and memory with ``--services`` containers (default 200) with a published port, a Docker HEALTHCHECK
   (registrar keeps its status in a check: Docker health) and an HTTP check every 10 s (``SERVICE_CHECK_HTTP=/``:
   the client agent runs it in agent mode, registrar itself in catalog mode), on one engine, watched side by side
   by two registrars with their own ``--hostname``: one in agent mode against a Consul client agent on that
   host, one with ``--catalog`` against a server (default ``--node-ttl``). Three servers, that host's engine and
   client agent. Per registrar: CPU seconds from its process start until all its services are passing on a
   server's health API (the cold start); then, in ``--windows`` idle windows of ``--idle`` s one after the other
   (default two of 60 s), CPU seconds per minute (session renewals, watches, reads of the agent or node every
   3 s; agent mode sends Docker health again every 10 s, catalog mode runs 20 HTTP checks a second and sends
   every status again every 5 minutes), the client agent's too,
   the loop's Consul operations (``registrar_consul_operations_total``; ``health_update/unchanged``: a status
   catalog mode did not send, the catalog holding it already), how many of each registrar's checks were
   modified in the catalog, and the servers' raft index growth (both registrars and the client agent
   together; baseline: its growth over 30 s before the registrars started); resident memory (VmRSS) at the
   end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dns.exception
import dns.resolver
import requests

sys.path.insert(0, str(Path(__file__).parents[1]))

from bench.bench import cpu_seconds, rss_mib, wait_until
from tests.fleet import LABEL, SERVER_ADDRESSES, Agent, Fleet, Host, Process
from tests.integration.harness import IMAGE, log_events
from tests.integration.test_catalog_sessions import IMAGE_CMD, CatalogFleet, CatalogHost, image_tar

SERVICE = "bench-cat"
HEALTHCHECK = {"test": ["CMD", "true"], "interval": 30_000_000_000, "timeout": 5_000_000_000, "retries": 1}
"""Docker runs ``true`` in each container every 30 s: healthy 30 s after the start, and so it stays."""
LABELS = {"SERVICE_NAME": SERVICE, "SERVICE_CHECK_HTTP": "/"}
"""Each container's service: an HTTP check every 10 s (busybox httpd answers 200), run by the client agent in agent
mode and by registrar itself in catalog mode."""
BASELINE = 30.0
"""Seconds of the raft index's growth measured before any registrar runs."""


def srv(server: str, service: str) -> set[tuple[str, int]] | None:
    """(address, port) of the instances a server's DNS interface answers for SRV ``<service>.service.consul``
    (passing instances only, as Consul's DNS gives them); None when it did not answer in time."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [server]
    resolver.port = 8600
    resolver.use_edns(0, 0, 8192)  # without EDNS Consul answers at most 3 records over UDP
    try:
        answer = resolver.resolve(f"{service}.service.consul", "SRV", lifetime=1)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return set()
    except dns.exception.DNSException:
        return None
    addresses = {r.name.to_text(): item.address for r in answer.response.additional if r.rdtype == 1 for item in r}
    return {(addresses.get(r.target.to_text(), r.target.to_text()), r.port) for r in answer}


def no_consul_on_the_servers_addresses() -> None:
    """Someone else's fleet would answer in place of this one's."""
    for address in SERVER_ADDRESSES:
        with socket.socket() as s:
            if s.connect_ex((address, 8500)) == 0:
                raise SystemExit(f"bench: a Consul already answers on {address}:8500 (another fleet runs)")


def import_image(hosts: list[Host]) -> None:
    """The test image imported into each host's engine from the busybox binary (as test_catalog_sessions.py)."""
    rootfs = image_tar()
    repository, _, tag = IMAGE.rpartition(":")
    changes = ['CMD ["sh", "-c", "' + IMAGE_CMD + '"]', "EXPOSE 80"]
    for host in hosts:
        host.docker.api.import_image_from_data(rootfs, repository=repository, tag=tag, changes=changes)


# 1. SIGKILL -> gone from DNS ---------------------------------------------------------------------------------


@contextlib.contextmanager
def started(fleet: Fleet) -> Iterator[None]:
    """The fleet started, and stopped and removed on the way out whatever happens."""
    try:
        fleet.start()
        yield
    finally:
        fleet.stop()


def removed_by(hosts: list[CatalogHost], node: str, seen: int) -> str:
    """Which registrar logged the removal of ``node`` after its first ``seen`` removals, and after how long."""
    removals = [(host.name, e) for host in hosts for e in host.events("catalog_node_removed") if e.get("node") == node][
        seen:
    ]
    return ", ".join(f"removed by {name}'s registrar, keyless for {e.get('keyless_for')} s" for name, e in removals)


def kill_to_dns(root: Path, ttl: int, repeats: int, per_host: int) -> list[float]:
    """Seconds from a host's registrar's SIGKILL to its instances gone from DNS, ``repeats`` times."""
    print(f"== SIGKILL -> out of DNS: 3 hosts without an agent, --node-ttl {ttl}s, {per_host} containers per host")
    f = CatalogFleet(root, ttl=ttl)
    seconds = []
    with started(f):
        dns_server = f.servers[0].address
        for host in f.catalog_hosts:
            for _ in range(per_host):
                host.run({"SERVICE_NAME": SERVICE})
        for i in range(repeats):
            host = f.catalog_hosts[(i + 1) % len(f.catalog_hosts)]
            everyone = {(address, port) for _, address, port in f.running(SERVICE)}
            theirs = {(address, port) for _, address, port in host.running(SERVICE)}

            def all_in(instances: set[tuple[str, int]] = everyone) -> bool:
                return srv(dns_server, SERVICE) == instances

            wait_until(all_in, f"all {len(everyone)} in DNS", timeout=120, poll=0.1)
            removals = sum(
                1 for h in f.catalog_hosts for e in h.events("catalog_node_removed") if e["node"] == host.name
            )
            time.sleep(random.uniform(0, ttl / 2))
            killed = time.monotonic()
            host.kill_registrar()

            def gone(host_instances: set[tuple[str, int]] = theirs) -> bool:
                answer = srv(dns_server, SERVICE)
                return answer is not None and not answer & host_instances

            wait_until(gone, f"{host.name}'s instances to leave DNS", timeout=10 * ttl, poll=0.05)
            took = time.monotonic() - killed
            seconds.append(took)
            left = srv(dns_server, SERVICE)
            others = "the others all still answered" if left == everyone - theirs else f"the others: {left}"
            wait = time.monotonic() + 5  # the removal's log line is written once Consul has answered the removal
            while not (by := removed_by(f.catalog_hosts, host.name, removals)) and time.monotonic() < wait:
                time.sleep(0.1)
            print(f"  kill {i + 1}: {host.name} out of DNS {took:.1f} s after its registrar's SIGKILL ({by}; {others})")
            host.start_registrar()
        print(f"  --node-ttl {ttl}s: median {statistics.median(seconds):.1f} s of {repeats}")
    return seconds


# 2. CPU and memory, agent mode and catalog mode side by side ---------------------------------------------------


class PairFleet(Fleet):
    """Three servers and one host (engine and client agent); the registrars are the bench's own."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, hosts=1)

    def start(self) -> None:
        for server in self.servers:
            server.start()
        host = self.hosts[0]
        host.start_engine()
        host.agent.start()
        wait_until(host.engine_up, "the engine to answer", timeout=60, poll=0.1)
        import_image(self.hosts)
        wait_until(lambda: all(s.leader() for s in self.servers), "the servers to elect a leader", timeout=60, poll=0.1)
        wait_until(host.agent.ready, "the client agent to join", timeout=60, poll=0.1)


def raft_index(server: Agent) -> int:
    """The server's last raft log index (``/v1/agent/self`` Stats)."""
    return int(server.get("/v1/agent/self")["Stats"]["raft"]["last_log_index"])


def passing_by_node(server: Agent) -> dict[str, int]:
    """Instances of SERVICE with every check passing, by node, as a server's health API says."""
    counts: dict[str, int] = {}
    for e in server.get(f"/v1/health/service/{SERVICE}"):
        if all(c["Status"] == "passing" for c in e["Checks"]):
            counts[e["Node"]["Node"]] = counts.get(e["Node"]["Node"], 0) + 1
    return counts


def modified_checks(server: Agent, node: str, since: int) -> tuple[int, int]:
    """(checks of SERVICE on ``node`` with a ModifyIndex above ``since``, all of them)."""
    checks = [c for c in server.get(f"/v1/health/node/{node}") if c.get("ServiceName") == SERVICE]
    return sum(1 for c in checks if c["ModifyIndex"] > since), len(checks)


def metrics_address(log: Path) -> str:
    found = [e for e in log_events(log) if e.get("event") == "metrics_listening"] if log.exists() else []
    return str(found[0]["address"]) if found else ""


def consul_operations(address: str) -> dict[str, float]:
    """``registrar_consul_operations_total`` from a registrar's /metrics: by operation (result ok), and by
    ``operation/result`` for the others (``health_update/unchanged``: a status catalog mode did not send)."""
    out: dict[str, float] = {}
    for line in requests.get(f"http://{address}/metrics", timeout=5).text.splitlines():
        if line.startswith("registrar_consul_operations_total{"):
            labels, value = line.rsplit(" ", 1)
            operation = labels.split('operation="', 1)[1].split('"', 1)[0]
            result = labels.split('result="', 1)[1].split('"', 1)[0]
            key = operation if result == "ok" else f"{operation}/{result}"
            out[key] = out.get(key, 0.0) + float(value)
    return out


def side_by_side(root: Path, services: int, idle: float, windows: int) -> None:
    print(f"== {services} containers with Docker health and an HTTP check, agent mode and --catalog side by side")
    no_consul_on_the_servers_addresses()
    f = PairFleet(root)
    host = f.hosts[0]
    common = [sys.executable, "-m", "registrar", "run", "--docker-host", host.docker_url, "--retry-attempts", "-1"]
    common += ["--log-format", "json", "--metrics-addr", f"{host.address}:0"]
    registrars = {
        "agent": Process(
            "registrar agent mode",
            [*common, "--hostname", "bench-agent", host.agent.url.replace("http://", "consul://")],
            root / "registrar-agent.log",
        ),
        "catalog": Process(
            "registrar catalog mode",
            [
                *common,
                "--hostname",
                "bench-catalog",
                "--ip",
                host.address,
                "--catalog",
                f"consul://{f.servers[0].address}:8500",
            ],
            root / "registrar-catalog.log",
        ),
    }
    nodes = {"agent": host.name, "catalog": "bench-catalog"}
    with started(f), contextlib.ExitStack() as stack:
        for process in registrars.values():
            stack.callback(process.stop)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: host.run(LABELS, healthcheck=HEALTHCHECK), range(services)))
        leader = f.leader()
        raft0, t0 = raft_index(leader), time.monotonic()

        def healthy() -> bool:
            return len(host.docker.containers.list(filters={"label": LABEL, "health": "healthy"})) == services

        wait_until(healthy, f"{services} containers healthy", timeout=180, poll=1)
        time.sleep(max(0.0, BASELINE - (time.monotonic() - t0)))
        baseline = (raft_index(leader) - raft0) / (time.monotonic() - t0) * 60
        print(f"  baseline, no registrar: raft index +{baseline:.0f} per minute (servers and client agent alone)")

        began: dict[str, float] = {}
        for mode, process in registrars.items():
            process.start()
            began[mode] = time.monotonic()
        cold: dict[str, tuple[float, float]] = {}
        server = f.servers[1]
        deadline = time.monotonic() + 180
        while len(cold) < len(registrars):
            counts = passing_by_node(server)
            for mode, process in registrars.items():
                if mode not in cold and counts.get(nodes[mode], 0) >= services and process.pid is not None:
                    cold[mode] = (cpu_seconds(process.pid), time.monotonic() - began[mode])
            if any(p.pid is None for p in registrars.values()):
                raise SystemExit(f"bench: a registrar exited: see {root}")
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: timed out waiting for {services} passing per registrar: {counts}")
            time.sleep(0.2)
        for mode, (cpu, wall) in cold.items():
            print(f"  {mode} mode: cold start, {services} registered and passing: {cpu:.2f} s CPU in {wall:.1f} s")

        time.sleep(5)  # what is left of the cold start settles
        pids = {mode: p.pid or 0 for mode, p in registrars.items()}
        pids["client agent"] = host.agent.process.pid or 0  # runs agent mode's HTTP checks
        addresses = {mode: metrics_address(p.log) for mode, p in registrars.items()}
        for window in range(1, windows + 1):
            ops0 = {mode: consul_operations(address) for mode, address in addresses.items()}
            cpu0 = {mode: cpu_seconds(pid) for mode, pid in pids.items()}
            raft0, t0 = raft_index(leader), time.monotonic()
            time.sleep(idle)
            elapsed = time.monotonic() - t0
            cpu1 = {mode: cpu_seconds(pid) for mode, pid in pids.items()}
            raft1 = raft_index(leader)
            ops1 = {mode: consul_operations(address) for mode, address in addresses.items()}
            agent_cpu = (cpu1["client agent"] - cpu0["client agent"]) / elapsed * 60
            print(f"  the client agent (agent mode's HTTP checks): {agent_cpu:.2f} s CPU per minute")
            for mode in registrars:
                per_minute = (cpu1[mode] - cpu0[mode]) / elapsed * 60
                ops = {
                    op: round(n - ops0[mode].get(op, 0)) for op, n in ops1[mode].items() if n > ops0[mode].get(op, 0)
                }
                modified, checks = modified_checks(server, nodes[mode], raft0)
                print(
                    f"  {mode} mode: idle window {window} ({elapsed:.0f} s): {per_minute:.2f} s CPU per minute; the "
                    f"loop's Consul operations {json.dumps(ops)}; its checks modified in the catalog "
                    f"{modified} of {checks}"
                )
            growth = (raft1 - raft0) / elapsed * 60
            print(
                f"  both, idle window {window}: raft index +{raft1 - raft0} in {elapsed:.0f} s "
                f"({growth:.0f} per minute; baseline {baseline:.0f})"
            )
        for mode in [*registrars, "client agent"]:
            print(f"  {mode}: VmRSS {rss_mib(pids[mode]):.1f} MiB after the idle windows")
        errors = {
            mode: [e.get("event") for e in log_events(p.log) if e.get("level") in ("warning", "error")]
            for mode, p in registrars.items()
        }
        print(f"  warnings and errors logged: {json.dumps(errors)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ttls", default="10,30", help="--node-ttl values for the SIGKILL figure, s (default 10,30)")
    parser.add_argument("--repeats", type=int, default=3, help="kills per TTL (default 3)")
    parser.add_argument("--per-host", type=int, default=5, help="containers per host for the kills (default 5)")
    parser.add_argument("--services", type=int, default=200, help="containers for CPU and memory (default 200)")
    parser.add_argument("--idle", type=float, default=60, help="seconds of an idle window (default 60)")
    parser.add_argument("--windows", type=int, default=2, help="idle windows one after the other (default 2)")
    parser.add_argument("--skip", choices=["kill", "cpu"], action="append", default=[], help="leave a part out")
    parser.add_argument("--root", type=Path, help="work directory (default: a temporary one)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind through the fleets' stops on SIGTERM too
    with contextlib.ExitStack() as stack:
        root = args.root or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="registrar-catbench-")))
        print(f"registrar catalog-mode bench, {time.strftime('%Y-%m-%d %H:%M')}, work directory {root}")
        if "kill" not in args.skip:
            for ttl in (int(t) for t in args.ttls.split(",") if t):
                no_consul_on_the_servers_addresses()
                kill_to_dns(root / f"kill-{ttl}", ttl, args.repeats, args.per_host)
        if "cpu" not in args.skip:
            side_by_side(root / "cpu", args.services, args.idle, args.windows)


if __name__ == "__main__":
    main()
