"""``run --catalog`` on hosts without a Consul agent: sessions keep the living hosts' nodes, and the hosts that
live remove the node of a host whose registrar died.

The fleet of tests/fleet.py without its client agents: three Consul servers on 127.0.1.1-3, three Docker
engines of their own, and on each host a ``registrar run --catalog`` pointed at one of the servers, with
``--node-ttl 10s``. The test image is imported into each engine from the busybox binary (the shared engine is
not used). Started once for the module, stopped by pid at its end; each test brings back what it broke.
"""

from __future__ import annotations

import io
import re
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from registrar.catalog_liveness import MOST_WAIT
from tests.fleet import SERVER_ADDRESSES, Fleet, Host, Process
from tests.integration.harness import (
    IMAGE,
    Consul,
    ConsulAgent,
    Daemon,
    free_port,
    log_events,
    run_cli,
    unique_host,
    wait_until,
)

TTL = 10
"""``--node-ttl`` of every registrar here: the least Consul takes, so that the tests are quick."""
GONE_WITHIN = 5 * TTL
"""A dead host's node goes 1 to 2 TTLs after its last renewal (Consul's session expiry), plus the grace of a TTL,
plus a blocking query's turn: within this."""
HOLD = 4 * TTL
"""How long a living node is watched to stay: longer than a dead one takes to go (about 3 TTLs)."""
IMAGE_CMD = "hostname > /www/index.html && exec httpd -f -p 80 -h /www"


class CatalogHost(Host):
    """A fleet host with no Consul agent: its registrar writes its node into the catalog of a server."""

    def __init__(self, root: Path, n: int, ttl: int = TTL) -> None:
        super().__init__(root, n)
        server = SERVER_ADDRESSES[(n - 1) % len(SERVER_ADDRESSES)]
        args = [sys.executable, "-m", "registrar", "run", "--hostname", self.name, "--ip", self.address]
        args += ["--docker-host", self.docker_url, "--retry-attempts", "-1", "--log-format", "json"]
        args += ["--metrics-addr", f"{self.address}:0", "--node-ttl", f"{ttl}s", "--catalog", f"consul://{server}:8500"]
        self.registrar = Process(f"registrar {self.name}", args, self.root / "registrar.log")

    def kill_registrar(self) -> None:
        """SIGKILL this host's registrar, as a host that dies does to it."""
        assert self.registrar.proc is not None
        self.registrar.proc.kill()
        self.registrar.reap()

    def events(self, event: str) -> list[dict[str, Any]]:
        """Every ``event`` this host's registrar has logged, over all its runs."""
        if not self.registrar.log.exists():
            return []
        return [e for e in log_events(self.registrar.log) if e.get("event") == event]


def image_tar() -> bytes:
    """A root file system of the test image: the busybox binary, its applets as links, /www and /tmp."""
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True, check=True).stdout.split()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name in ("bin", "www", "tmp"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
            tar.addfile(info)
        tar.add("/bin/busybox", "bin/busybox")
        for applet in applets:
            if applet != "busybox":
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
    return out.getvalue()


class CatalogFleet(Fleet):
    """Three servers, three hosts of engine and ``registrar run --catalog`` (``--node-ttl`` ``ttl``), no client
    agent anywhere."""

    def __init__(self, root: Path, hosts: int = 3, ttl: int = TTL) -> None:
        super().__init__(root, hosts)
        for host in self.hosts:  # the fleet's own hosts, replaced
            host.docker.close()
        self.hosts = [CatalogHost(root, n, ttl) for n in range(1, hosts + 1)]
        self.catalog_hosts: list[CatalogHost] = list(self.hosts)  # type: ignore[arg-type]

    def start(self) -> None:
        for server in self.servers:
            server.start()
        for host in self.hosts:
            host.start_engine()
        wait_until(lambda: all(h.engine_up() for h in self.hosts), "every host's engine to answer", timeout=60)
        self.load_image(self.hosts)
        wait_until(lambda: all(s.leader() for s in self.servers), "the servers to elect a leader", timeout=60)
        for host in self.hosts:
            host.start_registrar()

    def load_image(self, hosts: list[Host]) -> None:
        """The test image imported into each host's engine (never through the shared engine)."""
        rootfs = image_tar()
        repository, _, tag = IMAGE.rpartition(":")
        changes = ['CMD ["sh", "-c", "' + IMAGE_CMD + '"]', "EXPOSE 80"]
        for host in hosts:
            host.docker.api.import_image_from_data(rootfs, repository=repository, tag=tag, changes=changes)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CatalogFleet]:
    """The fleet, started for this module and stopped and removed at its end whatever happens."""
    for address in SERVER_ADDRESSES:  # someone else's fleet would answer in place of this one
        with socket.socket() as s:
            assert s.connect_ex((address, 8500)) != 0, f"a Consul already answers on {address}:8500"
    f = CatalogFleet(tmp_path_factory.mktemp("catalog-fleet"))
    try:
        f.start()
        yield f
    finally:
        f.stop()


@pytest.fixture
def service(cluster: CatalogFleet) -> Iterator[str]:
    """A service name of this test alone, one container of it on each host; every registrar running again
    and the containers removed afterwards."""
    name = unique_host("cat")
    for host in cluster.catalog_hosts:
        host.run({"SERVICE_NAME": name})
    yield name
    for host in cluster.catalog_hosts:
        if host.registrar.pid is None:
            host.start_registrar()
        host.remove_containers()


def entries(f: CatalogFleet, service: str) -> set[tuple[str, str, int]]:
    """(node, address, port) of the catalog's entries of a service, as the leader says."""
    return {(n, a, p) for n, _, a, p in f.leader().catalog(service)}


def node(f: CatalogFleet, name: str) -> Any:
    """The catalog's node ``name`` with its services (None when there is none)."""
    return f.leader().get(f"/v1/catalog/node/{name}")


def key_holder(f: CatalogFleet, name: str) -> str | None:
    """The session holding node ``name``'s key, None when the key is not there or not held."""
    leader = f.leader()
    entry = leader.http.session.get(f"{leader.url}/v1/kv/registrar/nodes/{name}", timeout=5)
    return entry.json()[0].get("Session") if entry.status_code == 200 else None


def all_registered(f: CatalogFleet, service: str) -> set[tuple[str, str, int]]:
    """Wait until the catalog holds exactly the running containers of ``service``; returns them."""
    expected = f.running(service)
    assert len(expected) == len(f.hosts)
    wait_until(lambda: entries(f, service) == expected, f"the catalog to hold {sorted(expected)}", timeout=30)
    return expected


def holds_for(seconds: float, probe: Callable[[], bool], what: str) -> None:
    """``probe`` is true at every look for ``seconds``; fails at the first look where it is not."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert probe(), f"{what} stopped holding"
        time.sleep(0.2)  # the rate of looks, not a wait for a condition


def test_a_killed_hosts_node_leaves_the_catalog_and_the_others_stay(cluster: CatalogFleet, service: str) -> None:
    """Host 2's registrar killed with SIGKILL: within a few TTLs its node and service leave the catalog and DNS,
    removed once by one of the living registrars; the others' nodes and services stay."""
    h1, h2, h3 = cluster.catalog_hosts
    before = all_registered(cluster, service)
    removed_before = {h.name: len(h.events("catalog_node_removed")) for h in (h1, h3)}

    h2.kill_registrar()
    killed = time.monotonic()
    wait_until(lambda: node(cluster, "host2") is None, "host 2's node to leave the catalog", timeout=GONE_WITHIN)
    print(f"host 2's node left the catalog {time.monotonic() - killed:.1f} s after its registrar's SIGKILL")

    survivors = {w for w in before if w[0] != "host2"}
    assert entries(cluster, service) == survivors
    dns = cluster.servers[0]
    want = {(a, p) for _, a, p in survivors}
    wait_until(lambda: dns.srv(service) == want, f"{dns.node}'s DNS to answer {sorted(want)}", timeout=10)
    assert {n["Node"] for n in cluster.leader().get("/v1/catalog/nodes") if n["Node"].startswith("host")} == {
        "host1",
        "host3",
    }
    removals = [e for h in (h1, h3) for e in h.events("catalog_node_removed")[removed_before[h.name] :]]
    assert [e["node"] for e in removals] == ["host2"], removals


def test_a_restarted_registrar_keeps_its_services_throughout(cluster: CatalogFleet, service: str) -> None:
    """Host 3's registrar killed with SIGKILL and started again: its predecessor's session is taken over, and
    its node and service never leave the catalog, over twice the time a dead host's node takes to go."""
    h3 = cluster.catalog_hosts[2]
    before = all_registered(cluster, service)
    taken = len(h3.events("catalog_session_taken_over"))

    h3.kill_registrar()
    h3.start_registrar()
    assert len(h3.events("catalog_session_taken_over")) == taken + 1
    holds_for(HOLD, lambda: entries(cluster, service) == before, f"the catalog holding {sorted(before)}")


def test_a_graceful_stop_leaves_the_registrations(cluster: CatalogFleet, service: str) -> None:
    """SIGTERM: registrar exits 0 and leaves its node and service in the catalog; started again within a TTL,
    it keeps them throughout."""
    h1 = cluster.catalog_hosts[0]
    before = all_registered(cluster, service)
    assert h1.registrar.proc is not None
    proc = h1.registrar.proc
    h1.registrar.stop()
    assert proc.returncode == 0
    assert entries(cluster, service) == before
    assert key_holder(cluster, "host1"), "the session left to expire"
    h1.start_registrar()
    holds_for(HOLD, lambda: entries(cluster, service) == before, f"the catalog holding {sorted(before)}")


def test_a_lost_session_is_taken_again_with_a_warning(cluster: CatalogFleet, service: str) -> None:
    """Host 1's session destroyed behind its back: one renewal later a warning, a new session holding the node's
    key; the node and its service never leave the catalog."""
    h1 = cluster.catalog_hosts[0]
    before = all_registered(cluster, service)
    holder = key_holder(cluster, "host1")
    lost = len(h1.events("catalog_session_lost"))

    assert cluster.leader().http.put(f"/v1/session/destroy/{holder}", {}) is True
    wait_until(lambda: key_holder(cluster, "host1") not in (None, holder), "host 1's key held again", timeout=2 * TTL)
    assert [e["level"] for e in h1.events("catalog_session_lost")[lost:]] == ["warning"]
    holds_for(HOLD, lambda: entries(cluster, service) == before, f"the catalog holding {sorted(before)}")


def test_a_live_hosts_node_removed_behind_its_back_comes_back(cluster: CatalogFleet, service: str) -> None:
    """Host 3's node deregistered by hand while its registrar lives (as the others would after a long partition):
    its registrar takes a new session and its key, and its service is registered again."""
    h3 = cluster.catalog_hosts[2]
    before = all_registered(cluster, service)
    lost = len(h3.events("catalog_session_lost"))
    leader = cluster.leader()
    holder = key_holder(cluster, "host3")
    assert leader.http.put("/v1/catalog/deregister", {"Node": "host3"}) is True
    wait_until(lambda: entries(cluster, service) == before, "host 3's service back in the catalog", timeout=2 * TTL)
    wait_until(lambda: key_holder(cluster, "host3") not in (None, holder), "host 3's key held again", timeout=2 * TTL)
    assert len(h3.events("catalog_session_lost")) == lost + 1


def test_the_leader_killed_and_back_loses_no_node(cluster: CatalogFleet, service: str) -> None:
    """The leader server killed with SIGKILL and started again: every node and service stays in the catalog, over
    longer than a dead host's node takes to go, and no registrar removes a node."""
    before = all_registered(cluster, service)
    removed = {h.name: len(h.events("catalog_node_removed")) for h in cluster.catalog_hosts}
    old = cluster.leader()
    old.process.stop(signal.SIGKILL)
    try:
        wait_until(lambda: cluster.leader() is not old, "another server to lead")
    finally:
        old.start()
    wait_until(old.leader, f"{old.node} to be back in a cluster with a leader", timeout=60)
    holds_for(HOLD, lambda: entries(cluster, service) == before, f"the catalog holding {sorted(before)}")
    assert {h.name: len(h.events("catalog_node_removed")) for h in cluster.catalog_hosts} == removed


def test_a_node_that_only_sync_writes_is_removed_after_the_grace(cluster: CatalogFleet, service: str) -> None:
    """sync --catalog holds no session: the node it writes, without a key, is removed by a running registrar once
    one looks (a blocking query's longest wait) and the grace has passed (a node is kept by run)."""
    h1, name, label = cluster.catalog_hosts[0], unique_host("synced"), unique_host("only")
    h1.run({"SERVICE_NAME": service, label: "1"})
    args = ["--hostname", name, "--ip", h1.address, "--docker-host", h1.docker_url, "--filter", f"label={label}"]
    result = run_cli("sync", *args, "--catalog", f"consul://{SERVER_ADDRESSES[0]}:8500")
    assert (result.returncode, result.stdout.strip()) == (
        0,
        "registered 1, deregistered 0, failed 0, rejected by Consul 0",
    ), result.stderr
    assert node(cluster, name) is not None
    gone = MOST_WAIT + GONE_WITHIN
    wait_until(lambda: node(cluster, name) is None, f"{name}'s node to be removed", timeout=gone)
    assert [e["node"] for h in cluster.catalog_hosts for e in h.events("catalog_node_removed")].count(name) == 1


def test_dns_answers_only_the_instances_whose_checks_registrar_sees_pass(cluster: CatalogFleet) -> None:
    """No agent runs the checks: each host's registrar runs its containers' HTTP and TCP checks and writes their
    status, so DNS leaves out the instance whose page is missing (404, critical) until the page is there."""
    h1, h2, h3 = cluster.catalog_hosts
    name = unique_host("checked")
    every_second = {"SERVICE_NAME": name, "SERVICE_CHECK_INTERVAL": "1s"}
    try:
        h1.run({**every_second, "SERVICE_CHECK_HTTP": "/"})
        missing = h2.run({**every_second, "SERVICE_CHECK_HTTP": "/missing"})
        h3.run({**every_second, "SERVICE_CHECK_TCP": "true"})
        where = {n: (a, p) for n, a, p in cluster.running(name)}

        def statuses() -> dict[str, tuple[str, str]]:
            found = cluster.leader().get(f"/v1/health/service/{name}")
            return {e["Node"]["Node"]: (e["Checks"][0]["Status"], e["Checks"][0]["Output"]) for e in found}

        def looks(expected: dict[str, str]) -> bool:
            return {n: status for n, (status, _) in statuses().items()} == expected

        wait_until(lambda: looks({"host1": "passing", "host2": "critical", "host3": "passing"}), "the checks' status")
        a2, p2 = where["host2"]
        assert statuses()["host2"][1].startswith(f"HTTP GET http://{a2}:{p2}/missing: 404 Not Found Output: ")
        assert statuses()["host3"][1] == "TCP connect {}:{}: Success".format(*where["host3"])
        dns = cluster.servers[0]
        passing = {where["host1"], where["host3"]}
        wait_until(lambda: dns.srv(name) == passing, f"{dns.node}'s DNS to answer {sorted(passing)}", timeout=10)

        missing.exec_run(["sh", "-c", "hostname > /www/missing"])
        wait_until(lambda: looks(dict.fromkeys(("host1", "host2", "host3"), "passing")), "host 2's check to pass")
        every = set(where.values())
        wait_until(lambda: dns.srv(name) == every, f"{dns.node}'s DNS to answer {sorted(every)}", timeout=10)
    finally:
        for host in cluster.catalog_hosts:
            host.remove_containers()


def test_an_unreachable_consul_is_one_line_and_a_non_zero_exit(cluster: CatalogFleet) -> None:
    """run --catalog at an address where no Consul answers: one line on stderr and exit 5, once its retries end."""
    h1 = cluster.catalog_hosts[0]
    port = free_port(h1.address)
    args = ["--hostname", "nowhere", "--ip", h1.address, "--docker-host", h1.docker_url, "--retry-attempts", "0"]
    args += ["--metrics-addr", "", "--log-level", "error", "--catalog", f"consul://{h1.address}:{port}"]
    command = [sys.executable, "-m", "registrar", "run", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 5, result.stderr
    assert result.stderr.startswith("registrar: gave up after 1 attempt(s): reading catalog node nowhere"), (
        result.stderr
    )
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


ROOT_TOKEN = "root-5c1e7a20"
GUIDE = Path(__file__).parents[2] / "docs" / "guides" / "without-agent.md"


def guide_policy() -> str:
    """The ACL policy that docs/guides/without-agent.md gives for --catalog (its hcl block)."""
    found = re.search(r"```hcl\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    assert found, f"{GUIDE} has no hcl block"
    return found.group(1)


@pytest.fixture
def acl_consul(own_consul: ConsulAgent) -> tuple[str, Callable[[str], str]]:
    """A Consul agent of the test's own with ACLs (default deny) on free ports: its URI, and a function making a
    token of a policy."""
    ports = {"http": free_port(), "dns": free_port(), "serf_lan": free_port(), "serf_wan": free_port()}
    ports["server"] = free_port()
    acl = f'acl {{ enabled = true, default_policy = "deny", tokens {{ master = "{ROOT_TOKEN}" }} }}'
    own_consul.configure(acl, Consul(f"http://127.0.0.1:{ports['http']}", token=ROOT_TOKEN), **ports)
    own_consul.start()
    root = own_consul.client
    wait_until(lambda: root.session.get(root.url + "/v1/acl/policies", timeout=5).ok, "Consul's ACLs")

    def token(rules: str) -> str:
        policy = root.put("/v1/acl/policy", {"Name": f"p-{free_port()}", "Rules": rules})
        return str(root.put("/v1/acl/token", {"Policies": [{"ID": policy["ID"]}]})["SecretID"])

    return f"consul://127.0.0.1:{ports['http']}", token


def run_args(host: CatalogHost, name: str) -> list[str]:
    """``run``'s arguments for host ``name`` on a fleet host's engine (no retries at start)."""
    return ["--hostname", name, "--ip", host.address, "--docker-host", host.docker_url, "--retry-attempts", "0"]


def test_a_token_without_session_rights_is_one_line_and_exit_3(
    cluster: CatalogFleet, acl_consul: tuple[str, Callable[[str], str]]
) -> None:
    """A token that may write nodes and services but not sessions: run --catalog stops at start, in one line that
    says what the token needs, with exit 3."""
    h1, name = cluster.catalog_hosts[0], unique_host("acl")
    uri, make_token = acl_consul
    token = make_token('node_prefix "" { policy = "write" }\nservice_prefix "" { policy = "write" }')
    args = [*run_args(h1, name), "--metrics-addr", "", "--log-level", "error"]
    result = run_cli("run", *args, "--catalog", uri, env={"CONSUL_HTTP_TOKEN": token})
    assert result.returncode == 3, result.stderr
    assert result.stderr.startswith(
        f"registrar: creating a session for catalog node {name}: permission denied by Consul's ACLs"
    ), result.stderr
    assert "session:write" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert token not in result.stderr


def test_the_guides_acl_policy_is_enough(
    cluster: CatalogFleet, acl_consul: tuple[str, Callable[[str], str]], own_consul: ConsulAgent, tmp_path: Path
) -> None:
    """With a token of the guide's policy alone, run --catalog holds its session and key, registers, and watches
    without a failure; SIGTERM exits 0."""
    h1, name = cluster.catalog_hosts[0], unique_host("acl")
    uri, make_token = acl_consul
    token = make_token(guide_policy())
    args = [*run_args(h1, name), "--metrics-addr", "", "--catalog", uri]
    daemon = Daemon(args, tmp_path / "registrar.log", env={"CONSUL_HTTP_TOKEN": token})
    try:
        daemon.wait_for_event("reconcile_done")
        assert daemon.count("catalog_session_held") == 1
        key = own_consul.client.get(f"/v1/kv/registrar/nodes/{name}").json()[0]
        assert key["Session"]
        failed = {"catalog_session_failed", "catalog_watch_failed", "consul_unreachable"}
        assert [e for e in daemon.events() if e.get("event") in failed or e.get("level") == "error"] == []
    finally:
        assert daemon.stop() == 0
