"""Which services a container yields: registrator's rules, on recorded docker inspect payloads."""

from __future__ import annotations

from typing import Any

import pytest

from registrar.container import image_base_name
from registrar.model import Health, Service, Tagged
from registrar.services import services_from_container
from registrar.settings import Settings
from tests.unit.payloads import container, payload, published

S = Settings(hostname="host1")


def only(c: dict[str, Any], settings: Settings = S) -> Service:
    services = services_from_container(c, settings).services
    assert len(services) == 1, services
    return services[0]


def ids(c: dict[str, Any], settings: Settings = S) -> list[str]:
    return [s.id for s in services_from_container(c, settings).services]


def problems(c: dict[str, Any], settings: Settings = S) -> list[tuple[str, str]]:
    return [(p.container, p.key) for p in services_from_container(c, settings).problems]


@pytest.mark.parametrize(
    ("image", "name"),
    [
        ("gliderlabs/foo:1", "foo"),
        ("foo", "foo"),
        ("registry.example:5000/team/foo:2.1", "foo"),
        ("foo@sha256:abcdef", "foo"),
        ("registry:5000/foo:1@sha256:abcdef", "foo"),
    ],
)
def test_default_name_is_image_base_name(image: str, name: str) -> None:
    """The default service name is the image's base name without registry, tag or digest."""
    assert image_base_name(image) == name
    c = container("plain", image=image, ports=published("80/tcp=127.0.0.1:30000"))
    assert only(c).name == name


def test_recorded_web_container() -> None:
    """A recorded container with labels yields the service registrator would register."""
    s = only(payload("web"))
    assert (s.id, s.name, s.address, s.port) == ("host1:rec-web:80", "web", "127.0.0.1", 32768)
    assert s.tags == ("a", "b,c")
    assert dict(s.meta)["version"] == "1.2"
    assert [c.http for c in s.checks] == ["http://127.0.0.1:32768/"]


def test_multi_port_names_ids_and_udp() -> None:
    """Several ports: -<port> appended to names unless port-scoped; UDP adds :udp to the ID and a udp tag."""
    services = {s.id: s for s in services_from_container(payload("multi"), S).services}
    assert sorted(services) == ["host1:rec-multi:443", "host1:rec-multi:53:udp", "host1:rec-multi:80"]
    assert services["host1:rec-multi:80"].name == "busybox-80"
    assert services["host1:rec-multi:443"].name == "secure"
    assert services["host1:rec-multi:53:udp"].name == "busybox-53"
    assert services["host1:rec-multi:53:udp"].tags == ("udp",)
    assert dict(services["host1:rec-multi:80"].meta)["region"] == "eu"


@pytest.mark.parametrize(
    ("labels", "env", "expected_name"),
    [
        ({"SERVICE_NAME": "lab"}, ["SERVICE_NAME=env"], "lab"),
        ({}, ["SERVICE_NAME=env"], "env"),
        ({"SERVICE_80_NAME": "port"}, ["SERVICE_NAME=env"], "port"),
        ({"SERVICE_NAME": ""}, [], "busybox"),
    ],
)
def test_name_precedence(labels: dict[str, str], env: list[str], expected_name: str) -> None:
    """Port-scoped beats general, label beats env, empty counts as unset."""
    c = container("plain", labels=labels, env=env, ports=published("80/tcp=127.0.0.1:30000"))
    assert only(c).name == expected_name


def test_general_name_gets_port_suffix_in_a_group() -> None:
    """SERVICE_NAME with several ports gives name-<port> (registrator's rule)."""
    c = container("plain", labels={"SERVICE_NAME": "app"}, ports=published("80/tcp=0.0.0.0:1", "443/tcp=0.0.0.0:2"))
    assert sorted(s.name for s in services_from_container(c, S).services) == ["app-443", "app-80"]


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"SERVICE_ID": "custom"}, ["custom"]),
        ({"SERVICE_80_ID": "custom80"}, ["custom80"]),
        ({"SERVICE_ID": "a/b"}, ["host1:rec-plain:80"]),
        ({"SERVICE_ID": "bell\x07"}, ["host1:rec-plain:80"]),
    ],
)
def test_service_id(labels: dict[str, str], expected: list[str]) -> None:
    """SERVICE_ID replaces the default ID; an unusable one falls back to the default."""
    c = container("plain", labels=labels, ports=published("80/tcp=127.0.0.1:30000"))
    assert ids(c) == expected


def test_one_service_id_for_several_ports_stays_unique() -> None:
    """A general SERVICE_ID on a multi-port container gets :<port> so registrations do not collide."""
    c = container("plain", labels={"SERVICE_ID": "x"}, ports=published("80/tcp=0.0.0.0:1", "81/tcp=0.0.0.0:2"))
    assert ids(c) == ["x:80", "x:81"]


def test_slash_in_id_is_reported() -> None:
    """An ID with a slash is one problem naming the container and the label."""
    c = container("plain", labels={"SERVICE_ID": "a/b"}, ports=published("80/tcp=127.0.0.1:30000"))
    assert problems(c) == [("rec-plain", "label SERVICE_ID")]


def test_tags_from_labels_and_flag() -> None:
    """Tags: the label's list, then --tags, without duplicates."""
    c = container("plain", labels={"SERVICE_TAGS": r"a,b\,c,shared"}, ports=published("80/tcp=127.0.0.1:1"))
    assert only(c, Settings(hostname="h", tags=("shared", "prod"))).tags == ("a", "b,c", "shared", "prod")


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"SERVICE_IGNORE": "true"}, []),
        ({"SERVICE_IGNORE": ""}, ["host1:rec-plain:80", "host1:rec-plain:81"]),
        ({"SERVICE_81_IGNORE": "yes"}, ["host1:rec-plain:80"]),
    ],
)
def test_ignore(labels: dict[str, str], expected: list[str]) -> None:
    """Any non-empty IGNORE drops the container, or only that port when port-scoped."""
    c = container("plain", labels=labels, ports=published("80/tcp=0.0.0.0:1", "81/tcp=0.0.0.0:2"))
    assert ids(c) == expected


def test_explicit_needs_a_name() -> None:
    """--explicit registers only ports that have a SERVICE_NAME or SERVICE_<port>_NAME."""
    explicit = Settings(hostname="host1", explicit=True)
    c = container("plain", labels={"SERVICE_81_NAME": "b"}, ports=published("80/tcp=0.0.0.0:1", "81/tcp=0.0.0.0:2"))
    assert ids(c, explicit) == ["host1:rec-plain:81"]
    assert ids(payload("plain"), explicit) == []


@pytest.mark.parametrize(
    ("binding", "settings", "address"),
    [
        ("127.0.0.1:30000", S, "127.0.0.1"),
        ("0.0.0.0:30000", S, ""),
        (":::30000", S, ""),
        ("0.0.0.0:30000", Settings(hostname="h", ip="10.1.2.3"), "10.1.2.3"),
        ("127.0.0.1:30000", Settings(hostname="h", ip="10.1.2.3"), "10.1.2.3"),
    ],
)
def test_published_address(binding: str, settings: Settings, address: str) -> None:
    """--ip wins, else the binding's own host IP, else empty (the agent's address)."""
    c = container("plain", ports=published(f"80/tcp={binding}"))
    s = only(c, settings)
    assert (s.address, s.port) == (address, 30000)


def test_ipv4_binding_preferred() -> None:
    """Of Docker's 0.0.0.0 and :: bindings for one port, one service is made, from the IPv4 one."""
    c = container("plain")
    c["NetworkSettings"]["Ports"] = {
        "80/tcp": [{"HostIp": "::", "HostPort": "30001"}, {"HostIp": "0.0.0.0", "HostPort": "30000"}]
    }
    assert only(c).port == 30000


def test_no_published_port_yields_nothing() -> None:
    """An exposed but unpublished port yields no service without --internal."""
    assert services_from_container(payload("plain"), S).services == ()


def test_internal_uses_container_address_and_exposed_ports() -> None:
    """--internal registers the container's network address and every exposed port."""
    internal = Settings(hostname="host1", internal=True)
    services = services_from_container(payload("internal"), internal).services
    assert [(s.name, s.address, s.port) for s in services] == [
        ("inner-80", "172.18.0.2", 80),
        ("inner-9000", "172.18.0.2", 9000),
    ]


def test_use_ip_from_label() -> None:
    """--use-ip-from-label takes the address from that label when it is set."""
    settings = Settings(hostname="h", use_ip_from_label="com.example.ip")
    c = container("plain", labels={"com.example.ip": "192.0.2.7"}, ports=published("80/tcp=0.0.0.0:1"))
    assert only(c, settings).address == "192.0.2.7"
    c = container("plain", labels={}, ports=published("80/tcp=127.0.0.1:1"))
    assert only(c, settings).address == "127.0.0.1"


def test_host_network_uses_exposed_ports_at_host_address() -> None:
    """A host-network container yields its exposed ports, at --ip or the agent's address."""
    services = services_from_container(payload("hostnet"), S).services
    assert [(s.name, s.address, s.port) for s in services] == [("hostweb-80", "", 80), ("hostweb-8080", "", 8080)]
    with_ip = services_from_container(payload("hostnet"), Settings(hostname="h", ip="127.0.0.1")).services
    assert {s.address for s in with_ip} == {"127.0.0.1"}


def test_stopped_container_yields_nothing() -> None:
    """A container that is not running yields no service."""
    assert services_from_container(payload("exited"), S).services == ()


def test_meta_keeps_other_keys_and_marks_ownership() -> None:
    """Other SERVICE_ keys become Meta (lower-cased); CHECK_* and reserved keys do not; ownership is added."""
    c = container(
        "plain",
        labels={"SERVICE_REGION": "eu", "SERVICE_CHECK_TCP": "true", "SERVICE_NAME": "n", "SERVICE_Team-X": "a"},
        ports=published("80/tcp=127.0.0.1:1"),
    )
    meta = dict(only(c).meta)
    assert meta == {
        "region": "eu",
        "team-x": "a",
        "image": c["Config"]["Image"],
        "external-source": "registrar",
        "registrar-host": "host1",
        "registrar-container": c["Id"][:12],
    }


@pytest.mark.parametrize(
    ("labels", "key"),
    [
        ({"SERVICE_BAD.KEY": "v"}, "label SERVICE_BAD.KEY"),
        ({"SERVICE_BIG": "x" * 513}, "label SERVICE_BIG"),
        ({"SERVICE_WIDE": "é" * 257}, "label SERVICE_WIDE"),
        ({"SERVICE_CONSUL-X": "v"}, "label SERVICE_CONSUL-X"),
        ({"SERVICE_REGISTRAR-HOST": "evil"}, "label SERVICE_REGISTRAR-HOST"),
    ],
)
def test_meta_consul_would_reject_is_dropped(labels: dict[str, str], key: str) -> None:
    """A Meta key or value Consul refuses is dropped with one problem; the service is still made."""
    c = container("plain", labels=labels, ports=published("80/tcp=127.0.0.1:1"))
    s = only(c)
    assert problems(c) == [("rec-plain", key)]
    assert dict(s.meta)["registrar-host"] == "host1"


def test_meta_key_limit() -> None:
    """No more than 64 Meta keys in all reach Consul, ownership keys included."""
    labels = {f"SERVICE_K{i:03}": "v" for i in range(100)}
    c = container("plain", labels=labels, ports=published("80/tcp=127.0.0.1:1"))
    assert len(only(c).to_consul()["Meta"]) == 64
    assert len(problems(c)) == 100 - 60


def test_digest_changes_with_registration() -> None:
    """Two containers that differ only in a label yield services with different digests."""
    a = only(container("plain", labels={"SERVICE_TAGS": "a"}, ports=published("80/tcp=127.0.0.1:1")))
    b = only(container("plain", labels={"SERVICE_TAGS": "b"}, ports=published("80/tcp=127.0.0.1:1")))
    assert a.digest != b.digest
    assert a.to_consul()["Meta"]["registrar-digest"] == a.digest


def test_key_for_a_port_the_container_lacks() -> None:
    """SERVICE_<port>_KEY for a port that is not published is one problem naming the key."""
    c = container("plain", labels={"SERVICE_8080_NAME": "x"}, ports=published("80/tcp=127.0.0.1:1"))
    assert problems(c) == [("rec-plain", "label SERVICE_8080_NAME")]
    assert only(c).name == "busybox"


def test_unknown_check_option_reported_once() -> None:
    """A misspelt CHECK_ key is one problem even on a multi-port container; the services are made."""
    c = container("plain", labels={"SERVICE_CHECK_HTTPP": "/"}, ports=published("80/tcp=0.0.0.0:1", "81/tcp=0.0.0.0:2"))
    assert problems(c) == [("rec-plain", "label SERVICE_CHECK_HTTPP")]
    assert len(services_from_container(c, S).services) == 2


def test_podman_pod_infra_container_yields_nothing() -> None:
    """A Podman pod's infra container yields no service; the pod's app container yields the pod's port."""
    assert services_from_container(payload("podman_infra"), Settings(hostname="vm")).services == ()
    (service,) = services_from_container(payload("podman_pod_app"), Settings(hostname="vm")).services
    assert (service.id, service.name, service.address) == ("vm:podapp:80", "podweb", "127.0.0.1")


@pytest.mark.parametrize(
    ("image", "labels", "name"),
    [
        ("sha256:" + "ab" * 32, {"com.docker.compose.service": "api"}, "api"),
        ("sha256:" + "ab" * 32, {}, "rec-plain"),
        ("0123456789ab", {}, "rec-plain"),
        ("gliderlabs/foo@sha256:" + "cd" * 32, {"com.docker.compose.service": "api"}, "foo"),
        ("registry:5000/team/web:1", {}, "web"),
    ],
)
def test_default_name_for_images_given_by_id_or_digest(image: str, labels: dict[str, str], name: str) -> None:
    """An image given only by ID or digest is named from the compose service label, else the container name."""
    c = container(labels=labels, image=image, name="rec-plain", ports=published("80/tcp=127.0.0.1:30000"))
    (service,) = services_from_container(c, Settings(hostname="vm")).services
    assert service.name == name


@pytest.mark.parametrize(
    ("labels", "override", "problems"),
    [
        ({"SERVICE_ENABLE_TAG_OVERRIDE": "true"}, True, []),
        ({"SERVICE_80_ENABLE_TAG_OVERRIDE": "TRUE"}, True, []),
        ({"SERVICE_ENABLE_TAG_OVERRIDE": "false"}, False, []),
        ({}, False, []),
        ({"SERVICE_ENABLE_TAG_OVERRIDE": "maybe"}, False, ["label SERVICE_ENABLE_TAG_OVERRIDE"]),
    ],
)
def test_enable_tag_override(labels: dict[str, str], override: bool, problems: list[str]) -> None:
    """SERVICE_ENABLE_TAG_OVERRIDE=true sets EnableTagOverride; a value not true/false is one warning."""
    c = container(labels=labels, ports=published("80/tcp=127.0.0.1:30000"))
    result = services_from_container(c, Settings(hostname="vm"))
    (service,) = result.services
    assert service.to_consul().get("EnableTagOverride", False) is override
    assert "enable_tag_override" not in dict(service.meta)
    assert [p.key for p in result.problems] == problems


def healthy(status: str = "healthy", output: str = "ok\n", labels: dict[str, str] | None = None) -> dict[str, Any]:
    c = container(labels=labels or {}, ports=published("80/tcp=127.0.0.1:30000"), name="rec-plain")
    c["State"]["Health"] = {"Status": status, "FailingStreak": 0, "Log": [{"ExitCode": 0, "Output": output}]}
    return c


@pytest.mark.parametrize(
    ("docker", "consul"), [("starting", "critical"), ("healthy", "passing"), ("unhealthy", "critical")]
)
def test_docker_health_becomes_a_check(docker: str, consul: str) -> None:
    """A HEALTHCHECK adds check <service-id>:docker-health, TTL 45s, whose status follows Docker's."""
    (service,) = services_from_container(healthy(docker), Settings(hostname="vm")).services
    assert service.health == Health("vm:rec-plain:80:docker-health", consul, "ok")
    assert service.to_consul()["Checks"] == [
        {"CheckID": "vm:rec-plain:80:docker-health", "Name": "Docker health", "TTL": "45s", "Status": consul}
    ]


def test_docker_health_status_does_not_change_the_digest() -> None:
    """A change of health is a check update, not a new registration: the digest leaves the status out."""
    settings = Settings(hostname="vm")
    (up,) = services_from_container(healthy("healthy"), settings).services
    (down,) = services_from_container(healthy("unhealthy", "boom"), settings).services
    assert up.digest == down.digest and up != down


@pytest.mark.parametrize(
    ("settings", "labels", "present", "problems"),
    [
        (Settings(hostname="vm", docker_health=False), {}, False, []),
        (Settings(hostname="vm"), {"SERVICE_CHECK_DOCKER_HEALTH": "false"}, False, []),
        (Settings(hostname="vm"), {"SERVICE_80_CHECK_DOCKER_HEALTH": "no"}, False, []),
        (
            Settings(hostname="vm"),
            {"SERVICE_CHECK_DOCKER_HEALTH": "banana"},
            True,
            ["label SERVICE_CHECK_DOCKER_HEALTH"],
        ),
    ],
)
def test_docker_health_turned_off(
    settings: Settings, labels: dict[str, str], present: bool, problems: list[str]
) -> None:
    """--docker-health off or SERVICE_CHECK_DOCKER_HEALTH=false: no Docker health check; a bad value warns."""
    result = services_from_container(healthy(labels=labels), settings)
    assert (result.services[0].health is not None) is present
    assert [p.key for p in result.problems] == problems
    assert "check_docker_health" not in dict(result.services[0].meta)


def test_docker_health_beside_a_label_check() -> None:
    """The Docker health check sits beside a SERVICE_CHECK_* check; it does not replace it."""
    (service,) = services_from_container(
        healthy(labels={"SERVICE_CHECK_TCP": "true"}), Settings(hostname="vm")
    ).services
    assert [c["CheckID"] for c in service.to_consul()["Checks"]] == [
        "service:vm:rec-plain:80",
        "vm:rec-plain:80:docker-health",
    ]


def dual(settings: Settings, *specs: str) -> Service:
    ports: dict[str, list[dict[str, str]] | None] = {"80/tcp": []}
    for spec in specs:
        host, _, port = spec.rpartition(":")
        ports["80/tcp"].append({"HostIp": host, "HostPort": port})  # type: ignore[union-attr]
    (service,) = services_from_container(container(ports=ports, name="rec-plain"), settings).services
    return service


@pytest.mark.parametrize(
    ("settings", "specs", "primary", "tagged"),
    [
        (
            Settings(hostname="vm"),
            ("127.0.0.1:30000", "::1:30001"),
            ("127.0.0.1", 30000),
            {"lan_ipv4": {"Address": "127.0.0.1", "Port": 30000}, "lan_ipv6": {"Address": "::1", "Port": 30001}},
        ),
        (
            Settings(hostname="vm", ipv6=True),
            ("127.0.0.1:30000", "::1:30001"),
            ("::1", 30001),
            {"lan_ipv4": {"Address": "127.0.0.1", "Port": 30000}, "lan_ipv6": {"Address": "::1", "Port": 30001}},
        ),
        (Settings(hostname="vm"), ("::1:30001",), ("::1", 30001), {"lan_ipv6": {"Address": "::1", "Port": 30001}}),
        (Settings(hostname="vm"), ("0.0.0.0:30000", ":::30001"), ("", 30000), None),
        (
            Settings(hostname="vm", ip="10.0.0.5"),
            ("0.0.0.0:30000", ":::30001"),
            ("10.0.0.5", 30000),
            {"lan_ipv4": {"Address": "10.0.0.5", "Port": 30000}},
        ),
        (
            Settings(hostname="vm", ip="fd00::5", ipv6=True),
            ("0.0.0.0:30000", ":::30001"),
            ("fd00::5", 30001),
            {"lan_ipv6": {"Address": "fd00::5", "Port": 30001}},
        ),
    ],
)
def test_published_addresses_of_both_families(
    settings: Settings, specs: tuple[str, ...], primary: tuple[str, int], tagged: dict[str, Any] | None
) -> None:
    """A port published on IPv4 and IPv6 is one service; TaggedAddresses carry each known address and port."""
    service = dual(settings, *specs)
    assert (service.address, service.port) == primary
    assert service.to_consul().get("TaggedAddresses") == tagged


@pytest.mark.parametrize(
    ("settings", "labels", "primary"),
    [
        (Settings(hostname="vm", internal=True), {}, "172.18.0.2"),
        (Settings(hostname="vm", internal=True, ipv6=True), {}, "fd00:1::2"),
        (Settings(hostname="vm", internal=True, network="other"), {}, "10.9.0.2"),
        (Settings(hostname="vm", internal=True, network="other"), {"SERVICE_NETWORK": "rec-net"}, "172.18.0.2"),
    ],
)
def test_internal_addresses_of_the_chosen_network(settings: Settings, labels: dict[str, str], primary: str) -> None:
    """--internal: the container's IPv4 and global IPv6 on --network (SERVICE_NETWORK beats it), both tagged."""
    c = container("internal", labels=labels)
    c["NetworkSettings"]["Networks"]["rec-net"]["GlobalIPv6Address"] = "fd00:1::2"
    c["NetworkSettings"]["Networks"]["other"] = {"IPAddress": "10.9.0.2", "GlobalIPv6Address": ""}
    service = next(s for s in services_from_container(c, settings).services if s.port == 80)
    assert service.address == primary
    tagged = service.to_consul()["TaggedAddresses"]
    if primary == "10.9.0.2":
        assert tagged == {"lan_ipv4": {"Address": "10.9.0.2", "Port": 80}}
    else:
        assert tagged == {
            "lan_ipv4": {"Address": "172.18.0.2", "Port": 80},
            "lan_ipv6": {"Address": "fd00:1::2", "Port": 80},
        }


@pytest.mark.parametrize(
    ("value", "address", "check", "tagged"),
    [
        ("10.42.7.9/16", "10.42.7.9", "http://10.42.7.9:30001/health", ("lan_ipv4", "10.42.7.9", 30001)),
        (" 10.42.7.9 ", "10.42.7.9", "http://10.42.7.9:30001/health", ("lan_ipv4", "10.42.7.9", 30001)),
        ("fd00:0::9/64", "fd00::9", "http://[fd00::9]:30001/health", ("lan_ipv6", "fd00::9", 30001)),
    ],
)
def test_an_address_from_a_label_is_parsed(value: str, address: str, check: str, tagged: Tagged) -> None:
    """--use-ip-from-label with Rancher's io.rancher.container.ip=10.42.7.9/16: the address without its
    prefix length (registrator strips it), IPv6 bracketed in the check's URL, tagged under its family."""
    settings = Settings(hostname="h", use_ip_from_label="io.rancher.container.ip")
    labels = {"io.rancher.container.ip": value, "SERVICE_CHECK_HTTP": "/health"}
    c = container("plain", labels=labels, ports=published("80/tcp=0.0.0.0:30001"))
    result = services_from_container(c, settings)
    (service,) = result.services
    assert (service.address, service.checks[0].http, result.problems) == (address, check, ())
    assert tagged in service.tagged_addresses


def test_a_label_that_is_not_an_address_is_one_warning_and_ignored() -> None:
    """--use-ip-from-label whose label holds no IP address: one warning naming the container and the label,
    and the address is the one registrar would use without the label."""
    settings = Settings(hostname="h", use_ip_from_label="io.rancher.container.ip")
    c = container("plain", labels={"io.rancher.container.ip": "rancher-7"}, ports=published("80/tcp=127.0.0.1:1"))
    result = services_from_container(c, settings)
    assert result.services[0].address == "127.0.0.1"
    assert [p.key for p in result.problems] == ["label io.rancher.container.ip"]


def test_the_forks_label_forms_name_and_ignore_services() -> None:
    """A container publishing 53/tcp, 53/udp and 8000-8001: SERVICE_53_udp_NAME names only the UDP service,
    SERVICE_8000-8009_IGNORE=1 leaves the range out, nothing is reported as a problem."""
    labels = {"SERVICE_53_NAME": "dns", "SERVICE_53_udp_NAME": "dns-udp", "SERVICE_8000-8009_IGNORE": "1"}
    c = container(
        "plain",
        labels=labels,
        ports=published(
            "53/tcp=127.0.0.1:1053", "53/udp=127.0.0.1:1053", "8000/tcp=127.0.0.1:18000", "8001/tcp=127.0.0.1:18001"
        ),
    )
    result = services_from_container(c, S)
    assert sorted((s.name, s.id.rsplit(":", 2)[-2:] == ["53", "udp"]) for s in result.services) == [
        ("dns", False),
        ("dns-udp", True),
    ]
    assert result.problems == ()


INTERNAL = Settings(hostname="vm", internal=True)


def test_member_of_another_containers_network_has_the_owners_addresses() -> None:
    """--network container:OWNER (Docker reports no address for it): registered at the owner's address."""
    member, owner = payload("network_member"), payload("network_owner")
    result = services_from_container(member, INTERNAL, owner)
    (service,) = result.services
    owners = owner["NetworkSettings"]["Networks"]["rec-net2"]["IPAddress"]
    assert (service.id, service.address, service.port) == ("vm:rec-member:80", owners, 80)
    assert result.problems == ()


def test_member_whose_owner_is_gone_yields_nothing_with_a_warning() -> None:
    """The container whose network it shares is not running: no service (no address), one problem naming it."""
    member, owner = payload("network_member"), payload("network_owner")
    owner["State"]["Running"] = False
    for gone in (None, owner):
        result = services_from_container(member, INTERNAL, gone)
        assert result.services == ()
        assert [(p.container, p.key) for p in result.problems] == [("rec-member", "network container:e8d3d87cf589")]


def test_podman_pod_member_keeps_its_own_addresses() -> None:
    """Podman's pod members report the pod's addresses: no owner is needed, none is followed."""
    (service,) = services_from_container(payload("podman_pod_app"), INTERNAL).services
    assert service.address == "10.88.0.14"


def test_service_network_the_container_is_not_on_registers_nothing() -> None:
    """SERVICE_NETWORK names a network the container is not on: no service, one problem naming the label."""
    c = container("internal", labels={"SERVICE_NETWORK": "backend"})
    result = services_from_container(c, INTERNAL)
    assert result.services == ()
    assert {(p.container, p.key) for p in result.problems} == {("rec-internal", "label SERVICE_NETWORK")}
    assert "'backend'" in result.problems[0].message and "rec-net" in result.problems[0].message


def test_network_flag_the_container_is_not_on_falls_back_to_its_own() -> None:
    """--network names a network the container is not on: its network mode's address, no warning."""
    result = services_from_container(payload("internal"), Settings(hostname="vm", internal=True, network="backend"))
    assert {s.address for s in result.services} == {"172.18.0.2"} and result.problems == ()


def test_identity_meta_names_image_and_compose_project_and_service() -> None:
    """Every service says what it runs: image, compose project and service; a container's own key beats them."""
    labels = {"com.docker.compose.project": "shop", "com.docker.compose.service": "cart", "SERVICE_IMAGE": "mine"}
    meta = dict(only(container("web", labels=labels)).meta)
    assert (meta["compose-project"], meta["compose-service"], meta["image"]) == ("shop", "cart", "mine")


def test_meta_flag_adds_to_every_service_and_the_containers_key_beats_it() -> None:
    """--meta env=prod team=a: on every service; the container's SERVICE_TEAM beats --meta team."""
    settings = Settings(hostname="h", meta=(("env", "prod"), ("team", "a")))
    meta = dict(only(container("web", labels={"SERVICE_TEAM": "b"}), settings).meta)
    assert (meta["env"], meta["team"]) == ("prod", "b")


def test_meta_flag_and_identity_stay_within_consuls_64_keys() -> None:
    """With 70 labels of its own, --meta and identity Meta find no room: 64 keys in all reach Consul."""
    labels = {f"SERVICE_K{i}": "v" for i in range(70)}
    settings = Settings(hostname="h", meta=(("env", "prod"),), instance="a")
    assert len(only(container("web", labels=labels), settings).to_consul()["Meta"]) == 64


def test_instance_is_in_default_ids_and_ownership() -> None:
    """--instance team-a: default IDs host:team-a:container:port, Meta registrar-instance=team-a."""
    service = only(payload("web"), Settings(hostname="vm", instance="team-a"))
    assert service.id == "vm:team-a:rec-web:80"
    assert dict(service.meta)["registrar-instance"] == "team-a"
    assert "registrar-instance" not in dict(only(payload("web"), Settings(hostname="vm")).meta)


@pytest.mark.parametrize(
    ("filters", "yields"),
    [
        ((("label", "com.example.team"),), True),
        ((("label", "com.example.team=shop"),), True),
        ((("label", "com.example.team=pay"),), False),
        ((("label", "nope"),), False),
        ((("name", "rec-w"),), True),
        ((("name", "^/rec-web$"),), True),
        ((("name", "^rec-web$"),), False),  # docker ps searches in /rec-web
        ((("name", "^/web"),), False),
        ((("network", "bridge"),), True),
        ((("network", "backend"),), False),
        ((("label", "com.example.team"), ("name", "^/web")), False),
    ],
)
def test_filters_select_containers_as_docker_ps_does(filters: tuple[tuple[str, str], ...], yields: bool) -> None:
    """--filter label=KEY[=VALUE], name=REGEX, network=NAME: a container yields services only if it matches all."""
    c = container("web", labels={"com.example.team": "shop"})
    c["NetworkSettings"]["Networks"] = {"bridge": {"IPAddress": "172.17.0.2", "NetworkID": "abc123"}}
    assert bool(services_from_container(c, Settings(hostname="vm", filters=filters)).services) is yields


def test_wan_ip_adds_consuls_wan_addresses_with_the_registered_port() -> None:
    """--wan-ip 203.0.113.7: TaggedAddresses wan and wan_ipv4 at that address, with the published port."""
    tagged = only(payload("web"), Settings(hostname="vm", wan_ip="203.0.113.7")).to_consul()["TaggedAddresses"]
    port = tagged["lan_ipv4"]["Port"]
    assert tagged["wan"] == tagged["wan_ipv4"] == {"Address": "203.0.113.7", "Port": port}
    v6 = only(payload("web"), Settings(hostname="vm", wan_ip="2001:db8::7")).to_consul()["TaggedAddresses"]
    assert v6["wan"] == v6["wan_ipv6"] == {"Address": "2001:db8::7", "Port": port}


def test_a_container_the_filters_leave_out_gets_no_warnings() -> None:
    """--filter leaves a member of a gone owner's network out: no service and no warning (it is not ours)."""
    settings = Settings(hostname="vm", internal=True, filters=(("label", "team=shop"),))
    result = services_from_container(payload("network_member"), settings)
    assert (result.services, result.problems) == ((), ())


def test_a_network_filter_reads_the_owners_networks() -> None:
    """--filter network=NET with a member of another container's network: the owner's networks decide."""
    member, owner = payload("network_member"), payload("network_owner")
    on = Settings(hostname="vm", internal=True, filters=(("network", "rec-net2"),))
    assert len(services_from_container(member, on, owner).services) == 1
    off = Settings(hostname="vm", internal=True, filters=(("network", "other"),))
    assert services_from_container(member, off, owner).services == ()
