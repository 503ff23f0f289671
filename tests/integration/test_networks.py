"""Container networks under --internal, on the real engine and agent: a container that shares another's
network (``--network container:OWNER``), ``docker network connect`` on a running container, and a
``SERVICE_NETWORK`` the container is not on (data only: no traffic goes to container addresses)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import docker
import pytest

from tests.integration.harness import Consul, Daemon, run_cli, wait_until

Run = Callable[..., Any]
#: A member of another container's network must not run the image's web server: the owner's has the port.
IDLE = ["sleep", "600"]


@pytest.fixture
def networks(docker_client: docker.DockerClient) -> Iterator[Callable[[], str]]:
    """Make user-defined bridge networks; each is removed afterwards (request it before ``containers``)."""
    made: list[Any] = []

    def make() -> str:
        network = docker_client.networks.create(f"registrar-net-{uuid.uuid4().hex[:6]}", driver="bridge")
        made.append(network)
        return str(network.name)

    yield make
    for network in made:
        network.reload()
        for c in network.containers:
            network.disconnect(c, force=True)
        network.remove()


def address_on(c: Any, network: str) -> str:
    c.reload()
    return str(c.attrs["NetworkSettings"]["Networks"][network]["IPAddress"])


def addresses(consul: Consul, host: str) -> dict[str, str]:
    """Service ID -> Address of this host's registrations."""
    return {sid: s["Address"] for sid, s in consul.services(host).items()}


def test_member_of_another_containers_network_has_the_owners_address(
    networks: Callable[[], str], host: str, consul: Consul, containers: Run
) -> None:
    """--internal: a container run with --network container:OWNER is registered at the owner's address."""
    net = networks()
    owner = containers(network=net, ports={})
    member = containers(network_mode=f"container:{owner.id}", ports={}, command=IDLE)
    result = run_cli("sync", "--hostname", host, "--internal")
    assert result.returncode == 0, result.stderr
    assert addresses(consul, host)[f"{host}:{member.name}:80"] == address_on(owner, net)


def test_members_follow_their_owner_when_it_joins_a_network(
    networks: Callable[[], str], host: str, consul: Consul, containers: Run, daemon: Callable[..., Daemon]
) -> None:
    """The owner's network connect re-plans its members: SERVICE_NETWORK=NET finds NET on the owner."""
    first, second = networks(), networks()
    owner = containers(network=first, ports={})
    member = containers(
        network_mode=f"container:{owner.name}", ports={}, command=IDLE, labels={"SERVICE_NETWORK": second}
    )
    d = daemon("--hostname", host, "--internal")
    member_id = f"{host}:{member.name}:80"
    assert member_id not in addresses(consul, host), "the owner is not on that network yet"
    assert any(
        e.get("event") == "container_label_problem" and e.get("key") == "label SERVICE_NETWORK" for e in d.events()
    )
    docker_client = owner.client
    docker_client.networks.get(second).connect(owner)
    expected = address_on(owner, second)
    wait_until(lambda: addresses(consul, host).get(member_id) == expected, f"{member_id} at {expected}")


def test_network_connect_is_followed_without_a_resync(
    networks: Callable[[], str], host: str, consul: Consul, containers: Run, daemon: Callable[..., Daemon]
) -> None:
    """SERVICE_NETWORK names a network the container is not on: one warning, no registration; once it is
    connected, it is registered at its address there; once disconnected, it leaves again."""
    first, second = networks(), networks()
    c = containers(network=first, ports={}, labels={"SERVICE_NETWORK": second})
    d = daemon("--hostname", host, "--internal")
    service_id = f"{host}:{c.name}:80"
    assert service_id not in addresses(consul, host)
    (problem,) = [e for e in d.events() if e.get("event") == "container_label_problem"]
    assert (problem["container"], problem["key"]) == (c.name, "label SERVICE_NETWORK")
    assert second in problem["problem"] and first in problem["problem"]
    network = c.client.networks.get(second)
    network.connect(c)
    expected = address_on(c, second)
    wait_until(lambda: addresses(consul, host).get(service_id) == expected, f"{service_id} at {expected}")
    network.disconnect(c)
    wait_until(lambda: service_id not in addresses(consul, host), f"{service_id} gone after the disconnect")
