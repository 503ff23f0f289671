"""The catalog adapter (``--catalog``): this host is an external node of Consul's catalog, with no agent.

Consul's answer for a host without an agent is the catalog API with an external node: NodeMeta
``external-node: "true"`` (what consul-esm looks for) plus registrar's ownership (``external-source``,
``registrar-host``, ``registrar-instance``), the node named after the host (``--hostname``) at ``--ip``.
CatalogSink implements the loop's ServiceSink protocol (registrar.adapters) on it, decides nothing, and
shares ConsulSink's client and error translation (registrar.consul_sink.ConsulConnection):

- reads: ``GET /v1/catalog/node/<node>``, the node's services by ID, in the agent's shape (each
  ``{"Meta": ...}`` for the loop), with the same digest rule as the agent's read;
- ``register``: ``PUT /v1/catalog/register`` with the node, the service and its checks, an HTTP, TCP or
  gRPC check with its ``Definition`` in consul-esm's form (consul-esm runs HTTP and TCP ones; Consul
  drops the fields it does not know, 1.8 ``TLSServerName`` and ``H2PING``); the service's checks no
  longer defined are then removed (``PUT /v1/catalog/deregister`` with their CheckID), as the agent's
  ``replace-existing-checks`` does, maintenance's too;
- ``deregister``: ``PUT /v1/catalog/deregister`` with the ServiceID (its checks go with it);
- ``pass_ttl``, ``set_health``: the check written again with its new Status and Output;
- ``maintenance``: the check ``_service_maintenance:<id>`` critical, as the agent makes it; removed after.
- ``ensure_node``: the node alone, when it is not there as written (a Consul session needs its node);
  ``hold_node`` (``run``): the session that keeps the node alive and the watch that removes dead hosts'
  nodes (registrar.catalog_liveness), stopped by ``close``.

The catalog runs no check: a status is whatever was written last (PITFALLS, "Catalog registration and
sessions"); registrar runs HTTP, TCP and gRPC checks itself (registrar.host_checks; not with
``--catalog-checks esm``).
A check is written with the status registrar knows (Docker health's), else the one the catalog holds for it,
else its initial status (``CHECK_INITIAL_STATUS``), else critical. A status equal to the one last written is
not written again (each write is a Raft entry) until a full read finds the catalog holding another.

A node name that a live agent owns is refused at start (``NodeTaken``, a ConfigError): that agent's
anti-entropy would delete what registrar writes under it (consul#7513). py-consul's ``catalog.register``
cannot carry a registration with several checks (it sends one ``Check``), puts NodeMeta in the query
string, where ``/v1/catalog/register`` does not read it, and the token in the URL; so the body is
made here and sent through py-consul's client and callback, as ``catalog.register`` sends its own.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from consul.callback import CB

from registrar.consul_sink import DEFAULT_TIMEOUT, ConsulConnection, meta_only
from registrar.errors import ConfigError, ConsulError
from registrar.model import (
    CATALOG_OUTPUT_SYNC_SECONDS,
    META_HOST,
    META_INSTANCE,
    META_SOURCE,
    META_SOURCE_VALUE,
    Health,
    Service,
)
from registrar.settings import ConsulTarget

if TYPE_CHECKING:
    from registrar.catalog_liveness import CatalogLiveness

log = structlog.get_logger("registrar")

EXTERNAL_NODE = "external-node"
"""The NodeMeta key that makes a node external: consul-esm runs the checks of such nodes, and no agent owns it."""
MAINTENANCE_PREFIX = "_service_maintenance:"
"""The CheckID prefix of a service's maintenance check, as the agent names it."""
MAINTENANCE_NAME = "Service Maintenance Mode"
MAINTENANCE_REASON = "registrar: the container is stopping"
DEFINITION_KEYS = {
    "HTTP": "HTTP",
    "Header": "Header",
    "Method": "Method",
    "Body": "Body",
    "TLSServerName": "TLSServerName",
    "TLSSkipVerify": "TLSSkipVerify",
    "TCP": "TCP",
    "GRPC": "GRPC",
    "GRPCUseTLS": "GRPCUseTLS",
    "H2PING": "H2PING",
    "Args": "ScriptArgs",
    "Interval": "Interval",
    "Timeout": "Timeout",
    "DeregisterCriticalServiceAfter": "DeregisterCriticalServiceAfter",
    "OutputMaxSize": "OutputMaxSize",
}
"""A check's fields in the agent's form -> their name in the catalog check's ``Definition`` (consul-esm's form)."""
KINDS = (("HTTP", "http"), ("TCP", "tcp"), ("GRPC", "grpc"), ("H2PING", "h2ping"), ("Args", "script"), ("TTL", "ttl"))
"""The field that makes a check of each kind (its ``Type`` in the catalog)."""
NOT_RUN = {
    "http": "not run by registrar (--catalog-checks esm): consul-esm runs it from its Definition",
    "tcp": "not run by registrar (--catalog-checks esm): consul-esm runs it from its Definition",
    "grpc": "not run by registrar (--catalog-checks esm): left to consul-esm, from its Definition",
    "h2ping": "not run: registrar does not run H2PING checks in catalog mode",
    "script": "not run: script checks need a Consul agent on the host",
}
"""The output of a new check that registrar does not run, by kind: what an operator reads next to its status."""
STARTING = "registrar runs this check: no result yet"
"""The output of a new check that registrar runs (an exec probe; with ``--catalog`` HTTP, TCP, gRPC), until its
first result."""


class NodeTaken(ConfigError):
    """The node name is a live agent's (no NodeMeta ``external-node=true``): registrar must not write under it."""


@dataclass(frozen=True)
class CatalogNode:
    """This host as a node of the catalog."""

    name: str
    """The host's name (``--hostname``, else ``docker info`` Name)."""
    address: str
    """``--ip``: the node's address, which a service without its own address is reached at."""
    meta: tuple[tuple[str, str], ...]
    """NodeMeta: ``external-node=true`` and registrar's ownership."""


def catalog_node(hostname: str, address: str, instance: str = "") -> CatalogNode:
    """The node registrar writes for this host: external, marked as registrar's, of this host and ``--instance``."""
    meta = {EXTERNAL_NODE: "true", META_SOURCE: META_SOURCE_VALUE, META_HOST: hostname}
    if instance:
        meta[META_INSTANCE] = instance
    return CatalogNode(hostname, address, tuple(meta.items()))


def node_taken_message(name: str) -> str:
    return (
        f"--catalog: node {name!r} belongs to a Consul agent (its NodeMeta has no {EXTERNAL_NODE}=true), whose "
        "anti-entropy would delete what registrar writes under it: give this host another --hostname"
    )


def is_external(node: Mapping[str, Any]) -> bool:
    """Whether a node, as ``/v1/catalog/node/<node>`` sends it, is external (no agent owns it)."""
    return (node.get("Meta") or {}).get(EXTERNAL_NODE) == "true"


def check_kind(check: Mapping[str, Any]) -> str:
    """``http``, ``tcp``, ``grpc``, ``h2ping``, ``script`` or ``ttl``: the kind of a check in the agent's form."""
    return next((kind for field, kind in KINDS if check.get(field)), "ttl")


def catalog_check(
    node: str, service: Service, check: Mapping[str, Any], held: Mapping[str, Any] | None
) -> dict[str, Any]:
    """One check of ``service`` (``check`` in the agent's form, as ``Service.to_consul`` gives it) as a catalog
    check; ``held``: the check under that CheckID in the catalog now, if any.

    Status and Output: Docker health's as registrar knows it; else what the catalog holds (consul-esm's
    result, an exec probe's last); else the initial status (``CHECK_INITIAL_STATUS``, ``--ttl``'s passing),
    else critical, with an output that says what runs the check."""
    kind = check_kind(check)
    body: dict[str, Any] = {
        "Node": node,
        "CheckID": check["CheckID"],
        "Name": check.get("Name") or f"Service '{service.name}' check",
        "ServiceID": service.id,
        "Type": kind,
    }
    if check.get("Notes"):
        body["Notes"] = check["Notes"]
    definition = {name: check[key] for key, name in DEFINITION_KEYS.items() if key in check}
    if definition:
        body["Definition"] = definition
    health = service.health
    if health is not None and check["CheckID"] == health.check_id:
        body.update(Status=health.status, Output=health.output)
    elif held is not None and held.get("Status"):
        body.update(Status=held["Status"], Output=held.get("Output") or "")
    else:
        runs = any(c.check_id == check["CheckID"] and c.probe is not None for c in service.checks)
        body.update(Status=check.get("Status") or "critical", Output=STARTING if runs else NOT_RUN.get(kind, ""))
    return body


def register_body(
    node: CatalogNode, service: Service, held: Mapping[str, Mapping[str, Any]], skip_node_update: bool
) -> dict[str, Any]:
    """The body of ``PUT /v1/catalog/register`` for ``service`` on ``node``, its checks included; ``held``: the
    service's checks in the catalog now, by CheckID; ``skip_node_update``: the node is there as written."""
    agent = service.to_consul()
    entry: dict[str, Any] = {"ID": agent["ID"], "Service": agent["Name"], "Port": agent["Port"], "Meta": agent["Meta"]}
    for key in ("Address", "Tags", "TaggedAddresses", "EnableTagOverride"):
        if key in agent:
            entry[key] = agent[key]
    body: dict[str, Any] = {
        "Node": node.name,
        "Address": node.address,
        "NodeMeta": dict(node.meta),
        "SkipNodeUpdate": skip_node_update,
        "Service": entry,
    }
    checks = [catalog_check(node.name, service, c, held.get(c["CheckID"])) for c in agent.get("Checks", ())]
    if checks:
        body["Checks"] = checks
    return body


def _quoted(text: str) -> str:
    """A string literal of Consul's filter expressions (go-bexpr: Go's quoting rules)."""
    return json.dumps(text, ensure_ascii=False)


class CatalogSink(ConsulConnection):
    """Writes this host's services into the catalog, under the external node ``node``."""

    needs = "node:write and service:write (on this host's node and registrar's services)"

    def __init__(self, target: ConsulTarget, node: CatalogNode, timeout: float = DEFAULT_TIMEOUT) -> None:
        super().__init__(target, timeout)
        self.node = node
        self._node_path = f"/v1/catalog/node/{node.name}"
        self._lock = threading.Lock()
        self._node_current = False
        """The node is in the catalog as this sink writes it (address and NodeMeta): registrations skip it."""
        self._checks: dict[str, dict[str, Any]] = {}
        """CheckID -> the check as last written or read, without Status and Output: what a status update sends."""
        self._written: dict[str, tuple[str, str, float]] = {}
        """CheckID -> the Status and Output this sink last wrote for it (as the catalog still holds them at the
        last full read), and when (``time.monotonic``): a refresh with the same is not written (each catalog
        write is a Raft entry), nor a new output alone within ``CATALOG_OUTPUT_SYNC_SECONDS``."""
        self._liveness: CatalogLiveness | None = None
        """``run``: the session that keeps this node alive and the watch for dead nodes (``hold_node``)."""

    # Reads -------------------------------------------------------------------------------------------

    def services(self) -> dict[str, Any]:
        """``GET /v1/catalog/node/<node>``: every service of this host's node, by ID, as the catalog sends it
        (``{}`` when the node is not there yet). Raises NodeTaken when a live agent owns the node's name."""
        what = f"reading catalog node {self.node.name}"
        answer = self._call(what, lambda: self._get_digested(self._node_path, None, 0, None))[1]
        if answer is not None and isinstance(answer, dict) and not is_external(answer.get("Node") or {}):
            raise NodeTaken(node_taken_message(self.node.name))
        return self._services_of(answer)

    def read_services(self, unless: int = 0, filter: str = "") -> tuple[int, dict[str, Any] | None]:
        """``GET /v1/catalog/node/<node>[?filter=...]``: (a digest of the answer's bytes, the node's services by
        ID, those ``filter`` selects, each as ``{"Meta": {...}}``); the services None, the answer not parsed,
        when the digest is ``unless``. A node that is not there has no services. A node that a live agent
        has taken meanwhile is a ConsulError: nothing is written under it."""
        what = f"reading catalog node {self.node.name}"
        params = {"filter": filter} if filter else None
        digest, answer = self._call(what, lambda: self._get_digested(self._node_path, params, unless, meta_only))
        if answer is None and unless and digest == unless:
            return digest, None
        if answer is not None and isinstance(answer, dict) and not is_external(answer.get("Node") or {}):
            raise ConsulError(node_taken_message(self.node.name))
        services = self._services_of(answer)
        if not unless:
            self._call(f"reading the checks of catalog node {self.node.name}", self._forget_overwritten)
        return digest, services

    def _forget_overwritten(self) -> None:
        """``GET /v1/health/node/<node>``: forget the statuses written here that the catalog no longer holds
        (someone else wrote the check, or it is gone), so the next refresh writes them again, as the agent's
        TTL refresh puts its own status back."""
        held = self._held_checks("")
        with self._lock:
            for check_id, written in list(self._written.items()):
                check = held.get(check_id)
                if check is None or (check.get("Status"), check.get("Output") or "") != written[:2]:
                    del self._written[check_id]

    def _services_of(self, answer: Any) -> dict[str, Any]:
        """The services of a ``/v1/catalog/node/<node>`` answer (None: no such node); notes whether the node
        is there as this sink writes it."""
        if answer is not None and not isinstance(answer, dict):
            raise ConsulError(f"reading catalog node {self.node.name} at {self.target.describe()}: not a node")
        node = (answer or {}).get("Node") or {}
        self._node_current = node.get("Address") == self.node.address and node.get("Meta") == dict(self.node.meta)
        services = (answer or {}).get("Services") or {}
        if not isinstance(services, dict):
            raise ConsulError(f"reading catalog node {self.node.name} at {self.target.describe()}: not a node")
        return services

    def ensure_node(self) -> None:
        """The node in the catalog as this sink writes it, with or without services (a Consul session needs
        its node: registrar.catalog_liveness); a node a live agent owns raises NodeTaken."""
        self.services()
        if not self._node_current:
            body = {"Node": self.node.name, "Address": self.node.address, "NodeMeta": dict(self.node.meta)}
            self._call(f"registering catalog node {self.node.name}", lambda: self._put_register(body))
            self._node_current = True

    def hold_node(self, ttl: int) -> CatalogLiveness:
        """``run``: keep this node alive through a Consul session of ``ttl`` seconds, and remove the nodes of
        dead hosts (registrar.catalog_liveness), until ``close``. Raises what its start raises."""
        from registrar.catalog_liveness import CatalogLiveness

        liveness = CatalogLiveness(self, ttl)
        liveness.start()  # closes its connection if it raises
        self._liveness = liveness
        return liveness

    def node_unkept(self) -> str:
        """Why this node is not kept alive (``/readyz``: its session not renewed for a TTL), or "" (as when no
        session holds it: ``sync``)."""
        return self._liveness.unkept() if self._liveness is not None else ""

    def close(self) -> None:
        """Stop keeping the node alive (its session is left to expire: see registrar.catalog_liveness), and
        close the connections."""
        liveness, self._liveness = self._liveness, None
        if liveness is not None:
            liveness.close()
        super().close()

    def _held_checks(self, filter: str) -> dict[str, dict[str, Any]]:
        """``GET /v1/health/node/<node>?filter=...`` (py-consul's ``health.node``): the node's checks that
        ``filter`` selects, by CheckID."""
        _index, checks = self.client.health.node(self.node.name, filter_expr=filter or None)
        return {c["CheckID"]: c for c in checks or () if isinstance(c, dict) and c.get("CheckID")}

    # Writes ------------------------------------------------------------------------------------------

    def _put_register(self, body: Mapping[str, Any]) -> None:
        """``PUT /v1/catalog/register`` through py-consul's client and callback, the token in its header only."""
        headers = self.client.prepare_headers(self.token)
        self.client.http.put(CB.boolean(), "/v1/catalog/register", data=json.dumps(body), headers=headers)

    def register(self, service: Service) -> None:
        """The service and its checks onto this host's node (the node too, unless it is there as written);
        then the service's checks the catalog holds and the registration no longer defines are removed."""

        def write() -> None:
            held = self._held_checks(f"ServiceID == {_quoted(service.id)}")
            body = register_body(self.node, service, held, self._node_current)
            self._put_register(body)
            self._node_current = True
            with self._lock:
                for check in body.get("Checks", ()):
                    self._remember(check)
            for check_id in held.keys() - {c["CheckID"] for c in body.get("Checks", ())}:
                self.client.catalog.deregister(self.node.name, check_id=check_id, token=self.token)
                with self._lock:
                    self._checks.pop(check_id, None)
                    self._written.pop(check_id, None)

        self._call(f"registering {service.id}", write)

    def _remember(self, check: Mapping[str, Any]) -> None:
        """Keep a check as written (under the lock): its body for status updates, its status and output."""
        self._checks[check["CheckID"]] = {k: v for k, v in check.items() if k not in ("Status", "Output")}
        self._written[check["CheckID"]] = (check["Status"], check.get("Output") or "", time.monotonic())

    def deregister(self, service_id: str) -> None:
        """``PUT /v1/catalog/deregister`` {Node, ServiceID}: the service and its checks; one already gone is done."""

        def write() -> None:
            self.client.catalog.deregister(self.node.name, service_id=service_id, token=self.token)
            with self._lock:
                for check_id in [i for i, c in self._checks.items() if c.get("ServiceID") == service_id]:
                    self._checks.pop(check_id, None)
                    self._written.pop(check_id, None)

        self._call(f"deregistering {service_id}", write)

    def pass_ttl(self, check_id: str) -> bool:
        """Registrar's TTL check (``--ttl``) written passing (nothing expires it in the catalog); False: it is."""
        return self._call(f"passing TTL check {check_id}", lambda: self._set_status(check_id, "passing", ""))

    def set_health(self, health: Health) -> bool:
        """Docker's health, or a probe's result, written as its check's Status and Output; False: it is so."""
        what = f"updating check {health.check_id}"
        return self._call(what, lambda: self._set_status(health.check_id, health.status, health.output))

    def _set_status(self, check_id: str, status: str, output: str) -> bool:
        """Write one check again with this Status and Output. Not written: the same as this sink last wrote (and
        the last full read found); a new output alone within ``CATALOG_OUTPUT_SYNC_SECONDS`` of that write, as the
        agent holds output back (a first result is written: the output said there was none yet); a check the
        catalog does not hold (its service is not registered), as the agent ignores a TTL update of a check it
        does not have."""
        with self._lock:
            check = self._checks.get(check_id)
            last = self._written.get(check_id)
        recent = last is not None and time.monotonic() - last[2] < CATALOG_OUTPUT_SYNC_SECONDS and last[1] != STARTING
        if last is not None and last[0] == status and (last[1] == output or recent):
            return False
        if check is None:  # not written by this process (a restart): the catalog has it
            held = self._held_checks(f"CheckID == {_quoted(check_id)}").get(check_id)
            if held is None:
                log.debug("check_not_in_catalog", check_id=check_id, node=self.node.name)
                return False
            check = {k: held[k] for k in ("Node", "CheckID", "Name", "ServiceID", "Notes", "Type") if held.get(k)}
            if (held.get("Status"), held.get("Output") or "") == (status, output):  # as this host's last run left it
                with self._lock:
                    self._remember({**check, "Status": status, "Output": output})
                return False
            if any((held.get("Definition") or {}).values()):
                check["Definition"] = held["Definition"]
        body = {**check, "Status": status, "Output": output}
        self._put_register(self._check_body(body))
        with self._lock:
            self._remember(body)
        return True

    def _check_body(self, check: Mapping[str, Any]) -> dict[str, Any]:
        """A registration body of one check of this node, the node itself skipped (it is written, if missing)."""
        node = {"Node": self.node.name, "Address": self.node.address, "NodeMeta": dict(self.node.meta)}
        return {**node, "SkipNodeUpdate": True, "Check": check}

    def maintenance(self, service_id: str, enable: bool) -> None:
        """In maintenance: the check ``_service_maintenance:<id>`` critical on the service, as the agent makes it;
        out of it: that check removed."""
        check_id = MAINTENANCE_PREFIX + service_id
        what = f"{'enabling' if enable else 'disabling'} maintenance of {service_id}"
        if not enable:
            remove = self.client.catalog.deregister
            self._call(what, lambda: remove(self.node.name, check_id=check_id, token=self.token))
            return
        check = {
            "Node": self.node.name,
            "CheckID": check_id,
            "Name": MAINTENANCE_NAME,
            "Notes": MAINTENANCE_REASON,
            "ServiceID": service_id,
            "Status": "critical",
        }
        self._call(what, lambda: self._put_register(self._check_body(check)))
