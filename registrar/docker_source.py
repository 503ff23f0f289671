"""The Docker adapter: lists, inspects and streams events. Decides nothing.

On a unix socket every request goes through keep-alive connections of registrar's own
(registrar.transport): the ``/version`` request that agrees on the API version and tells a Podman
service from a Docker engine, the ping, ``docker info``, the listing (parsed keeping only what registrar
reads: ``summary_only``) and the hot call, ``inspect``; the event stream is read with the standard
library (``http.client``, one ``json.loads`` a line). docker-py is not imported there (it costs 1.7 MiB
and ~30 ms of each start). On any other DOCKER_HOST (``tcp://`` with or without TLS, ``ssh://``,
docker-py's ``http+unix://``) docker-py's low-level APIClient does it all (one keep-alive session).
Every call made here is a read: ``GET /version``, ``/_ping``, ``/info``, ``/containers/json``,
``/containers/<id>/json`` and ``/events``, so registrar can run behind a read-only Docker socket
proxy, but for exec probes (``exec_probe``: ``POST /containers/<id>/exec``, ``POST /exec/<id>/start``,
``GET /exec/<id>/json``), which only a container's ``SERVICE_CHECK_EXEC`` asks for. Library errors
become DockerError here.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from registrar.errors import ConfigError, DockerError
from registrar.model import NETWORK_EVENTS, WATCHED_EVENTS, DockerEvent, ExecResult
from registrar.settings import Settings
from registrar.transport import ConnectionPool, UnixHTTPConnection, unix_pool

T = TypeVar("T")

#: Podman's names for the same events, where they differ.
PODMAN_NAMES = {"remove": "destroy"}
#: The subscription on a Docker engine: only the watched events are sent, so the engine no longer
#: sends ``create``, ``stop``, nor the three ``exec_*`` events of every HEALTHCHECK run. With
#: ``health_status`` among them Docker matches the event values as prefixes (moby #25798), so
#: ``health_status: healthy`` and ``: unhealthy`` are sent (verified on Docker 20.10).
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
    """Talks to one Docker engine (or Podman's Docker-compatible API)."""

    def __init__(self, settings: Settings, environ: Mapping[str, str], timeout: float = 10.0) -> None:
        self.where = settings.docker_host or environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        """The engine's address: ``--docker-host``, else DOCKER_HOST, else Docker's default socket."""
        self.timeout = timeout
        self.labels = [value for kind, value in settings.filters if kind == "label"]
        """``--filter label=...``, asked of the engine too: the containers the filters leave out are not
        listed, and (on Docker, when no network events are followed: those carry no labels) send no
        events, so they cost no inspect."""
        self.networks = settings.internal or any(kind == "network" for kind, _ in settings.filters)
        """Follow network events too: with ``--internal`` a container's addresses are registered, and
        ``--filter network=NAME`` selects containers by their networks."""
        self._stream: Any = None
        """The open event stream: an EventStream, or docker-py's on other transports."""
        self._lock = threading.Lock()
        self._closed = False
        self._probe_sockets: set[socket.socket] = set()
        self._probes_cancelled = False
        self._pool: ConnectionPool | None = None
        self._socket_path = ""
        self.api: Any = None
        """docker-py's APIClient, off a unix socket only."""
        if self.where.startswith("unix://"):
            self._socket_path = "/" + self.where.removeprefix("unix://").lstrip("/")
            self._pool = unix_pool(self._socket_path, timeout)
            try:
                version = self._version_on_socket(self._pool)
                api_version = str(version.get("ApiVersion") or "") if isinstance(version, dict) else ""
                if not api_version:
                    raise DockerError("the answer to GET /version has no ApiVersion")
            except (DockerError, OSError) as e:
                self.close()
                raise DockerError(f"cannot reach the Docker engine at {self.where}: {_reason(e)}") from None
        else:
            version, api_version = self._connect_docker_py(environ, timeout)
        self.api_version = api_version
        """The API version the engine offers (its ``/version`` ApiVersion), in every request's path."""
        self.podman = is_podman(version)
        """Podman's Docker-compatible API (its ``/version`` names a "Podman Engine" component)."""

    def _connect_docker_py(self, environ: Mapping[str, str], timeout: float) -> tuple[Any, str]:
        """docker-py's APIClient on the engine (TLS from DOCKER_TLS_VERIFY and DOCKER_CERT_PATH, as the
        docker CLI reads them), agreeing on the engine's API version: its ``/version`` answer and that version."""
        import docker
        import docker.errors
        import requests

        try:
            # DOCKER_HOST set: docker-py reads an empty mapping as "use os.environ".
            kwargs: dict[str, Any] = docker.utils.kwargs_from_env(environment={**environ, "DOCKER_HOST": self.where})
        except docker.errors.DockerException as e:
            raise ConfigError(f"Docker TLS settings (DOCKER_TLS_VERIFY, DOCKER_CERT_PATH): {e}") from None
        try:
            self.api = docker.APIClient(version="auto", timeout=timeout, max_pool_size=16, **kwargs)
            version = self.api.version(api_version=False)
        except (docker.errors.DockerException, requests.RequestException, OSError) as e:
            self.close()
            raise DockerError(f"cannot reach the Docker engine at {self.where}: {_reason(e)}") from None
        # No per-request proxy/.netrc look-ups: they cost ~0.3 ms a call and the engine is no web site.
        self.api.trust_env = False
        return version, str(self.api.api_version)

    def _version_on_socket(self, pool: ConnectionPool) -> Any:
        try:
            response = pool.request("GET", "/version")
            status, body = response.status, json.loads(response.data or b"null")
        except (http.client.HTTPException, ValueError) as e:
            raise DockerError(_reason(e)) from None
        if status != 200:
            raise DockerError(f"the engine answered {status} to GET /version ({_message(body)})")
        return body

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """A docker-py call (off a unix socket); its library's errors become DockerError naming ``what``."""
        import docker.errors
        import requests

        try:
            return fn()
        except (docker.errors.DockerException, requests.RequestException, OSError) as e:
            raise DockerError(f"{what} at {self.where}: {_reason(e)}") from None

    def ping(self) -> None:
        """``GET /_ping``; raises DockerError unless the engine answers OK."""
        if self._pool is None:
            self._call("pinging the Docker engine", self.api.ping)
            return
        what = f"pinging the Docker engine at {self.where}"
        try:
            response = self._pool.request("GET", self._path("/_ping"))  # a 200 says "OK", in plain text
        except (http.client.HTTPException, OSError) as e:
            raise DockerError(f"{what}: {_reason(e)}") from None
        if response.status != 200:
            raise DockerError(f"{what}: the engine answered {response.status} ({_message(_json(response.data))})")

    def host_name(self) -> str:
        """The engine's host name (``docker info`` Name); raises DockerError."""
        if self._pool is None:
            return str(self._call("reading docker info", self.api.info)["Name"])
        what = f"reading docker info at {self.where}"
        status, body = self._get_on_socket(self._pool, what, self._path("/info"))
        if status != 200 or not isinstance(body, dict):
            raise DockerError(f"{what}: the engine answered {status} ({_message(body)})")
        if "Name" not in body:
            raise DockerError(f"{what}: the answer has no Name")
        return str(body["Name"])

    def list_containers(self) -> list[dict[str, Any]]:
        """Summaries of all containers (``GET /containers/json?all=1``, with ``--filter label=``'s), one request.

        On a unix socket each summary keeps only what ``summary_only`` keeps, as it is parsed."""
        filters = {"label": self.labels} if self.labels else None
        if self._pool is not None:
            return self._list_on_socket(self._pool, filters)
        result: list[dict[str, Any]] = self._call(
            "listing containers", lambda: self.api.containers(all=True, filters=filters)
        )
        return result

    def _list_on_socket(self, pool: ConnectionPool, filters: dict[str, list[str]] | None) -> list[dict[str, Any]]:
        """``GET /v<api>/containers/json`` through the pool: the whole answer of 500 containers (0.5 MB of
        JSON) parsed whole peaked at 2.5 MiB of Python objects, and the allocator kept 0.5 MiB of it."""
        what = f"listing containers at {self.where}"
        query = urllib.parse.urlencode({"all": 1, **({"filters": json.dumps(filters)} if filters else {})})
        path = self._path(f"/containers/json?{query}")
        status, body = self._get_on_socket(pool, what, path, summary_only)
        if status != 200 or not isinstance(body, list):
            raise DockerError(f"{what}: the engine answered {status} ({_message(body)})")
        return body

    def _get_on_socket(
        self, pool: ConnectionPool, what: str, path: str, hook: Callable[[dict[str, Any]], Any] | None = None
    ) -> tuple[int, Any]:
        """``GET path`` through the pool: the status and the answer parsed (``hook``: ``json.loads``'s
        object_hook, for a 200). Raises DockerError naming ``what``."""
        try:
            response = pool.request("GET", path)
            hook = hook if response.status == 200 else None
            return response.status, json.loads(response.data or b"null", object_hook=hook)
        except (http.client.HTTPException, OSError, ValueError) as e:
            raise DockerError(f"{what}: {_reason(e)}") from None

    def inspect(self, container_id: str) -> dict[str, Any] | None:
        """``docker inspect``, or None when the container is gone."""
        if self._pool is not None:
            return self._inspect_on_socket(self._pool, container_id)
        import docker.errors

        def inspect() -> dict[str, Any] | None:
            try:
                result: dict[str, Any] = self.api.inspect_container(container_id)
            except docker.errors.NotFound:
                return None
            return result

        return self._call(f"inspecting container {container_id[:12]}", inspect)

    def _inspect_on_socket(self, pool: ConnectionPool, container_id: str) -> dict[str, Any] | None:
        """``GET /v<api>/containers/<id>/json`` through the pool, on the engine's API version."""
        what = f"inspecting container {container_id[:12]} at {self.where}"
        status, body = self._get_on_socket(pool, what, self._path(f"/containers/{container_id}/json"))
        if status == 404:
            return None
        if status != 200 or not isinstance(body, dict):
            raise DockerError(f"{what}: the engine answered {status} ({_message(body)})")
        return body

    def exec_probe(self, container_id: str, args: tuple[str, ...], timeout: float, output_max: int) -> ExecResult:
        """Run ``args`` in the container (Docker's exec API: create, start, inspect; no shell, no TTY) and
        wait at most ``timeout`` seconds: the exit code (None when cut at the timeout) and up to
        ``output_max`` bytes of stdout and stderr as they came (the rest is read and dropped). Raises
        DockerError when the engine refuses (the container is not running: 409), cannot be reached,
        or ``cancel_probes()`` ended the run.

        Docker has no call to stop an exec: a command cut at its timeout runs on in the container."""
        what = f"running a probe in container {container_id[:12]} at {self.where}"
        if not self._socket_path:
            return self._exec_with_docker_py(what, container_id, args, output_max)
        deadline = time.monotonic() + timeout
        body = {"Cmd": list(args), "AttachStdout": True, "AttachStderr": True, "Tty": False}
        created = self._json_call(what, "POST", f"/containers/{container_id}/exec", json.dumps(body).encode(), deadline)
        exec_id = str(created["Id"])
        output = Demultiplexer(output_max)
        with self._probe_connection(what, deadline) as (connection, sock):
            try:
                payload = json.dumps({"Detach": False, "Tty": False}).encode()
                connection.request("POST", self._path(f"/exec/{exec_id}/start"), body=payload, headers=JSON_HEADERS)
                response = connection.getresponse()
                if response.status != 200:
                    message = _message(_json(response.read()))
                    raise DockerError(f"{what}: the engine answered {response.status} ({message})")
                while data := _read_before(sock, response, deadline):
                    output.feed(data)
            except TimeoutError:
                return ExecResult(None, output.text())
            except (http.client.HTTPException, OSError) as e:
                raise DockerError(f"{what}: {_reason(e)}") from None
        state = self._json_call(what, "GET", f"/exec/{exec_id}/json", None, deadline)
        code = state.get("ExitCode")
        if state.get("Running") or not isinstance(code, int):
            return ExecResult(None, output.text())
        return ExecResult(code, output.text())

    @contextlib.contextmanager
    def _probe_connection(self, what: str, deadline: float) -> Iterator[tuple[UnixHTTPConnection, socket.socket]]:
        """A connection of its own for one of a probe's requests, with the probe's deadline, and its
        socket, which ``cancel_probes()`` can shut from another thread (the connection lets go of it
        once a response that ends with the connection has begun: the response holds it then)."""
        connection = UnixHTTPConnection(self._socket_path, max(0.01, deadline - time.monotonic()))
        with self._lock:
            if self._probes_cancelled:
                raise DockerError(f"{what}: registrar is stopping")
        try:
            connection.connect()
        except OSError as e:
            connection.close()
            raise DockerError(f"{what}: {_reason(e)}") from None
        sock = connection.sock
        assert sock is not None
        with self._lock:
            self._probe_sockets.add(sock)
        try:
            yield connection, sock
        finally:
            with self._lock:
                self._probe_sockets.discard(sock)
            connection.close()
            sock.close()

    def cancel_probes(self) -> None:
        """End every probe's request in flight at once, and refuse new ones (registrar is stopping)."""
        with self._lock:
            self._probes_cancelled = True
            for sock in self._probe_sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _path(self, path: str) -> str:
        return f"/v{self.api_version}{path}"

    def _json_call(self, what: str, method: str, path: str, body: bytes | None, deadline: float) -> dict[str, Any]:
        """One of a probe's requests (create, inspect), answered before the probe's deadline."""
        with self._probe_connection(what, deadline) as (connection, _):
            try:
                connection.request(method, self._path(path), body=body, headers=JSON_HEADERS if body else {})
                response = connection.getresponse()
                status, answer = response.status, _json(response.read())
            except (http.client.HTTPException, OSError) as e:
                raise DockerError(f"{what}: {_reason(e)}") from None
        if status not in (200, 201) or not isinstance(answer, dict):
            raise DockerError(f"{what}: the engine answered {status} ({_message(answer)})")
        return answer

    def _exec_with_docker_py(self, what: str, container_id: str, args: tuple[str, ...], output_max: int) -> ExecResult:
        """On a TCP endpoint: docker-py's exec calls (the probe's timeout is the client's)."""

        def run() -> ExecResult:
            exec_id = self.api.exec_create(container_id, list(args))["Id"]
            output = self.api.exec_start(exec_id)
            code = self.api.exec_inspect(exec_id).get("ExitCode")
            return ExecResult(code if isinstance(code, int) else None, output[:output_max].decode("utf-8", "replace"))

        return self._call(what, run)

    def events(self) -> Iterator[DockerEvent]:
        """Subscribe to container events now, from a second or two ago (``REPLAY_S``), so a listing
        made afterwards misses nothing; the iterator then yields events until the stream ends.

        Raises DockerError when the subscription fails; the iterator raises it when the stream breaks.
        On a Docker engine only the watched events are subscribed to; on Podman every container event
        is, and the watched ones are picked here (``PODMAN_FILTERS``). With ``--internal``, a
        network's ``connect`` and ``disconnect`` too, as events about the container they name.
        """
        if self.podman:
            filters = PODMAN_NETWORK_FILTERS if self.networks else PODMAN_FILTERS
        else:
            filters = DOCKER_NETWORK_FILTERS if self.networks else DOCKER_FILTERS
            if self.labels and not self.networks:
                filters = {**filters, "label": self.labels}
        since = int(time.time()) - REPLAY_S
        if not self._socket_path:
            stream = self._call(
                "subscribing to Docker events", lambda: self.api.events(decode=True, filters=filters, since=since)
            )
            self._stream = stream
            return self._read(stream)
        query = urllib.parse.urlencode({"since": since, "filters": json.dumps(filters, separators=(",", ":"))})
        what = f"subscribing to Docker events at {self.where}"
        event_stream = EventStream(self._socket_path, self.timeout)
        with self._lock:
            if self._closed:
                raise DockerError(f"{what}: the adapter is closed")
            self._stream = event_stream  # from now on close_events() reaches it, even while it opens
        try:
            event_stream.open(self._path(f"/events?{query}"), what)
        except DockerError:
            self._forget(event_stream)
            raise
        return self._read_lines(event_stream)

    def _read_lines(self, stream: EventStream) -> Iterator[DockerEvent]:
        try:
            for line in stream.lines(f"Docker event stream at {self.where}"):
                try:
                    message = json.loads(line)
                except ValueError:
                    continue  # not an event: skipped
                if isinstance(message, dict):
                    event = from_message(message)
                    if event is not None:
                        yield event
        finally:
            self._forget(stream)

    def _read(self, stream: Any) -> Iterator[DockerEvent]:
        """docker-py's event stream (off a unix socket)."""
        import docker.errors
        import requests

        try:
            for message in stream:
                event = from_message(message)
                if event is not None:
                    yield event
        except (docker.errors.DockerException, requests.RequestException, OSError, ValueError) as e:
            raise DockerError(f"Docker event stream at {self.where}: {_reason(e)}") from None
        finally:
            self._forget(stream)

    def _forget(self, stream: Any) -> None:
        with self._lock:
            if self._stream is stream:
                self._stream = None

    def close_events(self) -> None:
        """Unblock a thread reading events() at once; safe to call from another thread."""
        stream = self._stream
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()

    def close(self) -> None:
        """Close the event stream, the probes' and the pool's connections and docker-py's session (TCP);
        idempotent."""
        with self._lock:
            self._closed = True
        self.cancel_probes()
        self.close_events()
        if self._pool is not None:
            self._pool.close()
        if self.api is not None:
            self.api.close()


JSON_HEADERS = {"Content-Type": "application/json"}


def _read_before(sock: socket.socket, response: http.client.HTTPResponse, deadline: float) -> bytes:
    """What has come of a stream, waiting until ``deadline`` at most (TimeoutError after it)."""
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    return response.read1(65536)


class Demultiplexer:
    """Docker's multiplexed exec stream, fed as it comes (frames of an 8-byte head: the stream, three
    zero bytes, the payload's length, big-endian): the payloads, stdout and stderr as they came, kept
    up to ``limit`` bytes; what comes after is dropped."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.kept = bytearray()
        self._head = b""
        self._left = 0
        """Payload bytes of the current frame still to come."""

    def feed(self, data: bytes) -> None:
        at = 0
        while at < len(data):
            if self._left == 0:
                need = 8 - len(self._head)
                self._head += data[at : at + need]
                at += need
                if len(self._head) == 8:
                    self._left, self._head = int.from_bytes(self._head[4:8], "big"), b""
                continue
            chunk = data[at : at + self._left]
            at += len(chunk)
            self._left -= len(chunk)
            room = self.limit - len(self.kept)
            if room > 0:
                self.kept += chunk[:room]

    def text(self) -> str:
        return bytes(self.kept).decode("utf-8", "replace")


def demultiplex(stream: bytes, output_max: int) -> str:
    """The output in a whole multiplexed exec stream, cut at ``output_max`` bytes (Demultiplexer)."""
    reader = Demultiplexer(output_max)
    reader.feed(stream)
    return reader.text()


class EventStream:
    """One ``GET /events`` on a unix socket, read with ``http.client``; one line is one event.

    The socket has the connect timeout until the engine has answered, then none: the stream may be
    quiet for hours (the daemon pings the engine when it is). ``close()``, from any thread, shuts the
    socket down, which ends a blocked read, or a subscription waiting for its answer, at once.
    """

    def __init__(self, socket_path: str, timeout: float) -> None:
        self.connection = UnixHTTPConnection(socket_path, timeout)
        self.response: http.client.HTTPResponse | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._reading = False

    def open(self, path: str, what: str) -> None:
        """Send the request and read the answer's head; raises DockerError unless it is a 200.

        A ``close()`` meanwhile is no error: it leaves a stream that has ended."""
        connection = self.connection
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            if response.status != 200:
                message = _message(_json(response.read(65536)))
                raise DockerError(f"{what}: the engine answered {response.status} ({message})")
        except (http.client.HTTPException, OSError, DockerError) as e:
            with self._lock:
                closed, self._closed = self._closed, True
                connection.close()
            if closed:
                return
            if isinstance(e, DockerError):
                raise
            raise DockerError(f"{what}: {_reason(e)}") from None
        with self._lock:
            if self._closed:
                connection.close()
                return
            if connection.sock is not None:
                connection.sock.settimeout(None)
            self.response = response

    def lines(self, what: str) -> Iterator[bytes]:
        """The stream's lines, until it ends (or ``close()``); raises DockerError when it breaks
        in the middle of a line or the socket fails."""
        with self._lock:
            if self._closed or self.response is None:
                return
            self._reading = True
        read, pending = self.response.read1, b""
        try:
            while True:
                try:
                    data = read(65536)  # the rest of the current chunk, as far as it has arrived
                except (http.client.HTTPException, OSError, ValueError) as e:
                    if self._closed or (not pending and isinstance(e, http.client.IncompleteRead)):
                        return  # closed here, or the engine went away between two events
                    raise DockerError(f"{what}: {_reason(e)}") from None
                if not data:  # the last chunk: the engine ended the stream
                    if pending.strip():
                        yield pending
                    return
                lines = (pending + data).split(b"\n")
                pending = lines.pop()
                for line in lines:
                    if line:
                        yield line
        finally:
            with self._lock:
                self._closed, self._reading = True, False
                self.connection.close()

    def close(self) -> None:
        """End the stream: a reader blocked in ``lines()`` returns at once. Any thread; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            sock = self.connection.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            if self._reading:
                # The reader's buffered file holds the socket open until it returns and closes it.
                if sock is not None:
                    sock.close()
            else:
                self.connection.close()


def is_podman(version: Any) -> bool:
    """Whether a ``GET /version`` answer is Podman's (a component named "Podman Engine")."""
    components = version.get("Components") if isinstance(version, dict) else None
    return isinstance(components, list) and any(
        "podman" in str(c.get("Name", "")).lower() for c in components if isinstance(c, dict)
    )


SUMMARY_FIELDS = ("Id", "Names", "State", "Status", "Ports", "NetworkSettings")
"""What registrar reads of a container's summary in a listing: its ID, and what
``registrar.cache.summary_fingerprint`` reads (of each network, only ``IPAddress``)."""


def summary_only(obj: dict[str, Any]) -> dict[str, Any]:
    """``json.loads``'s object_hook for ``GET /containers/json``: a summary (an object with an ``Id`` and a
    list of ``Names``) keeps ``SUMMARY_FIELDS``, a network endpoint (an object with a string ``NetworkID``)
    its ``IPAddress``; any other object is kept whole (the hook sees each object before the one that holds it,
    so the labels, mounts and host config of a summary are dropped with it)."""
    if isinstance(obj.get("Names"), list) and "Id" in obj:
        return {key: obj[key] for key in SUMMARY_FIELDS if key in obj}
    if isinstance(obj.get("NetworkID"), str) and "IPAddress" in obj:
        return {"IPAddress": obj["IPAddress"]}
    return obj


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip()


def _message(body: Any) -> str:
    """The engine's error message in an answer's body."""
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(body)[:300] if isinstance(body, str) and body else "no message"


def _reason(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]


def from_message(message: Mapping[str, Any]) -> DockerEvent | None:
    """The DockerEvent of a Docker or Podman event message, or None for one registrar does not watch.

    Podman's names are translated to Docker's (``remove`` is ``destroy``). A network's ``connect``
    and ``disconnect`` are events of the container they name: Docker's in the ``container`` attribute
    (its Actor is the network), Podman's in the Actor; other network events are dropped.
    """
    actor = message.get("Actor") or {}
    if message.get("Type") == "network":
        action = str(message.get("Action") or message.get("status") or "")
        container_id = str((actor.get("Attributes") or {}).get("container") or actor.get("ID") or "")
        return DockerEvent(action, container_id) if action in NETWORK_EVENTS and container_id else None
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
