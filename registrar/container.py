"""What a container's ``docker inspect`` JSON says about the container itself: its name, whether it runs,
its image, and whether it matches ``--filter``. Pure: no I/O."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

IMAGE_ID = re.compile(r"^(sha256:)?[0-9a-f]{12,64}$")
COMPOSE_SERVICE = "com.docker.compose.service"
SWARM_SERVICE = "com.docker.swarm.service.name"


def container_name(container: Mapping[str, Any]) -> str:
    """The container's name without Docker's leading slash."""
    return str(container.get("Name") or "").lstrip("/") or str(container.get("Id", ""))[:12]


def is_pod_infra(container: Mapping[str, Any]) -> bool:
    """A Podman pod's infra container (``<pod id>-infra``, a pause image): it holds the pod's network
    and published ports, which the pod's own containers report too, so it yields no service."""
    image = str((container.get("Config") or {}).get("Image") or container.get("Image") or "")
    return container_name(container).endswith("-infra") and image_base_name(image) in ("podman-pause", "pause")


def image_base_name(image: str) -> str:
    """``registry:5000/gliderlabs/foo:1@sha256:..`` -> ``foo``."""
    base = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return base.split(":", 1)[0]


def is_running(container: Mapping[str, Any]) -> bool:
    state = container.get("State") or {}
    return bool(state.get("Running")) and not state.get("Restarting")


FILTER_KINDS = ("label", "name", "network")
"""``--filter``'s words, with ``docker ps --filter``'s meaning."""


def unmatched_filter(
    container: Mapping[str, Any], networked: Mapping[str, Any], filters: tuple[tuple[str, str], ...]
) -> str:
    """The first ``--filter`` the container does not match (``label=KEY``, ``label=KEY=VALUE``, ``name=RE``:
    a regular expression searched in ``/<name>``, as Docker does, ``network=NAME|ID``), as written; ""
    when it matches all.

    ``networked``: the container whose networks it is on (itself, or the owner of a shared network)."""
    for kind, value in filters:
        if kind == "label":
            labels = (container.get("Config") or {}).get("Labels") or {}
            key, has_value, wanted = value.partition("=")
            matched = key in labels and (not has_value or labels[key] == wanted)
        elif kind == "name":  # as docker ps: searched in the name with its slash (name=^/web$ is exactly web)
            matched = re.search(value, "/" + container_name(container)) is not None
        else:
            networks = (networked.get("NetworkSettings") or {}).get("Networks") or {}
            matched = value in networks or any((n or {}).get("NetworkID") == value for n in networks.values())
        if not matched:
            return f"{kind}={value}"
    return ""
