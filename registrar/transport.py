"""Keep-alive HTTP connections for the hot calls to Docker and Consul, on the standard library.

registrar makes two requests per container start (an inspect, a registration). Every layer a
request goes through costs CPU, and on a start the code runs with cold caches, so the layer count
is what counts: a request through urllib3's pool cost 260 us of CPU where ``http.client`` alone cost
155 us, measured on this project's machine (README, "Performance"). So the hot calls go through
``http.client`` connections kept here: plain HTTP, HTTPS with the agent's CA and client certificate,
or a unix socket (Docker's, or Consul's ``consul-unix://``).
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
from collections import deque
from collections.abc import Callable, Mapping

#: Idle connections kept per pool: as many as registrar's workers write at once.
POOL_SIZE = 16

#: What a request on a kept-alive connection raises when the server closed it meanwhile (the request
#: is then sent once more on a new connection: every request registrar makes is idempotent).
STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, http.client.CannotSendRequest)


class UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection over a unix socket (the host name is only for the Host header)."""

    def __init__(self, socket_path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Response:
    """A response read in full: status, headers and body."""

    __slots__ = ("data", "headers", "status")

    def __init__(self, status: int, headers: http.client.HTTPMessage, data: bytes) -> None:
        self.status, self.headers, self.data = status, headers, data


class ConnectionPool:
    """Keep-alive connections to one server: a request takes an idle one (or opens one), then puts it back.

    Safe to use from many threads (a deque's append and pop are atomic). Raises what ``http.client``
    and ``socket`` raise: ``http.client.HTTPException`` and ``OSError`` (timeouts, refusals, TLS errors).
    """

    def __init__(self, connect: Callable[[], http.client.HTTPConnection], size: int = POOL_SIZE) -> None:
        self._connect = connect
        self._idle: deque[http.client.HTTPConnection] = deque()
        self._size = size
        self._closed = False

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> Response:
        """Send one request and read its answer in full. On an idle connection the server has closed, the
        request is sent once more on a new connection, and the other idle ones are closed too (a server
        that restarted closed them all)."""
        for attempt in (1, 2):
            connection, reused = None, False
            if attempt == 1:
                with contextlib.suppress(IndexError):
                    connection, reused = self._idle.pop(), True
            if connection is None:
                connection = self._connect()
            try:
                connection.request(method, path, body=body, headers=dict(headers or {}))
                response = connection.getresponse()
                data = response.read()
            except STALE:
                connection.close()
                if reused:
                    self._close_idle()
                    continue
                raise
            except BaseException:
                connection.close()
                raise
            if response.will_close or self._closed or len(self._idle) >= self._size:
                connection.close()
            else:
                self._idle.append(connection)
            return Response(response.status, response.headers, data)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Close every idle connection; connections in use are closed when they come back (idempotent)."""
        self._closed = True
        self._close_idle()

    def _close_idle(self) -> None:
        while True:
            try:
                self._idle.pop().close()
            except IndexError:
                return


def unix_pool(socket_path: str, timeout: float) -> ConnectionPool:
    """A pool to the HTTP server on a unix socket."""
    return ConnectionPool(lambda: UnixHTTPConnection(socket_path, timeout))


def tcp_pool(
    scheme: str,
    host: str,
    port: int,
    timeout: float,
    ca_file: str = "",
    cert_file: str = "",
    key_file: str = "",
) -> ConnectionPool:
    """A pool to ``scheme://host:port``; HTTPS verifies the server (its certificate and host name) against
    ``ca_file`` (or the system's CAs) and presents ``cert_file``/``key_file`` if given."""
    if scheme != "https":
        return ConnectionPool(lambda: http.client.HTTPConnection(host, port, timeout=timeout))
    context = ssl.create_default_context(cafile=ca_file or None)
    if cert_file:
        context.load_cert_chain(cert_file, key_file or None)
    return ConnectionPool(lambda: http.client.HTTPSConnection(host, port, timeout=timeout, context=context))
