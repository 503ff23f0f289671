"""Desired state from Docker, actual state from Consul, and applying the difference.

The Reconciler keeps what the last look at Docker learned (per container: a fingerprint of its
state and the services it yields) and what the agent holds (this host's registrations). Talking to
the two systems goes through the ContainerSource and ServiceSink protocols, so tests can drive it
in memory.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeVar

import structlog

from registrar.errors import ConsulError, ConsulRejected
from registrar.metrics import Metrics
from registrar.model import Action, DockerEvent, Owned, Problem, Register, Service
from registrar.reconcile import desired_state, kept_ids, owned_services, plan
from registrar.services import container_name, is_running, services_from_container
from registrar.settings import Settings

log = structlog.get_logger("registrar")
T = TypeVar("T")


class ContainerSource(Protocol):
    """What the reconciler needs from Docker."""

    def list_containers(self) -> list[dict[str, Any]]: ...
    def inspect(self, container_id: str) -> dict[str, Any] | None: ...
    def events(self) -> Iterator[DockerEvent]: ...
    def close_events(self) -> None: ...
    def ping(self) -> None: ...


class ServiceSink(Protocol):
    """What the reconciler needs from Consul."""

    def services(self) -> dict[str, Any]: ...
    def register(self, service: Service) -> None: ...
    def deregister(self, service_id: str) -> None: ...
    def pass_ttl(self, check_id: str) -> None: ...


@dataclass(frozen=True)
class Known:
    """What registrar last learned of one container."""

    fingerprint: str
    name: str
    services: tuple[Service, ...]
    keep: bool
    """Exited non-zero under ``--deregister on-success``: its registrations stay."""


@dataclass(frozen=True)
class Outcome:
    """What one convergence did."""

    registered: int = 0
    deregistered: int = 0
    failed: int = 0
    """Writes that failed and should be retried (Consul unreachable, 5xx, ACL)."""
    rejected: int = 0
    """Registrations Consul refused as invalid; not retried until they change."""


_EXITED = re.compile(r"Exited \((-?\d+)\)")
_HEALTH = re.compile(r"\((healthy|unhealthy|health: starting)\)")


def summary_fingerprint(summary: Mapping[str, Any]) -> str:
    """What can change in a container without a new ID, read from a ``/containers/json`` entry."""
    status = str(summary.get("Status") or "")
    exited = _EXITED.search(status)
    health = _HEALTH.search(status)
    ports = sorted(
        (
            int(p.get("PrivatePort") or 0),
            str(p.get("Type") or ""),
            str(p.get("IP") or ""),
            int(p.get("PublicPort") or 0),
        )
        for p in summary.get("Ports") or ()
    )
    networks = (summary.get("NetworkSettings") or {}).get("Networks") or {}
    return repr(
        (
            summary.get("State"),
            exited.group(1) if exited else "",
            health.group(1).replace("health: ", "") if health else "",
            ports,
            sorted((n, (v or {}).get("IPAddress") or "") for n, v in networks.items()),
            sorted(summary.get("Names") or []),
        )
    )


def inspect_fingerprint(container: Mapping[str, Any]) -> str:
    """The same fingerprint as summary_fingerprint, read from ``docker inspect``."""
    state = container.get("State") or {}
    settings = container.get("NetworkSettings") or {}
    ports = []
    for key, bindings in (settings.get("Ports") or {}).items():
        number, _, proto = key.partition("/")
        for b in bindings or [{}]:
            ports.append((int(number), proto, str(b.get("HostIp") or ""), int(b.get("HostPort") or 0)))
    status = state.get("Status")
    health = ((state.get("Health") or {}).get("Status") or "") if status == "running" else ""
    return repr(
        (
            status,
            str(state.get("ExitCode", "")) if status == "exited" else "",
            health,
            sorted(ports),
            sorted((n, (v or {}).get("IPAddress") or "") for n, v in (settings.get("Networks") or {}).items()),
            ["/" + container_name(container)],
        )
    )


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
        self.source = source
        self.metrics = metrics or Metrics()
        self.sink = sink
        self.settings = settings
        self.known: dict[str, Known] = {}
        self._desired: dict[str, Service] | None = None
        self.actual: dict[str, Owned] | None = None
        """This host's registrations on the agent as last read and since written; None = unknown."""
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="registrar-io")
        self._problems: set[Problem] = set()
        self.calls = {"docker_list": 0, "docker_inspect": 0, "consul_read": 0, "consul_write": 0}
        """Requests made to each system, by kind (for logs and benchmarks)."""
        self.rejected: dict[str, str] = {}
        """Service ID -> digest of a registration the agent refused as invalid."""

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    # Docker side -----------------------------------------------------------------------------

    def _learn(self, container_id: str, fingerprint: str | None) -> Known | None:
        self.calls["docker_inspect"] += 1
        container = self.source.inspect(container_id)
        if container is None:
            return None
        log.debug("container_inspected", container=container_name(container))
        result = services_from_container(container, self.settings)
        for problem in result.problems:
            log.warning(
                "container_label_problem", container=problem.container, key=problem.key, problem=problem.message
            )
        name = container_name(container)
        keep = not is_running(container) and self._keeps(name, (container.get("State") or {}).get("ExitCode"))
        return Known(fingerprint or inspect_fingerprint(container), name, result.services, keep)

    def _keeps(self, name: str, exit_code: int | None) -> bool:
        """Whether a stopped container's registrations stay (``--deregister on-success``, exit not 0)."""
        keep = self.settings.deregister == "on-success" and exit_code not in (0, None)
        if keep:
            log.info("services_kept", container=name, exit_code=exit_code, reason="exited non-zero (on-success)")
        return keep

    def _remember(self, container_id: str, known: Known | None) -> None:
        """Record what was learned of a container (None: it is gone)."""
        if known is None:
            self.known.pop(container_id, None)
        else:
            self.known[container_id] = known
        self._desired = None

    def _learn_many(self, items: Iterable[tuple[str, str | None]]) -> None:
        items = list(items)
        if len(items) == 1:  # the common case after one event: no hop through the pool
            self._remember(items[0][0], self._learn(*items[0]))
            return
        futures = [(cid, self.pool.submit(self._learn, cid, fp)) for cid, fp in items]
        for cid, future in futures:
            self._remember(cid, future.result())

    def refresh_all(self) -> None:
        """Re-list every container; inspect only those whose state changed since the last look."""
        self.calls["docker_list"] += 1
        summaries = self.source.list_containers()
        seen = set()
        changed: list[tuple[str, str | None]] = []
        for summary in summaries:
            cid = str(summary["Id"])
            seen.add(cid)
            fingerprint = summary_fingerprint(summary)
            known = self.known.get(cid)
            if known is not None and known.fingerprint == fingerprint:
                continue
            if summary.get("State") != "running" and self.settings.deregister == "always":
                # A stopped container yields nothing; no need to inspect it.
                self._remember(cid, Known(fingerprint, "", (), False))
                continue
            changed.append((cid, fingerprint))
        for cid in [c for c in self.known if c not in seen]:
            self._remember(cid, None)
        self._learn_many(changed)

    def refresh(self, events: Iterable[DockerEvent]) -> None:
        """Update what is known of the containers these events are about (the last event of each).

        ``die`` says the container stopped and how, and ``destroy`` that it is gone: both are taken
        as they are, because an inspect right after ``die`` waits while Docker tears the container's
        network down. Anything else is a reason to inspect the container afresh.
        """
        to_inspect: list[tuple[str, str | None]] = []
        for event in {e.container_id: e for e in events}.values():
            if event.action == "destroy":
                self._remember(event.container_id, None)
            elif event.action == "die":
                self._remember(event.container_id, self._stopped(event))
            else:
                to_inspect.append((event.container_id, None))
        self._learn_many(to_inspect)

    def _stopped(self, event: DockerEvent) -> Known:
        previous = self.known.get(event.container_id)
        name = event.name or (previous.name if previous else "")
        return Known("", name, (), self._keeps(name, event.exit_code))

    # Consul side -----------------------------------------------------------------------------

    def desired(self) -> dict[str, Service]:
        """All services the known containers yield, by ID (recomputed only after a change)."""
        if self._desired is not None:
            return self._desired
        ordered = sorted(self.known.values(), key=lambda k: k.name)
        desired, problems = desired_state(k.services for k in ordered)
        for problem in set(problems) - self._problems:
            log.warning(
                "container_label_problem", container=problem.container, key=problem.key, problem=problem.message
            )
        self._problems = set(problems)
        self._desired = desired
        return desired

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
        self.metrics.services.set(len(self.actual))
        return self.actual

    def plan(self) -> list[Action]:
        """The actions that would bring the agent in line (reads the agent if needed)."""
        actual = self.actual if self.actual is not None else self.read_actual()
        keep = kept_ids(actual, {cid for cid, k in self.known.items() if k.keep})
        desired = self.desired()
        self.rejected = {i: d for i, d in self.rejected.items() if i in desired}  # forget what is gone
        return [
            a
            for a in plan(desired, actual, keep)
            if not (isinstance(a, Register) and self.rejected.get(a.service_id) == a.service.digest)
        ]

    def _apply_one(self, action: Action) -> Action:
        self.calls["consul_write"] += 1
        if isinstance(action, Register):
            self._consul("register", lambda: self.sink.register(action.service))
        else:
            self._consul("deregister", lambda: self.sink.deregister(action.service_id))
        return action

    def apply(self, actions: list[Action], stop: Any = None) -> Outcome:
        """Apply actions concurrently; record each success in ``actual``. Raises nothing."""
        actual = self.actual if self.actual is not None else {}
        registered = deregistered = failed = rejected = 0
        futures = self._start([a for a in actions if not (stop and stop.is_set())])
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

    def converge(self, read: bool = False, stop: Any = None) -> Outcome:
        """Plan against the agent (read afresh when ``read``) and apply; raises ConsulError."""
        if read or self.actual is None:
            self.read_actual()
        return self.apply(self.plan(), stop)

    def pass_ttls(self) -> None:
        """Keep registrar's own TTL checks passing."""
        checks = [c.check_id for s in self.desired().values() for c in s.checks if c.check_id.endswith(":ttl")]
        for future in [self.pool.submit(self._consul, "ttl_pass", partial(self.sink.pass_ttl, c)) for c in checks]:
            try:
                future.result()
            except ConsulError as e:
                log.warning("ttl_pass_failed", error=str(e))
