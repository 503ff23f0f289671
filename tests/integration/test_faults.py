"""Faults caused for real: Docker and Consul restarts, registrar killed, bursts, signals mid-burst."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.integration.harness import Consul, ConsulAgent, DockerEngine, pings, run_cli, wait_until

Run = Callable[..., Any]


def ids_of(host: str, *containers: Any, port: int = 80) -> set[str]:
    return {f"{host}:{c.name}:{port}" for c in containers}


def registered_ports(consul: Consul, host: str) -> dict[str, int]:
    return {sid: s["Port"] for sid, s in consul.services(host).items()}


def current_port(c: Any) -> int:
    c.reload()
    return int(c.ports["80/tcp"][0]["HostPort"])


def test_docker_engine_restart(
    host: str, consul: Consul, containers: Run, daemon: Any, docker_engine: DockerEngine
) -> None:
    """After a dockerd restart: stopped containers leave, restarted ones return, new ones are registered."""
    plain = containers()
    always = containers(restart_policy={"Name": "always"})
    d = daemon("--hostname", host)
    wait_until(lambda: set(consul.services(host)) == ids_of(host, plain, always), "both registered")

    docker_engine.restart(lambda: pings(docker_engine.socket))
    d.wait_for_event("docker_stream_reconnected", timeout=60)
    fresh = containers()
    wait_until(
        lambda: (
            registered_ports(consul, host)
            == {f"{host}:{always.name}:80": current_port(always), f"{host}:{fresh.name}:80": current_port(fresh)}
        ),
        "Consul to match the containers running after the restart",
        timeout=60,
    )


def test_consul_down_at_start_waits_forever_with_minus_one(
    host: str, containers: Run, daemon: Any, own_consul: ConsulAgent
) -> None:
    """--retry-attempts -1 keeps waiting for Consul, then registers once it answers."""
    c = containers()
    d = daemon("--hostname", host, "--retry-attempts", "-1", "--retry-interval", "100", own_consul.uri, ready=False)
    d.wait_for_event("consul_unreachable", count=3)
    own_consul.start()
    wait_until(lambda: set(own_consul.client.services(host)) == ids_of(host, c), "registration once Consul is up")


def test_consul_down_at_start_gives_up_with_one_line(host: str, own_consul: ConsulAgent) -> None:
    """By default registrar waits a bounded time for Consul, then exits non-zero with one clear line."""
    started = time.monotonic()
    result = run_cli("run", "--hostname", host, "--log-level", "error", own_consul.uri)
    assert result.returncode == 5
    assert time.monotonic() - started < 60
    lines = result.stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith("registrar: gave up after 11 attempt(s)")
    assert "127.0.0.1:18500" in lines[0]


def test_consul_restart_mid_run_restores_everything(
    host: str, containers: Run, daemon: Any, own_consul: ConsulAgent
) -> None:
    """Consul stops mid-run and comes back empty: all registrations return, including changes made meanwhile."""
    own_consul.start()
    before = containers()
    doomed = containers()
    daemon("--hostname", host, own_consul.uri)
    wait_until(lambda: set(own_consul.client.services(host)) == ids_of(host, before, doomed), "registered")
    own_consul.stop()
    during = containers()
    doomed.remove(force=True)
    own_consul.start()
    wait_until(
        lambda: set(own_consul.client.services(host)) == ids_of(host, before, during),
        "registrations restored after the agent came back empty",
        timeout=10,
    )


def test_agent_losing_services_refilled_without_resync(host: str, consul: Consul, containers: Run, daemon: Any) -> None:
    """Registrations removed behind registrar's back come back within 10 s, with no --resync."""
    c = containers()
    daemon("--hostname", host)
    consul.deregister(f"{host}:{c.name}:80")
    wait_until(lambda: set(consul.services(host)) == ids_of(host, c), "registration restored", timeout=10)


def test_sigkill_then_restart_converges(host: str, consul: Consul, containers: Run, daemon: Any) -> None:
    """registrar killed with SIGKILL amid starts and stops, then restarted: exactly the running containers."""
    keep = [containers() for _ in range(3)]
    going = [containers() for _ in range(3)]
    d = daemon("--hostname", host)
    with ThreadPoolExecutor(4) as pool:
        late = [pool.submit(containers) for _ in range(4)]
        for c in going[:2]:
            pool.submit(c.remove, force=True)
        d.signal(signal.SIGKILL)
        started_late = [f.result() for f in late]
    d.proc.wait(10)
    going[2].remove(force=True)  # removed while registrar is down
    while_down = containers()  # started while registrar is down
    daemon("--hostname", host)
    expected = ids_of(host, *keep, *started_late, while_down)
    assert set(consul.services(host)) == expected
    catalog = consul.get("/v1/catalog/services").json()
    instances = [e["ServiceID"] for name in catalog for e in consul.get(f"/v1/catalog/service/{name}").json()]
    assert len([i for i in instances if i.startswith(host + ":")]) == len(expected), "no duplicates"


def test_fast_restarts_end_in_the_right_state(host: str, consul: Consul, containers: Run, daemon: Any) -> None:
    """start/kill/start in quick succession: the last state wins, with the port the container has now."""
    c = containers()
    daemon("--hostname", host)
    for _ in range(5):
        c.kill()
        c.start()
    c.kill()
    c.start()
    service_id = f"{host}:{c.name}:80"
    wait_until(lambda: registered_ports(consul, host) == {service_id: current_port(c)}, "registration at current port")
    c.kill()
    wait_until(lambda: consul.services(host) == {}, "deregistration after the final kill")


def test_sigterm_during_burst(host: str, consul: Consul, containers: Run, daemon: Any) -> None:
    """SIGTERM during a burst of starts: exit 0 within 5 s; what stays registered belongs to running containers."""
    d = daemon("--hostname", host)
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(containers) for _ in range(24)]
        d.wait_for_event("service_registered", count=3)
        started = time.monotonic()
        d.signal(signal.SIGTERM)
        assert d.proc.wait(5) == 0
        assert time.monotonic() - started < 5
        burst = [f.result() for f in futures]
    running = ids_of(host, *burst)
    left = set(consul.services(host))
    assert left and left <= running
    assert run_cli("sync", "--hostname", host).returncode == 0
    assert set(consul.services(host)) == running
