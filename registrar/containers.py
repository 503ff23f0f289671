"""The Docker side of the reconcile: what registrar last learned of each container.

Per container: a fingerprint of its state and the services it yields. A full refresh lists every
container once and inspects only those whose fingerprint changed; an event refresh takes ``die``
and ``destroy`` as they are and inspects the rest afresh. The desired state, all services by ID,
is derived from that and cached until something changes.

Inspects run on a pool and report back through the outbox as ``Learned`` messages, so no container
waits for another's inspect (no head-of-line waits). One inspect per container is in flight at a
time: what happens to it meanwhile is kept (the last event wins) and done when the inspect is back,
so a container's events are applied in their order. The loop's thread owns all state here; the
pool's threads only inspect and translate.
"""

from __future__ import annotations

import queue
import re
import signal
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Protocol

import structlog

from registrar.model import DockerEvent, Problem, Service
from registrar.reconcile import desired_state
from registrar.services import container_name, is_running, services_from_container
from registrar.settings import Settings

log = structlog.get_logger("registrar")
DRAIN_GRACE_SECONDS = 1.0
"""Past the container's stop timeout, how long a drain waits for its ``die`` before it looks again."""


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
    stop_signal: int = signal.SIGTERM
    """The signal ``docker stop`` sends it first (its StopSignal)."""
    stop_timeout: float = 10.0
    """How long ``docker stop`` waits for it before SIGKILL (its StopTimeout)."""
    draining_until: float | None = None
    """Set while it drains (it got its stop signal): its services are in maintenance until it dies, or
    until this moment, when a container that survived the signal returns to the passing set."""


@dataclass(frozen=True)
class Learned:
    """An inspect is back (pool -> loop): what it found (None: the container is gone), or its error."""

    container_id: str
    known: Known | None
    error: Exception | None = None


@dataclass(frozen=True)
class Listed:
    """A listing is back (pool -> loop): every container's summary, or its error."""

    summaries: list[dict[str, Any]]
    error: Exception | None = None


_INSPECT_AGAIN = DockerEvent("inspect", "")
"""What to do after the inspect in flight: inspect once more (an event that needs a fresh look came)."""


def stop_signal(container: Mapping[str, Any]) -> int:
    """The container's stop signal as a number (``SIGTERM``, ``TERM`` and ``15`` alike); SIGTERM if unset."""
    text = str((container.get("Config") or {}).get("StopSignal") or "SIGTERM").strip().upper()
    if text.isdigit():
        return int(text)
    name = text if text.startswith("SIG") else "SIG" + text
    return int(getattr(signal.Signals, name, signal.SIGTERM))


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

    def __init__(
        self,
        source: ContainerSource,
        settings: Settings,
        calls: Counter[str],
        outbox: queue.SimpleQueue[Any] | None = None,
        workers: int = 8,
    ) -> None:
        self.source = source
        self.settings = settings
        self.calls = calls
        """Requests made, by kind; counted by the thread that asks for them (the loop's)."""
        self.outbox: queue.SimpleQueue[Any] = outbox if outbox is not None else queue.SimpleQueue()
        """Where inspects report back (the daemon's inbox; a queue of the view's own otherwise)."""
        self.known: dict[str, Known] = {}
        self.inspecting: set[str] = set()
        """Containers with an inspect in flight."""
        self._after: dict[str, DockerEvent] = {}
        """Per container with an inspect in flight: the last event since, to apply once it is back."""
        self.listing = False
        """A listing is in flight."""
        self.listed_once = False
        """A listing has been taken: until then the view knows nothing, and no plan is made against it."""
        self._since_listing: set[str] = set()
        """Containers learned of since the listing in flight was asked for (it may predate them)."""
        self._claims: dict[str, dict[str, tuple[str, Service]]] = {}
        """Service ID -> the containers that yield it: container ID -> (container name, service)."""
        self._desired: dict[str, Service] = {}
        """Per service ID, the claim of the container first by name (kept up to date by _remember)."""
        self._problems: dict[str, set[Problem]] = {}
        """Service ID -> the claims on it that lost (logged once each)."""
        self.changed: set[str] = set()
        """Service IDs whose desired state may have changed since the reconciler last took them."""
        self._kept: set[str] = set()
        self._draining: set[str] = set()
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="registrar-inspect")

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def kept(self) -> set[str]:
        """IDs of stopped containers whose registrations stay (``--deregister on-success``)."""
        return self._kept

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
        timeout = (container.get("Config") or {}).get("StopTimeout")
        return Known(
            fingerprint or inspect_fingerprint(container),
            name,
            result.services,
            keep,
            stop_signal(container),
            float(timeout) if isinstance(timeout, int | float) and timeout >= 0 else 10.0,
        )

    def _keeps(self, name: str, exit_code: int | None) -> bool:
        """Whether a stopped container's registrations stay (``--deregister on-success``, exit not 0)."""
        keep = self.settings.deregister == "on-success" and exit_code not in (0, None)
        if keep:
            log.info("services_kept", container=name, exit_code=exit_code, reason="exited non-zero (on-success)")
        return keep

    def _remember(self, container_id: str, known: Known | None) -> None:
        """Record what was learned of a container (None: it is gone), and what it changes in the desired state."""
        before = self.known.pop(container_id, None)
        if known is not None:
            self.known[container_id] = known
        for flag, holds in ((self._kept, known is not None and known.keep),
                            (self._draining, known is not None and known.draining_until is not None)):  # fmt: skip
            (flag.add if holds else flag.discard)(container_id)
        if self.listing:
            self._since_listing.add(container_id)
        if before is not None and known is not None and before.services == known.services:
            return
        touched = set()
        for service in before.services if before is not None else ():
            touched.add(service.id)
            self._claims.get(service.id, {}).pop(container_id, None)
        for service in known.services if known is not None else ():
            touched.add(service.id)
            self._claims.setdefault(service.id, {})[container_id] = (known.name if known else "", service)
        for service_id in touched:
            self._settle(service_id)
        self.changed |= touched

    def _settle(self, service_id: str) -> None:
        """Decide which container's claim on this service ID wins, by ``reconcile.desired_state``'s rule (the
        first by container name); warn of the others once."""
        claims = self._claims.get(service_id)
        before = self._problems.pop(service_id, set())
        if not claims:
            self._claims.pop(service_id, None)
            self._desired.pop(service_id, None)
            return
        ordered = sorted(claims.values(), key=lambda claim: claim[0])
        desired, found = desired_state((service,) for _, service in ordered)
        self._desired[service_id] = desired[service_id]
        problems = set(found)
        for problem in sorted(problems - before, key=lambda p: p.container):
            log.warning(
                "container_label_problem", container=problem.container, key=problem.key, problem=problem.message
            )
        if problems:
            self._problems[service_id] = problems

    def take_changed(self) -> set[str]:
        """The service IDs changed since the last call (the reconciler plans only those)."""
        changed, self.changed = self.changed, set()
        return changed

    # Asynchronous: the loop asks, the pool inspects, learned() takes the answer -----------------

    def inspect(self, container_id: str, fingerprint: str | None = None) -> None:
        """Inspect the container on the pool, or once more after the inspect already in flight."""
        if container_id in self.inspecting:
            self._after[container_id] = _INSPECT_AGAIN
            return
        self.inspecting.add(container_id)
        self.calls["docker_inspect"] += 1
        self.pool.submit(self._inspect_and_report, container_id, fingerprint)

    def _inspect_and_report(self, container_id: str, fingerprint: str | None) -> None:
        """On the pool: inspect and translate, and send the outcome back (never raises)."""
        try:
            self.outbox.put(Learned(container_id, self._learn(container_id, fingerprint)))
        except Exception as e:  # reported to the loop, which decides (a DockerError is retried)
            self.outbox.put(Learned(container_id, None, e))

    def learned(self, message: Learned) -> Exception | None:
        """Take an inspect's outcome, then what happened to the container meanwhile; returns its error."""
        cid = message.container_id
        self.inspecting.discard(cid)
        after = self._after.pop(cid, None)
        if message.error is None:
            self._remember(cid, message.known)
        if after is _INSPECT_AGAIN:
            self.inspect(cid)
        elif after is not None:
            self._take(after)
        return message.error

    def request_listing(self) -> None:
        """List every container on the pool (``listed()`` takes the answer); one listing at a time."""
        if self.listing:
            return
        self.listing = True
        self._since_listing = set()
        self.calls["docker_list"] += 1
        self.pool.submit(self._list_and_report)

    def _list_and_report(self) -> None:
        try:
            self.outbox.put(Listed(self.source.list_containers()))
        except Exception as e:  # reported to the loop, which decides (a DockerError is retried)
            self.outbox.put(Listed([], e))

    def listed(self, message: Listed) -> Exception | None:
        """Take a listing: inspect the containers whose state changed; forget those gone before it was asked for."""
        self.listing = False
        if message.error is None:
            self._compare(message.summaries, keep=self._since_listing)
        self._since_listing = set()
        return message.error

    def relist(self) -> None:
        """List every container now; inspect (asynchronously) only those whose state changed since the last look."""
        self.calls["docker_list"] += 1
        self._compare(self.source.list_containers(), keep=set())

    def _compare(self, summaries: list[dict[str, Any]], keep: set[str]) -> None:
        self.listed_once = True
        seen = set()
        for summary in summaries:
            cid = str(summary["Id"])
            seen.add(cid)
            fingerprint = summary_fingerprint(summary)
            known = self.known.get(cid)
            if known is not None and known.fingerprint == fingerprint:
                continue
            if cid in self.inspecting:
                self.inspect(cid)  # after the one in flight: it may have begun before this listing
            elif summary.get("State") != "running" and self.settings.deregister == "always":
                # A stopped container yields nothing; no need to inspect it.
                self._remember(cid, Known(fingerprint, "", (), False))
            else:
                self.inspect(cid, fingerprint)
        for cid in [c for c in self.known if c not in seen and c not in self.inspecting and c not in keep]:
            self._remember(cid, None)

    def take(self, events: Iterable[DockerEvent]) -> None:
        """Update what is known of the containers these events are about (the last event of each).

        ``die`` says the container stopped and how, and ``destroy`` that it is gone: both are taken
        as they are, because an inspect right after ``die`` waits while Docker tears the container's
        network down. ``kill`` is set apart (it would otherwise hide the event before it): with the
        container's stop signal it starts a drain. Anything else is a reason to inspect afresh. A
        container with an inspect in flight gets its last event applied once the inspect is back.
        """
        events = list(events)
        last = {e.container_id: e for e in events if e.action != "kill"}
        for event in last.values():
            if event.container_id in self.inspecting:
                self._after[event.container_id] = event if event.action in ("die", "destroy") else _INSPECT_AGAIN
            else:
                self._take(event)
        # A kill says nothing of the container's state, so it costs no inspect; with the container's
        # stop signal (docker stop) its services drain, unless it has died or gone since.
        for event in {e.container_id: e for e in events if e.action == "kill"}.values():
            if last.get(event.container_id, event).action not in ("die", "destroy"):
                self._drain(event)

    def _take(self, event: DockerEvent) -> None:
        if event.action == "destroy":
            self._remember(event.container_id, None)
        elif event.action == "die":
            self._remember(event.container_id, self._stopped(event))
        else:
            self.inspect(event.container_id)

    # Synchronous, for one-shot commands and tests: wait until every inspect is back ---------------

    def settle(self) -> None:
        """Wait for the inspects in flight (only where the outbox is the view's own); raise the first error."""
        errors = []
        while self.inspecting:
            error = self.learned(self.outbox.get())
            if error is not None:
                errors.append(error)
        if errors:
            raise errors[0]

    def refresh_all(self) -> None:
        """relist(), and wait for its inspects."""
        self.relist()
        self.settle()

    def refresh(self, events: Iterable[DockerEvent]) -> None:
        """take(events), and wait for their inspects."""
        self.take(events)
        self.settle()

    def _drain(self, event: DockerEvent) -> None:
        known = self.known.get(event.container_id)
        if not self.settings.drain_on_stop or known is None or not known.services:
            return
        if event.signal != str(known.stop_signal):
            return
        until = time.monotonic() + known.stop_timeout + DRAIN_GRACE_SECONDS
        self._remember(event.container_id, replace(known, draining_until=until))
        log.info("container_draining", container=known.name, signal=event.signal, until_s=known.stop_timeout)

    def draining(self) -> set[str]:
        """IDs of the services of containers that are draining."""
        return {s.id for cid in self._draining for s in self.known[cid].services}

    def drain_deadline(self) -> float | None:
        """When the first drain ends unless its container dies first."""
        return min((k.draining_until for k in self.known.values() if k.draining_until is not None), default=None)

    def end_drains(self, now: float) -> list[DockerEvent]:
        """End the drains that have run out; each container needs a fresh look (a survivor returns to passing)."""
        over = [(cid, k) for cid, k in self.known.items() if k.draining_until is not None and k.draining_until <= now]
        for cid, known in over:
            self._remember(cid, replace(known, draining_until=None))
        return [DockerEvent("drain_over", cid, known.name) for cid, known in over]

    def _stopped(self, event: DockerEvent) -> Known:
        previous = self.known.get(event.container_id)
        name = event.name or (previous.name if previous else "")
        return Known("", name, (), self._keeps(name, event.exit_code))

    def desired(self) -> dict[str, Service]:
        """All services the known containers yield, by ID: what ``reconcile.desired_state`` makes of them
        in container name order, kept up to date one container at a time."""
        return self._desired
