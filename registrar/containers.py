"""The Docker side of the reconcile: what registrar last learned of each container.

Per container: a fingerprint of its state and the services it yields. A full refresh lists every
container once and inspects only those whose fingerprint changed; an event refresh takes ``die``
and ``destroy`` as they are and inspects the rest afresh. The desired state, all services by ID,
is derived from that and cached until something changes.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from registrar.model import DockerEvent, Problem, Service
from registrar.reconcile import desired_state
from registrar.services import container_name, is_running, services_from_container
from registrar.settings import Settings

log = structlog.get_logger("registrar")


class ContainerSource(Protocol):
    """What registrar needs from Docker."""

    def list_containers(self) -> list[dict[str, Any]]: ...
    def inspect(self, container_id: str) -> dict[str, Any] | None: ...
    def events(self) -> Iterator[DockerEvent]: ...
    def close_events(self) -> None: ...
    def ping(self) -> None: ...


@dataclass(frozen=True)
class Known:
    """What registrar last learned of one container."""

    fingerprint: str
    name: str
    services: tuple[Service, ...]
    keep: bool
    """Exited non-zero under ``--deregister on-success``: its registrations stay."""


_EXITED = re.compile(r"Exited \((-?\d+)\)")
_HEALTH = re.compile(r"\((healthy|unhealthy|health: starting)\)")


def summary_fingerprint(summary: Mapping[str, Any]) -> str:
    """What can change in a container without a new ID, read from a ``/containers/json`` entry."""
    status = str(summary.get("Status") or "")
    exited = _EXITED.search(status)
    health = _HEALTH.search(status)
    ports = sorted(
        (
            int(p.get("PrivatePort") or 0),
            str(p.get("Type") or ""),
            str(p.get("IP") or ""),
            int(p.get("PublicPort") or 0),
        )
        for p in summary.get("Ports") or ()
    )
    networks = (summary.get("NetworkSettings") or {}).get("Networks") or {}
    return repr(
        (
            summary.get("State"),
            exited.group(1) if exited else "",
            health.group(1).replace("health: ", "") if health else "",
            ports,
            sorted((n, (v or {}).get("IPAddress") or "") for n, v in networks.items()),
            sorted(summary.get("Names") or []),
        )
    )


def inspect_fingerprint(container: Mapping[str, Any]) -> str:
    """The same fingerprint as summary_fingerprint, read from ``docker inspect``."""
    state = container.get("State") or {}
    settings = container.get("NetworkSettings") or {}
    ports = []
    for key, bindings in (settings.get("Ports") or {}).items():
        number, _, proto = key.partition("/")
        for b in bindings or [{}]:
            ports.append((int(number), proto, str(b.get("HostIp") or ""), int(b.get("HostPort") or 0)))
    status = state.get("Status")
    health = ((state.get("Health") or {}).get("Status") or "") if status == "running" else ""
    return repr(
        (
            status,
            str(state.get("ExitCode", "")) if status == "exited" else "",
            health,
            sorted(ports),
            sorted((n, (v or {}).get("IPAddress") or "") for n, v in (settings.get("Networks") or {}).items()),
            ["/" + container_name(container)],
        )
    )


class ContainerView:
    """This host's containers as registrar last saw them, and the services they yield."""

    def __init__(self, source: ContainerSource, settings: Settings, calls: Counter[str], workers: int = 8) -> None:
        self.source = source
        self.settings = settings
        self.calls = calls
        """Requests made, by kind; counted by the thread that asks for them (the caller's)."""
        self.known: dict[str, Known] = {}
        self._desired: dict[str, Service] | None = None
        self._problems: set[Problem] = set()
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="registrar-inspect")

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def kept(self) -> set[str]:
        """IDs of stopped containers whose registrations stay (``--deregister on-success``)."""
        return {cid for cid, k in self.known.items() if k.keep}

    def _learn(self, container_id: str, fingerprint: str | None) -> Known | None:
        container = self.source.inspect(container_id)
        if container is None:
            return None
        log.debug("container_inspected", container=container_name(container))
        result = services_from_container(container, self.settings)
        for problem in result.problems:
            log.warning(
                "container_label_problem", container=problem.container, key=problem.key, problem=problem.message
            )
        name = container_name(container)
        keep = not is_running(container) and self._keeps(name, (container.get("State") or {}).get("ExitCode"))
        return Known(fingerprint or inspect_fingerprint(container), name, result.services, keep)

    def _keeps(self, name: str, exit_code: int | None) -> bool:
        """Whether a stopped container's registrations stay (``--deregister on-success``, exit not 0)."""
        keep = self.settings.deregister == "on-success" and exit_code not in (0, None)
        if keep:
            log.info("services_kept", container=name, exit_code=exit_code, reason="exited non-zero (on-success)")
        return keep

    def _remember(self, container_id: str, known: Known | None) -> None:
        """Record what was learned of a container (None: it is gone)."""
        if known is None:
            self.known.pop(container_id, None)
        else:
            self.known[container_id] = known
        self._desired = None

    def _learn_many(self, items: Iterable[tuple[str, str | None]]) -> None:
        items = list(items)
        self.calls["docker_inspect"] += len(items)
        if len(items) == 1:  # the common case after one event: no hop through the pool
            self._remember(items[0][0], self._learn(*items[0]))
            return
        futures = [(cid, self.pool.submit(self._learn, cid, fp)) for cid, fp in items]
        for cid, future in futures:
            self._remember(cid, future.result())

    def refresh_all(self) -> None:
        """Re-list every container; inspect only those whose state changed since the last look."""
        self.calls["docker_list"] += 1
        summaries = self.source.list_containers()
        seen = set()
        changed: list[tuple[str, str | None]] = []
        for summary in summaries:
            cid = str(summary["Id"])
            seen.add(cid)
            fingerprint = summary_fingerprint(summary)
            known = self.known.get(cid)
            if known is not None and known.fingerprint == fingerprint:
                continue
            if summary.get("State") != "running" and self.settings.deregister == "always":
                # A stopped container yields nothing; no need to inspect it.
                self._remember(cid, Known(fingerprint, "", (), False))
                continue
            changed.append((cid, fingerprint))
        for cid in [c for c in self.known if c not in seen]:
            self._remember(cid, None)
        self._learn_many(changed)

    def refresh(self, events: Iterable[DockerEvent]) -> None:
        """Update what is known of the containers these events are about (the last event of each).

        ``die`` says the container stopped and how, and ``destroy`` that it is gone: both are taken
        as they are, because an inspect right after ``die`` waits while Docker tears the container's
        network down. Anything else is a reason to inspect the container afresh.
        """
        to_inspect: list[tuple[str, str | None]] = []
        for event in {e.container_id: e for e in events}.values():
            if event.action == "destroy":
                self._remember(event.container_id, None)
            elif event.action == "die":
                self._remember(event.container_id, self._stopped(event))
            else:
                to_inspect.append((event.container_id, None))
        self._learn_many(to_inspect)

    def _stopped(self, event: DockerEvent) -> Known:
        previous = self.known.get(event.container_id)
        name = event.name or (previous.name if previous else "")
        return Known("", name, (), self._keeps(name, event.exit_code))

    def desired(self) -> dict[str, Service]:
        """All services the known containers yield, by ID (recomputed only after a change)."""
        if self._desired is not None:
            return self._desired
        ordered = sorted(self.known.values(), key=lambda k: k.name)
        desired, problems = desired_state(k.services for k in ordered)
        for problem in set(problems) - self._problems:
            log.warning(
                "container_label_problem", container=problem.container, key=problem.key, problem=problem.message
            )
        self._problems = set(problems)
        self._desired = desired
        return desired
