"""The workers: a pool of threads that run the loop's requests to Docker and Consul and post the results.

Each piece of work returns one message for the loop's inbox; an exception it raises is turned into
a message too (``failed``), so a worker never dies and the loop decides what an error means. The
workers own no state: whatever they learn goes back to the loop as a message.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from registrar.messages import Message


class Workers:
    """``size`` threads (started as work comes) that post results to ``inbox``."""

    def __init__(self, inbox: queue.SimpleQueue[Message], size: int = 16) -> None:
        self.inbox = inbox
        self.pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="registrar-worker")

    def post(self, work: Callable[[], Message], failed: Callable[[Exception], Message]) -> None:
        """Run ``work`` on a thread and put its message in the inbox; an exception ``e`` posts ``failed(e)``."""
        self.pool.submit(self._run, work, failed)

    def _run(self, work: Callable[[], Message], failed: Callable[[Exception], Message]) -> None:
        try:
            message = work()
        except Exception as e:  # reported to the loop, which decides (a Docker or Consul error is retried)
            message = failed(e)
        self.inbox.put(message)

    def close(self) -> None:
        """Wait for the work in flight; drop what has not started."""
        self.pool.shutdown(wait=True, cancel_futures=True)
