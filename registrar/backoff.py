"""Backoff: how long to wait before trying again, for the loop's retries and each container's inspect.

No I/O, no clock: the caller gives the time. ``Backoff`` doubles a delay from ``first`` to ``most``.
``InspectRetries`` keeps one per container whose inspect the engine answered with an error: such a
failure is that container's, not the engine's, so it alone is inspected again, later; its delay
starts over once an inspect of it succeeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Exponential backoff between ``first`` and ``most`` seconds."""

    first: float = 0.2
    most: float = 10.0
    _next: float = field(default=0.0, init=False)

    def next(self) -> float:
        """The next delay: ``first``, then twice the last, up to ``most``."""
        self._next = min(self.most, self._next * 2) if self._next else self.first
        return self._next

    def reset(self) -> None:
        self._next = 0.0


class InspectRetries:
    """Per container whose last inspect failed: the last delay, and when its retry is due (monotonic seconds)."""

    def __init__(self, first: float, most: float) -> None:
        self.first, self.most = first, most
        self._delay: dict[str, float] = {}
        """Container ID -> the delay before its last retry (seconds); present until an inspect succeeds."""
        self._due: dict[str, float] = {}
        """Container ID -> when its retry is due; taken out by ``due``."""

    def __bool__(self) -> bool:
        """Whether any container's last inspect failed (the loop skips the rest when none has)."""
        return bool(self._delay)

    def failed(self, container_id: str, now: float) -> float:
        """An inspect of the container failed at ``now``: its retry is due after the delay returned (seconds)."""
        last = self._delay.get(container_id)
        delay = self.first if last is None else min(self.most, last * 2)
        self._delay[container_id] = delay
        self._due[container_id] = now + delay
        return delay

    def done(self, container_id: str) -> None:
        """No retry for this container: an inspect of it came back, or it died or is gone (the event says
        what an inspect would). Its next failure waits ``first`` again."""
        if self._delay.pop(container_id, None) is not None:
            self._due.pop(container_id, None)

    def due(self, now: float) -> list[str]:
        """The containers whose retry is due at ``now``, sorted; each is due no more."""
        due = sorted(cid for cid, at in self._due.items() if at <= now)
        for cid in due:
            del self._due[cid]
        return due

    def deadline(self) -> float | None:
        """When the next retry is due; None when none is waiting."""
        return min(self._due.values(), default=None)

    def waiting(self) -> set[str]:
        """The containers whose last inspect failed (their registrations stay as they are until one succeeds)."""
        return set(self._delay)
