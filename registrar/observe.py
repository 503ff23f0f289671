"""The translator from Docker to the desired state: a ``docker inspect`` payload to what registrar keeps of
the container (registrar.desired.Observed), with the services it yields (registrar.services).

It runs where the inspect is made (registrar.executor, on a worker), not in the core: the services a container
yields may take I/O (a ``--tags-http`` tag template's ``httpGet``), and the core (registrar.reconciler and the
modules it imports) does none. The core gets the ``Observed`` in an ``Inspected`` message.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from typing import Any

from registrar.addresses import network_owner
from registrar.container import container_name, is_running
from registrar.desired import Observed
from registrar.reconcile import kept_after_exit
from registrar.services import services_from_container
from registrar.settings import Settings


def stop_signal(container: Mapping[str, Any]) -> int:
    """The container's stop signal as a number (``SIGTERM``, ``TERM`` and ``15`` alike); SIGTERM if unset."""
    text = str((container.get("Config") or {}).get("StopSignal") or "SIGTERM").strip().upper()
    if text.isdigit():
        return int(text)
    name = text if text.startswith("SIG") else "SIG" + text
    return int(getattr(signal.Signals, name, signal.SIGTERM))


def observed_from_inspect(
    container: Mapping[str, Any],
    settings: Settings,
    fingerprint: int = 0,
    owner: Mapping[str, Any] | None = None,
) -> Observed:
    """What registrar keeps of a ``docker inspect`` payload, with its bad labels and why it yields
    nothing (logged by ``DesiredState.record`` when they are new for the container).

    ``owner``: with ``--internal``, the inspect of the container whose network it shares, if any
    (``addresses.network_owner``; None when it is gone)."""
    result = services_from_container(container, settings, owner)
    name = container_name(container)
    running = is_running(container)
    retain = not running and kept_after_exit(settings, (container.get("State") or {}).get("ExitCode"))
    timeout = (container.get("Config") or {}).get("StopTimeout")
    owner_ref = network_owner(container) if settings.internal else ""
    return Observed(
        fingerprint or inspect_fingerprint(container),
        name,
        result.services,
        retain,
        stop_signal(container),
        float(timeout) if isinstance(timeout, int | float) and timeout >= 0 else 10.0,
        running,
        str((owner or {}).get("Id") or owner_ref) if owner_ref else "",
        tuple(result.problems),
        result.note,
    )


def inspect_fingerprint(container: Mapping[str, Any]) -> int:
    """The same fingerprint as ``desired.summary_fingerprint``, read from ``docker inspect``."""
    state = container.get("State") or {}
    settings = container.get("NetworkSettings") or {}
    ports = []
    for key, bindings in (settings.get("Ports") or {}).items():
        number, _, proto = key.partition("/")
        for b in bindings or [{}]:
            ports.append((int(number), proto, str(b.get("HostIp") or ""), int(b.get("HostPort") or 0)))
    status = state.get("Status")
    health = ((state.get("Health") or {}).get("Status") or "") if status == "running" else ""
    return hash(
        (
            status,
            str(state.get("ExitCode", "")) if status == "exited" else "",
            health,
            tuple(sorted(ports)),
            tuple(sorted((n, (v or {}).get("IPAddress") or "") for n, v in (settings.get("Networks") or {}).items())),
            ("/" + container_name(container),),
        )
    )
