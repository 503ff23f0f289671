"""The workers: a pool of threads that run the loop's requests to Docker and Consul and post the results.

Each piece of work returns one message, which the worker hands to ``deliver`` (the daemon's: it
takes a result that succeeded at once, under its lock, and passes the rest to the loop); an
exception the work raises is turned into a message too (``failed``), so a worker never dies and
the loop decides what an error means. The workers own no state.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from registrar.messages import Message


class Workers:
    """``size`` threads (started as work comes) that hand their results to ``deliver``."""

    def __init__(self, deliver: Callable[[Message], None], size: int = 8) -> None:
        self.deliver = deliver
        self.pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="registrar-worker")
        self._closed = False
        self._local = threading.local()

    def post(self, work: Callable[[], Message], failed: Callable[[Exception], Message]) -> None:
        """Run ``work`` on a thread and deliver its message; an exception ``e`` delivers ``failed(e)``.

        Nothing is run once the workers are closed (the daemon is stopping)."""
        if not self._closed:
            self.pool.submit(self._run, work, failed)

    def on_worker(self) -> bool:
        """Whether the calling thread is one of these workers."""
        return getattr(self._local, "worker", False)

    def _run(self, work: Callable[[], Message], failed: Callable[[Exception], Message]) -> None:
        self._local.worker = True
        try:
            message = work()
        except Exception as e:  # reported to the loop, which decides (a Docker or Consul error is retried)
            message = failed(e)
        self.deliver(message)

    def close(self) -> None:
        """Wait for the work in flight; drop what has not started."""
        self._closed = True
        self.pool.shutdown(wait=True, cancel_futures=True)
