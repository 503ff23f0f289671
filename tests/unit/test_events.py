"""Event messages as Docker and Podman send them (recorded), read into the events registrar watches."""

from __future__ import annotations

from typing import Any

import pytest

from registrar.docker_source import from_message
from tests.unit.payloads import payload


def watched(engine: str) -> list[tuple[str, str, int | None]]:
    events = [from_message(m) for m in payload("events")[engine]]
    return [(e.action, e.name, e.exit_code) for e in events if e is not None]


def test_kill_carries_its_signal() -> None:
    """Docker's kill event carries the signal sent (docker stop's first one is the stop signal)."""
    kill = next(e for e in map(from_message, payload("events")["docker"]) if e and e.action == "kill")
    assert kill.signal == "9"


def test_docker_lifecycle_events() -> None:
    """Docker: start, rename, kill, die (with the exit code) and destroy are watched; stop and create are not."""
    assert watched("docker") == [
        ("start", "rec-docker", None),
        ("rename", "rec-docker-2", None),
        ("kill", "rec-docker-2", None),
        ("die", "rec-docker-2", 137),
        ("destroy", "rec-docker-2", None),
    ]


def test_podman_lifecycle_events_in_dockers_names() -> None:
    """Podman: the same four, with its ``remove`` read as ``destroy``; init and cleanup are not watched."""
    assert watched("podman") == [
        ("start", "rec-podman", None),
        ("rename", "rec-podman-2", None),
        ("die", "rec-podman-2", 137),
        ("destroy", "rec-podman-2", None),
    ]


@pytest.mark.parametrize(
    "message",
    [
        {"Type": "container", "Action": "exec_start: sh", "Actor": {"ID": "abc"}},
        {"Type": "container", "Action": "start", "Actor": {}},
        {},
    ],
)
def test_unwatched_or_incomplete_messages_are_dropped(message: dict[str, Any]) -> None:
    """Events registrar does not act on, or with no container ID, yield nothing."""
    assert from_message(message) is None


def test_health_status_keeps_its_status() -> None:
    """Docker's ``health_status: healthy`` is watched, with the status after the colon kept."""
    event = from_message({"Action": "health_status: healthy", "Actor": {"ID": "abc", "Attributes": {"name": "w"}}})
    assert event is not None and event.action == "health_status: healthy"
