"""Keep-alive HTTP connections for the hot calls to Docker and Consul.

registrar makes two requests per container start (an inspect, a registration). Every layer a
request goes through costs CPU, and on a start the code runs with cold caches, so the layer count
is what counts. A request through urllib3's pool cost 260 us of CPU where ``http.client`` alone cost
155 us; and of ``http.client``'s own cost, a third is parsing the response's head through the
``email`` package (measured on this project's machine: README, "Performance"). So the hot calls
write their request by hand, parse the answer with httptools (the C parser llhttp, as Node.js
and uvicorn do), and keep their connections here: plain HTTP, HTTPS with the agent's CA and client
certificate, or a unix socket (Docker's, or Consul's ``consul-unix://``). The event stream and
the exec probes keep ``http.client`` (UnixHTTPConnection): one long response each, not per start.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import ssl
import threading
from collections import deque
from collections.abc import Callable, Mapping

import httptools

#: Idle connections kept per pool: as many as registrar's workers write at once.
POOL_SIZE = 16

#: What a request on a kept-alive connection raises when the server closed it meanwhile (the request
#: is then sent once more on a new connection: every request registrar makes is idempotent).
#: ``http.client.RemoteDisconnected`` (no answer at all) is a ConnectionResetError.
STALE = (ConnectionResetError, BrokenPipeError)

#: Bytes read from the socket at a time (a Docker inspect is 8-12 KiB).
READ_SIZE = 16384

_BUFFERS: deque[memoryview] = deque()
"""The buffers ``recv_into`` fills, each used by one request at a time: as many as requests were ever in
flight at once (8 workers: 8). A buffer per kept connection made 16 (8 to Docker, 8 to Consul); a fresh
bytes object per read, shrunk to what came, cost the allocator system calls."""


def _take_buffer() -> memoryview:
    try:
        return _BUFFERS.pop()  # atomic: no lock
    except IndexError:
        return memoryview(bytearray(READ_SIZE))


#: What a request line or a header must not hold (as ``http.client`` refuses: no header injection).
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")
_UNSAFE_VALUE = re.compile(r"[\r\n\x00]")


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
    """A response read in full: status, headers (names lower-cased) and body."""

    __slots__ = ("data", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], data: bytes) -> None:
        self.status, self.headers, self.data = status, headers, data


class _Reading:
    """httptools' callbacks for one response: its status, headers and body as they are parsed."""

    __slots__ = ("body", "complete", "headers", "keep", "parser", "status")

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.status = 0
        self.keep = self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        # Asked here: once the message is complete, llhttp has reset what it knew of the connection.
        self.status, self.keep = self.parser.get_status_code(), self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


class Connection:
    """One HTTP/1.1 connection on a connected socket, one request at a time.

    Raises ``OSError`` (timeouts, resets, TLS errors) and ``http.client.HTTPException`` (an answer
    that is no HTTP; ``RemoteDisconnected``, a ConnectionResetError too, when the server closed the
    connection without answering; ``IncompleteRead`` when it closed it in the middle of the answer).
    """

    def __init__(self, sock: socket.socket, host: str) -> None:
        self.sock, self.host = sock, host

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> tuple[Response, bool]:
        """Send one request and read its answer in full: the answer, and whether the connection can be kept."""
        if _UNSAFE.search(path):
            raise http.client.InvalidURL(f"the path {path!r} holds control characters or spaces")
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}"]
        for name, value in (headers or {}).items():
            if _UNSAFE_VALUE.search(value) or _UNSAFE.search(name):
                raise ValueError(f"invalid HTTP header {name!r}")
            head.append(f"{name}: {value}")
        if body is not None or method in ("POST", "PUT"):
            head.append(f"Content-Length: {len(body or b'')}")
        self.sock.sendall("\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + (body or b""))
        reading = _Reading()
        received = False
        buffer = _take_buffer()
        try:
            while not reading.complete:
                size = self.sock.recv_into(buffer)
                if not size:
                    if not received:
                        raise http.client.RemoteDisconnected("the server closed the connection without an answer")
                    raise http.client.IncompleteRead(b"".join(reading.body))
                received = True
                try:
                    reading.parser.feed_data(buffer[:size])
                except httptools.HttpParserError as e:
                    raise http.client.HTTPException(f"the answer is no valid HTTP ({e})") from None
        finally:
            _BUFFERS.append(buffer)  # httptools hands on copies: nothing refers to the buffer any more
        del reading.parser  # the parser and its callbacks refer to each other: no cycle left for the collector
        return Response(reading.status, reading.headers, b"".join(reading.body)), reading.keep

    def close(self) -> None:
        self.sock.close()


class ConnectionPool:
    """Keep-alive connections to one server: a request takes an idle one (or opens one), then puts it back.

    Safe to use from many threads (a deque's append and pop are atomic). Raises what ``http.client``
    and ``socket`` raise: ``http.client.HTTPException`` and ``OSError`` (timeouts, refusals, TLS errors).
    """

    def __init__(self, connect: Callable[[], Connection], size: int = POOL_SIZE) -> None:
        self._connect = connect
        self._idle: deque[Connection] = deque()
        self._size = size
        self._closed = False
        self._opening = threading.Lock()
        self.opened = 0
        """Connections opened so far. A server that restarted closed every connection to it, so while this
        count stands still, every answer came from the server process that answered before."""

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
                with self._opening:  # rare; a lost increment could bring the count back to one seen before
                    self.opened += 1
            try:
                response, keep = connection.request(method, path, body, headers)
            except STALE:
                connection.close()
                if reused:
                    self._close_idle()
                    continue
                raise
            except BaseException:
                connection.close()
                raise
            if not keep or self._closed or len(self._idle) >= self._size:
                connection.close()
            else:
                self._idle.append(connection)
            return response
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

    def connect() -> Connection:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(socket_path)
        except OSError:
            sock.close()
            raise
        return Connection(sock, "localhost")

    return ConnectionPool(connect)


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
    context = None
    if scheme == "https":
        context = ssl.create_default_context(cafile=ca_file or None)
        if cert_file:
            context.load_cert_chain(cert_file, key_file or None)
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def connect() -> Connection:
        sock = socket.create_connection((host, port), timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if context is not None:
                sock = context.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        return Connection(sock, authority)

    return ConnectionPool(connect)
