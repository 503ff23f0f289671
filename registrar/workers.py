"""The workers: a pool of threads that run the loop's requests to Docker and Consul and post the results.

Each piece of work returns one message, which the worker hands to ``deliver`` (the daemon's: it
takes a result that succeeded at once, under its lock, and passes the rest to the loop); an
exception the work raises is turned into a message too (``failed``), so a worker never dies and
the loop decides what an error means. The workers own no state.

The threads take their work from one ``queue.SimpleQueue`` (C code end to end) and count the idle
ones under one plain lock, where ``concurrent.futures`` makes a Future and its Condition for each
piece of work (3 % of registrar's CPU in a burst of starts, measured: README, "Performance").
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from registrar.messages import Message

Work = tuple[Callable[[], Message], Callable[[Exception], Message]]


class Workers:
    """Up to ``size`` threads, started as work comes, that hand their results to ``deliver``."""

    def __init__(self, deliver: Callable[[Message], None], size: int = 8) -> None:
        self.deliver = deliver
        self.size = size
        self._queue: queue.SimpleQueue[Work | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        """Threads done with their work and not yet claimed by a ``post`` (under ``_lock``), as
        ``concurrent.futures`` counts them: a post claims one, or starts a thread when none is left."""
        self._lock = threading.Lock()
        self._closed = False
        self._local = threading.local()

    def post(self, work: Callable[[], Message], failed: Callable[[Exception], Message]) -> None:
        """Run ``work`` on a thread and deliver its message; an exception ``e`` delivers ``failed(e)``.

        Nothing is run once the workers are closed (the daemon is stopping)."""
        if self._closed:
            return
        self._queue.put((work, failed))
        with self._lock:
            if self._idle:
                self._idle -= 1  # a waiting thread takes it
            elif len(self._threads) < self.size and not self._closed:
                thread = threading.Thread(target=self._run, name=f"registrar-worker_{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
            # else every thread is busy: the work waits for the first that is done

    def on_worker(self) -> bool:
        """Whether the calling thread is one of these workers."""
        return getattr(self._local, "worker", False)

    def _run(self) -> None:
        self._local.worker = True
        while True:
            item = self._queue.get()
            if item is None:
                return
            self._do(*item)
            # Nothing of the last piece of work stays alive while the thread waits for the next (a
            # read of 500 services held 0.3 MiB on an idle worker).
            item = None

    def _do(self, work: Callable[[], Message], failed: Callable[[Exception], Message]) -> None:
        try:
            message = work()
        except Exception as e:  # reported to the loop, which decides (a Docker or Consul error is retried)
            message = failed(e)
        self.deliver(message)
        with self._lock:
            self._idle += 1

    def close(self) -> None:
        """Wait for the work in flight; drop what has not started."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        for _ in threads:
            self._queue.put(None)
        for thread in threads:
            thread.join()
