"""A service's Meta: the container's ``SERVICE_<KEY>`` entries, ``--meta``, what the container is (image,
compose, swarm task) and registrar's ownership keys, within what Consul accepts. Pure: no I/O."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from registrar.container import COMPOSE_SERVICE, SWARM_SERVICE
from registrar.metadata import Value, Warn
from registrar.model import META_CONTAINER, META_HOST, META_INSTANCE, META_SOURCE, META_SOURCE_VALUE, OWNERSHIP_KEYS
from registrar.settings import Settings

#: Metadata keys that configure the registration itself and are not copied into Meta.
RESERVED_KEYS = frozenset({"name", "id", "tags", "ignore", "network", "enable_tag_override"})
#: Meta of a swarm task: which swarm service and task it is, from the labels Docker puts on the task's container.
SWARM_META = (
    ("swarm-service", SWARM_SERVICE),
    ("swarm-service-id", "com.docker.swarm.service.id"),
    ("swarm-task", "com.docker.swarm.task.name"),
)
META_KEY = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
MAX_META_KEYS = 64
MAX_META_VALUE = 512

#: Identity Meta (key, container label), where the label is set; ``image`` comes from Config.Image.
IDENTITY_LABELS = (
    ("compose-project", "com.docker.compose.project"),
    ("compose-service", COMPOSE_SERVICE),
)


def identity_meta(container: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What the container is, as Meta: its image, compose project and service (a swarm task's service and
    task are ``SWARM_META``, which no label replaces)."""
    config = container.get("Config") or {}
    labels = config.get("Labels") or {}
    found = [("image", str(config.get("Image") or ""))]
    found += [(key, str(labels.get(label) or "")) for key, label in IDENTITY_LABELS]
    return [(k, v) for k, v in found if v and len(v.encode()) <= MAX_META_VALUE]


def service_meta(
    meta: Mapping[str, Value], container: Mapping[str, Any], settings: Settings, warn: Warn
) -> tuple[tuple[str, str], ...]:
    """The container's ``SERVICE_<KEY>`` Meta, then ``--meta``'s, then identity Meta (image,
    compose project and service), each where the one before did not set the key, within Consul's
    64 keys; then a swarm task's ``SWARM_META`` and the ownership keys, which nothing replaces."""
    cid = str(container.get("Id", ""))
    labels: Mapping[str, Any] = (container.get("Config") or {}).get("Labels") or {}
    out: dict[str, str] = {}
    ownership = {META_SOURCE: META_SOURCE_VALUE, META_HOST: settings.hostname, META_CONTAINER: cid[:12]}
    if settings.instance:
        ownership[META_INSTANCE] = settings.instance
    swarm = {key: str(labels[label]) for key, label in SWARM_META if labels.get(label)}
    room = MAX_META_KEYS - len(ownership) - 1 - len(swarm)  # 1: the digest, added on the way out
    for key in sorted(meta):
        value = meta[key]
        if key in RESERVED_KEYS or key.startswith("check_"):
            continue
        if not META_KEY.match(key) or key.startswith("consul-") or key in OWNERSHIP_KEYS:
            warn(value, f"Meta key {key!r} is not accepted by Consul (letters, digits, _ and - only)")
        elif key in swarm:
            warn(value, f"Meta key {key!r} is registrar's, from the swarm task's labels; ignored")
        elif len(value.value.encode()) > MAX_META_VALUE:
            size = len(value.value.encode())
            warn(value, f"Meta value is {size} bytes long; Consul takes {MAX_META_VALUE} at most")
        elif len(out) >= room:
            warn(value, f"more than {room} Meta keys; Consul takes {MAX_META_KEYS} in all")
        else:
            out[key] = value.value
    for key, text in (*settings.meta, *identity_meta(container)):
        if key not in out and key not in swarm and len(out) < room:
            out[key] = text
    out.update(swarm)
    out.update(ownership)
    return tuple(sorted(out.items()))
