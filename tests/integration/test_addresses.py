"""IPv4 and IPv6 addresses as Consul's TaggedAddresses, on the real engine and agent (data only: no
traffic is sent to any container address)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import docker
import pytest

from tests.integration.harness import Consul, run_cli

Run = Callable[..., Any]


def synced(host: str, consul: Consul, *flags: str) -> dict[str, Any]:
    result = run_cli("sync", "--hostname", host, *flags)
    assert result.returncode == 0, result.stderr
    return consul.services(host)


def bindings(c: Any) -> dict[str, int]:
    """Host IP -> host port of the container's port 80, as Docker reports them."""
    c.reload()
    return {b["HostIp"]: int(b["HostPort"]) for b in c.attrs["NetworkSettings"]["Ports"]["80/tcp"]}


def test_port_on_ipv4_and_ipv6_loopback_is_one_service(host: str, consul: Consul, containers: Run) -> None:
    """-p 127.0.0.1::80 -p [::1]::80: one service, IPv4 primary, each family tagged with its host port (plan too)."""
    c = containers(ports={"80/tcp": [("127.0.0.1", None), ("::1", None)]})
    ports = bindings(c)
    plan = run_cli("plan", "--hostname", host).stdout
    line = next(x for x in plan.splitlines() if f"{host}:{c.name}:80" in x)
    assert line.endswith(f"address=127.0.0.1 port={ports['127.0.0.1']} lan_ipv6=::1:{ports['::1']}")
    services = synced(host, consul)
    assert list(services) == [f"{host}:{c.name}:80"]
    service = services[f"{host}:{c.name}:80"]
    assert (service["Address"], service["Port"]) == ("127.0.0.1", ports["127.0.0.1"])
    assert service["TaggedAddresses"]["lan_ipv4"] == {"Address": "127.0.0.1", "Port": ports["127.0.0.1"]}
    assert service["TaggedAddresses"]["lan_ipv6"] == {"Address": "::1", "Port": ports["::1"]}


def test_ipv6_flag_makes_ipv6_primary(host: str, consul: Consul, containers: Run) -> None:
    """--ipv6: the primary Address/Port is the IPv6 binding; the IPv4 one stays tagged."""
    c = containers(ports={"80/tcp": [("127.0.0.1", None), ("::1", None)]})
    ports = bindings(c)
    service = synced(host, consul, "--ipv6")[f"{host}:{c.name}:80"]
    assert (service["Address"], service["Port"]) == ("::1", ports["::1"])
    assert service["TaggedAddresses"]["lan_ipv4"] == {"Address": "127.0.0.1", "Port": ports["127.0.0.1"]}


@pytest.fixture
def dual_stack(docker_client: docker.DockerClient) -> Iterator[str]:
    """A user-defined network with an IPv6 ULA subnet, removed afterwards (request it before ``containers``,
    so that the containers on it are removed first)."""
    name = f"registrar-v6-{uuid.uuid4().hex[:6]}"
    subnet = f"fd00:{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}::/64"
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet)])
    network = docker_client.networks.create(name, driver="bridge", enable_ipv6=True, ipam=ipam)
    try:
        yield name
    finally:
        network.remove()


def test_internal_dual_stack_network(dual_stack: str, host: str, consul: Consul, containers: Run) -> None:
    """--internal --network NAME: the container's IPv4 and global IPv6 there, both tagged; --ipv6 picks IPv6."""
    c = containers(network=dual_stack, ports={})
    c.reload()
    net = c.attrs["NetworkSettings"]["Networks"][dual_stack]
    v4, v6 = net["IPAddress"], net["GlobalIPv6Address"]
    assert v4 and v6, "the test network is dual-stack"
    service = synced(host, consul, "--internal", "--network", dual_stack)[f"{host}:{c.name}:80"]
    assert (service["Address"], service["Port"]) == (v4, 80)
    assert service["TaggedAddresses"]["lan_ipv6"] == {"Address": v6, "Port": 80}
    assert service["TaggedAddresses"]["lan_ipv4"] == {"Address": v4, "Port": 80}
    service = synced(host, consul, "--internal", "--network", dual_stack, "--ipv6")[f"{host}:{c.name}:80"]
    assert (service["Address"], service["Port"]) == (v6, 80)
