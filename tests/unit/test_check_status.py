"""Check status the daemon sends: Docker health and exec probe results, refreshed before their TTL runs out."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from structlog.testing import capture_logs

from registrar.model import ExecResult
from registrar.settings import Settings
from tests.unit.fakes import MemoryConsul, MemoryDocker
from tests.unit.loop import step_until, stopped
from tests.unit.payloads import container, payload


def with_health(c: dict[str, Any], status: str, output: str) -> dict[str, Any]:
    c = copy.deepcopy(c)
    c["State"]["Health"] = {"Status": status, "Log": [{"Output": output}]}
    return c


def test_health_status_event_updates_the_check_without_reregistering(started: Any) -> None:
    """health_status events move the Docker health check (status and output); the service is written once."""
    web = with_health(payload("web"), "starting", "")
    docker, consul = MemoryDocker(web), MemoryConsul()
    daemon = started(docker, consul)
    check = "vm:rec-web:80:docker-health"
    step_until(daemon, lambda: consul.health.get(check) == ("critical", ""))
    assert consul.registered["vm:rec-web:80"]["Checks"][-1]["Status"] == "critical"
    for status, expected in (("healthy", "passing"), ("unhealthy", "critical"), ("healthy", "passing")):
        docker.containers[web["Id"]] = with_health(web, status, f"probe said {status}")
        docker.emit(f"health_status: {status}", web["Id"])
        step_until(daemon, lambda: consul.health.get(check) == (expected, f"probe said {status}"))  # noqa: B023
    assert consul.attempts["vm:rec-web:80"] == 1, "a change of health is no re-registration"


def test_health_is_refreshed_before_its_ttl_runs_out(started: Any) -> None:
    """Every refresh period the health is sent again, so the TTL never runs out while registrar runs."""
    web = with_health(payload("web"), "healthy", "fine")
    docker, consul = MemoryDocker(web), MemoryConsul()
    daemon = started(docker, consul)
    check = "vm:rec-web:80:docker-health"
    step_until(daemon, lambda: check in consul.health)
    consul.health.clear()
    daemon.core.schedule.health = 0.0  # the refresh is due now (it is every HEALTH_REFRESH_SECONDS)
    step_until(daemon, lambda: consul.health.get(check) == ("passing", "fine"))


def probed(labels: dict[str, str]) -> dict[str, Any]:
    return container("web", labels={"SERVICE_CHECK_EXEC": "check --quick", "SERVICE_CHECK_INTERVAL": "50ms", **labels})


def test_exec_probes_report_on_their_ttl_check_and_stop_with_the_container(started: Any) -> None:
    """SERVICE_CHECK_EXEC: registrar runs the command in the container and sends its status and output to
    the service's TTL check, once per change; when the container dies the probes stop with its service."""
    c = probed({})
    docker, consul = MemoryDocker(c), MemoryConsul()
    docker.exec_results[c["Id"]] = ExecResult(1, "degraded")
    daemon = started(docker, consul)
    check = "service:vm:rec-web:80"
    step_until(daemon, lambda: consul.health.get(check) == ("warning", "degraded"))
    assert consul.registered["vm:rec-web:80"]["Checks"][0]["TTL"] == "45s"
    assert docker.execs[0] == (c["Id"], ("check", "--quick"))
    docker.exec_results[c["Id"]] = ExecResult(0, "fine")
    step_until(daemon, lambda: consul.health.get(check) == ("passing", "fine"))
    writes = consul.writes
    runs = len(docker.execs)
    step_until(daemon, lambda: len(docker.execs) >= runs + 3)
    assert consul.writes == writes, "an unchanged result is not sent again (the refresh keeps the TTL)"
    docker.containers[c["Id"]] = stopped(c, 0)
    docker.emit("die", c["Id"], exit_code=0)
    step_until(daemon, lambda: consul.registered == {})
    with daemon.prober.changed:
        assert daemon.prober.probes == {}


def test_exec_checks_off_or_a_one_shot_run_no_probe(one_shot: Any, started: Any) -> None:
    """--exec-checks off drops the check with one warning; sync registers the check but runs no probe."""
    c = probed({})
    docker, consul = MemoryDocker(c), MemoryConsul()
    assert one_shot(docker, consul).sync().registered == 1
    assert docker.execs == [] and consul.registered["vm:rec-web:80"]["Checks"][0]["CheckID"] == "service:vm:rec-web:80"
    with capture_logs() as logs:
        daemon = started(MemoryDocker(c), MemoryConsul(), Settings(hostname="vm", exec_checks=False))
        step_until(daemon, daemon.ready.is_set)
    problems = [(e["key"], e["problem"]) for e in logs if e["event"] == "container_label_problem"]
    off = "check dropped: exec checks are off on this host (--exec-checks off)"
    assert problems == [("label SERVICE_CHECK_EXEC", off)]


def test_exec_results_are_refreshed_with_docker_health_off(started: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """--docker-health off: an exec check's unchanged result is still sent again each refresh period (its TTL)."""
    monkeypatch.setattr("registrar.settings.HEALTH_REFRESH_SECONDS", 0.05)
    c = probed({"SERVICE_CHECK_INTERVAL": "1h"})
    docker, consul = MemoryDocker(c), MemoryConsul()
    daemon = started(docker, consul, Settings(hostname="vm", docker_health=False))
    check = "service:vm:rec-web:80"
    step_until(daemon, lambda: consul.health.get(check) == ("passing", ""), idle=False)  # refreshes never rest
    consul.health.clear()
    step_until(daemon, lambda: consul.health.get(check) == ("passing", ""), idle=False)
    assert len(docker.execs) == 1, "sent again without running the probe again"
