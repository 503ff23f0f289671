"""Many hosts, one Consul cluster: three Docker engines, their client agents and registrars, three servers.

The fleet (tests/fleet.py) is started once for this module and stopped by pid at its end, also when a
test fails. Each test uses a service name of its own and removes its containers; a test that breaks a
host or a server brings it back before it ends, so the next test starts from a whole fleet.
"""

from __future__ import annotations

import random
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.fleet import Agent, Fleet, Host, fleet
from tests.integration.harness import SLOW_STOP, Steady, answers, free_port, haproxy, unique_host, wait_until

# Consul's failure detection of a lost node, and its anti-entropy retry after a failed sync (15 s),
# both well inside this.
CONVERGE = 60.0
Where = tuple[str, str, int]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Three servers, three hosts (engine, client agent, registrar); all stopped and removed at the end."""
    with fleet(tmp_path_factory.mktemp("fleet")) as f:
        yield f


@pytest.fixture
def service(cluster: Fleet) -> Iterator[str]:
    """A service name of this test alone; its containers on every live host are removed afterwards."""
    yield unique_host("web")
    for host in cluster.hosts:
        if host.engine_up():
            host.remove_containers()


def labels(service: str) -> dict[str, str]:
    return {"SERVICE_NAME": service, "SERVICE_CHECK_HTTP": "/", "SERVICE_CHECK_INTERVAL": "1s"}


def agents(f: Fleet) -> list[Agent]:
    """Every agent that is up: the servers and the client agents."""
    return [a for a in [*f.servers, *(h.agent for h in f.hosts)] if a.process.pid is not None]


def all_passing(f: Fleet, service: str, expected: set[Where]) -> None:
    """Wait until every live agent's health API shows exactly ``expected`` as the passing instances."""
    for agent in agents(f):
        wait_until(
            lambda agent=agent: agent.passing(service) == expected,  # type: ignore[misc]
            f"{agent.node} to show {sorted(expected)} passing (it shows {sorted(agent.passing(service))})",
            timeout=CONVERGE,
        )


def answers_dns(hosts: list[Host], service: str, expected: set[Where]) -> None:
    """Wait until each host's agent answers DNS SRV queries with exactly ``expected`` (DNS reads may be stale)."""
    want = {(a, p) for _, a, p in expected}
    for host in hosts:
        wait_until(
            lambda host=host: host.agent.srv(service) == want,  # type: ignore[misc]
            f"{host.name}'s DNS to answer {sorted(want)} (it answers {sorted(host.agent.srv(service))})",
            timeout=CONVERGE,
        )


def exact_catalog(f: Fleet, service: str) -> None:
    """Wait until the catalog, read on the leader, holds each running container once and nothing else."""

    def exact() -> bool:
        entries = f.leader().catalog(service)
        return len(entries) == len(set(entries)) and {(n, a, p) for n, _, a, p in entries} == f.running(service)

    wait_until(exact, f"the catalog of {service} to equal the running containers", timeout=CONVERGE)


def test_every_host_visible_from_every_agent(cluster: Fleet, service: str) -> None:
    """Two containers on each host: every agent's catalog, health API, and DNS SRV show all six, once each."""
    for host in cluster.hosts:
        for _ in range(2):
            host.run(labels(service))
    expected = cluster.running(service)
    assert len(expected) == 6
    all_passing(cluster, service, expected)
    for agent in agents(cluster):
        entries = agent.catalog(service)
        assert sorted((n, a, p) for n, _, a, p in entries) == sorted(expected), f"{agent.node}'s catalog"
        assert {i.split(":")[0] for _, i, _, _ in entries} == {"host1", "host2", "host3"}
    answers_dns(cluster.hosts, service, expected)


def test_balancer_follows_scaling_on_any_host(cluster: Fleet, service: str, tmp_path: Path) -> None:
    """HAProxy on host 1 over its agent's DNS: scaling up and down on every host is followed, no request fails."""
    h1, h2, h3 = cluster.hosts
    listen = f"{h1.address}:{free_port(h1.address)}"
    with haproxy(service, listen, f"{h1.address}:8600", tmp_path / "haproxy.log") as url:
        live: list[tuple[Host, Any]] = []  # (its host, the container): docker-py's clients of unix
        # sockets all have the same base_url, so a container object does not tell which host runs it

        def up(host: Host) -> None:
            live.append((host, host.run(labels(service), command=["sh", "-c", SLOW_STOP], stop_signal="SIGTERM")))

        def down(host: Host) -> None:
            pair = next(pair for pair in reversed(live) if pair[0] is host)
            live.remove(pair)
            pair[1].stop(timeout=10)  # SIGTERM: drained at once, serves 3 s more, then exits
            pair[1].remove()

        def reaches_exactly(what: str) -> None:
            expected = {c.id[:12] for _, c in live}
            wait_until(lambda: answers(url) == expected, f"the balancer to reach exactly {what}", timeout=30)

        for host in cluster.hosts:
            up(host)
        reaches_exactly("one instance on each host")
        with Steady(url) as steady:
            up(h2)
            up(h3)
            up(h3)
            reaches_exactly("six instances after scaling up on hosts 2 and 3")
            down(h1)
            down(h3)
            reaches_exactly("four instances after scaling down on hosts 1 and 3")
            up(h1)
            down(h2)
            reaches_exactly("four instances after a swap on hosts 1 and 2")
            steady.more(50)
        failed = steady.failed()
        assert failed == [], f"{len(failed)} of {len(steady.outcomes)} requests failed: {sorted(set(failed))}"


def bring_back(host: Host, f: Fleet) -> None:
    """Start a lost host again the way a rebooted machine does: engine, then agent, then registrar."""
    if host.engine.pid is None:
        host.start_engine()
        wait_until(host.engine_up, f"{host.name}'s engine to answer", timeout=60)
    if host.agent.process.pid is None:
        host.agent.start()
        wait_until(host.agent.ready, f"{host.name}'s agent to rejoin", timeout=CONVERGE)
    if host.registrar.pid is None:
        host.start_registrar()


@pytest.fixture
def host2_back(cluster: Fleet) -> Iterator[Host]:
    """Host 2, brought back after the test whatever the test did to it."""
    yield cluster.hosts[1]
    bring_back(cluster.hosts[1], cluster)


def test_host_loss(cluster: Fleet, service: str, host2_back: Host) -> None:
    """Host 2 killed at once: its services leave the passing set everywhere; nothing else changes."""
    for host in cluster.hosts:
        host.run(labels(service))
        host.run(labels(service))
    before = cluster.running(service)
    all_passing(cluster, service, before)
    catalog = cluster.leader().catalog(service)
    deregistered = {h.name: h.log_events("service_deregistered") for h in cluster.hosts}

    host2_back.lose()
    survivors = {w for w in before if w[0] != "host2"}
    all_passing(cluster, service, survivors)
    answers_dns([cluster.hosts[0], cluster.hosts[2]], service, survivors)
    # Nothing was deregistered: the lost node's entries stay in the catalog (critical), the others untouched.
    assert cluster.leader().catalog(service) == catalog
    for host in (cluster.hosts[0], cluster.hosts[2]):
        assert host.log_events("service_deregistered") == deregistered[host.name], f"{host.name} deregistered"


def test_host_return(cluster: Fleet, service: str, host2_back: Host) -> None:
    """Host 2 comes back (engine with restart-policy containers, then agent, then registrar): right, once each."""
    h2 = host2_back
    for host in cluster.hosts:
        host.run(labels(service))
    staying = [h2.run(labels(service), restart=True) for _ in range(2)]
    gone = h2.run(labels(service))
    all_passing(cluster, service, cluster.running(service))
    gone_id = f"host2:{gone.name}:80"
    assert gone_id in {i for _, i, _, _ in cluster.leader().catalog(service)}

    h2.lose()
    all_passing(cluster, service, {w for w in cluster.running(service) if w[0] != "host2"})
    h2.start_engine()
    wait_until(h2.engine_up, "host 2's engine to answer", timeout=60)
    wait_until(
        lambda: {w[0] for w in h2.running(service)} == {"host2"} and len(h2.running(service)) == len(staying),
        "host 2's restart-policy containers to run again",
    )
    bring_back(h2, cluster)
    expected = cluster.running(service)
    assert len(expected) == 4
    all_passing(cluster, service, expected)
    exact_catalog(cluster, service)
    assert gone_id not in {i for _, i, _, _ in cluster.leader().catalog(service)}


def churn(host: Host, service: str, rounds: int, seed: int) -> None:
    """Start and remove containers on one host: each round starts one, and every other round removes one."""
    rng = random.Random(seed)
    live: list[Any] = []
    for i in range(rounds):
        live.append(host.run(labels(service)))
        if i % 2:
            live.pop(rng.randrange(len(live))).remove(force=True)


def churning(f: Fleet, service: str, rounds: int) -> Any:
    """Churn on every host at once, in a pool; the returned futures raise what a host's churn raised."""
    seed = random.randrange(1 << 30)
    print(f"churn seed {seed}")
    pool = ThreadPoolExecutor(len(f.hosts))
    futures = [pool.submit(churn, h, service, rounds, seed + h.n) for h in f.hosts]
    pool.shutdown(wait=False)
    return futures


@pytest.fixture
def servers_back(cluster: Fleet) -> Iterator[Fleet]:
    """The servers, each started again after the test if the test left it down, with a leader elected."""
    yield cluster
    for server in cluster.servers:
        if server.process.pid is None:
            server.start()
    wait_until(lambda: all(s.leader() for s in cluster.servers), "the servers to agree on a leader", timeout=60)


def test_leader_killed_under_churn(servers_back: Fleet, service: str) -> None:
    """The leader server is killed while containers start and stop on all hosts: nothing is lost."""
    cluster = servers_back
    futures = churning(cluster, service, rounds=12)
    old = cluster.leader()
    old.process.stop(signal.SIGKILL)
    new = cluster.leader()
    assert new is not old
    for future in futures:
        future.result(timeout=120)
    assert len(cluster.running(service)) == 18
    exact_catalog(cluster, service)
    all_passing(cluster, service, cluster.running(service))


def test_rolling_server_restart_under_churn(servers_back: Fleet, service: str) -> None:
    """All three servers restarted one by one while containers start and stop: the catalog ends exact."""
    cluster = servers_back
    futures = churning(cluster, service, rounds=16)
    for server in cluster.servers:
        server.process.stop()
        server.start()
        wait_until(server.leader, f"{server.node} to be back in a cluster with a leader", timeout=CONVERGE)
    for future in futures:
        future.result(timeout=120)
    exact_catalog(cluster, service)
    all_passing(cluster, service, cluster.running(service))


@pytest.mark.parametrize("fresh", [False, True], ids=["data-kept", "data-lost"])
def test_client_agent_restart(cluster: Fleet, service: str, fresh: bool) -> None:
    """Host 3's agent restarts with its data dir kept, or lost: host 3's registrations are right again."""
    h3 = cluster.hosts[2]
    for host in cluster.hosts:
        host.run(labels(service))
    h3.run(labels(service))
    expected = cluster.running(service)
    all_passing(cluster, service, expected)

    h3.agent.process.stop()  # SIGTERM: a client agent leaves the cluster gracefully
    h3.agent.start(fresh=fresh)
    wait_until(h3.agent.ready, "host 3's agent to rejoin", timeout=CONVERGE)
    all_passing(cluster, service, expected)
    exact_catalog(cluster, service)
    own = {v["ID"] for v in h3.agent.get("/v1/agent/services").values() if v["Service"] == service}
    assert len(own) == 2, f"host 3's agent holds {sorted(own)}"
