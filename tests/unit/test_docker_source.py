"""DockerSource through docker-py against a stand-in engine, on a unix socket and on TCP: the API version it
agrees on, and exec probes (deadline, output cap, cancellation).

The stand-in answers as Docker 26 does (API 1.45, minimum 1.44): ``/version``, the listing, an inspect, an
event stream, and the exec API, whose start sends Docker's multiplexed frames as the test scripts them.
"""

from __future__ import annotations

import http.server
import json
import queue
import socketserver
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from registrar.docker_source import DockerSource
from registrar.errors import DockerError, DockerUnreachable
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
        self.stop_listening: Callable[[], None] = lambda: None
        """Closes the engine's listening socket (the connections it has stay)."""


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        pass

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
    state = StandIn()


class TcpServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    state = StandIn()


@pytest.fixture(params=["unix", "tcp"])
def engine(request: pytest.FixtureRequest) -> Iterator[tuple[StandIn, Callable[[], DockerSource]]]:
    """A stand-in engine on a unix socket or on TCP, and a way to connect DockerSources to it (closed after)."""
    state = StandIn()
    with tempfile.TemporaryDirectory(prefix="reg-", dir="/tmp") as d:
        server: UnixServer | TcpServer
        if request.param == "unix":
            server = UnixServer(f"{d}/docker.sock", Handler)
            where = f"unix://{d}/docker.sock"
        else:
            server = TcpServer(("127.0.0.1", 0), Handler)
            where = f"tcp://127.0.0.1:{server.server_address[1]}"
        server.state = state

        def stop_listening() -> None:
            server.shutdown()
            server.server_close()

        state.stop_listening = stop_listening
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        sources: list[DockerSource] = []

        def connect() -> DockerSource:
            sources.append(DockerSource(Settings(docker_host=where), {}, timeout=2.0))
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

    def read() -> None:
        try:
            out.put([e.action for e in source.events()])
        except Exception as e:
            out.put(e)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + WAIT
    while not any(r.split("?")[0].endswith("/events") for r in state.requests) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # the reader is blocked on the socket by now
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


def test_an_inspect_that_cannot_reach_the_engine_raises_docker_unreachable(engine: Engine) -> None:
    """An inspect whose connection the engine closes unanswered, that times out, or that is refused (the
    engine no longer listens) raises DockerUnreachable, a DockerError naming the container and the engine."""
    state, connect = engine
    source = connect()
    source.timeout = 0.2
    try:
        with pytest.raises(DockerUnreachable, match=r"^inspecting container hangup at "):
            source.inspect("hangup")
        with pytest.raises(DockerUnreachable, match=r"^inspecting container slow at .*[Tt]imed? ?out"):
            source.inspect("slow")
    finally:
        state.release.set()
    assert source.inspect(CID) == {"Id": CID, "Name": "/web"}, "on a new connection"
    state.stop_listening()
    with pytest.raises(DockerUnreachable):
        source.inspect("hangup")  # on the connection kept from before, which the engine then closes
    with pytest.raises(DockerUnreachable, match=r"^inspecting container 4fa8fd2b9613 at .*[Rr]efused"):
        source.inspect(CID)  # a new connection is refused
