"""The actual state: this host's registrations on the Consul agent, as last read and since written.

``writes()`` plans against the desired state (``reconcile.plan``) and returns the writes to start:
registrations, deregistrations, maintenance for draining services, Docker health updates. It
leaves out what is in flight already (at most one write per service or check; it is planned again
once back), a registration the agent refused as invalid (until it changes), and a deregistration
of a container still being inspected (it may still yield the service). ``written()`` takes each
write's result. No I/O happens here, not even logging: log lines are kept in ``logged`` for the
reconciler to hand to the shell; the shell runs the writes on its workers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Set
from dataclasses import dataclass, field
from typing import Any

from registrar.effects import Effect, Log
from registrar.errors import ConsulError, ConsulRejected
from registrar.model import (
    Action,
    Deregister,
    Health,
    HealthUpdate,
    Maintenance,
    Owned,
    Probe,
    Register,
    Service,
    TtlPass,
    Write,
    health_check_id,
    write_key,
)
from registrar.reconcile import owned_services, plan, retained_ids, stale_plan


@dataclass(frozen=True)
class Outcome:
    """What the writes did, counted by result (the ``sync`` command prints it)."""

    registered: int = 0
    deregistered: int = 0
    failed: int = 0
    """Writes that failed and should be retried (Consul unreachable, 5xx, ACL)."""
    rejected: int = 0
    """Registrations Consul refused as invalid; not retried until they change."""


@dataclass
class ActualState:
    """This host's registrations on the agent, the writes in flight, and what was sent."""

    hostname: str
    forget_hosts: tuple[str, ...] = ()
    instance: str = ""
    """``--instance``: only registrations of this host and instance are ours."""
    forget_instances: tuple[str, ...] = ()
    registrations: dict[str, Owned] | None = None
    """Service ID -> this host's registration, as last read and since written; None until read."""
    stale: dict[str, str] = field(default_factory=dict)
    """Registrations of the hosts named by ``--forget-host`` and of the instances named by
    ``--forget-instance``, as last read: service ID -> why it goes."""
    in_flight: set[tuple[str, str]] = field(default_factory=set)
    """Writes started and not back yet, by ``write_key``."""
    results: Counter[str] = field(default_factory=Counter)
    """Writes back so far, by result: registered, deregistered, failed, rejected."""
    rejected: dict[str, str] = field(default_factory=dict)
    """Service ID -> digest of a registration the agent refused as invalid."""
    maintenance: set[str] = field(default_factory=set)
    """Service IDs registrar has put in maintenance (draining)."""
    health_sent: dict[str, Health] = field(default_factory=dict)
    """Check ID -> the Docker health or exec probe result last sent to the agent for it."""
    probe_results: dict[str, tuple[str, Health]] = field(default_factory=dict)
    """Check ID -> the container its probe last ran for (registrar.probes), and that run's result: sent while
    its service is registered for that container (a recreated one, same IDs, waits for its own)."""
    reading: bool = False
    """A read of the agent's services is in flight."""
    plan_all: bool = True
    """Plan every service at the next ``writes()`` (the agent was read); otherwise only those that changed."""
    replan: set[str] = field(default_factory=set)
    """Service IDs to plan again (a write came back, a deregistration waited for an inspect)."""
    read_digest: int = 0
    """The digest of the last read's answer (``ServiceSink.read_services``): an answer with the same
    digest is not parsed again (``read_unchanged``), unless ``written_since_read``."""
    written_since_read: bool = False
    """A registration or deregistration is back (or a health update failed) since the last read was
    taken: the next read is parsed whatever its digest, and every service planned (an agent that
    restarted may answer what it answered before that write)."""
    logged: list[Effect] = field(default_factory=list)
    """Log lines not yet emitted (the reconciler hands them to the shell as effects)."""
    _since_read: dict[str, Owned | None] = field(default_factory=dict)
    """Writes back since the read in flight was asked for (it may predate them): ID -> registered or None."""

    def start_read(self, full: bool) -> int | None:
        """Start a read of the agent, unless one is out (None); returns the digest of an answer not to parse
        (0: parse any answer).

        That is the last parsed answer's digest while nothing came back since that it lacks: the same
        answer then means the same registrations. Once a registration or deregistration came back (or a
        health update failed), the next answer is parsed whatever it is: only what the agent answers
        tells whether it still holds them (an agent that restarted and lost them may answer what it
        answered before they were written). A full reconcile's read (``full``) is always parsed.
        """
        if self.reading:
            return None
        self.reading, self._since_read = True, {}
        return 0 if full or self.written_since_read else self.read_digest

    def read(self, services: Mapping[str, Any] | None, digest: int = 0) -> None:
        """Take a read of the agent (None: it failed), with the writes back since it was asked for on top."""
        self.reading = False
        since, self._since_read = self._since_read, {}
        if services is None:
            return
        self.plan_all, self.read_digest = True, digest
        self.written_since_read = bool(since)  # back while this read was out: maybe not in its answer
        known, self.registrations = self.registrations or {}, {}
        for service_id, found in owned_services(services, self.hostname, self.instance).items():
            was = known.get(service_id)  # an equal one known is kept; the answer's copy is let go
            self.registrations[service_id] = was if was == found else found
        self.stale = {
            i: "its host is forgotten (--forget-host)"
            for host in self.forget_hosts
            for i in owned_services(services, host, self.instance)
        }
        for instance in self.forget_instances:
            for i in owned_services(services, self.hostname, instance):
                self.stale[i] = "its instance is forgotten (--forget-instance)"
        for service_id, owned in since.items():
            if owned is None:
                self.registrations.pop(service_id, None)
                self.stale.pop(service_id, None)
            else:
                self.registrations[service_id] = owned

    def read_unchanged(self) -> None:
        """Take a read that was not parsed: its answer is the last parsed one's (``start_read``'s ``skip_digest``),
        and no registration or deregistration came back since that read was taken, so ``actual`` and
        ``stale`` are what it made, and every service was planned after it (``plan_all``). A write
        back while this read was out is in ``actual`` already."""
        self.reading, self._since_read = False, {}

    def plan(
        self, desired: Mapping[str, Service], retained: Set[str], only: Collection[str] | None = None
    ) -> list[Action]:
        """The actions that bring the agent in line (``only`` these service IDs); the agent must have been read."""
        assert self.registrations is not None, "plan before the agent was read"
        actual = self.registrations
        keep = retained_ids(actual if only is None else {i: actual[i] for i in only if i in actual}, retained)
        self.rejected = {i: d for i, d in self.rejected.items() if i in desired}  # forget what is gone
        return [
            a
            for a in plan(desired, actual, keep, only)
            if not (isinstance(a, Register) and self.rejected.get(a.service_id) == a.service.digest)
        ] + stale_plan(self.stale)

    def writes(
        self,
        desired: Mapping[str, Service],
        changed: set[str],
        retained: Set[str],
        draining: Set[str],
        inspecting: Set[str],
    ) -> list[Write]:
        """The writes to start now, marked in flight; ``changed`` are the service IDs changed since the last call.

        ``retained``: containers whose registrations stay; ``draining``: service IDs to keep in
        maintenance; ``inspecting``: containers with an inspect in flight (full IDs).
        """
        actual = self.registrations
        if actual is None:
            return []
        if not (self.plan_all or changed or self.replan or draining or self.maintenance or self.stale):
            return []  # nothing changed that a plan could act on
        only = None if self.plan_all else changed | self.replan
        self.plan_all, self.replan = False, set()
        writes: list[Write] = []
        short: set[str] | None = None
        for action in self.plan(desired, retained, only):
            if write_key(action) in self.in_flight:
                continue  # planned again when it is back
            owner = actual.get(action.service_id)
            if isinstance(action, Deregister) and owner is not None and inspecting:
                short = short if short is not None else {c[:12] for c in inspecting}
                if owner.container_id in short:
                    self.replan.add(action.service_id)
                    continue
            writes.append(action)
        writes += self._maintenance(desired, draining)
        writes += self._health(desired, only)
        self.in_flight.update(write_key(w) for w in writes)
        return writes

    def _maintenance(self, desired: Mapping[str, Service], draining: Set[str]) -> list[Write]:
        """Draining services into maintenance; survivors out of it (a stopped one kept by on-success stays in)."""
        actual = self.registrations or {}
        if self.maintenance:
            self.maintenance = {i for i in self.maintenance if i in actual}  # deregistered: nothing to take out
        want = {i for i in draining if i in actual}
        writes: list[Write] = [Maintenance(i, True) for i in sorted(want - self.maintenance)]
        writes += [Maintenance(i, False) for i in sorted(self.maintenance - want) if i in desired]
        return [w for w in writes if write_key(w) not in self.in_flight]

    def _health(
        self, desired: Mapping[str, Service], only: Collection[str] | None, refresh: bool = False
    ) -> list[Write]:
        """Docker health the agent does not have yet (``only`` these service IDs); ``refresh``: send all again."""
        actual = self.registrations or {}
        ids = desired.keys() if refresh or only is None else only
        every = ids is not only  # every desired service: what is not among them is dropped
        current = {}
        for service_id in ids:
            service = desired.get(service_id)
            if service is None or service_id not in actual:
                continue
            if service.health is not None:
                current[service.health.check_id] = service.health
            for probe in service.probes:
                container_id, result = self.probe_results.get(probe.check_id, ("", None))
                if result is not None and container_id == service.container_id:
                    current[probe.check_id] = result
        if every:
            self.health_sent = {k: v for k, v in self.health_sent.items() if k in current}
            if self.probe_results:
                probed = {p.check_id for s in desired.values() for p in s.probes}
                self.probe_results = {k: v for k, v in self.probe_results.items() if k in probed}
        else:
            for check_id in {health_check_id(i) for i in ids} - current.keys():
                self.health_sent.pop(check_id, None)
        return [
            HealthUpdate(h)
            for check_id, h in current.items()
            if (refresh or self.health_sent.get(check_id) != h) and ("check", check_id) not in self.in_flight
        ]

    def probed(
        self, service_id: str, container_id: str, probe: Probe, health: Health, desired: Mapping[str, Service]
    ) -> None:
        """Take a probe's result for ``container_id``; a new status or output is planned at the next ``writes()``
        (while its service is registered: a registration is followed by its probes' last results)."""
        service = desired.get(service_id)
        if service is None or probe not in service.probes or service.container_id != container_id:
            return  # its container is gone or another now, or its check changed meanwhile
        self.probe_results[health.check_id] = (container_id, health)
        if self.health_sent.get(health.check_id) != health:
            self.replan.add(service_id)

    def refresh_health(self, desired: Mapping[str, Service]) -> list[Write]:
        """Every Docker health and exec probe result again (keeps their TTL from running out), marked in flight."""
        writes = self._health(desired, None, refresh=True)
        self.in_flight.update(write_key(w) for w in writes)
        return writes

    def ttl_passes(self, desired: Mapping[str, Service]) -> list[Write]:
        """A pass of each of registrar's own TTL checks (``--ttl``) not in flight, marked in flight."""
        writes: list[Write] = [
            TtlPass(c.check_id)
            for s in desired.values()
            for c in s.checks
            if c.check_id.endswith(":ttl") and ("check", c.check_id) not in self.in_flight
        ]
        self.in_flight.update(write_key(w) for w in writes)
        return writes

    def written(self, write: Write, error: ConsulError | None) -> None:
        """Take a write's result (None: the agent took it) and log what is worth it."""
        self.in_flight.discard(write_key(write))
        match write:
            case Register(service=service):
                self._registered(service, error)
            case Deregister(service_id=service_id):
                self.replan.add(service_id)
                if error is not None:
                    self._failed(error)
                    return
                if self.registrations is not None:
                    self.registrations.pop(service_id, None)
                self.written_since_read = True
                if self.reading:
                    self._since_read[service_id] = None
                self.stale.pop(service_id, None)
                self.results["deregistered"] += 1
            case Maintenance(service_id=service_id, enable=enable):
                if error is not None:
                    # Failed because the die's deregistration got there first (docker stop of a process that
                    # exits at once): nothing is left to drain, so no warning.
                    there = service_id in (self.registrations or {}) and ("service", service_id) not in self.in_flight
                    if there:
                        self._say("warning", "maintenance_failed", service_id=service_id, error=str(error))
                elif enable and ("service", service_id) in self.in_flight:
                    # A registration in flight replaces the service's checks, maintenance's too, maybe after
                    # this call: planned again once it is back.
                    self.replan.add(service_id)
                elif enable:
                    self.maintenance.add(service_id)
                    self._say("info", "service_draining", service_id=service_id)
                else:
                    self.maintenance.discard(service_id)
                    reason = "the container survived its stop signal"
                    self._say("info", "service_drain_ended", service_id=service_id, reason=reason)
            case TtlPass(check_id=check_id):
                if error is not None:
                    self._say("warning", "ttl_pass_failed", check_id=check_id, error=str(error))
            case HealthUpdate(health=health):
                if error is not None:
                    self._say("warning", "health_update_failed", check_id=health.check_id, error=str(error))
                    self.written_since_read = True  # sent again after the next read
                    return
                before = self.health_sent.get(health.check_id)
                self.health_sent[health.check_id] = health
                changed = before is None or before.status != health.status
                level = "info" if changed else "debug"
                self._say(level, "health_updated", check_id=health.check_id, status=health.status)

    def _registered(self, service: Service, error: ConsulError | None) -> None:
        self.replan.add(service.id)
        if error is None:
            owned = Owned(service.id, service.digest, service.container_id[:12])
            if self.registrations is not None:
                self.registrations[service.id] = owned
            self.written_since_read = True
            if self.reading:
                self._since_read[service.id] = owned
            self.maintenance.discard(service.id)  # replace-existing-checks dropped it; a drain puts it back
            if service.health is not None:  # registered with its status; the output follows
                self.health_sent.pop(service.health.check_id, None)
            for probe in service.probes:  # registered critical: the last result follows
                self.health_sent.pop(probe.check_id, None)
            self.results["registered"] += 1
        elif isinstance(error, ConsulRejected):
            self.results["rejected"] += 1
            self.rejected[service.id] = service.digest
            self._say(
                "error", "service_rejected", service_id=service.id, container=service.container_name, error=str(error)
            )
        else:
            self._failed(error)

    def _failed(self, error: ConsulError) -> None:
        self.results["failed"] += 1
        self._say("error", "consul_write_failed", error=str(error))

    def _say(self, level: str, event: str, **fields: object) -> None:
        self.logged.append(Log(level, event, fields))

    def outcome(self, since: Counter[str] | None = None) -> Outcome:
        """The results counted since ``since`` (a copy of ``results`` taken earlier)."""
        done = self.results - (since or Counter())
        return Outcome(done["registered"], done["deregistered"], done["failed"], done["rejected"])
