"""The ecosystem's flow, for real: containers scale, registrar follows, HAProxy (over Consul DNS) follows."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.integration.harness import unique_host, wait_until

Run = Callable[..., Any]
CONFIG = Path(__file__).parents[2] / "deploy" / "haproxy.cfg"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def balancer(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """HAProxy from Debian on 127.0.0.1 with deploy/haproxy.cfg, for a service name of this test."""
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    service, listen = unique_host("app"), f"127.0.0.1:{free_port()}"
    env = {"APP_SERVICE": service, "LISTEN": listen, "CONSUL_DNS": "127.0.0.1:8600", "PATH": "/usr/sbin:/usr/bin"}
    log = (tmp_path / "haproxy.log").open("w")
    proc = subprocess.Popen([haproxy, "-db", "-f", str(CONFIG)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield service, f"http://{listen}/"
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def answers(url: str, tries: int = 40) -> set[str]:
    """Host names that answer through the balancer over ``tries`` fresh requests."""
    seen = set()
    for _ in range(tries):
        try:
            reply = requests.get(url, timeout=2, headers={"Connection": "close"})
        except requests.RequestException:
            continue
        if reply.status_code == 200:
            seen.add(reply.text.strip())
    return seen


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


# Serves until SIGTERM, then keeps serving for 3 s while it "shuts down", then exits 0.
SLOW_STOP = "hostname > /www/index.html; httpd -f -p 80 -h /www & pid=$!; trap 'sleep 3; kill $pid; exit 0' TERM; wait"


def test_docker_stop_drains_with_no_failed_request(
    host: str, containers: Run, daemon: Any, balancer: tuple[str, str]
) -> None:
    """docker stop of one of three instances under steady requests through HAProxy: not one request fails."""
    service, url = balancer
    d = daemon("--hostname", host)
    labels = {"SERVICE_NAME": service, "SERVICE_CHECK_HTTP": "/", "SERVICE_CHECK_INTERVAL": "1s"}
    live = [containers(labels=labels, command=["sh", "-c", SLOW_STOP], stop_signal="SIGTERM") for _ in range(3)]
    wait_until(lambda: answers(url) == {c.id[:12] for c in live}, "the balancer to reach all three", timeout=30)
    outcomes: list[str] = []
    done = threading.Event()

    def steady() -> None:
        with requests.Session() as session:
            while not done.is_set():
                try:
                    reply = session.get(url, timeout=2, headers={"Connection": "close"})
                    outcomes.append("ok" if reply.status_code == 200 else f"HTTP {reply.status_code}")
                except requests.RequestException as e:
                    outcomes.append(type(e).__name__)
                done.wait(0.01)  # the request rate, not a wait for a condition

    sender = threading.Thread(target=steady)
    sender.start()
    try:
        stopped = live.pop()
        stopped.stop(timeout=10)  # returns once the container has exited, 3 s after SIGTERM
        d.wait_for_event("service_deregistered")
        settle = len(outcomes) + 50
        wait_until(lambda: len(outcomes) >= settle, "50 more requests after the deregistration")
    finally:
        done.set()
        sender.join(10)
    failed = [o for o in outcomes if o != "ok"]
    assert d.count("service_draining") == 1
    assert failed == [], f"{len(failed)} of {len(outcomes)} requests failed: {sorted(set(failed))}"
    assert answers(url) == {c.id[:12] for c in live}
