"""The level-triggered loop: subscribe, list, reconcile; then re-inspect on events.

Events only say *when* to look. One thread reads the Docker event stream and queues container
IDs; the loop drains the queue (coalescing many events for one container into one inspect),
re-plans and applies. A full reconcile runs at start, after every reconnect of the event stream,
on ``--resync`` and after a failed write (with backoff). The agent's services are read every few
seconds, so an agent that restarted empty is refilled without waiting for a resync.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import structlog

from registrar.errors import ConsulError, DockerError
from registrar.metrics import Metrics
from registrar.model import DockerEvent
from registrar.reconciler import ContainerSource, Reconciler, ServiceSink
from registrar.settings import Settings

log = structlog.get_logger("registrar")

RESYNC = "<resync>"  # queue marker: a full reconcile is due
CONSUL_PROBE_SECONDS = 3.0
DOCKER_IDLE_PING_SECONDS = 15.0
LIVENESS_SECONDS = 60.0


@dataclass
class Backoff:
    """Exponential backoff between ``first`` and ``most`` seconds."""

    first: float = 0.2
    most: float = 10.0
    _next: float = field(default=0.0, init=False)

    def next(self) -> float:
        self._next = min(self.most, self._next * 2) if self._next else self.first
        return self._next

    def reset(self) -> None:
        self._next = 0.0


class Daemon:
    """Runs until stop() is called; every step is safe to interrupt."""

    def __init__(
        self,
        source: ContainerSource,
        sink: ServiceSink,
        settings: Settings,
        consul_probe: float = CONSUL_PROBE_SECONDS,
        idle_ping: float = DOCKER_IDLE_PING_SECONDS,
        metrics: Metrics | None = None,
    ) -> None:
        self.source = source
        self.metrics = metrics or Metrics()
        self.consul_probe = consul_probe
        """Seconds between reads of the agent's services (restores what an agent restart lost)."""
        self.idle_ping = idle_ping
        """Seconds of a quiet event stream after which the engine is pinged."""
        self.settings = settings
        self.reconciler = Reconciler(source, sink, settings, metrics=self.metrics)
        self.stopping = threading.Event()
        self.queue: queue.Queue[DockerEvent | str] = queue.Queue()
        self.ready = threading.Event()
        """Set once the first full reconcile has succeeded."""
        self._docker_up = self._consul_up = True
        self.metrics.docker_up.set(1)
        self.metrics.consul_up.set(1)
        self._last_event = time.monotonic()
        self.heartbeat = time.monotonic()
        """When the loop last turned (the liveness endpoint reads it)."""

    @property
    def docker_up(self) -> bool:
        return self._docker_up

    @docker_up.setter
    def docker_up(self, up: bool) -> None:
        self._docker_up = up
        self.metrics.docker_up.set(int(up))

    @property
    def consul_up(self) -> bool:
        return self._consul_up

    @consul_up.setter
    def consul_up(self, up: bool) -> None:
        self._consul_up = up
        self.metrics.consul_up.set(int(up))

    def live(self) -> bool:
        """The loop turns at least every few seconds; a minute without a turn means it is stuck."""
        return time.monotonic() - self.heartbeat < LIVENESS_SECONDS

    def not_ready(self) -> str:
        """Why the daemon is not ready, or "" when it is."""
        if not self.ready.is_set():
            return "initial reconcile not done yet"
        if not self.docker_up:
            return "Docker engine unreachable"
        if not self.consul_up:
            return "Consul agent unreachable"
        return ""

    def stop(self) -> None:
        """Ask the loop to finish the action in flight and return (safe from a signal handler)."""
        self.stopping.set()
        self.queue.put(RESYNC)
        self.source.close_events()

    # The event thread --------------------------------------------------------------------------

    def _subscribe(self) -> Iterator[DockerEvent] | None:
        """Subscribe to Docker events; None (logged) when the engine does not answer."""
        try:
            stream = self.source.events()
        except DockerError as e:
            self.docker_up = False
            log.warning("docker_stream_failed", error=str(e))
            return None
        self.docker_up = True
        return stream

    def _watch_events(self, stream: Iterator[DockerEvent] | None) -> None:
        """Read events into the queue; after the stream ends, resubscribe and ask for a full reconcile.

        Each subscription is made before the reconcile it triggers lists the containers, so nothing
        that happens in between is missed.
        """
        backoff = Backoff(0.1, 5.0)
        while not self.stopping.is_set():
            if stream is None:
                stream = self._subscribe()
                if stream is None:
                    self.stopping.wait(backoff.next())
                    continue
                log.info("docker_stream_reconnected")
                self.queue.put(RESYNC)
            backoff.reset()
            try:
                for event in stream:
                    self._last_event = time.monotonic()
                    self.metrics.events.labels(event.action.split(":", 1)[0]).inc()
                    self.queue.put(event)
                    log.debug("docker_event", action=event.action, container=event.name)
                if not self.stopping.is_set():
                    log.warning("docker_stream_ended")
            except DockerError as e:
                self.docker_up = False
                log.warning("docker_stream_failed", error=str(e))
            stream = None
            self.stopping.wait(backoff.next())

    # The loop ------------------------------------------------------------------------------------

    def run(self) -> None:
        """The daemon's main loop; returns after stop()."""
        # Subscribe before the first listing, so no event between the two is lost.
        watcher = threading.Thread(
            target=self._watch_events, args=(self._subscribe(),), name="registrar-events", daemon=True
        )
        watcher.start()
        now = time.monotonic()
        full_due: float | None = now
        retry = Backoff(0.2, 10.0)
        next_probe = now + self.consul_probe
        next_resync = now + self.settings.resync if self.settings.resync > 0 else None
        next_ttl = now + self.settings.ttl_refresh_seconds if self.settings.ttl > 0 else None
        try:
            while not self.stopping.is_set():
                now = self.heartbeat = time.monotonic()
                deadlines = [d for d in (full_due, next_probe, next_resync, next_ttl) if d is not None]
                events, resync = self._drain(max(0.0, min(deadlines) - now))
                if self.stopping.is_set():
                    break
                # Every deadline that is due moves on *before* its work runs, so work that fails
                # can never leave a deadline in the past (and the loop spinning).
                now = time.monotonic()
                if next_resync is not None and now >= next_resync:
                    next_resync, resync = now + self.settings.resync, True
                if resync:
                    full_due = now
                probe = now >= next_probe
                if probe:
                    next_probe = now + self.consul_probe
                    self._ping_docker_if_idle()
                full = full_due is not None and now >= full_due
                if full:
                    full_due = None
                try:
                    if full:
                        self._full()
                    elif events:
                        self.reconciler.refresh(events)
                        self._converge(read=False)
                    elif probe:
                        self._converge(read=True)
                    retry.reset()
                except (ConsulError, DockerError) as e:
                    delay = retry.next()
                    full_due = time.monotonic() + delay
                    log.warning("reconcile_failed", error=str(e), retry_in=round(delay, 2))
                if next_ttl is not None and now >= next_ttl:
                    next_ttl = now + self.settings.ttl_refresh_seconds
                    self.reconciler.pass_ttls()
        finally:
            self.stopping.set()
            self.source.close_events()
            self.reconciler.close()
            log.info("registrar_stopped")

    def _drain(self, timeout: float) -> tuple[list[DockerEvent], bool]:
        """Wait up to ``timeout`` for work, then take everything queued, in order."""
        items: list[DockerEvent | str] = []
        try:
            items.append(self.queue.get(timeout=timeout))
            while True:
                items.append(self.queue.get_nowait())
        except queue.Empty:
            pass
        return [i for i in items if isinstance(i, DockerEvent)], RESYNC in items

    def _full(self) -> None:
        started = time.perf_counter()
        calls = dict(self.reconciler.calls)
        try:
            self.reconciler.refresh_all()
            self.docker_up = True
        except DockerError:
            self.docker_up = False
            raise
        self._converge(read=True)
        self.metrics.reconcile.observe(time.perf_counter() - started)
        self.ready.set()
        log.info(
            "reconcile_done",
            services=len(self.reconciler.actual or {}),
            containers=len(self.reconciler.known),
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
            **{k: v - calls[k] for k, v in self.reconciler.calls.items()},
        )

    def _converge(self, read: bool) -> bool:
        try:
            outcome = self.reconciler.converge(read=read, stop=self.stopping)
        except ConsulError:
            if self.consul_up:
                log.warning("consul_unreachable")
            self.consul_up = False
            raise
        if not self.consul_up:
            log.info("consul_reachable")
        self.consul_up = True
        if outcome.failed:
            raise ConsulError(f"{outcome.failed} write(s) to Consul failed")
        return True

    def _ping_docker_if_idle(self) -> None:
        """A stream can hang without ending: when it has been quiet, make sure the engine answers."""
        if time.monotonic() - self._last_event < self.idle_ping:
            return
        try:
            self.source.ping()
        except DockerError as e:
            log.warning("docker_unreachable", error=str(e))
            self.docker_up = False
            self.source.close_events()
        self._last_event = time.monotonic()
