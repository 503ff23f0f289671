"""Docker Swarm tasks, on inspect payloads recorded from a one-node swarm (Docker 20.10).

``swarm_task_host``: task ``shop.1.utohke…`` of service ``shop``, published ``mode=host,target=80``
(host port 32768 on 0.0.0.0 and ::) and ``target=8081`` in ingress mode, on the overlay ``shopnet``
(10.0.2.3) and ``ingress`` (10.0.0.6), with ``--container-label SERVICE_TAGS=swarm`` and
``--env SERVICE_VERSION=1``. ``swarm_task_ingress``: task ``api.1.k86…`` of service ``api``, port 80
published in ingress mode only, on ``shopnet`` (10.0.2.5) and ``ingress`` (10.0.0.8).
"""

from __future__ import annotations

from typing import Any

from structlog.testing import capture_logs

from registrar.desired import DesiredState
from registrar.effects import Log
from registrar.observe import observed_from_inspect
from registrar.services import INGRESS_ONLY, services_from_container
from registrar.settings import Settings
from tests.unit.payloads import payload

S = Settings(hostname="node1")
INTERNAL = Settings(hostname="node1", internal=True)
SHOP_TASK = "shop.1.utohke7q5k3iq6al59bkdvj7v"
API_TASK = "api.1.k86kapzp6k1u388j27jx5x5hd"


def with_labels(name: str, **labels: str) -> dict[str, Any]:
    c: dict[str, Any] = payload(name)
    c["Config"]["Labels"].update(labels)
    return c


def test_host_mode_task_registers_under_its_swarm_service() -> None:
    """A task's host-mode port registers as a published port, named after its swarm service, with its labels and env."""
    (s,) = services_from_container(payload("swarm_task_host"), S).services
    assert (s.id, s.name, s.address, s.port) == (f"node1:{SHOP_TASK}:80", "shop", "", 32768)
    assert s.tags == ("swarm",)
    assert dict(s.meta)["version"] == "1"


def test_task_meta_names_its_swarm_service_and_task() -> None:
    """Meta says which swarm service (name and ID) and which task the registration is."""
    (s,) = services_from_container(payload("swarm_task_host"), S).services
    meta = s.to_consul()["Meta"]
    assert meta["swarm-service"] == "shop"
    assert meta["swarm-service-id"] == "kuak98dfb8klzb4jsf71tya74"
    assert meta["swarm-task"] == SHOP_TASK


def test_service_name_label_beats_the_swarm_service_name() -> None:
    """SERVICE_NAME (a --container-label) names the service, as for any container."""
    (s,) = services_from_container(with_labels("swarm_task_host", SERVICE_NAME="shop-web"), S).services
    assert s.name == "shop-web"


def test_ingress_only_task_yields_nothing_and_says_why() -> None:
    """A task whose ports are published in ingress mode only yields nothing, and the result says why."""
    result = services_from_container(payload("swarm_task_ingress"), S)
    assert result.services == ()
    assert result.note == INGRESS_ONLY
    assert "ingress" in INGRESS_ONLY and "mode=host" in INGRESS_ONLY and "--internal" in INGRESS_ONLY


def test_ingress_only_task_is_one_info_line() -> None:
    """The daemon logs that reason once, at info level, naming the task (inspected twice); no warning."""
    desired, task = DesiredState(S), payload("swarm_task_ingress")
    with capture_logs() as logs:
        for _ in range(2):
            observed = observed_from_inspect(task, S)
            desired.record(task["Id"], observed)
    assert observed.services == () and logs == [], "the desired state logs nothing itself: it returns log lines"
    assert desired.logged == [Log("info", "container_yields_nothing", {"container": API_TASK, "reason": INGRESS_ONLY})]


def test_no_note_when_something_registers_or_nothing_is_published() -> None:
    """No note for a task with a host-mode port, an ingress task under --internal, a plain container with no port."""
    assert services_from_container(payload("swarm_task_host"), S).note == ""
    assert services_from_container(payload("swarm_task_ingress"), INTERNAL).note == ""
    plain = payload("plain")
    plain["NetworkSettings"]["Ports"] = {"80/tcp": None}
    assert services_from_container(plain, S).note == ""


def test_internal_task_address_is_on_its_overlay_not_ingress() -> None:
    """With --internal a task registers its address on its overlay network (not ingress, which sorts first) and port."""
    (s,) = services_from_container(payload("swarm_task_ingress"), INTERNAL).services
    assert (s.id, s.name, s.address, s.port) == (f"node1:{API_TASK}:80", "api", "10.0.2.5", 80)
    assert s.tagged_addresses == (("lan_ipv4", "10.0.2.5", 80),)


def test_internal_task_network_chosen_by_label_or_flag() -> None:
    """SERVICE_NETWORK, else --network, picks the task's network, even ingress."""
    chosen = services_from_container(with_labels("swarm_task_ingress", SERVICE_NETWORK="ingress"), INTERNAL)
    assert chosen.services[0].address == "10.0.0.8"
    flag = Settings(hostname="node1", internal=True, network="ingress")
    assert services_from_container(payload("swarm_task_ingress"), flag).services[0].address == "10.0.0.8"


def test_internal_task_on_ingress_alone_gets_its_ingress_address() -> None:
    """A task on no network but ingress registers its ingress address under --internal: it has no other."""
    c = payload("swarm_task_ingress")
    del c["NetworkSettings"]["Networks"]["shopnet"]
    assert services_from_container(c, INTERNAL).services[0].address == "10.0.0.8"


def test_swarm_meta_counts_against_consuls_64_keys() -> None:
    """A task's swarm Meta keys leave less room for its own: never more than 64 keys reach Consul."""
    c = with_labels("swarm_task_host", **{f"SERVICE_K{i:03}": "v" for i in range(100)})
    result = services_from_container(c, S)
    meta = result.services[0].to_consul()["Meta"]
    assert len(meta) == 64
    assert meta["swarm-task"] == SHOP_TASK
    assert len(result.problems) == 100 + 1 - (64 - 4 - 3)  # SERVICE_VERSION takes a place too


def test_task_label_cannot_replace_swarm_meta() -> None:
    """A SERVICE_SWARM-SERVICE label does not replace the swarm Meta: one problem naming it."""
    result = services_from_container(with_labels("swarm_task_host", **{"SERVICE_SWARM-SERVICE": "fake"}), S)
    assert dict(result.services[0].meta)["swarm-service"] == "shop"
    assert [(p.container, p.key) for p in result.problems] == [(SHOP_TASK, "label SERVICE_SWARM-SERVICE")]
