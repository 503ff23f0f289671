"""/metrics, /healthz and /readyz of a running daemon, read over HTTP as Prometheus or a probe would."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import requests

from tests.integration.harness import Consul, wait_until

Run = Callable[..., Any]


def address(d: Any) -> str:
    return str(next(e for e in d.events() if e.get("event") == "metrics_listening")["address"])


def metrics_with(base: str, needle: str) -> str:
    """The metrics text once it contains ``needle`` (empty until then)."""
    text = requests.get(base + "/metrics", timeout=5).text
    return text if needle in text else ""


def readyz_body(base: str, status: int) -> str:
    """The /readyz body once it answers ``status`` (empty until then)."""
    reply = requests.get(base + "/readyz", timeout=5)
    return reply.text.strip() if reply.status_code == status else ""


def test_endpoints(host: str, consul: Consul, containers: Run, daemon: Any) -> None:
    """Metrics show events, Consul operations and registered services; healthz and readyz answer 200."""
    d = daemon("--hostname", host)
    base = f"http://{address(d)}"
    c = containers()
    wait_until(lambda: f"{host}:{c.name}:80" in consul.services(host), "registration")
    assert requests.get(base + "/healthz", timeout=5).status_code == 200
    ready = requests.get(base + "/readyz", timeout=5)
    assert (ready.status_code, ready.text.strip()) == (200, "ready")
    text = wait_until(lambda: metrics_with(base, "registrar_registered_services 1.0"), "the services gauge")
    assert 'registrar_docker_events_total{action="start"}' in text
    assert 'registrar_consul_operations_total{operation="register",result="ok"}' in text
    assert "registrar_reconcile_duration_seconds_count" in text
    assert "registrar_docker_up 1.0" in text and "registrar_consul_up 1.0" in text


def test_readyz_503_while_consul_is_unreachable(host: str, daemon: Any, own_consul: Any) -> None:
    """Before the first reconcile (Consul not there yet) readyz is 503 with the reason; healthz is 200."""
    d = daemon("--hostname", host, "--retry-attempts", "-1", "--retry-interval", "100", own_consul.uri, ready=False)
    d.wait_for_event("consul_unreachable")
    own_consul.start()
    d.wait_for_event("reconcile_done")
    base = f"http://{address(d)}"
    assert requests.get(base + "/readyz", timeout=5).status_code == 200
    own_consul.stop()
    reason = wait_until(lambda: readyz_body(base, 503), "readyz to report Consul down")
    assert reason == "Consul agent unreachable"
    assert requests.get(base + "/healthz", timeout=5).status_code == 200


def test_taken_metrics_port_does_not_stop_registrar(host: str, consul: Consul, containers: Run, daemon: Any) -> None:
    """If the metrics address is taken, registrar logs it and still registers."""
    first = daemon("--hostname", host)
    taken = address(first)
    c = containers()
    second_host = host + "-b"
    try:
        second = daemon("--hostname", second_host, "--metrics-addr", taken)
        assert second.count("metrics_unavailable") == 1
        wait_until(lambda: f"{second_host}:{c.name}:80" in consul.services(second_host), "registration")
    finally:
        consul.clean(second_host)
