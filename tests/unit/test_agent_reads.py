"""Reading the agent: Consul down and back, an agent that lost its services, which reads are parsed."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from structlog.testing import capture_logs

from registrar.daemon import Daemon
from registrar.model import Service
from tests.unit.fakes import MemoryConsul, MemoryDocker
from tests.unit.loop import FAST, step_until, wait_idle
from tests.unit.payloads import payload


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
    daemon.core.schedule.read = 0
    daemon.step()
    wait_idle(daemon)


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
    wait_idle(daemon)
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
    wait_idle(daemon)
    consul.restart()
    read_agent(daemon)
    consul.wait_for(lambda registered: len(registered) == 4)
