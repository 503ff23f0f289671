"""The desired state: this host's containers as registrar last saw them, and the services they make.

Per container: a fingerprint of its state, its name and the services it yields (``Observed``). The
desired state, every service by ID, is kept up to date one container at a time, with
``reconcile.desired_state``'s rule for an ID that several containers claim (the first by container
name wins). It does no I/O, not even logging (its log lines wait in ``logged`` for the reconciler to
hand to the shell): it says which containers to inspect, and the reconciler brings the answers back
(``inspected``). It also keeps which inspects are in flight, so that one
container has at most one, and what happened to a container meanwhile is applied once it is back
(the last event wins, so a ``die`` during a start's inspect wins).

Fingerprints let a listing (``/containers/json``, one request for all) tell which containers
changed since registrar last looked, so only those are inspected.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from registrar.effects import Effect, Log
from registrar.model import NETWORK_EVENTS, DockerEvent, Problem, Service
from registrar.reconcile import desired_state, kept_after_exit
from registrar.settings import Settings

DRAIN_GRACE_SECONDS = 1.0
"""Past the container's stop timeout, how long a drain waits for its ``die`` before it looks again."""


@dataclass(frozen=True, slots=True)
class Observed:
    """What registrar last learned of one container."""

    fingerprint: int
    """``summary_fingerprint``'s or ``observe.inspect_fingerprint``'s; 0: none (inspect at the next listing)."""
    name: str
    services: tuple[Service, ...]
    retain: bool = False
    """Crashed (exited non-zero by itself) under ``--deregister on-success``: its registrations stay."""
    stop_signal: int = signal.SIGTERM
    """The signal ``docker stop`` sends it first (its StopSignal)."""
    stop_timeout: float = 10.0
    """Seconds ``docker stop`` waits for it before SIGKILL (its StopTimeout)."""
    running: bool = False
    network_owner: str = ""
    """With ``--internal``: the ID of the container whose network it shares (``--network container:ID``)."""
    problems: tuple[Problem, ...] = ()
    """Its bad labels (``services.services_from_container``): logged when they are new for the container."""
    note: str = ""
    """Why it yields nothing, when that is not plain (``services.services_from_container``): logged likewise."""


def retained_log(name: str, exit_code: int | None) -> Log:
    """The line that says a crashed container's registrations stay (``--deregister on-success``)."""
    return Log("info", "services_kept", {"container": name, "exit_code": exit_code, "reason": "crashed (on-success)"})


_EXITED = re.compile(r"Exited \((-?\d+)\)")
_HEALTH = re.compile(r"\((healthy|unhealthy|health: starting)\)")


def summary_fingerprint(summary: Mapping[str, Any]) -> int:
    """What can change in a container without a new ID, read from a ``/containers/json`` entry: a hash
    (an int of 32 bytes where its text took 150, for every container it holds)."""
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
    return hash(
        (
            summary.get("State"),
            exited.group(1) if exited else "",
            health.group(1).replace("health: ", "") if health else "",
            tuple(ports),
            tuple(sorted((n, (v or {}).get("IPAddress") or "") for n, v in networks.items())),
            tuple(sorted(summary.get("Names") or [])),
        )
    )


INSPECT_AGAIN = DockerEvent("inspect", "")
"""What to do once the inspect in flight is back: inspect once more (an event that needs a fresh look came)."""


@dataclass
class DesiredState:
    """The containers as last seen, the desired state they make, and the inspects in flight."""

    settings: Settings
    containers: dict[str, Observed] = field(default_factory=dict)
    """Container ID -> what registrar last learned of it."""
    services: dict[str, Service] = field(default_factory=dict)
    """Service ID -> the service the containers yield (the claim of the container first by name)."""
    changed: set[str] = field(default_factory=set)
    """Service IDs whose desired state may have changed since the loop last planned them."""
    retained: set[str] = field(default_factory=set)
    """Containers that crashed under ``--deregister on-success``: their registrations stay."""
    retained_dropped: bool = False
    """A container left ``kept`` (removed, or started again) since the loop last planned: its
    registrations, which no desired service names any more, are planned with all the others."""
    draining: dict[str, float] = field(default_factory=dict)
    """Container ID -> when its drain ends unless it dies first (monotonic seconds)."""
    inspecting: set[str] = field(default_factory=set)
    """Containers with an inspect in flight."""
    listing: bool = False
    """A listing is in flight."""
    listed_once: bool = False
    """A listing has come back: until then nothing is known of the containers, and nothing is planned against it."""
    logged: list[Effect] = field(default_factory=list)
    """Log lines not yet emitted (the reconciler hands them to the shell as effects)."""
    _after: dict[str, DockerEvent] = field(default_factory=dict)
    """Per container with an inspect in flight: the last event since, applied once it is back."""
    _kills: dict[str, tuple[DockerEvent, float]] = field(default_factory=dict)
    """Per container with an inspect in flight: its last kill and when it came (monotonic seconds), taken
    as a stop signal once the inspect is back (docker stop right after docker run)."""
    _since_listing: set[str] = field(default_factory=set)
    """Containers learned of since the listing in flight was asked for (it may predate them)."""
    _claims: dict[str, dict[str, tuple[str, Service]]] = field(default_factory=dict)
    """Service ID -> the containers that yield it: container ID -> (container name, service)."""
    _problems: dict[str, set[Problem]] = field(default_factory=dict)
    """Service ID -> the claims on it that lost (logged once each)."""
    _members: dict[str, set[str]] = field(default_factory=dict)
    """Container ID -> the containers that share its network (``--network container:ID``)."""
    _due: set[str] = field(default_factory=set)
    """Containers to inspect again: the container whose network they share has changed."""

    def record(self, container_id: str, observed: Observed | None, draining_until: float | None = None) -> None:
        """Record what was learned of a container (None: it is gone) and what that changes in the desired state.

        Its bad labels, and why it yields nothing, are logged when they are new for it: an inspect that
        finds the same (a ``health_status`` event, an event heard twice) logs nothing again."""
        before = self.containers.pop(container_id, None)
        if observed is not None and (observed.problems or observed.note):
            self._log_news(observed, before)
        if observed is not None:
            self.containers[container_id] = observed
        if before is not None and before.network_owner:
            members = self._members.get(before.network_owner, set())
            members.discard(container_id)
            if not members:
                self._members.pop(before.network_owner, None)
        if observed is not None and observed.network_owner:
            self._members.setdefault(observed.network_owner, set()).add(container_id)
        if before is not None and (observed is None or observed.fingerprint != before.fingerprint):
            self._due |= self._members.get(container_id, set())
        if observed is not None and observed.retain:
            self.retained.add(container_id)
        elif container_id in self.retained:
            self.retained.discard(container_id)
            self.retained_dropped = True
        if draining_until is not None:
            self.draining[container_id] = draining_until
        else:
            self.draining.pop(container_id, None)
        if self.listing:
            self._since_listing.add(container_id)
        if before is not None and observed is not None and before.services == observed.services:
            return
        touched = set()
        for service in before.services if before is not None else ():
            touched.add(service.id)
            self._claims.get(service.id, {}).pop(container_id, None)
        for service in observed.services if observed is not None else ():
            touched.add(service.id)
            self._claims.setdefault(service.id, {})[container_id] = (observed.name if observed else "", service)
        for service_id in touched:
            self._resolve_claim(service_id)
        self.changed |= touched

    def _say(self, level: str, event: str, **fields: object) -> None:
        self.logged.append(Log(level, event, fields))

    def _label_problem(self, problem: Problem) -> None:
        self._say(
            "warning", "container_label_problem", container=problem.container, key=problem.key, problem=problem.message
        )

    def _log_news(self, observed: Observed, before: Observed | None) -> None:
        logged = before.problems if before is not None else ()
        for problem in observed.problems:
            if problem not in logged:
                self._label_problem(problem)
        if observed.note and (before is None or before.note != observed.note):
            self._say("info", "container_yields_nothing", container=observed.name, reason=observed.note)

    def _resolve_claim(self, service_id: str) -> None:
        """Decide which claim on this ID wins, by ``reconcile.desired_state``'s rule; warn of the others once."""
        claims = self._claims.get(service_id)
        before = self._problems.pop(service_id, set())
        if not claims:
            self._claims.pop(service_id, None)
            self.services.pop(service_id, None)
            return
        if len(claims) == 1:
            self.services[service_id] = next(iter(claims.values()))[1]
            return
        ordered = sorted(claims.values(), key=lambda claim: claim[0])
        desired, found = desired_state((service,) for _, service in ordered)
        self.services[service_id] = desired[service_id]
        problems = set(found)
        for problem in sorted(problems - before, key=lambda p: p.container):
            self._label_problem(problem)
        if problems:
            self._problems[service_id] = problems

    def due_inspects(self) -> list[str]:
        """Containers to inspect now because the container whose network they share changed (its
        addresses, its state, or it is gone): their addresses are its addresses."""
        due, self._due = self._due, set()
        return [cid for cid in sorted(due) if cid in self.containers and self.to_inspect(cid)]

    def pop_changed(self) -> set[str]:
        """The service IDs changed since the last call (the loop plans only those)."""
        changed, self.changed = self.changed, set()
        return changed

    # Inspects: this says which, the shell runs them, inspected() takes the answer ----------------

    def to_inspect(self, container_id: str) -> bool:
        """Whether to start an inspect of this container now; with one in flight, it is done again after."""
        if container_id in self.inspecting:
            self._after[container_id] = INSPECT_AGAIN
            return False
        self.inspecting.add(container_id)
        return True

    def inspected(self, container_id: str, observed: Observed | None, failed: bool) -> list[str]:
        """Take an inspect's answer, then what happened to the container meanwhile.

        Returns the containers to inspect now."""
        self.inspecting.discard(container_id)
        after = self._after.pop(container_id, None)
        kill = self._kills.pop(container_id, None)
        if not failed:
            # A container that is draining stays so: only its death or the drain's end ends it.
            self.record(
                container_id, observed, self.draining.get(container_id) if observed and observed.services else None
            )
        if kill is not None and (after is None or after.action not in ("die", "destroy")):
            self._drain(*kill)
        if after is INSPECT_AGAIN:
            return [container_id] if self.to_inspect(container_id) else []
        if after is not None:
            return self._apply_event(after)
        return []

    def apply_events(self, events: Iterable[DockerEvent], now: float) -> list[str]:
        """Update the containers these events are about (the last event of each); returns the containers to inspect.

        ``die`` says the container stopped and how, and ``destroy`` that it is gone: both are taken
        as they are, because an inspect right after ``die`` waits while Docker tears the container's
        network down. ``kill`` is set apart (it would otherwise hide the event before it): with the
        container's stop signal it starts a drain (once the inspect in flight, if any, is back: the
        stop signal is the container's). Anything else is a reason to inspect afresh. A
        container with an inspect in flight gets its last event applied once the inspect is back.
        """
        events = list(events)
        last: dict[str, DockerEvent] = {}
        for event in events:
            # A network's connect or disconnect says less than the container's own event before it
            # (a stop's disconnects come after its die).
            if event.action != "kill" and not (event.action in NETWORK_EVENTS and event.container_id in last):
                last[event.container_id] = event
        inspect: list[str] = []
        for event in last.values():
            cid = event.container_id
            if cid in self.inspecting:
                if event.action in ("die", "destroy"):
                    self._after[cid] = event
                elif event.action not in NETWORK_EVENTS or cid not in self._after:
                    self._after[cid] = INSPECT_AGAIN
            else:
                inspect += self._apply_event(event)
        # A kill says nothing of the container's state, so it costs no inspect; with the container's
        # stop signal (docker stop) its services drain, unless it has died or gone since.
        for event in {e.container_id: e for e in events if e.action == "kill"}.values():
            if last.get(event.container_id, event).action in ("die", "destroy"):
                continue
            if event.container_id in self.inspecting:
                self._kills[event.container_id] = (event, now)  # taken once the inspect is back
            else:
                self._drain(event, now)
        return inspect

    def _apply_event(self, event: DockerEvent) -> list[str]:
        if event.action in NETWORK_EVENTS:
            # Only a running container's network change is news: a start connects its networks before
            # its start event, and a stop disconnects them after its die.
            observed = self.containers.get(event.container_id)
            if observed is None or not observed.running:
                return []
        if event.action == "destroy":
            self.record(event.container_id, None)
        elif event.action == "die":
            previous = self.containers.get(event.container_id)
            name = event.name or (previous.name if previous else "")
            retain = kept_after_exit(self.settings, event.exit_code)
            if retain:
                self.logged.append(retained_log(name, event.exit_code))
            self.record(event.container_id, Observed(0, name, (), retain))
        elif self.to_inspect(event.container_id):
            return [event.container_id]
        return []

    # Listings ----------------------------------------------------------------------------------

    def inspect_all_again(self) -> None:
        """Forget every fingerprint, so the next listing inspects every container (a setting that
        every service depends on changed, such as the host address ``--ip eth1`` names)."""
        self.containers = {cid: replace(observed, fingerprint=0) for cid, observed in self.containers.items()}
        for cid in self.inspecting:  # an inspect in flight was built with the old setting
            if self._after.get(cid) is None:
                self._after[cid] = INSPECT_AGAIN

    def start_listing(self) -> bool:
        """Whether to start a listing now (one at a time)."""
        if self.listing:
            return False
        self.listing, self._since_listing = True, set()
        return True

    def listed(self, summaries: list[dict[str, Any]] | None) -> list[tuple[str, int]]:
        """Take a listing (None: it failed); returns (container ID, fingerprint) of each container to inspect.

        A container whose fingerprint is unchanged is not inspected again. One that is gone is
        dropped, and one that is not running yields nothing without an inspect, unless registrar
        learned of it after the listing was asked for: then the listing may be the older news (a
        container listed as created, then started and registered while the listing was on its way),
        and an inspect decides.
        """
        self.listing = False
        keep, self._since_listing = self._since_listing, set()
        if summaries is None:
            return []
        self.listed_once = True
        seen = set()
        inspect = []
        for summary in summaries:
            cid = str(summary["Id"])
            seen.add(cid)
            fingerprint = summary_fingerprint(summary)
            observed = self.containers.get(cid)
            if observed is not None and observed.fingerprint == fingerprint:
                continue
            if cid in self.inspecting:
                self.to_inspect(cid)  # again after the one in flight: it may have begun before this listing
            elif summary.get("State") != "running" and self.settings.deregister == "always" and cid not in keep:
                self.record(cid, Observed(fingerprint, "", ()))  # a stopped container yields nothing
            elif self.to_inspect(cid):
                inspect.append((cid, fingerprint))
        for cid in [c for c in self.containers if c not in seen and c not in self.inspecting and c not in keep]:
            self.record(cid, None)
        return inspect

    # Drain on stop -----------------------------------------------------------------------------

    def _drain(self, event: DockerEvent, now: float) -> None:
        observed = self.containers.get(event.container_id)
        if not self.settings.drain_on_stop or observed is None or not observed.services:
            return
        if event.signal != str(observed.stop_signal) or observed.stop_signal == signal.SIGKILL:
            return  # another signal; or SIGKILL, which leaves nothing to drain: the die follows at once
        self.record(event.container_id, observed, draining_until=now + observed.stop_timeout + DRAIN_GRACE_SECONDS)
        self._say(
            "info", "container_draining", container=observed.name, signal=event.signal, until_s=observed.stop_timeout
        )

    def draining_services(self) -> set[str]:
        """IDs of the services of containers that are draining."""
        return {s.id for cid in self.draining for s in self.containers[cid].services}

    def drain_deadline(self) -> float | None:
        """When the first drain ends unless its container dies first."""
        return min(self.draining.values(), default=None)

    def end_drains(self, now: float) -> list[DockerEvent]:
        """End the drains that have run out; each container needs a fresh look (a survivor returns to passing)."""
        over = [cid for cid, until in self.draining.items() if until <= now]
        for cid in over:
            self.record(cid, self.containers[cid])
        return [DockerEvent("drain_over", cid, self.containers[cid].name) for cid in over]
