"""The Docker adapter: lists, inspects, streams events and runs exec probes on one engine. Decides nothing.

docker-py's low-level ``APIClient`` makes the connection and every request, whatever DOCKER_HOST names
(``unix://``, ``tcp://`` with or without TLS from DOCKER_TLS_VERIFY and DOCKER_CERT_PATH, ``ssh://`` when
paramiko is installed: it is not a dependency, nor in the image), on the API version the engine offers (its
``/version`` ApiVersion: engines refuse versions below their minimum, Docker 29's is 1.44). The listing and
the inspect (one per container event) are sent on the urllib3 pool of the session's adapter for that engine.
Every call is a read (``/version``, ``/_ping``, ``/info``, ``/containers/json``, ``/containers/<id>/json``,
``/events``), so registrar can run behind a read-only socket proxy, but for exec probes (``exec_probe``),
which only a container's ``SERVICE_CHECK_EXEC`` asks for. Library errors become DockerError here
(DockerUnreachable when the engine is down).
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
import traceback
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import docker
import docker.api.client
import docker.constants
import docker.errors
import requests
import requests.adapters
import urllib3

from registrar.docker_payloads import event_in_line, is_podman, summary_only
from registrar.errors import ConfigError, DockerError, DockerUnreachable
from registrar.model import NETWORK_EVENTS, WATCHED_EVENTS, DockerEvent, ExecResult
from registrar.settings import Settings

T = TypeVar("T")

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
#: What docker-py, requests and urllib3 raise.
LIBRARY_ERRORS = (docker.errors.DockerException, requests.RequestException, urllib3.exceptions.HTTPError, OSError)
POOL_SIZE = 16
"""Connections kept to the engine, as many as requests in flight at once (the workers' inspects)."""
UNREACHABLE = (
    requests.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.NewConnectionError,
    urllib3.exceptions.ConnectTimeoutError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.MaxRetryError,
    urllib3.exceptions.SSLError,
    OSError,
)
"""The libraries' errors that mean the engine is down, not one request (``DockerUnreachable``): refused,
reset, cut, no connection made in time. Not a read timeout: the engine took the request and did not answer
it in time, as Docker hangs on a container stuck in removal: that request's failure (a plain DockerError)."""


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
        self._probes: set[Any] = set()
        """The exec streams being read, which ``cancel_probes()`` ends."""
        self._probes_cancelled = False
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
            with contextlib.closing(_client(kwargs, docker.constants.DEFAULT_DOCKER_API_VERSION, timeout)) as asking:
                version = asking.version(api_version=False)
            if not isinstance(version, dict) or not version.get("ApiVersion"):
                raise DockerError("the answer to GET /version has no ApiVersion")
            self.api = _client(kwargs, str(version["ApiVersion"]), timeout)
            self._pool = self._connection_pool()
        except (*LIBRARY_ERRORS, DockerError) as e:
            _close_failed_connect(e)
            self.close()
            raise DockerError(f"cannot reach the Docker engine at {self.where}: {_reason(e)}") from None
        self.api_version = str(self.api.api_version)
        """The API version the engine offers (its ``/version`` ApiVersion), in every request's path."""
        self.podman = is_podman(version)
        """Podman's Docker-compatible API (its ``/version`` names a "Podman Engine" component)."""
        self._headers = {"User-Agent": str(self.api.headers.get("User-Agent", "registrar"))}

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

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()``, its libraries' errors raised as DockerError naming ``what`` and the engine: DockerUnreachable
        when the engine is down (``UNREACHABLE``), a plain DockerError for an answer that is an error or no
        JSON, or that did not come in time."""
        try:
            return fn()
        except docker.errors.APIError as e:
            message = e.explanation or "no message"
            raise DockerError(f"{what} at {self.where}: the engine answered {e.status_code} ({message})") from None
        except UNREACHABLE as e:
            _close_failed_connect(e)
            # requests raises a read timeout in an answer's body as a ConnectionError
            late = any(isinstance(a, urllib3.exceptions.ReadTimeoutError) for a in e.args[:1])
            raise (DockerError if late else DockerUnreachable)(f"{what} at {self.where}: {_reason(e)}") from None
        except (*LIBRARY_ERRORS, ValueError) as e:
            _close_failed_connect(e)
            raise DockerError(f"{what} at {self.where}: {_reason(e)}") from None

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
            return response.status, _json(response.data)
        return 200, json.loads(response.data, object_hook=hook)

    def ping(self) -> None:
        """``GET /_ping``; raises DockerError unless the engine answers OK."""
        self._call("pinging the Docker engine", self.api.ping)

    def host_name(self) -> str:
        """The engine's host name (``docker info`` Name); raises DockerError."""
        info = self._call("reading docker info", self.api.info)
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
        status, body = self._call(what, lambda: self._get(f"/containers/json?{query}", summary_only))
        if status != 200 or not isinstance(body, list):
            raise DockerError(f"{what} at {self.where}: the engine answered {status} ({_message(body)})")
        return body

    def inspect(self, container_id: str) -> dict[str, Any] | None:
        """``docker inspect`` (``GET /containers/<id>/json``), or None when the container is gone; DockerError."""
        what = f"inspecting container {container_id[:12]}"
        path = f"/containers/{urllib.parse.quote(container_id, safe='')}/json"
        status, body = self._call(what, lambda: self._get(path))
        if status == 404:
            return None
        if status != 200 or not isinstance(body, dict):
            raise DockerError(f"{what} at {self.where}: the engine answered {status} ({_message(body)})")
        return body

    def exec_probe(self, container_id: str, args: tuple[str, ...], timeout: float, output_max: int) -> ExecResult:
        """Run ``args`` in the container (Docker's exec API: create, start, inspect; no shell, no TTY) and
        read its output for ``timeout`` seconds at most: the exit code (None when cut at the timeout) and up
        to ``output_max`` bytes of stdout and stderr as they came (the rest is read and dropped). Raises
        DockerError when the engine refuses (the container is not running: 409), cannot be reached,
        or ``cancel_probes()`` ended the run.

        Docker has no call to stop an exec: a command cut at its timeout runs on in the container."""
        what = f"running a probe in container {container_id[:12]}"
        deadline = time.monotonic() + timeout
        self._refuse_when_cancelled(what)
        created = self._call(what, lambda: self.api.exec_create(container_id, list(args), stdout=True, stderr=True))
        exec_id = str(created["Id"])
        stream = self._call(what, lambda: self._exec_output(exec_id, max(0.01, deadline - time.monotonic())))
        cut = threading.Event()

        def at_deadline() -> None:
            cut.set()
            _cut(stream)

        # The output is read with no timeout: shutting the socket down at the deadline ends the read.
        watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), at_deadline)
        with self._lock:
            self._probes.add(stream)
        kept = bytearray()
        try:
            self._refuse_when_cancelled(what)
            watchdog.start()
            for data in stream:  # each frame's payload, stdout and stderr as they came; ends at EOF or shutdown
                room = output_max - len(kept)
                if room > 0:
                    kept += data[:room]
        except (struct.error, requests.RequestException, urllib3.exceptions.HTTPError, ValueError) as e:
            if not cut.is_set():  # a stream cut in a frame's head at the deadline has ended
                self._refuse_when_cancelled(what)
                raise DockerError(f"{what} at {self.where}: {_reason(e)}") from None
        finally:
            watchdog.cancel()
            with self._lock:
                self._probes.discard(stream)
            _end(stream)
        output = kept.decode("utf-8", "replace")
        self._refuse_when_cancelled(what)
        if cut.is_set():
            return ExecResult(None, output)
        state = self._call(what, lambda: self.api.exec_inspect(exec_id))
        code = state.get("ExitCode")
        if state.get("Running") or not isinstance(code, int):
            return ExecResult(None, output)
        return ExecResult(code, output)

    def _exec_output(self, exec_id: str, timeout: float) -> Any:
        """``POST /exec/<id>/start`` (attached, no TTY) on the session: docker-py's CancellableStream of the
        frames' payloads, read through the response rather than the socket under it (docker-py's exec_start
        reads the socket and loses the output its HTTP reader took with the answer's head: docker/docker-py#3332).
        The engine has ``timeout`` seconds to answer; raises APIError when it refuses."""
        url = f"{self.api.base_url}/v{self.api_version}/exec/{urllib.parse.quote(exec_id, safe='')}/start"
        response = self.api.post(url, json={"Detach": False, "Tty": False}, stream=True, timeout=timeout)
        if response.status_code != 200:
            with contextlib.closing(response):
                raise docker.errors.APIError(f"{response.status_code}", response, _message(_json(response.content)))
        return docker.types.CancellableStream(self.api._multiplexed_response_stream_helper(response), response)

    def _refuse_when_cancelled(self, what: str) -> None:
        with self._lock:
            if self._probes_cancelled:
                raise DockerError(f"{what} at {self.where}: registrar is stopping")

    def cancel_probes(self) -> None:
        """End every probe's output stream in flight at once, and refuse new probes (registrar is stopping)."""
        with self._lock:
            self._probes_cancelled = True
            probes = list(self._probes)
        for stream in probes:
            _cut(stream)

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
        stream = self._call(what, lambda: self.api.events(decode=False, filters=filters, since=since))
        response = stream._response  # docker-py reads the answer's status only at the first event
        with self._lock:
            current = not self._closed and subscription == self._subscription
            if current and response.status_code == 200:
                self._stream = stream
        if not current:  # close_events() while the engine answered
            _end(stream)
            return iter(())
        if response.status_code != 200:
            try:
                message = _message(_json(response.content))
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError):
                message = "no message"
            _end(stream)
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
            raise DockerError(f"Docker event stream at {self.where}: {_reason(e)}") from None
        finally:
            with self._lock:
                if self._stream is stream:
                    self._stream = None
            _end(stream)

    def close_events(self) -> None:
        """End the event stream: a thread reading events() returns at once, without an error; a subscription
        waiting for the engine's answer ends as soon as it comes. Safe to call from another thread."""
        with self._lock:
            self._subscription += 1
            stream, self._stream = self._stream, None
        if stream is not None:
            _cut(stream)

    def close(self) -> None:
        """End the event stream and the probes, and close docker-py's session and pools; idempotent."""
        with self._lock:
            self._closed = True
        self.cancel_probes()
        self.close_events()
        if self.api is not None:
            self.api.close()


def _client(kwargs: dict[str, Any], version: str, timeout: float) -> Any:
    """docker-py's APIClient (``kwargs``: DOCKER_HOST and TLS, from ``kwargs_from_env``) on ``version``, with
    no per-request proxy, .netrc or CA-bundle look-ups from the environment: the engine is no web site. Its
    pools keep ``POOL_SIZE`` connections: on tcp:// (where docker-py ignores ``max_pool_size``) an adapter
    of that size is mounted for http and https (TLS stays the session's ``verify`` and ``cert``)."""
    api = docker.APIClient(version=version, timeout=timeout, max_pool_size=POOL_SIZE, **kwargs)
    api.trust_env = False
    if not api.base_url.startswith("http+docker://"):
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=docker.constants.DEFAULT_NUM_POOLS, pool_maxsize=POOL_SIZE
        )
        for prefix in ("http://", "https://"):
            api.adapters[prefix].close()
            api.mount(prefix, adapter)
    return api


def _cut(stream: Any) -> None:
    """Shut down the socket of docker-py's stream, which ends a read blocked on it at once; any thread,
    idempotent. On ssh:// docker-py cannot cut a stream: it ends when the engine ends it."""
    with contextlib.suppress(docker.errors.DockerException, OSError):
        stream.close()


def _end(stream: Any) -> None:
    """Cut docker-py's stream and close its response: by the thread that reads it, once it is done."""
    _cut(stream)
    with contextlib.suppress(requests.RequestException, urllib3.exceptions.HTTPError, OSError):
        stream._response.close()


def _close_failed_connect(error: BaseException) -> None:
    """Close the socket a failed ``connect`` of docker-py's transport left open in ``error``'s traceback: its
    unix connection leaves it to the garbage collector (docker/docker-py#3356), one descriptor per attempt."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        for frame, _ in traceback.walk_tb(cause.__traceback__):
            sock, module = frame.f_locals.get("sock"), str(frame.f_globals.get("__name__", ""))
            ours = frame.f_code.co_name == "connect" and module.startswith("docker.transport")
            if ours and isinstance(sock, socket.socket):
                sock.close()
        cause = cause.__cause__ or cause.__context__


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
