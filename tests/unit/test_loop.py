"""The reconcile loop driven in memory, step by step, through the ContainerSource/ServiceSink protocols."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client import generate_latest
from structlog.testing import capture_logs

from registrar.cache import cached_from_inspect, inspect_fingerprint, summary_fingerprint
from registrar.daemon import Daemon, Timing
from registrar.errors import DockerError
from registrar.messages import RESYNC, Inspected, StreamFailed
from registrar.model import DockerEvent, ExecResult, Service
from registrar.settings import Settings
from tests.unit.fakes import MemoryConsul, MemoryDocker, SlowDocker
from tests.unit.loop import FAST, S, named, settle, step_until, stopped
from tests.unit.payloads import container, payload


def test_sync_registers_then_writes_nothing_when_in_sync(one_shot: Any) -> None:
    """A second reconcile of unchanged containers writes nothing to Consul."""
    docker, consul = MemoryDocker(payload("web"), payload("multi")), MemoryConsul()
    daemon = one_shot(docker, consul)
    assert daemon.sync().registered == 4
    assert (daemon.calls["docker_inspect"], daemon.calls["consul_write"]) == (2, 4)
    writes = consul.writes
    assert one_shot(docker, consul).sync().registered == 0
    assert consul.writes == writes
    inspects = docker.inspects
    assert daemon.sync().registered == 0
    assert docker.inspects == inspects, "an unchanged container is not inspected again"


def test_stale_registrations_of_this_host_removed_only(one_shot: Any) -> None:
    """At start, this host's registrations with no container go; other hosts' and hand-made ones stay."""
    consul = MemoryConsul()
    consul.registered = {k: {"Meta": v.get("Meta") or {}} for k, v in payload("agent_services").items()}
    assert one_shot(MemoryDocker(), consul).sync().deregistered == 1
    assert sorted(consul.registered) == ["handmade", "other:web:80"]


def test_forget_host_removes_only_that_hosts_registrations(one_shot: Any) -> None:
    """--forget-host other: the plan deregisters every registration of host "other", and nothing else."""
    consul = MemoryConsul()
    consul.registered = {k: {"Meta": v.get("Meta") or {}} for k, v in payload("agent_services").items()}
    settings = Settings(hostname="new", forget_hosts=("other",))
    actions = one_shot(MemoryDocker(), consul, settings).plan()
    assert [(a.service_id, getattr(a, "reason", "")) for a in actions] == [
        ("other:web:80", "its host is forgotten (--forget-host)")
    ]
    assert consul.writes == 0, "plan writes nothing"
    assert one_shot(MemoryDocker(), consul, settings).sync().deregistered == 1
    assert sorted(consul.registered) == ["handmade", "vm:smoke-web:80"]


def test_daemon_follows_events(started: Any) -> None:
    """A start event registers the container's services, a die event removes them, both logged."""
    web = payload("web")
    docker, consul = MemoryDocker(), MemoryConsul()
    daemon = started(docker, consul)
    step_until(daemon, daemon.ready.is_set)
    with capture_logs() as logs:
        docker.containers[web["Id"]] = web
        docker.emit("start", web["Id"])
        step_until(daemon, lambda: "vm:rec-web:80" in consul.registered)
        docker.containers[web["Id"]] = stopped(web, 0)
        docker.emit("die", web["Id"], exit_code=0)
        step_until(daemon, lambda: consul.registered == {})
    events = [(e["event"], e.get("service_id")) for e in logs if e["event"].startswith("service_")]
    assert events == [("service_registered", "vm:rec-web:80"), ("service_deregistered", "vm:rec-web:80")]


def test_on_success_keeps_failed_containers_until_removed(started: Any) -> None:
    """--deregister on-success keeps a container that exited non-zero (services_kept), until it is removed."""
    web = payload("web")
    docker, consul = MemoryDocker(web), MemoryConsul()
    daemon = started(docker, consul, Settings(hostname="vm", deregister="on-success"))
    step_until(daemon, lambda: "vm:rec-web:80" in consul.registered)
    with capture_logs() as logs:
        docker.containers[web["Id"]] = stopped(web, 2)
        docker.emit("die", web["Id"], exit_code=2)
        step_until(daemon, lambda: any(e["event"] == "services_kept" for e in logs))
        daemon.inbox.put(RESYNC)  # a full reconcile after the exit, too, keeps it
        step_until(daemon, lambda: sum(e["event"] == "reconcile_done" for e in logs) >= 1)
    assert "vm:rec-web:80" in consul.registered
    del docker.containers[web["Id"]]
    docker.emit("destroy", web["Id"])
    step_until(daemon, lambda: consul.registered == {})


def test_on_success_decision(one_shot: Any) -> None:
    """Under on-success, a crash (exit 1, 2, 127) keeps the registration; exit 0 and a death by a signal
    (128+N: docker stop or kill, 137 and 143) remove it, as registrator's shouldRemove decides."""
    web = payload("web")
    for code, expected in ((1, ["vm:rec-web:80"]), (2, ["vm:rec-web:80"]), (127, ["vm:rec-web:80"]), (0, []),
                           (137, []), (143, [])):  # fmt: skip
        docker, consul = MemoryDocker(web), MemoryConsul()
        one_shot(docker, consul, Settings(hostname="vm", deregister="on-success")).sync()
        docker.containers[web["Id"]] = stopped(web, code)
        one_shot(docker, consul, Settings(hostname="vm", deregister="on-success")).sync()
        assert sorted(consul.registered) == expected


def test_consul_down_then_back_converges(started: Any) -> None:
    """A start while Consul is down fails (reconcile_failed), and is applied once Consul answers again."""
    web = payload("web")
    docker, consul = MemoryDocker(), MemoryConsul()
    daemon = started(docker, consul)
    step_until(daemon, daemon.ready.is_set)
    consul.down = True
    with capture_logs() as logs:
        docker.containers[web["Id"]] = web
        docker.emit("start", web["Id"])
        step_until(daemon, lambda: sum(e["event"] == "reconcile_failed" for e in logs) >= 2)
        assert consul.registered == {}
        assert daemon.not_ready() == "Consul agent unreachable"
        consul.down = False
        step_until(daemon, lambda: "vm:rec-web:80" in consul.registered)
    names = [e["event"] for e in logs]
    assert names.index("consul_unreachable") < names.index("consul_reachable") < names.index("service_registered")
    assert daemon.not_ready() == ""


def test_consul_down_backs_off(started: Any) -> None:
    """While Consul is down each retry waits twice as long as the last (up to the most): no busy loop."""
    docker, consul = MemoryDocker(payload("web")), MemoryConsul()
    daemon = started(docker, consul)
    step_until(daemon, lambda: "vm:rec-web:80" in consul.registered)
    consul.down = True
    with capture_logs() as logs:
        step_until(daemon, lambda: sum(e["event"] == "reconcile_failed" for e in logs) >= 5)
    assert [e["retry_in"] for e in logs if e["event"] == "reconcile_failed"][:5] == [0.01, 0.02, 0.04, 0.04, 0.04]


def test_agent_that_lost_its_services_is_refilled(started: Any) -> None:
    """If the agent forgets registrations (restart), the next probe of the agent brings them back."""
    docker, consul = MemoryDocker(payload("web")), MemoryConsul()
    daemon = started(docker, consul)
    step_until(daemon, lambda: "vm:rec-web:80" in consul.registered)
    consul.restart()
    step_until(daemon, lambda: "vm:rec-web:80" in consul.registered)


class ForgetfulConsul(MemoryConsul):
    """Takes a registration, answers that it did, and restarts at once: it forgets every service."""

    def __init__(self) -> None:
        super().__init__()
        self.forgets = 1

    def register(self, service: Service) -> None:
        super().register(service)
        if self.forgets:
            self.forgets -= 1
            self.restart()


def test_agent_that_lost_a_registration_made_since_its_last_read_is_refilled(started: Any) -> None:
    """An agent read empty, then a registration, then a restart: the next read answers what the reads before
    the registration did ("{}"), and still brings the registration back."""
    web, docker, consul = payload("web"), MemoryDocker(), ForgetfulConsul()
    daemon = started(docker, consul)
    step_until(daemon, lambda: consul.unchanged_reads >= 2)  # "{}", read and read again
    docker.containers[web["Id"]] = web
    docker.emit("start", web["Id"])
    step_until(daemon, lambda: "vm:rec-web:80" in consul.registered and consul.attempts["vm:rec-web:80"] == 2)


def test_a_periodic_read_of_an_unchanged_agent_is_not_parsed(started: Any) -> None:
    """Once the agent holds what registrar wrote, the periodic reads find its answer unchanged (a digest)."""
    docker, consul = MemoryDocker(payload("web")), MemoryConsul()
    daemon = started(docker, consul)
    step_until(daemon, lambda: "vm:rec-web:80" in consul.registered)
    writes = consul.writes
    step_until(daemon, lambda: consul.unchanged_reads >= 3)
    assert consul.writes == writes


def read_agent(daemon: Daemon) -> None:
    """Turn the loop once with the periodic read of the agent due, and wait until it is taken."""
    daemon._next_probe = 0
    daemon.step()
    settle(daemon)


def test_the_read_after_registrars_writes_is_parsed_the_same_answer_after_it_is_not(started: Any) -> None:
    """A read sent after registrations came back is parsed (only the agent's answer says it kept them); the
    next read, the same answer and no write back since, is not."""
    web, db = payload("web"), payload("multi")
    docker, consul = MemoryDocker(web), MemoryConsul()
    daemon = started(docker, consul)
    step_until(daemon, lambda: "vm:rec-web:80" in consul.registered)
    daemon.timing = replace(FAST, consul_probe=3600)  # the reads below only
    read_agent(daemon)
    docker.containers[db["Id"]] = db
    docker.emit("start", db["Id"])  # taken on the event thread: inspected and registered on a worker
    consul.wait_for(lambda registered: len(registered) == 4)
    settle(daemon)
    parsed, unchanged = consul.parsed_reads, consul.unchanged_reads
    read_agent(daemon)
    assert consul.parsed_reads == parsed + 1, "the read after the registrations"
    read_agent(daemon)
    assert (consul.parsed_reads, consul.unchanged_reads) == (parsed + 1, unchanged + 1), "the same answer again"


def test_agent_restart_between_registrars_writes_is_found_by_the_next_read(started: Any) -> None:
    """An agent that restarted while registrations were coming back, answering on the connections registrar
    kept (as through a proxy that keeps them), is found by the next periodic read: every registration comes back."""
    web, db = payload("web"), payload("multi")
    docker, consul = MemoryDocker(web), MemoryConsul()
    daemon = started(docker, consul)
    step_until(daemon, lambda: "vm:rec-web:80" in consul.registered)
    daemon.timing = replace(FAST, consul_probe=3600)
    read_agent(daemon)
    docker.containers[db["Id"]] = db
    docker.emit("start", db["Id"])
    consul.wait_for(lambda registered: len(registered) == 4)
    settle(daemon)
    consul.restart()
    read_agent(daemon)
    consul.wait_for(lambda registered: len(registered) == 4)


def test_fingerprints_agree() -> None:
    """The fingerprint read from a container list entry equals the one read from its inspect."""
    web = payload("web")
    summary = {
        "Id": web["Id"],
        "Names": [web["Name"]],
        "State": "running",
        "Status": "Up 2 seconds",
        "Ports": [{"IP": "127.0.0.1", "PrivatePort": 80, "PublicPort": 32768, "Type": "tcp"}],
        "NetworkSettings": {
            "Networks": {"bridge": {"IPAddress": web["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]}}
        },
    }
    assert summary_fingerprint(summary) == inspect_fingerprint(web)


def test_refused_registration_blocks_nothing_and_is_not_retried(one_shot: Any) -> None:
    """A registration Consul refuses is reported once; others go through; it is not re-sent unchanged."""
    docker, consul = MemoryDocker(payload("web"), payload("multi")), MemoryConsul()
    consul.refuse = {"vm:rec-web:80"}
    daemon = one_shot(docker, consul)
    with capture_logs() as logs:
        outcome = daemon.sync()
    assert (outcome.registered, outcome.rejected, outcome.failed) == (3, 1, 0)
    assert [(e["event"], e["service_id"]) for e in logs if e["log_level"] == "error"] == [
        ("service_rejected", "vm:rec-web:80")
    ]
    assert sorted(consul.registered) == ["vm:rec-multi:443", "vm:rec-multi:53:udp", "vm:rec-multi:80"]
    assert daemon.sync() == type(outcome)()
    assert consul.attempts["vm:rec-web:80"] == 1


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
    taken = daemon.cache.inspected

    def buggy(*args: Any, **kwargs: Any) -> Any:
        daemon.cache.inspected = taken  # once
        raise RuntimeError("a bug in taking an inspect")

    daemon.cache.inspected = buggy
    with capture_logs() as logs:
        docker.start(web)
        step_until(daemon, lambda: any(e["event"] == "loop_error" for e in logs), settled=False)
        docker.start(other)
        step_until(daemon, lambda: set(consul.registered) == {"vm:first:80", "vm:second:80"})
    error = next(e for e in logs if e["event"] == "loop_error")
    assert "a bug in taking an inspect" in str(error["exc_info"])


def buggy_once(daemon: Daemon) -> None:
    """Make the daemon's cache raise once when it takes an inspect (a bug in a peer)."""
    taken = daemon.cache.inspected

    def buggy(*args: Any, **kwargs: Any) -> Any:
        daemon.cache.inspected = taken  # type: ignore[method-assign]
        raise RuntimeError("a bug in taking an inspect")

    daemon.cache.inspected = buggy  # type: ignore[method-assign]


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


class OrderedDocker(MemoryDocker):
    """Records when the daemon subscribes to events and when it lists containers."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def events(self) -> Iterator[DockerEvent]:
        self.calls.append("subscribe")
        return super().events()

    def list_containers(self) -> list[dict[str, Any]]:
        self.calls.append("list")
        return super().list_containers()


def test_subscribes_before_listing(started: Any) -> None:
    """The daemon subscribes to events before its first listing, so a container started in between is seen."""
    docker, consul = OrderedDocker(), MemoryConsul()
    daemon = started(docker, consul)
    step_until(daemon, daemon.ready.is_set)
    assert docker.calls[:2] == ["subscribe", "list"]


def with_health(c: dict[str, Any], status: str, output: str) -> dict[str, Any]:
    c = copy.deepcopy(c)
    c["State"]["Health"] = {"Status": status, "Log": [{"Output": output}]}
    return c


def test_health_status_event_updates_the_check_without_reregistering(started: Any) -> None:
    """health_status events move the Docker health check (status and output); the service is written once."""
    web = with_health(payload("web"), "starting", "")
    docker, consul = MemoryDocker(web), MemoryConsul()
    daemon = started(docker, consul)
    check = "vm:rec-web:80:docker-health"
    step_until(daemon, lambda: consul.health.get(check) == ("critical", ""))
    assert consul.registered["vm:rec-web:80"]["Checks"][-1]["Status"] == "critical"
    for status, expected in (("healthy", "passing"), ("unhealthy", "critical"), ("healthy", "passing")):
        docker.containers[web["Id"]] = with_health(web, status, f"probe said {status}")
        docker.emit(f"health_status: {status}", web["Id"])
        step_until(daemon, lambda: consul.health.get(check) == (expected, f"probe said {status}"))  # noqa: B023
    assert consul.attempts["vm:rec-web:80"] == 1, "a change of health is no re-registration"


def test_health_is_refreshed_before_its_ttl_runs_out(started: Any) -> None:
    """Every refresh period the health is sent again, so the TTL never runs out while registrar runs."""
    web = with_health(payload("web"), "healthy", "fine")
    docker, consul = MemoryDocker(web), MemoryConsul()
    daemon = started(docker, consul)
    check = "vm:rec-web:80:docker-health"
    step_until(daemon, lambda: check in consul.health)
    consul.health.clear()
    daemon._next_health = 0.0  # the refresh is due now (it is every HEALTH_REFRESH_SECONDS)
    step_until(daemon, lambda: consul.health.get(check) == ("passing", "fine"))


INTERNAL = Settings(hostname="vm", internal=True)


def on_network(c: dict[str, Any], name: str, address: str) -> dict[str, Any]:
    """``c`` connected to network ``name`` at ``address`` too."""
    c = copy.deepcopy(c)
    c["NetworkSettings"]["Networks"][name] = {"IPAddress": address, "GlobalIPv6Address": ""}
    return c


def test_network_connect_of_a_running_container_is_followed(started: Any) -> None:
    """--internal, SERVICE_NETWORK=backend: registered once ``docker network connect`` puts it there."""
    c = container("internal", labels={"SERVICE_NETWORK": "backend"})
    docker, consul = MemoryDocker(c), MemoryConsul()
    daemon = started(docker, consul, INTERNAL)
    step_until(daemon, daemon.ready.is_set)
    assert consul.registered == {}
    docker.containers[c["Id"]] = on_network(c, "backend", "10.7.0.9")
    docker.emit("connect", c["Id"])
    step_until(daemon, lambda: "vm:rec-internal:80" in consul.registered)
    assert consul.registered["vm:rec-internal:80"]["Address"] == "10.7.0.9"


def test_network_events_around_a_start_and_a_stop_cost_no_inspect(started: Any) -> None:
    """A start's connect comes before its start event, a stop's disconnects after its die: no inspect for them."""
    c = payload("internal")
    docker, consul = MemoryDocker(), MemoryConsul()
    daemon = started(docker, consul, INTERNAL)
    step_until(daemon, daemon.ready.is_set)
    docker.containers[c["Id"]] = c
    for action in ("connect", "start"):
        daemon.inbox.put(DockerEvent(action, c["Id"]))
    step_until(daemon, lambda: "vm:rec-internal:80" in consul.registered)
    assert docker.inspects == 1
    docker.containers[c["Id"]] = stopped(c, 0)
    for action in ("die", "disconnect"):
        daemon.inbox.put(DockerEvent(action, c["Id"], exit_code=0 if action == "die" else None))
    step_until(daemon, lambda: consul.registered == {})
    daemon.inbox.put(DockerEvent("disconnect", c["Id"]))
    step_until(daemon, lambda: daemon.inbox.empty())
    assert docker.inspects == 1


def test_members_follow_the_container_whose_network_they_share(started: Any) -> None:
    """--network container:OWNER: the member is at the owner's address; when the owner's address changes the
    member is inspected again and follows; when the owner stops, the member's service goes (one warning)."""
    member, owner = payload("network_member"), payload("network_owner")
    docker, consul = MemoryDocker(owner, member), MemoryConsul()
    daemon = started(docker, consul, INTERNAL)
    owners = owner["NetworkSettings"]["Networks"]["rec-net2"]["IPAddress"]
    step_until(daemon, lambda: consul.registered.get("vm:rec-member:80", {}).get("Address") == owners)
    moved = copy.deepcopy(owner)
    moved["NetworkSettings"]["Networks"]["rec-net2"]["IPAddress"] = "172.19.0.99"
    docker.containers[owner["Id"]] = moved
    docker.emit("connect", owner["Id"])
    step_until(daemon, lambda: consul.registered.get("vm:rec-member:80", {}).get("Address") == "172.19.0.99")
    with capture_logs() as logs:
        docker.containers[owner["Id"]] = stopped(moved, 0)
        docker.emit("die", owner["Id"], exit_code=0)
        step_until(daemon, lambda: "vm:rec-member:80" not in consul.registered)
    problems = [(e["container"], e["key"]) for e in logs if e["event"] == "container_label_problem"]
    assert problems == [("rec-member", "network container:e8d3d87cf589")]


def test_instances_never_touch_each_others_registrations(one_shot: Any) -> None:
    """Two registrars of one host with other --instance names: each registers its own and removes only its own."""
    web, multi = payload("web"), payload("multi")
    consul = MemoryConsul()
    a = Settings(hostname="vm", instance="a", filters=(("name", "^/rec-web$"),))
    b = Settings(hostname="vm", instance="b")
    assert one_shot(MemoryDocker(web), consul, a).sync().registered == 1
    assert one_shot(MemoryDocker(multi), consul, b).sync().registered == 3
    assert one_shot(MemoryDocker(), consul, a).sync().deregistered == 1  # a's container is gone: only a's goes
    assert len(consul.registered) == 3 and all(s.startswith("vm:b:") for s in consul.registered)
    assert one_shot(MemoryDocker(), consul, S).sync().deregistered == 0, "no --instance: none of them is its own"


def test_forget_instance_removes_a_renamed_instances_registrations(one_shot: Any) -> None:
    """--instance new --forget-instance old: old's registrations go, with the reason; new registers its own."""
    consul = MemoryConsul()
    one_shot(MemoryDocker(payload("web")), consul, Settings(hostname="vm", instance="old")).sync()
    settings = Settings(hostname="vm", instance="new", forget_instances=("old",))
    actions = one_shot(MemoryDocker(payload("web")), consul, settings).plan()
    assert [(type(a).__name__, a.service_id, getattr(a, "reason", "")) for a in actions] == [
        ("Register", "vm:new:rec-web:80", ""),
        ("Deregister", "vm:old:rec-web:80", "its instance is forgotten (--forget-instance)"),
    ]


def test_an_interface_address_is_looked_up_again_on_each_full_reconcile(
    started: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--ip eth1: when eth1's address changes, the next full reconcile registers every service at the new one."""
    interfaces = {"eth1": ["10.5.0.7"]}
    monkeypatch.setattr("registrar.host_address.host_interfaces", lambda: interfaces)
    web = payload("web")
    docker, consul = MemoryDocker(web), MemoryConsul()
    daemon = started(docker, consul, Settings(hostname="vm", ip="10.5.0.7", ip_from="eth1"))
    step_until(daemon, lambda: consul.registered.get("vm:rec-web:80", {}).get("Address") == "10.5.0.7")
    interfaces["eth1"] = ["10.5.0.8"]
    with capture_logs() as logs:
        daemon.inbox.put(RESYNC)
        step_until(daemon, lambda: consul.registered.get("vm:rec-web:80", {}).get("Address") == "10.5.0.8")
    changed = [e for e in logs if e["event"] == "host_address_changed"]
    assert [(e["ip"], e["was_ip"]) for e in changed] == [("10.5.0.8", "10.5.0.7")]
    interfaces.clear()
    with capture_logs() as logs:
        daemon.inbox.put(RESYNC)
        step_until(daemon, lambda: any(e["event"] == "host_address_unresolved" for e in logs))
        step_until(daemon, lambda: any(e["event"] == "reconcile_done" for e in logs))
    assert consul.registered["vm:rec-web:80"]["Address"] == "10.5.0.8", "the last address is kept"


def probed(labels: dict[str, str]) -> dict[str, Any]:
    return container("web", labels={"SERVICE_CHECK_EXEC": "check --quick", "SERVICE_CHECK_INTERVAL": "50ms", **labels})


def test_exec_probes_report_on_their_ttl_check_and_stop_with_the_container(started: Any) -> None:
    """SERVICE_CHECK_EXEC: registrar runs the command in the container and sends its status and output to
    the service's TTL check, once per change; when the container dies the probes stop with its service."""
    c = probed({})
    docker, consul = MemoryDocker(c), MemoryConsul()
    docker.exec_results[c["Id"]] = ExecResult(1, "degraded")
    daemon = started(docker, consul)
    check = "service:vm:rec-web:80"
    step_until(daemon, lambda: consul.health.get(check) == ("warning", "degraded"))
    assert consul.registered["vm:rec-web:80"]["Checks"][0]["TTL"] == "45s"
    assert docker.execs[0] == (c["Id"], ("check", "--quick"))
    docker.exec_results[c["Id"]] = ExecResult(0, "fine")
    step_until(daemon, lambda: consul.health.get(check) == ("passing", "fine"))
    writes = consul.writes
    runs = len(docker.execs)
    step_until(daemon, lambda: len(docker.execs) >= runs + 3)
    assert consul.writes == writes, "an unchanged result is not sent again (the refresh keeps the TTL)"
    docker.containers[c["Id"]] = stopped(c, 0)
    docker.emit("die", c["Id"], exit_code=0)
    step_until(daemon, lambda: consul.registered == {})
    with daemon.prober.changed:
        assert daemon.prober.probes == {}


def test_exec_checks_off_or_a_one_shot_run_no_probe(one_shot: Any, started: Any) -> None:
    """--exec-checks off drops the check with one warning; sync registers the check but runs no probe."""
    c = probed({})
    docker, consul = MemoryDocker(c), MemoryConsul()
    assert one_shot(docker, consul).sync().registered == 1
    assert docker.execs == [] and consul.registered["vm:rec-web:80"]["Checks"][0]["CheckID"] == "service:vm:rec-web:80"
    with capture_logs() as logs:
        daemon = started(MemoryDocker(c), MemoryConsul(), Settings(hostname="vm", exec_checks=False))
        step_until(daemon, daemon.ready.is_set)
    problems = [(e["key"], e["problem"]) for e in logs if e["event"] == "container_label_problem"]
    off = "check dropped: exec checks are off on this host (--exec-checks off)"
    assert problems == [("label SERVICE_CHECK_EXEC", off)]


def test_an_inspect_in_flight_when_the_address_changes_is_made_again(
    started: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--ip eth1 changes while an inspect built with the old address is in flight, and the listing comes
    back after it: the container is inspected again, and registered at the new address."""
    interfaces = {"eth1": ["10.5.0.7"]}
    monkeypatch.setattr("registrar.host_address.host_interfaces", lambda: interfaces)
    web = payload("web")
    docker, consul = MemoryDocker(web), MemoryConsul()
    daemon = started(docker, consul, Settings(hostname="vm", ip="10.5.0.7", ip_from="eth1"))

    def address() -> Any:
        return consul.registered.get("vm:rec-web:80", {}).get("Address")

    step_until(daemon, lambda: address() == "10.5.0.7")
    built, inspect_gate, listing_gate = threading.Event(), threading.Event(), threading.Event()
    real_build, real_list = cached_from_inspect, docker.list_containers

    def build_then_wait(*args: Any, **kwargs: Any) -> Any:
        cached = real_build(*args, **kwargs)  # with the address of now
        built.set()
        inspect_gate.wait(5)
        return cached

    def list_when_released() -> list[dict[str, Any]]:
        listing_gate.wait(5)
        return real_list()

    monkeypatch.setattr("registrar.daemon.cached_from_inspect", build_then_wait)
    monkeypatch.setattr(docker, "list_containers", list_when_released)
    # The fake's summaries carry no ports: make the listing's fingerprints a real engine's, so that an
    # unchanged container is not inspected again by the listing.
    monkeypatch.setattr(
        "registrar.cache.summary_fingerprint", lambda s: inspect_fingerprint(docker.containers[s["Id"]])
    )
    docker.emit("health_status: healthy", web["Id"])
    assert built.wait(5)
    interfaces["eth1"] = ["10.5.0.8"]
    daemon.inbox.put(RESYNC)
    step_until(daemon, lambda: daemon.cache.listing, settled=False)
    inspect_gate.set()  # the inspect built with the old address is back before the listing
    step_until(daemon, lambda: daemon.cache.containers[web["Id"]].fingerprint != 0 and not daemon.cache.inspecting)
    listing_gate.set()
    step_until(daemon, lambda: address() == "10.5.0.8")


def test_forget_instance_empty_removes_the_registrations_made_without_an_instance(one_shot: Any) -> None:
    """A host adopting --instance: --forget-instance '' removes what its registrar made without one."""
    consul = MemoryConsul()
    one_shot(MemoryDocker(payload("web")), consul, Settings(hostname="vm")).sync()
    settings = Settings(hostname="vm", instance="team1", forget_instances=("",))
    assert one_shot(MemoryDocker(payload("web")), consul, settings).sync().deregistered == 1
    assert list(consul.registered) == ["vm:team1:rec-web:80"]


def test_exec_results_are_refreshed_with_docker_health_off(started: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """--docker-health off: an exec check's unchanged result is still sent again each refresh period (its TTL)."""
    monkeypatch.setattr("registrar.daemon.HEALTH_REFRESH_SECONDS", 0.05)
    c = probed({"SERVICE_CHECK_INTERVAL": "1h"})
    docker, consul = MemoryDocker(c), MemoryConsul()
    daemon = started(docker, consul, Settings(hostname="vm", docker_health=False))
    check = "service:vm:rec-web:80"
    step_until(daemon, lambda: consul.health.get(check) == ("passing", ""), settled=False)  # refreshes never rest
    consul.health.clear()
    step_until(daemon, lambda: consul.health.get(check) == ("passing", ""), settled=False)
    assert len(docker.execs) == 1, "sent again without running the probe again"


def test_a_label_problem_is_logged_once_while_it_holds(started: Any) -> None:
    """A container inspected again with the same bad label (a health_status event, an event heard twice)
    gets one warning, not one per inspect; once it dies and starts again, the warning comes again."""
    web = container("web", labels={"SERVICE_CHECK_HTTP": "/", "SERVICE_CHECK_INTERVAL": "banana"})
    docker, consul = MemoryDocker(web), MemoryConsul()
    with capture_logs() as logs:
        daemon = started(docker, consul)
        step_until(daemon, lambda: "vm:rec-web:80" in consul.registered)
        inspects = docker.inspects
        docker.emit("health_status", web["Id"])
        docker.emit("start", web["Id"])  # heard again: the subscription replays the second before it
        step_until(daemon, lambda: docker.inspects >= inspects + 1)
        docker.emit("die", web["Id"], exit_code=0)
        step_until(daemon, lambda: "vm:rec-web:80" not in consul.registered)
        docker.emit("start", web["Id"])
        step_until(daemon, lambda: "vm:rec-web:80" in consul.registered)
    problems = [e["key"] for e in logs if e["event"] == "container_label_problem"]
    assert problems == ["label SERVICE_CHECK_INTERVAL"] * 2, problems
