"""Docker's and Podman's event streams (recorded), read into the events registrar watches.

The stream tests run DockerSource against a stand-in engine on a unix socket in the test (the recorded
``/version`` answers and event lines, sent as the engines send them: one chunk a line).
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import queue
import re
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from registrar.consul_sink import ConsulSink
from registrar.desired import summary_fingerprint
from registrar.docker_payloads import from_message
from registrar.docker_source import DockerSource
from registrar.errors import DockerError
from registrar.model import NETWORK_EVENTS, WATCHED_EVENTS, DockerEvent
from registrar.settings import ConsulTarget, Settings
from tests.unit.payloads import HERE, payload

#: The heads of the 200 answers to GET /v1.41/events, as Docker 20.10 and Podman 4.3 sent them.
HEADS = {
    "docker": b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Type: application/json\r\n"
    b"Docker-Experimental: false\r\nOstype: linux\r\nServer: Docker/20.10.24+dfsg1 (linux)\r\n"
    b"Date: Tue, 01 Dec 2026 04:25:35 GMT\r\nTransfer-Encoding: chunked\r\n\r\n",
    "podman": b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Type: application/json\r\n"
    b"Libpod-Api-Version: 4.3.1\r\nServer: Libpod/4.3.1 (linux)\r\nX-Reference-Id: 0xc000014868\r\n"
    b"Date: Tue, 01 Dec 2026 04:25:53 GMT\r\nTransfer-Encoding: chunked\r\n\r\n",
}
LAST_CHUNK = b"0\r\n\r\n"
DEADLINE = 2.0
HELD = "held"
"""A container the stand-in engine answers for only once released: a request for it times out."""


def recorded(engine: str) -> list[bytes]:
    """The event lines ``engine`` sent for a container's life (run, rename, pause, unpause, stop, rm)."""
    return (HERE / f"events_{engine}.jsonl").read_bytes().splitlines(keepends=True)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


Stream = Callable[[io.BufferedIOBase, io.BufferedIOBase], None]
"""What the stand-in engine sends on GET /events: ``(rfile, wfile)`` of the connection."""


def sends(head: bytes, *parts: bytes, then: str = "hold") -> Stream:
    """A stream: ``head``, each part as it is (chunks made with ``chunk``), then ``then``: ``hold``
    the connection open until registrar closes it, or ``close`` it."""

    def stream(rfile: io.BufferedIOBase, wfile: io.BufferedIOBase) -> None:
        wfile.write(head)
        for part in parts:
            wfile.write(part)
        wfile.flush()
        if then == "hold":
            rfile.read()  # until registrar closes its end

    return stream


def events_of(engine: str, then: str = "end") -> Stream:
    """The recorded lines of ``engine``, one chunk each, then the last chunk (``end``) or ``hold``."""
    parts = [chunk(line) for line in recorded(engine)]
    if then == "end":
        return sends(HEADS[engine], *parts, LAST_CHUNK, then="close")
    return sends(HEADS[engine], *parts, then=then)


class Scripted(socketserver.BaseServer):
    """What the stand-in engine answers and what it saw: ``/version`` (the recorded answer of ``kind``),
    the event stream (``stream``), OK for ``/_ping`` (or ``ping_status``), ``info`` for ``/info``, 404 for
    a container (container ``HELD``: only once ``released``), ``{}`` for Consul's ``/v1/agent/services``,
    ``listing`` (none by default) for ``/containers/json``."""

    def __init__(self, kind: str, stream: Stream) -> None:
        self.version = payload("versions")[kind]
        self.stream = stream
        self.listing: Any = []
        self.ping_status = 200
        self.info: Any = {"Name": "stand-in"}
        self.requests: list[str] = []
        self.connections = 0
        self.changed = threading.Condition()
        self.streams_closed = threading.Semaphore(0)
        self.released = threading.Event()
        """Set by the test, or at its end: what the engine holds is let go."""

    def closed_all(self, timeout: float = DEADLINE) -> bool:
        """Whether every connection made to the engine is closed (by registrar) within ``timeout``."""
        with self.changed:
            return self.changed.wait_for(lambda: self.connections == 0, timeout)

    def stream_closed(self, timeout: float = DEADLINE) -> bool:
        """Whether an event stream's connection is closed (by registrar) within ``timeout``."""
        return self.streams_closed.acquire(timeout=timeout)

    def subscriptions(self) -> list[dict[str, Any]]:
        """The filters of each GET /events so far."""
        queries = [urllib.parse.urlsplit(r).query for r in self.requests if "/events" in r]
        return [json.loads(urllib.parse.parse_qs(q)["filters"][0]) for q in queries]


class Engine(Scripted, socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The stand-in engine on a unix socket."""

    daemon_threads = True

    def __init__(self, path: str, kind: str, stream: Stream) -> None:
        Scripted.__init__(self, kind, stream)
        socketserver.UnixStreamServer.__init__(self, path, Handler)


class Handler(socketserver.StreamRequestHandler):
    server: Scripted

    def handle(self) -> None:
        with self.server.changed:
            self.server.connections += 1
        try:
            self.serve()
        except OSError:
            pass
        finally:
            with self.server.changed:
                self.server.connections -= 1
                self.server.changed.notify_all()

    def serve(self) -> None:
        while line := self.rfile.readline():  # keep-alive: one request after another
            while self.rfile.readline() not in (b"\r\n", b""):
                pass
            target = line.split()[1].decode()
            self.server.requests.append(target)
            path = urllib.parse.urlsplit(target).path
            if path.endswith("/events"):
                try:
                    self.server.stream(self.rfile, self.wfile)
                finally:
                    self.server.streams_closed.release()
                return
            if path == "/version":
                self.answer(200, self.server.version)
            elif path.endswith("/_ping"):
                ok = self.server.ping_status == 200
                self.answer(self.server.ping_status, "OK" if ok else {"message": "engine shutting down"})
            elif path.endswith("/info"):
                self.answer(200, self.server.info)
            elif path.endswith(f"/containers/{HELD}/json"):
                self.server.released.wait()  # the client gives up first (its timeout), or the test ends
                self.answer(404, {"message": f"No such container: {HELD}"})
            elif path == "/v1/agent/services":
                self.answer(200, {})
            elif path.endswith("/containers/json"):
                self.answer(200, self.server.listing)
            else:
                self.answer(404, {"message": f"No such container: {path}"})

    def answer(self, status: int, body: Any) -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        kind = "text/plain" if isinstance(body, str) else "application/json"
        head = f"HTTP/1.1 {status} X\r\nContent-Type: {kind}\r\nContent-Length: {len(data)}\r\n\r\n"
        self.wfile.write(head.encode() + data)
        self.wfile.flush()


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short directory for unix sockets (their paths are limited to about 100 characters)."""
    with tempfile.TemporaryDirectory(prefix="reg-", dir="/tmp") as d:
        yield Path(d)


@pytest.fixture
def serve(socket_dir: Path) -> Iterator[Callable[..., Engine]]:
    """Start an Engine: ``serve(kind, stream)``; stopped after the test."""
    engines: list[Engine] = []

    def start(kind: str, stream: Stream) -> Engine:
        engine = Engine(str(socket_dir / f"{kind}-{len(engines)}.sock"), kind, stream)
        engines.append(engine)
        threading.Thread(target=engine.serve_forever, args=(0.05,), daemon=True).start()
        return engine

    yield start
    for engine in engines:
        engine.released.set()
        engine.shutdown()
        engine.server_close()


@pytest.fixture
def connect() -> Iterator[Callable[..., DockerSource]]:
    """A DockerSource on an Engine's socket: ``connect(engine, timeout=1.0)``; closed after the test."""
    sources: list[DockerSource] = []

    def make(
        engine: Engine, timeout: float = 1.0, internal: bool = False, filters: tuple[tuple[str, str], ...] = ()
    ) -> DockerSource:
        settings = Settings(docker_host=f"unix://{engine.server_address}", internal=internal, filters=filters)
        sources.append(DockerSource(settings, {}, timeout=timeout))
        return sources[-1]

    yield make
    for source in sources:
        source.close()


def seen(events: Iterator[DockerEvent]) -> list[tuple[str, str, int | None, str]]:
    return [(e.action, e.name, e.exit_code, e.signal) for e in events]


@contextlib.contextmanager
def no_unclosed_sockets() -> Iterator[None]:
    """Fails when a socket made inside is left to the garbage collector (a ResourceWarning)."""
    gc.collect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


def watched(engine: str) -> list[tuple[str, str, int | None]]:
    events = [from_message(m) for m in payload("events")[engine]]
    return [(e.action, e.name, e.exit_code) for e in events if e is not None]


def test_kill_carries_its_signal() -> None:
    """Docker's kill event carries the signal sent (docker stop's first one is the stop signal)."""
    kill = next(e for e in map(from_message, payload("events")["docker"]) if e and e.action == "kill")
    assert kill.signal == "9"


def test_docker_lifecycle_events() -> None:
    """Docker: start, rename, kill, die (with the exit code) and destroy are watched; stop and create are not."""
    assert watched("docker") == [
        ("start", "rec-docker", None),
        ("rename", "rec-docker-2", None),
        ("kill", "rec-docker-2", None),
        ("die", "rec-docker-2", 137),
        ("destroy", "rec-docker-2", None),
    ]


def test_podman_lifecycle_events_in_dockers_names() -> None:
    """Podman: the same four, with its ``remove`` read as ``destroy``; init and cleanup are not watched."""
    assert watched("podman") == [
        ("start", "rec-podman", None),
        ("rename", "rec-podman-2", None),
        ("die", "rec-podman-2", 137),
        ("destroy", "rec-podman-2", None),
    ]


@pytest.mark.parametrize(
    "message",
    [
        {"Type": "container", "Action": "exec_start: sh", "Actor": {"ID": "abc"}},
        {"Type": "container", "Action": "start", "Actor": {}},
        {},
    ],
)
def test_unwatched_or_incomplete_messages_are_dropped(message: dict[str, Any]) -> None:
    """Events registrar does not act on, or with no container ID, yield nothing."""
    assert from_message(message) is None


def test_health_status_keeps_its_status() -> None:
    """Docker's ``health_status: healthy`` is watched, with the status after the colon kept."""
    event = from_message({"Action": "health_status: healthy", "Actor": {"ID": "abc", "Attributes": {"name": "w"}}})
    assert event is not None and event.action == "health_status: healthy"


DOCKER_LIFE = [
    ("start", "rec-docker", None, ""),
    ("health_status: healthy", "rec-docker", None, ""),
    ("rename", "rec-docker-2", None, ""),
    ("pause", "rec-docker-2", None, ""),
    ("unpause", "rec-docker-2", None, ""),
    ("kill", "rec-docker-2", None, "15"),
    ("kill", "rec-docker-2", None, "9"),
    ("die", "rec-docker-2", 137, ""),
    ("destroy", "rec-docker-2", None, ""),
]
PODMAN_LIFE = [
    ("start", "rec-podman", None, ""),
    ("rename", "rec-podman-2", None, ""),
    ("pause", "rec-podman-2", None, ""),
    ("unpause", "rec-podman-2", None, ""),
    ("die", "rec-podman-2", 137, ""),
    ("destroy", "rec-podman-2", None, ""),
]


def test_docker_stream_yields_the_watched_events(serve: Any, connect: Any) -> None:
    """Docker's recorded stream, read to its end: the watched events in order; exec_*, create, stop are not."""
    source = connect(serve("docker", events_of("docker")))
    assert seen(source.events()) == DOCKER_LIFE


def test_docker_is_asked_for_the_watched_events_only(serve: Any, connect: Any) -> None:
    """On a Docker engine the subscription filters on the container type and the watched events."""
    engine = serve("docker", events_of("docker"))
    source = connect(engine)
    list(source.events())
    assert not source.podman
    assert engine.subscriptions() == [{"type": ["container"], "event": sorted(WATCHED_EVENTS)}]
    assert [r.split("?")[0] for r in engine.requests] == ["/version", "/v1.41/events"]


def network_stream(engine: str) -> Stream:
    """The recorded lines of ``engine`` around ``docker network connect`` and ``disconnect``, then the end."""
    parts = [chunk(line) for line in recorded(f"{engine}_network")]
    return sends(HEADS[engine], *parts, LAST_CHUNK, then="close")


def test_with_internal_docker_is_asked_for_network_changes_too(serve: Any, connect: Any) -> None:
    """--internal: the subscription adds the network type and its connect and disconnect events."""
    engine = serve("docker", network_stream("docker"))
    list(connect(engine, internal=True).events())
    events = sorted(WATCHED_EVENTS + NETWORK_EVENTS)
    assert engine.subscriptions() == [{"type": ["container", "network"], "event": events}]


def test_a_listing_keeps_only_what_its_fingerprint_reads(serve: Any, connect: Any) -> None:
    """A listing (recorded from Docker 20.10: a container with ports, an exited one, a healthy one) keeps of
    each container the fields its fingerprint reads, and gives the fingerprints the whole entries give: the
    rest (labels, mounts, host config, each network's 13 fields) is let go as it is parsed."""
    recorded = payload("listing")
    engine = serve("docker", events_of("docker"))
    engine.listing = recorded
    listed = connect(engine).list_containers()
    assert [summary_fingerprint(s) for s in listed] == [summary_fingerprint(s) for s in recorded]
    assert [s["Id"] for s in listed] == [s["Id"] for s in recorded]
    assert {key for s in listed for key in s} == {"Id", "Names", "State", "Status", "Ports", "NetworkSettings"}
    networks = [n for s in listed for n in s["NetworkSettings"]["Networks"].values()]
    assert networks and all(n.keys() == {"IPAddress"} for n in networks)


def test_a_listing_that_is_no_list_of_containers_is_a_docker_error(serve: Any, connect: Any) -> None:
    """A listing answered with something else than a JSON list raises DockerError naming the listing."""
    engine = serve("docker", events_of("docker"))
    source = connect(engine)
    for answer in ({"message": "engine is busy"}, "not json ["):
        engine.listing = answer
        with pytest.raises(DockerError, match=r"^listing containers at unix://.*: "):
            source.list_containers()


def test_label_filters_are_asked_of_the_engine(serve: Any, connect: Any) -> None:
    """--filter label=...: the listing and the subscription carry them, so left-out containers cost nothing;
    with network events followed (they carry no labels) the subscription does not."""
    labels = (("label", "team=shop"), ("label", "tier"))
    engine = serve("docker", events_of("docker"))
    source = connect(engine, filters=(*labels, ("name", "web")))
    list(source.events())
    assert source.list_containers() == []
    (listing,) = [r for r in engine.requests if "/containers/json" in r]
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(listing).query)
    assert json.loads(query["filters"][0]) == {"label": ["team=shop", "tier"]}
    assert engine.subscriptions()[0]["label"] == ["team=shop", "tier"]
    networked = serve("docker", events_of("docker"))
    list(connect(networked, internal=True, filters=labels).events())
    assert "label" not in networked.subscriptions()[0]


def test_network_connect_and_disconnect_are_events_of_the_container_they_name(serve: Any, connect: Any) -> None:
    """Docker (recorded: run on a network, connect a second, disconnect it, rm -f): each connect and
    disconnect is an event of the container in its attributes; the network's destroy is dropped."""
    engine = serve("docker", network_stream("docker"))
    cid = "4fa8fd2b961392d54539d365a48923245eff6b469d19a0108daa5ffb82895136"
    events = [(e.action, e.container_id) for e in connect(engine, internal=True).events()]
    expected = ["connect", "start", "connect", "disconnect", "disconnect", "die", "disconnect", "destroy"]
    assert events == [(action, cid) for action in expected]


def test_podman_network_connect_names_the_container_in_its_actor(serve: Any, connect: Any) -> None:
    """Podman (recorded ``podman network connect`` and ``disconnect``): the Actor is the container itself."""
    engine = serve("podman", network_stream("podman"))
    source = connect(engine, internal=True)
    cid = "bd9897341a639dd092069594dd3e63886daa3a336f5f001215ec1f3d1b6c4a58"
    assert [(e.action, e.container_id) for e in source.events()] == [("connect", cid), ("disconnect", cid)]
    assert engine.subscriptions() == [{"type": ["container", "network"]}]


def test_podman_is_asked_for_container_events_and_they_are_picked_here(serve: Any, connect: Any) -> None:
    """On Podman (its /version names a Podman Engine) the filter is the type only; ``remove`` reads as destroy."""
    engine = serve("podman", events_of("podman"))
    source = connect(engine)
    assert seen(source.events()) == PODMAN_LIFE
    assert source.podman
    assert engine.subscriptions() == [{"type": ["container"]}]


def test_lines_that_do_not_parse_are_skipped(serve: Any, connect: Any) -> None:
    """A line that is not a JSON object is skipped; lines split over chunks or sharing one are read whole."""
    start, health, rename = (recorded("docker")[i] for i in (1, 5, 6))
    stream = sends(
        HEADS["docker"],
        chunk(b"{not json\n"),
        chunk(b"\n"),
        chunk(b"[1, 2]\n"),
        chunk(start[:100]),
        chunk(start[100:] + health),
        chunk(b"\xff\xfe\n" + rename),
        LAST_CHUNK,
        then="close",
    )
    source = connect(serve("docker", stream))
    assert [e.action for e in source.events()] == ["start", "health_status: healthy", "rename"]


def test_stream_ending_ends_the_iterator(serve: Any, connect: Any) -> None:
    """The engine ending the stream (its last chunk) ends the iterator, without an error."""
    source = connect(serve("docker", sends(HEADS["docker"], chunk(recorded("docker")[1]), LAST_CHUNK, then="close")))
    assert [e.action for e in source.events()] == ["start"]


def test_engine_going_away_between_events_ends_the_iterator(serve: Any, connect: Any) -> None:
    """The engine closing the connection between two events (as a restart does) ends the iterator too."""
    source = connect(serve("docker", sends(HEADS["docker"], chunk(recorded("docker")[1]), then="close")))
    assert [e.action for e in source.events()] == ["start"]


def test_stream_broken_in_an_event_ends_the_iterator(serve: Any, connect: Any) -> None:
    """A connection lost in the middle of an event line ends the iterator after the events before (docker-py
    reads a broken stream as ended; the watcher resubscribes and reconciles as after any end)."""
    start, die = recorded("docker")[1], recorded("docker")[14]
    source = connect(
        serve("docker", sends(HEADS["docker"], chunk(start), b"%x\r\n" % len(die), die[:50], then="close"))
    )
    assert [e.action for e in source.events()] == ["start"]


def test_non_200_answer_is_a_docker_error_with_the_engines_message(serve: Any, connect: Any) -> None:
    """An answer other than 200 to the subscription: events() raises DockerError with the engine's message."""
    body = b'{"message":"client version 1.99 is too new. Maximum supported API version is 1.41"}\n'
    head = b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    source = connect(serve("docker", sends(head, body, then="close")))
    with pytest.raises(DockerError) as raised:
        source.events()
    assert str(raised.value) == (
        f"subscribing to Docker events at {source.where}: the engine answered 400 "
        "(client version 1.99 is too new. Maximum supported API version is 1.41)"
    )


def test_no_engine_is_a_docker_error_and_leaves_no_socket_open(socket_dir: Path) -> None:
    """No engine at the socket: DockerError "cannot reach the Docker engine at <where>: <reason>", and no socket
    is left open."""
    with no_unclosed_sockets(), pytest.raises(DockerError, match=r"^cannot reach the Docker engine at unix://\S+: \S"):
        DockerSource(Settings(docker_host=f"unix://{socket_dir}/none.sock"), {}, timeout=1.0)


def test_subscription_is_made_before_events_returns(serve: Any, connect: Any) -> None:
    """When events() returns, the engine has the subscription already, before anything is read from it."""
    engine = serve("docker", events_of("docker", then="hold"))
    source = connect(engine)
    source.events()
    assert [r.split("?")[0] for r in engine.requests] == ["/version", "/v1.41/events"]


class Reads:
    """A socket, wrapped: counts the reads (``recv_into``) begun and returned on it."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self.changed = threading.Condition()
        self.begun = self.returned = 0

    def recv_into(self, *args: Any) -> int:
        with self.changed:
            self.begun += 1
            self.changed.notify_all()
        try:
            return int(self._sock.recv_into(*args))
        finally:
            with self.changed:
                self.returned += 1
                self.changed.notify_all()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def blocked(self, timeout: float = DEADLINE) -> bool:
        """Whether a read is in progress (begun, not returned) within ``timeout``."""
        with self.changed:
            return self.changed.wait_for(lambda: self.begun > self.returned, timeout)


def watch_reads(source: DockerSource) -> Reads:
    """The reads of ``source``'s event stream, once ``events()`` has returned and before it is read: its socket, as
    the stream's file reads it (and ``close_events()`` finds it), wrapped in Reads."""
    file = source._stream._response.raw._fp.fp.raw  # docker-py's response, urllib3's, http.client's: the SocketIO
    file._sock = Reads(file._sock)
    return cast(Reads, file._sock)


def test_a_quiet_stream_is_no_error(serve: Any, connect: Any) -> None:
    """A stream quiet for longer than the request timeout still delivers the next event (no read timeout)."""

    def quiet(rfile: io.BufferedIOBase, wfile: io.BufferedIOBase) -> None:
        wfile.write(HEADS["docker"])
        wfile.flush()
        engine.released.wait()  # quiet until a request sent after the head has timed out
        wfile.write(chunk(recorded("docker")[1]) + LAST_CHUNK)
        wfile.flush()

    engine = serve("docker", quiet)
    source = connect(engine, timeout=0.2)
    events = source.events()
    reads = watch_reads(source)
    out, reader = read_on_a_thread(events)
    assert reads.blocked(), "the reader never read the quiet stream"
    with pytest.raises(DockerError, match="timed out"):
        source.inspect(HELD)  # the same timeout, on a request sent since: the read has waited for longer
    engine.released.set()
    assert out.get(timeout=DEADLINE) == "start"
    assert out.get(timeout=DEADLINE) == "ended"
    reader.join(DEADLINE)
    assert not reader.is_alive()


def read_on_a_thread(events: Iterator[DockerEvent]) -> tuple[queue.SimpleQueue[object], threading.Thread]:
    """Read ``events`` on a thread: each event, then "ended" or the error, into the queue."""
    out: queue.SimpleQueue[object] = queue.SimpleQueue()

    def read() -> None:
        try:
            for event in events:
                out.put(event.action)
            out.put("ended")
        except Exception as e:
            out.put(e)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return out, thread


def test_close_events_unblocks_a_blocked_reader(serve: Any, connect: Any) -> None:
    """close_events() from another thread ends a reader blocked on a quiet stream at once, without an error."""
    engine = serve("docker", sends(HEADS["docker"], chunk(recorded("docker")[1])))
    source = connect(engine)
    events = source.events()
    reads = watch_reads(source)
    out, reader = read_on_a_thread(events)
    assert out.get(timeout=DEADLINE) == "start"
    assert reads.blocked(), "the reader is not reading the quiet stream"
    began = time.monotonic()
    source.close_events()
    reader.join(DEADLINE)
    assert not reader.is_alive()
    assert out.get_nowait() == "ended"
    assert time.monotonic() - began < 0.5
    assert engine.stream_closed()


def test_close_events_before_reading_ends_the_iterator(serve: Any, connect: Any) -> None:
    """close_events() between subscribing and reading: the iterator yields nothing and the connection is closed."""
    engine = serve("docker", events_of("docker", then="hold"))
    source = connect(engine)
    events = source.events()
    source.close_events()
    assert list(events) == []
    assert engine.stream_closed()


def test_close_events_while_subscribing_ends_the_subscription(serve: Any, connect: Any) -> None:
    """close_events() while events() waits for the engine's answer: once answered, the stream yields nothing and
    its connection is closed (docker-py gives no hold on a request before its answer)."""
    asked, closed = threading.Event(), threading.Event()

    def late(rfile: io.BufferedIOBase, wfile: io.BufferedIOBase) -> None:
        asked.set()
        closed.wait(DEADLINE)  # answers only after close_events()
        events_of("docker", then="hold")(rfile, wfile)

    engine = serve("docker", late)
    source = connect(engine)
    out: queue.SimpleQueue[object] = queue.SimpleQueue()
    subscriber = threading.Thread(target=lambda: out.put(list(source.events())), daemon=True)
    subscriber.start()
    assert asked.wait(DEADLINE), "the subscription never reached the engine"
    source.close_events()
    closed.set()
    subscriber.join(DEADLINE)
    assert not subscriber.is_alive()
    assert out.get_nowait() == []
    assert engine.stream_closed()


def test_close_closes_every_connection_and_is_idempotent(serve: Any, connect: Any) -> None:
    """DockerSource.close() (twice) closes the pool (inspect, ping) and the event stream."""
    engine = serve("docker", events_of("docker", then="hold"))
    with no_unclosed_sockets():
        source = DockerSource(Settings(docker_host=f"unix://{engine.server_address}"), {}, timeout=1.0)
        assert source.inspect("0123456789ab") is None
        source.ping()
        out, reader = read_on_a_thread(source.events())
        assert out.get(timeout=DEADLINE) == "start"
        source.close()
        source.close()
        reader.join(DEADLINE)
        assert not reader.is_alive()
        assert engine.closed_all()
        with pytest.raises(DockerError):
            source.events()


def test_a_daemon_without_metrics_does_not_import_prometheus(serve: Any) -> None:
    """Without ``--metrics-addr`` a daemon that pings, reads docker info, lists, inspects and follows events
    never imports prometheus_client (1.4 MiB, ~20 ms) nor http.server."""
    engine = serve("docker", events_of("docker"))
    script = f"""
import sys
import registrar.cli
from registrar.consul_sink import ConsulSink
from registrar.daemon import Daemon
from registrar.docker_source import DockerSource
from registrar.settings import ConsulTarget, Settings
source = DockerSource(Settings(docker_host="unix://{engine.server_address}"), {{}}, timeout=2.0)
source.ping()
print(source.host_name(), source.list_containers(), source.inspect("0123456789ab"), next(source.events()).action)
sink = ConsulSink(ConsulTarget(scheme="unix", socket_path="{engine.server_address}"))
daemon = Daemon(source, sink, Settings(hostname="vm"))
daemon.close()
sink.close()
source.close()
print("imported:", sorted(m for m in ("prometheus_client", "http.server") if m in sys.modules))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["stand-in [] None start", "imported: []"]


def test_a_refused_ping_or_an_info_without_name_names_the_engine(serve: Any, connect: Any) -> None:
    """On a unix socket, a ping the engine refuses and a ``docker info`` without a Name are DockerErrors
    that name the engine and what it answered (the start waits and retries on them)."""
    engine = serve("docker", events_of("docker"))
    source = connect(engine)
    engine.ping_status, engine.info = 500, {"ID": "stand-in"}
    where = re.escape(f"unix://{engine.server_address}")
    with pytest.raises(
        DockerError, match=rf"^pinging the Docker engine at {where}: the engine answered 500 \(engine shutting down\)$"
    ):
        source.ping()
    with pytest.raises(DockerError, match=rf"^reading docker info at {where}: the answer has no Name$"):
        source.host_name()


def test_consul_sink_close_closes_its_connections(serve: Any) -> None:
    """ConsulSink.close() (twice) closes the pool's keep-alive connection to the agent."""
    agent = serve("docker", events_of("docker"))
    with no_unclosed_sockets():
        sink = ConsulSink(ConsulTarget(scheme="unix", socket_path=str(agent.server_address)))
        assert sink.services() == {}
        sink.close()
        sink.close()
        assert agent.closed_all()


class TcpEngine(Scripted, socketserver.ThreadingMixIn, socketserver.TCPServer):
    """The stand-in engine on 127.0.0.1 (for docker-py's tcp:// transport)."""

    daemon_threads = True

    def __init__(self, kind: str, stream: Stream) -> None:
        Scripted.__init__(self, kind, stream)
        socketserver.TCPServer.__init__(self, ("127.0.0.1", 0), Handler)


@pytest.mark.parametrize(("engine", "life"), [("docker", DOCKER_LIFE), ("podman", PODMAN_LIFE)])
def test_on_tcp_docker_py_reads_the_stream_with_the_same_filters(engine: str, life: list[Any]) -> None:
    """On tcp:// the stream is subscribed with the filters of the engine and yields the same events as on a socket."""
    server = TcpEngine(engine, events_of(engine))
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    port = server.server_address[1]
    try:
        with no_unclosed_sockets():
            source = DockerSource(Settings(docker_host=f"tcp://127.0.0.1:{port}"), {}, timeout=1.0)
            try:
                assert seen(source.events()) == life
                assert source.podman == (engine == "podman")
                assert server.subscriptions()[0]["type"] == ["container"]
                assert ("event" in server.subscriptions()[0]) == (engine == "docker")
            finally:
                source.close()
            assert server.closed_all()
    finally:
        server.shutdown()
        server.server_close()
