"""registrar.workers: the pool that runs the loop's requests and hands back their results."""

from __future__ import annotations

import queue
import threading

from registrar.messages import Message, Wake
from registrar.workers import Workers


def test_work_posted_at_once_runs_at_once_up_to_the_size() -> None:
    """Four pieces of work posted together while one thread waits idle run on four threads at once
    (each waits for the other three), not one after the other on the idle thread."""
    delivered: queue.SimpleQueue[Message] = queue.SimpleQueue()
    workers = Workers(delivered.put, size=4)
    barrier = threading.Barrier(4, timeout=5)

    def together() -> Message:
        barrier.wait()
        return Wake()

    try:
        workers.post(Wake, lambda e: Wake())
        delivered.get(timeout=5)  # one thread now, idle
        for _ in range(4):
            workers.post(together, lambda e: Wake())
        results = [delivered.get(timeout=10) for _ in range(4)]
    finally:
        workers.close()
    assert all(isinstance(r, Wake) for r in results)
    assert not barrier.broken


def test_a_failing_piece_of_work_delivers_its_failure_and_the_thread_goes_on() -> None:
    """Work that raises delivers ``failed(error)``; the same pool then runs the next piece."""
    delivered: queue.SimpleQueue[object] = queue.SimpleQueue()
    workers = Workers(delivered.put, size=1)

    def broken() -> Message:
        raise ValueError("boom")

    try:
        workers.post(broken, lambda e: ("failed", str(e)))  # type: ignore[arg-type,return-value]
        assert delivered.get(timeout=5) == ("failed", "boom")
        workers.post(Wake, lambda e: Wake())
        assert isinstance(delivered.get(timeout=5), Wake)
    finally:
        workers.close()
