"""The ecosystem's flow, for real: containers scale, registrar follows, HAProxy (over Consul DNS) follows."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import SLOW_STOP, Steady, answers, free_port, haproxy, unique_host, wait_until

Run = Callable[..., Any]


@pytest.fixture
def balancer(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """HAProxy from Debian on 127.0.0.1 with deploy/haproxy.cfg, for a service name of this test."""
    service = unique_host("app")
    with haproxy(service, f"127.0.0.1:{free_port()}", "127.0.0.1:8600", tmp_path / "haproxy.log") as url:
        yield service, url


def test_balancer_follows_scaling(host: str, containers: Run, daemon: Any, balancer: tuple[str, str]) -> None:
    """3, then 5, then 1 instances: requests through HAProxy reach exactly the live ones."""
    service, url = balancer
    daemon("--hostname", host)
    labels = {"SERVICE_NAME": service, "SERVICE_CHECK_HTTP": "/", "SERVICE_CHECK_INTERVAL": "1s"}
    live: list[Any] = []

    def scale(count: int) -> None:
        while len(live) < count:
            live.append(containers(labels=labels))
        while len(live) > count:
            live.pop().remove(force=True)
        expected = {c.id[:12] for c in live}
        wait_until(lambda: answers(url) == expected, f"the balancer to reach exactly {count} instance(s)", timeout=30)

    scale(3)
    scale(5)
    scale(1)


def test_docker_stop_drains_with_no_failed_request(
    host: str, containers: Run, daemon: Any, balancer: tuple[str, str]
) -> None:
    """docker stop of one of three instances under steady requests through HAProxy: not one request fails."""
    service, url = balancer
    d = daemon("--hostname", host)
    labels = {"SERVICE_NAME": service, "SERVICE_CHECK_HTTP": "/", "SERVICE_CHECK_INTERVAL": "1s"}
    live = [containers(labels=labels, command=["sh", "-c", SLOW_STOP], stop_signal="SIGTERM") for _ in range(3)]
    wait_until(lambda: answers(url) == {c.id[:12] for c in live}, "the balancer to reach all three", timeout=30)
    with Steady(url) as steady:
        stopped = live.pop()
        stopped.stop(timeout=10)  # returns once the container has exited, 3 s after SIGTERM
        d.wait_for_event("service_deregistered")
        steady.more(50)
    failed = steady.failed()
    assert d.count("service_draining") == 1
    assert failed == [], f"{len(failed)} of {len(steady.outcomes)} requests failed: {sorted(set(failed))}"
    assert answers(url) == {c.id[:12] for c in live}
