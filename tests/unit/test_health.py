"""/healthz of a daemon whose worker is stuck: the piece of work is named until it comes back."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from tests.unit.fakes import MemoryConsul, SlowDocker
from tests.unit.loop import FAST, step_until
from tests.unit.payloads import payload


def test_a_worker_stuck_past_its_deadline_fails_healthz_until_its_work_returns(started: Any) -> None:
    """An inspect that has not come back within ``Timing.work_deadline`` makes unhealthy() name it; once it is
    back, the daemon is healthy again and the container registered."""
    web = payload("web")
    docker, consul = SlowDocker(), MemoryConsul()
    daemon = started(docker, consul, timing=replace(FAST, work_deadline=0.1))
    step_until(daemon, daemon.ready.is_set)
    assert daemon.unhealthy() == ""
    gate = docker.hold(web["Id"])
    docker.start(web)
    step_until(daemon, lambda: "inspecting container" in daemon.unhealthy(), idle=False)
    reason = daemon.unhealthy()
    assert re.fullmatch(rf"a worker has been on inspecting container {web['Id'][:12]} for \d+ s", reason), reason
    gate.set()
    step_until(daemon, lambda: "vm:rec-web:80" in consul.registered and daemon.unhealthy() == "")
    assert docker.timed_out == []
