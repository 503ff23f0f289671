"""Plain values of the core: services, checks, ownership and the actions that reconcile them.

Everything here is frozen and hashable, so tests compare them with ``==`` and plans sort.
No I/O happens in this module.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

#: Meta keys that mark a registration as registrar's and name its host and container.
META_SOURCE = "external-source"
META_SOURCE_VALUE = "registrar"
META_HOST = "registrar-host"
META_CONTAINER = "registrar-container"
META_DIGEST = "registrar-digest"
META_INSTANCE = "registrar-instance"
"""Set only under ``--instance``: a registration without it belongs to the registrar without one."""
OWNERSHIP_KEYS = (META_SOURCE, META_HOST, META_CONTAINER, META_DIGEST, META_INSTANCE)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a container's metadata: logged as a warning, never raised."""

    container: str
    key: str
    message: str


#: Container events that can change what a container yields (Docker's names); the others are not read.
WATCHED_EVENTS = ("start", "die", "destroy", "rename", "pause", "unpause", "health_status", "kill")
#: Network events that change a container's addresses (Docker's ``network`` type; the container is in
#: the event's attributes). Watched with ``--internal`` or ``--filter network=``: published ports do not
#: change with them.
NETWORK_EVENTS = ("connect", "disconnect")


@dataclass(frozen=True, slots=True)
class DockerEvent:
    """A container event from Docker: only a reason to look, plus what ``die`` already tells."""

    action: str
    container_id: str
    name: str = ""
    exit_code: int | None = None
    signal: str = ""
    """``kill``: the signal sent (a number, as Docker reports it)."""


@dataclass(frozen=True, slots=True)
class ExecResult:
    """What an exec probe's run gave: its exit code (None: cut at its timeout) and its output."""

    exit_code: int | None
    output: str


@dataclass(frozen=True, slots=True)
class Probe:
    """A check registrar runs itself every ``interval`` seconds, for at most ``timeout`` seconds, and reports on
    ``check_id``: a command inside the container (``SERVICE_CHECK_EXEC``, on the TTL check it registers), or,
    with ``--catalog``, where no agent runs checks, an HTTP, TCP or gRPC check (``target``) run from the host."""

    check_id: str
    args: tuple[str, ...]
    interval: float
    timeout: float
    output_max: int = 4096
    """Bytes of the command's output kept as the check's output (``OUTPUT_MAX_SIZE``)."""
    target: Check | None = None
    """``--catalog``: the HTTP, TCP or gRPC check to run from the host (registrar.host_checks); None: ``args``."""
    passing_after: int = 1
    """``SUCCESS_BEFORE_PASSING``: passing (or warning) results in a row before the check's status says so."""
    critical_after: int = 1
    """``FAILURES_BEFORE_CRITICAL``: critical results in a row before the check's status says so."""

    @property
    def ttl(self) -> str:
        """The check's TTL: long enough for a registrar restart (as Docker health's), and for three runs."""
        return f"{max(45, int(3 * self.interval + self.timeout + 1))}s"


#: TTL of the check that mirrors Docker's HEALTHCHECK. registrar refreshes it every
#: HEALTH_REFRESH_SECONDS, so a registrar restart of up to 30 s leaves the status as it was, and a
#: registrar that stays away lets it turn critical (45 to 55 s after it stopped).
DOCKER_HEALTH_TTL = "45s"
HEALTH_REFRESH_SECONDS = 10.0
CATALOG_OUTPUT_SYNC_SECONDS = 300.0
"""``--catalog``: a check's output alone (its status unchanged) is written at most this often, and every status
is sent again this often: the agent's ``check_update_interval`` (5 min), each catalog write a Raft entry."""
DOCKER_HEALTH_NAME = "Docker health"


Tagged = tuple[str, str, int]
"""A tagged address: its kind (``lan_ipv4``, ``lan_ipv6``; ``wan``, ``wan_ipv4``, ``wan_ipv6`` with
``--wan-ip``), the address and the port."""


def health_check_id(service_id: str) -> str:
    """The ID of the check that carries Docker's health on a service."""
    return f"{service_id}:docker-health"


@dataclass(frozen=True, slots=True)
class Health:
    """Docker's health of a container, as the check registrar owns on one of its services."""

    check_id: str
    """``<service-id>:docker-health``."""
    status: str
    """``passing`` (healthy) or ``critical`` (starting, unhealthy); an exec probe's also ``warning``."""
    output: str
    """Docker's last probe output."""

    def to_consul(self) -> dict[str, Any]:
        """The check's definition, as registered with the service (its status travels with it)."""
        return {"CheckID": self.check_id, "Name": DOCKER_HEALTH_NAME, "TTL": DOCKER_HEALTH_TTL, "Status": self.status}


@dataclass(frozen=True, slots=True)
class CheckOptions:
    """Consul's check fields beyond registrator's (docs/reference/labels.md): kept apart from Check, so a check
    that uses none of them costs no more to build and compare than before they existed."""

    header: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """HTTP headers: (name as written, its values), sorted by name."""
    body: str | None = None
    tls_server_name: str | None = None
    notes: str | None = None
    output_max_size: int | None = None
    success_before_passing: int | None = None
    failures_before_critical: int | None = None

    def to_consul(self) -> dict[str, Any]:
        """These fields as the check's part of the registration body."""
        fields = {
            "Body": self.body,
            "TLSServerName": self.tls_server_name,
            "Notes": self.notes,
            "OutputMaxSize": self.output_max_size,
            "SuccessBeforePassing": self.success_before_passing,
            "FailuresBeforeCritical": self.failures_before_critical,
        }
        body: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}
        if self.header:
            body["Header"] = {name: list(values) for name, values in self.header}
        return body


@dataclass(frozen=True, slots=True)
class Check:
    """A Consul health check attached to a service registration."""

    check_id: str
    http: str | None = None
    method: str | None = None
    tls_skip_verify: bool = False
    tcp: str | None = None
    grpc: str | None = None
    grpc_use_tls: bool = False
    h2ping: str | None = None
    args: tuple[str, ...] = ()
    ttl: str | None = None
    interval: str | None = None
    timeout: str | None = None
    status: str | None = None
    deregister_after: str | None = None
    options: CheckOptions | None = None
    probe: Probe | None = None
    """``SERVICE_CHECK_EXEC``: the command registrar runs for this TTL check (not in the body)."""

    def to_consul(self) -> dict[str, Any]:
        """The check as the agent's service registration endpoint takes it."""
        body: dict[str, Any] = {"CheckID": self.check_id}
        fields = {
            "HTTP": self.http,
            "Method": self.method,
            "TCP": self.tcp,
            "GRPC": self.grpc,
            "H2PING": self.h2ping,
            "TTL": self.ttl,
            "Interval": self.interval,
            "Timeout": self.timeout,
            "Status": self.status,
            "DeregisterCriticalServiceAfter": self.deregister_after,
        }
        body.update({k: v for k, v in fields.items() if v is not None})
        if self.args:
            body["Args"] = list(self.args)
        if self.tls_skip_verify:
            body["TLSSkipVerify"] = True
        if self.grpc_use_tls:
            body["GRPCUseTLS"] = True
        if self.options is not None:
            body.update(self.options.to_consul())
        return body


@dataclass(frozen=True, slots=True)
class Service:
    """One service registration that a container yields (what registrator calls a service)."""

    id: str
    name: str
    port: int
    address: str = ""
    tags: tuple[str, ...] = ()
    meta: tuple[tuple[str, str], ...] = ()
    checks: tuple[Check, ...] = ()
    container_id: str = ""
    container_name: str = ""
    enable_tag_override: bool = False
    """``EnableTagOverride``: tags changed in the catalog (by a server) are not reset by anti-entropy."""
    health: Health | None = None
    """The check mirroring Docker's HEALTHCHECK, if the container has one (and it is not turned off)."""
    tagged_addresses: tuple[Tagged, ...] = ()
    """``TaggedAddresses``: (``lan_ipv4``/``lan_ipv6``, address, port) for every address registrar knows."""
    digest: str = field(default="", compare=False)
    probes: tuple[Probe, ...] = field(default=(), init=False, compare=False)
    """The commands registrar runs in the container for its exec checks (``SERVICE_CHECK_EXEC``), from
    ``checks`` (made once: the loop reads them for every service it plans)."""

    def __post_init__(self) -> None:
        if self.checks:
            object.__setattr__(self, "probes", tuple(c.probe for c in self.checks if c.probe is not None))
        # Docker health's status is left out: a change of it is one check update, not a re-registration.
        body = self._body()
        if self.health is not None:
            body["Checks"][-1].pop("Status")
        object.__setattr__(self, "digest", _digest(body))

    def _body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ID": self.id, "Name": self.name, "Port": self.port}
        if self.address:
            body["Address"] = self.address
        if self.tags:
            body["Tags"] = list(self.tags)
        body["Meta"] = dict(self.meta)
        checks = [c.to_consul() for c in self.checks]
        if self.health is not None:
            checks.append(self.health.to_consul())
        if checks:
            body["Checks"] = checks
        if self.enable_tag_override:
            body["EnableTagOverride"] = True
        if self.tagged_addresses:
            body["TaggedAddresses"] = {kind: {"Address": a, "Port": p} for kind, a, p in self.tagged_addresses}
        return body

    def to_consul(self) -> dict[str, Any]:
        """The body of ``PUT /v1/agent/service/register``, with the digest in Meta."""
        body = self._body()
        body["Meta"][META_DIGEST] = self.digest
        return body


def _digest(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True, order=True, slots=True)
class Owned:
    """A registration found on the agent that this host's registrar made."""

    id: str
    digest: str
    container_id: str


@dataclass(frozen=True, slots=True)
class Register:
    """Write this service to the agent."""

    service: Service

    @property
    def service_id(self) -> str:
        return self.service.id


@dataclass(frozen=True, slots=True)
class Deregister:
    """Remove this service ID from the agent."""

    service_id: str
    reason: str = "no running container yields it"


Action = Register | Deregister
"""What ``reconcile.plan`` returns: the registrations to write and to remove."""


@dataclass(frozen=True, slots=True)
class Maintenance:
    """Put this service in Consul maintenance (out of the passing set), or take it out again."""

    service_id: str
    enable: bool


@dataclass(frozen=True, slots=True)
class TtlPass:
    """Pass registrar's own TTL check (``--ttl``)."""

    check_id: str


@dataclass(frozen=True, slots=True)
class HealthUpdate:
    """Send Docker's health onto the check registrar owns (``<service-id>:docker-health``)."""

    health: Health


Write = Register | Deregister | Maintenance | TtlPass | HealthUpdate
"""One request to the agent that the loop applies; at most one per ``write_key`` is in flight."""


def write_key(write: Write) -> tuple[str, str]:
    """What a write is about: ("service", ID) for (de)registrations, ("maintenance", ID), ("check", ID)."""
    if isinstance(write, Register | Deregister):
        return ("service", write.service_id)
    if isinstance(write, Maintenance):
        return ("maintenance", write.service_id)
    if isinstance(write, TtlPass):
        return ("check", write.check_id)
    return ("check", write.health.check_id)
