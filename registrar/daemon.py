"""The daemon: the shell around the reconciler (registrar.reconciler), with its threads and its health.

Its parts, each in a module named for its job:

- ``core`` (registrar.reconciler): the rules, without I/O; the desired state (registrar.desired)
  and the actual state (registrar.actual) are its;
- ``executor`` (registrar.executor): performs the effects the core returns, requests on the
  ``workers`` (registrar.workers), whose results come back to ``on_message``;
- ``watcher`` (registrar.watcher): the thread that reads Docker's event stream and hands each
  event to ``on_message``; the daemon supervises it (a crash is logged and the thread started again
  after a backoff, followed by a full reconcile).

The core's state is guarded by ``Daemon.lock``, held only while the core runs: never during a
request, never while logging. Once the daemon runs, a Docker event and a result that succeeded are
taken at once by the thread that has them (``on_message``: the event thread or a worker), and a worker
sends the first write they call for itself; so a start costs one hand-off between threads.
Failures, and every message of a one-shot run, go to the loop's inbox (registrar.messages); each
``step()`` waits for the inbox or the core's next deadline and hands the core what came. ``sync()``
and ``plan()`` turn the same loop, without the event stream, until nothing is in flight. An
unexpected error is logged and retried; the daemon never stops but by a stop request.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter, deque

import structlog

from registrar.actual import ActualState, Outcome
from registrar.adapters import ContainerSource, ServiceSink
from registrar.backoff import Backoff
from registrar.desired import DesiredState
from registrar.effects import Effect
from registrar.errors import DockerError
from registrar.executor import Executor, described
from registrar.lifecycle import Shutdown
from registrar.messages import Failed, Message, Probed, StreamFailed, WatcherExited, Written
from registrar.metrics import Metrics, NoMetrics
from registrar.model import NETWORK_EVENTS, WATCHED_EVENTS, Action, DockerEvent
from registrar.probes import Prober
from registrar.reconciler import Reconciler, Timing
from registrar.settings import Settings
from registrar.watcher import EventWatcher
from registrar.workers import WORKERS, Workers

__all__ = ["Daemon", "Timing"]
log = structlog.get_logger("registrar")


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
        workers: int = WORKERS,
    ) -> None:
        self.source = source
        self.sink = sink
        self.timing = t = timing or Timing()
        self.metrics: Metrics | NoMetrics = metrics or (Metrics() if settings.metrics_addr else NoMetrics())
        """What the metrics endpoint serves; counted only when there is one (``--metrics-addr``)."""
        self.inbox: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self.lock = threading.Lock()
        """Guards the core wherever it runs (the loop, the event thread, a worker)."""
        self.core = Reconciler(settings, t, time.monotonic())
        self.workers = Workers(self.on_message, workers)
        self.prober = Prober(source, self.on_message)
        """Runs the exec probes (``SERVICE_CHECK_EXEC``) of a running daemon on threads of its own."""
        self.ready = threading.Event()
        """Set once the first full reconcile has succeeded."""
        self.executor = Executor(
            self.core, source, sink, self.metrics, self.workers, self.prober, self.inbox.put, self._feed, self.ready.set
        )
        self.shutdown = shutdown or Shutdown()
        self.shutdown.wake_also(self.inbox)
        self.stopping = threading.Event()
        """Set by the loop once it stops (never by a signal handler); the watcher waits on it."""
        self.watcher = EventWatcher(
            source, self.inbox, self.stopping, Backoff(t.reconnect_first, t.reconnect_most), deliver=self.on_message
        )
        self.heartbeat = time.monotonic()
        """When the loop last turned (the liveness endpoint reads it)."""
        self._running = False
        """Started (``start()``): messages that succeeded are taken where they arrive."""
        self._restart = Backoff(t.restart_first, t.restart_most)
        self._restart_due: float | None = None
        self._crashes: deque[float] = deque(maxlen=t.crash_limit)
        self._last_ping = 0.0
        self._event_counters = {a: self.metrics.events.labels(a) for a in WATCHED_EVENTS + NETWORK_EVENTS}
        self._mirror()

    # The core's state, for the commands, the health endpoints and tests ----------------------

    @property
    def settings(self) -> Settings:
        return self.core.settings

    @property
    def desired(self) -> DesiredState:
        return self.core.desired

    @property
    def actual(self) -> ActualState:
        return self.core.actual

    @property
    def calls(self) -> Counter[str]:
        """Requests made to each system, by kind (``reconcile_done`` logs them; benchmarks read them)."""
        return self.core.calls

    # Health ------------------------------------------------------------------------------------

    def unhealthy(self) -> str:
        """Why the daemon is not alive and well (``/healthz``), or "" when it is."""
        now = time.monotonic()
        t = self.timing
        if now - self.heartbeat >= t.liveness:
            return "the reconcile loop is stuck"
        away = self.workers.longest()
        if away is not None and now - away[1] >= t.work_deadline:
            return f"a worker has been on {away[0]} for {now - away[1]:.0f} s"
        if self._running and not self.stopping.is_set():
            # The loop schedules a restart as soon as it hears of the end: a second is plenty.
            if not self.watcher.alive() and self._restart_due is None and now - self.watcher.ended > 1.0:
                return "the Docker event thread is dead"
            if len(self._crashes) >= t.crash_limit and now - self._crashes[0] < t.crash_window:
                return f"the Docker event thread keeps crashing ({len(self._crashes)} times in {t.crash_window:g} s)"
        if self.core.loop_errors >= t.crash_limit:
            return f"the reconcile loop keeps failing ({self.core.loop_errors} unexpected errors in a row)"
        return ""

    def not_ready(self) -> str:
        """Why the daemon is not ready (``/readyz``), or "" when it is."""
        if not self.ready.is_set():
            return "initial reconcile not done yet"
        if not self.core.docker_up:
            return "Docker engine unreachable"
        if not self.core.consul_up:
            return "Consul agent unreachable"
        unkept = getattr(self.sink, "node_unkept", None)  # --catalog: the session that keeps this host's node
        return str(unkept()) if unkept is not None else ""

    def _mirror(self) -> None:
        """The gauges, from the core's state (after each time it ran)."""
        core = self.core
        self.metrics.docker_up.set(int(core.docker_up))
        self.metrics.consul_up.set(int(core.consul_up))
        self.metrics.services.set(len(core.actual.registrations or {}))

    def _count(self, message: Message) -> None:
        if isinstance(message, DockerEvent):
            action = message.action.split(":", 1)[0]
            (self._event_counters.get(action) or self.metrics.events.labels(action)).inc()
        elif isinstance(message, Probed):
            self.metrics.probe_runs.labels(message.health.status).inc()

    # Running -----------------------------------------------------------------------------------

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
        self._running = self.executor.probing = True

    def close(self) -> None:
        """Stop the watcher and wait for the work in flight (the adapters stay open: their owner closes them)."""
        self.stopping.set()
        self.source.close_events()
        self.prober.close()
        self.workers.close()
        if self._running:
            log.info("registrar_stopped")

    def sync(self) -> Outcome:
        """One full reconcile, turned on this loop until nothing is in flight (``registrar sync``).

        Raises the first DockerError or ConsulError of the listing, an inspect or the read of the
        agent; a write that fails is counted in the outcome and not retried.
        """
        before = Counter(self.core.actual.results)
        self._run_once()
        return self.core.actual.outcome(before)

    def plan(self) -> list[Action]:
        """What ``sync()`` would write, sorted by service ID; writes nothing (``registrar plan``)."""
        self.core.dry_run = True
        self._run_once()
        return self.core.plan()

    def _run_once(self) -> None:
        core = self.core
        core.one_shot, core.failure = True, None
        core.schedule.full = time.monotonic()
        self.step()
        while core.failure is None and (core.full.started is not None or core.busy()):
            self.step()
        if core.failure is not None:
            raise core.failure

    # One step ----------------------------------------------------------------------------------

    def step(self) -> None:
        """One turn: wait for messages or the next deadline, then hand the core what came and what is due."""
        now = self.heartbeat = time.monotonic()
        with self.lock:  # the drains change under it, on the event thread
            deadline = self.core.deadline()
        if self._restart_due is not None:
            deadline = min(deadline, self._restart_due)
        messages = self._receive(max(0.0, deadline - now))
        if self.shutdown.requested:
            return
        now = time.monotonic()
        if now >= self.core.schedule.read:
            messages += self._ping_docker_if_idle(now)  # a request: never under the lock
        taken: list[Message] = []
        for message in messages:
            self._count(message)
            if isinstance(message, WatcherExited):
                if self.stopping.is_set():
                    continue
                self._watcher_exited(message.error, now)
            taken.append(message)
        if self._restart_due is not None and now >= self._restart_due:
            self._restart_due = None
            self.watcher.start()  # subscribes on its own thread, then asks for a full reconcile
        with self.lock:
            self.core.stopping = self.shutdown.requested
            effects = self.core.step(taken, now)
            self.executor.update_probes(effects)
        self._perform(effects)

    def _perform(self, effects: list[Effect]) -> None:
        """Carry out what the core returned; an error is the loop's to log (``loop_error``), back off from and
        reconcile after, as for one of the core's (the executor reports its own the same way)."""
        try:
            writes = self.executor.perform(effects)
            self._mirror()
            self.executor.post(writes)
        except Exception as e:
            self.inbox.put(Failed(e))

    def _feed(self, message: Message) -> None:
        """A message from the shell itself (a host address changed), taken now."""
        with self.lock:
            effects = self.core.handle(message, time.monotonic())
            self.executor.update_probes(effects)
        self._perform(effects)

    def on_message(self, message: Message) -> None:
        """A message from the event thread or a worker: taken at once by that thread, or passed to the loop.

        Once the daemon runs, a Docker event and a result that succeeded are taken where they arrive, and
        a worker sends the first write they call for itself (a start costs one hand-off between threads,
        not five). Anything that failed, and everything in a one-shot run, goes to the loop's inbox."""
        while True:
            if not self._running or getattr(message, "error", None) is not None or self.stopping.is_set():
                self.inbox.put(message)
                return
            bug: Exception | None = None
            with self.lock:
                if self.shutdown.requested:
                    self.inbox.put(message)
                    return
                try:
                    effects = self.core.handle(message, time.monotonic())
                except Exception as e:  # a bug: the loop logs it and reconciles in full
                    effects, bug = self.core.flush(), e
                self.executor.update_probes(effects)
            self._count(message)
            writes = self.executor.perform(effects)  # never raises: an effect that fails is reported to the loop
            self._mirror()
            if bug is not None:
                self.executor.post(writes)
                self.inbox.put(Failed(bug, message))
                return
            if not writes or not self.workers.on_worker():
                self.executor.post(writes)
                return
            self.executor.post(writes[1:])
            self.workers.now_on(described(writes[0]))
            try:
                message = self.executor.send(writes[0])
            except Exception as e:  # a bug: the loop logs it, as when a worker posts it
                message = Written(writes[0], e)

    def _receive(self, timeout: float) -> list[Message]:
        """Wait up to ``timeout`` for a message, then take everything queued, in order."""
        messages: list[Message] = []
        try:
            messages.append(self.inbox.get(timeout=timeout))
            while True:
                messages.append(self.inbox.get_nowait())
        except queue.Empty:
            pass
        return messages

    # The watcher -------------------------------------------------------------------------------

    def _watcher_exited(self, error: BaseException | None, now: float) -> None:
        """Supervise the watcher: a thread that ended other than by a stop is started again, later."""
        self._crashes.append(now)
        recent = sum(1 for c in self._crashes if now - c < self.timing.crash_window)
        if recent <= 1:
            self._restart.reset()
        delay = self._restart.next()
        self._restart_due = now + delay
        log.error(
            "docker_watch_crashed",
            exc_info=error or RuntimeError("the event thread ended"),
            restart_in=round(delay, 2),
            crashes_recently=recent,
        )

    def _ping_docker_if_idle(self, now: float) -> list[Message]:
        """A stream can hang without ending: when it has been quiet, make sure the engine answers."""
        if not self._running or now - max(self.watcher.last_event, self._last_ping) < self.timing.idle_ping:
            return []
        self._last_ping = now
        try:
            self.source.ping()
        except DockerError as e:
            log.warning("docker_unreachable", error=str(e))
            self.source.close_events()
            return [StreamFailed(str(e))]
        return []
