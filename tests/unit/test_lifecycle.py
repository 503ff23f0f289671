"""Signals, the wait for Docker and Consul at start, and the handlers left behind."""

from __future__ import annotations

import io
import json
import os
import queue
import signal
import subprocess
import sys
import threading

import pytest
import structlog
from structlog.testing import capture_logs

from registrar import logs
from registrar.errors import DockerError
from registrar.lifecycle import Shutdown, capture_signals, retry_at_start
from registrar.messages import Message

# The main thread drains the daemon's inbox in a tight loop (the path a signal handler wakes) while another
# thread sends SIGTERM, one at a time: the next once the last was handled and the loop has turned since. A
# handler that takes a lock the drain holds (as queue.Queue.put does) deadlocks this within a few signals
# (each lands wherever the loop was); the other thread then says where it stopped and ends the process (exit 3).
REPLAY = """
import os, queue, signal, sys, threading
from registrar.daemon import Daemon
from registrar.lifecycle import Shutdown, capture_signals
from registrar.settings import Settings
from registrar.messages import RESYNC
from tests.unit.fakes import MemoryConsul, MemoryDocker

SIGNALS, STUCK = int(sys.argv[1]), 20.0
sys.setswitchinterval(0.0005)  # the threads take turns more often: the signals come faster, not differently
shutdown = Shutdown()
daemon = Daemon(MemoryDocker(), MemoryConsul(), Settings(hostname="vm"), shutdown=shutdown)
forced = queue.SimpleQueue()  # the handler's force_exit: put takes no lock
turned, done = threading.Event(), threading.Event()
exits = []  # each forced exit's code, as the handler asked for it

def stuck(what, sent):
    print(f"{what} after {sent} signal(s)", file=sys.stderr, flush=True)
    os._exit(3)

def hammer():
    for sent in range(1, SIGNALS + 1):
        os.kill(os.getpid(), signal.SIGTERM)
        if sent == 1:  # the first requests the stop
            if not shutdown.wait(STUCK):
                stuck("the signal handler never returned", sent)
        else:  # the others force the exit
            try:
                exits.append(forced.get(timeout=STUCK))
            except queue.Empty:
                stuck("the signal handler never returned", sent)
        turned.clear()
        if not turned.wait(STUCK):
            stuck("the loop stopped turning", sent)
    done.set()

with capture_signals(shutdown, force_exit=forced.put):
    threading.Thread(target=hammer, daemon=True).start()
    turns = 0
    while not done.is_set():
        daemon.inbox.put(RESYNC)
        daemon._receive(0)
        turns += 1
        turned.set()
print(SIGNALS, exits.count(128 + signal.SIGTERM), turns, shutdown.requested)
"""
SIGNALS = 300


def test_signal_handler_never_blocks_the_loop() -> None:
    """300 SIGTERMs while the loop drains its inbox, each once the loop has turned since the last: all handled."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run(
        [sys.executable, "-c", REPLAY, str(SIGNALS)], capture_output=True, text=True, timeout=120, cwd=root, check=False
    )
    assert result.returncode == 0, result.stderr
    sent, forced, turns, requested = result.stdout.split()
    assert (int(sent), int(forced), requested) == (SIGNALS, SIGNALS - 1, "True")
    assert int(turns) >= SIGNALS


def test_second_signal_forces_exit_and_handlers_are_restored() -> None:
    """The first SIGTERM requests a stop; a second forces the exit (128+signum); old handlers come back."""
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    shutdown, forced = Shutdown(), list[int]()
    with capture_signals(shutdown, force_exit=forced.append):
        os.kill(os.getpid(), signal.SIGTERM)
        assert shutdown.requested and forced == []
        os.kill(os.getpid(), signal.SIGINT)
        assert forced == [128 + signal.SIGINT]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_handlers_restored_when_the_block_raises() -> None:
    """An exception inside capture_signals still puts the previous handlers back."""
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RuntimeError), capture_signals(Shutdown()):
        raise RuntimeError("boom")
    assert signal.getsignal(signal.SIGTERM) == before


def test_retry_at_start_logs_each_attempt_then_gives_up() -> None:
    """Docker unreachable at start: one docker_unreachable warning per attempt, then one error line."""

    def refuse() -> None:
        raise DockerError("cannot reach the Docker engine at unix:///nope.sock: No such file")

    with capture_logs() as logs, pytest.raises(DockerError) as failure:
        retry_at_start("docker", refuse, DockerError, 3, 1, Shutdown())
    assert [(e["event"], e["attempt"]) for e in logs] == [("docker_unreachable", n) for n in (1, 2, 3)]
    assert str(failure.value) == (
        "gave up after 4 attempt(s): cannot reach the Docker engine at unix:///nope.sock: No such file"
    )


class WaitedOn(queue.SimpleQueue[Message]):
    """A queue that says when a read of it begins (``waiting``)."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()

    def get(self, block: bool = True, timeout: float | None = None) -> Message:
        self.waiting.set()
        return super().get(block, timeout)


def test_stop_requested_while_waiting_at_start_returns_none() -> None:
    """A stop requested while registrar waits a minute between attempts ends the wait at once, without an error."""
    shutdown, wakes = Shutdown(), WaitedOn()
    shutdown._waiters[0] = wakes  # what Shutdown.wait blocks on, once it has seen no request
    calls: list[int] = []
    results: list[object] = []

    def refuse() -> None:
        calls.append(1)
        raise DockerError("connection refused")

    waiter = threading.Thread(
        target=lambda: results.append(retry_at_start("docker", refuse, DockerError, -1, 60_000, shutdown))
    )
    waiter.start()
    assert wakes.waiting.wait(10), "no wait after the attempt"
    shutdown.request()
    waiter.join(10)
    assert not waiter.is_alive(), "the wait did not end on the request"
    assert results == [None] and calls == [1]


def test_json_logs_carry_tracebacks_inside_the_line() -> None:
    """In JSON, an error with a traceback is one line whose ``exception`` field holds the frames."""
    stream = io.StringIO()
    logs.configure("json", "info", stream)
    try:
        empty: dict[str, int] = {}
        try:
            empty["missing"]
        except KeyError as e:
            structlog.get_logger("registrar").error("loop_error", exc_info=e)
    finally:
        structlog.reset_defaults()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["event"] == "loop_error"
    assert record["exception"][0]["exc_type"] == "KeyError"
    assert record["exception"][0]["frames"], "the traceback's frames are in the line"
