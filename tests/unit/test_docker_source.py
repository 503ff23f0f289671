"""DockerSource through docker-py against a stand-in engine, on a unix socket, on TCP and on TCP with TLS: the
API version it agrees on, and exec probes (deadline, output cap, cancellation).

The stand-in answers as Docker 26 does (API 1.45, minimum 1.44): ``/version``, the listing, an inspect, an
event stream, and the exec API, whose start sends Docker's multiplexed frames as the test scripts them. On TLS
it serves the certificate under payloads/tls (see tests/unit/test_consul_client.py), which names 127.0.0.1.
"""

from __future__ import annotations

import http.server
import json
import logging
import queue
import shutil
import socket
import socketserver
import ssl
import tempfile
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker.api.client
import pytest
import structlog
from click.testing import CliRunner

from registrar.cli import cli
from registrar.docker_client import close_failed_connect
from registrar.docker_source import DockerSource
from registrar.errors import ConfigError, DockerError, DockerUnreachable
from registrar.model import ExecResult
from registrar.settings import Settings

WAIT = 10.0
"""A generous bound on any wait: a test that reaches it has failed."""
CID = "4fa8fd2b961392d54539d365a48923245eff6b469d19a0108daa5ffb82895136"
VERSION = {
    "ApiVersion": "1.45",
    "MinAPIVersion": "1.44",
    "Version": "26.1.5+dfsg1",
    "Components": [{"Name": "Engine", "Version": "26.1.5+dfsg1", "Details": {"ApiVersion": "1.45"}}],
}
TLS = Path(__file__).parent / "payloads" / "tls"
AT_ONCE = 16
"""Inspects in flight at once, as many as registrar's workers make."""
EVENT = {"Type": "container", "Action": "start", "Actor": {"ID": CID, "Attributes": {"name": "web"}}}


def frame(stream: int, data: bytes) -> bytes:
    """One frame of Docker's multiplexed exec stream (stdout 1, stderr 2)."""
    return bytes([stream, 0, 0, 0]) + len(data).to_bytes(4, "big") + data


class StandIn:
    """What the stand-in engine answers and saw. ``exec_frames``: what an exec's start sends; ``exec_ends``:
    whether it then ends the stream (else it holds it open until registrar closes it)."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.exec_frames: list[bytes] = []
        self.exec_ends = True
        self.events_end = True
        self.events_closed = threading.Semaphore(0)
        self.exec_started = threading.Event()
        self.exec_streams_closed = threading.Semaphore(0)
        self.release = threading.Event()
        """Lets the answer to ``/containers/slow/json`` go (it waits for it)."""
        self.gate = threading.Barrier(AT_ONCE)
        """The inspects of ``together`` are answered once ``AT_ONCE`` of them have come."""
        self.connections = 0
        """Connections accepted so far."""
        self.events_sent = threading.Event()
        """The event stream's head and first event have been sent."""
        self.stop_listening: Callable[[], None] = lambda: None
        """Closes the engine's listening socket (the connections it has stay)."""


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        with self.server.counting:
            self.server.state.connections += 1

    def do_GET(self) -> None:
        self.route()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.route()

    def route(self) -> None:
        state: StandIn = self.server.state
        state.requests.append(f"{self.command} {self.path}")
        path = urllib.parse.urlsplit(self.path).path
        if path == "/version":
            return self.answer(200, VERSION)
        version, _, rest = path.removeprefix("/v").partition("/")
        if tuple(map(int, version.split("."))) < (1, 44):
            message = f"client version {version} is too old. Minimum supported API version is 1.44"
            return self.answer(400, {"message": message})
        if rest == "containers/json":
            return self.answer(200, [{"Id": CID, "Names": ["/web"], "State": "running", "Labels": {"a": "b"}}])
        if rest == f"containers/{CID}/json":
            return self.answer(200, {"Id": CID, "Name": "/web"})
        if rest == "events":
            return self.stream_events()
        if rest == "containers/broken/json":
            return self.answer(500, {"message": "error getting container state"})
        if rest == "containers/garbled/json":
            return self.answer_raw(200, b"<html>proxy says hello</html>")
        if rest == "containers/listed/json":
            return self.answer(200, ["no", "object"])
        if rest == "containers/hangup/json":
            self.close_connection = True  # no answer: the connection is closed under the request
            return None
        if rest == "containers/slow/json":
            state.release.wait(WAIT)
            self.close_connection = True  # registrar is gone by now
            return None
        if rest == "containers/together/json":
            state.gate.wait(WAIT)
            return self.answer(200, {"Id": "together"})
        if rest.startswith("containers/") and rest.endswith("/exec"):
            return self.answer(201, {"Id": "e1"})
        if rest == "exec/e1/start":
            return self.stream_exec(state)
        if rest == "exec/e1/json":
            return self.answer(200, {"Running": False, "ExitCode": 3})
        return self.answer(404, {"message": f"No such container: {rest}"})

    def answer(self, status: int, body: Any) -> None:
        self.answer_raw(status, json.dumps(body).encode())

    def answer_raw(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def stream_events(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        line = json.dumps(EVENT).encode() + b"\n"
        state: StandIn = self.server.state
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.flush()
            state.events_sent.set()
            if state.events_end:
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.rfile.read()  # until registrar closes its end
        finally:
            state.events_closed.release()
            self.close_connection = True

    def stream_exec(self, state: StandIn) -> None:
        """As Docker hijacks the connection: 101 when asked to upgrade (else 200), then the frames (here in the
        same write as the head: a fast command's output can come with it), then the end (or hold the stream
        until registrar closes its end)."""
        upgrade = self.headers.get("Upgrade") == "tcp"
        head = (
            (b"HTTP/1.1 101 UPGRADED\r\n" if upgrade else b"HTTP/1.1 200 OK\r\n")
            + b"Content-Type: application/vnd.docker.raw-stream\r\n"
            + (b"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n" if upgrade else b"\r\n")
        )
        try:
            self.wfile.write(head + b"".join(state.exec_frames))
            self.wfile.flush()
            state.exec_started.set()
            if not state.exec_ends:
                self.rfile.read()  # until registrar closes its end
        except OSError:
            pass
        finally:
            state.exec_streams_closed.release()
            self.close_connection = True


class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    request_queue_size = 4 * AT_ONCE  # as Docker's backlog: a unix connect beyond it fails at once
    state = StandIn()
    counting = threading.Lock()


class TcpServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    request_queue_size = 4 * AT_ONCE
    state = StandIn()
    counting = threading.Lock()
    tls: ssl.SSLContext | None = None

    def get_request(self) -> tuple[Any, Any]:
        """The connection, in TLS when the server has a context (the handshake on the connection's thread)."""
        sock, address = super().get_request()
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address


@pytest.fixture(params=["unix", "tcp", "tls"])
def engine(request: pytest.FixtureRequest) -> Iterator[tuple[StandIn, Callable[[], DockerSource]]]:
    """A stand-in engine on a unix socket, on TCP or on TCP with TLS (DOCKER_TLS_VERIFY and DOCKER_CERT_PATH
    as the docker CLI reads them), and a way to connect DockerSources to it (closed after)."""
    state = StandIn()
    with tempfile.TemporaryDirectory(prefix="reg-", dir="/tmp") as d:
        server: UnixServer | TcpServer
        environ: dict[str, str] = {}
        if request.param == "unix":
            server = UnixServer(f"{d}/docker.sock", Handler)
            where = f"unix://{d}/docker.sock"
        else:
            server = TcpServer(("127.0.0.1", 0), Handler)
            where = f"tcp://127.0.0.1:{server.server_address[1]}"
        if isinstance(server, TcpServer) and request.param == "tls":
            server.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            server.tls.load_cert_chain(TLS / "server.pem", TLS / "server-key.pem")
            for name, as_named in (("ca.pem", "ca.pem"), ("server.pem", "cert.pem"), ("server-key.pem", "key.pem")):
                shutil.copy(TLS / name, f"{d}/{as_named}")  # a client certificate the stand-in does not ask for
            environ = {"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": d}
        server.state = state

        def stop_listening() -> None:
            server.shutdown()
            server.server_close()

        state.stop_listening = stop_listening
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        sources: list[DockerSource] = []

        def connect() -> DockerSource:
            sources.append(DockerSource(Settings(docker_host=where), environ, timeout=2.0))
            return sources[-1]

        try:
            yield state, connect
        finally:
            for source in sources:
                source.close()
            server.shutdown()
            server.server_close()


Engine = tuple[StandIn, Callable[[], DockerSource]]


def probe_on_a_thread(source: DockerSource, timeout: float, output_max: int) -> queue.SimpleQueue[object]:
    """Run a probe on a thread: its result, or the error it raised, lands in the queue."""
    out: queue.SimpleQueue[object] = queue.SimpleQueue()

    def run() -> None:
        try:
            out.put(source.exec_probe(CID, ("check",), timeout, output_max))
        except Exception as e:
            out.put(e)

    threading.Thread(target=run, daemon=True).start()
    return out


def test_an_engine_that_refuses_old_api_versions_is_spoken_to_in_its_own(engine: Engine) -> None:
    """An engine at API 1.45 that refuses versions below 1.44 (as Docker 29 refuses them): registrar lists,
    inspects and subscribes on the version the engine offers."""
    state, connect = engine
    source = connect()
    assert [c["Id"] for c in source.list_containers()] == [CID]
    assert source.inspect(CID) == {"Id": CID, "Name": "/web"}
    assert source.inspect("0123456789ab") is None
    assert [(e.action, e.name) for e in source.events()] == [("start", "web")]
    versioned = [r.split()[1].split("/")[1] for r in state.requests if not r.endswith(" /version")]
    assert versioned and set(versioned) == {"v1.45"}


def test_the_environments_http_proxy_is_not_used_for_the_engine(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY/HTTPS_PROXY set for other programs (here a proxy that is down) are not used to reach the engine,
    from the first request on (as REQUESTS_CA_BUNDLE is not used to verify a TLS engine)."""
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    _, connect = engine
    assert connect().inspect(CID) == {"Id": CID, "Name": "/web"}


def test_close_events_unblocks_a_reader_at_once(engine: Engine) -> None:
    """close_events() from another thread ends a reader blocked on a quiet stream, without an error, and
    closes the stream's connection."""
    state, connect = engine
    state.events_end = False
    source = connect()
    out: queue.SimpleQueue[object] = queue.SimpleQueue()
    heard: list[str] = []
    first = threading.Event()

    def read() -> None:
        try:
            for e in source.events():
                heard.append(e.action)
                first.set()  # the reader goes back to the socket, where nothing more comes
            out.put(heard)
        except Exception as e:
            out.put(e)

    threading.Thread(target=read, daemon=True).start()
    assert state.events_sent.wait(WAIT) and first.wait(WAIT), "the stream's first event never reached the reader"
    source.close_events()
    assert out.get(timeout=WAIT) == ["start"]
    assert state.events_closed.acquire(timeout=WAIT)


def test_inspect_keeps_working_after_many_other_requests(engine: Engine) -> None:
    """Inspects still answer after probes in 40 containers (docker-py's unix adapter keeps a pool per URL and
    closes the least recently made beyond 25, the inspects' among them)."""
    _, connect = engine
    source = connect()
    assert source.inspect(CID) == {"Id": CID, "Name": "/web"}
    for n in range(40):
        assert source.exec_probe(f"{n:064x}", ("check",), 5.0, 4096).exit_code == 3
    assert source.inspect(CID) == {"Id": CID, "Name": "/web"}


def test_a_probe_that_never_ends_is_cut_at_its_timeout(engine: Engine) -> None:
    """An exec that prints and never ends: the probe returns at its timeout with no exit code and what it
    printed, and its stream is closed."""
    state, connect = engine
    state.exec_frames, state.exec_ends = [frame(1, b"tick\n")], False
    out = probe_on_a_thread(connect(), timeout=0.5, output_max=4096)
    assert out.get(timeout=WAIT) == ExecResult(None, "tick\n")
    assert state.exec_streams_closed.acquire(timeout=WAIT)


def test_a_probes_output_is_kept_up_to_its_maximum(engine: Engine) -> None:
    """An exec that prints 200 kB on stdout and stderr: the probe keeps the first ``output_max`` bytes as
    they came, reads the rest, and returns the exit code."""
    state, connect = engine
    state.exec_frames = [frame(1, b"out "), frame(2, b"err "), frame(1, b"x" * 100_000), frame(2, b"y" * 100_000)]
    result = probe_on_a_thread(connect(), timeout=5.0, output_max=12).get(timeout=WAIT)
    assert result == ExecResult(3, "out err xxxx")


def test_output_that_comes_with_the_answers_head_is_kept(engine: Engine) -> None:
    """A fast command's output sent in the same packet as the answer's head is all there (docker-py's exec_start
    reads the socket under the HTTP reader and loses what that reader took: docker/docker-py#3332)."""
    state, connect = engine
    state.exec_frames = [frame(1, b"ready\n"), frame(2, b"warm\n")]
    result = probe_on_a_thread(connect(), timeout=5.0, output_max=4096).get(timeout=WAIT)
    assert result == ExecResult(3, "ready\nwarm\n")


def test_cancel_probes_ends_a_probe_in_flight_and_refuses_new_ones(engine: Engine) -> None:
    """cancel_probes() (registrar stopping) ends a probe waiting on a long command long before its timeout,
    with a DockerError, and a probe asked for afterwards is refused without a request."""
    state, connect = engine
    state.exec_frames, state.exec_ends = [frame(1, b"tick\n")], False
    source = connect()
    out = probe_on_a_thread(source, timeout=60.0, output_max=4096)
    assert state.exec_started.wait(WAIT)
    source.cancel_probes()
    error = out.get(timeout=WAIT)
    assert isinstance(error, DockerError) and str(error).endswith(": registrar is stopping")
    assert state.exec_streams_closed.acquire(timeout=WAIT)
    seen = len(state.requests)
    with pytest.raises(DockerError, match=r"^running a probe in container 4fa8fd2b9613 at .*: registrar is stopping$"):
        source.exec_probe(CID, ("check",), 1.0, 4096)
    assert len(state.requests) == seen


def test_an_inspect_the_engine_answers_with_an_error_is_a_plain_docker_error(engine: Engine) -> None:
    """An inspect answered with a 500, with a body that is no JSON, or with JSON that is no object raises a
    DockerError that is not DockerUnreachable: the engine answered (the loop retries that container alone)."""
    _, connect = engine
    source = connect()
    for name, message in (("broken", "answered 500"), ("garbled", "Expecting value"), ("listed", "answered 200")):
        with pytest.raises(DockerError, match=message) as caught:
            source.inspect(name)
        assert not isinstance(caught.value, DockerUnreachable), name
    assert source.inspect(CID) == {"Id": CID, "Name": "/web"}, "the connection is still good"


def test_an_inspect_the_engine_does_not_answer_in_time_is_a_plain_docker_error(engine: Engine) -> None:
    """An inspect the engine takes in and does not answer in time raises a DockerError that is not DockerUnreachable."""
    state, connect = engine
    source = connect()
    source.timeout = 0.2
    try:
        with pytest.raises(DockerError, match=r"^inspecting container slow at .*[Tt]imed? ?out") as caught:
            source.inspect("slow")
    finally:
        state.release.set()
    assert not isinstance(caught.value, DockerUnreachable)
    assert source.inspect(CID) == {"Id": CID, "Name": "/web"}


def test_an_inspect_that_cannot_reach_the_engine_raises_docker_unreachable(engine: Engine) -> None:
    """An inspect closed unanswered or refused raises DockerUnreachable, naming the container and the engine."""
    state, connect = engine
    source = connect()
    source.timeout = 0.2
    with pytest.raises(DockerUnreachable, match=r"^inspecting container hangup at "):
        source.inspect("hangup")
    assert source.inspect(CID) == {"Id": CID, "Name": "/web"}, "on a new connection"
    state.stop_listening()
    with pytest.raises(DockerUnreachable):
        source.inspect("hangup")  # on the connection kept from before, which the engine then closes
    with pytest.raises(DockerUnreachable, match=r"^inspecting container 4fa8fd2b9613 at .*[Rr]efused"):
        source.inspect(CID)  # a new connection is refused


def test_inspects_at_once_keep_their_connections_on_every_kind_of_engine(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """16 inspects at once keep their connections for the next 16, on TCP and TLS as on the unix socket."""
    state, connect = engine
    source = connect()

    def inspect() -> object:
        try:
            return source.inspect("together")
        except DockerError as e:
            return e

    def together() -> None:
        out: queue.SimpleQueue[object] = queue.SimpleQueue()
        for _ in range(AT_ONCE):
            threading.Thread(target=lambda: out.put(inspect()), daemon=True).start()
        assert [out.get(timeout=WAIT) for _ in range(AT_ONCE)] == [{"Id": "together"}] * AT_ONCE
        state.gate.reset()

    with caplog.at_level(logging.WARNING, logger="urllib3"):
        together()
        made = state.connections
        together()
    assert state.connections == made, "connections closed after the first inspects were made again"
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()]


def test_an_ssh_engine_without_paramiko_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """ssh:// without paramiko: one line naming it and exit 3, at once (no attempt to connect is retried)."""
    monkeypatch.delattr(docker.api.client, "SSHHTTPAdapter", raising=False)  # as docker-py is without paramiko
    message = "ssh:// DOCKER_HOST needs paramiko: pip install paramiko"
    with pytest.raises(ConfigError) as caught:
        DockerSource(Settings(docker_host="ssh://registrar@192.0.2.1"), {})
    assert str(caught.value) == message
    args = ["sync", "--retry-attempts", "2", "--retry-interval", "1", "--log-level", "warning"]
    try:
        result = CliRunner().invoke(cli, args, env={"DOCKER_HOST": "ssh://registrar@192.0.2.1"})
    finally:
        structlog.reset_defaults()  # the command set up the process's logging
    assert (result.exit_code, result.output.strip().splitlines()) == (3, [f"registrar: {message}"])


def test_only_a_failed_connect_in_docker_pys_transport_has_its_socket_closed() -> None:
    """A failed ``connect``'s socket is closed in docker-py's transport only, never another ``connect``'s."""
    made: list[socket.socket] = []
    code = "def connect(made):\n    sock = socket.socket()\n    made.append(sock)\n    raise OSError('refused')\n"
    transport: dict[str, Any] = {"__name__": "docker.transport.unixconn", "socket": socket}
    exec(compile(code, "<docker.transport.unixconn>", "exec"), transport)

    def connect() -> None:
        sock = socket.socket()
        made.append(sock)
        transport["connect"](made)

    try:
        connect()
    except OSError as e:
        close_failed_connect(e)
    try:
        assert made[0].fileno() != -1, "another connect's socket was closed"
        assert made[1].fileno() == -1, "docker-py's failed connect left its socket open"
    finally:
        for sock in made:
            sock.close()
