"""The workers: a ``concurrent.futures`` thread pool that runs the loop's requests to Docker and Consul.

Each piece of work returns one message, which the worker hands to ``on_result`` (the daemon's
``on_message``: it takes a result that succeeded at once, and passes the rest to the loop); an
exception the work raises is turned into a message too (``failed``), so the loop decides what an
error means. The workers keep only what each is on and since when (``longest``: a worker that does
not come back is unhealthy); the exec probes run on a pool of the same kind (registrar.probes).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from registrar.messages import Message

WORKERS = 8
"""Requests in flight at once: each waits on Docker or Consul, not on the CPU."""


class Workers:
    """Up to ``size`` threads, started as work comes, that hand their results to ``on_result``."""

    def __init__(self, on_result: Callable[[Message], None], size: int = WORKERS) -> None:
        self.on_result = on_result
        self.size = size
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(size, thread_name_prefix="registrar-worker", initializer=self._mark)
        self._closed = False
        self._on: dict[int, tuple[str, float]] = {}
        """Thread ident -> what that worker is on and since when (monotonic seconds), while it is away."""
        self._on_lock = threading.Lock()

    def _mark(self) -> None:
        self._local.worker = True

    def post(self, work: Callable[[], Message], failed: Callable[[Exception], Message], what: str = "work") -> None:
        """Run ``work`` on a thread and hand its message on; an exception ``e`` hands on ``failed(e)``.
        ``what`` names the work for /healthz ("inspecting container 4fa8fd2b9613").

        Nothing is run once the workers are closed (the daemon is stopping); otherwise work that cannot be
        started raises (RuntimeError: no thread could be started)."""
        if self._closed:
            return
        try:
            self._pool.submit(self._do, work, failed, what)
        except RuntimeError:
            if self._closed:  # closed meanwhile, by another thread
                return
            raise  # a thread that could not be started: the caller reports the work as failed

    def on_worker(self) -> bool:
        """Whether the calling thread is one of these workers."""
        return getattr(self._local, "worker", False)

    def now_on(self, what: str) -> None:
        """On a worker: it is now on ``what``, since now (a write it makes itself once its work is back)."""
        on = (what, time.monotonic())
        with self._on_lock:
            self._on[threading.get_ident()] = on

    def longest(self) -> tuple[str, float] | None:
        """What has kept a worker away longest, and since when (monotonic seconds); None when none is away."""
        with self._on_lock:
            away = list(self._on.values())
        return min(away, key=lambda on: on[1], default=None)

    def _do(self, work: Callable[[], Message], failed: Callable[[Exception], Message], what: str) -> None:
        self.now_on(what)
        try:
            try:
                message = work()
            except Exception as e:  # reported to the loop, which decides (a Docker or Consul error is retried)
                message = failed(e)
            self.on_result(message)
        finally:
            with self._on_lock:
                del self._on[threading.get_ident()]

    def close(self) -> None:
        """Wait for the work in flight (each request has its own timeout); drop what has not started."""
        self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
