"""Docker's event stream, read on a thread of its own.

The thread hands each event to ``deliver`` (the daemon's: it takes the event under the daemon's
lock, or passes it to the loop), and puts news of a failed stream (``StreamFailed``) into the loop's
inbox; it keeps no state of the daemon's. The loop supervises the thread: when it ends other than
by a stop, ``WatcherExited`` arrives with the exception, and the loop logs it, starts a new thread
after a backoff and reconciles in full.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Protocol

import structlog

from registrar import logs
from registrar.backoff import Backoff
from registrar.errors import DockerError
from registrar.messages import RESYNC, Message, StreamFailed, WatcherExited
from registrar.model import DockerEvent

log = structlog.get_logger("registrar")


class EventSource(Protocol):
    def events(self) -> Iterator[DockerEvent]: ...
    def close_events(self) -> None: ...


class EventWatcher:
    """Follows the event stream: subscribe, read until it ends, back off, subscribe again."""

    def __init__(
        self,
        source: EventSource,
        inbox: queue.SimpleQueue[Message],
        stopping: threading.Event,
        reconnect: Backoff | None = None,
        deliver: Callable[[Message], None] | None = None,
    ) -> None:
        self.source = source
        self.inbox = inbox
        self.deliver = deliver or inbox.put
        """Where events go (the daemon takes them at once); other news goes to the inbox."""
        self.stopping = stopping
        self.reconnect = reconnect or Backoff(0.1, 5.0)
        self.last_event = time.monotonic()
        """When the stream last delivered an event (written by the watcher thread only)."""
        self.thread: threading.Thread | None = None
        self.ended = 0.0
        """When the last thread ended (written by that thread only)."""

    def subscribe(self) -> Iterator[DockerEvent] | None:
        """Subscribe now; None (reported to the inbox) when the engine does not answer."""
        try:
            stream = self.source.events()
        except DockerError as e:
            self.inbox.put(StreamFailed(str(e)))
            log.warning("docker_stream_failed", error=str(e))
            return None
        return stream

    def start(self, stream: Iterator[DockerEvent] | None = None) -> None:
        """Start the thread; ``stream`` is a subscription made already (before the first listing)."""
        self.thread = threading.Thread(target=self._run, args=(stream,), name="registrar-events", daemon=True)
        self.thread.start()

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def _run(self, stream: Iterator[DockerEvent] | None) -> None:
        error: BaseException | None = None
        try:
            self._follow(stream)
        except BaseException as e:  # reported to the loop, which logs it and starts a new thread
            error = e
        finally:
            self.ended = time.monotonic()
            self.inbox.put(WatcherExited(error))

    def _follow(self, stream: Iterator[DockerEvent] | None) -> None:
        """Hand each event to ``deliver``; after the stream ends, resubscribe and ask for a full reconcile.

        Each subscription is made before the reconcile it triggers lists the containers, so nothing
        that happens in between is missed.
        """
        while not self.stopping.is_set():
            if stream is None:
                stream = self.subscribe()
                if stream is None:
                    self.stopping.wait(self.reconnect.next())
                    continue
                log.info("docker_stream_reconnected")
                self.inbox.put(RESYNC)
            self.reconnect.reset()
            try:
                for event in stream:
                    self.last_event = time.monotonic()
                    self.deliver(event)
                    if logs.debug:
                        log.debug("docker_event", action=event.action, container=event.name)
                if not self.stopping.is_set():
                    log.warning("docker_stream_ended")
            except DockerError as e:
                self.inbox.put(StreamFailed(str(e)))
                log.warning("docker_stream_failed", error=str(e))
            stream = None
            self.stopping.wait(self.reconnect.next())
