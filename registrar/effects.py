"""What the reconciler (registrar.reconciler) asks the shell to do, as plain values.

The reconciler does no I/O: it returns these, and the shell (registrar.daemon, registrar.executor)
performs them and brings each result back as a message (registrar.messages). Log lines are effects
too, so that nothing is logged while the shell holds the lock the reconciler runs under.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from registrar.model import Service, Write


@dataclass(frozen=True)
class ListContainers:
    """List every container (``/containers/json``); the answer comes back as ``Listed``."""


@dataclass(frozen=True)
class Inspect:
    """Inspect one container; the answer comes back as ``Inspected``. ``fingerprint``: the listing's, if any."""

    container_id: str
    fingerprint: int = 0


@dataclass(frozen=True)
class ReadAgent:
    """Read this host's registrations on the agent; the answer comes back as ``AgentRead``.

    ``skip_digest``: an answer with this digest is not parsed (0: parse any answer)."""

    skip_digest: int = 0


@dataclass(frozen=True)
class Send:
    """Send one write to the agent; its result comes back as ``Written``."""

    write: Write


@dataclass(frozen=True)
class UpdateProbes:
    """The probes of these services (IDs) changed: ``services`` holds those still desired."""

    changed: frozenset[str]
    services: Mapping[str, Service]


@dataclass(frozen=True)
class StartFullReconcile:
    """A full reconcile begins: look up the host addresses ``--ip``/``--wan-ip`` name again (an interface
    or a range); a change comes back as ``AddressesResolved``."""


@dataclass(frozen=True)
class FullReconcileDone:
    """Everything the full reconcile started is back: the daemon is ready; ``reconcile_done`` is logged."""

    services: int
    containers: int
    duration: float
    """Seconds since it began."""
    calls: Mapping[str, int]
    """Requests it made, by kind."""


@dataclass(frozen=True)
class WakeAt:
    """A deadline earlier than the one the loop may be sleeping until (a drain began on another thread)."""

    when: float


@dataclass(frozen=True)
class Log:
    """One log line: structlog's level, event name and fields."""

    level: str
    event: str
    fields: dict[str, Any] = field(default_factory=dict)


Effect = (
    ListContainers | Inspect | ReadAgent | Send | UpdateProbes | StartFullReconcile | FullReconcileDone | WakeAt | Log
)
