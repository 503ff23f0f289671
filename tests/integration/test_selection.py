"""Which address, which containers, several registrars on one host, Meta for every service: --ip and
--wan-ip naming an interface or a range (on an interface the test makes), --filter, --instance and
--meta, against the real engine and agent (addresses registered as data; no traffic goes to them)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.integration.harness import Consul, Daemon, run_cli, wait_until

Run = Callable[..., Any]


@pytest.fixture
def interface() -> Iterator[tuple[str, Callable[[str], None]]]:
    """An interface at 10.213.7.5/24, removed afterwards: (its name, a function that readdresses it). A bridge
    with no port: this kernel has no dummy interfaces, and an address on a bridge is an address of the host."""
    name = f"regd{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True, capture_output=True)
    current = ["10.213.7.5/24"]

    def address(cidr: str) -> None:
        subprocess.run(["ip", "addr", "del", current[0], "dev", name], check=True, capture_output=True)
        subprocess.run(["ip", "addr", "add", cidr, "dev", name], check=True, capture_output=True)
        current[0] = cidr

    try:
        subprocess.run(["ip", "addr", "add", current[0], "dev", name], check=True, capture_output=True)
        subprocess.run(["ip", "link", "set", name, "up"], check=True, capture_output=True)
        yield name, address
    finally:
        subprocess.run(["ip", "link", "del", name], check=False, capture_output=True)


def synced(host: str, consul: Consul, *flags: str) -> dict[str, Any]:
    result = run_cli("sync", "--hostname", host, *flags)
    assert result.returncode == 0, result.stderr
    return consul.services(host)


def test_ip_and_wan_ip_name_an_interface_or_a_range(
    interface: tuple[str, Any], host: str, consul: Consul, containers: Run
) -> None:
    """--ip IFACE and --ip CIDR register the host's address there; --wan-ip adds Consul's wan addresses."""
    name, _ = interface
    c = containers()
    service_id = f"{host}:{c.name}:80"
    for ip in (name, "10.213.7.0/24"):
        assert synced(host, consul, "--ip", ip)[service_id]["Address"] == "10.213.7.5"
    service = synced(host, consul, "--wan-ip", name)[service_id]
    assert service["TaggedAddresses"]["wan"]["Address"] == service["TaggedAddresses"]["wan_ipv4"]["Address"]
    assert (service["TaggedAddresses"]["wan"]["Address"], service["Address"]) == ("10.213.7.5", "127.0.0.1")


def test_an_interface_that_does_not_exist_is_one_line_and_exit_3(host: str) -> None:
    """--ip with an interface name this host lacks: a configuration error, one line, exit 3."""
    result = run_cli("sync", "--hostname", host, "--ip", "regnosuch0")
    assert result.returncode == 3
    assert result.stderr.startswith("registrar: --ip regnosuch0: no interface of that name on this host")
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_daemon_follows_the_interfaces_address(
    interface: tuple[str, Any], host: str, consul: Consul, containers: Run, daemon: Callable[..., Daemon]
) -> None:
    """--ip IFACE --resync 1: the start line names the address; a new address on the interface is registered."""
    name, readdress = interface
    c = containers()
    d = daemon("--hostname", host, "--ip", name, "--resync", "1")
    (started,) = [e for e in d.events() if e.get("event") == "registrar_started"]
    assert started["ip"] == "10.213.7.5"
    service_id = f"{host}:{c.name}:80"
    wait_until(lambda: consul.services(host).get(service_id, {}).get("Address") == "10.213.7.5", "registered")
    readdress("10.213.7.6/24")
    wait_until(lambda: consul.services(host)[service_id]["Address"] == "10.213.7.6", "registered at the new address")


def test_filter_selects_a_compose_project_and_a_recreated_container_that_no_longer_matches_leaves(
    host: str, consul: Consul, containers: Run
) -> None:
    """--filter label=com.docker.compose.project=shop: only shop's containers; recreated without it, it leaves."""
    project = {"com.docker.compose.project": "shop", "com.docker.compose.service": "cart"}
    shop, other = containers(labels=project), containers(labels={"com.docker.compose.project": "pay"})
    flags = ("--filter", "label=com.docker.compose.project=shop")
    services = synced(host, consul, *flags)
    assert list(services) == [f"{host}:{shop.name}:80"]
    assert services[f"{host}:{shop.name}:80"]["Meta"]["compose-project"] == "shop", f"not {other.name}'s pay"
    assert services[f"{host}:{shop.name}:80"]["Meta"]["compose-service"] == "cart"
    name = shop.name
    shop.remove(force=True)
    containers(name=name)  # recreated under the same name, without the project's label
    assert synced(host, consul, *flags) == {}


def test_two_instances_share_a_host_and_an_agent(host: str, consul: Consul, containers: Run) -> None:
    """--instance a and b on one host and agent: each registers, resyncs and cleans up only its own."""
    a, b = containers(labels={"team": "a"}), containers(labels={"team": "b"})
    synced(host, consul, "--instance", "a", "--filter", "label=team=a")
    services = synced(host, consul, "--instance", "b", "--filter", "label=team=b")
    assert sorted(services) == sorted([f"{host}:a:{a.name}:80", f"{host}:b:{b.name}:80"])
    assert services[f"{host}:b:{b.name}:80"]["Meta"]["registrar-instance"] == "b"
    a.remove(force=True)
    assert sorted(synced(host, consul, "--instance", "b", "--filter", "label=team=b")) == sorted(services)
    no_instance = synced(host, consul, "--filter", "label=team=none")
    assert sorted(no_instance) == sorted(services), "no --instance: none of them is its own"
    assert list(synced(host, consul, "--instance", "a", "--filter", "label=team=a")) == [f"{host}:b:{b.name}:80"]


def test_meta_flag_on_every_service_and_a_containers_own_key_beats_it(
    host: str, consul: Consul, containers: Run
) -> None:
    """--meta env=prod: on every service, with the image; SERVICE_ENV=dev on a container beats it."""
    plain, own = containers(), containers(labels={"SERVICE_ENV": "dev"})
    services = synced(host, consul, "--meta", "env=prod")
    assert services[f"{host}:{plain.name}:80"]["Meta"]["env"] == "prod"
    assert services[f"{host}:{own.name}:80"]["Meta"]["env"] == "dev"
    assert services[f"{host}:{plain.name}:80"]["Meta"]["image"] == plain.attrs["Config"]["Image"]
