"""The Consul side of the reconcile: what the agent holds, and applying the difference.

The Reconciler reads this host's registrations from the agent, plans against the desired state of
its ContainerView (the Docker side), and applies the actions concurrently. Talking to the two
systems goes through the ContainerSource and ServiceSink protocols, so tests drive it in memory.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeVar

import structlog

from registrar.containers import ContainerSource, ContainerView
from registrar.errors import ConsulError, ConsulRejected
from registrar.metrics import Metrics
from registrar.model import Action, Health, Owned, Register, Service
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


class Reconciler:
    """Keeps this host's registrations on the agent equal to what its containers yield."""

    def __init__(
        self,
        source: ContainerSource,
        sink: ServiceSink,
        settings: Settings,
        workers: int = 8,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics or Metrics()
        self.sink = sink
        self.settings = settings
        self.calls: Counter[str] = Counter(docker_list=0, docker_inspect=0, consul_read=0, consul_write=0)
        """Requests made to each system, by kind (for logs and benchmarks); counted by the loop's thread."""
        self.view = ContainerView(source, settings, self.calls, workers)
        """The Docker side: what each container yields."""
        self.actual: dict[str, Owned] | None = None
        """This host's registrations on the agent as last read and since written; None = unknown."""
        self.forgotten: dict[str, Owned] = {}
        """Registrations of the hosts named by ``--forget-host``, as last read."""
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="registrar-write")
        self.rejected: dict[str, str] = {}
        """Service ID -> digest of a registration the agent refused as invalid."""
        self.maintenance: set[str] = set()
        """Service IDs registrar has put in maintenance (draining)."""
        self.health_sent: dict[str, Health] = {}
        """Check ID -> the Docker health last sent to the agent for it."""

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
        self.calls["consul_read"] += 1
        services = self._consul("read", self.sink.services)
        self.actual = owned_services(services, self.settings.hostname)
        self.forgotten = {
            i: o for host in self.settings.forget_hosts for i, o in owned_services(services, host).items()
        }
        self.metrics.services.set(len(self.actual))
        return self.actual

    def plan(self) -> list[Action]:
        """The actions that would bring the agent in line (reads the agent if needed)."""
        actual = self.actual if self.actual is not None else self.read_actual()
        keep = kept_ids(actual, self.view.kept())
        desired = self.view.desired()
        self.rejected = {i: d for i, d in self.rejected.items() if i in desired}  # forget what is gone
        return [
            a
            for a in plan(desired, actual, keep)
            if not (isinstance(a, Register) and self.rejected.get(a.service_id) == a.service.digest)
        ] + forget_plan(self.forgotten)

    def _apply_one(self, action: Action) -> Action:
        if isinstance(action, Register):
            self._consul("register", lambda: self.sink.register(action.service))
        else:
            self._consul("deregister", lambda: self.sink.deregister(action.service_id))
        return action

    def apply(self, actions: list[Action], stop: Callable[[], bool] = lambda: False) -> Outcome:
        """Apply actions concurrently (none once ``stop()``); record each success in ``actual``.

        Consul's errors are counted in the outcome, not raised."""
        actual = self.actual if self.actual is not None else {}
        registered = deregistered = failed = rejected = 0
        actions = [] if stop() else actions
        self.calls["consul_write"] += len(actions)
        futures = self._start(actions)
        for attempted, future in futures:
            try:
                action = future.result()
            except ConsulRejected as e:
                rejected += 1
                if isinstance(attempted, Register):
                    self.rejected[attempted.service_id] = attempted.service.digest
                    log.error(
                        "service_rejected",
                        service_id=attempted.service_id,
                        container=attempted.service.container_name,
                        error=str(e),
                    )
                continue
            except ConsulError as e:
                failed += 1
                log.error("consul_write_failed", error=str(e))
                continue
            if isinstance(action, Register):
                service = action.service
                actual[service.id] = Owned(service.id, service.digest, service.container_id[:12])
                if service.health is not None:  # registered with its status; the output follows
                    self.health_sent.pop(service.health.check_id, None)
                registered += 1
                log.info(
                    "service_registered",
                    service_id=service.id,
                    service=service.name,
                    container=service.container_name,
                    address=service.address,
                    port=service.port,
                )
            else:
                actual.pop(action.service_id, None)
                self.forgotten.pop(action.service_id, None)
                deregistered += 1
                log.info("service_deregistered", service_id=action.service_id, reason=action.reason)
        self.metrics.services.set(len(actual))
        if failed:
            self.actual = None  # Unknown after a failure: read it again before the next plan.
        return Outcome(registered, deregistered, failed, rejected)

    def _start(self, actions: list[Action]) -> list[tuple[Action, Future[Action]]]:
        """Start the writes on the pool; a lone write runs inline (one event, one write: no thread hop)."""
        if len(actions) != 1:
            return [(a, self.pool.submit(self._apply_one, a)) for a in actions]
        done: Future[Action] = Future()
        try:
            done.set_result(self._apply_one(actions[0]))
        except ConsulError as e:
            done.set_exception(e)
        return [(actions[0], done)]

    def converge(self, read: bool = False, stop: Callable[[], bool] = lambda: False) -> Outcome:
        """Plan against the agent (read afresh when ``read``) and apply; raises ConsulError."""
        if read or self.actual is None:
            self.read_actual()
        outcome = self.apply(self.plan(), stop)
        self.push_maintenance()
        self.push_health()
        return outcome

    def push_maintenance(self) -> None:
        """Put the services of draining containers in maintenance, and take survivors out of it."""
        actual = self.actual or {}
        self.maintenance &= set(actual)  # deregistered: nothing left to take out of maintenance
        want = self.view.draining() & set(actual)
        for service_id, error in self._each("maintenance", partial(self.sink.maintenance, enable=True),
                                           sorted(want - self.maintenance)):  # fmt: skip
            if error is None:
                self.maintenance.add(service_id)
                log.info("service_draining", service_id=service_id)
            else:
                log.warning("maintenance_failed", service_id=service_id, error=str(error))
        # Only a running container's services come back; a stopped one kept by --deregister on-success stays out.
        back = (self.maintenance - want) & set(self.view.desired())
        for service_id, error in self._each("maintenance", partial(self.sink.maintenance, enable=False),
                                           sorted(back)):  # fmt: skip
            if error is None:
                self.maintenance.discard(service_id)
                log.info("service_drain_ended", service_id=service_id, reason="the container survived its stop signal")
            else:
                log.warning("maintenance_failed", service_id=service_id, error=str(error))

    def pass_ttls(self) -> None:
        """Keep registrar's own TTL checks passing."""
        checks = [c.check_id for s in self.view.desired().values() for c in s.checks if c.check_id.endswith(":ttl")]
        for check_id, error in self._each("ttl_pass", self.sink.pass_ttl, checks):
            if error is not None:
                log.warning("ttl_pass_failed", check_id=check_id, error=str(error))

    def push_health(self, refresh: bool = False) -> None:
        """Send the Docker health of each registered service that the agent does not have yet.

        ``refresh`` sends every one again, which keeps their TTL from running out.
        """
        actual = self.actual or {}
        current = {s.health.check_id: s.health for s in self.view.desired().values() if s.health and s.id in actual}
        self.health_sent = {k: v for k, v in self.health_sent.items() if k in current}
        due = [h for k, h in current.items() if refresh or self.health_sent.get(k) != h]
        for health, error in self._each("health_update", self.sink.set_health, due):
            if error is None:
                before = self.health_sent.get(health.check_id)
                self.health_sent[health.check_id] = health
                changed = before is None or before.status != health.status
                (log.info if changed else log.debug)("health_updated", check_id=health.check_id, status=health.status)
            else:
                log.warning("health_update_failed", check_id=health.check_id, error=str(error))

    def _each(self, operation: str, call: Callable[[T], None], items: list[T]) -> list[tuple[T, ConsulError | None]]:
        """Call the sink once per item, concurrently; each item with the error it met (None: done)."""
        self.calls["consul_write"] += len(items)
        futures = [(item, self.pool.submit(self._consul, operation, partial(call, item))) for item in items]
        results: list[tuple[T, ConsulError | None]] = []
        for item, future in futures:
            try:
                future.result()
                results.append((item, None))
            except ConsulError as e:
                results.append((item, e))
        return results
