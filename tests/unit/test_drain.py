"""Drain on stop, in the loop driven in memory: maintenance at the stop signal, deregistration at the die."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Any

import pytest
from structlog.testing import capture_logs

from registrar.messages import RESYNC, WAKE
from registrar.model import DockerEvent
from registrar.settings import Settings
from tests.unit.fakes import MemoryConsul, MemoryDocker
from tests.unit.loop import FAST, S, draining_web, registered_web, step_until, stopped, stopping
from tests.unit.payloads import payload


def test_stop_signal_drains_at_once_then_die_deregisters(started: Any) -> None:
    """docker stop's kill (the stop signal) puts the services in maintenance; die then deregisters them."""
    web, docker, consul, daemon = registered_web(started)
    inspects = docker.inspects
    with capture_logs() as logs:
        docker.emit("kill", web["Id"], signal="15")
        step_until(daemon, lambda: consul.in_maintenance == {"vm:rec-web:80"})
        assert "vm:rec-web:80" in consul.registered and docker.inspects == inspects, "a kill costs no inspect"
        docker.containers[web["Id"]] = stopped(web, 0)
        docker.emit("die", web["Id"], exit_code=0)
        step_until(daemon, lambda: consul.registered == {})
    names = [e["event"] for e in logs]
    assert names.index("container_draining") < names.index("service_draining") < names.index("service_deregistered")
    assert daemon.actual.maintenance == set()


@pytest.mark.parametrize(
    ("settings", "signal"), [(S, "1"), (S, "9"), (Settings(hostname="vm", drain_on_stop=False), "15")]
)
def test_other_signals_or_drain_off_change_nothing(started: Any, settings: Settings, signal: str) -> None:
    """A kill with another signal (docker kill -s HUP, or KILL) or --no-drain-on-stop leaves the service passing."""
    web, docker, consul, daemon = registered_web(started, settings=settings)
    other = payload("multi")
    docker.containers[other["Id"]] = other
    docker.emit("kill", web["Id"], signal=signal)
    docker.emit("start", other["Id"])  # a later event, so the kill has surely been handled
    step_until(daemon, lambda: "vm:rec-multi:80" in consul.registered)
    assert consul.in_maintenance == set()


def test_a_step_reads_the_drains_only_under_the_state_lock(started: Any) -> None:
    """The loop reads when drains end under the lock the event thread takes a die under: read outside it,
    a die taken in between emptied the drains under min() and the daemon exited with a ValueError."""
    daemon = draining_web(started)[3]
    unlocked: list[str] = []

    class Drains(dict):  # type: ignore[type-arg]
        def values(self) -> Any:
            if not daemon.lock.locked():
                unlocked.append("values")
            return super().values()

    daemon.desired.draining = Drains(daemon.desired.draining)
    for _ in range(3):
        daemon.step()
    assert unlocked == []


def test_a_container_that_survives_its_stop_signal_returns(started: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Still running once its stop timeout (and a grace) has passed: the services leave maintenance."""
    monkeypatch.setattr("registrar.desired.DRAIN_GRACE_SECONDS", 0.01)
    web, docker, consul, daemon = registered_web(started, "SIGUSR1", timeout=0)
    with capture_logs() as logs:
        docker.emit("kill", web["Id"], signal="10")
        step_until(daemon, lambda: any(e["event"] == "service_draining" for e in logs))
        step_until(daemon, lambda: any(e["event"] == "service_drain_ended" for e in logs))
    assert consul.in_maintenance == set() and "vm:rec-web:80" in consul.registered


def test_a_drain_taken_on_the_event_thread_wakes_the_sleeping_loop_for_its_end(
    started: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop signal taken on the event thread while the loop sleeps until its next deadline (an hour here):
    the survivor leaves maintenance when its drain ends, not when the loop happens to wake."""
    monkeypatch.setattr("registrar.desired.DRAIN_GRACE_SECONDS", 0.01)
    web, docker, consul, daemon = registered_web(started, "SIGUSR1", timeout=0)
    daemon.timing = replace(FAST, consul_probe=3600)
    daemon.core.schedule.read = time.monotonic() + 3600
    done = threading.Event()

    def turn() -> None:
        while not done.is_set():
            daemon.step()

    turning = threading.Thread(target=turn)
    turning.start()
    try:
        docker.emit("kill", web["Id"], signal="10")
        consul.wait_for(lambda _: consul.in_maintenance == {"vm:rec-web:80"})
        consul.wait_for(lambda _: consul.in_maintenance == set())
    finally:
        done.set()
        daemon.inbox.put(WAKE)
        turning.join(5)


def test_stop_signal_during_a_full_reconcile_still_drains(started: Any) -> None:
    """A kill that arrives with a full reconcile due is not lost in the listing: the service drains."""
    web, _, consul, daemon = registered_web(started)
    writes = daemon.calls["consul_write"]
    daemon.inbox.put(RESYNC)
    daemon.inbox.put(DockerEvent("kill", web["Id"], "rec-web", signal="15"))
    daemon.step()
    assert daemon.calls["consul_write"] == writes + 1, "the step that lists starts the drain"
    assert daemon.actual.maintenance | {i for _, i in daemon.actual.in_flight} == {"vm:rec-web:80"}
    step_until(daemon, lambda: consul.in_maintenance == {"vm:rec-web:80"})


def test_on_success_keeps_a_drained_failed_container_out_of_the_passing_set(started: Any) -> None:
    """--deregister on-success, drained by docker stop, then exit 1 (it crashed on its way out, not by the
    signal): the kept registration stays in maintenance."""
    web = stopping(payload("web"))
    docker, consul = MemoryDocker(web), MemoryConsul()
    daemon = started(docker, consul, Settings(hostname="vm", deregister="on-success"))
    step_until(daemon, lambda: "vm:rec-web:80" in consul.registered)
    docker.emit("kill", web["Id"], signal="15")
    step_until(daemon, lambda: consul.in_maintenance == {"vm:rec-web:80"})
    docker.containers[web["Id"]] = stopped(web, 1)
    with capture_logs() as logs:
        docker.emit("die", web["Id"], exit_code=1)
        step_until(daemon, lambda: any(e["event"] == "services_kept" for e in logs))
        daemon.inbox.put(RESYNC)
        daemon.step()
    assert "vm:rec-web:80" in consul.registered and consul.in_maintenance == {"vm:rec-web:80"}
