"""The Docker adapter: lists, inspects and streams events. Decides nothing.

Uses docker-py's low-level APIClient (one keep-alive session); on a unix socket, the hot call,
``inspect``, goes through a urllib3 pool of its own instead (registrar.transport: ~0.5 ms less per
call than requests' Session). Every call made here is a read:
``GET /_ping``, ``/info``, ``/containers/json``, ``/containers/<id>/json`` and ``/events``, so
registrar can run behind a read-only Docker socket proxy. Library errors become DockerError here.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import docker
import docker.errors
import requests
import urllib3

from registrar.errors import ConfigError, DockerError
from registrar.model import DockerEvent
from registrar.settings import Settings
from registrar.transport import UnixConnectionPool

T = TypeVar("T")

#: Container events that can change what a container yields (Docker's names).
WATCHED_EVENTS = frozenset(("start", "die", "destroy", "rename", "pause", "unpause", "health_status", "kill"))
#: Podman's names for the same events, where they differ.
PODMAN_NAMES = {"remove": "destroy"}


class DockerSource:
    """Talks to one Docker engine."""

    def __init__(self, settings: Settings, environ: Mapping[str, str], timeout: float = 10.0) -> None:
        try:
            kwargs: dict[str, Any] = docker.utils.kwargs_from_env(environment=dict(environ))
        except docker.errors.DockerException as e:
            raise ConfigError(f"Docker TLS settings (DOCKER_TLS_VERIFY, DOCKER_CERT_PATH): {e}") from None
        if settings.docker_host:
            kwargs["base_url"] = settings.docker_host
        self.where = str(kwargs.get("base_url") or "unix:///var/run/docker.sock")
        try:
            self.api = docker.APIClient(version="auto", timeout=timeout, max_pool_size=16, **kwargs)
        except (docker.errors.DockerException, requests.RequestException, OSError) as e:
            raise DockerError(f"cannot reach the Docker engine at {self.where}: {_reason(e)}") from None
        # No per-request proxy/.netrc look-ups: they cost ~0.3 ms a call and the engine is no web site.
        self.api.trust_env = False
        self._stream: Any = None
        self._pool: UnixConnectionPool | None = None
        if self.where.startswith("unix://"):
            self._pool = UnixConnectionPool("/" + self.where.removeprefix("unix://").lstrip("/"), timeout)

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (docker.errors.DockerException, requests.RequestException, OSError) as e:
            raise DockerError(f"{what} at {self.where}: {_reason(e)}") from None

    def ping(self) -> None:
        self._call("pinging the Docker engine", self.api.ping)

    def host_name(self) -> str:
        """The engine's host name (``docker info`` Name)."""
        return str(self._call("reading docker info", self.api.info)["Name"])

    def list_containers(self) -> list[dict[str, Any]]:
        """Summaries of all containers (``GET /containers/json?all=1``), one request."""
        result: list[dict[str, Any]] = self._call("listing containers", lambda: self.api.containers(all=True))
        return result

    def inspect(self, container_id: str) -> dict[str, Any] | None:
        """``docker inspect``, or None when the container is gone."""
        if self._pool is not None:
            return self._inspect_on_socket(self._pool, container_id)
        try:
            result: dict[str, Any] = self.api.inspect_container(container_id)
        except docker.errors.NotFound:
            return None
        except (docker.errors.DockerException, requests.RequestException, OSError) as e:
            raise DockerError(f"inspecting container {container_id[:12]} at {self.where}: {_reason(e)}") from None
        return result

    def _inspect_on_socket(self, pool: UnixConnectionPool, container_id: str) -> dict[str, Any] | None:
        """``GET /v<api>/containers/<id>/json`` through the pool, on the API version docker-py agreed."""
        what = f"inspecting container {container_id[:12]} at {self.where}"
        try:
            response = pool.urlopen("GET", f"/v{self.api.api_version}/containers/{container_id}/json")
            status, body = response.status, json.loads(response.data or b"null")
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as e:
            raise DockerError(f"{what}: {_reason(e)}") from None
        if status == 404:
            return None
        if status != 200 or not isinstance(body, dict):
            message = body.get("message") if isinstance(body, dict) else None
            raise DockerError(f"{what}: the engine answered {status} ({message or 'no message'})")
        return body

    def events(self) -> Iterator[DockerEvent]:
        """Subscribe to container events now (the request is made before this returns), so a listing
        made afterwards misses nothing; the iterator then yields events until the stream ends."""
        # Filtered on the type only: Podman matches an ``event`` filter against its own event names
        # (``died``...), so a filter in Docker's names would hide stops from it. Events are picked here.
        stream = self._call(
            "subscribing to Docker events", lambda: self.api.events(decode=True, filters={"type": "container"})
        )
        self._stream = stream
        return self._read(stream)

    def _read(self, stream: Any) -> Iterator[DockerEvent]:
        try:
            for message in stream:
                event = from_message(message)
                if event is not None:
                    yield event
        except (docker.errors.DockerException, requests.RequestException, OSError, ValueError) as e:
            raise DockerError(f"Docker event stream at {self.where}: {_reason(e)}") from None
        finally:
            self._stream = None

    def close_events(self) -> None:
        """Unblock a thread reading events(); safe to call from another thread."""
        stream = self._stream
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()


def _reason(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]


def from_message(message: Mapping[str, Any]) -> DockerEvent | None:
    """The DockerEvent of a Docker or Podman event message, or None for one registrar does not watch.

    Podman's names are translated to Docker's (``remove`` is ``destroy``).
    """
    actor = message.get("Actor") or {}
    container_id = str(actor.get("ID") or message.get("id") or "")
    action = str(message.get("Action") or message.get("status") or "")
    action = PODMAN_NAMES.get(action, action)
    if not container_id or action.split(":", 1)[0] not in WATCHED_EVENTS:
        return None
    return to_event(action, container_id, actor)


def to_event(action: str, container_id: str, actor: Mapping[str, Any]) -> DockerEvent:
    """A DockerEvent from the Action and Actor of an event message."""
    attributes = actor.get("Attributes") or {}
    code = str(attributes.get("exitCode", ""))
    return DockerEvent(
        str(action),
        str(container_id),
        name=str(attributes.get("name", "")),
        exit_code=int(code) if code.lstrip("-").isdigit() else None,
        signal=str(attributes.get("signal", "")),
    )
