"""Every row of SPEC's label, option and check tables, as Consul shows it after a sync."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.harness import IMAGE, Consul, run_cli, wait_until

Run = Callable[..., Any]


def synced(host: str, consul: Consul, *flags: str) -> dict[str, Any]:
    result = run_cli("sync", "--hostname", host, *flags)
    assert result.returncode == 0, result.stderr
    return consul.services(host)


def test_default_name_and_id(host: str, consul: Consul, containers: Run) -> None:
    """No labels: name is the image base name, ID is <hostname>:<container>:<port>."""
    c = containers()
    service = synced(host, consul)[f"{host}:{c.name}:80"]
    assert service["Service"] == "busybox"


def test_multi_port_udp_and_port_scoped_name(host: str, consul: Consul, containers: Run) -> None:
    """Several ports: name-<port>, SERVICE_<port>_NAME as given, UDP with :udp and a udp tag."""
    c = containers(
        labels={"SERVICE_NAME": "app", "SERVICE_8443_NAME": "secure"},
        ports={"80/tcp": ("127.0.0.1", None), "8443/tcp": ("127.0.0.1", None), "53/udp": ("127.0.0.1", None)},
    )
    services = synced(host, consul)
    got = {sid: (s["Service"], s["Tags"]) for sid, s in services.items()}
    assert got == {
        f"{host}:{c.name}:80": ("app-80", []),
        f"{host}:{c.name}:8443": ("secure", []),
        f"{host}:{c.name}:53:udp": ("app-53", ["udp"]),
    }


def test_env_and_label_precedence(host: str, consul: Consul, containers: Run) -> None:
    """A label beats an environment variable; SERVICE_<port>_ beats the general key."""
    c = containers(
        labels={"SERVICE_NAME": "from-label"},
        environment={"SERVICE_NAME": "from-env", "SERVICE_80_TAGS": "env-port", "SERVICE_TAGS": "env-general"},
    )
    service = synced(host, consul)[f"{host}:{c.name}:80"]
    assert (service["Service"], service["Tags"]) == ("from-label", ["env-port"])


def test_service_id_label(host: str, consul: Consul, containers: Run) -> None:
    """SERVICE_ID replaces the default ID."""
    containers(labels={"SERVICE_ID": f"{host}-custom-id"})
    assert list(synced(host, consul)) == [f"{host}-custom-id"]


def test_tags_escaped_comma_and_flag(host: str, consul: Consul, containers: Run) -> None:
    """SERVICE_TAGS with an escaped comma, plus --tags."""
    c = containers(labels={"SERVICE_TAGS": r"blue,a\,b"})
    service = synced(host, consul, "--tags", "prod,eu")[f"{host}:{c.name}:80"]
    assert service["Tags"] == ["blue", "a,b", "prod", "eu"]


def test_ignore(host: str, consul: Consul, containers: Run) -> None:
    """SERVICE_IGNORE drops the container; SERVICE_<port>_IGNORE only that port."""
    containers(labels={"SERVICE_IGNORE": "1"})
    c = containers(
        labels={"SERVICE_81_IGNORE": "true"}, ports={"80/tcp": ("127.0.0.1", None), "81/tcp": ("127.0.0.1", None)}
    )
    assert list(synced(host, consul)) == [f"{host}:{c.name}:80"]


def test_explicit(host: str, consul: Consul, containers: Run) -> None:
    """--explicit registers only containers that name their service."""
    containers()
    named = containers(labels={"SERVICE_NAME": "named"})
    assert list(synced(host, consul, "--explicit")) == [f"{host}:{named.name}:80"]


def test_ip_flag(host: str, consul: Consul, containers: Run) -> None:
    """--ip sets the registered address of published ports."""
    c = containers()
    assert synced(host, consul, "--ip", "127.0.0.2")[f"{host}:{c.name}:80"]["Address"] == "127.0.0.2"


def test_unbound_port_gets_agent_address(host: str, consul: Consul, containers: Run) -> None:
    """A port published on all interfaces without --ip is registered at the agent's address."""
    c = containers(ports={"80/tcp": None})
    service = synced(host, consul)[f"{host}:{c.name}:80"]
    node_address = consul.get("/v1/agent/self").json()["Member"]["Addr"]
    assert service["Address"] in ("", node_address)
    catalog = consul.get(f"/v1/catalog/service/{service['Service']}").json()
    mine = [e for e in catalog if e["ServiceID"] == f"{host}:{c.name}:80"]
    assert mine and (mine[0]["ServiceAddress"] or mine[0]["Address"]) == node_address


def test_internal(host: str, consul: Consul, containers: Run) -> None:
    """--internal registers the container's own address and its exposed port (data only, never probed)."""
    c = containers(ports={})
    c.reload()
    address = c.attrs["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
    service = synced(host, consul, "--internal")[f"{host}:{c.name}:80"]
    assert (service["Address"], service["Port"]) == (address, 80)


def test_use_ip_from_label(host: str, consul: Consul, containers: Run) -> None:
    """--use-ip-from-label takes the address from that container label."""
    c = containers(labels={"com.example.ip": "192.0.2.10"})
    service = synced(host, consul, "--use-ip-from-label", "com.example.ip")[f"{host}:{c.name}:80"]
    assert service["Address"] == "192.0.2.10"


def test_meta_and_rejected_meta(host: str, consul: Consul, containers: Run) -> None:
    """Other SERVICE_ keys become Meta; one Consul would refuse is dropped with a warning; the service stays."""
    c = containers(labels={"SERVICE_VERSION": "1.2", "SERVICE_BAD.KEY": "x", "SERVICE_CHECK_TCP": "true"})
    result = run_cli("sync", "--hostname", host)
    assert result.returncode == 0
    meta = consul.services(host)[f"{host}:{c.name}:80"]["Meta"]
    assert meta["version"] == "1.2" and "bad.key" not in meta and "check_tcp" not in meta
    assert c.name in result.stderr and "SERVICE_BAD.KEY" in result.stderr


def passing(consul: Consul, service_id: str, kind: str) -> bool:
    return any(c["Type"] == kind and c["Status"] == "passing" for c in consul.checks(service_id))


@pytest.mark.parametrize(
    ("labels", "kind"),
    [
        ({"SERVICE_CHECK_HTTP": "/", "SERVICE_CHECK_INTERVAL": "1s"}, "http"),
        ({"SERVICE_CHECK_TCP": "true", "SERVICE_CHECK_INTERVAL": "1s", "SERVICE_CHECK_TIMEOUT": "1s"}, "tcp"),
    ],
)
def test_checks_go_passing(host: str, consul: Consul, containers: Run, labels: dict[str, str], kind: str) -> None:
    """HTTP and TCP checks from labels run on the agent against the published port and pass."""
    c = containers(labels=labels)
    service_id = f"{host}:{c.name}:80"
    synced(host, consul)
    wait_until(lambda: passing(consul, service_id, kind), f"{kind} check of {service_id} passing")


def test_check_options_reach_consul(host: str, consul: Consul, containers: Run) -> None:
    """An HTTPS check with an initial status arrives on the agent in that status."""
    c = containers(
        labels={
            "SERVICE_CHECK_HTTPS": "/health",
            "SERVICE_CHECK_TLS_SKIP_VERIFY": "true",
            "SERVICE_CHECK_INITIAL_STATUS": "warning",
            "SERVICE_CHECK_INTERVAL": "1h",
            "SERVICE_CHECK_DEREGISTER_AFTER": "10m",
        }
    )
    synced(host, consul)
    (check,) = consul.checks(f"{host}:{c.name}:80")
    assert (check["Type"], check["Status"], check["ServiceName"]) == ("http", "warning", "busybox")


def test_ttl_check_label_starts_critical(host: str, consul: Consul, containers: Run) -> None:
    """SERVICE_CHECK_TTL makes a TTL check that is critical until someone passes it."""
    c = containers(labels={"SERVICE_CHECK_TTL": "30s"})
    synced(host, consul)
    (check,) = consul.checks(f"{host}:{c.name}:80")
    assert (check["Type"], check["Status"]) == ("ttl", "critical")


def test_malformed_check_drops_check_only(host: str, consul: Consul, containers: Run) -> None:
    """CHECK_INTERVAL=banana: the service is registered without the check; the warning names container and label."""
    c = containers(labels={"SERVICE_CHECK_HTTP": "/", "SERVICE_CHECK_INTERVAL": "banana"})
    result = run_cli("sync", "--hostname", host)
    assert result.returncode == 0
    assert f"{host}:{c.name}:80" in consul.services(host)
    assert consul.checks(f"{host}:{c.name}:80") == []
    warning = [line for line in result.stderr.splitlines() if "SERVICE_CHECK_INTERVAL" in line]
    assert warning and c.name in warning[0] and "banana" in warning[0]


def test_script_check_needs_opt_in(host: str, consul: Consul, containers: Run) -> None:
    """CHECK_SCRIPT is refused (with a warning) without --allow-script-checks and runs with it."""
    c = containers(labels={"SERVICE_CHECK_SCRIPT": "true $SERVICE_IP $SERVICE_PORT", "SERVICE_CHECK_INTERVAL": "1s"})
    service_id = f"{host}:{c.name}:80"
    result = run_cli("sync", "--hostname", host)
    assert "allow-script-checks" in result.stderr
    assert consul.checks(service_id) == []
    assert run_cli("sync", "--hostname", host, "--allow-script-checks").returncode == 0
    wait_until(lambda: passing(consul, service_id, "script"), "script check passing")


def test_ttl_flag_check_kept_passing(host: str, consul: Consul, containers: Run, daemon: Any) -> None:
    """--ttl gives each service a TTL check that the daemon keeps passing."""
    c = containers()
    daemon("--hostname", host, "--ttl", "3", "--ttl-refresh", "1")
    service_id = f"{host}:{c.name}:80"
    wait_until(lambda: passing(consul, service_id, "ttl"), "registrar's TTL check passing")


def test_grpc_check_registered(host: str, consul: Consul, containers: Run) -> None:
    """SERVICE_CHECK_GRPC makes a gRPC check on the agent (critical here: busybox speaks no gRPC)."""
    c = containers(labels={"SERVICE_CHECK_GRPC": "true", "SERVICE_CHECK_INTERVAL": "1s"})
    service_id = f"{host}:{c.name}:80"
    synced(host, consul)
    wait_until(
        lambda: any(ch["Type"] == "grpc" and ch["Status"] == "critical" for ch in consul.checks(service_id)),
        "a critical gRPC check",
    )


def test_image_given_by_id_is_named_from_compose_label_or_container(
    host: str, consul: Consul, containers: Run, docker_client: Any
) -> None:
    """An image given only by ID (compose v2 does that): named from com.docker.compose.service, else the container."""
    image_id = docker_client.images.get(IMAGE).id
    composed = containers(image=image_id, labels={"com.docker.compose.service": "api"})
    bare = containers(image=image_id)
    services = synced(host, consul)
    assert services[f"{host}:{composed.name}:80"]["Service"] == "api"
    assert services[f"{host}:{bare.name}:80"]["Service"] == bare.name


def test_enable_tag_override(host: str, consul: Consul, containers: Run) -> None:
    """SERVICE_ENABLE_TAG_OVERRIDE=true sets EnableTagOverride on the agent; without it, it stays off."""
    on = containers(labels={"SERVICE_ENABLE_TAG_OVERRIDE": "true"})
    off = containers()
    services = synced(host, consul)
    assert services[f"{host}:{on.name}:80"]["EnableTagOverride"] is True
    assert services[f"{host}:{off.name}:80"]["EnableTagOverride"] is False
    assert "enable_tag_override" not in services[f"{host}:{on.name}:80"]["Meta"]
