"""The edges: signals at any moment, waiting for Docker at start, exact Consul errors, a renamed host."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from registrar.consul_sink import ConsulSink
from registrar.docker_source import DockerSource
from registrar.reconcile import owned_filter
from registrar.settings import ConsulTarget, Settings
from tests.integration.harness import Consul, ConsulAgent, run_cli, unique_host

Run = Callable[..., Any]
DOCKER_SOCKET = "/var/run/docker.sock"


def test_sigterm_at_random_moments_during_bursts(host: str, consul: Consul, containers: Run, daemon: Any) -> None:
    """20 times: SIGTERM at a random moment of a burst of starts; each exit is 0 within 5 s, the agent consistent.

    The moment is after a random number (0 to 3) of the burst's registrations, so it falls before, amid
    or after the writes, wherever the loop happens to be.
    """
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    made: list[Any] = []
    with ThreadPoolExecutor(4) as pool:
        for round_ in range(20):
            d = daemon("--hostname", host, ready=False)
            burst = [pool.submit(containers) for _ in range(3)]
            d.wait_for_event("registrar_started")
            registrations = rng.randrange(4)
            if registrations:
                d.wait_for_event("service_registered", count=registrations)
            d.signal(signal.SIGTERM)
            try:
                code = d.proc.wait(5)
            except Exception as e:
                raise AssertionError(f"round {round_} (seed {seed}): no exit within 5 s after SIGTERM") from e
            assert code == 0, f"round {round_} (seed {seed}): exit {code}\n{d.log_path.read_text()}"
            made += [f.result() for f in burst]
            running = {f"{host}:{c.name}:80" for c in made}
            left = set(consul.services(host))
            assert left <= running, f"round {round_} (seed {seed}): registrations of no container: {left - running}"
    assert run_cli("sync", "--hostname", host).returncode == 0
    assert set(consul.services(host)) == {f"{host}:{c.name}:80" for c in made}


def test_the_subscription_hears_what_happened_just_before_it(containers: Run) -> None:
    """A container started just before registrar subscribes to events is heard of on the stream.

    Docker answers ``GET /events`` before it subscribes (moby's getEvents flushes the head first), so
    a container started in between was missed by the stream, and by a listing taken just before it.
    """
    source = DockerSource(Settings(hostname="edge"), os.environ)
    deadline = threading.Timer(20, source.close_events)  # ends the stream: no hang if the event never comes
    try:
        c = containers()
        stream = source.events()
        deadline.start()
        heard = next((e.action for e in stream if e.container_id == c.id), None)
    finally:
        deadline.cancel()
        source.close()
    assert heard is not None, f"no event of {c.name}, started just before the subscription"


def test_a_read_of_an_unchanged_agent_is_told_apart_by_its_digest(host: str, consul: Consul) -> None:
    """read_services(digest): None when the agent answers what that digest was made of, the services once one
    more is registered (the real agent answers the same bytes for the same services)."""
    sink = ConsulSink(ConsulTarget())
    try:
        digest, services = sink.read_services()
        assert services is not None
        assert sink.read_services(digest) == (digest, None)
        consul.register({"ID": f"{host}:one:80", "Name": "one", "Port": 80})
        changed, services = sink.read_services(digest)
        assert changed != digest and services is not None and f"{host}:one:80" in services
    finally:
        consul.deregister(f"{host}:one:80")
        sink.close()


def test_a_read_keeps_only_each_services_meta_and_services_keeps_all(host: str, consul: Consul) -> None:
    """read_services keeps of each service only its Meta, all the loop reads (a parsed read of 500 services
    held 1.7 MiB at its peak, most of it fields registrar never reads); services() (explain) keeps all."""
    service_id = f"{host}:slim:80"
    meta = {"external-source": "registrar", "registrar-host": host}
    consul.register({"ID": service_id, "Name": "slim", "Port": 80, "Tags": ["a"], "Meta": meta})
    sink = ConsulSink(ConsulTarget())
    try:
        _, read = sink.read_services()
        assert read is not None and read[service_id] == {"Meta": meta}
        assert sink.services()[service_id]["Tags"] == ["a"]
    finally:
        consul.deregister(service_id)
        sink.close()


def test_a_restarted_agent_is_told_by_its_answer_on_the_kept_connections(own_consul: ConsulAgent) -> None:
    """A read whose answer is the last one's is not parsed; after the agent restarted (a dev agent forgets its
    services) the same sink reads again without an error (its kept connections are replaced) and the
    answer, without the service, is parsed."""
    own_consul.start()
    client = own_consul.client
    client.session.put(client.url + "/v1/agent/service/register", json={"Name": "kept", "Port": 80}).raise_for_status()
    sink = ConsulSink(ConsulTarget(port=ConsulAgent.PORTS["http"]))
    try:
        digest, services = sink.read_services()
        assert services is not None and "kept" in services
        assert sink.read_services(unless=digest)[1] is None, "the same answer: not parsed"
        own_consul.stop()
        own_consul.start()
        assert sink.read_services(unless=digest)[1] == {}, "the restarted agent's answer: parsed"
    finally:
        sink.close()


def test_a_filtered_read_holds_only_the_owned_hosts_registrations(host: str, consul: Consul) -> None:
    """read_services(filter=owned_filter(hosts)): the agent answers registrar's registrations of those hosts
    only, not a hand-made service nor another host's (the periodic read parses no one else's services)."""
    meta = {"external-source": "registrar"}
    services = {
        f"{host}:mine:80": {**meta, "registrar-host": host},
        f"{host}-old:gone:80": {**meta, "registrar-host": f"{host}-old"},
        f"{host}-other:theirs:80": {**meta, "registrar-host": f"{host}-other"},
        f"{host}-handmade": {"registrar-host": host},
    }
    for service_id, service_meta in services.items():
        consul.register({"ID": service_id, "Name": "filtered", "Port": 80, "Meta": service_meta})
    sink = ConsulSink(ConsulTarget())
    try:
        _, read = sink.read_services(filter=owned_filter((host, f"{host}-old")))
        assert read is not None and sorted(read) == sorted([f"{host}:mine:80", f"{host}-old:gone:80"])
    finally:
        for service_id in services:
            consul.deregister(service_id)
        sink.close()


def test_sigterm_while_waiting_for_consul_exits_zero(host: str, daemon: Any, own_consul: ConsulAgent) -> None:
    """A SIGTERM that arrives while registrar still waits for Consul at start: exit 0, not 5."""
    d = daemon("--hostname", host, "--retry-attempts", "-1", "--retry-interval", "100", own_consul.uri, ready=False)
    d.wait_for_event("consul_unreachable", count=2)
    d.signal(signal.SIGTERM)
    assert d.proc.wait(5) == 0


def test_docker_socket_that_appears_later_is_waited_for(
    host: str, consul: Consul, containers: Run, daemon: Any, tmp_path: Path
) -> None:
    """Docker's socket missing at start (a proxy not up yet): registrar logs each attempt, then follows it."""
    socket_path = tmp_path / "docker.sock"
    c = containers()
    d = daemon(
        "--hostname", host, "--docker-host", f"unix://{socket_path}", "--retry-interval", "100", ready=False
    )  # fmt: skip
    d.wait_for_event("docker_unreachable", count=2)
    socket_path.symlink_to(DOCKER_SOCKET)
    d.wait_for_event("reconcile_done")
    assert set(consul.services(host)) == {f"{host}:{c.name}:80"}


def test_sigterm_while_waiting_for_docker_exits_zero(host: str, daemon: Any, tmp_path: Path) -> None:
    """A SIGTERM while registrar waits for Docker at start: exit 0."""
    d = daemon("--hostname", host, "--docker-host", f"unix://{tmp_path}/none.sock", "--retry-attempts", "-1",
               "--retry-interval", "100", ready=False)  # fmt: skip
    d.wait_for_event("docker_unreachable", count=2)
    d.signal(signal.SIGTERM)
    assert d.proc.wait(5) == 0


class DeregisterAgent(BaseHTTPRequestHandler):
    """A stand-in agent on port 14040 holding one stale registration; deregistrations answer ``status``."""

    host: ClassVar[str] = ""
    status: ClassVar[int] = 200

    def do_GET(self) -> None:
        meta = {"external-source": "registrar", "registrar-host": self.host, "registrar-container": "0123456789ab"}
        stale = {"ID": f"{self.host}:web:8404", "Service": "web", "Port": 8404, "Meta": meta}
        self._send(200, json.dumps({stale["ID"]: stale}).encode())

    def do_PUT(self) -> None:
        status = self.status if "/deregister/" in self.path else 200
        self._send(status, b"Unknown service ID" if status == 404 else b"rpc error: agent is shutting down")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def agent_14040(host: str) -> Iterator[type[DeregisterAgent]]:
    DeregisterAgent.host = host
    server = ThreadingHTTPServer(("127.0.0.1", 14040), DeregisterAgent)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield DeregisterAgent
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("status", "code", "summary"), [(500, 1, "deregistered 0, failed 1"), (404, 0, "deregistered 1")]
)
def test_deregistration_outcome_follows_the_status_code(
    host: str, agent_14040: type[DeregisterAgent], status: int, code: int, summary: str
) -> None:
    """A 500 on deregistering vm:web:8404 at port 14040 is a failure (exit 1); a 404 means already gone (exit 0)."""
    agent_14040.status = status
    result = run_cli("sync", "--hostname", host, "--retry-attempts", "0", "consul://127.0.0.1:14040")
    assert result.returncode == code, result.stdout + result.stderr
    assert summary in result.stdout


def test_forget_host_removes_a_renamed_hosts_registrations(
    host: str, consul: Consul, containers: Callable[..., Any]
) -> None:
    """After a rename, plan --forget-host OLD lists the old host's registrations; sync removes them and only them."""
    old, other = unique_host("old"), unique_host("other")
    try:
        c = containers()
        assert run_cli("sync", "--hostname", old).returncode == 0
        assert run_cli("sync", "--hostname", other).returncode == 0
        consul.register({"ID": f"{host}-handmade", "Name": "handmade", "Port": 1})
        plan = run_cli("plan", "--hostname", host, "--forget-host", old)
        assert f"deregister  {old}:{c.name}:80  (its host is forgotten (--forget-host))" in plan.stdout
        assert set(consul.services(old)) == {f"{old}:{c.name}:80"}, "plan changed nothing"
        result = run_cli("sync", "--hostname", host, "--forget-host", old)
        assert result.returncode == 0, result.stderr
        assert consul.services(old) == {}
        assert set(consul.services(host)) == {f"{host}:{c.name}:80"}
        assert set(consul.services(other)) == {f"{other}:{c.name}:80"}
        assert f"{host}-handmade" in consul.get("/v1/agent/services").json()
    finally:
        consul.deregister(f"{host}-handmade")
        consul.clean(old)
        consul.clean(other)


def test_forget_host_refuses_this_host(host: str) -> None:
    """--forget-host naming this very host is a usage error: one line, exit 2, nothing removed."""
    result = run_cli("sync", "--hostname", host, "--forget-host", host)
    assert result.returncode == 2
    assert result.stderr.strip() == f"registrar: --forget-host {host}: that is this host itself"
