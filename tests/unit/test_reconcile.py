"""The pure reconcile core: ownership, plan, and that it does no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import registrar.reconcile
from registrar.actual import ActualState
from registrar.effects import Log
from registrar.errors import ConsulError
from registrar.model import (
    META_CONTAINER,
    META_DIGEST,
    META_HOST,
    META_SOURCE,
    META_SOURCE_VALUE,
    Deregister,
    Health,
    HealthUpdate,
    Maintenance,
    Owned,
    Register,
    Service,
    write_key,
)
from registrar.reconcile import desired_state, owned_filter, owned_services, plan, retained_ids
from tests.unit.payloads import payload


def svc(service_id: str, tags: tuple[str, ...] = (), container: str = "c1") -> Service:
    return Service(id=service_id, name="web", port=80, tags=tags, container_id=container, container_name=container)


def meta(service: Service) -> dict[str, str]:
    """The Meta registrar gives this service on the agent (as a read finds it)."""
    return {
        META_SOURCE: META_SOURCE_VALUE,
        META_HOST: "vm",
        META_DIGEST: service.digest,
        META_CONTAINER: service.container_id[:12],
    }


def owned(service: Service) -> Owned:
    return Owned(service.id, service.digest, service.container_id[:12])


def test_owned_services_only_this_hosts() -> None:
    """Only registrations marked as registrar's and this host's are owned; hand-made and other hosts' are not."""
    agent = payload("agent_services")
    assert sorted(agent) == ["handmade", "other:web:80", "vm:smoke-web:80"]
    assert list(owned_services(agent, "vm")) == ["vm:smoke-web:80"]
    assert list(owned_services(agent, "other")) == ["other:web:80"]
    assert owned_services(agent, "nobody") == {}


def test_owned_filter_asks_the_agent_for_these_hosts_registrations() -> None:
    """The agent's filter (Consul's ``?filter=``) names registrar's Meta and each host; a host name it
    cannot quote gets no filter (every service is read and owned_services decides alone)."""
    assert owned_filter(("vm",)) == 'Meta["external-source"] == "registrar" and (Meta["registrar-host"] == "vm")'
    assert owned_filter(("vm", "old-vm")) == (
        'Meta["external-source"] == "registrar" and '
        '(Meta["registrar-host"] == "vm" or Meta["registrar-host"] == "old-vm")'
    )
    assert owned_filter(('vm"x',)) == ""
    assert owned_filter(("vm", "back\\slash")) == ""
    assert owned_filter(("vm", "new\nline")) == ""
    assert owned_filter(("node_1.dc-a:x",)) != ""


def test_plan_registers_missing_and_changed_and_deregisters_stale() -> None:
    """Missing or changed services are registered, unowned-by-desire ones deregistered, sorted by ID."""
    a, b, c = svc("a"), svc("b"), svc("c")
    changed_b = svc("b", tags=("new",))
    actual = {"b": owned(b), "c": owned(c), "z": Owned("z", "d", "c9")}
    assert plan({"a": a, "b": changed_b, "c": c}, actual) == [Register(a), Register(changed_b), Deregister("z")]


def test_plan_in_sync_is_empty() -> None:
    """An unchanged service is never written again."""
    a = svc("a")
    assert plan({"a": a}, {"a": owned(a)}) == []


def test_plan_keeps_what_it_is_told_to_keep() -> None:
    """Registrations of kept containers (exited non-zero under on-success) are not deregistered."""
    actual = {"x": Owned("x", "d", "aaaaaaaaaaaa"), "y": Owned("y", "d", "bbbbbbbbbbbb")}
    keep = retained_ids(actual, {"aaaaaaaaaaaa0000"})
    assert keep == {"x"}
    assert plan({}, actual, keep) == [Deregister("y")]


def test_duplicate_ids_across_containers_first_wins() -> None:
    """Two containers claiming one service ID: the first keeps it, the second is a problem."""
    desired, problems = desired_state([[svc("x", container="c1")], [svc("x", container="c2")]])
    assert desired["x"].container_id == "c1"
    assert [(p.container, p.key) for p in problems] == [("c2", "SERVICE_ID")]


def test_core_imports_no_io() -> None:
    """The pure modules (reconcile, model, services and its readers, checks, ...) import nothing that does I/O."""
    banned = {"docker", "consul", "requests", "os", "time", "socket", "subprocess", "threading", "structlog"}
    package = Path(registrar.reconcile.__file__).parent
    pure = ("reconcile", "model", "services", "container", "addresses", "service_meta", "checks", "metadata")
    for name in (*pure, "settings", "explain"):
        tree = ast.parse((package / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not roots & banned, f"{name}.py imports {roots & banned}"


def test_a_plan_of_every_service_forgets_the_docker_health_of_services_gone() -> None:
    """After a read of the agent (every service planned), the Docker health sent for a service no container
    yields any more is forgotten: under churn it would otherwise pile up for the daemon's whole life."""
    agent = ActualState("vm")
    agent.read({})
    agent.health_sent["vm:gone:80:docker-health"] = Health("vm:gone:80:docker-health", "passing", "ok")
    agent.writes({}, set(), set(), set(), set())
    assert agent.health_sent == {}


def test_a_read_is_parsed_unless_its_answer_is_the_last_parsed_one_and_nothing_came_back_since() -> None:
    """start_read's ``unless``: the last parsed answer's digest while nothing came back since; 0 (parse any
    answer) once a registration, a deregistration or a failed health update came back, and for a full reconcile."""
    agent = ActualState("vm")
    web = svc("vm:web:80")
    assert agent.start_read(True) == 0
    agent.read({}, digest=5)
    assert agent.start_read(False) == 5, "nothing came back: the digest tells"
    agent.read_unchanged()
    agent.written(Register(web), None)
    assert agent.start_read(False) == 0, "a registration back: only the answer tells the agent kept it"
    assert agent.start_read(False) is None, "one read at a time"
    agent.read_unchanged()
    assert agent.start_read(False) == 0, "still: no read was parsed since the registration"
    agent.read({web.id: web.to_consul()}, digest=7)
    assert agent.start_read(False) == 7
    agent.read_unchanged()
    agent.written(Deregister(web.id), None)
    assert agent.start_read(False) == 0, "a deregistration back"
    agent.read({}, digest=5)
    agent.written(HealthUpdate(Health("vm:web:80:docker-health", "passing", "ok")), ConsulError("refused"))
    assert agent.start_read(False) == 0, "a failed health update"
    agent.read({}, digest=5)
    assert agent.start_read(True) == 0, "a full reconcile's read"


def test_a_read_keeps_the_registrations_it_knew_and_takes_what_changed() -> None:
    """A parsed read keeps each registration ``actual`` holds already, the same object (the answer's copy
    is let go: 0.1 MiB at 500 services), and takes the answer's where it differs."""
    agent = ActualState("vm")
    web, db = svc("vm:web:80"), svc("vm:db:80", container="c2")
    agent.read({})
    agent.written(Register(web), None)
    agent.written(Register(db), None)
    known = agent.registrations
    assert known is not None
    changed = svc("vm:db:80", tags=("new",), container="c2")
    agent.read({s.id: {"Meta": meta(s)} for s in (web, changed)})
    assert agent.registrations is not None and agent.registrations[web.id] is known[web.id]
    assert agent.registrations[db.id] == owned(changed) != known[db.id]


def test_a_failed_maintenance_call_warns_only_while_its_service_is_registered() -> None:
    """docker stop of a container that exits at once: the die's deregistration can reach the agent before
    the kill's maintenance call, which then fails (404). That is no problem, so it logs no warning; a
    maintenance call that fails while the service is there does."""
    agent = ActualState("vm")
    agent.read({})
    agent.registrations = {"vm:web:80": Owned("vm:web:80", "d", "c"), "vm:api:80": Owned("vm:api:80", "d", "c")}
    gone_first, deregistering, there = (Maintenance(i, True) for i in ("vm:old:80", "vm:web:80", "vm:api:80"))
    agent.in_flight.update({("service", "vm:web:80")} | {write_key(w) for w in (gone_first, deregistering, there)})
    error = ConsulError("enabling maintenance: Unknown service ID")
    for write in (gone_first, deregistering, there):
        agent.written(write, error)
    logged = [line for line in agent.logged if isinstance(line, Log)]
    assert [line.fields["service_id"] for line in logged if line.event == "maintenance_failed"] == ["vm:api:80"]


def test_a_registration_during_a_drain_puts_the_service_back_in_maintenance() -> None:
    """A registration replaces the service's checks on the agent (replace-existing-checks), the maintenance
    check with them: a service still draining is put in maintenance again by the next writes."""
    agent = ActualState("vm")
    agent.read({})
    web = svc("vm:web:80")
    agent.registrations = {web.id: owned(svc(web.id, tags=("old",)))}
    assert agent.writes({web.id: web}, {web.id}, set(), {web.id}, set()) == [Register(web), Maintenance(web.id, True)]
    agent.written(Maintenance(web.id, True), None)  # back first: the registration may still replace it
    agent.written(Register(web), None)
    assert agent.writes({web.id: web}, set(), set(), {web.id}, set()) == [Maintenance(web.id, True)]
    agent.written(Maintenance(web.id, True), None)
    agent.written(Register(web), None)  # another registration, while nothing else is in flight
    assert agent.writes({web.id: web}, set(), set(), {web.id}, set()) == [Maintenance(web.id, True)]
    agent.written(Maintenance(web.id, True), None)
    assert agent.writes({web.id: web}, set(), set(), {web.id}, set()) == []
