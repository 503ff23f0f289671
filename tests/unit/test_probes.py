"""Exec probes (registrar.probes): run on the prober's own threads, one run per check at a time, each
result a Probed message with the check's status and output."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import pytest

from registrar.errors import DockerError
from registrar.messages import Message, Probed
from registrar.model import Check, ExecResult, Health, Probe, Service
from registrar.probes import Prober, result_health

PROBE = Probe("service:vm:web:80", ("check", "--quick"), interval=0.05, timeout=2.0, output_max=16)


def service(*probes: Probe, sid: str = "vm:web:80", container: str = "c1") -> Service:
    checks = tuple(Check(p.check_id, ttl=p.ttl, probe=p) for p in probes)
    return Service(sid, "web", 80, container_id=container, checks=checks)


class Engine:
    """Answers exec probes with the result set for the container; those in ``held`` wait for ``hold``."""

    def __init__(self) -> None:
        self.results: dict[str, ExecResult | DockerError] = {}
        self.runs: list[tuple[str, tuple[str, ...]]] = []
        self.hold = threading.Event()
        self.held: set[str] = set()
        self.cancelled = False
        self.concurrent = 0
        self.most = 0
        self.lock = threading.Lock()
        self.ran = threading.Condition(self.lock)
        """Notified at each run's start."""

    def exec_probe(self, container_id: str, args: tuple[str, ...], timeout: float, output_max: int) -> ExecResult:
        with self.lock:
            self.runs.append((container_id, args))
            self.ran.notify_all()
            self.concurrent += 1
            self.most = max(self.most, self.concurrent)
        try:
            if container_id in self.held:
                self.hold.wait(5)
            result = self.results.get(container_id, ExecResult(0, "ok"))
            if isinstance(result, DockerError):
                raise result
            return ExecResult(result.exit_code, result.output[:output_max])
        finally:
            with self.lock:
                self.concurrent -= 1

    def cancel_probes(self) -> None:
        """As the engine's connections being shut: the runs waiting end at once."""
        self.cancelled = True
        self.hold.set()


@pytest.fixture
def prober() -> Iterator[tuple[Prober, Engine, queue.SimpleQueue[Message]]]:
    """A prober on a scripted engine; its results land in a queue; closed afterwards."""
    engine, results = Engine(), queue.SimpleQueue[Message]()
    p = Prober(engine, results.put, size=2)
    yield p, engine, results
    engine.hold.set()
    p.close()


def next_health(results: queue.SimpleQueue[Message]) -> Health:
    message = results.get(timeout=5)
    assert isinstance(message, Probed)
    return message.health


@pytest.mark.parametrize(
    ("exit_code", "status"), [(0, "passing"), (1, "warning"), (2, "critical"), (126, "critical"), (None, "critical")]
)
def test_exit_code_gives_the_checks_status(exit_code: int | None, status: str) -> None:
    """Exit 0 passing, 1 warning, anything else critical; a run cut at its timeout is critical and says so."""
    health = result_health(PROBE, exit_code, "out")
    assert (health.check_id, health.status) == (PROBE.check_id, status)
    assert health.output == ("timed out after 2s\nout" if exit_code is None else "out")


def test_a_probe_runs_every_interval_in_its_container(
    prober: tuple[Prober, Engine, queue.SimpleQueue[Message]],
) -> None:
    """A service's probe runs at once, then again each interval, in its container, with its output maximum; the
    same result again is not delivered again (the loop has it)."""
    p, engine, results = prober
    engine.results["c1"] = ExecResult(1, "x" * 100)
    p.update(["vm:web:80"], {"vm:web:80": service(PROBE)})
    assert next_health(results) == Health(PROBE.check_id, "warning", "x" * 16)
    with engine.ran:
        assert engine.ran.wait_for(lambda: len(engine.runs) >= 3, 5), "the probe did not run again"
    assert engine.runs[:3] == [("c1", ("check", "--quick"))] * 3
    assert results.empty(), "the same result was delivered again"
    engine.results["c1"] = ExecResult(0, "fine")
    assert next_health(results) == Health(PROBE.check_id, "passing", "fine")


def test_an_engine_that_refuses_is_critical_with_its_message(
    prober: tuple[Prober, Engine, queue.SimpleQueue[Message]],
) -> None:
    """The engine refusing the exec (the container stopped): critical, with the engine's words."""
    p, engine, results = prober
    engine.results["c1"] = DockerError("container c1 is not running")
    p.update(["vm:web:80"], {"vm:web:80": service(PROBE)})
    assert next_health(results) == Health(PROBE.check_id, "critical", "container c1 is not running")


def test_a_hung_probe_is_not_started_twice_and_holds_up_no_other(
    prober: tuple[Prober, Engine, queue.SimpleQueue[Message]],
) -> None:
    """While one check's run hangs, it is not started again, and the other checks go on running meanwhile."""
    p, engine, results = prober
    engine.held.add("c2")
    slow = Probe("service:vm:slow:80", ("hang",), interval=0.01, timeout=5)
    desired = {"vm:slow:80": service(slow, sid="vm:slow:80", container="c2"), "vm:web:80": service(PROBE)}
    p.update(desired, desired)
    with engine.ran:
        assert engine.ran.wait_for(lambda: engine.runs.count(("c1", PROBE.args)) >= 3, 5), "the other stopped"
    assert engine.runs.count(("c2", ("hang",))) == 1
    engine.hold.set()
    while next_health(results).check_id != slow.check_id:
        pass


def test_a_gone_service_stops_its_probes(prober: tuple[Prober, Engine, queue.SimpleQueue[Message]]) -> None:
    """Once its service is gone from the desired state, a probe is not run again; the others run on."""
    p, engine, results = prober
    other = Probe("service:vm:api:80", ("ok",), interval=0.01, timeout=1)
    desired = {"vm:web:80": service(PROBE), "vm:api:80": service(other, sid="vm:api:80", container="c2")}
    p.update(desired, desired)
    next_health(results)
    p.update(["vm:web:80"], {"vm:api:80": desired["vm:api:80"]})
    with engine.ran:  # a run of web under way at the update may still start: the next one may not
        assert engine.ran.wait_for(lambda: engine.runs.count(("c2", other.args)) >= 3, 5), "the other stopped"
        runs = engine.runs.count(("c1", PROBE.args))
        later = engine.runs.count(("c2", other.args)) + 5
        assert engine.ran.wait_for(lambda: engine.runs.count(("c2", other.args)) >= later, 5), "the other stopped"
        assert engine.runs.count(("c1", PROBE.args)) == runs


def test_close_ends_a_hanging_probe_at_once(prober: tuple[Prober, Engine, queue.SimpleQueue[Message]]) -> None:
    """A stop does not wait for a probe's timeout: close() cancels the engine's runs, and no result is sent."""
    p, engine, results = prober
    engine.held.add("c1")
    p.update(["vm:web:80"], {"vm:web:80": service(PROBE)})
    with engine.ran:
        assert engine.ran.wait_for(lambda: engine.runs, 5), "the probe never ran"
    p.close()
    assert engine.cancelled and results.empty()


class Scripted(Engine):
    """Answers each run with the next exit code of ``codes`` (the last one again once they are used up); the
    output names the run."""

    def __init__(self, codes: list[int]) -> None:
        super().__init__()
        self.codes = codes

    def exec_probe(self, container_id: str, args: tuple[str, ...], timeout: float, output_max: int) -> ExecResult:
        with self.lock:
            self.runs.append((container_id, args))
            n = len(self.runs)
        return ExecResult(self.codes[min(n, len(self.codes)) - 1], f"run {n}")


def test_a_status_is_delivered_once_its_threshold_of_results_in_a_row_is_met() -> None:
    """SUCCESS_BEFORE_PASSING=2, FAILURES_BEFORE_CRITICAL=3: a result is delivered only once that many in a row
    agree (a warning counts as a success), as the agent's StatusHandler does."""
    engine, results = Scripted([0, 2, 1, 0, 2, 2, 2]), queue.SimpleQueue[Message]()
    p = Prober(engine, results.put, size=1)
    try:
        counted = Probe(PROBE.check_id, ("check",), interval=0.01, timeout=1.0, passing_after=2, critical_after=3)
        p.update(["vm:web:80"], {"vm:web:80": service(counted)})
        delivered = [next_health(results) for _ in range(3)]
    finally:
        p.close()
    assert [(h.status, h.output) for h in delivered] == [
        ("passing", "run 4"),
        ("critical", "run 7"),
        ("critical", "run 8"),
    ]


def test_a_run_back_after_its_probe_was_removed_counts_for_nothing(
    prober: tuple[Prober, Engine, queue.SimpleQueue[Message]],
) -> None:
    """A container gone while its probe ran: the run's result is not delivered and leaves no count behind (one
    would carry over to a new probe of the same check ID toward its FAILURES_BEFORE_CRITICAL)."""
    p, engine, results = prober
    engine.held.add("c1")
    p.update(["vm:web:80"], {"vm:web:80": service(PROBE)})
    with engine.ran:
        assert engine.ran.wait_for(lambda: engine.runs, 5), "the probe never ran"
    p.update(["vm:web:80"], {})
    engine.hold.set()
    with p.changed:
        assert p.changed.wait_for(lambda: p.runs == 1 and not p.running, 5), "the run never came back"
    assert p.streaks == {}
    assert results.empty()
