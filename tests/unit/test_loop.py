"""The reconcile loop driven in memory through the ContainerSource/ServiceSink protocols."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from registrar.daemon import Daemon
from registrar.model import DockerEvent
from registrar.reconciler import Reconciler, inspect_fingerprint, summary_fingerprint
from registrar.settings import Settings
from tests.unit.fakes import MemoryConsul, MemoryDocker
from tests.unit.payloads import payload

S = Settings(hostname="vm")


def stopped(c: dict[str, Any], code: int) -> dict[str, Any]:
    c = copy.deepcopy(c)
    c["State"].update({"Status": "exited", "Running": False, "ExitCode": code})
    c["NetworkSettings"]["Ports"] = {}
    return c


@pytest.fixture
def running_daemon() -> Iterator[Any]:
    started: list[tuple[Daemon, threading.Thread]] = []

    def start(docker: MemoryDocker, consul: MemoryConsul, settings: Settings = S, **timing: Any) -> Daemon:
        daemon = Daemon(docker, consul, settings, **timing)
        thread = threading.Thread(target=daemon.run, daemon=True)
        thread.start()
        started.append((daemon, thread))
        return daemon

    yield start
    for daemon, thread in started:
        daemon.stop()
        thread.join(5)
        assert not thread.is_alive(), "the loop did not return after stop()"


def test_sync_registers_then_writes_nothing_when_in_sync() -> None:
    """A second reconcile of unchanged containers writes nothing to Consul."""
    docker, consul = MemoryDocker(payload("web"), payload("multi")), MemoryConsul()
    reconciler = Reconciler(docker, consul, S)
    reconciler.refresh_all()
    assert reconciler.converge(read=True).registered == 4
    writes = consul.writes
    fresh = Reconciler(docker, consul, S)
    fresh.refresh_all()
    assert fresh.converge(read=True).registered == 0
    assert consul.writes == writes
    inspects = docker.inspects
    reconciler.refresh_all()
    assert docker.inspects == inspects, "an unchanged container is not inspected again"


def test_stale_registrations_of_this_host_removed_only() -> None:
    """At start, this host's registrations with no container go; other hosts' and hand-made ones stay."""
    consul = MemoryConsul()
    consul.registered = {k: {"Meta": v.get("Meta") or {}} for k, v in payload("agent_services").items()}
    reconciler = Reconciler(MemoryDocker(), consul, S)
    reconciler.refresh_all()
    assert reconciler.converge(read=True).deregistered == 1
    assert sorted(consul.registered) == ["handmade", "other:web:80"]


def test_daemon_follows_events(running_daemon: Any) -> None:
    """A start event registers the container's services, a die event removes them."""
    web = payload("web")
    docker, consul = MemoryDocker(), MemoryConsul()
    daemon = running_daemon(docker, consul)
    assert daemon.ready.wait(5)
    docker.containers[web["Id"]] = web
    docker.emit("start", web["Id"])
    consul.wait_for(lambda r: "vm:rec-web:80" in r)
    docker.containers[web["Id"]] = stopped(web, 0)
    docker.emit("die", web["Id"], exit_code=0)
    consul.wait_for(lambda r: r == {})


def test_on_success_keeps_failed_containers(running_daemon: Any) -> None:
    """--deregister on-success keeps the services of a container that exited non-zero, until it is removed."""
    web = payload("web")
    docker, consul = MemoryDocker(web), MemoryConsul()
    running_daemon(docker, consul, Settings(hostname="vm", deregister="on-success"))
    consul.wait_for(lambda r: "vm:rec-web:80" in r)
    docker.containers[web["Id"]] = stopped(web, 2)
    docker.emit("die", web["Id"], exit_code=2)
    docker.emit("stop", web["Id"])
    del docker.containers[web["Id"]]
    docker.emit("destroy", web["Id"])
    consul.wait_for(lambda r: r == {})


def test_on_success_decision() -> None:
    """Under on-success, exit 2 keeps the registration and exit 0 removes it."""
    web = payload("web")
    for code, expected in ((2, ["vm:rec-web:80"]), (0, [])):
        docker, consul = MemoryDocker(web), MemoryConsul()
        reconciler = Reconciler(docker, consul, Settings(hostname="vm", deregister="on-success"))
        reconciler.refresh_all()
        reconciler.converge(read=True)
        docker.containers[web["Id"]] = stopped(web, code)
        reconciler.refresh([DockerEvent("die", web["Id"], "rec-web", code)])
        reconciler.converge()
        assert sorted(consul.registered) == expected


def test_consul_down_then_back_converges(running_daemon: Any) -> None:
    """Changes made while Consul is down are applied when it returns."""
    web = payload("web")
    docker, consul = MemoryDocker(), MemoryConsul()
    daemon = running_daemon(docker, consul)
    assert daemon.ready.wait(5)
    consul.down = True
    docker.containers[web["Id"]] = web
    docker.emit("start", web["Id"])
    consul.down = False
    consul.wait_for(lambda r: "vm:rec-web:80" in r)


def test_agent_that_lost_its_services_is_refilled(running_daemon: Any) -> None:
    """If the agent forgets registrations (restart), they come back without a resync."""
    docker, consul = MemoryDocker(payload("web")), MemoryConsul()
    running_daemon(docker, consul)
    consul.wait_for(lambda r: "vm:rec-web:80" in r)
    with consul.changed:
        consul.registered.clear()
    consul.wait_for(lambda r: "vm:rec-web:80" in r, timeout=10)


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


def test_refused_registration_blocks_nothing_and_is_not_retried() -> None:
    """A registration Consul refuses is reported once; others go through; it is not re-sent unchanged."""
    docker, consul = MemoryDocker(payload("web"), payload("multi")), MemoryConsul()
    consul.refuse = {"vm:rec-web:80"}
    reconciler = Reconciler(docker, consul, S)
    reconciler.refresh_all()
    outcome = reconciler.converge(read=True)
    assert (outcome.registered, outcome.rejected, outcome.failed) == (3, 1, 0)
    assert sorted(consul.registered) == ["vm:rec-multi:443", "vm:rec-multi:53:udp", "vm:rec-multi:80"]
    assert reconciler.converge(read=True) == type(outcome)()
    assert consul.attempts["vm:rec-web:80"] == 1


def test_hung_stream_is_replaced_and_relisted(running_daemon: Any) -> None:
    """A silent stream whose engine fails a ping is closed, resubscribed, and everything re-listed."""
    docker, consul = MemoryDocker(), MemoryConsul()
    daemon = running_daemon(docker, consul, consul_probe=0.05, idle_ping=0.1)
    assert daemon.ready.wait(5)
    web = payload("web")
    docker.containers[web["Id"]] = web  # started, but the hung stream never says so
    docker.answers_ping = False
    consul.wait_for(lambda r: "vm:rec-web:80" in r)
    assert docker.subscriptions >= 2


def test_metrics_and_readiness(running_daemon: Any) -> None:
    """Metrics count events and Consul operations; readiness follows the first reconcile and Consul."""
    from prometheus_client import generate_latest

    web = payload("web")
    docker, consul = MemoryDocker(), MemoryConsul()
    daemon = running_daemon(docker, consul, consul_probe=0.05)
    assert daemon.ready.wait(5)
    docker.containers[web["Id"]] = web
    docker.emit("start", web["Id"])
    consul.wait_for(lambda r: "vm:rec-web:80" in r)
    eventually(lambda: "registrar_registered_services 1.0" in generate_latest(daemon.metrics.registry).decode())
    text = generate_latest(daemon.metrics.registry).decode()
    assert 'registrar_docker_events_total{action="start"} 1.0' in text
    assert 'registrar_consul_operations_total{operation="register",result="ok"} 1.0' in text
    assert "registrar_build_info{version=" in text
    labels = {
        name for metric in daemon.metrics.registry.collect() for sample in metric.samples for name in sample.labels
    }
    assert labels <= {"action", "operation", "result", "version", "le"}, "no per-container labels"
    assert daemon.live() and daemon.not_ready() == ""
    consul.down = True
    eventually(lambda: daemon.not_ready() == "Consul agent unreachable")
    assert "registrar_consul_up 0.0" in generate_latest(daemon.metrics.registry).decode()


def eventually(predicate: Any, timeout: float = 5.0) -> None:
    """Wait for a condition the loop reaches on its own thread, with a deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_consul_down_does_not_spin(running_daemon: Any) -> None:
    """While Consul is down the loop backs off: a handful of attempts a second, not a busy loop."""
    docker, consul = MemoryDocker(payload("web")), MemoryConsul()
    daemon = running_daemon(docker, consul, consul_probe=0.05)
    consul.wait_for(lambda r: "vm:rec-web:80" in r)
    consul.down = True
    eventually(lambda: daemon.not_ready() == "Consul agent unreachable")
    reads = consul.reads
    time.sleep(1.0)  # the measured interval itself: how many attempts happen in one second
    assert consul.reads - reads <= 25
    consul.down = False
    eventually(lambda: daemon.not_ready() == "")


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


def test_subscribes_before_listing(running_daemon: Any) -> None:
    """The daemon subscribes to events before its first listing, so a container started in between is seen."""
    docker, consul = OrderedDocker(), MemoryConsul()
    daemon = running_daemon(docker, consul)
    assert daemon.ready.wait(5)
    assert docker.calls[:2] == ["subscribe", "list"]
