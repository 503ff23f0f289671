"""registrar run against the real engine and agent: events, exits, resync, signals."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.harness import IMAGE, TEST_LABEL, Consul, wait_until

Run = Callable[..., Any]


def test_start_and_stop_follow_events(host: str, consul: Consul, containers: Run, daemon: Any) -> None:
    """A container started after registrar is registered; stopping it deregisters it."""
    daemon("--hostname", host)
    c = containers(labels={"SERVICE_NAME": "live"})
    service_id = f"{host}:{c.name}:80"
    wait_until(lambda: service_id in consul.services(host), "registration after start")
    c.stop(timeout=1)
    wait_until(lambda: service_id not in consul.services(host), "deregistration after stop")


def test_startup_registers_running_containers_and_removes_stale(
    host: str, consul: Consul, containers: Run, daemon: Any
) -> None:
    """At start the daemon registers what already runs and removes this host's stale entries."""
    c = containers()
    stale = {"external-source": "registrar", "registrar-host": host, "registrar-container": "0123456789ab"}
    consul.register({"ID": f"{host}:gone:80", "Name": "gone", "Port": 1, "Meta": stale})
    daemon("--hostname", host)
    assert set(consul.services(host)) == {f"{host}:{c.name}:80"}


def test_removed_container_deregistered(host: str, consul: Consul, containers: Run, daemon: Any) -> None:
    """docker rm -f of a running container deregisters its services."""
    c = containers()
    daemon("--hostname", host)
    c.remove(force=True)
    wait_until(lambda: consul.services(host) == {}, "deregistration after rm -f")


def test_deregister_on_success_removes_a_container_stopped_on_purpose(
    host: str, consul: Consul, containers: Run, daemon: Any
) -> None:
    """--deregister on-success: docker stop -t 1 of a process that ignores SIGTERM ends in SIGKILL (exit 137),
    a stop on purpose and not a crash, so its registration goes (registrator's rule)."""
    d = daemon("--hostname", host, "--deregister", "on-success")
    c = containers(command=["sh", "-c", "trap '' TERM; httpd -f -p 80 -h /www"])
    service_id = f"{host}:{c.name}:80"
    wait_until(lambda: service_id in consul.services(host), "registration")
    c.stop(timeout=1)
    c.reload()
    assert c.attrs["State"]["ExitCode"] == 137
    wait_until(lambda: service_id not in consul.services(host), "deregistration after docker stop")
    assert d.count("services_kept") == 0


@pytest.mark.parametrize(("code", "kept"), [(3, True), (0, False)])
def test_deregister_on_success(host: str, consul: Consul, containers: Run, daemon: Any, code: int, kept: bool) -> None:
    """--deregister on-success keeps a container that exited non-zero by itself and removes one that exited 0."""
    d = daemon("--hostname", host, "--deregister", "on-success", "--resync", "1")
    script = f"httpd -p 80 -h /www; until [ -f /tmp/go ]; do sleep 0.05; done; exit {code}"
    c = containers(command=["sh", "-c", script])
    service_id = f"{host}:{c.name}:80"
    wait_until(lambda: service_id in consul.services(host), "registration")
    c.exec_run(["touch", "/tmp/go"])
    if kept:
        wait_until(lambda: d.count("services_kept"), "the exit to be handled")
        # Let the loop act on the exit and run a full reconcile after it, then look.
        later = containers()
        wait_until(lambda: f"{host}:{later.name}:80" in consul.services(host), "a later start to be handled")
        d.wait_for_event("reconcile_done", count=d.count("reconcile_done") + 1)
        assert service_id in consul.services(host)
    else:
        wait_until(lambda: service_id not in consul.services(host), "deregistration after exit 0")


def test_resync_writes_nothing(host: str, consul: Consul, containers: Run, daemon: Any) -> None:
    """A resync that finds nothing changed leaves the catalog index unchanged."""
    containers()
    d = daemon("--hostname", host, "--resync", "1")
    index = consul.get("/v1/catalog/services").headers["X-Consul-Index"]
    d.wait_for_event("reconcile_done", count=3)
    assert consul.get("/v1/catalog/services").headers["X-Consul-Index"] == index
    assert d.count("service_registered") == 1


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_exits_zero_and_keeps_registrations(
    host: str, consul: Consul, containers: Run, daemon: Any, sig: int
) -> None:
    """SIGTERM or SIGINT: exit 0 within a few seconds; running containers stay registered."""
    c = containers()
    d = daemon("--hostname", host)
    started = time.monotonic()
    d.signal(sig)
    assert d.proc.wait(5) == 0
    assert time.monotonic() - started < 5
    assert f"{host}:{c.name}:80" in consul.services(host)


def test_rename_moves_the_registration(host: str, consul: Consul, containers: Run, daemon: Any) -> None:
    """docker rename: the ID with the old name goes, the one with the new name comes."""
    c = containers()
    daemon("--hostname", host)
    old_id = f"{host}:{c.name}:80"
    assert set(consul.services(host)) == {old_id}
    c.rename(c.name + "-renamed")
    wait_until(lambda: set(consul.services(host)) == {f"{old_id[: -len(':80')]}-renamed:80"}, "the renamed ID")


def in_maintenance(consul: Consul, service_id: str) -> bool:
    return any(c["CheckID"] == f"_service_maintenance:{service_id}" for c in consul.checks(service_id))


def test_survivor_of_its_stop_signal_returns_to_passing(
    host: str, consul: Consul, docker_client: Any, daemon: Any
) -> None:
    """docker kill -s TERM of a container that handles TERM and runs on: maintenance, then back (stop timeout 1 s)."""
    daemon("--hostname", host)
    survive = "httpd -p 80 -h /www; trap 'echo caught' TERM; while true; do sleep 0.1; done"
    api = docker_client.api
    created = api.create_container(
        IMAGE,
        command=["sh", "-c", survive],
        labels={TEST_LABEL: "1"},
        ports=[80],
        stop_signal="SIGTERM",
        stop_timeout=1,
        host_config=api.create_host_config(port_bindings={80: ("127.0.0.1", None)}),
    )
    try:
        api.start(created["Id"])
        name = api.inspect_container(created["Id"])["Name"].lstrip("/")
        service_id = f"{host}:{name}:80"
        wait_until(lambda: service_id in consul.services(host), "registration")
        api.kill(created["Id"], signal="SIGTERM")
        wait_until(lambda: in_maintenance(consul, service_id), "maintenance at the stop signal")
        wait_until(lambda: not in_maintenance(consul, service_id), "the survivor back in the passing set")
        assert service_id in consul.services(host)
    finally:
        api.remove_container(created["Id"], force=True)
