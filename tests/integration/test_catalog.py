"""``--catalog``: this host an external node of a real Consul's catalog, with no agent of its own.

Each test starts a Consul agent of its own (free loopback ports, a node name of its own) and points
``--catalog`` at it; the node registrar writes is another node of that catalog, never the agent's.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.grpc_health import health_server
from tests.integration.harness import IMAGE, Consul, ConsulAgent, free_port, run_cli, unique_host, wait_until

Run = Callable[..., Any]


@pytest.fixture
def catalog(own_consul: ConsulAgent) -> tuple[ConsulAgent, str, str]:
    """The test's own agent, started on free ports: (the agent, its URI, its own node name)."""
    http = free_port()
    agent_node = f"agent-{uuid.uuid4().hex[:8]}"
    ports = {"http": http, "dns": free_port(), "serf_lan": free_port(), "serf_wan": free_port(), "server": free_port()}
    own_consul.configure(f'node_name = "{agent_node}"', client=Consul(f"http://127.0.0.1:{http}"), **ports)
    own_consul.start()
    return own_consul, f"consul://127.0.0.1:{http}", agent_node


def host_port(container: Any) -> int:
    container.reload()
    return int(container.ports["80/tcp"][0]["HostPort"])


def test_sync_registers_the_host_as_an_external_node_and_removes_what_is_gone(
    catalog: tuple[ConsulAgent, str, str], containers: Run
) -> None:
    """sync --catalog writes the host as an external node with the container's service and its check, and
    deregisters the service once the container is gone."""
    agent, uri, _ = catalog
    host, label = unique_host("cat"), f"catalog-{uuid.uuid4().hex[:8]}"
    c = containers(labels={"SERVICE_NAME": label, "SERVICE_CHECK_TCP": "true", label: "1"})
    args = ("--catalog", uri, "--hostname", host, "--ip", "127.0.0.1", "--filter", f"label={label}")
    result = run_cli("sync", *args)
    assert (result.returncode, result.stdout.strip()) == (
        0,
        "registered 1, deregistered 0, failed 0, rejected by Consul 0",
    ), result.stderr

    node = agent.client.get(f"/v1/catalog/node/{host}").json()["Node"]
    assert node["Address"] == "127.0.0.1"
    assert node["Meta"] == {"external-node": "true", "external-source": "registrar", "registrar-host": host}
    [entry] = agent.client.get(f"/v1/catalog/service/{label}").json()
    assert (entry["Node"], entry["ServiceID"], entry["ServicePort"]) == (host, f"{host}:{c.name}:80", host_port(c))
    assert entry["ServiceMeta"]["registrar-host"] == host
    [check] = agent.client.get(f"/v1/health/node/{host}").json()
    assert (check["ServiceID"], check["Status"]) == (f"{host}:{c.name}:80", "critical")
    assert check["Definition"]["TCP"] == f"127.0.0.1:{host_port(c)}"
    assert agent.client.get("/v1/agent/services").json() == {}, "nothing on the agent's own node"

    assert run_cli("plan", *args).stdout.strip() == "in sync: nothing to change"
    c.remove(force=True)
    result = run_cli("sync", *args)
    assert (result.returncode, result.stdout.strip()) == (
        0,
        "registered 0, deregistered 1, failed 0, rejected by Consul 0",
    ), result.stderr
    assert agent.client.get(f"/v1/catalog/service/{label}").json() == []
    assert agent.client.get(f"/v1/health/node/{host}").json() == []


def test_plan_shows_what_sync_would_write_into_the_catalog(
    catalog: tuple[ConsulAgent, str, str], containers: Run
) -> None:
    """plan --catalog prints the registration sync would make on the host's node, and writes nothing."""
    agent, uri, _ = catalog
    host, label = unique_host("cat"), f"catalog-{uuid.uuid4().hex[:8]}"
    c = containers(labels={"SERVICE_NAME": label, label: "1"})
    result = run_cli("plan", "--catalog", uri, "--hostname", host, "--ip", "127.0.0.1", "--filter", f"label={label}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"register    {host}:{c.name}:80  name={label} address=127.0.0.1 port={host_port(c)}"
    ]
    assert agent.client.get(f"/v1/catalog/node/{host}").json() is None


def test_the_name_of_a_node_an_agent_owns_is_refused(catalog: tuple[ConsulAgent, str, str], containers: Run) -> None:
    """--hostname naming the agent's own node: one line, exit 3, and nothing written under that node."""
    agent, uri, agent_node = catalog
    label = f"catalog-{uuid.uuid4().hex[:8]}"
    containers(labels={"SERVICE_NAME": label, label: "1"})
    result = run_cli(
        "sync", "--catalog", uri, "--hostname", agent_node, "--ip", "127.0.0.1", "--filter", f"label={label}"
    )
    assert result.returncode == 3, result.stderr
    assert result.stderr.startswith(f"registrar: --catalog: node '{agent_node}' belongs to a Consul agent")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stdout == ""
    assert agent.client.get(f"/v1/catalog/service/{label}").json() == []
    assert "external-node" not in agent.client.get(f"/v1/catalog/node/{agent_node}").json()["Node"]["Meta"]


@pytest.fixture
def grpc_health() -> Iterator[tuple[int, Any]]:
    """A gRPC server on 127.0.0.1 with the standard health service, SERVING: (its port, the servicer to set)."""
    with health_server() as server:
        yield server


def test_run_runs_a_grpc_check_from_the_host(
    catalog: tuple[ConsulAgent, str, str], docker_client: Any, daemon: Callable[..., Any], grpc_health: tuple[int, Any]
) -> None:
    """run --catalog runs a container's gRPC check itself (grpc.health.v1 Check on the service's address): passing
    while the server says SERVING, critical once it says NOT_SERVING, as the agent would write them."""
    agent, uri, _ = catalog
    port, servicer = grpc_health
    host, label = unique_host("grpc"), f"catalog-{uuid.uuid4().hex[:8]}"
    # On the host's network the service is --ip with the exposed port: the test's own gRPC server answers there.
    labels = {label: "1", "SERVICE_80_IGNORE": "true", f"SERVICE_{port}_NAME": label}
    labels |= {f"SERVICE_{port}_CHECK_GRPC": "true", f"SERVICE_{port}_CHECK_INTERVAL": "1s"}
    api = docker_client.api  # docker-py's containers.run cannot expose a port without publishing it
    created = api.create_container(
        IMAGE, ["sleep", "600"], labels=labels, ports=[port], host_config=api.create_host_config(network_mode="host")
    )
    try:
        api.start(created["Id"])
        daemon("--catalog", uri, "--hostname", host, "--ip", "127.0.0.1", "--filter", f"label={label}")
        passes_then_fails(agent, label, f"127.0.0.1:{port}", servicer)
    finally:
        api.remove_container(created["Id"], force=True)


def passes_then_fails(agent: ConsulAgent, label: str, target: str, servicer: Any) -> None:
    """The service's one check passes, then turns critical once the health service says NOT_SERVING."""
    from grpc_health.v1 import health_pb2

    def check() -> tuple[str, str]:
        found = agent.client.get(f"/v1/health/checks/{label}").json()
        return (found[0]["Status"], found[0]["Output"]) if found else ("", "")

    wait_until(lambda: check() == ("passing", f"gRPC check {target}: success"), "the gRPC check to pass")
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    expected = ("critical", f"gRPC {target} serving status: NOT_SERVING")
    wait_until(lambda: check() == expected, "the gRPC check to turn critical")
