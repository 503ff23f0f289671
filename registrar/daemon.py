"""The reconcile loop: the daemon's state, its peers, and the one ``step()`` at a time that runs them.

The daemon owns its peers side by side:

- ``cache`` (registrar.cache): the containers as last seen, and the desired state they make;
- ``agent`` (registrar.agent): this host's registrations on the agent (the actual state), the
  writes in flight, drain maintenance and Docker health sent;
- ``workers`` (registrar.workers): threads that make the requests (list, inspect, read, write)
  and hand each result to ``deliver``;
- ``watcher`` (registrar.watcher): the thread that reads Docker's event stream and hands each
  event to ``deliver``.

Their state is the daemon's, under ``Daemon.lock``. Once the daemon runs, a Docker event and a
result that succeeded are taken at once by the thread that has them (``deliver``: the event thread
or a worker), and a worker starts the first write they call for itself; so a start costs one hand-off
between threads. Failures, and every message of a one-shot run, go to the loop's inbox
(registrar.messages), and each step of the loop waits for the inbox or the next deadline, takes
what came, and does what is due (a full reconcile, a read of the agent, TTL and health refreshes,
the end of a drain). Every message is matched in one place, ``_take``. Nothing waits for another
container's work: a container's inspect starts as soon as its event is taken, its registration as
soon as its inspect is back. A full reconcile (a listing of every container and a read of the
agent) runs at start, after each new subscription to the event stream, on ``--resync`` and after a
failure (with backoff); it is done once everything it started is back. An inspect that the engine
answers with an error is that container's failure: it alone is inspected again, with backoff
(registrar.inspect_retries); Docker is down only when the engine cannot be reached. ``sync()`` and
``plan()`` turn the same loop once, without the event stream, for the one-shot commands.

The loop supervises the watcher: a crash is logged with its traceback and the thread is started
again after a backoff, followed by a full reconcile. An unexpected error, in the loop or while
another thread takes a message (``Failed``), is logged the same way and retried; the daemon never
stops but by a stop request.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from functools import partial

import structlog

from registrar import logs
from registrar.adapters import ContainerSource, ServiceSink
from registrar.agent import AgentState, Outcome
from registrar.cache import ContainerCache, cached_from_inspect
from registrar.errors import ConsulError, ConsulRejected, DockerError, DockerUnreachable
from registrar.host_address import BadAddress, parse_spec, resolve
from registrar.inspect_retries import InspectRetries
from registrar.lifecycle import Backoff, Shutdown
from registrar.messages import (
    WAKE,
    AgentRead,
    Failed,
    Inspected,
    Listed,
    Message,
    Probed,
    Resync,
    StreamFailed,
    Wake,
    WatcherExited,
    Written,
)
from registrar.metrics import Metrics, NoMetrics
from registrar.model import (
    HEALTH_REFRESH_SECONDS,
    NETWORK_EVENTS,
    WATCHED_EVENTS,
    Action,
    Deregister,
    DockerEvent,
    HealthUpdate,
    Maintenance,
    Register,
    TtlPass,
    Write,
    write_key,
)
from registrar.probes import Prober
from registrar.reconcile import owned_filter
from registrar.services import container_name, network_owner
from registrar.settings import Settings
from registrar.watcher import EventWatcher
from registrar.workers import WORKERS, Workers

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
    inspect_retry_first: float = 0.5
    inspect_retry_most: float = 30.0
    """Backoff of inspecting one container again after the engine answered its inspect with an error."""
    work_deadline: float = 60.0
    """A worker away this long on one piece of work is stuck: unhealthy (several times the requests'
    own timeouts: Docker's 10 s, Consul's 5 s)."""


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
        self.source, self.sink, self.settings = source, sink, settings
        self.timing = t = timing or Timing()
        self.metrics: Metrics | NoMetrics = metrics or (Metrics() if settings.metrics_addr else NoMetrics())
        """What the metrics endpoint serves; counted only when there is one (``--metrics-addr``)."""
        self.inbox: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self.lock = threading.Lock()
        """Guards the state (cache, agent, the loop's flags) wherever a message is taken; never held
        during a request."""
        self.cache = ContainerCache(settings)
        self.agent = AgentState(settings.hostname, settings.forget_hosts, settings.instance, settings.forget_instances)
        self._owned_filter = owned_filter((settings.hostname, *settings.forget_hosts))
        """What the agent is asked to send of its services: this host's and the forgotten hosts' registrations."""
        self.workers = Workers(self.deliver, workers)
        self.prober = Prober(source, self.deliver)
        """Runs the exec probes (``SERVICE_CHECK_EXEC``) of a running daemon on threads of its own."""
        self.shutdown = shutdown or Shutdown()
        self.shutdown.wake_also(self.inbox)
        self.stopping = threading.Event()
        """Set by the loop once it stops (never by a signal handler); the watcher waits on it."""
        self.watcher = EventWatcher(
            source, self.inbox, self.stopping, Backoff(t.reconnect_first, t.reconnect_most), deliver=self.deliver
        )
        self.ready = threading.Event()
        """Set once the first full reconcile has succeeded."""
        self.calls: Counter[str] = Counter(docker_list=0, docker_inspect=0, consul_read=0, consul_write=0)
        """Requests made to each system, by kind (``reconcile_done`` logs them; benchmarks read them)."""
        self.docker_up = self.consul_up = True
        self.metrics.docker_up.set(1)
        self.metrics.consul_up.set(1)
        self.heartbeat = time.monotonic()
        """When the loop last turned (the liveness endpoint reads it)."""
        self.failure: Exception | None = None
        """The first Docker or Consul error of a one-shot run (``sync()``, ``plan()``), which raise it."""
        self._one_shot = self._dry_run = self._started = self._holding = self._direct = False
        self._due_writes: list[Write] = []
        """Writes a step decided on, started once it lets go of the lock."""
        self._retry = Backoff(t.retry_first, t.retry_most)
        self._inspect_retries = InspectRetries(t.inspect_retry_first, t.inspect_retry_most)
        self._failed_inspects: list[tuple[str, str, str, float]] = []
        """Inspects the engine answered with an error this step: (container, ID, error, retry in seconds),
        logged once the lock is let go."""
        self._restart = Backoff(t.restart_first, t.restart_most)
        self._crashes: deque[float] = deque(maxlen=t.crash_limit)
        self._loop_errors = 0
        self._failed_writes = 0
        self._last_ping = 0.0
        now = time.monotonic()
        self._full_due: float | None = now
        self._full_started: tuple[float, Counter[str]] | None = None
        """When the full reconcile in progress began, and the request counts then."""
        self._restart_due: float | None = None
        self._next_probe = now + t.consul_probe
        self._next_resync = now + settings.resync if settings.resync > 0 else None
        self._next_ttl = now + settings.ttl_refresh_seconds if settings.ttl > 0 else None
        # The TTL checks registrar passes itself: Docker health's and exec probes'.
        refresh = settings.docker_health or settings.exec_checks
        self._next_health = now + HEALTH_REFRESH_SECONDS if refresh else None
        self._event_counters = {a: self.metrics.events.labels(a) for a in WATCHED_EVENTS + NETWORK_EVENTS}
        self._consul_ops = {
            (op, result): self.metrics.consul_ops.labels(op, result)
            for op in ("read", *_OPERATIONS.values())
            for result in ("ok", "error", "rejected")
        }

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
        self._started = self._direct = True

    def close(self) -> None:
        """Stop the watcher and wait for the work in flight (the adapters stay open: their owner closes them)."""
        self.stopping.set()
        self.source.close_events()
        self.prober.close()
        self.workers.close()
        if self._started:
            log.info("registrar_stopped")

    def sync(self) -> Outcome:
        """One full reconcile, turned on this loop until nothing is in flight (``registrar sync``).

        Raises the first DockerError or ConsulError of the listing, an inspect or the read of the
        agent; a write that fails is counted in the outcome and not retried.
        """
        before = Counter(self.agent.results)
        self._settle_once()
        return self.agent.outcome(before)

    def plan(self) -> list[Action]:
        """What ``sync()`` would write, sorted by service ID; writes nothing (``registrar plan``)."""
        self._dry_run = True
        self._settle_once()
        return self.agent.plan(self.cache.desired, self.cache.kept)

    def _settle_once(self) -> None:
        self._one_shot, self.failure = True, None
        self._full_due = time.monotonic()
        self.step()
        while self.failure is None and (self._full_started is not None or self._busy()):
            self.step()
        if self.failure is not None:
            raise self.failure

    def _busy(self) -> bool:
        """Work is in flight: a listing, an inspect, a read or a write."""
        return bool(self.cache.listing or self.cache.inspecting or self.agent.reading or self.agent.in_flight)

    # One step ----------------------------------------------------------------------------------

    def step(self) -> None:
        """One turn: wait for messages or the next deadline, then do what is due."""
        now = self.heartbeat = time.monotonic()
        with self.lock:  # the drains change under it, on the event thread
            deadline = self._next_deadline()
        messages = self._receive(max(0.0, deadline - now))
        if self.shutdown.requested:
            return
        now = time.monotonic()
        probe = now >= self._next_probe
        if probe:
            self._next_probe = now + self.timing.consul_probe
            self._ping_docker_if_idle(now)  # a request: never under the lock
        with self.lock:
            self._turn(messages, probe, now)
            failed, self._failed_inspects = self._failed_inspects, []
        for name, cid, error, delay in failed:
            log.warning("inspect_failed", container=name, container_id=cid, error=error, retry_in=round(delay, 2))
        self._post(self._due_writes)
        self._due_writes = []

    def _turn(self, messages: list[Message], probe: bool, now: float) -> None:
        events: list[DockerEvent] = []
        errors: list[Exception] = []
        for message in messages:
            try:
                self._take(message, events, errors)
            except Exception as e:  # a bug: logged below as loop_error, the message's work abandoned
                with contextlib.suppress(Exception):
                    self._abandon(message)
                errors.append(e)
        # Every deadline that is due moves on *before* its work runs, so work that fails can never
        # leave a deadline in the past (and the loop spinning).
        if self.cache.draining:
            events += self.cache.end_drains(now)
        if self._next_resync is not None and now >= self._next_resync:
            self._next_resync = now + self.settings.resync
            self._full_due = now
        if self._restart_due is not None and now >= self._restart_due:
            self._restart_due = None
            self.watcher.start()  # subscribes on its own thread, then asks for a full reconcile
        for cid in self._inspect_retries.take_due(now):
            if cid not in self.cache.inspecting and self.cache.to_inspect(cid):  # else the one in flight will do
                self._inspect(cid)
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
                self._read_agent()
            if events:
                self._take_events(events, now)
            self._follow_changes()
            self._due_writes += self._writes()
            if self._next_ttl is not None and now >= self._next_ttl:
                self._next_ttl = now + self.settings.ttl_refresh_seconds
                self._due_writes += self._counted(self.agent.ttl_passes(self.cache.desired))
            if self._next_health is not None and now >= self._next_health:
                self._next_health = now + HEALTH_REFRESH_SECONDS
                self._due_writes += self._counted(self.agent.refresh_health(self.cache.desired))
            self._full_done_if_settled()
        except (ConsulError, DockerError) as e:
            if self._one_shot:
                self.failure = self.failure or e
                return
            delay = self._retry_later()
            log.warning("reconcile_failed", error=str(e), retry_in=round(delay, 2))
        except Exception as e:
            if self._one_shot:  # nothing to retry on: sync and plan end with it (registrar_crashed, exit 70)
                self.failure = self.failure or e
                return
            # A bug, or a library failing in a way nobody foresaw: log it with its traceback, back off,
            # and start over from a full reconcile rather than end the process.
            self._loop_errors += 1
            delay = self._retry_later()
            log.error("loop_error", exc_info=e, retry_in=round(delay, 2), in_a_row=self._loop_errors)

    def _take(self, message: Message, events: list[DockerEvent], errors: list[Exception]) -> None:
        """Take one message (under the lock): events are added to ``events``, errors to ``errors``."""
        match message:
            case DockerEvent(action=action):
                events.append(message)
                counter = self._event_counters.get(action.split(":", 1)[0])
                (counter or self.metrics.events.labels(action.split(":", 1)[0])).inc()
            case Inspected(container_id=cid, container=cached, error=error):
                for again in self.cache.inspected(cid, cached, failed=error is not None):
                    self._inspect(again)
                if error is None:
                    if self._inspect_retries:
                        self._inspect_retries.done(cid)
                elif isinstance(error, DockerError) and not isinstance(error, DockerUnreachable) and not self._one_shot:
                    self._retry_inspect(cid, error)
                else:
                    self._note(error, errors)
            case Listed(summaries=summaries, error=error):
                for cid, fingerprint in self.cache.listed(summaries if error is None else None):
                    self._inspect(cid, fingerprint)
                if error is None:
                    self._set_docker_up(True)  # only a listing says so (no flapping on a resubscription)
                self._note(error, errors)
            case AgentRead(services=services, digest=digest, error=error):
                if error is not None:
                    self.agent.read(None)
                elif services is None:
                    self.agent.read_unchanged()
                else:
                    self.agent.read(services, digest)
                if error is None:
                    self._set_consul_up(True)
                    self._holding = False  # the agent's state is known again: what failed is planned afresh
                    self.metrics.services.set(len(self.agent.actual or {}))
                elif isinstance(error, ConsulError):
                    self._set_consul_up(False)
                self._note(error, errors)
            case Written(write=write, error=error):
                if error is None or isinstance(error, ConsulError):
                    self.agent.written(write, error)
                    self.metrics.services.set(len(self.agent.actual or {}))
                else:  # a bug: raised by the loop, the write is not retried until the full reconcile
                    self.agent.in_flight.discard(write_key(write))
                    errors.append(error)
            case Probed(service_id=service_id, probe=probe, health=health):
                self.metrics.probe_runs.labels(health.status).inc()
                self.agent.probed(service_id, probe, health, self.cache.desired)
            case Failed(error=error, message=failed):
                self._abandon(failed)
                errors.append(error)
            case Resync():
                self._full_due = time.monotonic()
            case StreamFailed():
                self._set_docker_up(False)  # up again only after a listing succeeds
            case WatcherExited(error=error):
                self._watcher_exited(error)
            case Wake():
                pass

    def _abandon(self, message: Message) -> None:
        """Forget the work a message was the result of, whose taking failed: the full reconcile that
        follows the error does it again (a container left "inspecting" would never be inspected)."""
        match message:
            case Inspected(container_id=cid):
                self.cache.inspected(cid, None, failed=True)
            case Listed():
                self.cache.listed(None)
            case AgentRead():
                self.agent.read(None)
            case Written(write=write):
                self.agent.in_flight.discard(write_key(write))

    def deliver(self, message: Message) -> None:
        """A message from the event thread or a worker: taken at once by that thread, or passed to the loop.

        Once the daemon runs (``start()``), a Docker event and a result that succeeded are taken
        where they arrive, under the lock, and the writes they call for start there: a worker runs
        the first itself and posts the others. So a start costs one hand-off between threads (the
        event thread to a worker) instead of five. Anything that failed, and everything in a one-shot
        run, goes through the inbox: the loop decides what an error means.
        """
        while True:
            if not self._direct or getattr(message, "error", None) is not None or self.stopping.is_set():
                self.inbox.put(message)
                return
            events: list[DockerEvent] = []
            try:
                with self.lock:
                    if self.shutdown.requested:
                        self.inbox.put(message)
                        return
                    drain = self.cache.drain_deadline()
                    self._take(message, events, [])  # no errors: the message succeeded
                    if events:
                        self._take_events(events, time.monotonic())
                    if self.cache.drain_deadline() not in (drain, None):
                        self.inbox.put(WAKE)  # a drain began: the loop may sleep past its end otherwise
                    self._follow_changes()
                    writes = self._writes()
                    self._full_done_if_settled()
            except Exception as e:  # a bug: the loop logs it and reconciles in full
                self.inbox.put(Failed(e, message))
                return
            if not writes or not self.workers.on_worker():
                self._post(writes)
                return
            self._post(writes[1:])
            self.workers.now_on(_described(writes[0]))
            try:
                message = self._send(writes[0])
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

    def _take_events(self, events: list[DockerEvent], now: float) -> None:
        """Docker events to the cache, and the inspects they call for started; a container that died or is
        gone needs no retry of a failed inspect (the event says what the inspect would)."""
        if self._inspect_retries:
            for event in events:
                if event.action in ("die", "destroy"):
                    self._inspect_retries.done(event.container_id)
        for cid in self.cache.take(events, now):
            self._inspect(cid)

    def _retry_inspect(self, container_id: str, error: DockerError) -> None:
        """The engine answered an inspect with an error, or not in time: that container alone is inspected again
        after a backoff (Docker stays up); logged as ``inspect_failed`` once the lock is let go."""
        delay = self._inspect_retries.failed(container_id, time.monotonic())
        cached = self.cache.containers.get(container_id)
        short = container_id[:12]
        self._failed_inspects.append((cached.name if cached and cached.name else short, short, str(error), delay))

    def _note(self, error: Exception | None, errors: list[Exception]) -> None:
        """A failed listing, inspect or read: Docker is down if Docker said so; the error is raised in the step."""
        if error is None:
            return
        if isinstance(error, DockerError):
            self._set_docker_up(False)
        errors.append(error)

    def _next_deadline(self) -> float:
        due = [self._next_probe]
        for deadline in (self._full_due, self._restart_due, self._next_resync, self._next_ttl, self._next_health):
            if deadline is not None:
                due.append(deadline)
        retry = self._inspect_retries.deadline() if self._inspect_retries else None
        if retry is not None:
            due.append(retry)
        drain = self.cache.drain_deadline()
        if drain is not None:
            due.append(drain)
        return min(due)

    def _retry_later(self) -> float:
        """A full reconcile after a backoff; the one in progress, if any, failed (it is never done)."""
        delay = self._retry.next()
        self._full_started = None
        self._full_due = time.monotonic() + delay
        return delay

    def _hold_if_writes_failed(self) -> None:
        """A failed write holds back all writes until the full reconcile that retries it (after a backoff)."""
        failed = self.agent.results["failed"]
        if failed > self._failed_writes:
            self._failed_writes = failed
            self._holding = True
            if not self._one_shot:  # a one-shot run reports it in its outcome
                raise ConsulError("a write to Consul failed")

    def _start_full(self) -> None:
        """Ask for a listing of every container and a read of the agent; what they call for follows."""
        self._resolve_host_addresses()
        self._full_started = (time.perf_counter(), Counter(self.calls))
        self._failed_writes = self.agent.results["failed"]
        self.agent.plan_all = True  # every service, even if a read in flight finds the agent unchanged
        if self.cache.start_listing():
            self.calls["docker_list"] += 1
            self.workers.post(lambda: Listed(self.source.list_containers()), partial(Listed, []), "listing containers")
        self._read_agent(full=True)

    def _resolve_host_addresses(self) -> None:
        """``--ip``/``--wan-ip`` naming an interface or a range: look again (interfaces change). When an
        address changed, every container is inspected again by the listing that follows."""
        s = self.settings
        if not (s.ip_from or s.wan_ip_from):
            return
        try:
            ip = resolve(parse_spec(s.ip_from), s.ipv6) if s.ip_from else s.ip
            wan_ip = resolve(parse_spec(s.wan_ip_from), s.ipv6) if s.wan_ip_from else s.wan_ip
        except BadAddress as e:
            log.warning("host_address_unresolved", error=str(e), ip=s.ip, wan_ip=s.wan_ip)
            return
        if (ip, wan_ip) == (s.ip, s.wan_ip):
            return
        log.info("host_address_changed", ip=ip, wan_ip=wan_ip, was_ip=s.ip, was_wan_ip=s.wan_ip)
        self.settings = self.cache.settings = dataclasses.replace(s, ip=ip, wan_ip=wan_ip)
        self.cache.inspect_all_again()

    def _full_done_if_settled(self) -> None:
        """Once everything the full reconcile started is back: it is done (ready, logged, timed)."""
        if self._full_started is None or self._busy():
            return
        started, calls = self._full_started
        self._full_started = None
        self._retry.reset()
        self._loop_errors = 0  # "in a row": since the last reconcile that went through
        took = time.perf_counter() - started
        self.metrics.reconcile.observe(took)
        self.ready.set()
        log.info(
            "reconcile_done",
            services=len(self.agent.actual or {}),
            containers=len(self.cache.containers),
            duration_ms=round(took * 1000, 2),
            **{k: v - calls[k] for k, v in self.calls.items()},
        )

    # Work for the workers ----------------------------------------------------------------------

    def _inspect(self, container_id: str, fingerprint: int = 0) -> None:
        """Inspect a container on a worker (the cache has marked it in flight)."""
        self.calls["docker_inspect"] += 1
        self.workers.post(
            partial(self._inspected, container_id, fingerprint),
            partial(Inspected, container_id, None),
            f"inspecting container {container_id[:12]}",
        )

    def _inspected(self, container_id: str, fingerprint: int) -> Inspected:
        """On a worker: inspect and translate."""
        container = self.source.inspect(container_id)
        if container is None:
            return Inspected(container_id, None)
        if logs.debug:
            log.debug("container_inspected", container=container_name(container))
        owner_ref = network_owner(container) if self.settings.internal else ""
        owner = self.source.inspect(owner_ref) if owner_ref else None  # its addresses are the owner's
        return Inspected(container_id, cached_from_inspect(container, self.settings, fingerprint, owner))

    def _read_agent(self, full: bool = False) -> None:
        """Read the agent's services on a worker (one read at a time). The periodic read skips an answer
        the same as the last parsed one's while no write came back since (``AgentState.start_read``);
        a full reconcile's takes every answer."""
        unless = self.agent.start_read(full)
        if unless is not None:
            self.calls["consul_read"] += 1
            self.workers.post(partial(self._read, unless), partial(AgentRead, {}, 0), "reading the agent's services")

    def _read(self, unless: int) -> AgentRead:
        """On a worker: ``GET /v1/agent/services``, filtered by the agent to this host's registrations (and
        the forgotten hosts'), not parsed when its digest is ``unless``."""
        try:
            digest, services = self.sink.read_services(unless, self._owned_filter)
        except ConsulError:
            self._consul_ops["read", "error"].inc()
            raise
        self._consul_ops["read", "ok"].inc()
        return AgentRead(services, digest)

    def _follow_changes(self) -> None:
        """What changes in the cache call for besides writes: inspects of the containers that share the
        network of one that changed, and the exec probes of the services that changed (a running daemon's)."""
        for cid in self.cache.take_due():
            self._inspect(cid)
        if self.cache.changed and self._started and self.settings.exec_checks:
            self.prober.update(self.cache.changed, self.cache.desired)

    def _writes(self) -> list[Write]:
        """The writes that bring the agent in line, marked in flight and counted (under the lock).

        None while writes are held after a failure, before the first listing and read, in a plan,
        and once a stop is requested.
        """
        if (
            self._holding
            or self.shutdown.requested
            or self._dry_run
            or self.agent.actual is None
            or not self.cache.listed_once
        ):
            return []
        cache = self.cache
        if cache.unkept:
            cache.unkept, self.agent.plan_all = False, True
        draining = cache.draining_services() if cache.draining else frozenset()
        # A container whose inspect is to be retried keeps its registrations as they are meanwhile.
        inspecting = cache.inspecting | self._inspect_retries.waiting() if self._inspect_retries else cache.inspecting
        return self._counted(self.agent.writes(cache.desired, cache.take_changed(), cache.kept, draining, inspecting))

    def _counted(self, writes: list[Write]) -> list[Write]:
        self.calls["consul_write"] += len(writes)
        return writes

    def _post(self, writes: list[Write]) -> None:
        """Run these writes on the workers."""
        for write in writes:
            self.workers.post(partial(self._send, write), partial(Written, write), _described(write))

    def _send(self, write: Write) -> Written:
        """On a worker: one write, logged as soon as the agent has answered (the line's time is when it did)."""
        operation = _OPERATIONS[type(write)]
        try:
            match write:
                case Register(service=s):
                    self.sink.register(s)
                    log.info("service_registered", service_id=s.id, service=s.name, container=s.container_name,
                             address=s.address, port=s.port)  # fmt: skip
                case Deregister(service_id=service_id, reason=reason):
                    self.sink.deregister(service_id)
                    log.info("service_deregistered", service_id=service_id, reason=reason)
                case Maintenance(service_id=service_id, enable=enable):
                    self.sink.maintenance(service_id, enable)
                case TtlPass(check_id=check_id):
                    self.sink.pass_ttl(check_id)
                case HealthUpdate(health=health):
                    self.sink.set_health(health)
        except ConsulError as e:
            result = "rejected" if isinstance(e, ConsulRejected) else "error"
            self._consul_ops[operation, result].inc()
            return Written(write, e)
        self._consul_ops[operation, "ok"].inc()
        return Written(write)

    # The watcher -------------------------------------------------------------------------------

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

    def _ping_docker_if_idle(self, now: float) -> None:
        """A stream can hang without ending: when it has been quiet, make sure the engine answers."""
        if not self._started or now - max(self.watcher.last_event, self._last_ping) < self.timing.idle_ping:
            return
        self._last_ping = now
        try:
            self.source.ping()
        except DockerError as e:
            log.warning("docker_unreachable", error=str(e))
            self._set_docker_up(False)
            self.source.close_events()


_OPERATIONS: dict[type, str] = {
    Register: "register",
    Deregister: "deregister",
    Maintenance: "maintenance",
    TtlPass: "ttl_pass",
    HealthUpdate: "health_update",
}
"""The ``operation`` label of ``registrar_consul_operations_total`` for each kind of write."""


def _described(write: Write) -> str:
    """A write as /healthz names the work a worker is on: "a Consul register of vm:web:80"."""
    return f"a Consul {_OPERATIONS[type(write)]} of {write_key(write)[1]}"
