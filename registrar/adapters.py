"""What the loop needs from Docker and from Consul: the two adapter protocols.

registrar.docker_source and registrar.consul_sink implement them on the real systems; the unit
tests drive the loop with in-memory ones (tests/unit/fakes.py). Neither decides anything: they make
requests and translate their library's errors into DockerError and ConsulError.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from registrar.model import DockerEvent, ExecResult, Health, Service


class ContainerSource(Protocol):
    """A Docker engine (or Podman's Docker-compatible API)."""

    def list_containers(self) -> list[dict[str, Any]]:
        """``GET /containers/json?all=1``: a summary of every container."""
        ...

    def inspect(self, container_id: str) -> dict[str, Any] | None:
        """``GET /containers/<id>/json``, or None when the container is gone."""
        ...

    def events(self) -> Iterator[DockerEvent]:
        """Subscribe now (before returning); then the container events until the stream ends."""
        ...

    def close_events(self) -> None:
        """Unblock a thread reading ``events()`` (from any thread)."""
        ...

    def ping(self) -> None:
        """``GET /_ping``; raises DockerError when the engine does not answer."""
        ...

    def exec_probe(self, container_id: str, args: tuple[str, ...], timeout: float, output_max: int) -> ExecResult:
        """Run a command in the container (Docker's exec API), waiting at most ``timeout`` seconds."""
        ...

    def cancel_probes(self) -> None:
        """End every ``exec_probe`` in flight at once, and refuse new ones (from any thread)."""
        ...

    def close(self) -> None:
        """Close every connection (idempotent)."""
        ...


class ServiceSink(Protocol):
    """A Consul agent (registrar.consul_sink); or, with ``--catalog``, Consul's catalog under this host's own
    external node (registrar.catalog_sink): it reads ``/v1/catalog/node/<node>`` where the agent's services are
    read, and keeps their rules (the answer's shape, the digest; a service already gone, or a status update of
    a check not there, counts as done)."""

    def services(self) -> dict[str, Any]:
        """``GET /v1/agent/services``: every service registered with the agent, by ID."""
        ...

    def read_services(self, unless: int = 0, filter: str = "") -> tuple[int, dict[str, Any] | None]:
        """``GET /v1/agent/services``: (a digest of the answer, every service by ID, or those Consul's
        ``filter`` expression selects: an agent may send more, as one older than 1.4 does; of each service
        its ``Meta`` at least, all the loop reads of it); the services are None, the answer not parsed,
        when the digest is ``unless`` (the answer that digest was made of)."""
        ...

    def register(self, service: Service) -> None: ...
    def deregister(self, service_id: str) -> None: ...
    def pass_ttl(self, check_id: str) -> bool:
        """Keep registrar's TTL check passing; False: nothing sent, the sink holds it so already."""
        ...

    def set_health(self, health: Health) -> bool:
        """Put a status and output on its check; False: nothing sent, the sink holds it so already."""
        ...

    def maintenance(self, service_id: str, enable: bool) -> None: ...

    def close(self) -> None:
        """Close every connection (idempotent)."""
        ...
