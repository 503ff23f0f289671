"""Docker HEALTHCHECK mirrored into a Consul check that registrar owns, on the real engine and agent."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from tests.integration.harness import Consul, wait_until

Run = Callable[..., Any]
# Healthy while /tmp/ok exists; probed every 200 ms, unhealthy after one failure.
HEALTHCHECK = {
    "test": ["CMD-SHELL", "if [ -f /tmp/ok ]; then echo up; else echo down; exit 1; fi"],
    "interval": 200_000_000,
    "timeout": 2_000_000_000,
    "retries": 1,
}


def health(consul: Consul, service_id: str) -> tuple[str, str] | None:
    """(Status, Output) of the service's Docker health check on the agent, or None."""
    for check in consul.checks(service_id):
        if check["CheckID"] == f"{service_id}:docker-health":
            assert check["Name"] == "Docker health"
            return str(check["Status"]), str(check["Output"]).strip()
    return None


def test_health_follows_docker(host: str, consul: Consul, containers: Run, daemon: Any) -> None:
    """starting/unhealthy are critical, healthy is passing, with Docker's probe output; beside a TCP check."""
    daemon("--hostname", host)
    c = containers(healthcheck=HEALTHCHECK, labels={"SERVICE_CHECK_TCP": "true"})
    service_id = f"{host}:{c.name}:80"
    wait_until(lambda: (health(consul, service_id) or ("",))[0] == "critical", "a critical check while not healthy")
    c.exec_run(["touch", "/tmp/ok"])
    wait_until(lambda: health(consul, service_id) == ("passing", "up"), "passing with the probe's output")
    c.exec_run(["rm", "/tmp/ok"])
    wait_until(lambda: health(consul, service_id) == ("critical", "down"), "critical again when unhealthy")
    assert {ch["CheckID"] for ch in consul.checks(service_id)} == {
        f"service:{service_id}",
        f"{service_id}:docker-health",
    }


def test_health_turned_off_by_label_or_flag(host: str, consul: Consul, containers: Run, daemon: Any) -> None:
    """SERVICE_CHECK_DOCKER_HEALTH=false, or --docker-health off, registers no Docker health check."""
    off = containers(healthcheck=HEALTHCHECK, labels={"SERVICE_CHECK_DOCKER_HEALTH": "false"})
    on = containers(healthcheck=HEALTHCHECK)
    daemon("--hostname", host)
    wait_until(lambda: health(consul, f"{host}:{on.name}:80") is not None, "the labelled-on check")
    assert health(consul, f"{host}:{off.name}:80") is None
    other = host + "-off"
    try:
        daemon("--hostname", other, "--docker-health", "off")
        assert health(consul, f"{other}:{on.name}:80") is None
        assert f"{other}:{on.name}:80" in consul.services(other)
    finally:
        consul.clean(other)


def passing(host: str, consul: Consul, containers: Run, daemon: Any) -> tuple[str, Any]:
    """A healthy container, and a registrar that has made its Docker health check passing."""
    c = containers(healthcheck=HEALTHCHECK)
    c.exec_run(["touch", "/tmp/ok"])
    service_id = f"{host}:{c.name}:80"
    d = daemon("--hostname", host)
    wait_until(lambda: health(consul, service_id) == ("passing", "up"), "passing")
    return service_id, d


def test_registrar_restart_keeps_the_status(host: str, consul: Consul, containers: Run, daemon: Any) -> None:
    """registrar stopped and started again: the check stays passing throughout, and is not re-registered."""
    service_id, first = passing(host, consul, containers, daemon)
    first.signal(signal.SIGTERM)
    assert first.proc.wait(5) == 0
    assert health(consul, service_id) == ("passing", "up")
    second = daemon("--hostname", host)
    assert health(consul, service_id) == ("passing", "up")
    assert [e for e in second.events() if e.get("service_id") == service_id] == [], "not written again"


def test_registrar_gone_turns_the_check_critical(host: str, consul: Consul, containers: Run, daemon: Any) -> None:
    """registrar killed and not restarted: the Docker health check turns critical when its 45 s TTL runs out."""
    service_id, d = passing(host, consul, containers, daemon)
    d.signal(signal.SIGKILL)
    d.proc.wait(5)
    wait_until(lambda: (health(consul, service_id) or ("",))[0] == "critical", "the TTL to run out", timeout=75)
