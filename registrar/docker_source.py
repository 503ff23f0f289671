"""The Docker adapter: lists, inspects and streams events on one engine, and runs exec probes through
registrar.docker_exec. Decides nothing.

docker-py's low-level ``APIClient`` makes the connection and every request, whatever DOCKER_HOST names
(``unix://``, ``tcp://`` with or without TLS from DOCKER_TLS_VERIFY and DOCKER_CERT_PATH, ``ssh://`` when
paramiko is installed: it is not a dependency, nor in the image), on the API version the engine offers (its
``/version`` ApiVersion: engines refuse versions below their minimum, Docker 29's is 1.44). The listing and
the inspect (one per container event) are sent on the urllib3 pool of the session's adapter for that engine.
Every call is a read (``/version``, ``/_ping``, ``/info``, ``/containers/json``, ``/containers/<id>/json``,
``/events``), so registrar can run behind a read-only socket proxy, but for exec probes (``exec_probe``),
which only a container's ``SERVICE_CHECK_EXEC`` asks for. Library errors become DockerError in
registrar.docker_client (DockerUnreachable when the engine is down).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import docker
import docker.api.client
import docker.constants
import docker.errors
import requests
import urllib3

from registrar.docker_client import (
    LIBRARY_ERRORS,
    call,
    client,
    close_failed_connect,
    cut,
    end,
    engine_message,
    parse_body,
    reason,
)
from registrar.docker_exec import DockerExec
from registrar.docker_payloads import event_in_line, is_podman, summary_only
from registrar.errors import ConfigError, DockerError
from registrar.model import NETWORK_EVENTS, WATCHED_EVENTS, DockerEvent, ExecResult
from registrar.settings import Settings

#: The subscription on a Docker engine: only the watched events are sent, so the engine no longer
#: sends ``create``, ``stop``, nor the three ``exec_*`` events of every HEALTHCHECK run. With
#: ``health_status`` among them Docker matches the event values as prefixes (moby #25798), so
#: ``health_status: healthy`` and ``: unhealthy`` are sent.
DOCKER_FILTERS = {"type": ["container"], "event": sorted(WATCHED_EVENTS)}
#: With ``--internal``, also the network events that change a container's addresses (``docker network
#: connect``); the engine then sends a network's ``destroy`` too, which ``from_message`` drops.
DOCKER_NETWORK_FILTERS = {"type": ["container", "network"], "event": sorted(WATCHED_EVENTS + NETWORK_EVENTS)}
REPLAY_S = 1
"""A subscription asks for the events of the last second or two as well (``since``, whole seconds):
Docker answers ``GET /events`` before it subscribes (moby's ``getEvents`` flushes the head, then
calls ``SubscribeToEvents``), so without it an event between the two was lost, and with it the
listing that follows the subscription has the stream's events behind it. An event heard twice costs
an inspect; the engine keeps its last 256 events to replay."""
#: The subscription on Podman, which matches an ``event`` filter against its own event names
#: (``died``...), so a filter in Docker's names would hide stops from it: the events are picked here.
PODMAN_FILTERS = {"type": ["container"]}
PODMAN_NETWORK_FILTERS = {"type": ["container", "network"]}


class DockerSource:
    """Talks to one Docker engine (or Podman's Docker-compatible API) through docker-py."""

    def __init__(self, settings: Settings, environ: Mapping[str, str], timeout: float = 10.0) -> None:
        """Connect and agree on the API version; ConfigError for bad TLS settings or ssh:// without paramiko,
        DockerError when the engine cannot be reached or does not answer ``/version``."""
        self.where = settings.docker_host or environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        """The engine's address: ``--docker-host``, else DOCKER_HOST, else Docker's default socket."""
        self.timeout = timeout
        """Seconds each request may take (the event stream, once answered, has no timeout)."""
        self.labels = [value for kind, value in settings.filters if kind == "label"]
        """``--filter label=...``, asked of the engine too: the containers left out are not listed and (on Docker,
        when no network events are followed: those carry no labels) send no events, so cost no inspect."""
        self.networks = settings.internal or any(kind == "network" for kind, _ in settings.filters)
        """Follow network events too: with ``--internal`` a container's addresses are registered, and
        ``--filter network=NAME`` selects containers by their networks."""
        self._lock = threading.Lock()
        self._closed = False
        self._stream: Any = None
        """The open event stream (docker-py's CancellableStream), which ``close_events()`` ends."""
        self._subscription = 0
        """Counts ``close_events()`` calls: a subscription answered after one is ended at once."""
        self._exec: DockerExec | None = None
        """The exec probes, once connected."""
        try:
            # DOCKER_HOST set: docker-py reads an empty mapping as "use os.environ".
            kwargs: dict[str, Any] = docker.utils.kwargs_from_env(environment={**environ, "DOCKER_HOST": self.where})
        except docker.errors.DockerException as e:
            raise ConfigError(f"Docker TLS settings (DOCKER_TLS_VERIFY, DOCKER_CERT_PATH): {e}") from None
        if self.where.startswith("ssh://") and getattr(docker.api.client, "SSHHTTPAdapter", None) is None:
            raise ConfigError("ssh:// DOCKER_HOST needs paramiko: pip install paramiko")
        self.api: Any = None
        """docker-py's APIClient on the engine's API version: one requests session, its adapter's urllib3 pool."""
        try:
            # The version is agreed by a client whose version no request uses (``/version`` has none), so
            # that the environment's proxies and REQUESTS_CA_BUNDLE never apply (docker-py's "auto" asks
            # before trust_env can be turned off, and would verify a TLS engine against that bundle).
            with contextlib.closing(client(kwargs, docker.constants.DEFAULT_DOCKER_API_VERSION, timeout)) as asking:
                version = asking.version(api_version=False)
            if not isinstance(version, dict) or not version.get("ApiVersion"):
                raise DockerError("the answer to GET /version has no ApiVersion")
            self.api = client(kwargs, str(version["ApiVersion"]), timeout)
            self._pool = self._connection_pool()
        except (*LIBRARY_ERRORS, DockerError) as e:
            close_failed_connect(e)
            self.close()
            raise DockerError(f"cannot reach the Docker engine at {self.where}: {reason(e)}") from None
        self.api_version = str(self.api.api_version)
        """The API version the engine offers (its ``/version`` ApiVersion), in every request's path."""
        self.podman = is_podman(version)
        """Podman's Docker-compatible API (its ``/version`` names a "Podman Engine" component)."""
        self._headers = {"User-Agent": str(self.api.headers.get("User-Agent", "registrar"))}
        self._exec = DockerExec(self.api, self.api_version, self.where)

    def _connection_pool(self) -> Any:
        """The urllib3 pool that the session's adapter mounted for the engine keeps, with the session's
        TLS settings applied as requests applies them (it is the adapter's: ``api.close()`` closes it)."""
        url = f"{self.api.base_url}/"
        adapter = self.api.get_adapter(url)
        verify, cert = self.api.verify, self.api.cert
        if hasattr(adapter, "get_connection_with_tls_context"):  # requests >= 2.32.2, docker-py's adapters
            pool = adapter.get_connection_with_tls_context(requests.Request("GET", url).prepare(), verify, None, cert)
        else:  # requests 2.31's own adapter (tcp://)
            pool = adapter.get_connection(url)
        adapter.cert_verify(pool, url, verify, cert)
        return pool

    def _get(self, path: str, hook: Callable[[dict[str, Any]], Any] | None = None) -> tuple[int, Any]:
        """``GET /v<api><path>`` on the adapter's pool: the status and the answer parsed (``hook``:
        ``json.loads``'s object_hook, for a 200; another status's body may be text). Raises the libraries' errors."""
        url, options = f"/v{self.api_version}{path}", {"retries": False, "redirect": False, "timeout": self.timeout}
        try:
            response = self._pool.urlopen("GET", url, headers=self._headers, **options)
        except urllib3.exceptions.ClosedPoolError:
            # docker-py's unix and ssh adapters keep a pool per URL and close the least recently made
            # beyond ``num_pools``: the adapter makes this one again.
            if self._closed:
                raise
            self._pool = self._connection_pool()
            response = self._pool.urlopen("GET", url, headers=self._headers, **options)
        if response.status != 200:
            return response.status, parse_body(response.data)
        return 200, json.loads(response.data, object_hook=hook)

    def ping(self) -> None:
        """``GET /_ping``; raises DockerError unless the engine answers OK."""
        call(self.where, "pinging the Docker engine", self.api.ping)

    def host_name(self) -> str:
        """The engine's host name (``docker info`` Name); raises DockerError."""
        info = call(self.where, "reading docker info", self.api.info)
        if not isinstance(info, dict) or "Name" not in info:
            raise DockerError(f"reading docker info at {self.where}: the answer has no Name")
        return str(info["Name"])

    def list_containers(self) -> list[dict[str, Any]]:
        """Summaries of all containers (``GET /containers/json?all=1``, with ``--filter label=``'s), one
        request; each keeps only what ``summary_only`` keeps, as it is parsed. Raises DockerError."""
        what = "listing containers"
        query = urllib.parse.urlencode(
            {"all": 1, **({"filters": json.dumps({"label": self.labels})} if self.labels else {})}
        )
        status, body = call(self.where, what, lambda: self._get(f"/containers/json?{query}", summary_only))
        if status != 200 or not isinstance(body, list):
            raise DockerError(f"{what} at {self.where}: the engine answered {status} ({engine_message(body)})")
        return body

    def inspect(self, container_id: str) -> dict[str, Any] | None:
        """``docker inspect`` (``GET /containers/<id>/json``), or None when the container is gone; DockerError."""
        what = f"inspecting container {container_id[:12]}"
        path = f"/containers/{urllib.parse.quote(container_id, safe='')}/json"
        status, body = call(self.where, what, lambda: self._get(path))
        if status == 404:
            return None
        if status != 200 or not isinstance(body, dict):
            raise DockerError(f"{what} at {self.where}: the engine answered {status} ({engine_message(body)})")
        return body

    def exec_probe(self, container_id: str, args: tuple[str, ...], timeout: float, output_max: int) -> ExecResult:
        """Run ``args`` in the container and read its exit code and output (``DockerExec.run``); DockerError."""
        assert self._exec is not None, "connected"
        return self._exec.run(container_id, args, timeout, output_max)

    def cancel_probes(self) -> None:
        """End every probe's output stream in flight at once, and refuse new probes (registrar is stopping)."""
        if self._exec is not None:
            self._exec.cancel()

    def events(self) -> Iterator[DockerEvent]:
        """Subscribe to container events now, from a second or two ago (``REPLAY_S``), so a listing made
        afterwards misses nothing; the iterator then yields events until the stream ends (an engine that goes
        away ends it too: docker-py reads a broken stream as ended). Raises DockerError when the subscription
        fails; the iterator raises it when a read fails otherwise. On a Docker engine only the watched events
        are subscribed to; on Podman every container event is, and the watched ones are picked here
        (``PODMAN_FILTERS``). With ``--internal``, a network's ``connect`` and ``disconnect`` too, as events
        about the container they name."""
        what = "subscribing to Docker events"
        if self.podman:
            filters = PODMAN_NETWORK_FILTERS if self.networks else PODMAN_FILTERS
        else:
            filters = DOCKER_NETWORK_FILTERS if self.networks else DOCKER_FILTERS
            if self.labels and not self.networks:
                filters = {**filters, "label": self.labels}
        since = int(time.time()) - REPLAY_S
        with self._lock:
            if self._closed:
                raise DockerError(f"{what} at {self.where}: the adapter is closed")
            subscription = self._subscription
        # Lines are parsed here rather than by docker-py (decode=True), so a line that is no JSON is
        # skipped instead of ending the stream.
        stream = call(self.where, what, lambda: self.api.events(decode=False, filters=filters, since=since))
        response = stream._response  # docker-py reads the answer's status only at the first event
        with self._lock:
            current = not self._closed and subscription == self._subscription
            if current and response.status_code == 200:
                self._stream = stream
        if not current:  # close_events() while the engine answered
            end(stream)
            return iter(())
        if response.status_code != 200:
            try:
                message = engine_message(parse_body(response.content))
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError):
                message = "no message"
            end(stream)
            raise DockerError(f"{what} at {self.where}: the engine answered {response.status_code} ({message})")
        return self._read(stream)

    def _read(self, stream: Any) -> Iterator[DockerEvent]:
        """The events of the stream (JSON lines), until it ends or is closed: a chunked answer (one event a
        chunk) read a chunk at a time with urllib3's ``read_chunked`` (docker-py's reader reads a byte at a
        time), any other through docker-py's stream."""
        pending = b""
        raw = stream._response.raw
        chunks = raw.read_chunked(decode_content=False) if raw.chunked else stream
        try:
            for data in chunks:
                if self._stream is not stream:
                    return  # close_events(): what was buffered already is dropped
                lines = (pending + (data.encode() if isinstance(data, str) else data)).split(b"\n")
                pending = lines.pop()
                for line in lines:
                    event = event_in_line(line)
                    if event is not None:
                        yield event
            event = event_in_line(pending) if self._stream is stream else None
            if event is not None:
                yield event
        except urllib3.exceptions.ProtocolError:
            return  # the engine went away, or close_events() shut the socket: the stream ended, as docker-py reads it
        except LIBRARY_ERRORS as e:
            if self._stream is not stream:
                return  # close_events() shut the socket
            raise DockerError(f"Docker event stream at {self.where}: {reason(e)}") from None
        finally:
            with self._lock:
                if self._stream is stream:
                    self._stream = None
            end(stream)

    def close_events(self) -> None:
        """End the event stream: a thread reading events() returns at once, without an error; a subscription
        waiting for the engine's answer ends as soon as it comes. Safe to call from another thread."""
        with self._lock:
            self._subscription += 1
            stream, self._stream = self._stream, None
        if stream is not None:
            cut(stream)

    def close(self) -> None:
        """End the event stream and the probes, and close docker-py's session and pools; idempotent."""
        with self._lock:
            self._closed = True
        self.cancel_probes()
        self.close_events()
        if self.api is not None:
            self.api.close()
