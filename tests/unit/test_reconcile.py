"""The pure reconcile core: ownership, plan, and that it does no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import registrar.reconcile
from registrar.model import Deregister, Owned, Register, Service
from registrar.reconcile import desired_state, kept_ids, owned_services, plan
from tests.unit.payloads import payload


def svc(service_id: str, tags: tuple[str, ...] = (), container: str = "c1") -> Service:
    return Service(id=service_id, name="web", port=80, tags=tags, container_id=container, container_name=container)


def owned(service: Service) -> Owned:
    return Owned(service.id, service.digest, service.container_id[:12])


def test_owned_services_only_this_hosts() -> None:
    """Only registrations marked as registrar's and this host's are owned; hand-made and other hosts' are not."""
    agent = payload("agent_services")
    assert sorted(agent) == ["handmade", "other:web:80", "vm:smoke-web:80"]
    assert list(owned_services(agent, "vm")) == ["vm:smoke-web:80"]
    assert list(owned_services(agent, "other")) == ["other:web:80"]
    assert owned_services(agent, "nobody") == {}


def test_plan_registers_missing_and_changed_and_deregisters_stale() -> None:
    """Missing or changed services are registered, unowned-by-desire ones deregistered, sorted by ID."""
    a, b, c = svc("a"), svc("b"), svc("c")
    changed_b = svc("b", tags=("new",))
    actual = {"b": owned(b), "c": owned(c), "z": Owned("z", "d", "c9")}
    assert plan({"a": a, "b": changed_b, "c": c}, actual) == [Register(a), Register(changed_b), Deregister("z")]


def test_plan_in_sync_is_empty() -> None:
    """An unchanged service is never written again."""
    a = svc("a")
    assert plan({"a": a}, {"a": owned(a)}) == []


def test_plan_keeps_what_it_is_told_to_keep() -> None:
    """Registrations of kept containers (exited non-zero under on-success) are not deregistered."""
    actual = {"x": Owned("x", "d", "aaaaaaaaaaaa"), "y": Owned("y", "d", "bbbbbbbbbbbb")}
    keep = kept_ids(actual, {"aaaaaaaaaaaa0000"})
    assert keep == {"x"}
    assert plan({}, actual, keep) == [Deregister("y")]


def test_duplicate_ids_across_containers_first_wins() -> None:
    """Two containers claiming one service ID: the first keeps it, the second is a problem."""
    desired, problems = desired_state([[svc("x", container="c1")], [svc("x", container="c2")]])
    assert desired["x"].container_id == "c1"
    assert [(p.container, p.key) for p in problems] == [("c2", "SERVICE_ID")]


def test_core_imports_no_io() -> None:
    """reconcile.py, model.py, services.py, checks.py and metadata.py import nothing that does I/O."""
    banned = {"docker", "consul", "requests", "os", "time", "socket", "subprocess", "threading", "structlog"}
    package = Path(registrar.reconcile.__file__).parent
    for name in ("reconcile", "model", "services", "checks", "metadata", "settings"):
        tree = ast.parse((package / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not roots & banned, f"{name}.py imports {roots & banned}"
