"""What the loop tests share: settings, fast clocks, and turning a daemon's loop step by step."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

from registrar.daemon import Daemon, Timing
from registrar.settings import Settings
from tests.unit.fakes import MemoryConsul, MemoryDocker
from tests.unit.payloads import container, payload

S = Settings(hostname="vm")
FAST = Timing(
    consul_probe=0.05,
    retry_first=0.01,
    retry_most=0.04,
    restart_first=0.01,
    restart_most=0.01,
    inspect_retry_first=0.01,
    inspect_retry_most=0.04,
)


def stopped(c: dict[str, Any], code: int) -> dict[str, Any]:
    c = copy.deepcopy(c)
    c["State"].update({"Status": "exited", "Running": False, "ExitCode": code})
    c["NetworkSettings"]["Ports"] = {}
    return c


def step_until(daemon: Daemon, predicate: Callable[[], object], steps: int = 200, idle: bool = True) -> None:
    """Turn the loop until ``predicate`` holds (and, if ``idle``, every inspect and write started is back);
    each step waits at most until the loop's next deadline."""

    def done() -> bool:
        busy = daemon.actual.in_flight or daemon.desired.inspecting
        return bool(predicate()) and not (idle and busy)

    for _ in range(steps):
        if done():
            return
        daemon.step()
    assert done(), f"not reached in {steps} steps"


def stopping(c: dict[str, Any], stop_signal: str = "SIGTERM", timeout: int = 10) -> dict[str, Any]:
    c = copy.deepcopy(c)
    c["Config"].update({"StopSignal": stop_signal, "StopTimeout": timeout})
    return c


class WatchedLock:
    """The daemon's lock as the ``started`` fixture installs it: each release notifies ``released``, so a test
    waits on the core's state (changed only under this lock) rather than polling it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.released = threading.Condition(self._lock)

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self.released.notify_all()
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()


def wait_idle(daemon: Daemon) -> None:
    """Wait (5 s at most) until no inspect, read or write the daemon started is out (taken by its workers),
    woken each time its lock is let go (a daemon of the ``started`` fixture)."""
    lock = daemon.lock
    assert isinstance(lock, WatchedLock), "wait_idle needs the lock the started fixture installs"

    def idle() -> bool:
        return not (daemon.actual.reading or daemon.actual.in_flight or daemon.desired.inspecting)

    with lock.released:
        assert lock.released.wait_for(idle, timeout=5), "work still out after 5 s"


def named(base: str, name: str) -> dict[str, Any]:
    c = container(base, name=name)
    c["Id"] = (name * 64)[:64]
    return c


def registered_web(
    started: Any, stop_signal: str = "SIGTERM", timeout: int = 10, settings: Settings = S
) -> tuple[dict[str, Any], MemoryDocker, MemoryConsul, Daemon]:
    """A started daemon with the web container (this stop signal and stop timeout) registered."""
    web = stopping(payload("web"), stop_signal, timeout)
    docker, consul = MemoryDocker(web), MemoryConsul()
    daemon = started(docker, consul, settings)
    step_until(daemon, lambda: "vm:rec-web:80" in consul.registered)
    return web, docker, consul, daemon


def draining_web(started: Any) -> tuple[dict[str, Any], MemoryDocker, MemoryConsul, Daemon]:
    """A started daemon with the web container registered, then drained by docker stop's kill."""
    web, docker, consul, daemon = registered_web(started)
    docker.emit("kill", web["Id"], signal="15")
    step_until(daemon, lambda: consul.in_maintenance == {"vm:rec-web:80"})
    return web, docker, consul, daemon
