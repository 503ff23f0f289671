"""Docker's and Podman's JSON, as registrar reads it: event messages and listing summaries. Pure: no I/O.

The engine's answers reach these through registrar.docker_source; unit tests feed them recorded payloads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from registrar.model import NETWORK_EVENTS, WATCHED_EVENTS, DockerEvent

#: Podman's names for the same events, where they differ.
PODMAN_NAMES = {"remove": "destroy"}


def event_in_line(line: bytes) -> DockerEvent | None:
    """The watched event in one line of the stream; None for another event or a line that is no JSON object."""
    try:
        message = json.loads(line) if line.strip() else None
    except ValueError:
        return None
    return from_message(message) if isinstance(message, dict) else None


def is_podman(version: Any) -> bool:
    """Whether a ``GET /version`` answer is Podman's (a component named "Podman Engine")."""
    components = version.get("Components") if isinstance(version, dict) else None
    return isinstance(components, list) and any(
        "podman" in str(c.get("Name", "")).lower() for c in components if isinstance(c, dict)
    )


SUMMARY_FIELDS = ("Id", "Names", "State", "Status", "Ports", "NetworkSettings")
"""What registrar reads of a container's summary in a listing: its ID, and what
``registrar.desired.summary_fingerprint`` reads (of each network, only ``IPAddress``)."""


def summary_only(obj: dict[str, Any]) -> dict[str, Any]:
    """``json.loads``'s object_hook for ``GET /containers/json``: a summary (an object with an ``Id`` and a
    list of ``Names``) keeps ``SUMMARY_FIELDS``, a network endpoint (an object with a string ``NetworkID``)
    its ``IPAddress``; any other object is kept whole (the hook sees each object before the one that holds it,
    so the labels, mounts and host config of a summary are dropped with it)."""
    if isinstance(obj.get("Names"), list) and "Id" in obj:
        return {key: obj[key] for key in SUMMARY_FIELDS if key in obj}
    if isinstance(obj.get("NetworkID"), str) and "IPAddress" in obj:
        return {"IPAddress": obj["IPAddress"]}
    return obj


def from_message(message: Mapping[str, Any]) -> DockerEvent | None:
    """The DockerEvent of a Docker or Podman event message, or None for one registrar does not watch.

    Podman's names are translated to Docker's (``remove`` is ``destroy``). A network's ``connect``
    and ``disconnect`` are events of the container they name: Docker's in the ``container`` attribute
    (its Actor is the network), Podman's in the Actor; other network events are dropped."""
    actor = message.get("Actor") or {}
    if message.get("Type") == "network":
        action = str(message.get("Action") or message.get("status") or "")
        container_id = str((actor.get("Attributes") or {}).get("container") or actor.get("ID") or "")
        return DockerEvent(action, container_id) if action in NETWORK_EVENTS and container_id else None
    container_id = str(actor.get("ID") or message.get("id") or "")
    action = str(message.get("Action") or message.get("status") or "")
    action = PODMAN_NAMES.get(action, action)
    if not container_id or action.split(":", 1)[0] not in WATCHED_EVENTS:
        return None
    return to_event(action, container_id, actor)


def to_event(action: str, container_id: str, actor: Mapping[str, Any]) -> DockerEvent:
    """A DockerEvent from the Action and Actor of an event message."""
    attributes = actor.get("Attributes") or {}
    code, name, signal = (str(attributes.get(key, "")) for key in ("exitCode", "name", "signal"))
    exit_code = int(code) if code.lstrip("-").isdigit() else None
    return DockerEvent(str(action), str(container_id), name, exit_code, signal)
