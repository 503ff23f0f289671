"""The sidecar image, built here without a registry and run the way docs/guides/getting-started.md says."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker.errors

from tests.integration.harness import TEST_LABEL, Consul, free_port, wait_until

Run = Callable[..., Any]
REPO = Path(__file__).parents[2]
TAG = "registrar:integration-test"
UNCOMPILED = """
import os, sys
import registrar.cli, registrar.consul_sink, registrar.daemon, registrar.docker_source, registrar.metrics
import docker, http.server, prometheus_client  # imported only on TCP (docker-py) and with --metrics-addr
for module in list(sys.modules.values()):
    cached = getattr(module, "__cached__", None)
    if cached and not os.path.exists(cached):
        print(module.__name__)
"""
"""Prints the modules registrar's daemon imports (on any transport, with metrics) that have no bytecode beside them."""


def test_sidecar_image_registers(host: str, consul: Consul, containers: Run, docker_client: Any) -> None:
    """Built on a debootstrapped base, run non-root with the socket read-only: it registers and reports healthy;
    every module it imports comes compiled in the image (none compiled again at each start)."""
    build = subprocess.run(
        ["bash", "deploy/build-image.sh", TAG],
        cwd=REPO,
        env={**os.environ, "REGISTRAR_LOCAL_BASE": "1"},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    metrics = f"127.0.0.1:{free_port()}"
    sidecar = docker_client.containers.run(
        TAG,
        ["run", "--hostname", host, "consul://127.0.0.1:8500"],
        network_mode="host",
        group_add=[str(os.stat("/var/run/docker.sock").st_gid)],
        volumes={"/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "ro"}},
        environment={"REGISTRAR_METRICS_ADDR": metrics},
        labels={TEST_LABEL: "1"},
        detach=True,
    )
    try:
        uncompiled = docker_client.containers.run(
            TAG, ["-c", UNCOMPILED], entrypoint="/opt/registrar/bin/python3", remove=True, labels={TEST_LABEL: "1"}
        )
        assert uncompiled.decode().split() == [], "modules the image compiles at every start"
        c = containers(labels={"SERVICE_NAME": "sidecar-demo"})
        wait_until(lambda: f"{host}:{c.name}:80" in consul.services(host), "registration by the sidecar", timeout=60)
        sidecar.reload()
        assert sidecar.attrs["Config"]["User"] == "10001"
        wait_until(lambda: _health(sidecar) == "healthy", "the image's HEALTHCHECK to pass", timeout=90)
    finally:
        sidecar.remove(force=True)
        with contextlib.suppress(docker.errors.APIError):
            docker_client.images.remove(TAG)


def _health(container: Any) -> str:
    container.reload()
    return str(container.attrs["State"].get("Health", {}).get("Status", ""))
