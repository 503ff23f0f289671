"""transport.ConnectionPool against a loopback server that drops its kept-alive connections, as a
restarted Consul agent or Docker engine does."""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
from collections.abc import Iterator

import pytest

from registrar.transport import ConnectionPool

REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}"


class Server:
    """Answers every request with ``{}`` on keep-alive connections; ``drop()`` closes them all."""

    def __init__(self) -> None:
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
                while conn.recv(65536):
                    conn.sendall(REPLY)
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
    pool = ConnectionPool(lambda: http.client.HTTPConnection("127.0.0.1", server.port, timeout=5))
    try:
        first = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=5) for _ in range(2)]
        for connection in first:
            connection.request("GET", "/")
            connection.getresponse().read()
            pool._idle.append(connection)  # two kept-alive connections, as after two writes at once
        server.drop()
        assert pool.request("GET", "/v1/agent/services").status == 200
        assert pool.request("GET", "/v1/agent/services").status == 200
    finally:
        pool.close()
