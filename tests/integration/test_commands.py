"""registrar sync / plan / --version against the real engine and agent."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.integration.harness import Consul, run_cli


def host_port(container: Any, key: str = "80/tcp") -> int:
    container.reload()
    return int(container.ports[key][0]["HostPort"])


def test_sync_registers_and_exits_zero(host: str, consul: Consul, containers: Callable[..., Any]) -> None:
    """sync registers a labelled container as registrator would and exits 0."""
    c = containers(labels={"SERVICE_NAME": "web", "SERVICE_TAGS": "a,b"})
    result = run_cli("sync", "--hostname", host)
    assert result.returncode == 0, result.stderr
    service = consul.services(host)[f"{host}:{c.name}:80"]
    assert (service["Service"], service["Address"], service["Port"]) == ("web", "127.0.0.1", host_port(c))
    assert service["Tags"] == ["a", "b"]
    assert service["Meta"]["external-source"] == "registrar"


def test_plan_prints_and_changes_nothing(host: str, consul: Consul, containers: Callable[..., Any]) -> None:
    """plan prints one line per service ID it would register, registers nothing, and --json is parseable."""
    c = containers(labels={"SERVICE_NAME": "planned"})
    result = run_cli("plan", "--hostname", host)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if f"{host}:{c.name}:80" in line]
    assert lines and lines[0].startswith("register")
    assert consul.services(host) == {}
    rows = json.loads(run_cli("plan", "--json", "--hostname", host).stdout)
    mine = [r for r in rows if r["id"] == f"{host}:{c.name}:80"]
    assert mine[0]["action"] == "register" and mine[0]["service"]["Name"] == "planned"


def test_plan_after_sync_is_in_sync(host: str, containers: Callable[..., Any]) -> None:
    """After sync, plan has nothing to change for this host."""
    containers(labels={"SERVICE_NAME": "steady"})
    assert run_cli("sync", "--hostname", host).returncode == 0
    assert run_cli("plan", "--hostname", host).stdout.strip() == "in sync: nothing to change"


def test_stale_registration_removed_and_others_kept(host: str, consul: Consul) -> None:
    """sync removes this host's registrations whose container is gone, and leaves hand-made ones."""
    stale = {"external-source": "registrar", "registrar-host": host, "registrar-container": "0123456789ab"}
    consul.register({"ID": f"{host}:gone:80", "Name": "gone", "Port": 1, "Meta": stale})
    consul.register({"ID": f"{host}-handmade", "Name": "handmade", "Port": 2})
    try:
        plan = run_cli("plan", "--hostname", host).stdout
        assert f"deregister  {host}:gone:80" in plan
        assert run_cli("sync", "--hostname", host).returncode == 0
        ids = set(consul.get("/v1/agent/services").json())
        assert f"{host}:gone:80" not in ids
        assert f"{host}-handmade" in ids
    finally:
        consul.deregister(f"{host}-handmade")


def test_sync_fails_when_consul_unreachable(host: str) -> None:
    """sync against an agent that does not answer exits non-zero with one line naming it."""
    result = run_cli("sync", "--hostname", host, "--retry-attempts", "0", "consul://127.0.0.1:1")
    assert result.returncode == 5
    assert result.stderr.strip().startswith("registrar: gave up after 1 attempt(s)")
    assert "127.0.0.1:1" in result.stderr and "Traceback" not in result.stderr


def test_sync_fails_when_docker_unreachable(host: str, tmp_path: Any) -> None:
    """An unreadable Docker socket: a docker_unreachable warning per attempt, then one line and exit 4."""
    args = ["--retry-attempts", "2", "--retry-interval", "10", "--log-format", "json"]
    result = run_cli("sync", "--hostname", host, *args, "--docker-host", f"unix://{tmp_path}/none.sock")
    assert result.returncode == 4
    *warnings, last = result.stderr.strip().splitlines()
    assert [json.loads(w)["event"] for w in warnings] == ["docker_unreachable"] * 2
    assert last.startswith(
        f"registrar: gave up after 3 attempt(s): cannot reach the Docker engine at unix://{tmp_path}"
    )


def test_version() -> None:
    """registrar --version prints the version."""
    result = run_cli("--version")
    assert result.returncode == 0 and "registrar, version" in result.stdout


def test_explain_a_registered_container(host: str, consul: Consul, containers: Callable[..., Any]) -> None:
    """After sync, explain NAME shows the published port's service, its exact body, and 'registered'; exit 0."""
    c = containers(labels={"SERVICE_NAME": "web", "SERVICE_TAGS": "a"})
    assert run_cli("sync", "--hostname", host).returncode == 0
    service_id = f"{host}:{c.name}:80"
    result = run_cli("explain", c.name, "--hostname", host)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"container {c.name} ({c.id[:12]}): running"
    assert f"  80/tcp  127.0.0.1:{host_port(c)}  -> {service_id}" in lines
    assert "  label SERVICE_NAME=web  (general)  used on 80/tcp" in lines
    assert f"  {service_id}  registered: the agent holds this exact registration" in lines
    explained = json.loads(run_cli("explain", "--json", c.id, "--hostname", host).stdout)
    (body,) = explained["services"]
    held = consul.services(host)[service_id]
    assert (body["ID"], body["Name"], body["Port"], body["Tags"]) == (service_id, "web", held["Port"], held["Tags"])
    assert body["Meta"] == held["Meta"]
    assert explained["agent"] == [
        {"id": service_id, "state": "registered", "detail": "the agent holds this exact registration"}
    ]


def test_explain_an_ignored_port_and_a_bad_label(host: str, consul: Consul, containers: Callable[..., Any]) -> None:
    """explain names the key that ignores a port and the key of each problem; nothing synced: 'missing'."""
    ports = {"80/tcp": ("127.0.0.1", None), "81/tcp": ("127.0.0.1", None)}
    labels = {"SERVICE_NAME": "app", "SERVICE_81_IGNORE": "1", "SERVICE_CHECK_INTERVAL": "banana"}
    c = containers(labels=labels, ports=ports)
    result = run_cli("explain", c.name, "--hostname", host)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"  81/tcp  127.0.0.1:{host_port(c, '81/tcp')}  ignored by label SERVICE_81_IGNORE" in lines
    problems = lines[lines.index("problems:") + 1 : lines.index("services:")]
    assert problems == [
        "  label SERVICE_CHECK_INTERVAL: check dropped: 'banana' is not a positive duration like 10s, 1m30s or 500ms"
    ]
    assert f"  {host}:{c.name}:80  missing: not on the agent; sync would register it" in lines
    assert consul.services(host) == {}


def test_explain_no_such_container(host: str) -> None:
    """explain of a name no container has: one line on stderr, nothing on stdout, exit 1."""
    name = f"{host}-nothing"
    result = run_cli("explain", name, "--hostname", host)
    assert (result.returncode, result.stdout, result.stderr) == (1, "", f"registrar: no such container: {name}\n")
