"""docker-compose.yml as written, run with Debian's docker-compose (1.29).

No image can be pulled here: compose.override.yml swaps only each service's ``image`` for a local
equivalent (deploy/compose-images.sh). The file's Consul dev agent takes 127.0.0.1:8500 and 8600 on the
host's network, so the suite's own dev agent is stopped for the test and started again after it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from tests.integration.conftest import restartable
from tests.integration.harness import Consul, ConsulDevAgent, answers, wait_until

REPO = Path(__file__).parents[2]
OVERRIDE = Path(__file__).parent / "compose.override.yml"
PROJECT = "registrar-compose-test"
BUILT = ("registrar-test/consul", "registrar-test/haproxy", "registrar:integration-test")
URL = "http://127.0.0.1:8080/"  # the balancer's address in deploy/haproxy.cfg

Compose = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def suite_agent_paused(consul: Consul) -> Iterator[None]:
    """The suite's Consul dev agent stopped for this test (its ports are the compose file's), then started again."""
    agent = restartable(ConsulDevAgent())
    agent.stop()
    try:
        yield
    finally:
        agent.start(consul.up)


@pytest.fixture
def compose(docker_client: docker.DockerClient, suite_agent_paused: None) -> Iterator[Compose]:
    """``docker-compose`` on the repository's file plus the image override; ``down`` and image removal after."""
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is not installed (deploy/bootstrap.sh installs Debian's package)"
    build = subprocess.run(
        ["bash", "deploy/compose-images.sh"], cwd=REPO, capture_output=True, text=True, timeout=1800, check=False
    )
    assert build.returncode == 0, f"building the local images failed:\n{build.stderr}"
    env = {**os.environ, "DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid)}
    base = [binary, "--ansi", "never", "-p", PROJECT, "-f", "docker-compose.yml", "-f", str(OVERRIDE)]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*base, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
        )

    try:
        yield run
    finally:
        run("down", "--remove-orphans", "--timeout", "1")
        for image in BUILT:
            with contextlib.suppress(docker.errors.NotFound):
                docker_client.images.remove(image)


def app_hostnames(client: docker.DockerClient) -> set[str]:
    """The host names of the project's running app containers (each answers with its own)."""
    label = [f"com.docker.compose.project={PROJECT}", "com.docker.compose.service=app"]
    return {c.attrs["Config"]["Hostname"] for c in client.containers.list(filters={"label": label})}


def test_compose_file_scales_behind_the_balancer(compose: Compose, docker_client: docker.DockerClient) -> None:
    """up --scale app=5: the balancer reaches five instances; --scale app=1: one; down: nothing of it is left."""
    up = compose("up", "-d", "--scale", "app=5")
    assert up.returncode == 0, up.stderr
    five = app_hostnames(docker_client)
    assert len(five) == 5
    wait_until(lambda: answers(URL) == five, "requests through the balancer to reach all five app instances", 60)

    scaled = compose("up", "-d", "--scale", "app=1")
    assert scaled.returncode == 0, scaled.stderr
    one = app_hostnames(docker_client)
    assert len(one) == 1 and one <= five
    wait_until(lambda: answers(URL) == one, "requests through the balancer to reach the one app instance left", 60)

    down = compose("down", "--timeout", "1")
    assert down.returncode == 0, down.stderr
    project = {"label": f"com.docker.compose.project={PROJECT}"}
    assert docker_client.containers.list(all=True, filters=project) == []
    assert docker_client.networks.list(filters=project) == []
