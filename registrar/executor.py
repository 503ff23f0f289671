"""The executor: performs the reconciler's effects (registrar.effects) and brings their results back.

Requests (list, inspect, read the agent, write) run on the workers (registrar.workers, a
``concurrent.futures`` pool), each returning one message that goes to the daemon's ``on_message``; the request
metrics are counted here. Log lines are emitted here, after the daemon has let go of its lock.
Exec probes are handed to the prober (registrar.probes).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from functools import partial

import structlog

from registrar import logs
from registrar.adapters import ContainerSource, ServiceSink
from registrar.addresses import network_owner
from registrar.container import container_name
from registrar.desired import retained_log
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
from registrar.errors import ConsulError, ConsulRejected
from registrar.host_address import BadAddress, parse_spec, resolve
from registrar.messages import WAKE, AddressesResolved, AgentRead, Failed, Inspected, Listed, Message, Written
from registrar.metrics import Metrics, NoMetrics
from registrar.model import Deregister, HealthUpdate, Maintenance, Register, TtlPass, Write, write_key
from registrar.observe import observed_from_inspect
from registrar.probes import Prober
from registrar.reconcile import owned_filter
from registrar.reconciler import Reconciler
from registrar.workers import Workers

log = structlog.get_logger("registrar")

OPERATIONS: dict[type, str] = {
    Register: "register",
    Deregister: "deregister",
    Maintenance: "maintenance",
    TtlPass: "ttl_pass",
    HealthUpdate: "health_update",
}
"""The ``operation`` label of ``registrar_consul_operations_total`` for each kind of write."""


def described(write: Write) -> str:
    """A write as /healthz names the work a worker is on: "a Consul register of vm:web:80"."""
    return f"a Consul {OPERATIONS[type(write)]} of {write_key(write)[1]}"


def _failure(effect: Effect, error: Exception) -> Message:
    """What the loop is told of an effect that could not be carried out: a request as if it had failed (so
    that the core does not keep it in flight), anything else as a failure of the shell's."""
    match effect:
        case Inspect(container_id=cid):
            return Inspected(cid, None, error)
        case ListContainers():
            return Listed([], error)
        case ReadAgent():
            return AgentRead({}, 0, error)
        case Send(write=write):
            return Written(write, error)
    return Failed(error)


def emit(line: Log) -> None:
    """Write one log line; never raises (a log that cannot be written, stdout's reader gone, must not stop the
    effects after it)."""
    with contextlib.suppress(Exception):  # nowhere left to say it
        getattr(log, line.level)(line.event, **line.fields)


class Executor:
    """Runs effects: requests on the workers, log lines, probes; reports a finished full reconcile."""

    def __init__(
        self,
        core: Reconciler,
        source: ContainerSource,
        sink: ServiceSink,
        metrics: Metrics | NoMetrics,
        workers: Workers,
        prober: Prober,
        to_loop: Callable[[Message], None],
        resolved: Callable[[Message], None],
        done: Callable[[], None],
    ) -> None:
        self.core, self.source, self.sink, self.metrics = core, source, sink, metrics
        self.workers, self.prober = workers, prober
        self._to_loop, self._resolved, self._done = to_loop, resolved, done
        """Where a wake-up and an effect that failed go (the loop's inbox), a change of host address (back to
        the reconciler), and the news that a full reconcile is done (the daemon is ready)."""
        self.probing = False
        """Exec probes run (a running daemon's, not a one-shot command's)."""
        s = core.settings
        self._owned_filter = owned_filter((s.hostname, *s.forget_hosts))
        """What the agent is asked to send of its services: this host's and the --forget-host hosts'."""
        self._consul_ops = {
            (op, result): metrics.consul_ops.labels(op, result)
            for op in ("read", *OPERATIONS.values())
            for result in ("ok", "error", "rejected", "unchanged")
        }

    def perform(self, effects: list[Effect]) -> list[Write]:
        """Perform every effect but the writes, which are returned in order (the caller sends them), and the
        probes' updates (``update_probes``). Never raises: each effect is carried out on its own, and one that
        fails is reported to the loop (``Failed``; a request that could not be started comes back with the
        error, as if it had failed), which logs ``loop_error``, backs off and reconciles in full."""
        writes: list[Write] = []
        for effect in effects:
            try:
                self._perform(effect, writes)
            except Exception as e:
                self._to_loop(_failure(effect, e))
        return writes

    def _perform(self, effect: Effect, writes: list[Write]) -> None:
        match effect:
            case Send(write=write):
                writes.append(write)
            case Log():
                emit(effect)
            case Inspect(container_id=cid, fingerprint=fingerprint):
                self.workers.post(
                    partial(self._inspected, cid, fingerprint),
                    partial(Inspected, cid, None),
                    f"inspecting container {cid[:12]}",
                )
            case ListContainers():
                self.workers.post(self._listed, partial(Listed, []), "listing containers")
            case ReadAgent(skip_digest=skip):
                self.workers.post(partial(self._read, skip), partial(AgentRead, {}, 0), "reading the agent's services")
            case StartFullReconcile():
                self._resolve_host_addresses()
            case FullReconcileDone():
                self._full_done(effect)
            case WakeAt():
                self._to_loop(WAKE)

    def update_probes(self, effects: list[Effect]) -> None:
        """Hand the prober the exec probes that changed. Called under the daemon's lock, in the order the
        core decided (two threads' updates of one service must not cross); it does no I/O and logs nothing."""
        if self.probing:
            for effect in effects:
                if isinstance(effect, UpdateProbes):
                    self.prober.update(effect.changed, effect.services)

    def post(self, writes: list[Write]) -> None:
        """Run these writes on the workers; one that cannot be started comes back to the loop as failed
        (``Written`` with the error), so that it is not left in flight."""
        for write in writes:
            try:
                self.workers.post(partial(self.send, write), partial(Written, write), described(write))
            except Exception as e:
                self._to_loop(Written(write, e))

    def _full_done(self, done: FullReconcileDone) -> None:
        self.metrics.reconcile.observe(done.duration)
        self._done()
        log.info(
            "reconcile_done",
            services=done.services,
            containers=done.containers,
            duration_ms=round(done.duration * 1000, 2),
            **done.calls,
        )

    def _resolve_host_addresses(self) -> None:
        """``--ip``/``--wan-ip`` naming an interface or a range: look again (interfaces change). When an
        address changed, every container is inspected again by the listing that follows."""
        s = self.core.settings
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
        self._resolved(AddressesResolved(ip, wan_ip))

    # On a worker -------------------------------------------------------------------------------

    def _listed(self) -> Listed:
        return Listed(self.source.list_containers())

    def _inspected(self, container_id: str, fingerprint: int) -> Inspected:
        """Inspect and translate."""
        container = self.source.inspect(container_id)
        if container is None:
            return Inspected(container_id, None)
        if logs.debug:
            log.debug("container_inspected", container=container_name(container))
        settings = self.core.settings
        owner_ref = network_owner(container) if settings.internal else ""
        owner = self.source.inspect(owner_ref) if owner_ref else None  # its addresses are the owner's
        observed = observed_from_inspect(container, settings, fingerprint, owner)
        if observed.retain:
            emit(retained_log(observed.name, (container.get("State") or {}).get("ExitCode")))
        return Inspected(container_id, observed)

    def _read(self, skip_digest: int) -> AgentRead:
        """``GET /v1/agent/services``, filtered by the agent to this host's registrations (and those of the
        hosts --forget-host names), not parsed when its digest is ``skip_digest``."""
        try:
            digest, services = self.sink.read_services(skip_digest, self._owned_filter)
        except ConsulError:
            self._consul_ops["read", "error"].inc()
            raise
        self._consul_ops["read", "ok"].inc()
        return AgentRead(services, digest)

    def send(self, write: Write) -> Written:
        """One write, logged as soon as the agent has answered (the line's time is when it did)."""
        operation = OPERATIONS[type(write)]
        sent = True
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
                    sent = self.sink.pass_ttl(check_id)
                case HealthUpdate(health=health):
                    sent = self.sink.set_health(health)
        except ConsulError as e:
            result = "rejected" if isinstance(e, ConsulRejected) else "error"
            self._consul_ops[operation, result].inc()
            return Written(write, e)
        self._consul_ops[operation, "ok" if sent else "unchanged"].inc()
        return Written(write)
