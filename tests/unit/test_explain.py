"""registrar explain's pure part: why a container yields what it yields, on recorded inspect payloads."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from registrar.explain import Explanation, explain, render
from registrar.services import INGRESS_ONLY, NOT_PUBLISHED, services_from_container, traced_services
from registrar.settings import Settings
from tests.labels_strategy import LABELS
from tests.unit.payloads import container, payload, published

S = Settings(hostname="host1")


def web_with_extra_ports(**labels: str) -> dict[str, Any]:
    """The recorded web container, also publishing 81, exposing 8080 unpublished, with these labels added."""
    c: dict[str, Any] = payload("web")
    c["Config"]["Labels"].update(labels)
    c["NetworkSettings"]["Ports"]["81/tcp"] = [{"HostIp": "0.0.0.0", "HostPort": "32769"}]
    c["Config"]["ExposedPorts"].update({"81/tcp": {}, "8080/tcp": {}})
    return c


def outcomes(e: Explanation) -> dict[str, tuple[str, str, str]]:
    return {p.port: (p.published, p.service_id, p.reason) for p in e.ports}


def keys(e: Explanation) -> dict[str, tuple[str, str, tuple[str, ...], tuple[str, ...]]]:
    return {k.source: (k.value, k.scope, k.used_on, k.beaten_by) for k in e.keys}


def registered(c: dict[str, Any], settings: Settings = S) -> dict[str, Any]:
    """The agent's answer after a sync of this container alone (as Consul lists services)."""
    out: dict[str, Any] = {}
    for s in services_from_container(c, settings).services:
        body = s.to_consul()
        out[s.id] = {
            "ID": s.id,
            "Service": body["Name"],
            "Port": body["Port"],
            "Address": body.get("Address", ""),
            "Tags": body.get("Tags", []),
            "Meta": body["Meta"],
            "EnableTagOverride": False,
            "TaggedAddresses": {**body.get("TaggedAddresses", {}), "wan_ipv4": {"Address": "x", "Port": 1}},
        }
    return out


def test_each_port_says_what_it_yields_or_why_not() -> None:
    """A published port names its service; an ignored one names the key; an unpublished one says to publish it."""
    e = explain(web_with_extra_ports(SERVICE_81_IGNORE="1"), S, {})
    assert outcomes(e) == {
        "80/tcp": ("127.0.0.1:32768", "host1:rec-web:80", ""),
        "81/tcp": ("0.0.0.0:32769", "", "ignored by label SERVICE_81_IGNORE"),
        "8080/tcp": ("", "", NOT_PUBLISHED),
    }


def test_internal_considers_unpublished_ports() -> None:
    """With --internal an exposed port is not 'not published': it yields a service at the container's address."""
    e = explain(web_with_extra_ports(), dataclasses.replace(S, internal=True), {})
    assert outcomes(e) == {
        "80/tcp": ("127.0.0.1:32768", "host1:rec-web:80", ""),
        "81/tcp": ("0.0.0.0:32769", "host1:rec-web:81", ""),
        "8080/tcp": ("", "host1:rec-web:8080", ""),
    }


def test_explicit_without_a_name_says_so() -> None:
    """Under --explicit, a port without SERVICE_NAME or SERVICE_<port>_NAME says that is why."""
    c = container("plain", ports=published("80/tcp=127.0.0.1:30000"))
    e = explain(c, dataclasses.replace(S, explicit=True), {})
    assert outcomes(e)["80/tcp"][2] == "--explicit, and no usable SERVICE_NAME or SERVICE_80_NAME"
    assert e.services == ()


def test_bad_host_port_says_so() -> None:
    """A host port that is not a port number: the port says so, and the problem names the port."""
    c = container("plain", ports=published("80/tcp=127.0.0.1:99999"))
    e = explain(c, S, {})
    assert outcomes(e)["80/tcp"][2] == "its host port is not a port number"
    assert [p.key for p in e.problems] == ["port 80/tcp"]


def test_keys_show_source_scope_and_which_won() -> None:
    """Every SERVICE_* key with its source and scope: the label beats the env value, a port key beats the general."""
    c = web_with_extra_ports(SERVICE_81_NAME="eighty-one", SERVICE_81_IGNORE="", **{"SERVICE_80-89_TAGS": "r"})
    c["Config"]["Env"].append("SERVICE_81_tcp_REGION=eu")
    k = keys(explain(c, S, {}))
    assert k["env SERVICE_NAME"] == ("envname", "general", (), ("label SERVICE_NAME", "label SERVICE_81_NAME"))
    assert k["label SERVICE_NAME"] == ("web", "general", ("80/tcp",), ("label SERVICE_81_NAME",))
    assert k["label SERVICE_81_NAME"] == ("eighty-one", "port 81", ("81/tcp",), ())
    assert k["label SERVICE_80-89_TAGS"] == ("r", "ports 80-89", ("80/tcp", "81/tcp"), ())
    assert k["label SERVICE_TAGS"] == ("a,b\\,c", "general", (), ("label SERVICE_80-89_TAGS",))
    assert k["env SERVICE_81_tcp_REGION"] == ("eu", "port 81/tcp", ("81/tcp",), ())
    assert "label SERVICE_81_IGNORE" not in k  # empty: unset


def test_a_key_for_a_port_the_container_lacks_applies_nowhere() -> None:
    """A key scoped to a port that yields no service is listed as used nowhere, and is a problem with its key."""
    e = explain(web_with_extra_ports(SERVICE_9000_NAME="x"), S, {})
    assert keys(e)["label SERVICE_9000_NAME"] == ("x", "port 9000", (), ())
    assert "label SERVICE_9000_NAME" in [p.key for p in e.problems]
    assert "label SERVICE_9000_NAME=x  (port 9000)  applies to no port that yields a service" in render(e)


def test_problems_name_their_key() -> None:
    """A malformed label is a problem naming the label; the service is still explained."""
    e = explain(web_with_extra_ports(SERVICE_CHECK_INTERVAL="banana"), S, {})
    assert [p.key for p in e.problems] == ["label SERVICE_CHECK_INTERVAL"]
    assert "banana" in e.problems[0].message
    assert [s.id for s in e.services] == ["host1:rec-web:80", "host1:rec-web:81"]


def test_services_are_the_exact_bodies_sync_sends() -> None:
    """The services explained are the bodies services_from_container gives sync, digest included."""
    c = web_with_extra_ports()
    bodies = [s.to_consul() for s in services_from_container(c, S).services]
    assert explain(c, S, {}).to_json()["services"] == bodies


def test_agent_state_registered_missing_and_differing() -> None:
    """registered: same digest; missing: no such ID; differing: the fields that differ are named."""
    c = web_with_extra_ports()
    agent = registered(c)
    assert [(a.service_id, a.state) for a in explain(c, S, agent).agent] == [
        ("host1:rec-web:80", "registered"),
        ("host1:rec-web:81", "registered"),
    ]
    del agent["host1:rec-web:81"]
    agent["host1:rec-web:80"]["Port"] = 1
    agent["host1:rec-web:80"]["Meta"]["registrar-digest"] = "old"
    state = {a.service_id: (a.state, a.detail) for a in explain(c, S, agent).agent}
    assert state["host1:rec-web:81"] == ("missing", "not on the agent; sync would register it")
    assert state["host1:rec-web:80"][0] == "differing"
    assert state["host1:rec-web:80"][1].startswith("Port 1 on the agent, 32768 here;")


def test_agent_differing_checks_only() -> None:
    """A digest that differs where the agent's list shows nothing different: the checks differ."""
    c = payload("web")
    agent = registered(c)
    agent["host1:rec-web:80"]["Meta"]["registrar-digest"] = "old"
    (entry,) = explain(c, S, agent).agent
    assert entry.state == "differing" and "its checks" in entry.detail


def test_agent_differing_when_not_registrars() -> None:
    """A hand-made registration under the same ID differs: registrar did not make it."""
    agent = {"host1:rec-web:80": {"ID": "host1:rec-web:80", "Service": "web", "Port": 32768, "Meta": {}}}
    (entry,) = explain(payload("web"), S, agent).agent
    assert (entry.state, entry.detail) == (
        "differing",
        "a registration registrar did not make (hand-made, or another tool's); sync would replace it",
    )


def test_stale_registrations_of_this_container() -> None:
    """A registration registrar made for this container that it no longer yields: stale, would be deregistered;
    another host's or another container's are not this container's business."""
    c = payload("web")
    agent = registered(c)
    cid = c["Id"][:12]
    owned = {"external-source": "registrar", "registrar-host": "host1", "registrar-container": cid}
    agent["host1:rec-web:81"] = {"ID": "host1:rec-web:81", "Service": "web", "Port": 2, "Meta": owned}
    agent["other:rec-web:81"] = {"Meta": {**owned, "registrar-host": "other"}}
    agent["host1:else:81"] = {"Meta": {**owned, "registrar-container": "0123456789ab"}}
    state = [(a.service_id, a.state) for a in explain(c, S, agent).agent]
    assert state == [("host1:rec-web:80", "registered"), ("host1:rec-web:81", "stale")]


def test_stopped_container_yields_nothing_and_says_why() -> None:
    """An exited container: nothing considered, the reason given; its registrations are stale, or kept when
    --deregister on-success keeps a crashed container's."""
    c = payload("exited")
    owned = {"external-source": "registrar", "registrar-host": "host1", "registrar-container": c["Id"][:12]}
    agent = {"host1:rec-exited:80": {"Meta": owned}}
    e = explain(c, S, agent)
    assert (e.status, e.skipped, e.ports, e.services) == ("exited (exit code 3)", "not running (exited)", (), ())
    assert [(a.state) for a in e.agent] == ["stale"]
    kept = explain(c, dataclasses.replace(S, deregister="on-success"), agent)
    assert [(a.state) for a in kept.agent] == ["kept"]


def test_podman_pod_infra_container_says_why() -> None:
    """A Podman pod's infra container yields nothing, and says it is one."""
    e = explain(payload("podman_infra"), S, {})
    assert e.skipped.startswith("a Podman pod's infra container") and e.services == ()


def test_text_has_every_section() -> None:
    """The text: a header, ports with their outcome, keys, problems, services as indented JSON, the agent."""
    c = web_with_extra_ports(SERVICE_81_IGNORE="1", SERVICE_CHECK_INTERVAL="banana")
    text = render(explain(c, S, registered(c)))
    lines = text.splitlines()
    assert lines[0] == f"container rec-web ({c['Id'][:12]}): running"
    assert lines[1:5] == [
        "ports:",
        "  80/tcp    127.0.0.1:32768  -> host1:rec-web:80",
        "  81/tcp    0.0.0.0:32769    ignored by label SERVICE_81_IGNORE",
        f"  8080/tcp  -                {NOT_PUBLISHED}",
    ]
    assert "  env SERVICE_NAME=envname  (general)  beaten by label SERVICE_NAME" in lines
    assert "  label SERVICE_CHECK_INTERVAL: check dropped: 'banana' is not a positive duration" in text
    assert '      "ID": "host1:rec-web:80",' in lines
    assert lines[-2:] == ["agent:", "  host1:rec-web:80  registered: the agent holds this exact registration"]


def test_json_has_the_same_content() -> None:
    """--json: one object with the container, ports, keys, problems, services and agent state."""
    c = web_with_extra_ports(SERVICE_81_IGNORE="1")
    out = explain(c, S, {}).to_json()
    assert out["container"] == {"name": "rec-web", "id": c["Id"][:12], "status": "running"}
    assert out["ports"][1] == {
        "port": "81/tcp",
        "published": "0.0.0.0:32769",
        "service": None,
        "reason": "ignored by label SERVICE_81_IGNORE",
    }
    ignore = {"source": "label SERVICE_81_IGNORE", "value": "1", "scope": "port 81", "used_on": ["81/tcp"]}
    assert {**ignore, "beaten_by": []} in out["keys"]
    assert out["agent"] == [{"id": "host1:rec-web:80", "state": "missing", "detail": out["agent"][0]["detail"]}]


PORTS = published("80/tcp=127.0.0.1:30000", "443/tcp=0.0.0.0:30001", "53/udp=127.0.0.1:30002", "8080/tcp=")


@settings(max_examples=300, deadline=None)
@given(labels=LABELS, internal=st.booleans(), explicit=st.booleans())
def test_explanation_agrees_with_what_sync_yields(labels: dict[str, str], internal: bool, explicit: bool) -> None:
    """For any labels: tracing changes nothing, each port has a service or a reason, and every key is read
    where for_port reads it (applies_to is for_port's rule)."""
    c = container("multi", labels=labels, ports=PORTS)
    s = Settings(hostname="h", internal=internal, explicit=explicit)
    traced = traced_services(c, s)
    assert traced.result == services_from_container(c, s)
    assert sorted(o.service_id for o in traced.ports if o.service_id) == sorted(x.id for x in traced.result.services)
    assert len(traced.ports) == len(PORTS), "every published or exposed port is traced"
    assert all(bool(o.service_id) != bool(o.reason) for o in traced.ports)
    assert traced.metadata is not None
    for port, proto in (("80", "tcp"), ("53", "udp"), ("53", "tcp"), ("8080", "tcp")):
        read = traced.metadata.for_port(port, proto)
        applying = [f for f in traced.found if f.applies_to(port, proto)]
        assert {f.key for f in applying} == set(read)
        assert all(any(f.value is v for f in applying) for v in read.values())


INTERNAL = Settings(hostname="vm", internal=True)


def test_a_network_the_container_is_not_on_says_so() -> None:
    """--internal, SERVICE_NETWORK=backend on a container that is not there: each port says so, with the label."""
    e = explain(container("internal", labels={"SERVICE_NETWORK": "backend"}), INTERNAL, {})
    reasons = {p.reason for p in e.ports}
    assert reasons == {"not on network 'backend' (label SERVICE_NETWORK); it is on: rec-net"}
    assert [p.key for p in e.problems] == ["label SERVICE_NETWORK"]


def test_a_member_follows_its_owner_or_says_why_it_cannot() -> None:
    """--network container:OWNER: the member's service is at the owner's address; with the owner gone, it says so."""
    member, owner = payload("network_member"), payload("network_owner")
    (service,) = explain(member, INTERNAL, {}, owner).services
    assert service.address == owner["NetworkSettings"]["Networks"]["rec-net2"]["IPAddress"]
    assert explain(member, INTERNAL, {}).skipped == "no address: the container whose network it shares is not running"


def test_an_ingress_only_swarm_task_says_why_it_yields_nothing() -> None:
    """A swarm task whose ports are all ingress-mode: explain says the routing mesh owns them."""
    e = explain(payload("swarm_task_ingress"), Settings(hostname="node1"), {})
    assert e.services == () and e.skipped == INGRESS_ONLY
