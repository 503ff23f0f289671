"""The loop's inbox: every message another thread can send it, one closed set.

Docker events and news of the stream come from the event thread (registrar.watcher); results of
work come from the workers (registrar.workers): a listing, an inspect, a read of the agent, a
write; exec probes' results come from the prober (registrar.probes). A signal handler only sends
``WAKE``. Each message is matched in one place, ``Reconciler._observe`` (registrar.reconciler): by the
loop, or, once the daemon runs, by the thread that has a Docker event or a result that succeeded
(under the daemon's lock); failures always reach the loop through its inbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from registrar.model import DockerEvent, Health, Probe, Write


class Wake:
    """Only wakes the loop (a signal handler sends it: the loop then sees the stop flag)."""

    def __repr__(self) -> str:
        return "<wake>"


class Resync:
    """A full reconcile is due (sent after each new subscription to the event stream)."""

    def __repr__(self) -> str:
        return "<resync>"


WAKE, RESYNC = Wake(), Resync()


@dataclass(frozen=True)
class StreamFailed:
    """A subscription or the event stream failed: the engine is unreachable."""

    error: str


@dataclass(frozen=True)
class WatcherExited:
    """The event thread ended; ``error`` is what ended it (None: a stop)."""

    error: BaseException | None


@dataclass(frozen=True)
class Listed:
    """A listing of every container (``/containers/json``) is back: the summaries, or its error."""

    summaries: list[dict[str, Any]]
    error: Exception | None = None


@dataclass(frozen=True)
class Inspected:
    """An inspect is back: the container as the desired state keeps it (None: it is gone), or the error."""

    container_id: str
    container: Any  # registrar.desired.Observed | None
    error: Exception | None = None


@dataclass(frozen=True)
class AgentRead:
    """A read of the agent's services (``/v1/agent/services``) is back, or its error."""

    services: dict[str, Any] | None
    """None: the answer was not parsed (``ActualState.read_unchanged``); its digest is ``digest``."""
    digest: int = 0
    error: Exception | None = None


@dataclass(frozen=True)
class Written:
    """A write is back: None when the agent took it, else the error (a ConsulError, or a bug)."""

    write: Write
    error: Exception | None = None


@dataclass(frozen=True)
class Probed:
    """A probe's run is back (registrar.probes): the status and output for its service's check."""

    service_id: str
    container_id: str
    """The container it ran for (a result for another container than the service's now is dropped)."""
    probe: Probe
    """The probe that ran (a result of a probe changed since is dropped)."""
    health: Health


@dataclass(frozen=True)
class Failed:
    """A thread that took a message for the loop failed while doing so, or the shell could not carry out an
    effect (a bug, or a library failing in a way nobody foresaw): the loop logs the error (``loop_error``),
    backs off and reconciles in full, as for a bug of its own."""

    error: Exception
    message: Message | None = None
    """The message whose taking failed: its work is abandoned, and done again by the full reconcile (None:
    an effect failed; the request effects come back as their own message with the error instead)."""


@dataclass(frozen=True)
class AddressesResolved:
    """The host addresses ``--ip``/``--wan-ip`` name (an interface or a range) changed: every container is
    inspected again by the listing that follows."""

    ip: str
    wan_ip: str


Message = (
    DockerEvent
    | Listed
    | Inspected
    | AgentRead
    | Written
    | Probed
    | Failed
    | StreamFailed
    | WatcherExited
    | Resync
    | AddressesResolved
    | Wake
)
