"""Fixtures for the integration suite: real engine, real agent, and cleanup of all a test makes."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import pytest
import requests

from tests.integration.harness import (
    IMAGE,
    TEST_LABEL,
    Consul,
    ConsulAgent,
    Daemon,
    DockerEngine,
    Engine,
    PodmanEngine,
    docker_engine_named,
    unique_host,
)

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test in this directory ``integration`` (a conftest's pytestmark marks nothing)."""
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """The engine tests/run.sh started; the suite fails (never skips) without it. Closed at the end."""
    with contextlib.ExitStack() as stack:
        try:
            client = docker.from_env()
            stack.callback(client.close)
            client.ping()
            client.images.get(IMAGE)
        except docker.errors.DockerException as e:
            pytest.fail(f"integration tests need a Docker engine with image {IMAGE} (run tests/run.sh): {e}")
        yield client


@pytest.fixture(scope="session")
def consul() -> Iterator[Consul]:
    """The Consul dev agent tests/run.sh started; the suite fails (never skips) without it. Closed at the end."""
    with contextlib.closing(Consul()) as agent:
        if not agent.up():
            pytest.fail(f"integration tests need a Consul agent at {agent.url} (run tests/run.sh)")
        yield agent


@pytest.fixture
def host(consul: Consul) -> Iterator[str]:
    """A --hostname of this test alone; its registrations are removed afterwards."""
    name = unique_host()
    yield name
    consul.clean(name)


Container = Any


def _container_factory(client: docker.DockerClient) -> Iterator[Callable[..., Container]]:
    made: list[Container] = []

    def run(labels: dict[str, str] | None = None, ports: Any = None, **kwargs: Any) -> Container:
        kwargs.setdefault("detach", True)
        # busybox httpd as PID 1 ignores SIGTERM: stop at once instead of after 10 s.
        kwargs.setdefault("stop_signal", "SIGKILL")
        container = client.containers.run(
            kwargs.pop("image", IMAGE),
            labels={TEST_LABEL: "1", **(labels or {})},
            ports=ports if ports is not None else {"80/tcp": ("127.0.0.1", None)},
            **kwargs,
        )
        made.append(container)
        return container

    yield run
    for container in made:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


@pytest.fixture
def containers(docker_client: docker.DockerClient) -> Iterator[Callable[..., Container]]:
    """Start test containers from the busybox image; every one is removed afterwards."""
    yield from _container_factory(docker_client)


@pytest.fixture(scope="session")
def podman_client() -> Iterator[docker.DockerClient]:
    """Podman's Docker-compatible API from tests/run.sh, closed at the end; the suite fails (never skips) without it."""
    engine = PodmanEngine()
    with contextlib.ExitStack() as stack:
        try:
            client = docker.DockerClient(base_url=engine.url, timeout=60)
            stack.callback(client.close)
            client.ping()
            client.images.get(IMAGE)
        except (docker.errors.DockerException, requests.RequestException) as e:
            pytest.fail(f"the Podman tests need `podman system service` at {engine.url} with image {IMAGE}: {e}")
        yield client


@pytest.fixture
def podman_containers(podman_client: docker.DockerClient) -> Iterator[Callable[..., Container]]:
    """Start test containers on Podman; every one is removed afterwards."""
    yield from _container_factory(podman_client)


@pytest.fixture
def podman_engine(podman_client: docker.DockerClient) -> PodmanEngine:
    """The Podman service tests/run.sh started, restartable (see ``restartable``)."""
    return restartable(PodmanEngine())


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Start ``registrar run`` subprocesses; each is stopped afterwards."""
    started: list[Daemon] = []

    def start(*args: str, env: dict[str, str] | None = None, ready: bool = True) -> Daemon:
        if "--metrics-addr" not in args:
            args = ("--metrics-addr", "127.0.0.1:0", *args)  # any free port: tests run many daemons
        d = Daemon(list(args), tmp_path / f"registrar-{len(started)}.log", env)
        started.append(d)
        if ready:
            d.wait_for_event("reconcile_done")
        return d

    yield start
    for d in started:
        d.stop()


@pytest.fixture
def own_consul(tmp_path: Path) -> Iterator[ConsulAgent]:
    """A Consul dev agent of this test alone (not started yet); stopped and its client closed afterwards."""
    with contextlib.closing(ConsulAgent(tmp_path)) as agent:
        yield agent
        agent.stop()


@pytest.fixture
def docker_engine(docker_client: docker.DockerClient) -> DockerEngine:
    """The dockerd tests/run.sh started that DOCKER_HOST names (Docker 26 or the first), restartable (see
    ``restartable``)."""
    return restartable(docker_engine_named(os.environ.get("DOCKER_HOST", "")))


E = TypeVar("E", bound=Engine)


def restartable(engine: E) -> E:
    """An engine tests/run.sh started. Restarting someone else's engine is refused: skipped on a
    developer's machine whose engine the suite did not start, a failure in CI."""
    if not engine.available():
        message = f"{engine.pid_file} names no running {engine.name}: it was not started by tests/run.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return engine
