"""The daemon follows Docker: sync, events, ownership (hosts and instances), a refused registration."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from structlog.testing import capture_logs

from registrar.desired import summary_fingerprint
from registrar.messages import RESYNC
from registrar.model import DockerEvent
from registrar.observe import inspect_fingerprint
from registrar.settings import Settings
from tests.unit.fakes import MemoryConsul, MemoryDocker
from tests.unit.loop import S, step_until, stopped
from tests.unit.payloads import container, payload


def test_sync_registers_then_writes_nothing_when_in_sync(one_shot: Any) -> None:
    """A second reconcile of unchanged containers writes nothing to Consul."""
    docker, consul = MemoryDocker(payload("web"), payload("multi")), MemoryConsul()
    daemon = one_shot(docker, consul)
    assert daemon.sync().registered == 4
    assert (daemon.calls["docker_inspect"], daemon.calls["consul_write"]) == (2, 4)
    writes = consul.writes
    assert one_shot(docker, consul).sync().registered == 0
    assert consul.writes == writes
    inspects = docker.inspects
    assert daemon.sync().registered == 0
    assert docker.inspects == inspects, "an unchanged container is not inspected again"


def test_stale_registrations_of_this_host_removed_only(one_shot: Any) -> None:
    """At start, this host's registrations with no container go; other hosts' and hand-made ones stay."""
    consul = MemoryConsul()
    consul.registered = {k: {"Meta": v.get("Meta") or {}} for k, v in payload("agent_services").items()}
    assert one_shot(MemoryDocker(), consul).sync().deregistered == 1
    assert sorted(consul.registered) == ["handmade", "other:web:80"]


def test_forget_host_removes_only_that_hosts_registrations(one_shot: Any) -> None:
    """--forget-host other: the plan deregisters every registration of host "other", and nothing else."""
    consul = MemoryConsul()
    consul.registered = {k: {"Meta": v.get("Meta") or {}} for k, v in payload("agent_services").items()}
    settings = Settings(hostname="new", forget_hosts=("other",))
    actions = one_shot(MemoryDocker(), consul, settings).plan()
    assert [(a.service_id, getattr(a, "reason", "")) for a in actions] == [
        ("other:web:80", "its host is forgotten (--forget-host)")
    ]
    assert consul.writes == 0, "plan writes nothing"
    assert one_shot(MemoryDocker(), consul, settings).sync().deregistered == 1
    assert sorted(consul.registered) == ["handmade", "vm:smoke-web:80"]


def test_daemon_follows_events(started: Any) -> None:
    """A start event registers the container's services, a die event removes them, both logged."""
    web = payload("web")
    docker, consul = MemoryDocker(), MemoryConsul()
    daemon = started(docker, consul)
    step_until(daemon, daemon.ready.is_set)
    with capture_logs() as logs:
        docker.containers[web["Id"]] = web
        docker.emit("start", web["Id"])
        step_until(daemon, lambda: "vm:rec-web:80" in consul.registered)
        docker.containers[web["Id"]] = stopped(web, 0)
        docker.emit("die", web["Id"], exit_code=0)
        step_until(daemon, lambda: consul.registered == {})
    events = [(e["event"], e.get("service_id")) for e in logs if e["event"].startswith("service_")]
    assert events == [("service_registered", "vm:rec-web:80"), ("service_deregistered", "vm:rec-web:80")]


def test_on_success_keeps_failed_containers_until_removed(started: Any) -> None:
    """--deregister on-success keeps a container that exited non-zero (services_kept), until it is removed."""
    web = payload("web")
    docker, consul = MemoryDocker(web), MemoryConsul()
    daemon = started(docker, consul, Settings(hostname="vm", deregister="on-success"))
    step_until(daemon, lambda: "vm:rec-web:80" in consul.registered)
    with capture_logs() as logs:
        docker.containers[web["Id"]] = stopped(web, 2)
        docker.emit("die", web["Id"], exit_code=2)
        step_until(daemon, lambda: any(e["event"] == "services_kept" for e in logs))
        daemon.inbox.put(RESYNC)  # a full reconcile after the exit, too, keeps it
        step_until(daemon, lambda: sum(e["event"] == "reconcile_done" for e in logs) >= 1)
    assert "vm:rec-web:80" in consul.registered
    del docker.containers[web["Id"]]
    docker.emit("destroy", web["Id"])
    step_until(daemon, lambda: consul.registered == {})


def test_on_success_decision(one_shot: Any) -> None:
    """Under on-success, a crash (exit 1, 2, 127) keeps the registration; exit 0 and a death by a signal
    (128+N: docker stop or kill, 137 and 143) remove it, as registrator's shouldRemove decides."""
    web = payload("web")
    for code, expected in ((1, ["vm:rec-web:80"]), (2, ["vm:rec-web:80"]), (127, ["vm:rec-web:80"]), (0, []),
                           (137, []), (143, [])):  # fmt: skip
        docker, consul = MemoryDocker(web), MemoryConsul()
        one_shot(docker, consul, Settings(hostname="vm", deregister="on-success")).sync()
        docker.containers[web["Id"]] = stopped(web, code)
        one_shot(docker, consul, Settings(hostname="vm", deregister="on-success")).sync()
        assert sorted(consul.registered) == expected


def test_fingerprints_agree() -> None:
    """The fingerprint read from a container list entry equals the one read from its inspect."""
    web = payload("web")
    summary = {
        "Id": web["Id"],
        "Names": [web["Name"]],
        "State": "running",
        "Status": "Up 2 seconds",
        "Ports": [{"IP": "127.0.0.1", "PrivatePort": 80, "PublicPort": 32768, "Type": "tcp"}],
        "NetworkSettings": {
            "Networks": {"bridge": {"IPAddress": web["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]}}
        },
    }
    assert summary_fingerprint(summary) == inspect_fingerprint(web)


def test_refused_registration_blocks_nothing_and_is_not_retried(one_shot: Any) -> None:
    """A registration Consul refuses is reported once; others go through; it is not re-sent unchanged."""
    docker, consul = MemoryDocker(payload("web"), payload("multi")), MemoryConsul()
    consul.refuse = {"vm:rec-web:80"}
    daemon = one_shot(docker, consul)
    with capture_logs() as logs:
        outcome = daemon.sync()
    assert (outcome.registered, outcome.rejected, outcome.failed) == (3, 1, 0)
    assert [(e["event"], e["service_id"]) for e in logs if e["log_level"] == "error"] == [
        ("service_rejected", "vm:rec-web:80")
    ]
    assert sorted(consul.registered) == ["vm:rec-multi:443", "vm:rec-multi:53:udp", "vm:rec-multi:80"]
    assert daemon.sync() == type(outcome)()
    assert consul.attempts["vm:rec-web:80"] == 1


class OrderedDocker(MemoryDocker):
    """Records when the daemon subscribes to events and when it lists containers."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def events(self) -> Iterator[DockerEvent]:
        self.calls.append("subscribe")
        return super().events()

    def list_containers(self) -> list[dict[str, Any]]:
        self.calls.append("list")
        return super().list_containers()


def test_subscribes_before_listing(started: Any) -> None:
    """The daemon subscribes to events before its first listing, so a container started in between is seen."""
    docker, consul = OrderedDocker(), MemoryConsul()
    daemon = started(docker, consul)
    step_until(daemon, daemon.ready.is_set)
    assert docker.calls[:2] == ["subscribe", "list"]


def test_instances_never_touch_each_others_registrations(one_shot: Any) -> None:
    """Two registrars of one host with other --instance names: each registers its own and removes only its own."""
    web, multi = payload("web"), payload("multi")
    consul = MemoryConsul()
    a = Settings(hostname="vm", instance="a", filters=(("name", "^/rec-web$"),))
    b = Settings(hostname="vm", instance="b")
    assert one_shot(MemoryDocker(web), consul, a).sync().registered == 1
    assert one_shot(MemoryDocker(multi), consul, b).sync().registered == 3
    assert one_shot(MemoryDocker(), consul, a).sync().deregistered == 1  # a's container is gone: only a's goes
    assert len(consul.registered) == 3 and all(s.startswith("vm:b:") for s in consul.registered)
    assert one_shot(MemoryDocker(), consul, S).sync().deregistered == 0, "no --instance: none of them is its own"


def test_forget_instance_removes_a_renamed_instances_registrations(one_shot: Any) -> None:
    """--instance new --forget-instance old: old's registrations go, with the reason; new registers its own."""
    consul = MemoryConsul()
    one_shot(MemoryDocker(payload("web")), consul, Settings(hostname="vm", instance="old")).sync()
    settings = Settings(hostname="vm", instance="new", forget_instances=("old",))
    actions = one_shot(MemoryDocker(payload("web")), consul, settings).plan()
    assert [(type(a).__name__, a.service_id, getattr(a, "reason", "")) for a in actions] == [
        ("Register", "vm:new:rec-web:80", ""),
        ("Deregister", "vm:old:rec-web:80", "its instance is forgotten (--forget-instance)"),
    ]


def test_forget_instance_empty_removes_the_registrations_made_without_an_instance(one_shot: Any) -> None:
    """A host adopting --instance: --forget-instance '' removes what its registrar made without one."""
    consul = MemoryConsul()
    one_shot(MemoryDocker(payload("web")), consul, Settings(hostname="vm")).sync()
    settings = Settings(hostname="vm", instance="team1", forget_instances=("",))
    assert one_shot(MemoryDocker(payload("web")), consul, settings).sync().deregistered == 1
    assert list(consul.registered) == ["vm:team1:rec-web:80"]


def test_a_label_problem_is_logged_once_while_it_holds(started: Any) -> None:
    """A container inspected again with the same bad label (a health_status event, an event heard twice)
    gets one warning, not one per inspect; once it dies and starts again, the warning comes again."""
    web = container("web", labels={"SERVICE_CHECK_HTTP": "/", "SERVICE_CHECK_INTERVAL": "banana"})
    docker, consul = MemoryDocker(web), MemoryConsul()
    with capture_logs() as logs:
        daemon = started(docker, consul)
        step_until(daemon, lambda: "vm:rec-web:80" in consul.registered)
        inspects = docker.inspects
        docker.emit("health_status", web["Id"])
        docker.emit("start", web["Id"])  # heard again: the subscription replays the second before it
        step_until(daemon, lambda: docker.inspects >= inspects + 1)
        docker.emit("die", web["Id"], exit_code=0)
        step_until(daemon, lambda: "vm:rec-web:80" not in consul.registered)
        docker.emit("start", web["Id"])
        step_until(daemon, lambda: "vm:rec-web:80" in consul.registered)
    problems = [e["key"] for e in logs if e["event"] == "container_label_problem"]
    assert problems == ["label SERVICE_CHECK_INTERVAL"] * 2, problems
