"""Docker Swarm: a one-node swarm on a throw-away engine, its own Consul dev agent, registrar on the node.

The module's fixture starts a private dockerd (own socket, data and exec roots, pidfile, bridge; its
``docker_gwbridge`` made beforehand on a bridge of its own, binding host-mode ports to its own loopback
address), puts it in swarm mode, and starts a Consul dev agent on that address. At the end it leaves the
swarm, removes ``docker_gwbridge``, stops both by pid and removes the bridges and mounts: the shared
engine and agent are never touched, except to ``docker save`` the test image. This kernel has no IPVS,
so the routing mesh carries no traffic here: the tests publish in host mode (``--endpoint-mode dnsrr``),
and ingress-mode ports only show that they are not registered.
"""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from registrar.services import INGRESS_ONLY
from tests.fleet import Process, kill_tree, unmount_under
from tests.integration.harness import IMAGE, Consul, Daemon, consul_binary, pings, run_cli, unique_host, wait_until

ADDRESS = "127.0.0.24"
BRIDGE, BRIDGE_SUBNET = "regswarm0", "172.30.25.1/24"
GWBRIDGE, GWBRIDGE_SUBNET = "regswarmgw0", "172.30.26.0/24"
ADDRESS_POOL = "10.124.0.0/16"  # the swarm's overlay subnets, ingress included
SERVICE_LABEL = "com.docker.swarm.service.name"


@dataclass
class Swarm:
    """The node: its engine (CLI and docker-py), its agent, and registrar's arguments to reach both."""

    docker_url: str
    docker: docker.DockerClient
    consul: Consul
    network: str
    """An overlay network of the swarm; its name sorts after ``ingress``."""
    subnet: str

    @property
    def registrar_args(self) -> list[str]:
        return ["--docker-host", self.docker_url, f"consul://{ADDRESS}:8500"]

    def cli(self, *args: str) -> str:
        """Run the docker CLI against this engine; its output."""
        done = subprocess.run(["docker", "-H", self.docker_url, *args], capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"docker {' '.join(args)}: {done.stderr}"
        return done.stdout.strip()

    def tasks(self, service: str) -> list[Any]:
        """The running containers of a swarm service, by name."""
        found = self.docker.containers.list(filters={"label": f"{SERVICE_LABEL}={service}", "status": "running"})
        return sorted(found, key=lambda c: c.name)


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@contextlib.contextmanager
def swarm_node(root: Path) -> Iterator[Swarm]:
    """A started one-node swarm and Consul agent; everything stopped and removed on the way out."""
    socket = root / "docker.sock"
    url = f"unix://{socket}"
    engine = Process(
        "dockerd swarm",
        [
            "dockerd",
            "-H",
            url,
            "--data-root",
            str(root / "data"),
            "--exec-root",
            str(root / "exec"),
            "--pidfile",
            str(root / "docker.pid"),
            "--bridge",
            BRIDGE,
            "--ip",
            ADDRESS,
            "--iptables=false",
        ],
        root / "dockerd.log",
    )
    agent = Process(
        "consul swarm",
        [consul_binary(), "agent", "-dev", "-client", ADDRESS, "-bind", ADDRESS, "-data-dir", str(root / "consul")],
        root / "consul.log",
    )
    consul = Consul(f"http://{ADDRESS}:8500")
    client = docker.DockerClient(base_url=url, version="1.41", timeout=60)
    with contextlib.ExitStack() as stack:
        stack.callback(subprocess.run, ["ip", "link", "del", BRIDGE], capture_output=True, check=False)
        stack.callback(subprocess.run, ["ip", "link", "del", GWBRIDGE], capture_output=True, check=False)
        stack.callback(unmount_under, root)
        stack.callback(kill_tree, [], str(root) + "/")  # the engine's containerd and shims, should any be left
        stack.callback(engine.stop, signal.SIGTERM, 30)
        stack.callback(client.close)
        stack.callback(agent.stop)
        stack.callback(consul.close)
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "addr", "add", BRIDGE_SUBNET, "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        engine.start()
        agent.start()
        wait_until(lambda: pings(socket), "the swarm engine to answer", timeout=60)
        node = Swarm(url, client, consul, f"regswarm-{unique_host('net')}", "")
        tar = root / "image.tar"
        _run("docker", "save", "-o", str(tar), IMAGE)  # from the suite's engine, as tests/fleet.py does
        node.cli("load", "-q", "-i", str(tar))
        # docker_gwbridge made before the swarm is: its Linux bridge has a name of this module's, and
        # host-mode published ports bind this node's address only.
        node.cli(
            "network", "create", "--driver", "bridge", "--subnet", GWBRIDGE_SUBNET,
            "--opt", f"com.docker.network.bridge.name={GWBRIDGE}",
            "--opt", f"com.docker.network.bridge.host_binding_ipv4={ADDRESS}",
            "--opt", "com.docker.network.bridge.enable_icc=false",
            "docker_gwbridge",
        )  # fmt: skip
        stack.callback(node.cli, "network", "rm", "docker_gwbridge")
        node.cli("swarm", "init", "--advertise-addr", ADDRESS, "--listen-addr", f"{ADDRESS}:2377",
                 "--default-addr-pool", ADDRESS_POOL)  # fmt: skip
        stack.callback(node.cli, "swarm", "leave", "--force")
        node.cli("network", "create", "--driver", "overlay", node.network)
        node.subnet = node.cli("network", "inspect", "-f", "{{(index .IPAM.Config 0).Subnet}}", node.network)
        wait_until(consul.up, "the swarm node's Consul agent to elect itself", timeout=30)
        yield node


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swarm]:
    """One throw-away engine in swarm mode and its Consul agent for the module; all removed at its end."""
    with swarm_node(tmp_path_factory.mktemp("swarm")) as node:
        yield node


@pytest.fixture
def service(swarm: Swarm) -> Iterator[Callable[..., str]]:
    """Create swarm services (``docker service create`` arguments), named for this test; removed afterwards."""
    made: list[str] = []

    def create(*args: str) -> str:
        name = unique_host("svc")
        made.append(name)
        # busybox httpd as PID 1 ignores SIGTERM: stop at once.
        swarm.cli("service", "create", "-d", "-q", "--name", name, "--stop-signal", "KILL", *args, IMAGE)
        return name

    yield create
    left = set(swarm.cli("service", "ls", "--format", "{{.Name}}").split())
    for name in made:
        if name in left:  # a test may have removed it
            swarm.cli("service", "rm", name)
    wait_until(lambda: not any(swarm.tasks(n) for n in made), "the test's swarm tasks to go", timeout=30)


@pytest.fixture
def host(swarm: Swarm) -> Iterator[str]:
    """A --hostname of this test alone; its registrations are removed from the node's agent afterwards."""
    name = unique_host()
    yield name
    swarm.consul.clean(name)


def registered(swarm: Swarm, host: str) -> dict[str, tuple[str, str, int, tuple[str, ...]]]:
    """Service ID -> (name, address, port, tags) of what this host's registrar holds on the node's agent."""
    return {
        k: (v["Service"], v["Address"], v["Port"], tuple(v["Tags"] or ()))
        for k, v in swarm.consul.services(host).items()
    }


def test_host_mode_tasks_follow_the_swarm_service(
    swarm: Swarm, service: Callable[..., str], host: str, daemon: Callable[..., Daemon]
) -> None:
    """Host-mode tasks register as published ports under the swarm service's name, and follow scaling and removal."""
    daemon("--hostname", host, *swarm.registrar_args)
    name = service(
        "--replicas", "2", "--endpoint-mode", "dnsrr", "--publish", "mode=host,target=80", "--network", swarm.network,
        "--container-label", "SERVICE_TAGS=swarm", "--env", "SERVICE_TEAM=shop",
    )  # fmt: skip

    def expected() -> dict[str, tuple[str, str, int, tuple[str, ...]]]:
        return {
            f"{host}:{task.name}:80": (name, ADDRESS, int(task.ports["80/tcp"][0]["HostPort"]), ("swarm",))
            for task in swarm.tasks(name)
            if task.ports.get("80/tcp")  # a task being stopped has given its port back
        }

    wait_until(lambda: len(expected()) == 2 and registered(swarm, host) == expected(), "both tasks registered")
    for task in swarm.tasks(name):
        meta = swarm.consul.services(host)[f"{host}:{task.name}:80"]["Meta"]
        assert (meta["swarm-service"], meta["swarm-task"], meta["team"]) == (name, task.name, "shop")
        assert meta["swarm-service-id"] == task.labels["com.docker.swarm.service.id"]
    swarm.cli("service", "scale", "-d", f"{name}=1")
    wait_until(lambda: len(expected()) == 1 and registered(swarm, host) == expected(), "one task left, registered")
    swarm.cli("service", "rm", name)
    wait_until(lambda: registered(swarm, host) == {}, "the service's registrations to go with it")


def test_ingress_only_task_yields_nothing_and_says_why(
    swarm: Swarm, service: Callable[..., str], host: str, daemon: Callable[..., Daemon]
) -> None:
    """A task published in ingress mode only registers nothing without --internal; one info line says why."""
    d = daemon("--hostname", host, *swarm.registrar_args)
    name = service("--publish", "target=80", "--network", swarm.network)
    (task,) = wait_until(lambda: swarm.tasks(name), "the ingress task to run")

    def told() -> list[dict[str, Any]]:
        return [e for e in d.events() if e.get("event") == "container_yields_nothing"]

    wait_until(told, "registrar to say why the task yields nothing")
    assert [(e["container"], e["reason"], e["level"]) for e in told()] == [(task.name, INGRESS_ONLY, "info")]
    assert registered(swarm, host) == {}


def test_internal_task_registers_its_overlay_address(swarm: Swarm, service: Callable[..., str], host: str) -> None:
    """--internal registers a task at its overlay address (not ingress), with its Docker health passing."""
    # Only Docker health is asserted: it is probed inside the container. An HTTP or TCP check from the agent
    # would prove nothing here, as this machine's network accepts a TCP connect to any address.
    name = service(
        "--publish", "target=80", "--network", swarm.network,
        "--health-cmd", "wget -q -O /dev/null http://127.0.0.1/", "--health-interval", "1s",
    )  # fmt: skip
    wait_until(lambda: [t for t in swarm.tasks(name) if t.attrs["State"]["Health"]["Status"] == "healthy"],
               "the task to be healthy", timeout=30)  # fmt: skip
    (task,) = swarm.tasks(name)
    result = run_cli("sync", "--internal", "--hostname", host, *swarm.registrar_args)
    assert result.returncode == 0, result.stderr
    service_id = f"{host}:{task.name}:80"
    overlay = task.attrs["NetworkSettings"]["Networks"][swarm.network]["IPAddress"]
    assert ipaddress.ip_address(overlay) in ipaddress.ip_network(swarm.subnet), (overlay, swarm.subnet)
    assert registered(swarm, host) == {service_id: (name, overlay, 80, ())}
    assert [(c["Name"], c["Status"]) for c in swarm.consul.checks(service_id)] == [("Docker health", "passing")]
