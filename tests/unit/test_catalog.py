"""``--catalog``: CatalogSink against a stand-in catalog on loopback, and the options that turn it on.

The stand-in keeps nodes, services and checks as Consul's catalog does for the requests registrar makes
(``/v1/catalog/register|deregister``, ``/v1/catalog/node/<node>``, ``/v1/health/node/<node>`` with the
``ServiceID ==`` / ``CheckID ==`` filters), and records every request with its body.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest

from registrar import catalog_sink
from registrar.catalog_sink import NOT_RUN, CatalogSink, NodeTaken, catalog_node
from registrar.checks import host_probe
from registrar.cli import main, run
from registrar.daemon import Daemon
from registrar.errors import ConfigError, ConsulError
from registrar.metrics import Metrics
from registrar.model import Check, CheckOptions, Health, HealthUpdate, Service, TtlPass
from registrar.options import build_settings
from registrar.settings import ConsulTarget, Settings
from tests.unit.fakes import MemoryDocker
from tests.unit.payloads import payload

NODE = "host1"
OWNED = (("external-source", "registrar"), ("registrar-host", NODE))


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


def _body(raw: bytes) -> Any:
    """A request's body: JSON, else its bytes (a KV value), None when empty."""
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw


class StandInCatalog:
    """A Consul catalog on loopback for the requests CatalogSink makes; ``deny`` answers 403 to everything."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}
        self.services: dict[str, dict[str, dict[str, Any]]] = {}
        self.checks: dict[str, dict[str, dict[str, Any]]] = {}
        self.requests: list[Request] = []
        self.deny = False
        self.failing_node_reads = 0
        """The next node reads that answer 500."""
        self.lock = threading.Lock()
        catalog = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.answer()

            def do_PUT(self) -> None:
                self.answer()

            def answer(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                request = Request(
                    self.command,
                    urllib.parse.unquote(url.path),
                    dict(urllib.parse.parse_qsl(url.query)),
                    dict(self.headers.items()),
                    _body(raw),
                )
                status, body = catalog.handle(request)
                data = json.dumps(body).encode() if not isinstance(body, bytes) else body
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("X-Consul-Index", "7")
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def handle(self, r: Request) -> tuple[int, Any]:
        with self.lock:
            self.requests.append(r)
            if self.deny:
                return 403, b"Permission denied"
            if r.method == "GET" and r.path.startswith("/v1/catalog/node/"):
                if self.failing_node_reads:
                    self.failing_node_reads -= 1
                    return 500, b"rpc error: No cluster leader"
                name = r.path.removeprefix("/v1/catalog/node/")
                node = self.nodes.get(name)
                return 200, None if node is None else {"Node": node, "Services": self.services.get(name, {})}
            if r.method == "GET" and r.path.startswith("/v1/health/node/"):
                name = r.path.removeprefix("/v1/health/node/")
                checks = list(self.checks.get(name, {}).values())
                if "filter" not in r.query:
                    return 200, checks
                field, value = re.fullmatch(r'(\w+) == (".*")', r.query["filter"]).groups()  # type: ignore[union-attr]
                return 200, [c for c in checks if c.get(field) == json.loads(value)]
            if r.path.startswith("/v1/session/"):
                return 500, b"rpc error: No cluster leader"  # a session cannot be had here
            if r.path == "/v1/catalog/register":
                return self.register(r.body)
            if r.path == "/v1/catalog/deregister":
                return self.deregister({k.lower(): v for k, v in r.body.items()})
        return 404, b"no such endpoint"

    def register(self, body: dict[str, Any]) -> tuple[int, Any]:
        name = body["Node"]
        if name not in self.nodes or not body.get("SkipNodeUpdate"):
            self.nodes[name] = {"ID": "", "Node": name, "Address": body["Address"], "Meta": body.get("NodeMeta")}
        services, checks = self.services.setdefault(name, {}), self.checks.setdefault(name, {})
        if body.get("Service"):
            services[body["Service"]["ID"]] = body["Service"]
        for check in body.get("Checks") or ([body["Check"]] if body.get("Check") else []):
            if check.get("ServiceID") and check["ServiceID"] not in services:
                return 500, b"Missing service registration"
            checks[check["CheckID"]] = {**check, "Node": name}
        return 200, True

    def deregister(self, body: dict[str, Any]) -> tuple[int, Any]:
        name = body["node"]
        if body.get("serviceid"):
            self.services.get(name, {}).pop(body["serviceid"], None)
            for check_id in [i for i, c in self.checks.get(name, {}).items() if c["ServiceID"] == body["serviceid"]]:
                del self.checks[name][check_id]
        elif body.get("checkid"):
            self.checks.get(name, {}).pop(body["checkid"], None)
        else:
            self.nodes.pop(name, None)
        return 200, True

    def writes(self) -> list[Request]:
        return [r for r in self.requests if r.method == "PUT"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def catalog() -> Iterator[StandInCatalog]:
    stand_in = StandInCatalog()
    yield stand_in
    stand_in.close()


@pytest.fixture
def sink(catalog: StandInCatalog) -> Iterator[Callable[..., CatalogSink]]:
    made: list[CatalogSink] = []

    def make(name: str = NODE, token: str = "", instance: str = "") -> CatalogSink:
        made.append(CatalogSink(ConsulTarget(port=catalog.port, token=token), catalog_node(name, "10.0.0.9", instance)))
        return made[-1]

    yield make
    for s in made:
        s.close()


def web(*checks: Check, health: Health | None = None, service_id: str = "host1:web:80") -> Service:
    return Service(service_id, "web", 32768, tags=("v1",), meta=OWNED, checks=checks, health=health)


HTTP = Check(
    "service:host1:web:80",
    http="http://10.0.0.9:32768/health",
    method="HEAD",
    interval="10s",
    timeout="2s",
    options=CheckOptions(header=(("X-Probe", ("1",)),)),
)
TCP = Check("service:host1:web:80:2", tcp="10.0.0.9:32768", interval="5s")
HEALTH = Health("host1:web:80:docker-health", "passing", "ok")


def test_the_host_becomes_an_external_node_owned_by_registrar(
    catalog: StandInCatalog, sink: Callable[..., CatalogSink]
) -> None:
    """A registration writes the node at --ip with NodeMeta external-node=true and the ownership, and the service."""
    sink(instance="blue").register(web())
    assert catalog.nodes[NODE]["Address"] == "10.0.0.9"
    assert catalog.nodes[NODE]["Meta"] == {
        "external-node": "true",
        "external-source": "registrar",
        "registrar-host": NODE,
        "registrar-instance": "blue",
    }
    entry = catalog.services[NODE]["host1:web:80"]
    assert (entry["Service"], entry["Port"], entry["Tags"]) == ("web", 32768, ["v1"])
    assert entry["Meta"]["registrar-digest"] == web().digest


def test_the_node_is_written_once_then_skipped(catalog: StandInCatalog, sink: Callable[..., CatalogSink]) -> None:
    """The node's own fields go with the first registration only; later ones say SkipNodeUpdate."""
    s = sink()
    s.register(web())
    s.register(web(service_id="host1:web:81"))
    assert [w.body["SkipNodeUpdate"] for w in catalog.writes()] == [False, True]
    other = sink()  # a restart: the read finds the node as written
    other.services()
    other.register(web(service_id="host1:web:82"))
    assert catalog.writes()[-1].body["SkipNodeUpdate"] is True


def test_checks_are_written_with_the_definition_consul_esm_runs(
    catalog: StandInCatalog, sink: Callable[..., CatalogSink]
) -> None:
    """HTTP and TCP checks carry their Definition; nothing runs them yet, so they are critical and say so; Docker
    health has the status and output registrar knows."""
    sink().register(web(HTTP, TCP, health=HEALTH))
    checks = catalog.checks[NODE]
    http = checks["service:host1:web:80"]
    assert http["Definition"] == {
        "HTTP": "http://10.0.0.9:32768/health",
        "Method": "HEAD",
        "Header": {"X-Probe": ["1"]},
        "Interval": "10s",
        "Timeout": "2s",
    }
    assert (http["ServiceID"], http["Name"], http["Type"], http["Status"]) == (
        "host1:web:80",
        "Service 'web' check",
        "http",
        "critical",
    )
    assert "consul-esm runs it from its Definition" in http["Output"]
    assert checks["service:host1:web:80:2"]["Definition"] == {"TCP": "10.0.0.9:32768", "Interval": "5s"}
    health = checks["host1:web:80:docker-health"]
    assert (health["Name"], health["Status"], health["Output"], "Definition" in health) == (
        "Docker health",
        "passing",
        "ok",
        False,
    )


def test_a_check_registrar_runs_is_written_as_such_until_its_first_result(
    catalog: StandInCatalog, sink: Callable[..., CatalogSink]
) -> None:
    """An HTTP check registrar runs (--catalog) starts critical, saying it waits for registrar's first result;
    one left to consul-esm (--catalog-checks esm) says so."""
    s = sink()
    s.register(web(replace(HTTP, probe=host_probe(HTTP)), TCP))
    ran, left = catalog.checks[NODE][HTTP.check_id], catalog.checks[NODE][TCP.check_id]
    assert (ran["Status"], ran["Output"]) == ("critical", "registrar runs this check: no result yet")
    assert (left["Status"], left["Output"]) == ("critical", NOT_RUN["tcp"])
    assert ran["Definition"]["HTTP"] == HTTP.http
    refused = Health(HTTP.check_id, "critical", "HTTP HEAD http://10.0.0.9:32768/health: Connection refused")
    assert s.set_health(refused)  # the first result, critical as the check started: its output is written at once
    assert catalog.checks[NODE][HTTP.check_id]["Output"] == refused.output


def test_a_status_the_catalog_holds_is_kept_when_the_service_is_written_again(
    catalog: StandInCatalog, sink: Callable[..., CatalogSink]
) -> None:
    """A status written by another (consul-esm) survives a new registration of the service."""
    s = sink()
    s.register(web(HTTP))
    catalog.checks[NODE]["service:host1:web:80"].update(Status="passing", Output="HTTP HEAD: 200 OK")
    s.register(web(HTTP, TCP))
    http = catalog.checks[NODE]["service:host1:web:80"]
    assert (http["Status"], http["Output"]) == ("passing", "HTTP HEAD: 200 OK")


def test_checks_no_longer_defined_leave_the_catalog(catalog: StandInCatalog, sink: Callable[..., CatalogSink]) -> None:
    """A registration carries exactly the checks defined now: a removed label's check goes, maintenance's too."""
    s = sink()
    s.register(web(HTTP, TCP))
    s.maintenance("host1:web:80", True)
    s.register(web(TCP))
    assert set(catalog.checks[NODE]) == {"service:host1:web:80:2"}


def test_health_and_ttl_updates_rewrite_the_check(catalog: StandInCatalog, sink: Callable[..., CatalogSink]) -> None:
    """Docker health and TTL passes change the check's status and output, and nothing else of it."""
    s = sink()
    s.register(web(Check("service:host1:web:80:ttl", ttl="30s"), health=HEALTH))
    assert catalog.checks[NODE]["service:host1:web:80:ttl"]["Status"] == "critical"
    s.set_health(Health(HEALTH.check_id, "critical", "unhealthy: exit 1"))
    s.pass_ttl("service:host1:web:80:ttl")
    health = catalog.checks[NODE][HEALTH.check_id]
    assert (health["Status"], health["Output"], health["ServiceID"], health["Name"]) == (
        "critical",
        "unhealthy: exit 1",
        "host1:web:80",
        "Docker health",
    )
    assert catalog.checks[NODE]["service:host1:web:80:ttl"]["Status"] == "passing"
    assert all(w.body.get("SkipNodeUpdate") for w in catalog.writes()[1:])


def test_an_unchanged_status_is_not_written_again(catalog: StandInCatalog, sink: Callable[..., CatalogSink]) -> None:
    """Docker health refreshed with the status and output just written costs no write to the servers."""
    s = sink()
    s.register(web(health=HEALTH))
    s.set_health(HEALTH)
    s.set_health(HEALTH)
    assert len(catalog.writes()) == 1


def test_an_unchanged_status_is_not_written_again_however_long_after(
    catalog: StandInCatalog, sink: Callable[..., CatalogSink], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An hour of Docker health refreshes with the status and output last written makes no write: each would be
    a Raft entry on the servers for nothing."""
    clock = [1000.0]
    monkeypatch.setattr(catalog_sink, "time", SimpleNamespace(monotonic=lambda: clock[0]), raising=False)
    s = sink()
    s.register(web(health=HEALTH))
    for _ in range(360):
        clock[0] += 10.0
        s.set_health(HEALTH)
    assert len(catalog.writes()) == 1


def test_a_new_output_alone_is_written_once_five_minutes_have_passed(
    catalog: StandInCatalog, sink: Callable[..., CatalogSink], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A check's output that changes while its status stays (a body with a timestamp) is written at most every
    5 minutes, as the agent's check_update_interval; a new status is written at once."""
    clock = [1000.0]
    monkeypatch.setattr(catalog_sink, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    s = sink()
    s.register(web(health=HEALTH))
    outputs = []
    for at, status in ((10.0, "passing"), (299.0, "passing"), (300.0, "passing"), (310.0, "critical")):
        clock[0] = 1000.0 + at
        s.set_health(Health(HEALTH.check_id, status, f"at {at:g}"))
        outputs.append(catalog.checks[NODE][HEALTH.check_id]["Output"])
    assert outputs == ["ok", "ok", "at 300", "at 310"]


def test_a_restarted_registrar_writes_no_status_the_catalog_holds_already(
    catalog: StandInCatalog, sink: Callable[..., CatalogSink]
) -> None:
    """After a restart, a status equal to what the catalog holds for the check is not written again."""
    sink().register(web(health=HEALTH))
    again = sink()
    assert not again.set_health(HEALTH)
    assert not again.set_health(HEALTH)
    assert len(catalog.writes()) == 1


def test_a_status_changed_behind_registrars_back_is_written_again_after_a_full_read(
    catalog: StandInCatalog, sink: Callable[..., CatalogSink]
) -> None:
    """A check's status written by someone else is put back by the first refresh after a full read of the node
    (the start, --resync, the read after writes), as the agent's TTL refresh would."""
    s = sink()
    s.register(web(health=HEALTH))
    catalog.checks[NODE][HEALTH.check_id].update(Status="critical", Output="someone else")
    s.set_health(HEALTH)
    assert catalog.checks[NODE][HEALTH.check_id]["Status"] == "critical"  # no read since: not known
    s.read_services(unless=0)
    s.set_health(HEALTH)
    check = catalog.checks[NODE][HEALTH.check_id]
    assert (check["Status"], check["Output"]) == ("passing", "ok")
    s.read_services(unless=0)
    s.set_health(HEALTH)
    assert len(catalog.writes()) == 2


def test_a_restarted_registrar_updates_checks_it_did_not_write(
    catalog: StandInCatalog, sink: Callable[..., CatalogSink]
) -> None:
    """After a restart, a health update finds its check in the catalog and keeps it on its service."""
    sink().register(web(health=HEALTH))
    again = sink()
    again.set_health(Health(HEALTH.check_id, "critical", "unhealthy"))
    again.set_health(Health("host1:gone:80:docker-health", "passing", ""))  # not in the catalog: nothing to do
    health = catalog.checks[NODE][HEALTH.check_id]
    assert (health["Status"], health["ServiceID"], health["Name"]) == ("critical", "host1:web:80", "Docker health")
    assert "host1:gone:80:docker-health" not in catalog.checks[NODE]


def test_maintenance_is_a_critical_check_until_disabled(
    catalog: StandInCatalog, sink: Callable[..., CatalogSink]
) -> None:
    """Draining puts the service's maintenance check critical, as the agent does; ending it removes the check."""
    s = sink()
    s.register(web())
    s.maintenance("host1:web:80", True)
    check = catalog.checks[NODE]["_service_maintenance:host1:web:80"]
    assert (check["Status"], check["ServiceID"]) == ("critical", "host1:web:80")
    assert check["Name"] == "Service Maintenance Mode"
    s.maintenance("host1:web:80", False)
    assert catalog.checks[NODE] == {}


def test_deregistration_removes_the_service_and_a_second_one_is_done(
    catalog: StandInCatalog, sink: Callable[..., CatalogSink]
) -> None:
    """Deregistering removes the service with its checks from the node; one already gone counts as done."""
    s = sink()
    s.register(web(HTTP, health=HEALTH))
    s.deregister("host1:web:80")
    s.deregister("host1:web:80")
    assert (catalog.services[NODE], catalog.checks[NODE]) == ({}, {})
    assert catalog.writes()[-1].body == {"node": NODE, "serviceid": "host1:web:80"}


def test_the_loop_reads_each_service_meta_by_id_with_the_digest_rule(
    catalog: StandInCatalog, sink: Callable[..., CatalogSink]
) -> None:
    """read_services gives {ID: {"Meta": ...}} with the filter sent; the same answer again is not parsed."""
    s = sink()
    assert s.read_services()[1] == {}  # no node yet: no services
    s.register(web())
    digest, services = s.read_services(0, 'Meta["registrar-host"] == "host1"')
    assert services == {"host1:web:80": {"Meta": {**dict(OWNED), "registrar-digest": web().digest}}}
    node_reads = [r for r in catalog.requests if r.path == f"/v1/catalog/node/{NODE}"]
    assert node_reads[-1].query == {"filter": 'Meta["registrar-host"] == "host1"'}
    assert s.read_services(digest, 'Meta["registrar-host"] == "host1"') == (digest, None)


def test_a_node_name_an_agent_owns_is_refused(catalog: StandInCatalog, sink: Callable[..., CatalogSink]) -> None:
    """A node without external-node=true is an agent's: refused at start (a ConfigError), and while running."""
    catalog.nodes["vm"] = {"ID": "0b3c", "Node": "vm", "Address": "127.0.0.1", "Meta": {"consul-network-segment": ""}}
    s = sink("vm")
    with pytest.raises(NodeTaken) as refused:
        s.services()
    assert isinstance(refused.value, ConfigError)
    assert str(refused.value).startswith("--catalog: node 'vm' belongs to a Consul agent")
    with pytest.raises(ConsulError, match="node 'vm' belongs to a Consul agent"):
        s.read_services()
    assert catalog.writes() == []


def test_the_token_travels_in_the_header_only(catalog: StandInCatalog, sink: Callable[..., CatalogSink]) -> None:
    """Every catalog request carries the token as X-Consul-Token, never in its URL."""
    s = sink(token="s3cr3t-token")
    s.services()
    s.register(web(HTTP))
    s.set_health(Health("service:host1:web:80", "passing", ""))
    s.maintenance("host1:web:80", True)
    s.deregister("host1:web:80")
    assert len(catalog.requests) >= 6
    for r in catalog.requests:
        assert r.headers.get("X-Consul-Token") == "s3cr3t-token", r
        assert "s3cr3t-token" not in json.dumps(r.query), r


def test_permission_denied_says_what_the_token_needs(catalog: StandInCatalog, sink: Callable[..., CatalogSink]) -> None:
    """A token without the rights: one ConsulError naming node:write and service:write."""
    catalog.deny = True
    with pytest.raises(ConsulError, match="needs node:write and service:write"):
        sink().register(web())


def test_the_loop_syncs_containers_into_the_catalog(catalog: StandInCatalog, sink: Callable[..., CatalogSink]) -> None:
    """The daemon's one-shot sync, unchanged, registers a container's service on the host's node, then finds
    nothing to do."""
    settings = Settings(hostname=NODE, ip="10.0.0.9", catalog=True)
    registered = []
    for _ in range(2):
        daemon = Daemon(MemoryDocker(payload("web")), sink(), settings)
        try:
            registered.append(daemon.sync().registered)
        finally:
            daemon.close()
    assert registered == [1, 0]
    assert [s["Service"] for s in catalog.services[NODE].values()] == ["web"]
    assert catalog.nodes[NODE]["Meta"]["external-node"] == "true"


def test_the_metrics_tell_a_status_sent_from_one_left_unchanged(
    catalog: StandInCatalog, sink: Callable[..., CatalogSink]
) -> None:
    """registrar_consul_operations_total counts a refresh the catalog sink did not write as result="unchanged"."""
    daemon = Daemon(MemoryDocker(), sink(), Settings(hostname=NODE, ip="10.0.0.9", catalog=True), metrics=Metrics())
    try:
        daemon.sink.register(web(health=HEALTH))
        for health in (HEALTH, Health(HEALTH.check_id, "critical", "unhealthy"), HEALTH, HEALTH):
            daemon.executor.send(HealthUpdate(health))
        daemon.executor.send(TtlPass(HEALTH.check_id))  # passing with no output: the output alone is new
        counted = daemon.metrics.registry.get_sample_value  # type: ignore[union-attr]
        labels = [(op, r) for op in ("health_update", "ttl_pass") for r in ("ok", "unchanged")]
        assert [counted("registrar_consul_operations_total", {"operation": o, "result": r}) for o, r in labels] == [
            2.0,
            2.0,
            0.0,
            1.0,
        ]
    finally:
        daemon.close()
    assert len(catalog.writes()) == 3  # the service, two changes of status


def settings_for(args: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    ctx = run.make_context("run", args)
    return build_settings({"metrics_addr": "", **ctx.params}, env)


@pytest.mark.parametrize(
    ("args", "env", "host", "on"),
    [
        (["--catalog", "consul://10.1.1.1:8500", "--ip", "10.0.0.9"], {}, "10.1.1.1", True),
        (["--ip", "10.0.0.9", "consul://10.1.1.2:8500", "--catalog"], {}, "10.1.1.2", True),
        (["--ip", "10.0.0.9"], {"REGISTRAR_CATALOG": "consul://10.1.1.3:8500"}, "10.1.1.3", True),
        (["--ip", "10.0.0.9"], {"REGISTRAR_CATALOG": "true", "CONSUL_HTTP_ADDR": "10.1.1.4:8500"}, "10.1.1.4", True),
        (["--ip", "10.0.0.9", "--catalog", "false"], {}, "127.0.0.1", False),
        ([], {}, "127.0.0.1", False),
    ],
)
def test_catalog_option_and_environment(
    args: list[str], env: dict[str, str], host: str, on: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--catalog URI, bare --catalog (REGISTRY_URI's or CONSUL_HTTP_ADDR's endpoint) or REGISTRAR_CATALOG."""
    settings = settings_for(args, env, monkeypatch)
    assert (settings.catalog, settings.consul.host) == (on, host)
    assert settings.host_checks == on


def test_catalog_checks_esm_leaves_http_and_tcp_checks_to_consul_esm(monkeypatch: pytest.MonkeyPatch) -> None:
    """--catalog-checks esm (or REGISTRAR_CATALOG_CHECKS=esm): registrar runs no HTTP or TCP check."""
    args = ["--catalog", "consul://10.1.1.1:8500", "--ip", "10.0.0.9"]
    assert not settings_for([*args, "--catalog-checks", "esm"], {}, monkeypatch).host_checks
    assert not settings_for(args, {"REGISTRAR_CATALOG_CHECKS": "esm"}, monkeypatch).host_checks


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["sync", "--catalog", "consul://10.1.1.1:8500"], "--catalog needs --ip"),
        (["plan", "--ip", "10.0.0.9", "--catalog", "server:8500"], "--catalog 'server:8500' is not a Consul URI"),
        (["sync", "--ip", "10.0.0.9", "--catalog", "consul://a:1", "consul://b:1"], "name two Consul endpoints"),
        (["run", "--ip", "10.0.0.9", "--catalog", "--allow-script-checks"], "--allow-script-checks: a Consul agent"),
        (["sync", "--ip", "10.0.0.9", "--catalog", "--forget-host", "old"], "--forget-host with --catalog"),
        (["run", "--catalog-checks", "esm"], "--catalog-checks: only with --catalog"),
        (["run", "--catalog", "--ip", "10.0.0.9", "--catalog-checks", "agent"], "'agent' is not one of"),
    ],
)
def test_catalog_usage_errors_are_one_line(args: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    """What --catalog cannot work with: one line on stderr, exit 2, before anything is reached."""
    with pytest.raises(SystemExit) as exit:
        main(args)
    err = capsys.readouterr().err
    assert exit.value.code == 2, err
    assert err.startswith("registrar: ") and needle in err and len(err.strip().splitlines()) == 1, err


class Engine:
    """Docker as ``_connect`` needs it at start: a host name."""

    def __init__(self, settings: Settings, environ: Any) -> None:
        pass

    def host_name(self) -> str:
        return NODE

    def close(self) -> None:
        pass


def test_run_catalog_start_gives_consul_one_budget_of_attempts(
    catalog: StandInCatalog, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """run --catalog at start: reading the node and taking the session share --retry-attempts 3 (four tries in
    all), not three each: two failed reads leave two tries for the session, then one line and exit 5."""
    monkeypatch.setattr("registrar.docker_source.DockerSource", Engine)
    catalog.failing_node_reads = 2  # and every session fails
    args = ["run", "--catalog", f"consul://127.0.0.1:{catalog.port}", "--ip", "10.0.0.9", "--metrics-addr", ""]
    with pytest.raises(SystemExit) as exit:
        main([*args, "--retry-attempts", "3", "--retry-interval", "1", "--log-level", "error"])
    err = capsys.readouterr().err
    assert exit.value.code == 5, err
    assert err.startswith("registrar: gave up after 4 attempt(s): ") and len(err.strip().splitlines()) == 1, err
    assert len([r for r in catalog.requests if r.path == "/v1/session/create"]) == 2
