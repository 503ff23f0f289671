"""Exec probes (SERVICE_CHECK_EXEC): registrar runs the command in the container through Docker's exec
API and reports on a TTL check it owns, as the real agent shows it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.integration.harness import Consul, wait_until

Run = Callable[..., Any]
#: Exits with the number in /tmp/status (2 while there is none) and says what it read.
PROBE = "sh -c 's=$(cat /tmp/status 2>/dev/null || echo 2); echo state $s; exit $s'"


def check_of(consul: Consul, service_id: str) -> dict[str, Any]:
    return {c["CheckID"]: c for c in consul.checks(service_id)}.get(f"service:{service_id}", {})


def status_of(consul: Consul, service_id: str, check_id: str) -> str:
    return str({c["CheckID"]: c["Status"] for c in consul.checks(service_id)}.get(check_id, ""))


def status_is(consul: Consul, service_id: str, status: str, output: str) -> bool:
    check = check_of(consul, service_id)
    return check.get("Status") == status and output in check.get("Output", "")


def test_exec_probe_goes_critical_passing_and_warning_with_the_container(
    host: str, consul: Consul, containers: Run, daemon: Any
) -> None:
    """The probe's exit code sets the check: 2 critical, 0 passing, 1 warning, each with the command's output;
    a registrar restart keeps the status (no re-registration), and a stopped container takes its check along."""
    c = containers(labels={"SERVICE_CHECK_EXEC": PROBE, "SERVICE_CHECK_INTERVAL": "1s"})
    service_id = f"{host}:{c.name}:80"
    first = daemon("--hostname", host)
    wait_until(lambda: status_is(consul, service_id, "critical", "state 2"), "critical: no status file yet")
    c.exec_run(["sh", "-c", "echo 0 > /tmp/status"])
    wait_until(lambda: status_is(consul, service_id, "passing", "state 0"), "passing once the probe exits 0")
    c.exec_run(["sh", "-c", "echo 1 > /tmp/status"])
    wait_until(lambda: status_is(consul, service_id, "warning", "state 1"), "warning once the probe exits 1")
    c.exec_run(["sh", "-c", "echo 0 > /tmp/status"])
    wait_until(lambda: status_is(consul, service_id, "passing", "state 0"), "passing again")
    assert first.stop() == 0
    second = daemon("--hostname", host)
    assert check_of(consul, service_id)["Status"] == "passing", "the restart kept the status"
    assert second.count("service_registered") == 0
    c.stop(timeout=1)
    wait_until(lambda: service_id not in consul.services(host), "the service and its check gone with the container")


def test_output_beyond_the_maximum_is_cut_and_the_probe_still_passes(
    host: str, consul: Consul, containers: Run, daemon: Any
) -> None:
    """A command that prints 100 KB and exits 0: passing, its output cut at CHECK_OUTPUT_MAX_SIZE (not a timeout)."""
    c = containers(
        labels={
            "SERVICE_CHECK_EXEC": "sh -c 'echo start; yes | head -c 100000'",
            "SERVICE_CHECK_INTERVAL": "1s",
            "SERVICE_CHECK_OUTPUT_MAX_SIZE": "64",
        }
    )
    service_id = f"{host}:{c.name}:80"
    daemon("--hostname", host)
    wait_until(lambda: status_is(consul, service_id, "passing", "start"), "passing")
    assert len(check_of(consul, service_id)["Output"]) == 64


def test_a_stop_does_not_wait_for_a_hanging_probe(host: str, consul: Consul, containers: Run, daemon: Any) -> None:
    """SIGTERM while a probe hangs (a 30 s timeout): registrar ends the run and exits 0 at once, not at the timeout."""
    c = containers(
        labels={"SERVICE_CHECK_EXEC": "sleep 55", "SERVICE_CHECK_INTERVAL": "40s", "SERVICE_CHECK_TIMEOUT": "30s"}
    )
    d = daemon("--hostname", host)
    wait_until(lambda: any("sleep 55" in " ".join(p) for p in c.top()["Processes"]), "the probe running")
    assert d.stop() == 0, "stopped within the harness's 10 s, not killed after waiting for the probe"


def test_a_probe_that_hangs_is_cut_at_its_timeout(host: str, consul: Consul, containers: Run, daemon: Any) -> None:
    """A command that outlives CHECK_TIMEOUT: the check turns critical and says it timed out; other checks run on."""
    c = containers(
        labels={
            "SERVICE_CHECK_EXEC": "sleep 30",
            "SERVICE_CHECK_INTERVAL": "1s",
            "SERVICE_CHECK_TIMEOUT": "500ms",
            "SERVICE_CHECK_2_EXEC": "true",
            "SERVICE_CHECK_2_INTERVAL": "1s",
        }
    )
    service_id = f"{host}:{c.name}:80"
    daemon("--hostname", host)
    wait_until(lambda: status_is(consul, service_id, "critical", "timed out after 0.5s"), "critical: timed out")
    second = f"service:{service_id}:2"
    wait_until(lambda: status_of(consul, service_id, second) == "passing", "check 2 passing meanwhile")
