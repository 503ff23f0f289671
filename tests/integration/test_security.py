"""The ACL token travels only in the X-Consul-Token header and is never printed."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from tests.integration.harness import run_cli

SECRET = "tok-3f1b9c7e-never-print-me"


class Recorder(BaseHTTPRequestHandler):
    """A stand-in agent on loopback: records each request, answers reads with no services."""

    seen: ClassVar[list[tuple[str, str, dict[str, str]]]] = []

    def _answer(self) -> None:
        Recorder.seen.append((self.command, self.path, dict(self.headers)))
        body = json.dumps({} if self.path.startswith("/v1/agent/services") else True).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _answer
    do_PUT = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recording_agent() -> Iterator[str]:
    Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"consul://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_token_in_header_not_url(host: str, containers: Callable[..., Any], recording_agent: str) -> None:
    """Every request carries the token in X-Consul-Token and never in its URL."""
    containers()
    result = run_cli("sync", "--hostname", host, recording_agent, env={"CONSUL_HTTP_TOKEN": SECRET})
    assert result.returncode == 0, result.stderr
    methods = {m for m, _, _ in Recorder.seen}
    assert methods == {"GET", "PUT"}
    for _method, path, headers in Recorder.seen:
        assert SECRET not in path
        assert headers.get("X-Consul-Token") == SECRET


def test_token_never_printed(host: str, containers: Callable[..., Any], daemon: Any) -> None:
    """No log line, error or plan output contains the token, at any log level, even on failure."""
    containers(labels={"SERVICE_CHECK_INTERVAL": "banana", "SERVICE_CHECK_HTTP": "/"})
    env = {"CONSUL_HTTP_TOKEN": SECRET}
    outputs = []
    for args in (
        ["plan", "--hostname", host, "--log-level", "debug"],
        ["plan", "--json", "--hostname", host],
        ["sync", "--hostname", host, "--log-level", "debug"],
        ["sync", "--hostname", host, "--retry-attempts", "0", "consul://127.0.0.1:1"],
        ["sync", "--hostname", host, "--retry-attempts", "0", "consul-tls://127.0.0.1:1"],
    ):
        result = run_cli(*args, env=env)
        outputs.append(result.stdout + result.stderr)
    d = daemon("--hostname", host, "--log-level", "debug", env=env)
    d.stop()
    outputs.append(d.log_path.read_text())
    assert all(SECRET not in out for out in outputs)
    assert any("banana" in out for out in outputs), "the runs did log"
