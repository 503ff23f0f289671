"""Probes: the checks registrar runs itself. Commands inside containers (``SERVICE_CHECK_EXEC``), reported on TTL
checks; with ``--catalog``, the HTTP, TCP and gRPC checks no agent runs, from the host (registrar.host_checks).

The loop tells the prober which probes the desired state holds (``update``); the prober's own thread
starts each one when it is due, on a bounded pool of its own, so probes never hold up the loop or its
workers. One run per check is in flight at a time: a probe still running when its next run is due is
not started twice. Each result goes to ``deliver`` as a ``Probed`` message: exit 0 is passing, 1 is
warning, anything else (or the timeout, or an engine that refuses) is critical, with the output as
the check's output. A result that has not yet come ``SUCCESS_BEFORE_PASSING`` (passing or warning) or
``FAILURES_BEFORE_CRITICAL`` (critical) times in a row is not delivered: the agent's rule
(agent/checks/check.go, StatusHandler).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import structlog

from registrar.errors import DockerError
from registrar.host_checks import HostChecks
from registrar.messages import Message, Probed
from registrar.model import ExecResult, Health, Probe, Service

log = structlog.get_logger("registrar")

PROBE_THREADS = 8
"""Probes run at once. The engine is the limit: on this project's 2-vCPU machine it runs about 25 execs a
second however many ask at once (bench/run-probes.sh), so more threads would only wait longer; these
leave room for probes that hang until their timeout."""
HOST_CHECK_THREADS = 32
"""HTTP, TCP and gRPC checks (``--catalog``) run at once, on a pool apart from the exec probes': a run waits on
the network, not on the engine, and endpoints that hang until their timeout must not hold up the others."""
EXEC_STATUS = {0: "passing", 1: "warning"}
"""A probe's exit code -> its check's status (Consul's script check rule); anything else is critical."""


class ExecSource(Protocol):
    def exec_probe(self, container_id: str, args: tuple[str, ...], timeout: float, output_max: int) -> ExecResult: ...
    def cancel_probes(self) -> None: ...


def result_health(probe: Probe, exit_code: int | None, output: str) -> Health:
    """The status and output a probe's run puts on its check."""
    if exit_code is None:
        return Health(probe.check_id, "critical", f"timed out after {probe.timeout:g}s\n{output}".strip())
    return Health(probe.check_id, EXEC_STATUS.get(exit_code, "critical"), output)


class Prober:
    """Runs the desired state's probes, exec probes on ``size`` threads of its own and checks run from the host on
    ``HOST_CHECK_THREADS`` more; results go to ``deliver``, each only when it differs from the last."""

    def __init__(
        self,
        source: ExecSource,
        deliver: Callable[[Message], None],
        size: int = PROBE_THREADS,
        host_checks: HostChecks | None = None,
    ) -> None:
        self.source = source
        self.deliver = deliver
        self.host_checks = host_checks
        """Runs the probes with a ``target`` (``--catalog``); made at the first such probe when not given."""
        self.streaks: dict[str, tuple[bool, int]] = {}
        """Check ID -> (its last results passed, how many in a row): for SUCCESS_BEFORE_PASSING and
        FAILURES_BEFORE_CRITICAL."""
        self.pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="registrar-probe")
        self.host_pool = ThreadPoolExecutor(max_workers=HOST_CHECK_THREADS, thread_name_prefix="registrar-check")
        """Runs the probes with a ``target`` (threads are started only as runs need them)."""
        self.changed = threading.Condition()
        self.probes: dict[str, tuple[str, str, Probe]] = {}
        """Check ID -> (service ID, container ID, probe): what to run."""
        self.due: dict[str, float] = {}
        """Check ID -> when its next run starts (monotonic seconds)."""
        self.by_service: dict[str, list[str]] = {}
        """Service ID -> the check IDs of its probes."""
        self.running: set[str] = set()
        self.delivered: dict[str, Health] = {}
        """Check ID -> the result last delivered for its probe as it is now: the same again is not delivered (the
        loop has it, and sends it again itself when it must)."""
        self.runs = 0
        """Probes run so far (benchmarks read it)."""
        self._closed = False
        self._thread: threading.Thread | None = None

    def update(self, changed: Iterable[str], desired: Mapping[str, Service]) -> None:
        """The probes of the services ``changed`` (IDs), as ``desired`` now holds them: a new or changed
        probe is due at once, an unchanged one keeps its time, a gone one stops."""
        with self.changed:
            now = time.monotonic()
            for service_id in changed:
                before = {c: self.probes.pop(c) for c in self.by_service.pop(service_id, ())}
                service = desired.get(service_id)
                container_id = service.container_id if service is not None else ""
                for probe in service.probes if service is not None else ():
                    entry = (service_id, container_id, probe)
                    self.probes[probe.check_id] = entry
                    self.by_service.setdefault(service_id, []).append(probe.check_id)
                    if before.pop(probe.check_id, None) != entry:
                        self.due[probe.check_id] = now
                        self.streaks.pop(probe.check_id, None)
                        self.delivered.pop(probe.check_id, None)
                    if probe.target is not None and self.host_checks is None:
                        self.host_checks = HostChecks()
                for check_id in before:
                    self.due.pop(check_id, None)
                    self.streaks.pop(check_id, None)
                    self.delivered.pop(check_id, None)
            self.changed.notify()
            if self._thread is None and self.probes and not self._closed:
                self._thread = threading.Thread(target=self._run, name="registrar-prober", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        with self.changed:
            while not self._closed:
                now = time.monotonic()
                for check_id, when in self.due.items():
                    if when <= now and check_id not in self.running:
                        self.running.add(check_id)
                        service_id, container_id, probe = self.probes[check_id]
                        self.due[check_id] = now + probe.interval
                        pool = self.pool if probe.target is None else self.host_pool
                        pool.submit(self._probe, service_id, container_id, probe)
                waiting = [w for c, w in self.due.items() if c not in self.running]
                self.changed.wait(max(0.0, min(waiting) - now) if waiting else None)

    def _probe(self, service_id: str, container_id: str, probe: Probe) -> None:
        with self.changed:
            if self.probes.get(probe.check_id) != (service_id, container_id, probe):  # gone since it was due
                self.running.discard(probe.check_id)
                self.changed.notify()
                return
        try:
            if probe.target is not None and self.host_checks is not None:
                health = self.host_checks.run(probe)
            else:
                result = self.source.exec_probe(container_id, probe.args, probe.timeout, probe.output_max)
                health = result_health(probe, result.exit_code, result.output)
        except DockerError as e:
            health = Health(probe.check_id, "critical", str(e))
        except Exception as e:  # a bug: logged with its traceback; the check says the probe could not run
            log.error("probe_error", check_id=probe.check_id, exc_info=e)
            health = Health(probe.check_id, "critical", f"registrar could not run the probe: {e}")
        finally:
            with self.changed:
                self.running.discard(probe.check_id)
                self.runs += 1
                self.changed.notify()
        with self.changed:  # a probe gone or changed while it ran counts no more (its streak is gone with it)
            current = self.probes.get(probe.check_id) == (service_id, container_id, probe)
            reached = current and self._reached(probe, health.status != "critical")
            again = reached and self.delivered.get(probe.check_id) == health
            if reached:
                self.delivered[probe.check_id] = health
        if not current or again:
            return
        if not reached:
            log.debug("probe_below_threshold", check_id=probe.check_id, status=health.status)
        elif not self._closed:
            self.deliver(Probed(service_id, container_id, probe, health))

    def _reached(self, probe: Probe, passed: bool) -> bool:
        """Count one result (under the lock): whether as many have come in a row as the probe's threshold asks."""
        last, count = self.streaks.get(probe.check_id, (passed, 0))
        count = count + 1 if last == passed else 1
        self.streaks[probe.check_id] = (passed, count)
        return count >= (probe.passing_after if passed else probe.critical_after)

    def close(self) -> None:
        """Stop starting probes and end the runs in flight at once (the engine's connections are shut)."""
        with self.changed:
            self._closed = True
            self.changed.notify()
        self.source.cancel_probes()
        if self.host_checks is not None:
            self.host_checks.close()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.host_pool.shutdown(wait=True, cancel_futures=True)
