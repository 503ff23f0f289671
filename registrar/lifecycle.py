"""The process around the loop: signals, waiting for Docker and Consul at start, exit codes.

Signal handlers only set a flag and wake whoever waits, by ``SimpleQueue.put`` (reentrant: it
takes no lock that the interrupted code could hold). Everything else, closing streams and
finishing the write in flight, happens in ordinary code that sees the flag. A second
SIGTERM/SIGINT exits at once. The handlers that were there before are put back on the way out.
(The shape is uvicorn's ``capture_signals`` / ``handle_exit``.)
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
from collections.abc import Callable, Iterator
from enum import IntEnum
from types import FrameType
from typing import TypeVar

import structlog

from registrar.backoff import Backoff
from registrar.errors import RegistrarError
from registrar.messages import WAKE, Message

log = structlog.get_logger("registrar")
T = TypeVar("T")
__all__ = ["HANDLED_SIGNALS", "Backoff", "ExitCode", "Shutdown", "capture_signals", "retry_at_start"]
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ExitCode(IntEnum):
    OK = 0
    NOT_IN_SYNC = 1
    NOT_FOUND = 1
    """``explain``: no such container (an alias of NOT_IN_SYNC's value: each command means one of them)."""
    USAGE = 2
    CONFIG = 3
    DOCKER = 4
    CONSUL = 5
    INTERNAL = 70
    """An unexpected error before the loop started (logged with its traceback)."""


class Shutdown:
    """A request to stop that a signal handler may make: a flag, and a wake-up for every waiter."""

    def __init__(self) -> None:
        self.requested = False
        self._waiters: list[queue.SimpleQueue[Message]] = [queue.SimpleQueue()]

    def request(self) -> None:
        """Set the flag and wake the waiters; takes no lock, so it is safe in a signal handler."""
        self.requested = True
        for waiter in tuple(self._waiters):
            waiter.put(WAKE)

    def wake_also(self, inbox: queue.SimpleQueue[Message]) -> None:
        """Also wake this queue's reader on a request (the daemon's inbox)."""
        self._waiters.append(inbox)
        if self.requested:
            inbox.put(WAKE)

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds`` or until a request; True when stopping was requested."""
        if not self.requested:
            with contextlib.suppress(queue.Empty):
                self._waiters[0].get(timeout=max(seconds, 0.0))
        return self.requested


@contextlib.contextmanager
def capture_signals(
    shutdown: Shutdown, force_exit: Callable[[int], object] = os._exit, signals: tuple[int, ...] = HANDLED_SIGNALS
) -> Iterator[Shutdown]:
    """SIGTERM/SIGINT request a shutdown; a second one calls ``force_exit(128 + signum)``.

    The previous handlers are restored when the block ends, however it ends.
    """

    def handle(signum: int, frame: FrameType | None) -> None:
        if shutdown.requested:
            force_exit(128 + signum)
            return
        shutdown.request()

    previous = {sig: signal.signal(sig, handle) for sig in signals}
    try:
        yield shutdown
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def retry_at_start(
    what: str,
    attempt_once: Callable[[], T],
    errors: type[RegistrarError],
    attempts: int,
    interval_ms: int,
    shutdown: Shutdown,
) -> T | None:
    """Call ``attempt_once`` until it returns, ``attempts`` more times at most (-1: forever).

    Each failure is logged as ``<what>_unreachable``. Returns None when a shutdown was requested
    meanwhile; raises ``errors("gave up after N attempt(s): ...")`` when the attempts run out.
    """
    attempt = 0
    while not shutdown.requested:
        try:
            return attempt_once()
        except errors as e:
            attempt += 1
            if attempts >= 0 and attempt > attempts:
                raise errors(f"gave up after {attempt} attempt(s): {e}") from None
            log.warning(f"{what}_unreachable", error=str(e), attempt=attempt)
            shutdown.wait(interval_ms / 1000)
    return None
