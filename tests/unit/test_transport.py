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

from registrar.transport import tcp_pool

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
def answering() -> Iterator[Callable[..., Server]]:
    """Loopback servers that give one answer of the test's to every request; closed afterwards."""
    made: list[Server] = []

    def make(reply: bytes, hang_up: bool = False) -> Server:
        made.append(Server(reply, hang_up))
        return made[-1]

    yield make
    for s in made:
        s.close()


CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Consul-Index: 42\r\nTransfer-Encoding: chunked\r\n\r\n"
    b'5\r\n{"a":\r\n3\r\n 1}\r\n0\r\n\r\n'
)


def test_a_chunked_answer_is_read_whole_with_its_headers(answering: Any) -> None:
    """A chunked body (as Docker sends an inspect) comes back joined; header names are lower-cased; the
    connection is kept for the next request."""
    server = answering(CHUNKED)
    pool = tcp_pool("http", "127.0.0.1", server.port, timeout=5)
    try:
        for _ in range(2):
            response = pool.request("GET", "/containers/abc/json")
            assert (response.status, response.data) == (200, b'{"a": 1}')
            assert response.headers["x-consul-index"] == "42"
        assert server.accepted == 1
    finally:
        pool.close()


def test_a_request_is_sent_as_http_1_1_with_its_body_and_length(answering: Any) -> None:
    """A PUT goes out with the Host, the headers given and Content-Length, then its body."""
    server = answering(REPLY)
    pool = tcp_pool("http", "127.0.0.1", server.port, timeout=5)
    try:
        pool.request("PUT", "/v1/agent/service/register", b'{"ID": "x"}', {"X-Consul-Token": "t"})
        pool.request("PUT", "/v1/agent/service/deregister/x")
    finally:
        pool.close()
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
    server = answering(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
    pool = tcp_pool("http", "127.0.0.1", server.port, timeout=5)
    try:
        assert pool.request("GET", "/").data == b"{}"
        assert pool.request("GET", "/").data == b"{}"
        assert server.accepted == 2 and not pool._idle
    finally:
        pool.close()


def test_an_answer_cut_in_the_middle_is_an_error_not_a_short_body(answering: Any) -> None:
    """The server closing the connection in the middle of a body: IncompleteRead, not what came so far."""
    server = answering(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", hang_up=True)
    pool = tcp_pool("http", "127.0.0.1", server.port, timeout=5)
    try:
        with pytest.raises(http.client.IncompleteRead):
            pool.request("GET", "/")
    finally:
        pool.close()


def test_an_answer_that_is_no_http_is_an_http_error(answering: Any) -> None:
    """Bytes that are not HTTP: an http.client.HTTPException (the adapters turn it into their error)."""
    server = answering(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
    pool = tcp_pool("http", "127.0.0.1", server.port, timeout=5)
    try:
        with pytest.raises(http.client.HTTPException):
            pool.request("GET", "/")
    finally:
        pool.close()


@pytest.mark.parametrize("path", ["/containers/a b/json", "/v1/x\r\nX-Injected: 1"])
def test_a_path_with_spaces_or_line_breaks_is_refused_before_sending(answering: Any, path: str) -> None:
    """A path that would break the request line is refused (http.client.InvalidURL), nothing is sent."""
    server = answering(REPLY)
    pool = tcp_pool("http", "127.0.0.1", server.port, timeout=5)
    try:
        with pytest.raises(http.client.InvalidURL):
            pool.request("GET", path)
    finally:
        pool.close()
    assert server.requests == []
