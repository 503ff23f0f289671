"""The daemon's health: readiness and metrics, a hung stream, a crashing event thread, bugs logged and retried."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import structlog
from prometheus_client import generate_latest
from structlog.testing import LogCapture, capture_logs
from structlog.typing import EventDict

from registrar import executor
from registrar.daemon import Daemon, Timing
from registrar.effects import Log
from registrar.errors import DockerError
from registrar.messages import RESYNC, Inspected, StreamFailed
from registrar.model import DockerEvent
from tests.unit.fakes import MemoryConsul, MemoryDocker, SlowDocker
from tests.unit.loop import FAST, S, named, step_until, stopped, stopping
from tests.unit.payloads import payload


def test_hung_stream_is_replaced_and_relisted(started: Any) -> None:
    """A silent stream whose engine fails a ping is closed, resubscribed, and everything re-listed."""
    docker, consul = MemoryDocker(), MemoryConsul()
    daemon = started(docker, consul, timing=Timing(consul_probe=0.05, idle_ping=0.1))
    step_until(daemon, daemon.ready.is_set)
    web = payload("web")
    docker.containers[web["Id"]] = web  # started, but the hung stream never says so
    docker.answers_ping = False
    with capture_logs() as logs:
        step_until(daemon, lambda: "vm:rec-web:80" in consul.registered)
    names = [e["event"] for e in logs]
    assert names.index("docker_unreachable") < names.index("docker_stream_reconnected")
    assert docker.subscriptions >= 2


def test_metrics_and_readiness(started: Any) -> None:
    """With a metrics address, metrics count events and Consul operations; readiness follows the first
    reconcile and Consul."""
    web = payload("web")
    docker, consul = MemoryDocker(), MemoryConsul()
    daemon = started(docker, consul, replace(S, metrics_addr="127.0.0.1:9102"))
    assert daemon.not_ready() == "initial reconcile not done yet"
    step_until(daemon, daemon.ready.is_set)
    docker.containers[web["Id"]] = web
    docker.emit("start", web["Id"])
    step_until(daemon, lambda: "vm:rec-web:80" in consul.registered)
    text = generate_latest(daemon.metrics.registry).decode()
    assert "registrar_registered_services 1.0" in text
    assert 'registrar_docker_events_total{action="start"} 1.0' in text
    assert 'registrar_consul_operations_total{operation="register",result="ok"} 1.0' in text
    assert "registrar_build_info{version=" in text
    labels = {
        name for metric in daemon.metrics.registry.collect() for sample in metric.samples for name in sample.labels
    }
    assert labels <= {"action", "operation", "result", "version", "le"}, "no per-container labels"
    assert daemon.unhealthy() == "" and daemon.not_ready() == ""
    consul.down = True
    step_until(daemon, lambda: daemon.not_ready() == "Consul agent unreachable")
    assert "registrar_consul_up 0.0" in generate_latest(daemon.metrics.registry).decode()


def test_docker_readiness_returns_only_after_a_full_reconcile(started: Any) -> None:
    """A new subscription alone does not make registrar ready again: only a listing that succeeds does."""
    docker, consul = MemoryDocker(payload("web")), MemoryConsul()
    daemon = started(docker, consul)
    step_until(daemon, daemon.ready.is_set)
    daemon.inbox.put(StreamFailed("stream broke"))
    failing = docker.list_containers

    def refuse() -> list[dict[str, Any]]:
        raise DockerError("listing containers: connection refused")

    docker.list_containers = refuse  # type: ignore[method-assign]
    for _ in range(5):
        daemon.inbox.put(RESYNC)  # as after each new subscription
        daemon.step()
        assert daemon.not_ready() == "Docker engine unreachable"
    docker.list_containers = failing  # type: ignore[method-assign]
    step_until(daemon, lambda: daemon.not_ready() == "")


class CrashingDocker(MemoryDocker):
    """Its event stream raises a bug-like error ``crashes`` times, then behaves."""

    def __init__(self, crashes: int, *containers: dict[str, Any]) -> None:
        super().__init__(*containers)
        self.crashes = crashes

    def events(self) -> Iterator[DockerEvent]:
        self.subscriptions += 1
        if self.crashes > 0:
            self.crashes -= 1
            return iter(self._explode())
        return self._follow()

    def _explode(self) -> Iterator[DockerEvent]:
        raise RuntimeError("unexpected payload in the event stream")
        yield  # pragma: no cover

    def _follow(self) -> Iterator[DockerEvent]:
        while (item := self._events.get()) is not None:
            yield item


def test_event_thread_crash_is_logged_restarted_and_relisted(started: Any) -> None:
    """An event thread that dies of an unexpected error is logged with its traceback, restarted, and re-listed."""
    docker, consul = CrashingDocker(1), MemoryConsul()
    with capture_logs() as logs:
        daemon = started(docker, consul)
        web = payload("web")
        docker.containers[web["Id"]] = web  # no event will say so: the crashed stream missed it
        step_until(daemon, lambda: "vm:rec-web:80" in consul.registered and docker.subscriptions == 2)
    crash = next(e for e in logs if e["event"] == "docker_watch_crashed")
    assert crash["log_level"] == "error"
    assert isinstance(crash["exc_info"], RuntimeError)
    names = [e["event"] for e in logs]
    assert names.index("docker_watch_crashed") < names.index("docker_stream_reconnected")
    assert daemon.watcher.alive()
    assert daemon.unhealthy() == ""


def test_event_thread_crashing_in_a_loop_fails_healthz(started: Any) -> None:
    """An event thread that crashes again and again makes /healthz fail with the reason."""
    docker, consul = CrashingDocker(10**6), MemoryConsul()
    daemon = started(docker, consul)
    step_until(daemon, lambda: daemon.unhealthy() != "")
    assert daemon.unhealthy().startswith("the Docker event thread keeps crashing")


class BuggyConsul(MemoryConsul):
    """register raises a non-Consul error (a bug) ``failures`` times."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def register(self, service: Any) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise KeyError("surprise")
        super().register(service)


def test_unexpected_error_in_the_loop_is_logged_and_retried(started: Any) -> None:
    """An unexpected exception in a step is one error event with the traceback; the loop goes on and converges."""
    docker, consul = MemoryDocker(payload("web")), BuggyConsul(2)
    with capture_logs() as logs:
        daemon = started(docker, consul)
        step_until(daemon, lambda: "vm:rec-web:80" in consul.registered)
    errors = [e for e in logs if e["event"] == "loop_error"]
    assert [e["in_a_row"] for e in errors] == [1, 2]
    assert all(isinstance(e["exc_info"], KeyError) for e in errors)
    assert daemon.unhealthy() == ""


def test_a_bug_while_a_worker_takes_a_result_is_logged_and_the_daemon_goes_on(started: Any) -> None:
    """An error while a worker takes an inspect's result (a bug) is logged as loop_error with its traceback;
    the full reconcile that follows registers that container, and one started afterwards is registered too."""
    web, other = named("web", "first"), named("web", "second")
    docker, consul = SlowDocker(), MemoryConsul()
    daemon = started(docker, consul)
    step_until(daemon, daemon.ready.is_set)
    taken = daemon.desired.inspected

    def buggy(*args: Any, **kwargs: Any) -> Any:
        daemon.desired.inspected = taken  # once
        raise RuntimeError("a bug in taking an inspect")

    daemon.desired.inspected = buggy
    with capture_logs() as logs:
        docker.start(web)
        step_until(daemon, lambda: any(e["event"] == "loop_error" for e in logs), idle=False)
        docker.start(other)
        step_until(daemon, lambda: set(consul.registered) == {"vm:first:80", "vm:second:80"})
    error = next(e for e in logs if e["event"] == "loop_error")
    assert "a bug in taking an inspect" in str(error["exc_info"])


def buggy_once(daemon: Daemon) -> None:
    """Make the daemon's cache raise once when it takes an inspect (a bug in a peer)."""
    taken = daemon.desired.inspected

    def buggy(*args: Any, **kwargs: Any) -> Any:
        daemon.desired.inspected = taken  # type: ignore[method-assign]
        raise RuntimeError("a bug in taking an inspect")

    daemon.desired.inspected = buggy  # type: ignore[method-assign]


def test_a_bug_while_the_loop_takes_a_message_is_logged_and_the_daemon_goes_on(started: Any) -> None:
    """An error while the loop itself takes a message (a bug in a peer) is logged as loop_error and the
    daemon goes on: the step returns, and the full reconcile that follows registers the container."""
    web = payload("web")
    docker, consul = MemoryDocker(web), MemoryConsul()
    daemon = started(docker, consul)
    step_until(daemon, lambda: "vm:rec-web:80" in consul.registered)
    buggy_once(daemon)
    del consul.registered["vm:rec-web:80"]
    with capture_logs() as logs:
        daemon.inbox.put(Inspected(web["Id"], None, DockerError("the engine hiccuped")))  # taken by the loop
        step_until(daemon, lambda: "vm:rec-web:80" in consul.registered)
    assert any(e["event"] == "loop_error" and "a bug in taking" in str(e["exc_info"]) for e in logs)


def test_sync_with_a_bug_fails_instead_of_reporting_success(one_shot: Any) -> None:
    """registrar sync cannot retry: a bug while it takes an inspect ends it with that error (the CLI logs
    registrar_crashed and exits 70) rather than exit 0 with the container left out."""
    docker, consul = MemoryDocker(payload("web")), MemoryConsul()
    daemon = one_shot(docker, consul)
    buggy_once(daemon)
    with pytest.raises(RuntimeError, match="a bug in taking an inspect"):
        daemon.sync()


def test_unexpected_errors_in_a_row_fail_healthz(started: Any) -> None:
    """A loop that fails unexpectedly at every step says so on /healthz."""
    docker, consul = MemoryDocker(payload("web")), BuggyConsul(10**6)
    daemon = started(docker, consul)
    step_until(daemon, lambda: daemon.unhealthy() != "")
    assert daemon.unhealthy() == "the reconcile loop keeps failing (5 unexpected errors in a row)"


def test_run_returns_after_iterations_and_after_stop() -> None:
    """run(_iterations=N) turns N times and closes; stop() before run makes it return at once."""
    docker, consul = MemoryDocker(payload("web")), MemoryConsul()
    Daemon(docker, consul, S, timing=FAST).run(_iterations=1)
    assert consul.registered == {}, "one turn only asks for a listing and a read of the agent"
    Daemon(docker, consul, S, timing=FAST).run(_iterations=20)  # listing, read, inspect and register come back
    assert "vm:rec-web:80" in consul.registered
    idle = MemoryConsul()
    stopped_daemon = Daemon(MemoryDocker(payload("web")), idle, S, timing=FAST)
    stopped_daemon.stop()
    with capture_logs() as logs:
        stopped_daemon.run()
    assert idle.registered == {} and idle.reads == 0
    assert [e["event"] for e in logs if e["event"] != "docker_stream_ended"] == ["registrar_stopped"]


class OwnedLock:
    """A lock that knows which thread holds it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.owner: int | None = None

    def __enter__(self) -> OwnedLock:
        self._lock.acquire()
        self.owner = threading.get_ident()
        return self

    def __exit__(self, *exc: object) -> None:
        self.owner = None
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()


@contextlib.contextmanager
def logs_under(lock: OwnedLock) -> Iterator[tuple[list[EventDict], list[str]]]:
    """Capture the log lines, and the events of those emitted by a thread that holds ``lock``."""
    entries, held = LogCapture(), []

    def check(logger: Any, method: str, event: EventDict) -> EventDict:
        if lock.owner == threading.get_ident():
            held.append(event["event"])
        return event

    processors = structlog.get_config()["processors"]  # changed in place: loggers cached on first use see it
    saved = list(processors)
    processors[:] = [check, entries]
    structlog.configure(processors=processors)
    try:
        yield entries.entries, held
    finally:
        processors[:] = saved
        structlog.configure(processors=processors)


def test_nothing_is_logged_while_the_lock_is_held(started: Any) -> None:
    """A start, a drain, a die and an agent that stops answering: every line is logged with the daemon's
    lock let go (a log handler's I/O never holds up the thread that would take the next message)."""
    web = stopping(payload("web"))
    docker, consul = MemoryDocker(), MemoryConsul()
    daemon = started(docker, consul)
    lock = daemon.lock = OwnedLock()
    with logs_under(lock) as (logs, held):
        step_until(daemon, daemon.ready.is_set)
        docker.containers[web["Id"]] = web
        docker.emit("start", web["Id"])
        step_until(daemon, lambda: "vm:rec-web:80" in consul.registered)
        docker.emit("kill", web["Id"], signal="15")
        step_until(daemon, lambda: consul.in_maintenance == {"vm:rec-web:80"})
        docker.containers[web["Id"]] = stopped(web, 0)
        docker.emit("die", web["Id"], exit_code=0)
        step_until(daemon, lambda: consul.registered == {})
        consul.down = True
        step_until(daemon, lambda: not daemon.core.consul_up, idle=False)
    events = {e["event"] for e in logs}
    assert {"reconcile_done", "service_registered", "container_draining", "service_draining"} <= events
    assert {"service_deregistered", "consul_unreachable", "reconcile_failed"} <= events
    assert held == []


def test_a_log_line_that_cannot_be_written_stops_nothing(started: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A log write that raises (stdout's reader gone) on the worker that takes an inspect: the container's
    service is registered all the same."""
    real = executor.log
    failing = {"container_label_problem"}

    class BrokenLog:
        def __getattr__(self, level: str) -> Any:
            def write(event: str, **fields: Any) -> Any:
                if event in failing:
                    failing.discard(event)  # once
                    raise BrokenPipeError(32, "Broken pipe")
                return getattr(real, level)(event, **fields)

            return write

    monkeypatch.setattr(executor, "log", BrokenLog())
    docker, consul = MemoryDocker(), MemoryConsul()
    daemon = started(docker, consul)
    step_until(daemon, daemon.ready.is_set)
    web = named("web", "bad")
    web["Config"]["Labels"]["SERVICE_ENABLE_TAG_OVERRIDE"] = "banana"
    docker.containers[web["Id"]] = web
    docker.emit("start", web["Id"])
    step_until(daemon, lambda: "vm:bad:80" in consul.registered)
    assert not failing


def test_an_effect_that_fails_is_logged_and_the_rest_are_carried_out(
    started: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any effect that raises while a worker carries it out is logged as loop_error, and the writes decided with
    it are sent: the service is registered."""
    real = executor.emit
    failing = {"container_label_problem"}

    def emit(line: Log) -> None:
        if line.event in failing:
            failing.discard(line.event)
            raise BrokenPipeError(32, "Broken pipe")
        real(line)

    monkeypatch.setattr(executor, "emit", emit)
    docker, consul = MemoryDocker(), MemoryConsul()
    daemon = started(docker, consul)
    step_until(daemon, daemon.ready.is_set)
    web = named("web", "bad")
    web["Config"]["Labels"]["SERVICE_ENABLE_TAG_OVERRIDE"] = "banana"
    with capture_logs() as logs:
        docker.containers[web["Id"]] = web
        docker.emit("start", web["Id"])
        step_until(daemon, lambda: "vm:bad:80" in consul.registered and any(e["event"] == "loop_error" for e in logs))
    error = next(e for e in logs if e["event"] == "loop_error")
    assert isinstance(error["exc_info"], BrokenPipeError)


def test_a_host_address_that_cannot_be_looked_up_is_logged_and_retried(
    started: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--ip eth0 whose lookup raises an OSError (out of file descriptors): loop_error, and the daemon keeps
    running and registering rather than exit."""

    def resolve(*args: Any) -> str:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(executor, "resolve", resolve)
    docker, consul = MemoryDocker(payload("web")), MemoryConsul()
    with capture_logs() as logs:
        daemon = started(docker, consul, replace(S, ip="10.0.0.1", ip_from="eth0"))
        step_until(
            daemon, lambda: "vm:rec-web:80" in consul.registered and any(e["event"] == "loop_error" for e in logs)
        )
    error = next(e for e in logs if e["event"] == "loop_error")
    assert isinstance(error["exc_info"], OSError)


def test_an_inspect_that_cannot_be_started_is_retried(started: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """An inspect whose worker thread cannot be started is not left in flight: loop_error, and the full
    reconcile that follows registers the container's service."""
    web = payload("web")
    docker, consul = MemoryDocker(web), MemoryConsul()
    daemon = started(docker, consul)
    post = daemon.workers.post
    failing = [f"inspecting container {web['Id'][:12]}"]

    def flaky(work: Any, failed: Any, what: str = "work") -> None:
        if what in failing:
            failing.remove(what)
            raise RuntimeError("can't start new thread")
        post(work, failed, what)

    monkeypatch.setattr(daemon.workers, "post", flaky)
    with capture_logs() as logs:
        step_until(daemon, lambda: "vm:rec-web:80" in consul.registered)
    assert not failing
    assert any(e["event"] == "loop_error" and "can't start new thread" in str(e["exc_info"]) for e in logs)
