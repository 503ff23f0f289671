"""Prometheus metrics and the liveness/readiness endpoints.

One registry per daemon (no process-global state), served with the standard library's HTTP
server: ``/metrics`` (Prometheus text format), ``/healthz`` (the loop turns, no worker is stuck on
one request, and the Docker event thread runs, neither failing again and again) and ``/readyz``
(the first reconcile is done and Docker and Consul answer). No metric has a per-container label. A
daemon whose metrics nothing serves (no ``--metrics-addr``) counts nothing (``NoMetrics``):
prometheus_client and ``http.server`` are imported only by a daemon that serves them (1.4 MiB and
~20 ms of each start).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from registrar import __version__

if TYPE_CHECKING:
    from http.server import BaseHTTPRequestHandler

log = structlog.get_logger("registrar")


class Metrics:
    """The daemon's metrics, in a registry of their own."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("registrar_docker_events", "Docker container events received.", ["action"], registry=r)
        self.consul_ops = Counter(
            "registrar_consul_operations", "Requests to the Consul agent.", ["operation", "result"], registry=r
        )
        self.reconcile = Histogram(
            "registrar_reconcile_duration_seconds",
            "Wall time of full reconciles.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.probe_runs = Counter(
            "registrar_probe_runs",
            "Probes run (SERVICE_CHECK_EXEC; with --catalog HTTP, TCP, gRPC checks), by status.",
            ["status"],
            registry=r,
        )
        self.services = Gauge("registrar_registered_services", "Services of this host on the agent.", registry=r)
        self.docker_up = Gauge("registrar_docker_up", "1 when the Docker engine answers.", registry=r)
        self.consul_up = Gauge("registrar_consul_up", "1 when the Consul agent answers.", registry=r)
        self.build = Gauge("registrar_build_info", "registrar's version.", ["version"], registry=r)
        self.build.labels(version=__version__).set(1)


class Uncounted:
    """A metric nobody reads: takes prometheus_client's calls (``labels``, ``inc``, ``set``, ``observe``)
    and keeps nothing."""

    def labels(self, *values: str) -> Uncounted:
        return self

    def inc(self, amount: float = 1) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass


class NoMetrics:
    """The metrics of a daemon that serves none (no ``--metrics-addr``): each is Uncounted."""

    def __init__(self) -> None:
        self.events = self.consul_ops = self.reconcile = self.probe_runs = Uncounted()
        self.services = self.docker_up = self.consul_up = self.events


class HealthServer:
    """Serves /metrics, /healthz and /readyz on ``addr`` (host:port) in a background thread."""

    def __init__(self, addr: str, metrics: Metrics, unhealthy: Callable[[], str], not_ready: Callable[[], str]) -> None:
        from http.server import ThreadingHTTPServer

        host, _, port = addr.rpartition(":")
        handler = _handler(metrics, unhealthy, not_ready)
        self.server = ThreadingHTTPServer((host.strip("[]") or "127.0.0.1", int(port)), handler)
        self.server.daemon_threads = True
        self.address = "{}:{}".format(*self.server.server_address[:2])
        self.thread = threading.Thread(target=self.server.serve_forever, name="registrar-http", daemon=True)

    def start(self) -> None:
        self.thread.start()
        log.info("metrics_listening", address=self.address)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(
    metrics: Metrics, unhealthy: Callable[[], str], not_ready: Callable[[], str]
) -> type[BaseHTTPRequestHandler]:
    from http.server import BaseHTTPRequestHandler

    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                reason = unhealthy() if path == "/healthz" else not_ready()
                self._send(
                    503 if reason else 200, (reason or ("ok" if path == "/healthz" else "ready")).encode() + b"\n"
                )
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

        def _send(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler
