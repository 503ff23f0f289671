"""Where the milliseconds of one start go: registrar's real Daemon, in this process, against the real
engine and agent, with a timestamp at each hop of a container's way from its start event to its
registration. Prints a table (median and p90 of each stage); asserts nothing.

    bench/run-profile.sh [--samples N]      (brings up the engine and agent as bench/run.sh does)
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import docker
import structlog

from registrar.consul_sink import ConsulSink
from registrar.containers import Learned
from registrar.daemon import Daemon
from registrar.docker_source import DockerSource
from registrar.model import DockerEvent, Service
from registrar.reconciler import Done
from registrar.settings import Settings

IMAGE = os.environ.get("REGISTRAR_TEST_IMAGE", "registrar-test/busybox:2")
STAGES = (
    ("Docker: start event -> registrar's event thread", "event", "received"),
    ("event thread -> the loop takes it", "received", "taken"),
    ("the loop -> an inspect worker begins", "taken", "inspect_begun"),
    ("inspect (GET /containers/<id>/json)", "inspect_begun", "inspected"),
    ("translate + back to the loop", "inspected", "learned"),
    ("the loop plans -> a write worker begins", "learned", "register_begun"),
    ("register (PUT /v1/agent/service/register)", "register_begun", "registered"),
    ("back to the loop (the log line is written before)", "registered", "logged"),
)


class Stamps:
    """Per container ID, when it reached each hop (wall clock, seconds)."""

    def __init__(self) -> None:
        self.at: dict[str, dict[str, float]] = defaultdict(dict)

    def stamp(self, cid: str, hop: str, when: float | None = None) -> bool:
        self.at[cid].setdefault(hop, when if when is not None else time.time())
        return True


def instrument(daemon: Daemon, source: DockerSource, sink: ConsulSink, stamps: Stamps) -> None:
    """Wrap the hops of the start path (instance attributes only: registrar's code is unchanged)."""
    events: Callable[[], Iterator[DockerEvent]] = source.events
    inspect, register = source.inspect, sink.register
    view, reconciler = daemon.reconciler.view, daemon.reconciler
    take, back = view.take, reconciler.back

    def events_stamped() -> Iterator[DockerEvent]:
        for event in events():
            if event.action == "start":
                stamps.stamp(event.container_id, "received")
            yield event

    def take_stamped(events: Iterable[DockerEvent]) -> None:
        events = list(events)
        for event in events:
            if event.action == "start":
                stamps.stamp(event.container_id, "taken")
        take(events)

    def inspect_stamped(container_id: str) -> dict[str, Any] | None:
        stamps.stamp(container_id, "inspect_begun")
        try:
            return inspect(container_id)
        finally:
            stamps.stamp(container_id, "inspected")

    def back_stamped(message: Any) -> Any:
        error = back(message)
        if isinstance(message, Learned):
            stamps.stamp(message.container_id, "learned")
        elif isinstance(message, Done) and message.key[0] == "service":
            cid = by_service.get(message.key[1])
            if cid:
                stamps.stamp(cid, "logged")
        return error

    by_service: dict[str, str] = {}

    def register_stamped(service: Service) -> None:
        by_service[service.id] = service.container_id
        stamps.stamp(service.container_id, "register_begun")
        register(service)
        stamps.stamp(service.container_id, "registered")

    source.events = events_stamped  # type: ignore[method-assign]
    source.inspect = inspect_stamped  # type: ignore[method-assign]
    sink.register = register_stamped  # type: ignore[method-assign]
    view.take = take_stamped  # type: ignore[method-assign]
    reconciler.back = back_stamped  # type: ignore[method-assign]


def start(host: str, i: int) -> str:
    """``docker run -d`` of one test container; its ID."""
    api = docker.APIClient(version="auto")
    config = api.create_host_config(port_bindings={80: ("127.0.0.1", None)})
    created = api.create_container(IMAGE, name=f"{host}-{i}", host_config=config, ports=[80], stop_signal="SIGKILL")
    api.start(created["Id"])
    return str(created["Id"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--parallel", type=int, default=1, help="starts at a time (1: one at a time, with pauses)")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only
    host = f"profile-{uuid.uuid4().hex[:6]}"
    settings = Settings(hostname=host)
    source, sink = DockerSource(settings, os.environ), ConsulSink(settings.consul)
    daemon = Daemon(source, sink, settings)
    stamps = Stamps()
    instrument(daemon, source, sink, stamps)
    client = docker.from_env()
    api = client.api
    bench_events = api.events(decode=True, filters={"type": "container", "event": "start"})
    threading.Thread(
        target=lambda: [stamps.stamp(e["id"], "event", e["timeNano"] / 1e9) for e in bench_events], daemon=True
    ).start()
    loop = threading.Thread(target=daemon.run)
    loop.start()
    made = []
    try:
        while not daemon.ready.wait(0.05):
            pass
        if args.parallel == 1:
            for i in range(args.samples):
                made.append(start(host, i))
                deadline = time.monotonic() + 10
                while "logged" not in stamps.at[made[-1]] and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(0.2)
        else:  # from other processes, as a deploy would: this one's threads are registrar's alone
            with ProcessPoolExecutor(args.parallel, mp_context=multiprocessing.get_context("spawn")) as pool:
                made += pool.map(start, [host] * args.samples, range(args.samples))
        deadline = time.monotonic() + 30
        while any("logged" not in stamps.at[c] for c in made) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        daemon.stop()
        loop.join()
        for cid in made:
            api.remove_container(cid, force=True)
        for service_id in sink.services():
            if service_id.startswith(host + ":"):
                sink.deregister(service_id)
        bench_events.close()
    complete = [at for cid, at in stamps.at.items() if cid in made and len(at) == 9]
    how = "one at a time" if args.parallel == 1 else f"{args.parallel} at a time"
    print(f"container starts, {len(complete)} samples, {how}: median / p90 of each hop (ms)")
    total = [(at["logged"] - at["event"]) * 1000 for at in complete]
    for what, a, b in STAGES:
        spans = sorted((at[b] - at[a]) * 1000 for at in complete)
        print(f"  {what:<52} {statistics.median(spans):6.2f} {spans[int(len(spans) * 0.9)]:6.2f}")
    total.sort()
    print(f"  {'start event -> back in the loop, end to end':<52} {statistics.median(total):6.2f} "
          f"{total[int(len(total) * 0.9)]:6.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
