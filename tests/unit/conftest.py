"""Fixtures of the unit tests: daemons on the in-memory fakes, closed after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import structlog

from registrar.daemon import Daemon, Timing
from registrar.settings import Settings
from tests.unit.fakes import MemoryConsul, MemoryDocker
from tests.unit.loop import FAST, S, WatchedLock


@pytest.fixture(autouse=True)
def logging_as_it_was() -> Iterator[None]:
    """A test that runs a command, which configures logging (``--log-level error`` filters warnings out for good),
    leaves the next test's logging as it found it: capture_logs sees what that test logs."""
    config = structlog.get_config()
    yield
    structlog.configure(**config)


@pytest.fixture
def one_shot() -> Iterator[Callable[..., Daemon]]:
    """Daemons for one-shot work (sync, plan): their loop turns without the event stream; closed afterwards."""
    made: list[Daemon] = []

    def make(docker: MemoryDocker, consul: MemoryConsul, settings: Settings = S) -> Daemon:
        made.append(Daemon(docker, consul, settings, timing=FAST))
        return made[-1]

    yield make
    for daemon in made:
        daemon.close()


@pytest.fixture
def started() -> Iterator[Callable[..., Daemon]]:
    """Daemons started (subscribed) but not turning: the test turns them with step(); closed afterwards. Each has
    a WatchedLock, so a test can wait for its state to change (``wait_idle``)."""
    made: list[Daemon] = []

    def start(docker: MemoryDocker, consul: MemoryConsul, settings: Settings = S, timing: Timing = FAST) -> Daemon:
        daemon = Daemon(docker, consul, settings, timing=timing)
        daemon.lock = WatchedLock()  # type: ignore[assignment]  # used as a Lock is; set before a thread takes it
        daemon.start()
        made.append(daemon)
        return daemon

    yield start
    for daemon in made:
        daemon.close()
