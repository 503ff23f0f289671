"""HTTP, TCP and gRPC checks registrar runs from the host with ``--catalog`` (registrar.host_checks), against servers on
loopback: the status and output Consul's agent gives for the same check."""

from __future__ import annotations

import socket
import ssl
import sys
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from registrar.host_checks import GRPC_MISSING, HostChecks, http_status, split_hostport
from registrar.model import Check, CheckOptions, Health, Probe
from tests.grpc_health import health_server


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class App:
    """A service on loopback: answers ``code`` with ``body`` (``/moved`` redirects to ``/``); records requests."""

    port: int = 0
    code: int = 200
    body: bytes = b"ok"
    seen: list[Seen] = field(default_factory=list)


TLS = Path(__file__).parent / "payloads" / "tls"
"""A CA and a server certificate it signed for 127.0.0.1 (see test_consul_client.py)."""


@pytest.fixture(params=[False], ids=["http"])
def app(request: pytest.FixtureRequest) -> Iterator[App]:
    state = App()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def handle_one(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            state.seen.append(Seen(self.command, self.path, dict(self.headers.items()), body))
            if self.path == "/moved":
                self.send_response(302)
                self.send_header("Location", "/")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(state.code)
            self.send_header("Content-Length", str(len(state.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(state.body)

        do_GET = do_POST = do_HEAD = do_PUT = handle_one

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if request.param:  # HTTPS with the test certificate, which registrar's default trust does not know
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(TLS / "server.pem", TLS / "server-key.pem")
        server.socket = context.wrap_socket(server.socket, server_side=True)
    state.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def checks() -> Iterator[HostChecks]:
    runner = HostChecks()
    yield runner
    runner.close()


def probe(check: Check, timeout: float = 2.0, output_max: int = 4096) -> Probe:
    return Probe(check.check_id, (), 10.0, timeout, output_max, target=check)


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("code", "status"), [(200, "passing"), (204, "passing"), (429, "warning"), (404, "critical"), (503, "critical")]
)
def test_http_status_is_the_agents_rule(code: int, status: str) -> None:
    """2xx passing, 429 warning, anything else critical (agent/checks/check.go)."""
    assert http_status(code) == status


def test_an_http_check_passes_with_the_agents_output(app: App, checks: HostChecks) -> None:
    """A 200 is passing; the output says method, URL, status and the body, as the agent's does."""
    url = f"http://127.0.0.1:{app.port}/health"
    health = checks.run(probe(Check("service:web", http=url)))
    assert (health.check_id, health.status) == ("service:web", "passing")
    assert health.output == f"HTTP GET {url}: 200 OK Output: ok"
    assert app.seen[0].headers["User-Agent"] == "Consul Health Check"


def test_an_http_check_sends_its_method_headers_and_body(app: App, checks: HostChecks) -> None:
    """METHOD, HEADER_<Name> (several values, one line) and BODY go with the request."""
    options = CheckOptions(header=(("Accept", ("application/json",)), ("X-Probe", ("a", "b"))), body='{"q": 1}')
    url = f"http://127.0.0.1:{app.port}/health"
    checks.run(probe(Check("service:web", http=url, method="POST", options=options)))
    seen = app.seen[0]
    assert (seen.method, seen.path, seen.body) == ("POST", "/health", b'{"q": 1}')
    assert (seen.headers["X-Probe"], seen.headers["Accept"]) == ("a, b", "application/json")


def test_an_http_check_answered_429_is_warning_and_500_critical(app: App, checks: HostChecks) -> None:
    """The status follows the response code; the body cut at the output maximum."""
    url = f"http://127.0.0.1:{app.port}/"
    app.code, app.body = 429, b"slow down" * 100
    health = checks.run(probe(Check("service:web", http=url), output_max=9))
    assert (health.status, health.output) == ("warning", f"HTTP GET {url}: 429 Too Many Requests Output: slow down")
    app.code = 500
    assert checks.run(probe(Check("service:web", http=url))).status == "critical"


def test_an_http_check_follows_redirects(app: App, checks: HostChecks) -> None:
    """A redirect is followed, as Go's client does for the agent: the answer at its end decides."""
    url = f"http://127.0.0.1:{app.port}/moved"
    health = checks.run(probe(Check("service:web", http=url)))
    assert health.status == "passing"
    assert [s.path for s in app.seen] == ["/moved", "/"]


def test_an_http_check_with_nothing_listening_is_critical(checks: HostChecks) -> None:
    """No answer is critical, with the error in the output."""
    url = f"http://127.0.0.1:{closed_port()}/"
    health = checks.run(probe(Check("service:web", http=url)))
    assert health.status == "critical"
    assert health.output.startswith(f"HTTP GET {url}: ")
    assert "refused" in health.output.lower()


def test_an_http_check_that_does_not_answer_in_time_is_critical(checks: HostChecks) -> None:
    """A server that accepts and never answers: critical once the check's timeout has passed."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        health = checks.run(probe(Check("service:web", http=url), timeout=0.2))
    assert (health.status, health.output) == ("critical", f"HTTP GET {url}: Read timed out.")


def test_a_tcp_check_passes_when_the_port_accepts(app: App, checks: HostChecks) -> None:
    """A connection opened is passing (``TCP connect <target>: Success``); refused is critical."""
    target = f"127.0.0.1:{app.port}"
    assert checks.run(probe(Check("service:web:2", tcp=target))).output == f"TCP connect {target}: Success"
    refused = checks.run(probe(Check("service:web:2", tcp=f"127.0.0.1:{closed_port()}")))
    assert refused.status == "critical"
    assert refused.output.startswith("dial tcp 127.0.0.1:")


def test_a_tcp_check_reaches_ipv6_loopback(checks: HostChecks) -> None:
    """``[::1]:port`` targets, as an --ipv6 host's checks are written, are reached."""
    with socket.socket(socket.AF_INET6) as server:
        server.bind(("::1", 0))
        server.listen()
        target = f"[::1]:{server.getsockname()[1]}"
        assert checks.run(probe(Check("service:web:2", tcp=target))).status == "passing"
    assert split_hostport(target) == ("::1", int(target.rsplit(":", 1)[1]))


def test_a_closed_runner_runs_nothing(app: App, checks: HostChecks) -> None:
    """After close (registrar stopping) a run is critical at once and sends nothing."""
    checks.close()
    health = checks.run(probe(Check("service:web", http=f"http://127.0.0.1:{app.port}/")))
    assert (health.status, app.seen) == ("critical", [])


@pytest.fixture
def grpc_health() -> Iterator[tuple[str, Any]]:
    """A gRPC server on loopback with the standard health service: (its host:port, the servicer to set)."""
    with health_server(serving=False) as (port, servicer):
        yield f"127.0.0.1:{port}", servicer


def test_a_grpc_check_passes_while_the_health_service_says_serving(
    grpc_health: tuple[str, Any], checks: HostChecks
) -> None:
    """SERVING is passing (``gRPC check <target>: success``); NOT_SERVING, or a service it does not know,
    critical with the agent's output."""
    from grpc_health.v1 import health_pb2

    target, servicer = grpc_health
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health = checks.run(probe(Check("service:web:3", grpc=target)))
    assert (health.status, health.output) == ("passing", f"gRPC check {target}: success")
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    health = checks.run(probe(Check("service:web:3", grpc=target)))
    assert (health.status, health.output) == ("critical", f"gRPC {target} serving status: NOT_SERVING")
    unknown = checks.run(probe(Check("service:web:3", grpc=f"{target}/other")))
    assert (unknown.status, unknown.output) == ("critical", "rpc error: code = NotFound desc = ")


def test_a_grpc_check_with_nothing_listening_is_critical(checks: HostChecks) -> None:
    """No server: critical, ``rpc error: code = Unavailable ...``, within the check's timeout."""
    health = checks.run(probe(Check("service:web:3", grpc=f"127.0.0.1:{closed_port()}"), timeout=2.0))
    assert health.status == "critical"
    assert health.output.startswith("rpc error: code = Unavailable desc = ")


def test_a_grpc_check_without_grpcio_says_how_to_get_it(checks: HostChecks, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the grpc extra a gRPC check is critical, its output naming what to install."""
    monkeypatch.setitem(sys.modules, "grpc", None)
    health = checks.run(probe(Check("service:web:3", grpc="127.0.0.1:1")))
    assert (health.status, health.output) == ("critical", GRPC_MISSING)


def test_an_http_check_asks_for_no_kept_alive_connection(app: App, checks: HostChecks) -> None:
    """Each run says ``Connection: close``, as the agent's client keeps none alive (a server closing an idle
    connection as a run starts would fail that run)."""
    url = f"http://127.0.0.1:{app.port}/"
    for _ in range(2):
        assert checks.run(probe(Check("service:web", http=url))).status == "passing"
    assert [s.headers["Connection"] for s in app.seen] == ["close", "close"]


def test_a_failed_runs_output_is_the_same_each_time(checks: HostChecks) -> None:
    """Two runs against a closed port give the same output (urllib3 1.26 names an object's address in its
    error: each run would be a new output, and a catalog write)."""
    url = f"http://127.0.0.1:{closed_port()}/"
    first, second = (checks.run(probe(Check("service:web", http=url))) for _ in range(2))
    assert first == second
    assert first.output == f"HTTP GET {url}: Failed to establish a new connection: [Errno 111] Connection refused"


@pytest.mark.parametrize("app", [True], ids=["https"], indirect=True)
def test_an_https_check_that_skips_verification_passes_without_a_warning_each_run(app: App, checks: HostChecks) -> None:
    """TLS_SKIP_VERIFY against a certificate nobody trusts passes, and no InsecureRequestWarning is printed for
    each run (it would break the JSON log lines); without it the check is critical."""
    url = f"https://127.0.0.1:{app.port}/"
    with warnings.catch_warnings(record=True) as warned:
        runner = HostChecks()
        try:
            health = [runner.run(probe(Check("service:web", http=url, tls_skip_verify=True))) for _ in range(2)]
        finally:
            runner.close()
    assert [h.status for h in health] == ["passing", "passing"]
    assert [w for w in warned if "Unverified HTTPS" in str(w.message)] == []
    assert checks.run(probe(Check("service:web", http=url))).status == "critical"


def test_close_ends_a_run_that_waits_for_an_answer(checks: HostChecks, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that accepts and never answers: close() (registrar stopping) ends the run at once, not at the
    check's 30 s timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        connected, track = threading.Event(), checks._track_socket

        def tracked(opened: socket.socket) -> None:
            track(opened)
            connected.set()

        monkeypatch.setattr(checks, "_track_socket", tracked)
        results: list[Health] = []
        run = threading.Thread(target=lambda: results.append(checks.run(probe(Check("service:web", http=url), 30))))
        run.start()
        accepted, _ = silent.accept()  # the request is out
        with accepted:
            assert connected.wait(5), "the run's connection was not made"
            checks.close()
            run.join(timeout=10)
    assert [h.status for h in results] == ["critical"]


def test_the_output_keeps_the_last_bytes_of_the_body(app: App, checks: HostChecks) -> None:
    """OUTPUT_MAX_SIZE keeps the end of a longer body, as the agent's circular buffer does."""
    url = f"http://127.0.0.1:{app.port}/"
    app.body = b"the start " + b"." * 10_000 + b" the end"
    health = checks.run(probe(Check("service:web", http=url), output_max=8))
    assert health.output == f"HTTP GET {url}: 200 OK Output:  the end"


def test_a_connect_that_times_out_gives_the_same_output_each_run(checks: HostChecks) -> None:
    """A server whose accept queue is full (its SYNs go unanswered): critical, ``Connection to ... timed out.``,
    the same each run (urllib3 puts the connection object and the seconds in its error)."""
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        waiting = [socket.socket() for _ in range(4)]
        for queued in waiting:
            queued.setblocking(False)
            queued.connect_ex(full.getsockname())
        url = f"http://127.0.0.1:{full.getsockname()[1]}/"
        try:
            runs = [checks.run(probe(Check("service:web", http=url), timeout=0.3)) for _ in range(2)]
        finally:
            for queued in waiting:
                queued.close()
    assert (
        runs[0] == runs[1] == Health("service:web", "critical", f"HTTP GET {url}: Connection to 127.0.0.1 timed out.")
    )


def test_a_tls_server_name_on_a_plain_http_check_is_ignored(app: App, checks: HostChecks) -> None:
    """TLS_SERVER_NAME given to an http:// check (a label for every check of the service) changes nothing."""
    check = Check("service:web", http=f"http://127.0.0.1:{app.port}/", options=CheckOptions(tls_server_name="web"))
    assert checks.run(probe(check)).status == "passing"
