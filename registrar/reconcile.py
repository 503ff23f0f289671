"""The reconcile core: which registrations are ours, and what to change to reach the desired state.

Purely computational: imports nothing that does I/O (no docker, consul, os, time). Takes the JSON
the Consul agent returns and the services computed from containers; returns sorted actions.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Set
from typing import Any

from registrar.model import (
    META_CONTAINER,
    META_DIGEST,
    META_HOST,
    META_INSTANCE,
    META_SOURCE,
    META_SOURCE_VALUE,
    Action,
    Deregister,
    Owned,
    Problem,
    Register,
    Service,
)
from registrar.settings import Settings


def owned_services(agent_services: Mapping[str, Any], host: str, instance: str = "") -> dict[str, Owned]:
    """The registrations in ``GET /v1/agent/services`` that this host's registrar made (of this
    ``--instance``: Meta ``registrar-instance``, absent for the registrar without one)."""
    owned: dict[str, Owned] = {}
    for service_id, body in agent_services.items():
        meta = (body or {}).get("Meta") or {}
        if (
            meta.get(META_SOURCE) == META_SOURCE_VALUE
            and meta.get(META_HOST) == host
            and meta.get(META_INSTANCE, "") == instance
        ):
            owned[service_id] = Owned(service_id, meta.get(META_DIGEST, ""), meta.get(META_CONTAINER, ""))
    return owned


_PLAIN_HOST = re.compile(r"[\w.:-]+")


def owned_filter(hosts: Iterable[str]) -> str:
    """Consul's filter expression (``GET /v1/agent/services?filter=``, Consul 1.4+) for the registrations
    ``owned_services`` can own for these hosts (the instance is left to it); "" when a host name holds
    anything but letters, digits, ``.``, ``_``, ``-`` and ``:`` (a quote would need escaping, and a
    filter the agent refuses would fail every read): then every service is read.

    The agent sends only what the filter selects, so a read parses registrar's own services and not
    those of everything else registered on the same agent."""
    hosts = list(hosts)
    if not hosts or not all(_PLAIN_HOST.fullmatch(h) for h in hosts):
        return ""
    either = " or ".join(f'Meta["{META_HOST}"] == "{h}"' for h in hosts)
    return f'Meta["{META_SOURCE}"] == "{META_SOURCE_VALUE}" and ({either})'


def desired_state(
    per_container: Iterable[Iterable[Service]],
) -> tuple[dict[str, Service], list[Problem]]:
    """Merge the services of all containers by ID; a second claim on one ID is a problem."""
    desired: dict[str, Service] = {}
    problems: list[Problem] = []
    for services in per_container:
        for service in services:
            first = desired.get(service.id)
            if first is None:
                desired[service.id] = service
            elif first.container_id != service.container_id:
                problems.append(
                    Problem(
                        service.container_name,
                        "SERVICE_ID",
                        f"service ID {service.id!r} is already taken by container {first.container_name}",
                    )
                )
    return desired, problems


SIGNALED_BIT = 128
"""Set in an exit code that a signal caused (128+N: 137 for SIGKILL, 143 for SIGTERM)."""


def kept_after_exit(settings: Settings, exit_code: int | None) -> bool:
    """Whether a stopped container's registrations stay: under ``--deregister on-success``, when it
    crashed, that is exited non-zero by itself. Exit 0 and a death by a signal (``docker stop``,
    ``docker kill``) deregister, as registrator's ``shouldRemove`` decides (bridge/bridge.go)."""
    return settings.deregister == "on-success" and exit_code not in (0, None) and not exit_code & SIGNALED_BIT


def retained_ids(actual: Mapping[str, Owned], keep_containers: Set[str]) -> frozenset[str]:
    """IDs of registrations to leave alone because their container is in ``keep_containers``."""
    short = {c[:12] for c in keep_containers}
    return frozenset(i for i, o in actual.items() if o.container_id and o.container_id in short)


def stale_plan(stale: Mapping[str, str]) -> list[Action]:
    """Deregister every registration of a host that ``--forget-host`` names, or of an instance that
    ``--forget-instance`` names (renamed or gone); ``stale``: service ID -> why."""
    return [Deregister(i, reason=stale[i]) for i in sorted(stale)]


def plan(
    desired: Mapping[str, Service],
    actual: Mapping[str, Owned],
    keep: Set[str] = frozenset(),
    only: Collection[str] | None = None,
) -> list[Action]:
    """The actions that turn ``actual`` into ``desired``, sorted by service ID.

    A desired service is registered when it is missing or its digest differs (so an unchanged
    service is never written again); an owned registration that is not desired is deregistered,
    unless its ID is in ``keep``. ``only`` limits the plan to these service IDs (those that changed).
    """
    actions: list[Action] = []
    for service_id in (desired.keys() | actual.keys()) if only is None else only:
        service, have = desired.get(service_id), actual.get(service_id)
        if service is not None and (have is None or have.digest != service.digest):
            actions.append(Register(service))
        elif service is None and have is not None and service_id not in keep:
            actions.append(Deregister(service_id))
    return sorted(actions, key=lambda a: a.service_id)
