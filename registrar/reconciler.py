"""The reconciler: registrar's rules as a state machine that does no I/O.

It takes messages (registrar.messages) and the current time, and returns effects (registrar.effects):
list the containers, inspect one, read the agent, send these writes, update the exec probes, log this
line. It starts no thread, reads no clock and logs nothing itself; the shell (registrar.daemon) runs
it under a lock, performs what it returns and brings every result back as a message. Its state is
the desired state (registrar.desired), the actual state (registrar.actual), and the deadlines of
what is due by time: a full reconcile (at start, after a new subscription, on ``--resync``, after a
failure, with backoff), the periodic read of the agent, TTL passes and health refreshes, the end of
a drain, and the retry of a container whose inspect failed.

Two entry points: ``handle`` takes one message that succeeded as soon as it arrives (on the thread
that has it); ``step`` takes a batch of messages and does what is due at ``now``, and alone decides
what an error means. ``deadline`` says when ``step`` is next due.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from registrar.actual import ActualState
from registrar.backoff import Backoff, InspectRetries
from registrar.desired import DesiredState
from registrar.effects import (
    Effect,
    FullReconcileDone,
    Inspect,
    ListContainers,
    Log,
    ReadAgent,
    Send,
    StartFullReconcile,
    UpdateProbes,
    WakeAt,
)
from registrar.errors import ConsulError, DockerError, DockerUnreachable
from registrar.messages import (
    AddressesResolved,
    AgentRead,
    Failed,
    Inspected,
    Listed,
    Message,
    Probed,
    Resync,
    StreamFailed,
    WatcherExited,
    Written,
)
from registrar.model import Action, DockerEvent, Write, write_key
from registrar.settings import Settings


@dataclass(frozen=True)
class Timing:
    """The daemon's clocks, in seconds (tests shorten them)."""

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


@dataclass
class Schedule:
    """When each piece of work that time calls for is next due (monotonic seconds; None: not due)."""

    full: float | None
    """A full reconcile: at start, after a new subscription, on ``--resync``, after a failure."""
    read: float
    """The periodic read of the agent (``Timing.consul_probe``)."""
    resync: float | None
    ttl: float | None
    """Passes of registrar's own TTL checks (``--ttl``)."""
    health: float | None
    """Docker health and probe results sent again (``Settings.health_refresh_seconds``)."""

    def due(self, name: str, now: float, every: float | None) -> bool:
        """Whether ``name`` is due at ``now``; if so it moves on by ``every`` (None: not due until set again).

        A deadline moves on *before* its work runs, so work that fails never leaves it in the past."""
        at = getattr(self, name)
        if at is None or now < at:
            return False
        setattr(self, name, None if every is None else now + every)
        return True

    def earliest(self) -> float:
        return min(d for d in (self.full, self.read, self.resync, self.ttl, self.health) if d is not None)


@dataclass
class FullReconcile:
    """The full reconcile in progress, if any, and the backoff of retrying one that failed."""

    retry: Backoff
    started: tuple[float, Counter[str]] | None = None
    """When it began, and the request counts then."""
    failed_writes: int = 0
    """Writes that had failed when it began: one more pauses the writes."""

    def begin(self, now: float, calls: Counter[str], failed_writes: int) -> None:
        self.started, self.failed_writes = (now, Counter(calls)), failed_writes

    def failed(self) -> float:
        """The one in progress, if any, failed (it is never done): the next is due after the delay returned."""
        self.started = None
        return self.retry.next()

    def finished(self, now: float, calls: Counter[str]) -> tuple[float, dict[str, int]]:
        """It is done: how long it took, and the requests it made, by kind."""
        assert self.started is not None
        (began, before), self.started = self.started, None
        self.retry.reset()
        return now - began, {k: v - before[k] for k, v in calls.items()}


class Reconciler:
    """The desired and actual state, what is in flight, and what is due when."""

    def __init__(self, settings: Settings, timing: Timing, now: float) -> None:
        s = self.settings = settings
        self.timing = timing
        self.desired = DesiredState(s)
        self.actual = ActualState(s.hostname, s.forget_hosts, s.instance, s.forget_instances)
        self._out: list[Effect] = []
        self.desired.logged = self.actual.logged = self._out  # their log lines, in order with the rest
        self.calls: Counter[str] = Counter(docker_list=0, docker_inspect=0, consul_read=0, consul_write=0)
        """Requests asked for, by kind (``reconcile_done`` logs them; benchmarks read them)."""
        self.docker_up = self.consul_up = True
        self.ready = False
        """The first full reconcile has succeeded."""
        self.one_shot = self.dry_run = False
        """``sync``/``plan``: every error ends the run (``failure``); ``plan`` writes nothing."""
        self.failure: Exception | None = None
        self.stopping = False
        """A stop was requested (the shell sets it): no new writes."""
        self.writes_paused = False
        """A write failed: nothing is written until the full reconcile that retries it has read the agent."""
        self.loop_errors = 0
        """Unexpected errors in a row (since the last full reconcile that went through)."""
        self.full = FullReconcile(Backoff(timing.retry_first, timing.retry_most))
        self.inspect_retries = InspectRetries(timing.inspect_retry_first, timing.inspect_retry_most)
        self.schedule = Schedule(
            full=now,
            read=now + timing.consul_probe,
            resync=now + s.resync if s.resync > 0 else None,
            ttl=now + s.ttl_refresh_seconds if s.ttl > 0 else None,
            health=now + s.health_refresh_seconds if s.health_refresh_seconds else None,
        )

    # Queries -----------------------------------------------------------------------------------

    def busy(self) -> bool:
        """Work is in flight: a listing, an inspect, a read or a write."""
        return bool(self.desired.listing or self.desired.inspecting or self.actual.reading or self.actual.in_flight)

    def deadline(self) -> float:
        """When ``step`` is next due (monotonic seconds)."""
        due = (self.schedule.earliest(), self.inspect_retries.deadline(), self.desired.drain_deadline())
        return min(d for d in due if d is not None)

    def plan(self) -> list[Action]:
        """What the writes would be now, sorted by service ID (``registrar plan``)."""
        return self.actual.plan(self.desired.services, self.desired.retained)

    # Entry points ------------------------------------------------------------------------------

    def handle(self, message: Message, now: float) -> list[Effect]:
        """Take one message that succeeded (a Docker event, or a result without an error) and return what
        it calls for. An exception is a bug: ``flush`` then returns what was decided before it."""
        events: list[DockerEvent] = []
        drain = self.desired.drain_deadline()
        self._observe(message, events, [], now)
        if events:
            self._apply_events(events, now)
        began = self.desired.drain_deadline()
        if began not in (drain, None):
            self._out.append(WakeAt(began))  # a drain began: the loop may sleep past its end otherwise
        self._follow_changes()
        self._writes()
        self._full_done_if_finished(now)
        return self.flush()

    def flush(self) -> list[Effect]:
        """The effects decided so far, handed over once."""
        out = list(self._out)
        self._out.clear()
        return out

    def step(self, messages: Iterable[Message], now: float) -> list[Effect]:
        """Take these messages, then do what is due at ``now``; an error backs off and reconciles in full."""
        schedule, s = self.schedule, self.settings
        read = schedule.due("read", now, self.timing.consul_probe)
        events: list[DockerEvent] = []
        errors: list[Exception] = []
        for message in messages:
            try:
                self._observe(message, events, errors, now)
            except Exception as e:  # a bug: logged below as loop_error, the message's work abandoned
                with contextlib.suppress(Exception):  # the first error is the one reported
                    _abandon(self.desired, self.actual, message)
                errors.append(e)
        if self.desired.draining:
            events += self.desired.end_drains(now)
        if schedule.due("resync", now, s.resync):
            schedule.full = now
        for cid in self.inspect_retries.due(now):
            if cid not in self.desired.inspecting and self.desired.to_inspect(cid):  # else the one in flight will do
                self._inspect(cid)
        full = schedule.due("full", now, None)
        try:
            for error in errors:
                raise error
            self._pause_if_writes_failed()
            if full:
                self._start_full(now)
            elif read:
                self._read_agent()
            if events:
                self._apply_events(events, now)
            self._follow_changes()
            self._writes()
            writable = not (self.writes_paused or self.stopping or self.dry_run)
            if schedule.due("ttl", now, s.ttl_refresh_seconds) and writable:
                self._send(self.actual.ttl_passes(self.desired.services))
            if schedule.due("health", now, s.health_refresh_seconds) and writable:
                self._send(self.actual.refresh_health(self.desired.services))
            self._full_done_if_finished(now)
        except Exception as e:
            self._failed(e, now)
        return self.flush()

    # Taking messages ---------------------------------------------------------------------------

    def _observe(self, message: Message, events: list[DockerEvent], errors: list[Exception], now: float) -> None:
        """Take one message: events are added to ``events``, errors to ``errors``."""
        match message:
            case DockerEvent():
                events.append(message)
            case Inspected(container_id=cid, container=observed, error=error):
                for again in self.desired.inspected(cid, observed, failed=error is not None):
                    self._inspect(again)
                if error is None:
                    if self.inspect_retries:
                        self.inspect_retries.done(cid)
                elif isinstance(error, DockerError) and not isinstance(error, DockerUnreachable) and not self.one_shot:
                    self._retry_inspect(cid, error, now)
                else:
                    self._note(error, errors)
            case Listed(summaries=summaries, error=error):
                for cid, fingerprint in self.desired.listed(summaries if error is None else None):
                    self._inspect(cid, fingerprint)
                if error is None:
                    self.docker_up = True  # only a listing says so (no flapping on a resubscription)
                self._note(error, errors)
            case AgentRead(services=services, digest=digest, error=error):
                if error is not None:
                    self.actual.read(None)
                elif services is None:
                    self.actual.read_unchanged()
                else:
                    self.actual.read(services, digest)
                    if self.settings.catalog:  # every status sent again now: one someone else wrote is put back
                        self.schedule.health = now
                if error is None:
                    self._set_consul_up(True)
                    self.writes_paused = False  # the agent's state is known again: what failed is planned afresh
                elif isinstance(error, ConsulError):
                    self._set_consul_up(False)
                self._note(error, errors)
            case Written(write=write, error=error):
                if error is None or isinstance(error, ConsulError):
                    self.actual.written(write, error)
                else:  # a bug: raised by the step, the write is not retried until the full reconcile
                    self.actual.in_flight.discard(write_key(write))
                    errors.append(error)
            case Probed(service_id=service_id, container_id=container_id, probe=probe, health=health):
                self.actual.probed(service_id, container_id, probe, health, self.desired.services)
            case Failed(error=error, message=failed):
                if failed is not None:
                    _abandon(self.desired, self.actual, failed)
                errors.append(error)
            case Resync():
                self.schedule.full = now
            case StreamFailed() | WatcherExited():
                self.docker_up = False  # up again only after a listing succeeds
            case AddressesResolved(ip=ip, wan_ip=wan_ip):
                self.settings = self.desired.settings = dataclasses.replace(self.settings, ip=ip, wan_ip=wan_ip)
                self.desired.inspect_all_again()
            case _:  # Wake
                pass

    def _apply_events(self, events: list[DockerEvent], now: float) -> None:
        """Docker events to the desired state, and the inspects they call for; a container that died or is
        gone needs no retry of a failed inspect (the event says what the inspect would)."""
        for event in events if self.inspect_retries else ():
            if event.action in ("die", "destroy"):
                self.inspect_retries.done(event.container_id)
        for cid in self.desired.apply_events(events, now):
            self._inspect(cid)

    def _retry_inspect(self, container_id: str, error: DockerError, now: float) -> None:
        """The engine answered an inspect with an error, or not in time: that container alone is inspected
        again after a backoff (Docker stays up)."""
        delay, observed = self.inspect_retries.failed(container_id, now), self.desired.containers.get(container_id)
        name, short = observed.name if observed and observed.name else container_id[:12], container_id[:12]
        fields = {"container": name, "container_id": short, "error": str(error), "retry_in": round(delay, 2)}
        self._out.append(Log("warning", "inspect_failed", fields))

    def _note(self, error: Exception | None, errors: list[Exception]) -> None:
        """A failed listing, inspect or read: Docker is down if Docker said so; the error is raised in the step."""
        if error is None:
            return
        if isinstance(error, DockerError):
            self.docker_up = False
        errors.append(error)

    def _set_consul_up(self, up: bool) -> None:
        if up != self.consul_up:
            self._out.append(Log("info", "consul_reachable") if up else Log("warning", "consul_unreachable"))
        self.consul_up = up

    # Full reconciles ---------------------------------------------------------------------------

    def _failed(self, error: Exception, now: float) -> None:
        """A step failed. A one-shot run ends with the error (``failure``). A daemon backs off, then reconciles
        in full (the one in progress, if any, is never done); a Docker or Consul error is logged as
        ``reconcile_failed``, anything else (a bug, or a library failing in a way nobody foresaw) as
        ``loop_error``, with its traceback, rather than end the process."""
        if self.one_shot:
            self.failure = self.failure or error
            return
        delay = self.full.failed()
        self.schedule.full = now + delay
        if isinstance(error, ConsulError | DockerError):
            self._out.append(Log("warning", "reconcile_failed", {"error": str(error), "retry_in": round(delay, 2)}))
        else:
            self.loop_errors += 1
            fields = {"exc_info": error, "retry_in": round(delay, 2), "in_a_row": self.loop_errors}
            self._out.append(Log("error", "loop_error", fields))

    def _pause_if_writes_failed(self) -> None:
        """A failed write pauses all writes until the full reconcile that retries it (after a backoff)."""
        failed = self.actual.results["failed"]
        if failed > self.full.failed_writes:
            self.full.failed_writes = failed
            self.writes_paused = True
            if not self.one_shot:  # a one-shot run reports it in its outcome
                raise ConsulError("a write to Consul failed")

    def _start_full(self, now: float) -> None:
        """Ask for the host addresses, a listing of every container and a read of the agent."""
        self._out.append(StartFullReconcile())
        self.full.begin(now, self.calls, self.actual.results["failed"])
        self.actual.plan_all = True  # every service, even if a read in flight finds the agent unchanged
        if self.desired.start_listing():
            self.calls["docker_list"] += 1
            self._out.append(ListContainers())
        self._read_agent(full=True)

    def _full_done_if_finished(self, now: float) -> None:
        """Once everything the full reconcile started is back: it is done (ready, logged, timed)."""
        if self.full.started is None or self.busy():
            return
        took, made = self.full.finished(now, self.calls)
        self.loop_errors = 0  # "in a row": since the last reconcile that went through
        self.ready = True
        services, containers = len(self.actual.registrations or {}), len(self.desired.containers)
        self._out.append(FullReconcileDone(services, containers, took, made))

    # Work to do --------------------------------------------------------------------------------

    def _inspect(self, container_id: str, fingerprint: int = 0) -> None:
        """Inspect a container (the desired state has marked it in flight)."""
        self.calls["docker_inspect"] += 1
        self._out.append(Inspect(container_id, fingerprint))

    def _read_agent(self, full: bool = False) -> None:
        """Read the agent's services (one read at a time; which answers to parse: ``ActualState.start_read``)."""
        skip_digest = self.actual.start_read(full)
        if skip_digest is not None:
            self.calls["consul_read"] += 1
            self._out.append(ReadAgent(skip_digest))

    def _follow_changes(self) -> None:
        """Inspects of containers that share the network of one that changed; probes of changed services."""
        for cid in self.desired.due_inspects():
            self._inspect(cid)
        changed = self.desired.changed
        if changed and (self.settings.exec_checks or self.settings.host_checks):
            services = self.desired.services
            self._out.append(UpdateProbes(frozenset(changed), {i: services[i] for i in changed if i in services}))

    def _writes(self) -> None:
        """The writes that bring the agent in line, marked in flight and counted; none while writes are paused
        after a failure, once a stop is requested, before the first listing and read, and in a plan."""
        desired = self.desired
        if self.writes_paused or self.stopping or self.dry_run:
            return
        if self.actual.registrations is None or not desired.listed_once:
            return
        if desired.retained_dropped:
            desired.retained_dropped, self.actual.plan_all = False, True
        draining = desired.draining_services() if desired.draining else frozenset()
        # A container whose inspect is to be retried keeps its registrations as they are meanwhile.
        inspecting = desired.inspecting
        if self.inspect_retries:
            inspecting = inspecting | self.inspect_retries.waiting()
        changed = desired.pop_changed()
        self._send(self.actual.writes(desired.services, changed, desired.retained, draining, inspecting))

    def _send(self, writes: list[Write]) -> None:
        self.calls["consul_write"] += len(writes)
        self._out.extend(Send(w) for w in writes)


def _abandon(desired: DesiredState, actual: ActualState, message: Message) -> None:
    """Forget the work a message was the result of, whose taking failed: the full reconcile that follows
    the error does it again (a container left "inspecting" would never be inspected)."""
    match message:
        case Inspected(container_id=cid):
            desired.inspected(cid, None, failed=True)
        case Listed():
            desired.listed(None)
        case AgentRead():
            actual.read(None)
        case Written(write=write):
            actual.in_flight.discard(write_key(write))
