"""Work in flight on the daemon's threads: what nothing waits for, and an older listing meeting a newer start.

Who wins when a result meets a newer event, listing or read is tested as explicit orderings of messages
against the reconciler alone (test_reconciler.py)."""

from __future__ import annotations

import threading
from typing import Any

from registrar.daemon import Daemon
from registrar.messages import RESYNC
from tests.unit.fakes import MemoryConsul, SlowDocker
from tests.unit.loop import named, step_until


def test_a_slow_inspect_holds_up_no_other_container(started: Any) -> None:
    """While one container's inspect hangs, a container started after it is registered."""
    slow, fast = named("web", "slow"), named("web", "fast")
    docker, consul = SlowDocker(), MemoryConsul()
    daemon = started(docker, consul)
    step_until(daemon, daemon.ready.is_set)
    gate = docker.hold(slow["Id"])
    docker.start(slow)
    docker.start(fast)
    step_until(daemon, lambda: "vm:fast:80" in consul.registered, idle=False)
    assert "vm:slow:80" not in consul.registered and docker.timed_out == []
    gate.set()
    step_until(daemon, lambda: "vm:slow:80" in consul.registered)


def test_cold_start_registers_each_container_as_its_inspect_returns(started: Any) -> None:
    """At start, a container whose inspect hangs does not hold up the others' registration."""
    slow, fast = named("web", "slow"), named("web", "fast")
    docker, consul = SlowDocker(slow, fast), MemoryConsul()
    gate = docker.hold(slow["Id"])
    daemon = started(docker, consul)
    step_until(daemon, lambda: "vm:fast:80" in consul.registered, idle=False)
    assert not daemon.ready.is_set() and docker.timed_out == []
    gate.set()
    step_until(daemon, daemon.ready.is_set)
    assert set(consul.registered) == {"vm:fast:80", "vm:slow:80"}


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


def start_during_a_listing(
    daemon: Daemon, docker: SlowListing, consul: MemoryConsul, web: dict[str, Any]
) -> threading.Event:
    """Ask for a full reconcile, start ``web`` once its listing has taken its snapshot, and turn the loop
    until ``web`` is registered (as vm:new:80): the listing's gate, still shut."""
    docker.listing_gate = gate = threading.Event()
    daemon.inbox.put(RESYNC)
    step_until(daemon, docker.snapshot_taken.is_set, idle=False)
    docker.start(web)
    step_until(daemon, lambda: "vm:new:80" in consul.registered, idle=False)
    return gate


def test_a_listing_older_than_a_start_does_not_forget_that_container(started: Any) -> None:
    """A container started while a listing is in flight stays registered when the (older) listing is back."""
    web = named("web", "new")
    docker, consul = SlowListing(), MemoryConsul()
    daemon = started(docker, consul)
    step_until(daemon, daemon.ready.is_set)
    gate = start_during_a_listing(daemon, docker, consul, web)
    gate.set()
    step_until(daemon, lambda: not daemon.desired.listing)
    daemon.inbox.put(RESYNC)
    step_until(daemon, lambda: not daemon.desired.listing)
    assert "vm:new:80" in consul.registered and consul.attempts == {"vm:new:80": 1}
