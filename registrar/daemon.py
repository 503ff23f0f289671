"""The level-triggered loop: subscribe, list, reconcile; then re-inspect on events.

Events only say *when* to look. The EventWatcher thread puts Docker events into the inbox; each
``step()`` of the loop waits for the inbox or the next deadline, takes everything queued
(coalescing many events for one container into one inspect), starts the inspects, and starts the
writes the plan calls for. Inspects and writes run on pools and come back through the same inbox,
so nothing waits for work in flight for another container: a container's registration starts as
soon as its own inspect is back. A full reconcile runs at start, after every new subscription to
the event stream, on ``--resync`` and after a failure (with backoff); it is done once every
inspect and write it started is back. The agent's services are read every few seconds, so an
agent that restarted empty is refilled without waiting for a resync.

One thread owns each piece of state: the loop owns everything here; the watcher and the pools
only send messages. The loop also supervises the watcher: a crash is logged with its traceback and
the thread is started again after a backoff, followed by a full reconcile. An unexpected error in
the loop itself is logged the same way and retried; the loop never ends but by a stop.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import dataclass

import structlog

from registrar.containers import ContainerSource, Learned, Listed
from registrar.errors import ConsulError, DockerError
from registrar.lifecycle import Shutdown
from registrar.metrics import Metrics
from registrar.model import HEALTH_REFRESH_SECONDS, DockerEvent
from registrar.reconciler import AgentRead, Done, Reconciler, ServiceSink
from registrar.settings import Settings
from registrar.watcher import RESYNC, Backoff, EventWatcher, Exited, StreamFailed

log = structlog.get_logger("registrar")


@dataclass(frozen=True)
class Timing:
    """The loop's clocks, in seconds (tests shorten them)."""

    consul_probe: float = 3.0
    """Between reads of the agent's services (restores what an agent restart lost)."""
    idle_ping: float = 15.0
    """A quiet event stream for this long gets the engine pinged (a stream can hang)."""
    retry_first: float = 0.2
    retry_most: float = 10.0
    """Backoff of a failed step, before the full reconcile that retries it."""
    reconnect_first: float = 0.1
    reconnect_most: float = 5.0
    """Backoff of the watcher's resubscriptions after the stream ended."""
    restart_first: float = 0.5
    restart_most: float = 30.0
    """Backoff of restarting a crashed watcher thread."""
    liveness: float = 60.0
    """A loop that has not turned for this long is stuck (the loop turns every few seconds)."""
    crash_window: float = 60.0
    crash_limit: int = 5
    """This many watcher crashes within the window, or unexpected loop errors in a row: unhealthy."""


class Daemon:
    """Runs until its Shutdown is requested (``stop()``, or a signal); every step is safe to interrupt."""

    def __init__(
        self,
        source: ContainerSource,
        sink: ServiceSink,
        settings: Settings,
        timing: Timing | None = None,
        metrics: Metrics | None = None,
        shutdown: Shutdown | None = None,
    ) -> None:
        self.source = source
        self.settings = settings
        self.timing = timing or Timing()
        self.metrics = metrics or Metrics()
        self.inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        self.reconciler = Reconciler(source, sink, settings, metrics=self.metrics, outbox=self.inbox)
        self.shutdown = shutdown or Shutdown()
        self.shutdown.wake_also(self.inbox)
        self.stopping = threading.Event()
        """Set by the loop once it stops (never by a signal handler); the watcher waits on it."""
        t = self.timing
        self.watcher = EventWatcher(source, self.inbox, self.stopping, Backoff(t.reconnect_first, t.reconnect_most))
        self.ready = threading.Event()
        """Set once the first full reconcile has succeeded."""
        self.docker_up = self.consul_up = True
        self.metrics.docker_up.set(1)
        self.metrics.consul_up.set(1)
        self.heartbeat = time.monotonic()
        """When the loop last turned (the liveness endpoint reads it)."""
        self._retry = Backoff(t.retry_first, t.retry_most)
        self._restart = Backoff(t.restart_first, t.restart_most)
        self._crashes: deque[float] = deque(maxlen=t.crash_limit)
        self._loop_errors = 0
        self._last_ping = 0.0
        self._started = False
        now = time.monotonic()
        self._full_due: float | None = now
        self._full_started: tuple[float, dict[str, int]] | None = None
        """When the full reconcile in progress began, and the request counts then."""
        self._holding = False
        """A write failed: start no more until the full reconcile that retries (avoids a hot loop)."""
        self._failed_writes = 0
        self._restart_due: float | None = None
        self._next_probe = now + t.consul_probe
        self._next_resync = now + settings.resync if settings.resync > 0 else None
        self._next_ttl = now + settings.ttl_refresh_seconds if settings.ttl > 0 else None
        self._next_health = now + HEALTH_REFRESH_SECONDS if settings.docker_health else None

    # Health ------------------------------------------------------------------------------------

    def unhealthy(self) -> str:
        """Why the daemon is not alive and well (``/healthz``), or "" when it is."""
        now = time.monotonic()
        t = self.timing
        if now - self.heartbeat >= t.liveness:
            return "the reconcile loop is stuck"
        if self._started and not self.stopping.is_set():
            # The loop schedules a restart as soon as it hears of the end: a second is plenty.
            if not self.watcher.alive() and self._restart_due is None and now - self.watcher.ended > 1.0:
                return "the Docker event thread is dead"
            if len(self._crashes) >= t.crash_limit and now - self._crashes[0] < t.crash_window:
                return f"the Docker event thread keeps crashing ({len(self._crashes)} times in {t.crash_window:g} s)"
        if self._loop_errors >= t.crash_limit:
            return f"the reconcile loop keeps failing ({self._loop_errors} unexpected errors in a row)"
        return ""

    def not_ready(self) -> str:
        """Why the daemon is not ready (``/readyz``), or "" when it is."""
        if not self.ready.is_set():
            return "initial reconcile not done yet"
        if not self.docker_up:
            return "Docker engine unreachable"
        if not self.consul_up:
            return "Consul agent unreachable"
        return ""

    def _set_docker_up(self, up: bool) -> None:
        self.docker_up = up
        self.metrics.docker_up.set(int(up))

    def _set_consul_up(self, up: bool) -> None:
        if up and not self.consul_up:
            log.info("consul_reachable")
        elif self.consul_up and not up:
            log.warning("consul_unreachable")
        self.consul_up = up
        self.metrics.consul_up.set(int(up))

    # The loop ----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish the step in flight and return (safe from a signal handler)."""
        self.shutdown.request()

    def run(self, _iterations: int | None = None) -> None:
        """Start, turn the loop until a stop (or ``_iterations`` steps, for tests), then close."""
        self.start()
        try:
            turns = 0
            while not self.shutdown.requested and (_iterations is None or turns < _iterations):
                self.step()
                turns += 1
        finally:
            self.close()

    def start(self) -> None:
        """Subscribe to Docker events before the first listing, so no event between the two is lost."""
        self.watcher.start(self.watcher.subscribe())
        self._started = True

    def close(self) -> None:
        self.stopping.set()
        self.source.close_events()
        self.reconciler.close()
        log.info("registrar_stopped")

    def step(self) -> None:
        """One turn: wait for messages or the next deadline, then do what is due."""
        now = self.heartbeat = time.monotonic()
        messages = self._drain(max(0.0, self._next_deadline() - now))
        if self.shutdown.requested:
            return
        events: list[DockerEvent] = []
        errors: list[Exception] = []
        for message in messages:
            if isinstance(message, DockerEvent):
                events.append(message)
                self.metrics.events.labels(message.action.split(":", 1)[0]).inc()
            elif isinstance(message, Learned | Listed | AgentRead | Done):
                if (error := self._back(message)) is not None:
                    errors.append(error)
            elif message is RESYNC:
                self._full_due = time.monotonic()
            elif isinstance(message, StreamFailed):
                self._set_docker_up(False)  # up again only after a listing succeeds (no flapping)
            elif isinstance(message, Exited):
                self._watcher_exited(message.error)
        # Every deadline that is due moves on *before* its work runs, so work that fails can never
        # leave a deadline in the past (and the loop spinning).
        now = time.monotonic()
        events += self.reconciler.view.end_drains(now)
        if self._next_resync is not None and now >= self._next_resync:
            self._next_resync = now + self.settings.resync
            self._full_due = now
        if self._restart_due is not None and now >= self._restart_due:
            self._restart_due = None
            self.watcher.start()  # subscribes on its own thread, then asks for a full reconcile
        probe = now >= self._next_probe
        if probe:
            self._next_probe = now + self.timing.consul_probe
            self._ping_docker_if_idle(now)
        full = self._full_due is not None and now >= self._full_due
        if full:
            self._full_due = None
        try:
            for error in errors:
                raise error
            self._hold_if_writes_failed()
            if full:
                self._start_full()
            elif probe:
                self.reconciler.request_read()
            if events:
                self.reconciler.view.take(events)
            if not self._holding:
                self.reconciler.dispatch(stop=lambda: self.shutdown.requested)
            if self._next_ttl is not None and now >= self._next_ttl:
                self._next_ttl = now + self.settings.ttl_refresh_seconds
                self.reconciler.pass_ttls()
            if self._next_health is not None and now >= self._next_health:
                self._next_health = now + HEALTH_REFRESH_SECONDS
                self.reconciler.push_health(refresh=True)
            self._full_done_if_settled()
        except (ConsulError, DockerError) as e:
            delay = self._retry_later()
            log.warning("reconcile_failed", error=str(e), retry_in=round(delay, 2))
        except Exception as e:
            # A bug, or a library failing in a way nobody foresaw: log it with its traceback, back off,
            # and start over from a full reconcile rather than end the process.
            self._loop_errors += 1
            delay = self._retry_later()
            log.error("loop_error", exc_info=e, retry_in=round(delay, 2), in_a_row=self._loop_errors)

    def _next_deadline(self) -> float:
        due = [
            self._full_due,
            self._restart_due,
            self._next_probe,
            self._next_resync,
            self._next_ttl,
            self._next_health,
            self.reconciler.view.drain_deadline(),
        ]
        return min(d for d in due if d is not None)

    def _retry_later(self) -> float:
        """A full reconcile after a backoff; the one in progress, if any, failed (it is never done)."""
        delay = self._retry.next()
        self._full_started = None
        self._full_due = time.monotonic() + delay
        return delay

    def _drain(self, timeout: float) -> list[object]:
        """Wait up to ``timeout`` for a message, then take everything queued, in order."""
        messages: list[object] = []
        try:
            messages.append(self.inbox.get(timeout=timeout))
            while True:
                messages.append(self.inbox.get_nowait())
        except queue.Empty:
            pass
        return messages

    def _watcher_exited(self, error: BaseException | None) -> None:
        """Supervise the watcher: a thread that ended other than by a stop is started again, later."""
        if self.stopping.is_set():
            return
        now = time.monotonic()
        self._crashes.append(now)
        recent = sum(1 for c in self._crashes if now - c < self.timing.crash_window)
        if recent <= 1:
            self._restart.reset()
        delay = self._restart.next()
        self._restart_due = now + delay
        self._set_docker_up(False)
        log.error(
            "docker_watch_crashed",
            exc_info=error or RuntimeError("the event thread ended"),
            restart_in=round(delay, 2),
            crashes_recently=recent,
        )

    def _back(self, message: Learned | Listed | AgentRead | Done) -> Exception | None:
        """Take work back from a pool; a listing or a read also tells whether Docker or Consul answers."""
        error = self.reconciler.back(message)
        if isinstance(message, Listed) and error is None:
            self._set_docker_up(True)
        elif isinstance(message, AgentRead) and error is None:
            self._set_consul_up(True)
            self._holding = False  # the agent's state is known again: what failed is planned afresh
        elif isinstance(error, DockerError):
            self._set_docker_up(False)
        elif isinstance(error, ConsulError) and isinstance(message, AgentRead):
            self._set_consul_up(False)
        return error

    def _start_full(self) -> None:
        """Ask for a listing of every container and a read of the agent; what they call for follows."""
        self._full_started = (time.perf_counter(), dict(self.reconciler.calls))
        self._failed_writes = self.reconciler.outcome["failed"]
        self.reconciler.view.request_listing()
        self.reconciler.request_read()

    def _hold_if_writes_failed(self) -> None:
        """A failed write holds back all writes until the full reconcile that retries it (after a backoff)."""
        failed = self.reconciler.outcome["failed"]
        if failed > self._failed_writes:
            self._failed_writes = failed
            self._holding = True
            raise ConsulError("a write to Consul failed")

    def _full_done_if_settled(self) -> None:
        """Once everything the full reconcile started is back: it is done (ready, logged, timed)."""
        reconciler, view = self.reconciler, self.reconciler.view
        if self._full_started is None or reconciler.in_flight or reconciler.reading or view.listing or view.inspecting:
            return
        started, calls = self._full_started
        self._full_started = None
        self._retry.reset()
        self._loop_errors = 0  # "in a row": since the last reconcile that went through
        self.metrics.reconcile.observe(time.perf_counter() - started)
        self.ready.set()
        log.info(
            "reconcile_done",
            services=len(reconciler.actual or {}),
            containers=len(reconciler.view.known),
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
            **{k: v - calls.get(k, 0) for k, v in reconciler.calls.items()},
        )

    def _ping_docker_if_idle(self, now: float) -> None:
        """A stream can hang without ending: when it has been quiet, make sure the engine answers."""
        if now - max(self.watcher.last_event, self._last_ping) < self.timing.idle_ping:
            return
        self._last_ping = now
        try:
            self.source.ping()
        except DockerError as e:
            log.warning("docker_unreachable", error=str(e))
            self._set_docker_up(False)
            self.source.close_events()
