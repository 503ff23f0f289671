"""In-memory Docker and Consul that satisfy registrar's ContainerSource / ServiceSink protocols (registrar.adapters)."""

from __future__ import annotations

import copy
import json
import queue
import threading
from collections.abc import Iterator
from typing import Any

from registrar.errors import ConsulError, ConsulRejected, DockerError
from registrar.model import DockerEvent, ExecResult, Health, Service


class MemoryDocker:
    """Containers as inspect payloads; events pushed by the test."""

    def __init__(self, *containers: dict[str, Any]) -> None:
        self.containers = {c["Id"]: c for c in containers}
        self.inspects = 0
        self.subscriptions = 0
        self.answers_ping = True
        self.inspect_errors: dict[str, list[Exception]] = {}
        """Container ID -> errors its next inspects raise, one each, before it is answered again."""
        self._events: queue.Queue[DockerEvent | None] = queue.Queue()
        self.exec_results: dict[str, ExecResult] = {}
        """Container ID -> what an exec probe in it gives (default: exit 0, no output)."""
        self.execs: list[tuple[str, tuple[str, ...]]] = []

    def list_containers(self) -> list[dict[str, Any]]:
        return [
            {"Id": cid, "State": c["State"]["Status"], "Status": "", "Names": [c["Name"]]}
            for cid, c in self.containers.items()
        ]

    def inspect(self, container_id: str) -> dict[str, Any] | None:
        self.inspects += 1
        errors = self.inspect_errors.get(container_id)
        if errors:
            raise errors.pop(0)
        return self.containers.get(container_id)

    def events(self) -> Iterator[DockerEvent]:
        self.subscriptions += 1
        while (item := self._events.get()) is not None:
            yield item

    def close_events(self) -> None:
        self._events.put(None)

    def exec_probe(self, container_id: str, args: tuple[str, ...], timeout: float, output_max: int) -> ExecResult:
        self.execs.append((container_id, args))
        if container_id not in self.containers:
            raise DockerError(f"No such container: {container_id}")
        result = self.exec_results.get(container_id, ExecResult(0, ""))
        return ExecResult(result.exit_code, result.output[:output_max])

    def cancel_probes(self) -> None:
        pass

    def ping(self) -> None:
        if not self.answers_ping:
            self.answers_ping = True  # answers again after one failure
            raise DockerError("ping timed out")

    def close(self) -> None:
        self.close_events()

    def emit(self, action: str, container_id: str, exit_code: int | None = None, signal: str = "") -> None:
        c = self.containers.get(container_id) or {}
        self._events.put(DockerEvent(action, container_id, str(c.get("Name", "")).lstrip("/"), exit_code, signal))


class MemoryConsul:
    """An agent's service list; ``down`` makes every call fail."""

    def __init__(self) -> None:
        self.registered: dict[str, dict[str, Any]] = {}
        self.writes = 0
        self.reads = 0
        self.down = False
        self.refuse: set[str] = set()
        self.attempts: dict[str, int] = {}
        self.changed = threading.Condition()
        self.health: dict[str, tuple[str, str]] = {}
        self.in_maintenance: set[str] = set()
        self.unchanged_reads = 0
        """Reads answered "the same as the read whose digest you give" (``read_services``)."""
        self.parsed_reads = 0
        """Reads answered with the services (parsed, on a real agent)."""

    def restart(self) -> None:
        """The agent restarts and comes back empty, as a dev agent does (registrar may be told on the
        connections it kept, as behind a proxy that keeps them)."""
        self.registered.clear()
        self.health.clear()
        self.in_maintenance.clear()

    def _check(self) -> None:
        if self.down:
            raise ConsulError("connection refused")

    def services(self) -> dict[str, Any]:
        self.reads += 1
        self._check()
        return {k: {"ID": k, "Meta": v["Meta"]} for k, v in self.registered.items()}

    def read_services(self, unless: int = 0, filter: str = "") -> tuple[int, dict[str, Any] | None]:
        services = self.services()  # ``filter`` ignored, as an agent older than 1.4 does: owned_services decides
        digest = hash(json.dumps(services, sort_keys=True))
        if digest == unless:
            self.unchanged_reads += 1
            return digest, None
        self.parsed_reads += 1
        return digest, services

    def register(self, service: Service) -> None:
        self._check()
        self.attempts[service.id] = self.attempts.get(service.id, 0) + 1
        if service.id in self.refuse:
            raise ConsulRejected(f"registering {service.id}: Consul refused it (400)")
        with self.changed:
            self.writes += 1
            self.registered[service.id] = service.to_consul()
            self.changed.notify_all()

    def deregister(self, service_id: str) -> None:
        self._check()
        with self.changed:
            self.writes += 1
            self.registered.pop(service_id, None)
            self.changed.notify_all()

    def pass_ttl(self, check_id: str) -> bool:
        self._check()
        return True

    def maintenance(self, service_id: str, enable: bool) -> None:
        self._check()
        with self.changed:
            if enable:
                self.in_maintenance.add(service_id)
            else:
                self.in_maintenance.discard(service_id)
            self.changed.notify_all()

    def set_health(self, health: Health) -> bool:
        self._check()
        with self.changed:
            self.health[health.check_id] = (health.status, health.output)
            self.changed.notify_all()
        return True

    def close(self) -> None:
        pass

    def wait_for(self, predicate: Any, timeout: float = 5.0) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: predicate(self.registered), timeout), self.registered


class SlowDocker(MemoryDocker):
    """Inspects of the containers in ``held`` wait until the test releases them (or 5 s pass)."""

    def __init__(self, *containers: dict[str, Any]) -> None:
        super().__init__(*containers)
        self.held: dict[str, threading.Event] = {}
        self.timed_out: list[str] = []

    def start(self, c: dict[str, Any]) -> None:
        self.containers[c["Id"]] = c
        self.emit("start", c["Id"])

    def hold(self, container_id: str) -> threading.Event:
        self.held[container_id] = gate = threading.Event()
        return gate

    def inspect(self, container_id: str) -> dict[str, Any] | None:
        found = copy.deepcopy(self.containers.get(container_id))  # the state when the inspect began
        gate = self.held.get(container_id)
        if gate is not None and not gate.wait(5):
            self.timed_out.append(container_id)
        self.inspects += 1
        return found
