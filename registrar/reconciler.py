"""The Consul side of the reconcile: what the agent holds, and applying the difference.

The Reconciler reads this host's registrations from the agent, plans against the desired state of
its ContainerView (the Docker side), and applies the actions concurrently. Talking to the two
systems goes through the ContainerSource and ServiceSink protocols, so tests drive it in memory.

Writes run on a pool and report back through the outbox as ``Done`` messages; ``dispatch()``
starts every write the plan calls for at once, except where a write for the same service or check
is in flight (it is planned again once that one is back), and except deregistrations of a container
still being inspected. The loop's thread owns all state here; the pool's threads only call Consul.
``converge()`` does the same and waits, for one-shot commands.
"""

from __future__ import annotations

import queue
from collections import Counter
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeVar

import structlog

from registrar.containers import ContainerSource, ContainerView, Learned, Listed
from registrar.errors import ConsulError, ConsulRejected
from registrar.metrics import Metrics
from registrar.model import Action, Deregister, Health, Owned, Register, Service, health_check_id
from registrar.reconcile import forget_plan, kept_ids, owned_services, plan
from registrar.settings import Settings

log = structlog.get_logger("registrar")
T = TypeVar("T")


class ServiceSink(Protocol):
    """What the reconciler needs from Consul."""

    def services(self) -> dict[str, Any]: ...
    def register(self, service: Service) -> None: ...
    def deregister(self, service_id: str) -> None: ...
    def pass_ttl(self, check_id: str) -> None: ...
    def set_health(self, health: Health) -> None: ...
    def maintenance(self, service_id: str, enable: bool) -> None: ...


@dataclass(frozen=True)
class Outcome:
    """What one convergence did."""

    registered: int = 0
    deregistered: int = 0
    failed: int = 0
    """Writes that failed and should be retried (Consul unreachable, 5xx, ACL)."""
    rejected: int = 0
    """Registrations Consul refused as invalid; not retried until they change."""


@dataclass(frozen=True)
class Done:
    """A write is back (pool -> loop): ``finish`` runs on the loop's thread with its error (None: done)."""

    key: tuple[str, str]
    finish: Callable[[ConsulError | None], None]
    error: Exception | None
    """A ConsulError goes to ``finish``; anything else is a bug, raised on the loop's thread."""


@dataclass(frozen=True)
class AgentRead:
    """A read of the agent's services is back (pool -> loop), or its error."""

    services: dict[str, Any]
    error: Exception | None = None


class Reconciler:
    """Keeps this host's registrations on the agent equal to what its containers yield."""

    def __init__(
        self,
        source: ContainerSource,
        sink: ServiceSink,
        settings: Settings,
        workers: int = 8,
        metrics: Metrics | None = None,
        outbox: queue.SimpleQueue[Any] | None = None,
    ) -> None:
        self.metrics = metrics or Metrics()
        self.sink = sink
        self.settings = settings
        self.calls: Counter[str] = Counter(docker_list=0, docker_inspect=0, consul_read=0, consul_write=0)
        """Requests made to each system, by kind (for logs and benchmarks); counted by the loop's thread."""
        self.outbox: queue.SimpleQueue[Any] = outbox if outbox is not None else queue.SimpleQueue()
        """Where inspects and writes report back (the daemon's inbox, or a queue of its own)."""
        self.view = ContainerView(source, settings, self.calls, self.outbox, workers)
        """The Docker side: what each container yields."""
        self.actual: dict[str, Owned] | None = None
        """This host's registrations on the agent as last read and since written; None = unknown."""
        self.forgotten: dict[str, Owned] = {}
        """Registrations of the hosts named by ``--forget-host``, as last read."""
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="registrar-write")
        self.in_flight: set[tuple[str, str]] = set()
        """Writes started and not back yet, by (kind, service or check ID)."""
        self.outcome: Counter[str] = Counter()
        """Writes back so far, by result: registered, deregistered, failed, rejected."""
        self.rejected: dict[str, str] = {}
        """Service ID -> digest of a registration the agent refused as invalid."""
        self.maintenance: set[str] = set()
        """Service IDs registrar has put in maintenance (draining)."""
        self.health_sent: dict[str, Health] = {}
        """Check ID -> the Docker health last sent to the agent for it."""
        self.reading = False
        """A read of the agent's services is in flight."""
        self._plan_all = True
        """Plan every service at the next dispatch (the agent was read); otherwise only those that changed."""
        self._replan: set[str] = set()
        """Service IDs to plan again at the next dispatch (a write came back, a deregistration waited)."""
        self._since_read: dict[str, Owned | None] = {}
        """Writes back since the read in flight was asked for (it may predate them): ID -> registered or None."""

    def close(self) -> None:
        self.view.close()
        self.pool.shutdown(wait=True, cancel_futures=True)

    # Consul side -----------------------------------------------------------------------------

    def _consul(self, operation: str, call: Callable[[], T]) -> T:
        """Call the sink, counting the operation and its result in the metrics."""
        try:
            result = call()
        except ConsulRejected:
            self.metrics.consul_ops.labels(operation, "rejected").inc()
            raise
        except ConsulError:
            self.metrics.consul_ops.labels(operation, "error").inc()
            raise
        self.metrics.consul_ops.labels(operation, "ok").inc()
        return result

    def read_actual(self) -> dict[str, Owned]:
        """Read the agent's services now."""
        self.calls["consul_read"] += 1
        return self._take_services(self._consul("read", self.sink.services))

    def _take_services(self, services: dict[str, Any]) -> dict[str, Owned]:
        self._plan_all = True
        self.actual = owned_services(services, self.settings.hostname)
        self.forgotten = {
            i: o for host in self.settings.forget_hosts for i, o in owned_services(services, host).items()
        }
        self.metrics.services.set(len(self.actual))
        return self.actual

    def request_read(self) -> None:
        """Read the agent's services on the pool (``read_back()`` takes the answer); one read at a time."""
        if self.reading:
            return
        self.reading = True
        self._since_read = {}
        self.calls["consul_read"] += 1
        self.pool.submit(self._read_and_report)

    def _read_and_report(self) -> None:
        try:
            self.outbox.put(AgentRead(self._consul("read", self.sink.services)))
        except Exception as e:  # reported to the loop, which decides (a ConsulError is retried)
            self.outbox.put(AgentRead({}, e))

    def read_back(self, message: AgentRead) -> Exception | None:
        """Take a read of the agent, with the writes that came back since it was asked for on top."""
        self.reading = False
        if message.error is None:
            actual = self._take_services(message.services)
            for service_id, owned in self._since_read.items():
                if owned is None:
                    actual.pop(service_id, None)
                    self.forgotten.pop(service_id, None)
                else:
                    actual[service_id] = owned
            self.metrics.services.set(len(actual))
        self._since_read = {}
        return message.error

    def plan(self, only: Collection[str] | None = None) -> list[Action]:
        """The actions that would bring the agent in line (reads the agent if needed); ``only`` these IDs."""
        actual = self.actual if self.actual is not None else self.read_actual()
        keep = kept_ids(actual if only is None else {i: actual[i] for i in only if i in actual}, self.view.kept())
        desired = self.view.desired()
        self.rejected = {i: d for i, d in self.rejected.items() if i in desired}  # forget what is gone
        return [
            a
            for a in plan(desired, actual, keep, only)
            if not (isinstance(a, Register) and self.rejected.get(a.service_id) == a.service.digest)
        ] + forget_plan(self.forgotten)

    # Writes: started on the pool, finished on the loop's thread ----------------------------------

    def _write(self, key: tuple[str, str], operation: str, call: Callable[[], None],
               finish: Callable[[ConsulError | None], None]) -> None:  # fmt: skip
        """Start one write on the pool; ``finish`` runs on the loop's thread once it is back."""
        self.in_flight.add(key)
        self.calls["consul_write"] += 1
        self.pool.submit(self._write_and_report, key, operation, call, finish)

    def _write_and_report(self, key: tuple[str, str], operation: str, call: Callable[[], None],
                          finish: Callable[[ConsulError | None], None]) -> None:  # fmt: skip
        try:
            self._consul(operation, call)
            error: Exception | None = None
        except Exception as e:  # reported to the loop, which decides
            error = e
        self.outbox.put(Done(key, finish, error))

    def back(self, message: Learned | Listed | AgentRead | Done) -> Exception | None:
        """Take the outcome of work done on a pool (on the loop's thread); returns the error to raise there."""
        if isinstance(message, Learned):
            return self.view.learned(message)
        if isinstance(message, Listed):
            return self.view.listed(message)
        if isinstance(message, AgentRead):
            return self.read_back(message)
        return self.finished(message)

    def finished(self, done: Done) -> Exception | None:
        """Take a write's outcome (on the loop's thread); returns an error that is no ConsulError (a bug)."""
        self.in_flight.discard(done.key)
        if done.error is None or isinstance(done.error, ConsulError):
            done.finish(done.error)
            return None
        return done.error

    def dispatch(self, stop: Callable[[], bool] = lambda: False) -> None:
        """Start every write that brings the agent in line and is not in flight (none once ``stop()``).

        Starts nothing until the agent has been read and the containers listed once. A deregistration
        waits while the container it belongs to is being inspected: that container may still yield it.
        """
        actual = self.actual
        if stop() or actual is None or not self.view.listed_once:
            return
        changed = self.view.take_changed() | self._replan
        only = None if self._plan_all else changed
        self._plan_all, self._replan = False, set()
        inspecting: set[str] | None = None
        for action in self.plan(only):
            if ("service", action.service_id) in self.in_flight:
                continue  # planned again when it is back
            owner = actual.get(action.service_id)
            if isinstance(action, Deregister) and owner is not None:
                inspecting = inspecting if inspecting is not None else {c[:12] for c in self.view.inspecting}
                if owner.container_id in inspecting:
                    self._replan.add(action.service_id)
                    continue
            self._start(action)
        self.push_maintenance()
        self.push_health(only=only)

    def _start(self, action: Action) -> None:
        key = ("service", action.service_id)
        if isinstance(action, Register):
            self._write(key, "register", partial(self._register_logged, action.service),
                        partial(self._registered, action.service))  # fmt: skip
        else:
            self._write(key, "deregister", partial(self._deregister_logged, action),
                        partial(self._deregistered, action))  # fmt: skip

    # On the pool: the write, logged as soon as the agent has answered (the line's time is when it did).

    def _register_logged(self, service: Service) -> None:
        self.sink.register(service)
        log.info(
            "service_registered",
            service_id=service.id,
            service=service.name,
            container=service.container_name,
            address=service.address,
            port=service.port,
        )

    def _deregister_logged(self, action: Deregister) -> None:
        self.sink.deregister(action.service_id)
        log.info("service_deregistered", service_id=action.service_id, reason=action.reason)

    def _registered(self, service: Service, error: ConsulError | None) -> None:
        self._replan.add(service.id)
        if error is None:
            owned = Owned(service.id, service.digest, service.container_id[:12])
            if self.actual is not None:
                self.actual[service.id] = owned
            if self.reading:
                self._since_read[service.id] = owned
            if service.health is not None:  # registered with its status; the output follows
                self.health_sent.pop(service.health.check_id, None)
            self.outcome["registered"] += 1
        elif isinstance(error, ConsulRejected):
            self.outcome["rejected"] += 1
            self.rejected[service.id] = service.digest
            log.error("service_rejected", service_id=service.id, container=service.container_name, error=str(error))
        else:
            self._failed(error)
        self.metrics.services.set(len(self.actual or {}))

    def _deregistered(self, action: Deregister, error: ConsulError | None) -> None:
        self._replan.add(action.service_id)
        if error is None:
            if self.actual is not None:
                self.actual.pop(action.service_id, None)
            if self.reading:
                self._since_read[action.service_id] = None
            self.forgotten.pop(action.service_id, None)
            self.outcome["deregistered"] += 1
        else:
            self._failed(error)
        self.metrics.services.set(len(self.actual or {}))

    def _failed(self, error: ConsulError) -> None:
        self.outcome["failed"] += 1
        log.error("consul_write_failed", error=str(error))

    def settle(self) -> None:
        """Wait until every inspect and write in flight is back (only where the outbox is our own)."""
        errors: list[Exception] = []
        while self.in_flight or self.view.inspecting or self.reading or self.view.listing:
            if (error := self.back(self.outbox.get())) is not None:
                errors.append(error)
        if errors:
            raise errors[0]

    def converge(self, read: bool = False, stop: Callable[[], bool] = lambda: False) -> Outcome:
        """Plan against the agent (read afresh when ``read``), apply and wait; raises ConsulError.

        A failed write leaves the agent's state unknown, so the next convergence reads it again."""
        before = Counter(self.outcome)
        if read or self.actual is None:
            self.read_actual()
        self.dispatch(stop)
        self.settle()
        outcome = self._since(before)
        if outcome.failed:
            self.actual = None
        return outcome

    def apply(self, actions: list[Action]) -> Outcome:
        """Apply these actions (no plan) and wait: for tests and one-shot repairs."""
        before = Counter(self.outcome)
        for action in actions:
            self._start(action)
        self.settle()
        return self._since(before)

    def _since(self, before: Counter[str]) -> Outcome:
        done = self.outcome - before
        return Outcome(done["registered"], done["deregistered"], done["failed"], done["rejected"])

    def push_maintenance(self) -> None:
        """Put the services of draining containers in maintenance, and take survivors out of it."""
        actual, desired = self.actual or {}, self.view.desired()
        self.maintenance = {i for i in self.maintenance if i in actual}  # deregistered: nothing to take out
        want = {i for i in self.view.draining() if i in actual}
        for service_id in sorted(want - self.maintenance):
            self._maintain(service_id, True)
        # Only a running container's services come back; a stopped one kept by --deregister on-success stays out.
        for service_id in sorted(i for i in self.maintenance - want if i in desired):
            self._maintain(service_id, False)

    def _maintain(self, service_id: str, enable: bool) -> None:
        key = ("maintenance", service_id)
        if key in self.in_flight:
            return

        def finish(error: ConsulError | None) -> None:
            if error is not None:
                log.warning("maintenance_failed", service_id=service_id, error=str(error))
            elif enable:
                self.maintenance.add(service_id)
                log.info("service_draining", service_id=service_id)
            else:
                self.maintenance.discard(service_id)
                log.info("service_drain_ended", service_id=service_id, reason="the container survived its stop signal")

        self._write(key, "maintenance", partial(self.sink.maintenance, service_id, enable), finish)

    def pass_ttls(self) -> None:
        """Keep registrar's own TTL checks passing."""
        for s in self.view.desired().values():
            for check_id in (c.check_id for c in s.checks if c.check_id.endswith(":ttl")):
                if ("check", check_id) not in self.in_flight:
                    self._write(("check", check_id), "ttl_pass", partial(self.sink.pass_ttl, check_id),
                                partial(self._ttl_passed, check_id))  # fmt: skip

    @staticmethod
    def _ttl_passed(check_id: str, error: ConsulError | None) -> None:
        if error is not None:
            log.warning("ttl_pass_failed", check_id=check_id, error=str(error))

    def push_health(self, refresh: bool = False, only: Collection[str] | None = None) -> None:
        """Send the Docker health of each registered service (``only`` these IDs) that the agent does not have yet.

        ``refresh`` sends every one again, which keeps their TTL from running out.
        """
        actual, desired = self.actual or {}, self.view.desired()
        ids = desired.keys() if refresh or only is None else only
        services = [s for s in (desired.get(i) for i in ids) if s is not None and s.health and s.id in actual]
        current = {s.health.check_id: s.health for s in services if s.health}
        if ids is desired.keys():
            self.health_sent = {k: v for k, v in self.health_sent.items() if k in current}
        else:
            for check_id in {health_check_id(i) for i in ids} - current.keys():
                self.health_sent.pop(check_id, None)
        for check_id, health in current.items():
            if (refresh or self.health_sent.get(check_id) != health) and ("check", check_id) not in self.in_flight:
                self._write(("check", check_id), "health_update", partial(self.sink.set_health, health),
                            partial(self._health_sent, health))  # fmt: skip

    def _health_sent(self, health: Health, error: ConsulError | None) -> None:
        if error is not None:
            log.warning("health_update_failed", check_id=health.check_id, error=str(error))
            return
        before = self.health_sent.get(health.check_id)
        self.health_sent[health.check_id] = health
        changed = before is None or before.status != health.status
        (log.info if changed else log.debug)("health_updated", check_id=health.check_id, status=health.status)
