"""Work in flight meeting newer events, listings and reads: who wins, and what nothing waits for."""

from __future__ import annotations

import threading
from typing import Any

from structlog.testing import capture_logs

from registrar.daemon import Daemon
from registrar.messages import RESYNC
from tests.unit.fakes import MemoryConsul, SlowDocker
from tests.unit.loop import draining_web, named, step_until, stopped, stopping


def test_a_slow_inspect_holds_up_no_other_container(started: Any) -> None:
    """While one container's inspect hangs, a container started after it is registered."""
    slow, fast = named("web", "slow"), named("web", "fast")
    docker, consul = SlowDocker(), MemoryConsul()
    daemon = started(docker, consul)
    step_until(daemon, daemon.ready.is_set)
    gate = docker.hold(slow["Id"])
    docker.start(slow)
    docker.start(fast)
    step_until(daemon, lambda: "vm:fast:80" in consul.registered, settled=False)
    assert "vm:slow:80" not in consul.registered and docker.timed_out == []
    gate.set()
    step_until(daemon, lambda: "vm:slow:80" in consul.registered)


def test_cold_start_registers_each_container_as_its_inspect_returns(started: Any) -> None:
    """At start, a container whose inspect hangs does not hold up the others' registration."""
    slow, fast = named("web", "slow"), named("web", "fast")
    docker, consul = SlowDocker(slow, fast), MemoryConsul()
    gate = docker.hold(slow["Id"])
    daemon = started(docker, consul)
    step_until(daemon, lambda: "vm:fast:80" in consul.registered, settled=False)
    assert not daemon.ready.is_set() and docker.timed_out == []
    gate.set()
    step_until(daemon, daemon.ready.is_set)
    assert set(consul.registered) == {"vm:fast:80", "vm:slow:80"}


def start_inspect_held(started: Any, c: dict[str, Any]) -> tuple[SlowDocker, MemoryConsul, Daemon, threading.Event]:
    """A started daemon, then ``c`` started with its inspect held in flight (set the gate to let it go)."""
    docker, consul = SlowDocker(), MemoryConsul()
    daemon = started(docker, consul)
    step_until(daemon, daemon.ready.is_set)
    gate = docker.hold(c["Id"])
    docker.start(c)
    step_until(daemon, lambda: c["Id"] in daemon.cache.inspecting, settled=False)
    return docker, consul, daemon, gate


def test_a_die_during_an_inspect_wins_over_it(started: Any) -> None:
    """A die that arrives while the container's start inspect is in flight leaves nothing registered."""
    web = named("web", "late")
    docker, consul, daemon, gate = start_inspect_held(started, web)
    docker.containers[web["Id"]] = stopped(web, 0)
    docker.emit("die", web["Id"], exit_code=0)
    for _ in range(3):
        daemon.step()
    gate.set()
    step_until(daemon, lambda: docker.inspects == 1 and not daemon.cache.inspecting)
    for _ in range(3):
        daemon.step()
    assert consul.registered == {}


def test_a_stop_signal_during_the_start_inspect_still_drains(started: Any) -> None:
    """docker stop right after docker run (its kill arrives while the start's inspect is in flight): the
    service is registered in maintenance, not passing while the container shuts down."""
    web = stopping(named("web", "quick"))
    docker, consul, daemon, gate = start_inspect_held(started, web)
    with capture_logs() as logs:
        docker.emit("kill", web["Id"], signal="15")
        for _ in range(3):
            daemon.step()
        gate.set()
        step_until(daemon, lambda: consul.in_maintenance == {"vm:quick:80"})
    assert "vm:quick:80" in consul.registered
    assert [e["container"] for e in logs if e["event"] == "container_draining"] == ["quick"]


def test_a_fresh_inspect_during_a_drain_keeps_it(started: Any) -> None:
    """An event that makes registrar inspect a draining container again (health_status) keeps its services
    in maintenance: only its death, or the end of its stop timeout, ends the drain."""
    web, docker, consul, daemon = draining_web(started)
    inspects = docker.inspects
    docker.emit("health_status", web["Id"])
    step_until(daemon, lambda: docker.inspects > inspects)
    for _ in range(5):
        daemon.step()
    assert consul.in_maintenance == {"vm:rec-web:80"} and web["Id"] in daemon.cache.draining


class SlowListing(SlowDocker):
    """With ``listing_gate`` set, a listing takes its snapshot at once and answers once the gate opens."""

    def __init__(self, *containers: dict[str, Any]) -> None:
        super().__init__(*containers)
        self.listing_gate: threading.Event | None = None
        self.snapshot_taken = threading.Event()

    def list_containers(self) -> list[dict[str, Any]]:
        snapshot = super().list_containers()
        gate = self.listing_gate  # once: the test may clear it meanwhile
        if gate is not None:
            self.snapshot_taken.set()
            gate.wait(5)
        return snapshot


class SlowRead(MemoryConsul):
    """With ``read_gate`` set, a read of the services takes its snapshot at once and answers once the gate opens."""

    def __init__(self) -> None:
        super().__init__()
        self.read_gate: threading.Event | None = None

    def services(self) -> dict[str, Any]:
        snapshot = super().services()
        gate = self.read_gate  # once: the test may clear it meanwhile
        if gate is not None:
            gate.wait(5)
        return snapshot


def start_during_a_listing(
    daemon: Daemon, docker: SlowListing, consul: MemoryConsul, web: dict[str, Any]
) -> threading.Event:
    """Ask for a full reconcile, start ``web`` once its listing has taken its snapshot, and turn the loop
    until ``web`` is registered (as vm:new:80): the listing's gate, still shut."""
    docker.listing_gate = gate = threading.Event()
    daemon.inbox.put(RESYNC)
    step_until(daemon, docker.snapshot_taken.is_set, settled=False)
    docker.start(web)
    step_until(daemon, lambda: "vm:new:80" in consul.registered, settled=False)
    return gate


def test_a_listing_older_than_a_start_does_not_forget_that_container(started: Any) -> None:
    """A container started while a listing is in flight stays registered when the (older) listing is back."""
    web = named("web", "new")
    docker, consul = SlowListing(), MemoryConsul()
    daemon = started(docker, consul)
    step_until(daemon, daemon.ready.is_set)
    gate = start_during_a_listing(daemon, docker, consul, web)
    gate.set()
    step_until(daemon, lambda: not daemon.cache.listing)
    daemon.inbox.put(RESYNC)
    step_until(daemon, lambda: not daemon.cache.listing)
    assert "vm:new:80" in consul.registered and consul.attempts == {"vm:new:80": 1}


def test_a_listing_that_saw_a_container_before_its_start_does_not_deregister_it(started: Any) -> None:
    """A container listed as "created" by a listing in flight, then started and registered, stays registered
    when that (older) listing is back (seen in CI: docker run while registrar started)."""
    web = named("web", "new")
    created = stopped(web, 0)
    created["State"]["Status"] = "created"
    docker, consul = SlowListing(), MemoryConsul()
    daemon = started(docker, consul)
    step_until(daemon, daemon.ready.is_set)
    docker.containers[web["Id"]] = created
    gate = start_during_a_listing(daemon, docker, consul, web)
    writes = consul.writes
    docker.listing_gate = None
    gate.set()
    step_until(daemon, lambda: not daemon.cache.listing)
    for _ in range(3):
        daemon.step()
    assert "vm:new:80" in consul.registered and consul.writes == writes


def test_a_read_older_than_a_registration_does_not_repeat_it(started: Any) -> None:
    """A registration that comes back while an (older) read of the agent is in flight is not written again."""
    web = named("web", "new")
    docker, consul = SlowDocker(), SlowRead()
    daemon = started(docker, consul)
    step_until(daemon, daemon.ready.is_set)
    consul.read_gate = gate = threading.Event()
    step_until(daemon, lambda: daemon.agent.reading, settled=False)  # the next probe
    docker.start(web)
    step_until(daemon, lambda: "vm:new:80" in consul.registered, settled=False)
    reads = consul.reads
    gate.set()
    consul.read_gate = None
    step_until(daemon, lambda: consul.reads >= reads + 2)  # the older read is back, and a newer one after it
    for _ in range(5):
        daemon.step()
    assert consul.attempts == {"vm:new:80": 1}


def test_a_read_of_the_agent_before_the_first_listing_deregisters_nothing(started: Any) -> None:
    """At start, the agent's services are not planned against an empty view: nothing goes while the listing is out."""
    web = named("web", "kept")
    docker, consul = SlowListing(web), MemoryConsul()
    step_until(started(docker, consul), lambda: "vm:kept:80" in consul.registered)
    docker.listing_gate = gate = threading.Event()
    second = started(docker, consul)
    step_until(second, lambda: second.agent.actual is not None, settled=False)
    for _ in range(3):
        second.step()
    assert "vm:kept:80" in consul.registered
    gate.set()
    step_until(second, second.ready.is_set)
    assert "vm:kept:80" in consul.registered and consul.writes == 1
