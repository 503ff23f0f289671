"""The reconciler alone: what it imports, and its rules as sequences of messages on a clock the test sets."""

from __future__ import annotations

import ast
import copy
from pathlib import Path
from typing import Any

from registrar.desired import summary_fingerprint
from registrar.effects import (
    FullReconcileDone,
    Inspect,
    ListContainers,
    Log,
    ReadAgent,
    Send,
    StartFullReconcile,
    UpdateProbes,
    WakeAt,
)
from registrar.errors import ConsulError, DockerError
from registrar.messages import RESYNC, AgentRead, Inspected, Listed, Probed, Written
from registrar.model import Deregister, DockerEvent, Health, HealthUpdate, Maintenance, Register, TtlPass
from registrar.reconciler import Reconciler, Timing
from registrar.settings import Settings
from tests.unit.core import Driven, S, started
from tests.unit.loop import named, stopped, stopping
from tests.unit.payloads import container, payload

ROOT = Path(__file__).resolve().parents[2] / "registrar"
CORE = ("reconciler", "effects", "desired", "actual", "reconcile", "backoff", "messages")
IO = {
    "threading", "time", "socket", "ssl", "select", "selectors", "asyncio", "concurrent", "queue", "os",
    "subprocess", "multiprocessing", "http", "urllib.request", "docker", "consul", "urllib3", "requests",
    "psutil", "structlog", "logging", "prometheus_client",
}  # fmt: skip
"""Modules that do I/O, start threads or read a clock. Logging is an effect: the core returns ``Log`` values."""


def imports(module: str) -> set[str]:
    """What a module of registrar imports, by name (``from a.b import c`` counts as ``a.b``, and as ``a.b.c``
    when that is a module of registrar: ``from registrar import logs``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse((ROOT / f"{module}.py").read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if node.module == "registrar" or node.module.startswith("registrar."):
                path = ROOT.parent.joinpath(*node.module.split("."))
                names |= {f"{node.module}.{a.name}" for a in node.names if (path / f"{a.name}.py").exists()}
    return names


def test_the_core_imports_nothing_that_does_io() -> None:
    """The reconciler and every registrar module it imports, however indirectly (``from registrar import x``
    too), import no I/O, thread, clock or logging module."""
    seen: set[str] = set()
    todo = list(CORE)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        for name in imports(module):
            if name == "registrar":
                continue
            if name.startswith("registrar."):
                todo.append(name.removeprefix("registrar.").replace(".", "/"))
                continue
            banned = [io for io in IO if name == io or name.startswith(io + ".")]
            assert not banned, f"registrar/{module}.py imports {name}"
    assert {"reconciler", "desired", "actual", "model"} <= seen
    assert not {"observe", "services"} & seen, "the translators from Docker's payloads run in the shell"


def test_a_first_step_starts_a_full_reconcile_and_registers_what_runs() -> None:
    """At start: a listing and a read of the agent; the inspect each listed container needs; its registration;
    then the full reconcile is done, with the requests it made."""
    web = payload("web")
    driven = Driven(web)
    assert driven.step() == [StartFullReconcile(), ListContainers(), ReadAgent(0)]
    fingerprint = summary_fingerprint(driven.docker.list_containers()[0])
    assert driven.answer(ListContainers) == [Inspect(web["Id"], fingerprint)]
    assert driven.answer(ReadAgent) == []
    effects = driven.answer(Inspect)
    assert [type(e) for e in effects if not isinstance(e, UpdateProbes)] == [Send]
    assert driven.writes() == [Register(driven.core.desired.services["vm:rec-web:80"])]
    assert not driven.core.ready, "done once everything it started is back, the registration too"
    effects = driven.answer(Send)
    assert [type(e) for e in effects] == [FullReconcileDone] and driven.core.ready
    assert "vm:rec-web:80" in driven.consul.registered
    done = effects[0]
    assert isinstance(done, FullReconcileDone)
    assert done.calls == {"docker_list": 1, "docker_inspect": 1, "consul_read": 1, "consul_write": 1}


def test_the_next_deadline_is_the_periodic_read_and_it_comes_at_that_time() -> None:
    """With nothing else due, the loop sleeps until the next read of the agent, and then reads: parsed whatever
    its answer after a registration came back, then not parsed while the answer's digest stays the same."""
    driven = started(payload("web"))
    read_at = driven.core.deadline()
    assert read_at == driven.core.schedule.read > 0
    assert driven.step(at=read_at - 0.001) == []
    assert driven.step(at=read_at) == [ReadAgent(0)]
    driven.answer_all()
    digest = driven.core.actual.read_digest
    assert digest != 0 and driven.step(at=driven.core.deadline()) == [ReadAgent(digest)]


def test_a_die_during_an_inspect_wins_over_it() -> None:
    """start, then die while the start's inspect is out, then the inspect comes back (it saw the container
    running): nothing is registered."""
    web = named("web", "late")
    driven = started()
    driven.docker.containers[web["Id"]] = web
    assert driven.event("start", web["Id"]) == [Inspect(web["Id"])]
    inspect = driven.take(Inspect, web["Id"])
    answer = driven.result(inspect)  # made while the container ran
    driven.docker.containers[web["Id"]] = stopped(web, 0)
    assert driven.event("die", web["Id"], exit_code=0) == [], "no second inspect: the die waits for the first"
    driven.handle(answer)
    driven.answer_all()
    assert driven.writes() == [] and driven.consul.registered == {}


def test_a_stop_signal_during_the_start_inspect_still_drains() -> None:
    """start, then docker stop's kill while the start's inspect is out: once the inspect is back the service
    is registered, then put in maintenance."""
    web = stopping(named("web", "quick"))
    driven = started()
    driven.docker.containers[web["Id"]] = web
    driven.event("start", web["Id"])
    assert driven.event("kill", web["Id"], signal="15") == [], "a kill costs no inspect"
    effects = driven.answer(Inspect, web["Id"])
    assert Log("info", "container_draining", {"container": "quick", "signal": "15", "until_s": 10.0}) in effects
    assert [type(w) for w in driven.writes()] == [Register]
    assert driven.answer(Send, "Register") and driven.writes()[-1] == Maintenance("vm:quick:80", True)
    driven.answer_all()
    assert driven.consul.in_maintenance == {"vm:quick:80"}


def test_a_fresh_inspect_during_a_drain_keeps_it() -> None:
    """A container in maintenance for a drain, inspected again (health_status): its service stays in
    maintenance; only its death, or the end of its stop timeout, ends the drain."""
    web = stopping(payload("web"))
    driven = started(web)
    driven.event("kill", web["Id"], signal="15")
    driven.answer_all()
    assert driven.consul.in_maintenance == {"vm:rec-web:80"}
    writes = len(driven.effects)
    driven.event("health_status", web["Id"])
    driven.answer_all()
    driven.step(at=5.0)
    driven.answer_all()
    assert driven.writes(writes) == [] and web["Id"] in driven.core.desired.draining


def test_a_drain_begun_where_the_kill_arrived_wakes_the_loop_for_its_end() -> None:
    """A kill taken off the loop (the event thread) asks the loop to wake for the drain's end; once that time
    comes, a survivor leaves maintenance."""
    web = stopping(payload("web"), "SIGUSR1", timeout=0)
    driven = started(web)
    effects = driven.event("kill", web["Id"], signal="10")
    wake = next(e for e in effects if isinstance(e, WakeAt))
    assert driven.core.deadline() == wake.when
    driven.answer_all()
    assert driven.consul.in_maintenance == {"vm:rec-web:80"}
    driven.step(at=wake.when)
    driven.answer_all()
    assert driven.consul.in_maintenance == set() and "vm:rec-web:80" in driven.consul.registered


def test_kill_and_die_in_one_batch_just_deregister() -> None:
    """A kill and the die right behind it, taken in one step: the die wins, no maintenance call is made."""
    web = stopping(payload("web"))
    driven = started(web)
    driven.docker.containers[web["Id"]] = stopped(web, 0)
    name = "rec-web"
    driven.step(DockerEvent("kill", web["Id"], name, signal="15"), DockerEvent("die", web["Id"], name, 0))
    driven.answer_all()
    assert driven.writes()[-1:] == [Deregister("vm:rec-web:80")] and driven.consul.in_maintenance == set()


def test_a_listing_older_than_a_start_does_not_forget_that_container() -> None:
    """A listing asked for before a container started, answered after it was registered: the registration stays,
    and the next full reconcile does not write it again."""
    web = named("web", "new")
    driven = started()
    driven.step(RESYNC)
    old_listing = driven.result(driven.take(ListContainers))
    driven.answer_all()
    driven.docker.containers[web["Id"]] = web
    driven.event("start", web["Id"])
    driven.answer_all()
    assert "vm:new:80" in driven.consul.registered
    driven.handle(old_listing)
    driven.answer_all()
    driven.step(RESYNC, at=1.0)
    driven.answer_all()
    assert "vm:new:80" in driven.consul.registered and driven.consul.attempts == {"vm:new:80": 1}


def test_a_read_older_than_a_registration_does_not_repeat_it() -> None:
    """A read of the agent asked for before a registration, answered after it came back: not written again."""
    web = named("web", "new")
    driven = started()
    driven.step(at=driven.core.schedule.read)
    old_read = driven.result(driven.take(ReadAgent))
    driven.docker.containers[web["Id"]] = web
    driven.event("start", web["Id"])
    driven.answer_all()
    driven.handle(old_read)
    driven.answer_all()
    driven.step(at=driven.core.schedule.read)
    driven.answer_all()
    assert driven.consul.attempts == {"vm:new:80": 1}


def test_a_read_of_the_agent_before_the_first_listing_deregisters_nothing() -> None:
    """At start, the agent's services are not planned against an empty view: nothing goes while the listing is out."""
    web = named("web", "kept")
    first = started(web)
    driven = Driven(web)
    driven.consul = first.consul
    driven.step()
    driven.answer(ReadAgent)
    driven.step(at=1.0)
    assert driven.writes() == []
    driven.answer_all()
    assert driven.core.ready and "vm:kept:80" in driven.consul.registered and driven.writes() == []


def test_a_failed_listing_backs_off_then_reconciles_in_full() -> None:
    """A listing that fails: Docker is down, reconcile_failed says when the retry comes, and at that time a full
    reconcile starts again; its listing brings Docker up."""
    driven = Driven(payload("web"), timing=Timing(retry_first=0.5))
    driven.step()
    driven.take(ListContainers)
    effects = driven.step(Listed([], DockerError("connection refused")))
    assert Log("warning", "reconcile_failed", {"error": "connection refused", "retry_in": 0.5}) in effects
    assert not driven.core.docker_up and driven.core.deadline() == 0.5
    assert StartFullReconcile() in driven.step(at=0.5)
    driven.answer_all()
    assert driven.core.docker_up and driven.core.ready


def test_a_failed_inspect_is_that_containers_alone_and_retried_with_backoff() -> None:
    """An inspect the engine answers with an error: Docker stays up, that container is inspected again after
    the first delay, and its registration stays meanwhile."""
    web = payload("web")
    driven = started(web, settings=S)
    driven.event("health_status", web["Id"])
    driven.take(Inspect)
    timing = driven.core.timing
    effects = driven.step(Inspected(web["Id"], None, DockerError("500 Server Error")))
    assert [e.event for e in effects if isinstance(e, Log)] == ["inspect_failed"]
    assert driven.core.docker_up and driven.core.deadline() == timing.inspect_retry_first
    assert driven.step(at=timing.inspect_retry_first) == [Inspect(web["Id"])]
    writes = len(driven.effects)
    driven.answer_all()
    assert driven.writes(writes) == [], "the inspect found it unchanged"
    assert "vm:rec-web:80" in driven.consul.registered


def test_a_failed_write_pauses_writes_until_the_next_full_reconcile_has_read_the_agent() -> None:
    """A registration that fails: consul_write_failed, the step raises it (reconcile_failed), writes pause, and
    the full reconcile after the backoff registers it."""
    web = payload("web")
    driven = Driven(web)
    driven.step()
    driven.answer(ListContainers)
    driven.answer(ReadAgent)
    driven.answer(Inspect)
    register = driven.take(Send)
    effects = driven.step(Written(register.write, ConsulError("500")))
    assert [e.event for e in effects if isinstance(e, Log)] == ["consul_write_failed", "reconcile_failed"]
    assert driven.core.writes_paused
    driven.step(at=driven.core.deadline())
    driven.answer_all()
    assert not driven.core.writes_paused and "vm:rec-web:80" in driven.consul.registered


def test_an_unexpected_error_in_a_message_is_a_loop_error_and_a_full_reconcile() -> None:
    """A bug while taking a message: loop_error with its traceback, the message's work abandoned, a full
    reconcile after the backoff; a one-shot run ends with the error instead."""
    driven = started(payload("web"))
    bug = AgentRead({"x": "not a mapping of services"}, 1)
    driven.core.actual.reading = True
    effects = driven.step(bug)
    assert [e.event for e in effects if isinstance(e, Log)] == ["loop_error"]
    assert driven.core.loop_errors == 1 and not driven.core.actual.reading
    one_shot = Reconciler(Settings(hostname="vm"), Timing(), 0.0)
    one_shot.one_shot = True
    one_shot.actual.reading = True
    one_shot.step([bug], 0.0)
    assert isinstance(one_shot.failure, Exception) and not one_shot.loop_errors


def test_a_listing_that_saw_a_container_before_its_start_does_not_deregister_it() -> None:
    """A listing that saw a container "created", answered after the container started and was registered:
    nothing is written (seen in CI: docker run while registrar started)."""
    web = named("web", "new")
    created = stopped(web, 0)
    created["State"]["Status"] = "created"
    driven = started()
    driven.docker.containers[web["Id"]] = created
    driven.step(RESYNC)
    old_listing = driven.result(driven.take(ListContainers))
    driven.docker.containers[web["Id"]] = web
    driven.event("start", web["Id"])
    driven.answer_all()
    writes = len(driven.effects)
    assert driven.writes() == [Register(driven.core.desired.services["vm:new:80"])]
    driven.handle(old_listing)
    driven.answer_all()
    driven.step(at=1.0)
    driven.answer_all()
    assert driven.writes(writes) == [] and "vm:new:80" in driven.consul.registered


def test_a_sigkill_stop_signal_drains_nothing() -> None:
    """A container whose stop signal is SIGKILL dies at once: docker stop's kill puts nothing in maintenance,
    and the die's deregistration is the only write."""
    web = stopping(payload("web"), stop_signal="SIGKILL")
    driven = started(web)
    writes = len(driven.effects)
    assert driven.event("kill", web["Id"], signal="9") == []
    driven.docker.containers[web["Id"]] = stopped(web, 137)
    driven.event("die", web["Id"], exit_code=137)
    driven.answer_all()
    assert driven.writes(writes) == [Deregister("vm:rec-web:80")]
    assert not [e for e in driven.effects if isinstance(e, Log) and "draining" in e.event]


def test_ttl_passes_come_every_refresh_and_resyncs_every_period() -> None:
    """--ttl 30: a pass of each service's TTL check every 15 s (half the TTL); --resync 60: a full reconcile
    every 60 s. Nothing of either comes before its time."""
    driven = started(payload("web"), settings=Settings(hostname="vm", ttl=30, resync=60))
    check = "service:vm:rec-web:80:ttl"
    passes = []
    for at in (14.9, 15.0):
        before = len(driven.effects)
        driven.step(at=at)
        driven.answer_all()
        passes.append(driven.writes(before).count(TtlPass(check)))
    assert passes == [0, 1]
    assert StartFullReconcile() not in driven.step(at=59.9)
    assert StartFullReconcile() in driven.step(at=60.0)


def test_consul_down_and_back_is_logged_once_each_way() -> None:
    """Reads of the agent that fail: consul_unreachable once, however many fail; the first that succeeds:
    consul_reachable."""
    driven = started(payload("web"))
    logged: list[str] = []
    for error in (ConsulError("connection refused"), ConsulError("connection refused"), None):
        driven.step(at=driven.core.schedule.read)
        read = driven.take(ReadAgent)
        answer = AgentRead(None, 0, error) if error else driven.result(read)
        logged += [e.event for e in driven.step(answer) if isinstance(e, Log)]
        driven.answer_all()
    assert logged == ["consul_unreachable", "reconcile_failed", "reconcile_failed", "consul_reachable"]
    assert driven.core.consul_up


def healthy(container: dict[str, Any]) -> dict[str, Any]:
    """The container with a Docker HEALTHCHECK that says healthy."""
    state = {**container["State"], "Health": {"Status": "healthy", "FailingStreak": 0, "Log": []}}
    return {**container, "State": state}


def test_with_catalog_health_is_sent_again_after_a_parsed_read_not_every_10_s() -> None:
    """--catalog has no TTL to keep: no refresh of Docker health on the 10 s clock (each one a request for
    nothing); after a read of the node that is parsed (the one after writes, a resync), every status is sent
    again, so one that someone else overwrote is put back."""
    settings = Settings(hostname="vm", catalog=True, ip="10.0.0.9")
    driven = started(healthy(payload("web")), settings=settings)
    health = [w for w in driven.writes() if isinstance(w, HealthUpdate)]
    assert [h.health.status for h in health] == ["passing"]
    sent = []
    for at in (10.0, 20.0, 29.0, 299.0):  # the read at 10 s is the first since the registration: parsed
        before = len(driven.effects)
        for _ in range(2):  # the loop's turn, and the one at the deadline it leaves
            driven.step(at=at)
            driven.answer_all()
        sent.append([w for w in driven.writes(before) if isinstance(w, HealthUpdate)])
    assert sent[0] and set(sent[0]) == set(health)  # after the start's read and after the registration's
    assert sent[1:] == [[], [], []]
    before = len(driven.effects)
    driven.step(RESYNC, at=300.0)
    driven.answer_all()
    driven.step(at=300.0)
    driven.answer_all()
    assert [w for w in driven.writes(before) if isinstance(w, HealthUpdate)] == health


def test_with_an_agent_health_is_sent_again_every_10_s() -> None:
    """Against an agent, Docker health is sent again every 10 s (its TTL check of 45 s must not run out)."""
    driven = started(healthy(payload("web")))
    before = len(driven.effects)
    for at in (9.9, 10.0):
        driven.step(at=at)
        driven.answer_all()
    assert [w.health.status for w in driven.writes(before) if isinstance(w, HealthUpdate)] == ["passing"]


def test_a_recreated_container_does_not_inherit_the_last_result_of_its_predecessors_probe() -> None:
    """docker compose's recreate keeps the name (so the service and check IDs): the new container's check is
    registered at its initial status and stays there until its own probe reports; a late result of the old
    container's probe is dropped."""
    old = container("web", labels={"SERVICE_CHECK_EXEC": "check --quick"})
    driven = started(old)
    (service,) = driven.core.desired.services.values()
    (probe,) = service.probes
    passing = Health(probe.check_id, "passing", "ready")
    driven.handle(Probed(service.id, old["Id"], probe, passing))
    driven.answer_all()
    assert HealthUpdate(passing) in driven.writes()

    before = len(driven.effects)
    new = {**copy.deepcopy(old), "Id": "f" * 64}
    del driven.docker.containers[old["Id"]]
    driven.event("destroy", old["Id"])
    driven.docker.containers[new["Id"]] = new
    driven.event("start", new["Id"])
    driven.answer_all()
    driven.handle(Probed(service.id, old["Id"], probe, passing))  # the old one's run, back late
    driven.answer_all()
    assert [w.service.container_id for w in driven.writes() if isinstance(w, Register)][-1] == new["Id"]
    assert [w for w in driven.writes(before) if isinstance(w, HealthUpdate)] == []
    starting = Health(probe.check_id, "critical", "not yet")
    driven.handle(Probed(service.id, new["Id"], probe, starting))
    driven.answer_all()
    assert [w for w in driven.writes(before) if isinstance(w, HealthUpdate)] == [HealthUpdate(starting)]


def test_with_catalog_and_exec_checks_off_the_http_checks_still_run() -> None:
    """--catalog --exec-checks off: the HTTP check registrar runs from the host is still handed to the prober
    (only exec probes are off)."""
    web = container("web", labels={"SERVICE_CHECK_HTTP": "/health"})
    settings = Settings(hostname="vm", catalog=True, ip="10.0.0.9", exec_checks=False)
    driven = started(web, settings=settings)
    updates = [e for e in driven.effects if isinstance(e, UpdateProbes)]
    assert [p.check_id for u in updates for s in u.services.values() for p in s.probes] == ["service:vm:rec-web:80"]


def test_plan_with_catalog_writes_no_status() -> None:
    """plan --catalog writes nothing, not even the statuses sent again after its read of the node, when Docker
    has answered before Consul (the services registered already, as plan finds them)."""
    driven = started(healthy(payload("web")), settings=Settings(hostname="vm", catalog=True, ip="10.0.0.9"))
    driven.core.one_shot = driven.core.dry_run = True
    before = len(driven.effects)
    driven.step(RESYNC, at=1.0)
    read = driven.take(ReadAgent)
    driven.answer_all()  # the listing and the inspect
    driven.handle(driven.result(read))
    driven.step(at=1.0)
    driven.answer_all()
    assert driven.writes(before) == []
