"""registrar run against Podman's Docker-compatible API (``podman system service``), no resync."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

import docker
import pytest

from tests.integration.harness import IMAGE, Consul, PodmanEngine, pings, wait_until

Run = Callable[..., Any]


@pytest.fixture
def on_podman(host: str, daemon: Any, podman_client: docker.DockerClient) -> Any:
    """``registrar run`` following the Podman service, with this test's --hostname."""
    return daemon("--hostname", host, "--docker-host", PodmanEngine().url)


def service_port(consul: Consul, host: str, service_id: str) -> int | None:
    service = consul.services(host).get(service_id)
    return int(service["Port"]) if service else None


def host_port(c: Any) -> int:
    c.reload()
    return int(c.ports["80/tcp"][0]["HostPort"])


def test_start_and_stop_are_followed(host: str, consul: Consul, podman_containers: Run, on_podman: Any) -> None:
    """podman start registers the service at its published port; podman stop deregisters it."""
    c = podman_containers(labels={"SERVICE_NAME": "pm-web"})
    service_id = f"{host}:{c.name}:80"
    wait_until(lambda: service_port(consul, host, service_id) == host_port(c), "registration after start")
    assert consul.services(host)[service_id]["Service"] == "pm-web"
    c.stop(timeout=1)
    wait_until(lambda: service_id not in consul.services(host), "deregistration after stop")


def test_rm_force_is_followed(host: str, consul: Consul, podman_containers: Run, on_podman: Any) -> None:
    """podman rm -f of a running container deregisters it."""
    c = podman_containers()
    service_id = f"{host}:{c.name}:80"
    wait_until(lambda: service_id in consul.services(host), "registration")
    c.remove(force=True)
    wait_until(lambda: consul.services(host) == {}, "deregistration after rm -f")


def test_rename_moves_the_registration(host: str, consul: Consul, podman_containers: Run, on_podman: Any) -> None:
    """podman rename: the ID with the old name goes, the one with the new name comes."""
    c = podman_containers()
    wait_until(lambda: set(consul.services(host)) == {f"{host}:{c.name}:80"}, "registration")
    c.rename(c.name + "-renamed")
    wait_until(lambda: set(consul.services(host)) == {f"{host}:{c.name}-renamed:80"}, "the renamed ID")


def test_kill_and_restart_end_at_the_current_port(
    host: str, consul: Consul, podman_containers: Run, on_podman: Any
) -> None:
    """podman kill deregisters; podman restart registers again, at the port the container has now."""
    c = podman_containers()
    service_id = f"{host}:{c.name}:80"
    wait_until(lambda: service_id in consul.services(host), "registration")
    c.kill()
    wait_until(lambda: service_id not in consul.services(host), "deregistration after kill")
    c.restart(timeout=1)
    wait_until(lambda: service_port(consul, host, service_id) == host_port(c), "registration after restart")


def test_pause_keeps_the_registration(host: str, consul: Consul, podman_containers: Run, on_podman: Any) -> None:
    """podman pause and unpause leave the service registered, as on Docker (the process still exists)."""
    c = podman_containers()
    survivor = podman_containers()
    wait_until(lambda: len(consul.services(host)) == 2, "registrations")
    c.pause()
    survivor.remove(force=True)  # a later event, so the pause has surely been handled when it is
    wait_until(lambda: set(consul.services(host)) == {f"{host}:{c.name}:80"}, "the later removal")
    c.unpause()
    assert f"{host}:{c.name}:80" in consul.services(host)


def test_podman_service_restart_is_followed(
    host: str, consul: Consul, podman_containers: Run, on_podman: Any, podman_engine: PodmanEngine
) -> None:
    """The Podman service restarts (its event stream ends): registrar reconnects and follows the new one."""
    podman_engine.restart(lambda: pings(podman_engine.socket))
    on_podman.wait_for_event("docker_stream_reconnected", timeout=60)
    c = podman_containers()
    service_id = f"{host}:{c.name}:80"
    wait_until(lambda: service_id in consul.services(host), "registration after the service restart")
    c.stop(timeout=1)
    wait_until(lambda: service_id not in consul.services(host), "deregistration after the service restart")


def test_pod_registers_its_app_container_not_its_infra_container(
    host: str, consul: Consul, on_podman: Any, podman_client: docker.DockerClient
) -> None:
    """A pod publishing a port: its labelled app container is registered; the pod's infra container is not."""
    pod = f"{host}-pod"
    try:
        podman("pod", "create", "--name", pod, "--publish", "127.0.0.1::80")
        app = f"{host}-app"
        podman(
            "run",
            "-d",
            "--pod",
            pod,
            "--name",
            app,
            "--stop-signal",
            "SIGKILL",
            "--label",
            "SERVICE_NAME=pod-web",
            IMAGE,
        )
        wait_until(lambda: set(consul.services(host)) == {f"{host}:{app}:80"}, "only the app container")
        assert consul.services(host)[f"{host}:{app}:80"]["Service"] == "pod-web"
    finally:
        podman("pod", "rm", "-f", pod)
    wait_until(lambda: consul.services(host) == {}, "deregistration after the pod is removed")


def podman(*args: str) -> None:
    subprocess.run(["podman", *args], check=True, capture_output=True, timeout=120)
