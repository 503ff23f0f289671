"""Networks and host addresses: connect and disconnect events, shared networks, an --ip interface looked up again."""

from __future__ import annotations

import copy
import threading
from typing import Any

import pytest
from structlog.testing import capture_logs

from registrar.messages import RESYNC
from registrar.model import DockerEvent
from registrar.observe import inspect_fingerprint, observed_from_inspect
from registrar.settings import Settings
from tests.unit.fakes import MemoryConsul, MemoryDocker
from tests.unit.loop import step_until, stopped
from tests.unit.payloads import container, payload

INTERNAL = Settings(hostname="vm", internal=True)


def on_network(c: dict[str, Any], name: str, address: str) -> dict[str, Any]:
    """``c`` connected to network ``name`` at ``address`` too."""
    c = copy.deepcopy(c)
    c["NetworkSettings"]["Networks"][name] = {"IPAddress": address, "GlobalIPv6Address": ""}
    return c


def test_network_connect_of_a_running_container_is_followed(started: Any) -> None:
    """--internal, SERVICE_NETWORK=backend: registered once ``docker network connect`` puts it there."""
    c = container("internal", labels={"SERVICE_NETWORK": "backend"})
    docker, consul = MemoryDocker(c), MemoryConsul()
    daemon = started(docker, consul, INTERNAL)
    step_until(daemon, daemon.ready.is_set)
    assert consul.registered == {}
    docker.containers[c["Id"]] = on_network(c, "backend", "10.7.0.9")
    docker.emit("connect", c["Id"])
    step_until(daemon, lambda: "vm:rec-internal:80" in consul.registered)
    assert consul.registered["vm:rec-internal:80"]["Address"] == "10.7.0.9"


def test_network_events_around_a_start_and_a_stop_cost_no_inspect(started: Any) -> None:
    """A start's connect comes before its start event, a stop's disconnects after its die: no inspect for them."""
    c = payload("internal")
    docker, consul = MemoryDocker(), MemoryConsul()
    daemon = started(docker, consul, INTERNAL)
    step_until(daemon, daemon.ready.is_set)
    docker.containers[c["Id"]] = c
    for action in ("connect", "start"):
        daemon.inbox.put(DockerEvent(action, c["Id"]))
    step_until(daemon, lambda: "vm:rec-internal:80" in consul.registered)
    assert docker.inspects == 1
    docker.containers[c["Id"]] = stopped(c, 0)
    for action in ("die", "disconnect"):
        daemon.inbox.put(DockerEvent(action, c["Id"], exit_code=0 if action == "die" else None))
    step_until(daemon, lambda: consul.registered == {})
    daemon.inbox.put(DockerEvent("disconnect", c["Id"]))
    step_until(daemon, lambda: daemon.inbox.empty())
    assert docker.inspects == 1


def test_members_follow_the_container_whose_network_they_share(started: Any) -> None:
    """--network container:OWNER: the member is at the owner's address; when the owner's address changes the
    member is inspected again and follows; when the owner stops, the member's service goes (one warning)."""
    member, owner = payload("network_member"), payload("network_owner")
    docker, consul = MemoryDocker(owner, member), MemoryConsul()
    daemon = started(docker, consul, INTERNAL)
    owners = owner["NetworkSettings"]["Networks"]["rec-net2"]["IPAddress"]
    step_until(daemon, lambda: consul.registered.get("vm:rec-member:80", {}).get("Address") == owners)
    moved = copy.deepcopy(owner)
    moved["NetworkSettings"]["Networks"]["rec-net2"]["IPAddress"] = "172.19.0.99"
    docker.containers[owner["Id"]] = moved
    docker.emit("connect", owner["Id"])
    step_until(daemon, lambda: consul.registered.get("vm:rec-member:80", {}).get("Address") == "172.19.0.99")
    with capture_logs() as logs:
        docker.containers[owner["Id"]] = stopped(moved, 0)
        docker.emit("die", owner["Id"], exit_code=0)
        step_until(daemon, lambda: "vm:rec-member:80" not in consul.registered)
    problems = [(e["container"], e["key"]) for e in logs if e["event"] == "container_label_problem"]
    assert problems == [("rec-member", "network container:e8d3d87cf589")]


def test_an_interface_address_is_looked_up_again_on_each_full_reconcile(
    started: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--ip eth1: when eth1's address changes, the next full reconcile registers every service at the new one."""
    interfaces = {"eth1": ["10.5.0.7"]}
    monkeypatch.setattr("registrar.host_address.host_interfaces", lambda: interfaces)
    web = payload("web")
    docker, consul = MemoryDocker(web), MemoryConsul()
    daemon = started(docker, consul, Settings(hostname="vm", ip="10.5.0.7", ip_from="eth1"))
    step_until(daemon, lambda: consul.registered.get("vm:rec-web:80", {}).get("Address") == "10.5.0.7")
    interfaces["eth1"] = ["10.5.0.8"]
    with capture_logs() as logs:
        daemon.inbox.put(RESYNC)
        step_until(daemon, lambda: consul.registered.get("vm:rec-web:80", {}).get("Address") == "10.5.0.8")
    changed = [e for e in logs if e["event"] == "host_address_changed"]
    assert [(e["ip"], e["was_ip"]) for e in changed] == [("10.5.0.8", "10.5.0.7")]
    interfaces.clear()
    with capture_logs() as logs:
        daemon.inbox.put(RESYNC)
        step_until(daemon, lambda: any(e["event"] == "host_address_unresolved" for e in logs))
        step_until(daemon, lambda: any(e["event"] == "reconcile_done" for e in logs))
    assert consul.registered["vm:rec-web:80"]["Address"] == "10.5.0.8", "the last address is kept"


def test_an_inspect_in_flight_when_the_address_changes_is_made_again(
    started: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--ip eth1 changes while an inspect built with the old address is in flight, and the listing comes
    back after it: the container is inspected again, and registered at the new address."""
    interfaces = {"eth1": ["10.5.0.7"]}
    monkeypatch.setattr("registrar.host_address.host_interfaces", lambda: interfaces)
    web = payload("web")
    docker, consul = MemoryDocker(web), MemoryConsul()
    daemon = started(docker, consul, Settings(hostname="vm", ip="10.5.0.7", ip_from="eth1"))

    def address() -> Any:
        return consul.registered.get("vm:rec-web:80", {}).get("Address")

    step_until(daemon, lambda: address() == "10.5.0.7")
    built, inspect_gate, listing_gate = threading.Event(), threading.Event(), threading.Event()
    real_build, real_list = observed_from_inspect, docker.list_containers

    def build_then_wait(*args: Any, **kwargs: Any) -> Any:
        cached = real_build(*args, **kwargs)  # with the address of now
        built.set()
        inspect_gate.wait(5)
        return cached

    def list_when_released() -> list[dict[str, Any]]:
        listing_gate.wait(5)
        return real_list()

    monkeypatch.setattr("registrar.executor.observed_from_inspect", build_then_wait)
    monkeypatch.setattr(docker, "list_containers", list_when_released)
    # The fake's summaries carry no ports: make the listing's fingerprints a real engine's, so that an
    # unchanged container is not inspected again by the listing.
    monkeypatch.setattr(
        "registrar.desired.summary_fingerprint", lambda s: inspect_fingerprint(docker.containers[s["Id"]])
    )
    docker.emit("health_status: healthy", web["Id"])
    assert built.wait(5)
    interfaces["eth1"] = ["10.5.0.8"]
    daemon.inbox.put(RESYNC)
    step_until(daemon, lambda: daemon.desired.listing, idle=False)
    inspect_gate.set()  # the inspect built with the old address is back before the listing
    step_until(daemon, lambda: daemon.desired.containers[web["Id"]].fingerprint != 0 and not daemon.desired.inspecting)
    listing_gate.set()
    step_until(daemon, lambda: address() == "10.5.0.8")
