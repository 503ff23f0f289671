"""Recorded ``docker inspect`` and Consul payloads, and variants of them for table-driven tests."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent / "payloads"


@cache
def _load(name: str) -> Any:
    return json.loads((HERE / f"{name}.json").read_text())


def payload(name: str) -> Any:
    """A fresh copy of a recorded payload (``web``, ``multi``, ``agent_services`` ...)."""
    return copy.deepcopy(_load(name))


def container(
    base: str = "plain",
    labels: dict[str, str] | None = None,
    env: list[str] | None = None,
    ports: dict[str, list[dict[str, str]] | None] | None = None,
    image: str | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """A recorded container with its labels, env, published ports, image or name replaced."""
    c: dict[str, Any] = payload(base)
    if labels is not None:
        c["Config"]["Labels"] = labels
    if env is not None:
        c["Config"]["Env"] = env
    if ports is not None:
        c["NetworkSettings"]["Ports"] = ports
        c["Config"]["ExposedPorts"] = {k: {} for k in ports}
    if image is not None:
        c["Config"]["Image"] = image
    if name is not None:
        c["Name"] = "/" + name
    return c


def published(*specs: str) -> dict[str, list[dict[str, str]] | None]:
    """``published("80/tcp=127.0.0.1:32768", "53/udp=")`` -> NetworkSettings.Ports."""
    out: dict[str, list[dict[str, str]] | None] = {}
    for spec in specs:
        key, _, binding = spec.partition("=")
        if binding:
            host, _, port = binding.rpartition(":")
            out[key] = [{"HostIp": host, "HostPort": port}]
        else:
            out[key] = None
    return out
