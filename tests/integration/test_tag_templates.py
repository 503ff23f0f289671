"""Tags as Go templates against the real engine and agent: what ``registrar sync`` registers and warns."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.integration.harness import Consul, run_cli


def test_label_and_flag_templates_registered(host: str, consul: Consul, containers: Callable[..., Any]) -> None:
    """A SERVICE_TAGS template and a --tags template are rendered against the container's inspect, and Consul
    holds their tags (registrator's documented examples)."""
    c = containers(
        labels={
            "SERVICE_NAME": "templated",
            "SERVICE_TAGS": '{{ mIndex "com.amazonaws.ecs.task-arn" .Config.Labels | splitIndex -1 "/" }},plain',
            "com.amazonaws.ecs.task-arn": "arn:aws:ecs:region:123456789012:task/368f4403-0ee4",
        },
        environment=["SERVICE_80_CHECK_INTERVAL=15s", "OTHER=1"],
    )
    flag = '{{ strSlice .ID 0 12 }},{{ matchAllElements "^SERVICE_" .Config.Env | join "+" | toLower }}'
    result = run_cli("sync", "--hostname", host, "--filter", f"name=^/{c.name}$", "--tags", flag)
    assert result.returncode == 0, result.stderr
    service = consul.services(host)[f"{host}:{c.name}:80"]
    assert service["Tags"] == ["368f4403-0ee4", "plain", c.id[:12], "service_80_check_interval=15s"]


def test_broken_label_template_warns_and_registers(host: str, consul: Consul, containers: Callable[..., Any]) -> None:
    """A SERVICE_TAGS template that does not parse: one warning on stderr naming the container and the key;
    the service is registered without those tags, and sync exits 0."""
    c = containers(labels={"SERVICE_NAME": "broken-tags", "SERVICE_TAGS": "{{ .Name "})
    result = run_cli("sync", "--hostname", host, "--filter", f"name=^/{c.name}$", "--tags", "always")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "container_label_problem" in line]
    assert len(warnings) == 1, result.stderr
    assert c.name in warnings[0] and "SERVICE_TAGS" in warnings[0] and "unclosed action" in warnings[0]
    assert consul.services(host)[f"{host}:{c.name}:80"]["Tags"] == ["always"]


def test_broken_flag_template_is_a_usage_error(host: str, consul: Consul) -> None:
    """A --tags template that does not parse stops sync at start: one line naming the flag, exit 2."""
    result = run_cli("sync", "--hostname", host, "--tags", "{{ nosuch .ID }}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "registrar: --tags: not a valid template: function 'nosuch' not defined"
    ]
    assert consul.services(host) == {}
