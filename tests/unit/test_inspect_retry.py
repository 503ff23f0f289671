"""A failed inspect: the engine's error answer, or no answer in time, is retried for that container alone while
Docker stays up; an engine that cannot be reached is Docker down, and a full reconcile follows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from structlog.testing import capture_logs

from registrar.backoff import InspectRetries
from registrar.daemon import Daemon
from registrar.errors import DockerError, DockerUnreachable
from tests.unit.fakes import MemoryConsul, MemoryDocker
from tests.unit.loop import FAST, S, step_until
from tests.unit.payloads import payload


def answered(c: dict[str, Any]) -> DockerError:
    """What DockerSource raises when the engine answers an inspect with a 500."""
    return DockerError(f"inspecting container {c['Id'][:12]} at unix:///var/run/docker.sock: the engine answered 500")


def timed_out(c: dict[str, Any]) -> DockerError:
    """What DockerSource raises when the engine does not answer an inspect in time (a read timeout)."""
    return DockerError(
        f"inspecting container {c['Id'][:12]} at unix:///var/run/docker.sock: UnixHTTPConnectionPool(host='localhost',"
        " port=None): Read timed out. (read timeout=10.0)"
    )


Seen = set[tuple[bool, str, float | None]]


def watching(daemon: Daemon, until: Callable[[], bool]) -> tuple[Callable[[], bool], Seen]:
    """A predicate for ``step_until`` that holds when ``until`` does and records, between every two steps,
    Docker's state as the daemon, /readyz and the metric say it."""
    seen: Seen = set()

    def check() -> bool:
        gauge = daemon.metrics.registry.get_sample_value("registrar_docker_up")  # type: ignore[union-attr]
        seen.add((daemon.core.docker_up, daemon.not_ready(), gauge))
        return until()

    return check, seen


def test_retry_delays_double_up_to_the_most_and_start_over_once_done() -> None:
    """Each failure of a container's inspect waits twice the last delay, up to ``most``; a retry is due once,
    at its time; after ``done`` (an inspect came back, or the container died) the next failure waits ``first``."""
    retries = InspectRetries(first=0.5, most=2.0)
    assert not retries and retries.deadline() is None and retries.due(100.0) == []
    assert [retries.failed("a", 10.0) for _ in range(4)] == [0.5, 1.0, 2.0, 2.0]
    assert retries.failed("b", 10.0) == 0.5
    assert retries.deadline() == 10.5 and retries.waiting() == {"a", "b"}
    assert retries.due(10.4) == [] and retries.due(12.0) == ["a", "b"] and retries.due(99.0) == []
    assert retries.deadline() is None and retries.waiting() == {"a", "b"}, "due no more, still waiting for an answer"
    retries.done("a")
    assert retries.failed("a", 20.0) == 0.5 and retries.failed("b", 20.0) == 1.0
    retries.done("a")
    retries.done("b")
    assert not retries and retries.deadline() is None


def test_an_inspect_answered_with_an_error_is_retried_alone_and_docker_stays_up(started: Any) -> None:
    """A container whose inspect the engine answers with an error twice, then with the container, is registered
    by retries of that inspect (no relisting, backoff doubling); Docker stays up and ready throughout, and
    each failure is one inspect_failed warning naming the container."""
    web = payload("web")
    docker, consul = MemoryDocker(), MemoryConsul()
    daemon = started(docker, consul, replace(S, metrics_addr="127.0.0.1:9102"))
    step_until(daemon, daemon.ready.is_set)
    listings, inspects = daemon.calls["docker_list"], docker.inspects
    docker.containers[web["Id"]] = web
    docker.inspect_errors[web["Id"]] = [answered(web), answered(web)]
    registered, seen = watching(daemon, lambda: "vm:rec-web:80" in consul.registered)
    with capture_logs() as logs:
        docker.emit("start", web["Id"])
        step_until(daemon, registered)
    assert seen == {(True, "", 1.0)}, "Docker went down, or registrar unready, over one container"
    assert (daemon.calls["docker_list"], docker.inspects) == (listings, inspects + 3), "only that inspect, again"
    failed = [e for e in logs if e["event"] == "inspect_failed"]
    assert [(e["log_level"], e["container_id"], e["retry_in"]) for e in failed] == [
        ("warning", web["Id"][:12], 0.01),
        ("warning", web["Id"][:12], 0.02),
    ]
    assert all("the engine answered 500" in e["error"] for e in failed)
    assert not any(e["event"] == "reconcile_failed" for e in logs)


def test_the_backoff_starts_over_once_an_inspect_succeeds(started: Any) -> None:
    """After an inspect that succeeded, the container's next failure waits the first delay again; a container
    registrar knows is named in the warning, and its registration stays."""
    web = payload("web")
    docker, consul = MemoryDocker(web), MemoryConsul()
    daemon = started(docker, consul)
    docker.inspect_errors[web["Id"]] = [answered(web), answered(web)]
    with capture_logs() as logs:
        step_until(daemon, lambda: "vm:rec-web:80" in consul.registered)
        writes = consul.writes
        docker.inspect_errors[web["Id"]] = [answered(web)]
        inspects = docker.inspects
        docker.emit("start", web["Id"])  # heard again: inspected afresh
        step_until(daemon, lambda: docker.inspects == inspects + 2)
    failed = [(e["container"], e["retry_in"]) for e in logs if e["event"] == "inspect_failed"]
    assert failed == [(web["Id"][:12], 0.01), (web["Id"][:12], 0.02), ("rec-web", 0.01)]
    assert consul.writes == writes and "vm:rec-web:80" in consul.registered
    assert daemon.core.docker_up


def test_a_registration_stays_while_its_containers_inspect_is_retried(one_shot: Any, started: Any) -> None:
    """At start, a registration whose container's inspect keeps failing for a while is neither deregistered nor
    written again while the inspect is retried (only a full reconcile, far off here, would look again)."""
    web = payload("web")
    docker, consul = MemoryDocker(web), MemoryConsul()
    assert one_shot(docker, consul).sync().registered == 1
    writes = consul.writes
    docker.inspect_errors[web["Id"]] = [answered(web)] * 3
    daemon = started(docker, consul, timing=replace(FAST, retry_first=30.0, retry_most=30.0))
    kept = []

    def inspected() -> bool:
        kept.append("vm:rec-web:80" in consul.registered)
        return web["Id"] in daemon.desired.containers

    step_until(daemon, inspected)
    assert all(kept) and consul.writes == writes, "the registration was deregistered while its inspect failed"


def test_a_container_that_dies_while_its_inspect_waits_for_a_retry_is_deregistered_at_once(started: Any) -> None:
    """A registered container whose inspect failed (its retry far off) and that then dies is deregistered
    when the die comes, not once the retry is back; Docker stays up throughout."""
    web = payload("web")
    docker, consul = MemoryDocker(web), MemoryConsul()
    daemon = started(docker, consul, replace(S, metrics_addr="127.0.0.1:9102"), replace(FAST, inspect_retry_first=60.0))
    step_until(daemon, lambda: "vm:rec-web:80" in consul.registered)
    docker.inspect_errors[web["Id"]] = [answered(web)]
    inspects = docker.inspects
    docker.emit("start", web["Id"])
    step_until(daemon, lambda: docker.inspects == inspects + 1)
    gone, seen = watching(daemon, lambda: "vm:rec-web:80" not in consul.registered)
    docker.emit("die", web["Id"], exit_code=0)
    step_until(daemon, gone)
    assert seen == {(True, "", 1.0)} and docker.inspects == inspects + 1


def test_an_inspect_that_cannot_reach_the_engine_is_docker_down_and_relists(started: Any) -> None:
    """An inspect that fails because the engine cannot be reached marks Docker down (the metric and /readyz say
    so), logs no inspect_failed, and the full reconcile that follows relists and registers the container."""
    web = payload("web")
    docker, consul = MemoryDocker(), MemoryConsul()
    daemon = started(docker, consul, replace(S, metrics_addr="127.0.0.1:9102"))
    step_until(daemon, daemon.ready.is_set)
    listings = daemon.calls["docker_list"]
    docker.containers[web["Id"]] = web
    docker.inspect_errors[web["Id"]] = [DockerUnreachable("inspecting container: connection refused")]
    registered, seen = watching(daemon, lambda: "vm:rec-web:80" in consul.registered)
    with capture_logs() as logs:
        docker.emit("start", web["Id"])
        step_until(daemon, registered)
    assert (False, "Docker engine unreachable", 0.0) in seen
    assert daemon.calls["docker_list"] == listings + 1, "the full reconcile relists"
    assert daemon.core.docker_up and daemon.not_ready() == ""
    events = [e["event"] for e in logs]
    assert "reconcile_failed" in events and "inspect_failed" not in events


def test_an_inspect_that_times_out_is_retried_alone_and_the_idle_ping_still_finds_a_hung_engine(
    started: Any,
) -> None:
    """An inspect that times out is retried alone, Docker up; an engine hung on everything fails the idle ping: down."""
    web = payload("web")
    docker, consul = MemoryDocker(), MemoryConsul()
    daemon = started(docker, consul, replace(S, metrics_addr="127.0.0.1:9102"), replace(FAST, idle_ping=0.1))
    step_until(daemon, daemon.ready.is_set)
    listings = daemon.calls["docker_list"]
    docker.containers[web["Id"]] = web
    docker.inspect_errors[web["Id"]] = [timed_out(web), timed_out(web)]
    registered, seen = watching(daemon, lambda: "vm:rec-web:80" in consul.registered)
    with capture_logs() as logs:
        docker.emit("start", web["Id"])
        step_until(daemon, registered)
    assert seen == {(True, "", 1.0)}, "Docker went down, or registrar unready, over one container's inspect"
    assert daemon.calls["docker_list"] == listings
    assert [e["event"] for e in logs].count("inspect_failed") == 2
    docker.answers_ping = False
    down, seen = watching(daemon, lambda: not daemon.core.docker_up)
    with capture_logs() as logs:
        step_until(daemon, down, idle=False)
    assert (False, "Docker engine unreachable", 0.0) in seen
    assert "docker_unreachable" in [e["event"] for e in logs]
