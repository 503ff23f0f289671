"""transport.ConnectionPool against a loopback server that drops its kept-alive connections, as a
restarted Consul agent or Docker engine does."""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from registrar.transport import ConnectionPool, tcp_pool

REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}"


class Server:
    """Answers every request with ``reply`` (``{}`` by default) on keep-alive connections; ``drop()``
    closes them all. ``requests`` holds what it received, as it came."""

    def __init__(self, reply: bytes = REPLY, hang_up: bool = False) -> None:
        self.reply, self.hang_up = reply, hang_up
        """``hang_up``: close each connection after its first answer."""
        self.requests: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open: list[socket.socket] = []
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            self.open.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    self.requests.append(data)
                    conn.sendall(self.reply)
                    if self.hang_up:
                        return
            except OSError:
                return

    def drop(self) -> None:
        for conn in self.open:
            with contextlib.suppress(OSError):  # its thread may have closed it already
                conn.shutdown(socket.SHUT_RDWR)
        self.open.clear()

    def close(self) -> None:
        self.drop()
        self.listener.close()


@pytest.fixture
def server() -> Iterator[Server]:
    """A loopback server of this test; closed afterwards."""
    s = Server()
    yield s
    s.close()


def test_requests_after_the_server_dropped_every_idle_connection_succeed(server: Server) -> None:
    """Two idle connections the server has closed: the next request succeeds (on a new connection),
    and so does the one after it; neither is sent on the other dead connection."""
    pool = tcp_pool("http", "127.0.0.1", server.port, timeout=5)
    try:
        first = [pool._connect() for _ in range(2)]
        for connection in first:
            connection.request("GET", "/")
            pool._idle.append(connection)  # two kept-alive connections, as after two writes at once
        server.drop()
        assert pool.request("GET", "/v1/agent/services").status == 200
        assert pool.request("GET", "/v1/agent/services").status == 200
    finally:
        pool.close()


@pytest.fixture
def answering() -> Iterator[Callable[..., tuple[Server, ConnectionPool]]]:
    """Loopback servers that give one answer of the test's to every request, each with a pool to it;
    both closed afterwards."""
    made: list[tuple[Server, ConnectionPool]] = []

    def make(reply: bytes, hang_up: bool = False) -> tuple[Server, ConnectionPool]:
        server = Server(reply, hang_up)
        made.append((server, tcp_pool("http", "127.0.0.1", server.port, timeout=5)))
        return made[-1]

    yield make
    for server, pool in made:
        pool.close()
        server.close()


CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Consul-Index: 42\r\nTransfer-Encoding: chunked\r\n\r\n"
    b'5\r\n{"a":\r\n3\r\n 1}\r\n0\r\n\r\n'
)


def test_a_chunked_answer_is_read_whole_with_its_headers(answering: Any) -> None:
    """A chunked body (as Docker sends an inspect) comes back joined; header names are lower-cased; the
    connection is kept for the next request."""
    server, pool = answering(CHUNKED)
    for _ in range(2):
        response = pool.request("GET", "/containers/abc/json")
        assert (response.status, response.data) == (200, b'{"a": 1}')
        assert response.headers["x-consul-index"] == "42"
    assert server.accepted == 1


def test_a_request_is_sent_as_http_1_1_with_its_body_and_length(answering: Any) -> None:
    """A PUT goes out with the Host, the headers given and Content-Length, then its body."""
    server, pool = answering(REPLY)
    pool.request("PUT", "/v1/agent/service/register", b'{"ID": "x"}', {"X-Consul-Token": "t"})
    pool.request("PUT", "/v1/agent/service/deregister/x")
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    assert head.split(b"\r\n") == [
        b"PUT /v1/agent/service/register HTTP/1.1",
        f"Host: 127.0.0.1:{server.port}".encode(),
        b"X-Consul-Token: t",
        b"Content-Length: 11",
    ]
    assert body == b'{"ID": "x"}'
    assert b"Content-Length: 0\r\n\r\n" in server.requests[1]


def test_an_answer_that_asks_to_close_closes_the_connection(answering: Any) -> None:
    """``Connection: close`` in the answer: the connection is not kept, the next request opens another."""
    server, pool = answering(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
    assert pool.request("GET", "/").data == b"{}"
    assert pool.request("GET", "/").data == b"{}"
    assert server.accepted == 2 and not pool._idle


@pytest.mark.parametrize(
    ("reply", "hang_up", "error"),
    [
        # The server closing the connection in the middle of a body: an error, not what came so far.
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", True, http.client.IncompleteRead),
        # Bytes that are not HTTP: an http.client.HTTPException (the adapters turn it into their error).
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", False, http.client.HTTPException),
    ],
    ids=["cut-in-the-middle", "no-http"],
)
def test_an_answer_cut_short_or_not_http_is_an_error(
    answering: Any, reply: bytes, hang_up: bool, error: type[Exception]
) -> None:
    """An answer cut in the middle raises IncompleteRead, one that is no HTTP an HTTPException."""
    _, pool = answering(reply, hang_up)
    with pytest.raises(error):
        pool.request("GET", "/")


@pytest.mark.parametrize("path", ["/containers/a b/json", "/v1/x\r\nX-Injected: 1"])
def test_a_path_with_spaces_or_line_breaks_is_refused_before_sending(answering: Any, path: str) -> None:
    """A path that would break the request line is refused (http.client.InvalidURL), nothing is sent."""
    server, pool = answering(REPLY)
    with pytest.raises(http.client.InvalidURL):
        pool.request("GET", path)
    assert server.requests == []
