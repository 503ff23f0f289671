"""Why a container yields what it yields, and what the agent holds for it (``registrar explain``).

Pure: takes the container's ``docker inspect`` JSON, the Settings and the agent's answer to
``GET /v1/agent/services``; returns plain values, and renders them as text or as JSON. No I/O.
The rules are services.py's own (``traced_services`` records them as they are applied), so an
explanation cannot disagree with what ``sync`` does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from registrar.addresses import Port
from registrar.container import container_name, is_running
from registrar.model import (
    META_CONTAINER,
    META_HOST,
    META_INSTANCE,
    META_SOURCE,
    META_SOURCE_VALUE,
    OWNERSHIP_KEYS,
    Problem,
    Service,
)
from registrar.reconcile import kept_after_exit, owned_services
from registrar.services import NOT_PUBLISHED, traced_services
from registrar.settings import Settings

#: The fields of a registration that ``GET /v1/agent/services`` shows: (in the body sent, in the answer, unset).
COMPARED: tuple[tuple[str, str, Any], ...] = (
    ("Name", "Service", ""),
    ("Address", "Address", ""),
    ("Port", "Port", 0),
    ("Tags", "Tags", []),
    ("EnableTagOverride", "EnableTagOverride", False),
)


@dataclass(frozen=True)
class PortExplained:
    """One port the container has: where it is published, and the service it yields or why none."""

    port: str
    """``80/tcp``."""
    published: str
    """``127.0.0.1:32768`` (and ``[::1]:32769``), or empty."""
    service_id: str
    reason: str
    """Why it yields no service; empty when it yields one."""


@dataclass(frozen=True)
class KeyRead:
    """One ``SERVICE_*`` key as read: where from, what it applies to, and where it won or lost."""

    source: str
    """``label SERVICE_80_NAME`` or ``env SERVICE_NAME``."""
    value: str
    scope: str
    """``general``, ``port 80``, ``port 53/udp``, ``ports 8000-8009``."""
    used_on: tuple[str, ...]
    """The ports (``80/tcp``) where this key is the one read."""
    beaten_by: tuple[str, ...]
    """Where it applies but is not read: the sources read instead."""


@dataclass(frozen=True)
class TemplateRendered:
    """One tag template (``SERVICE_TAGS`` or ``--tags`` holding ``{{``): what it rendered, or why it failed."""

    key: str
    """``label SERVICE_TAGS``, ``env SERVICE_80_TAGS`` or ``--tags``."""
    template: str
    output: str | None
    error: str


@dataclass(frozen=True)
class AgentEntry:
    """What the agent holds for one service ID: ``registered``, ``differing``, ``missing``, ``stale``, ``kept``."""

    service_id: str
    state: str
    detail: str


@dataclass(frozen=True)
class Explanation:
    """Everything ``registrar explain`` says about one container."""

    name: str
    container_id: str
    status: str
    skipped: str
    ports: tuple[PortExplained, ...]
    keys: tuple[KeyRead, ...]
    problems: tuple[Problem, ...]
    services: tuple[Service, ...]
    agent: tuple[AgentEntry, ...]
    templates: tuple[TemplateRendered, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """One JSON object with the same content as the text (``explain --json``)."""
        return {
            "container": {"name": self.name, "id": self.container_id, "status": self.status},
            "skipped": self.skipped or None,
            "ports": [
                {
                    "port": p.port,
                    "published": p.published or None,
                    "service": p.service_id or None,
                    "reason": p.reason or None,
                }
                for p in self.ports
            ],
            "keys": [
                {
                    "source": k.source,
                    "value": k.value,
                    "scope": k.scope,
                    "used_on": list(k.used_on),
                    "beaten_by": list(k.beaten_by),
                }
                for k in self.keys
            ],
            "tag_templates": [
                {"key": t.key, "template": t.template, "output": t.output, "error": t.error or None}
                for t in self.templates
            ],
            "problems": [{"key": p.key, "message": p.message} for p in self.problems],
            "services": [s.to_consul() for s in self.services],
            "agent": [{"id": a.service_id, "state": a.state, "detail": a.detail} for a in self.agent],
        }


def _port_name(port: Port) -> str:
    return f"{port.port}/{port.proto}"


def _published(port: Port) -> str:
    bindings = [(port.host_ip, port.host_port), (port.v6_ip, port.v6_port)]
    shown = [f"[{ip}]:{n}" if ":" in ip else f"{ip or '*'}:{n}" for ip, n in bindings if n]
    return " and ".join(shown)


def explain(
    container: Mapping[str, Any],
    settings: Settings,
    agent_services: Mapping[str, Any],
    owner: Mapping[str, Any] | None = None,
) -> Explanation:
    """Explain a container (its ``docker inspect`` JSON) under these settings, against the agent's services.

    ``owner``: with ``--internal``, the inspect of the container whose network it shares, if any
    (``addresses.network_owner``), as the daemon reads it."""
    traced = traced_services(container, settings, owner)
    outcomes = sorted(traced.ports, key=lambda o: (int(o.port.port) if o.port.port.isdigit() else 0, o.port.proto))
    ports = tuple(PortExplained(_port_name(o.port), _published(o.port), o.service_id, o.reason) for o in outcomes)
    keys: list[KeyRead] = []
    candidates = [o.port for o in outcomes if o.reason != NOT_PUBLISHED]  # the ports the keys were read for
    metadata = traced.metadata
    for found in sorted(traced.found, key=lambda f: (f.key, f.value.source)):
        used: list[str] = []
        beaten: dict[str, None] = {}
        for port in candidates:
            if metadata is None or not found.applies_to(port.port, port.proto):
                continue
            winner = metadata.for_port(port.port, port.proto)[found.key]
            if winner is found.value:
                used.append(_port_name(port))
            else:
                beaten[winner.source] = None
        keys.append(KeyRead(found.value.source, found.value.value, found.scope, tuple(used), tuple(beaten)))
    cid = str(container.get("Id", ""))
    state = container.get("State") or {}
    status = str(state.get("Status") or ("running" if is_running(container) else "stopped"))
    if not is_running(container) and isinstance(state.get("ExitCode"), int):
        status += f" (exit code {state['ExitCode']})"
    kept = not is_running(container) and kept_after_exit(settings, state.get("ExitCode"))
    return Explanation(
        name=container_name(container),
        container_id=cid[:12],
        status=status,
        skipped=traced.skipped,
        ports=ports,
        keys=tuple(keys),
        problems=traced.result.problems,
        services=traced.result.services,
        agent=agent_state(traced.result.services, cid, settings.hostname, agent_services, kept, settings.instance),
        templates=tuple(TemplateRendered(*t) for t in traced.templates),
    )


def agent_state(
    services: tuple[Service, ...],
    container_id: str,
    host: str,
    agent_services: Mapping[str, Any],
    kept: bool = False,
    instance: str = "",
) -> tuple[AgentEntry, ...]:
    """Per service: what the agent holds under its ID; then this container's registrations it no longer
    yields (``stale``, or ``kept`` when ``--deregister on-success`` keeps a crashed container's)."""
    entries: list[AgentEntry] = []
    ours = owned_services(agent_services, host, instance)  # reconcile's rule: what sync compares by digest
    for service in services:
        held, owned = agent_services.get(service.id), ours.get(service.id)
        if held is None:
            entries.append(AgentEntry(service.id, "missing", "not on the agent; sync would register it"))
        elif owned is not None and owned.digest == service.digest:
            entries.append(AgentEntry(service.id, "registered", "the agent holds this exact registration"))
        else:
            detail = differences(service, held, container_id, host, instance)
            entries.append(AgentEntry(service.id, "differing", detail))
    yielded = {s.id for s in services}
    for service_id, owned in sorted(ours.items()):
        if service_id in yielded or not owned.container_id or owned.container_id != container_id[:12]:
            continue
        if kept:
            entries.append(AgentEntry(service_id, "kept", "the container crashed; --deregister on-success keeps it"))
        else:
            detail = "registrar made it for this container, which no longer yields it; sync would deregister it"
            entries.append(AgentEntry(service_id, "stale", detail))
    return tuple(entries)


def differences(service: Service, held: Mapping[str, Any], container_id: str, host: str, instance: str = "") -> str:
    """What differs between the agent's registration under the service's ID and the body registrar would send."""
    meta = held.get("Meta") or {}
    if meta.get(META_SOURCE) != META_SOURCE_VALUE:
        return "a registration registrar did not make (hand-made, or another tool's); sync would replace it"
    if meta.get(META_HOST) != host:
        return f"made by the registrar of host {meta.get(META_HOST)!r}; sync would replace it"
    if meta.get(META_INSTANCE, "") != instance:
        return f"made by the registrar of instance {meta.get(META_INSTANCE, '')!r} (--instance); sync would replace it"
    found: list[str] = []
    if meta.get(META_CONTAINER) != container_id[:12]:
        found.append(f"made for container {meta.get(META_CONTAINER)!r}")
    body = service.to_consul()
    for ours, theirs, unset in COMPARED:
        want, have = body.get(ours, unset), held.get(theirs, unset)
        if (want or unset) != (have or unset):
            found.append(f"{ours} {have!r} on the agent, {want!r} here")
    have_meta = {k: v for k, v in meta.items() if k not in OWNERSHIP_KEYS}
    want_meta = {k: v for k, v in body["Meta"].items() if k not in OWNERSHIP_KEYS}
    changed = sorted(k for k in have_meta.keys() | want_meta.keys() if have_meta.get(k) != want_meta.get(k))
    if changed:
        found.append("Meta " + ", ".join(changed))
    tagged = held.get("TaggedAddresses") or {}
    for kind, address in sorted((body.get("TaggedAddresses") or {}).items()):
        if tagged.get(kind) != address:
            found.append(f"TaggedAddresses {kind}")
    if not found:
        found.append("its checks (the agent's service list does not show them)")
    return "; ".join(found) + "; sync would register it again"


def render(explanation: Explanation) -> str:
    """The explanation as text for a human: the ports, the keys, the problems, the services, the agent."""
    e = explanation
    lines = [f"container {e.name} ({e.container_id}): {e.status}"]
    if e.skipped:
        lines.append(f"  yields nothing: {e.skipped}")
    lines.append("ports:")
    rows = [(p.port, p.published or "-", f"-> {p.service_id}" if p.service_id else p.reason) for p in e.ports]
    widths = [max((len(row[i]) for row in rows), default=0) for i in (0, 1)]
    lines += [f"  {port:<{widths[0]}}  {where:<{widths[1]}}  {outcome}" for port, where, outcome in rows]
    if not e.ports:
        lines.append("  none" + ("" if e.skipped else ": no exposed or published port"))
    lines.append("keys:")
    for k in e.keys:
        text = f"  {k.source}={k.value}  ({k.scope})"
        if k.used_on:
            text += "  used on " + ", ".join(k.used_on)
        if k.beaten_by:
            text += "  beaten by " + ", ".join(k.beaten_by)
        if not k.used_on and not k.beaten_by:
            text += "  applies to no port that yields a service"
        lines.append(text)
    if not e.keys:
        lines.append("  none")
    if e.templates:
        lines.append("tag templates:")
    for t in e.templates:
        lines.append(f"  {t.key}: {t.template}")
        lines.append(f"    renders: {t.output!r}" if t.output is not None else f"    fails: {t.error}")
    lines.append("problems:")
    lines += [f"  {p.key}: {p.message}" for p in e.problems] or ["  none"]
    lines.append("services:")
    for service in e.services:
        lines.append(f"  {service.id}")
        body = json.dumps(service.to_consul(), indent=2, ensure_ascii=False)
        lines += ["    " + line for line in body.splitlines()]
    if not e.services:
        lines.append("  none")
    lines.append("agent:")
    lines += [f"  {a.service_id}  {a.state}: {a.detail}" for a in e.agent] or ["  nothing registered for it"]
    return "\n".join(lines)
