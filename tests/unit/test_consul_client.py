"""registrar's HTTP client under py-consul (urllib3), against a stand-in agent on loopback.

The TLS files under payloads/tls are a CA and a server certificate it signed that names only
server.dc1.consul, localhost and 127.0.0.1, as ``consul tls cert create -server -dc dc1`` makes
(``openssl req -x509 ... -days 36500``; never used outside these tests).
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from registrar.consul_sink import ConsulSink
from registrar.errors import ConsulError
from registrar.settings import ConsulTarget

TLS = Path(__file__).parent / "payloads" / "tls"
SERVICES = b'{"web": {"ID": "web", "Service": "web", "Port": 80, "Meta": {}}}'
#: What the stand-in sends for a request: the raw answer, or None to close the connection without one.
Script = Callable[[int, bytes], bytes | None]


def answer(body: bytes, *headers: str, length: bool = True) -> bytes:
    head = ["HTTP/1.1 200 OK", "Content-Type: application/json", *headers]
    if length:
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class StandIn:
    """A stand-in agent: answers each request as ``script(request_number, request_head)`` says; keeps
    connections open between requests; records the SNI name each TLS client sent."""

    def __init__(self, script: Script, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        self.script, self.tls = script, tls
        self.requests: list[bytes] = []
        self.connections = 0
        self.server_names: list[str | None] = []
        if tls is not None:
            tls.sni_callback = lambda _sock, name, _ctx: self.server_names.append(name)
        self.listener = socket.create_server((host, 0))
        self.port = self.listener.getsockname()[1]
        self.threads: list[threading.Thread] = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            thread = threading.Thread(target=self.serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                sock = self.tls.wrap_socket(conn, server_side=True) if self.tls is not None else conn
                with sock, sock.makefile("rb") as reader:
                    while head := reader.readline():
                        while (line := reader.readline()) not in (b"\r\n", b""):
                            head += line
                        length = next(
                            (
                                int(h.split(b":")[1])
                                for h in head.split(b"\r\n")
                                if h.lower().startswith(b"content-length:")
                            ),
                            0,
                        )
                        reader.read(length)
                        self.requests.append(head)
                        reply = self.script(len(self.requests), head)
                        if reply is None:
                            return
                        sock.sendall(reply)
                        if b"Content-Length" not in reply:
                            return  # the answer ends when the connection does
            except (OSError, ssl.SSLError):
                return

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def stand_in() -> Iterator[Callable[..., StandIn]]:
    made: list[StandIn] = []

    def start(script: Script, **kwargs: object) -> StandIn:
        made.append(StandIn(script, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    yield start
    for s in made:
        s.close()


def test_py_consul_reads_the_x_consul_index_header(stand_in: Callable[..., StandIn]) -> None:
    """py-consul's calls that return Consul's index (catalog, health, KV) get it through registrar's client."""
    agent = stand_in(lambda n, head: answer(b'{"web": []}', "X-Consul-Index: 42"))
    sink = ConsulSink(ConsulTarget(port=agent.port))
    try:
        assert sink.client.catalog.services() == ("42", {"web": []})
    finally:
        sink.close()


def test_an_answer_ended_by_closing_the_connection_is_read(stand_in: Callable[..., StandIn]) -> None:
    """An answer without Content-Length, ended by the agent closing the connection (RFC 9112 6.3), is read whole."""
    agent = stand_in(lambda n, head: answer(SERVICES, "Connection: close", length=False))
    sink = ConsulSink(ConsulTarget(port=agent.port))
    try:
        assert list(sink.services()) == ["web"]
    finally:
        sink.close()


def test_a_kept_connection_closed_without_an_answer_is_replaced_once(stand_in: Callable[..., StandIn]) -> None:
    """A kept connection that the agent closes instead of answering (it restarted) costs no error: the
    request goes once more, on a new connection."""
    agent = stand_in(lambda n, head: None if n == 2 else answer(SERVICES))
    sink = ConsulSink(ConsulTarget(port=agent.port))
    try:
        assert list(sink.services()) == ["web"]
        assert list(sink.services()) == ["web"]
        assert (len(agent.requests), agent.connections) == (3, 2)
    finally:
        sink.close()


@pytest.fixture
def tls_agent(stand_in: Callable[..., StandIn]) -> StandIn:
    """A stand-in agent on HTTPS at 127.0.0.2, an address its certificate does not name."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(TLS / "server.pem", TLS / "server-key.pem")
    return stand_in(lambda n, head: answer(SERVICES), host="127.0.0.2", tls=context)


def https(agent: StandIn, **tls: object) -> ConsulSink:
    return ConsulSink(ConsulTarget("https", "127.0.0.2", agent.port, **tls), timeout=2.0)  # type: ignore[arg-type]


def test_a_certificate_that_does_not_name_the_address_is_refused_in_one_line(tls_agent: StandIn) -> None:
    """With the agent's CA but an address its certificate does not name, a call fails with one line that
    says what the certificate did not match and names CONSUL_TLS_SERVER_NAME."""
    sink = https(tls_agent, ca_file=str(TLS / "ca.pem"))
    try:
        with pytest.raises(ConsulError) as error:
            sink.services()
    finally:
        sink.close()
    message = str(error.value)
    assert "\n" not in message
    assert "certificate does not name 127.0.0.2" in message and "CONSUL_TLS_SERVER_NAME" in message


def test_the_tls_server_name_is_checked_and_sent_as_sni(tls_agent: StandIn) -> None:
    """CONSUL_TLS_SERVER_NAME is the name checked in the agent's certificate and sent as SNI, whatever
    address is dialled."""
    sink = https(tls_agent, ca_file=str(TLS / "ca.pem"), tls_server_name="server.dc1.consul")
    try:
        assert list(sink.services()) == ["web"]
    finally:
        sink.close()
    assert tls_agent.server_names == ["server.dc1.consul"]


def test_tls_without_verification_needs_no_ca(tls_agent: StandIn) -> None:
    """CONSUL_HTTP_SSL_VERIFY=false: no CA, no name check, the call goes through."""
    sink = https(tls_agent, verify=False)
    try:
        assert list(sink.services()) == ["web"]
    finally:
        sink.close()


def test_an_unknown_ca_is_refused_in_one_line(tls_agent: StandIn) -> None:
    """Without the CA that signed the agent's certificate, a call fails with one line that names CONSUL_CACERT."""
    sink = https(tls_agent, tls_server_name="server.dc1.consul")
    try:
        with pytest.raises(ConsulError) as error:
            sink.services()
    finally:
        sink.close()
    assert "\n" not in str(error.value) and "CONSUL_CACERT" in str(error.value)
