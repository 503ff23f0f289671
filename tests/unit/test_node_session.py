"""``run --catalog``'s liveness (registrar.catalog_liveness): ``--node-ttl``, the rule that says which nodes are
dead, and the session and watch against an in-memory stand-in of Consul's sessions, KV store and catalog."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any, cast

import pytest
from consul.base import Response
from consul.exceptions import ACLPermissionDenied, ConsulException, NotFound
from structlog.testing import capture_logs

from registrar import catalog_liveness
from registrar.catalog_liveness import (
    LOCK_KEY,
    PREFIX,
    CatalogLiveness,
    DeadNodeWatch,
    NodeSession,
    NodeSessionDenied,
    held_nodes,
    is_owned,
    keyless_since,
    next_look,
    node_of_key,
    past_grace,
    removal_ops,
)
from registrar.catalog_sink import CatalogSink, catalog_node
from registrar.cli import main
from registrar.consul_sink import ConsulConnection
from registrar.errors import ConsulError
from registrar.settings import ConsulTarget, parse_node_ttl
from tests.unit.fakes import MemoryConsul, MemoryDocker
from tests.unit.loop import step_until
from tests.unit.test_cli import settings_for

OWNED = {"external-node": "true", "external-source": "registrar", "registrar-host": "h"}

# --node-ttl --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("10", 10), ("1m", 60), ("1m30s", 90), ("10.2s", 11), ("24h", 86400)]
)
def test_node_ttl_reads_go_durations_as_whole_seconds(text: str, seconds: int) -> None:
    """--node-ttl takes a Go duration (or bare seconds) and keeps whole seconds, a fraction rounded up."""
    assert parse_node_ttl(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("9s", "a Consul session's TTL is 10s to 24h"),
        ("9.5s", "a Consul session's TTL is 10s to 24h"),
        ("24h1s", "a Consul session's TTL is 10s to 24h"),
        ("500ms", "a Consul session's TTL is 10s to 24h"),
        ("banana", "not a duration"),
        ("30 s", "not a duration"),
    ],
)
def test_a_node_ttl_outside_consuls_bounds_is_a_usage_error(
    text: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--node-ttl under 10 s, over 24 h or not a duration: one line on stderr naming it, exit 2."""
    with pytest.raises(SystemExit) as exit:
        main(["run", "--ip", "10.0.0.9", "--catalog", "consul://10.1.1.1:8500", "--node-ttl", text])
    err = capsys.readouterr().err
    assert exit.value.code == 2, err
    assert err.startswith(f"registrar: --node-ttl '{text}': {message}") and len(err.strip().splitlines()) == 1, err


def test_node_ttl_defaults_to_30s_and_reads_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --node-ttl the session's TTL is 30 s; REGISTRAR_NODE_TTL sets it, and the flag beats it."""
    args = ["--ip", "10.0.0.9", "--catalog", "consul://10.1.1.1:8500"]
    assert settings_for(args, monkeypatch).node_ttl == 30
    assert settings_for(args, monkeypatch, {"REGISTRAR_NODE_TTL": "1m"}).node_ttl == 60
    assert settings_for([*args, "--node-ttl", "15s"], monkeypatch, {"REGISTRAR_NODE_TTL": "1m"}).node_ttl == 15


# The rule ----------------------------------------------------------------------------------------


def test_a_nodes_key_is_the_name_right_under_the_prefix() -> None:
    """registrar/nodes/<node> names <node>; the prefix itself, deeper keys and other keys name none."""
    assert [node_of_key(k) for k in (f"{PREFIX}h1", PREFIX, f"{PREFIX}h1/x", "registrar/locks/x")] == [
        "h1",
        None,
        None,
        None,
    ]


def test_only_keys_held_by_a_session_keep_a_node() -> None:
    """A key without a session (written by hand, or released) keeps no node alive."""
    entries = [
        {"Key": f"{PREFIX}h1", "Session": "s1"},
        {"Key": f"{PREFIX}h2"},
        {"Key": f"{PREFIX}h3", "Session": ""},
        {"Key": LOCK_KEY, "Session": "s1"},
    ]
    assert held_nodes(entries) == {"h1"}
    assert held_nodes(None) == set()


@pytest.mark.parametrize(
    ("meta", "owned"),
    [
        (OWNED, True),
        ({**OWNED, "registrar-instance": "blue"}, True),
        ({"external-node": "true"}, False),  # someone else's external node (consul-esm's, by hand)
        ({**OWNED, "external-node": "false"}, False),
        ({k: v for k, v in OWNED.items() if k != "external-node"}, False),  # an agent's node
        ({**OWNED, "external-source": "nomad"}, False),
    ],
)
def test_only_registrars_external_nodes_are_ever_removed(meta: dict[str, str], owned: bool) -> None:
    """A node is registrar's to remove only with NodeMeta external-node=true, external-source=registrar and a host."""
    assert is_owned({"Node": "n", "Meta": meta}) is owned


def test_a_node_is_dead_once_keyless_for_the_grace() -> None:
    """Keyless since first seen so; dead once that lasts the grace; a key coming back (or the node going) forgets it."""
    since = keyless_since({"a", "b", "c"}, {"c"}, {}, now=100.0)
    assert since == {"a": 100.0, "b": 100.0}
    since = keyless_since({"a", "b", "c"}, {"b", "c"}, since, now=105.0)
    assert since == {"a": 100.0}
    assert past_grace(since, now=109.9, grace=10.0) == []
    assert past_grace(since, now=110.0, grace=10.0) == ["a"]
    since = keyless_since({"a", "b"}, {"a"}, {"b": 90.0}, now=111.0)
    assert since == {"b": 90.0}
    assert keyless_since({"b"}, set(), {"gone": 1.0}, now=2.0) == {"b": 2.0}


def test_the_watch_blocks_until_the_next_grace_ends() -> None:
    """A blocking query waits at most until the earliest grace ends (at least 1 s), else the longest wait."""
    assert next_look({}, now=0.0, grace=10.0, most=60.0) == 60.0
    assert next_look({"a": 0.0, "b": 5.0}, now=3.0, grace=10.0, most=60.0) == 7.0
    assert next_look({"a": 0.0}, now=30.0, grace=10.0, most=60.0) == 1.0


# The session and the watch, against a stand-in of Consul -----------------------------------------


class FakeConsul:
    """Consul's sessions, KV store and catalog as registrar uses them, on Consul's rules: Behavior delete (a
    session's keys go with it), a key held by another session is not acquired, a node deregistered takes its
    sessions; ``deny`` makes sessions and keys an ACL denial. ``session``, ``kv``, ``catalog``: py-consul's APIs."""

    def __init__(self) -> None:
        self.sessions: dict[str, dict[str, Any]] = {}
        self.keys: dict[str, dict[str, Any]] = {}
        self.nodes: dict[str, dict[str, Any]] = {}
        self.deregistered: list[str] = []
        self.deny = False
        self.down = False
        self.index = 10
        self.session, self.kv, self.catalog, self.http = _Session(self), _KV(self), _Catalog(self), _Txn(self)

    def next_index(self) -> int:
        self.index += 1
        return self.index

    def prepare_headers(self, token: Any) -> dict[str, str]:
        return {"X-Consul-Token": token} if token else {}

    def check(self) -> None:
        if self.deny:
            raise ACLPermissionDenied("403 Permission denied")
        if self.down:
            raise ConsulException("500 No cluster leader")

    def add_node(self, name: str, meta: dict[str, str]) -> None:
        self.nodes[name] = {"Node": name, "Address": "10.0.0.1", "Meta": meta, "ModifyIndex": self.next_index()}

    def remove_node(self, name: str) -> None:
        """As Consul removes a node: its services and checks, and its sessions (their keys with them)."""
        self.nodes.pop(name, None)
        self.deregistered.append(name)
        for sid in [s for s, info in self.sessions.items() if info["Node"] == name]:
            self.destroy(sid)

    def destroy(self, sid: str) -> None:
        self.sessions.pop(sid, None)
        for key in [k for k, e in self.keys.items() if e.get("Session") == sid]:
            del self.keys[key]


class _Session:
    def __init__(self, consul: FakeConsul) -> None:
        self.consul = consul

    def create(self, name: str, node: str, checks: Any, lock_delay: int, behavior: str, ttl: int, token: Any) -> str:
        self.consul.check()
        assert (checks, behavior, lock_delay) == ([], "delete", 0)
        sid = str(uuid.uuid4())
        self.consul.sessions[sid] = {"ID": sid, "Name": name, "Node": node, "TTL": f"{ttl}s"}
        return sid

    def renew(self, sid: str, token: Any) -> dict[str, Any]:
        self.consul.check()
        if sid not in self.consul.sessions:
            raise NotFound(f"Session id '{sid}' not found")
        return self.consul.sessions[sid]

    def info(self, sid: str, token: Any) -> tuple[str, dict[str, Any] | None]:
        return "1", self.consul.sessions.get(sid)

    def destroy(self, sid: str, token: Any) -> bool:
        self.consul.destroy(sid)
        return True


class _KV:
    def __init__(self, consul: FakeConsul) -> None:
        self.consul = consul

    def put(self, key: str, value: str, token: Any, acquire: str = "", release: str = "") -> bool:
        self.consul.check()
        held = self.consul.keys.get(key, {}).get("Session")
        if release:
            if held != release:
                return False
            self.consul.keys[key] = {"Key": key, "Value": value, "ModifyIndex": self.consul.next_index()}
            return True
        if acquire not in self.consul.sessions or (held and held != acquire):
            return False
        self.consul.keys[key] = {
            "Key": key,
            "Value": value,
            "Session": acquire,
            "ModifyIndex": self.consul.next_index(),
        }
        return True

    def get(self, key: str, recurse: bool = False, index: Any = None, wait: Any = None, token: Any = None) -> Any:
        self.consul.check()
        if recurse:
            return "7", [e for k, e in sorted(self.consul.keys.items()) if k.startswith(key)] or None
        return "7", self.consul.keys.get(key)


class _Catalog:
    def __init__(self, consul: FakeConsul) -> None:
        self.consul = consul

    def nodes(self, node_meta: dict[str, str], token: Any) -> tuple[str, list[dict[str, Any]]]:
        found = self.consul.nodes.values()
        return "1", [n for n in found if all(n["Meta"].get(k) == v for k, v in node_meta.items())]

    def node(self, name: str, token: Any) -> tuple[str, dict[str, Any] | None]:
        found = self.consul.nodes.get(name)
        return "1", {"Node": found, "Services": {}} if found else None

    def deregister(self, name: str, token: Any) -> bool:
        self.consul.remove_node(name)
        return True


class _Txn:
    """``PUT /v1/txn`` with the verbs registrar sends (KV check-not-exists and check-index, Node delete-cas and
    delete), all or nothing, answered through py-consul's callback (409 when rolled back)."""

    def __init__(self, consul: FakeConsul) -> None:
        self.consul = consul

    def put(self, callback: Any, path: str, params: Any = None, data: str = "", headers: Any = None) -> Any:
        assert path == "/v1/txn"
        self.consul.check()
        ops, errors, deletes = json.loads(data), [], []
        for i, op in enumerate(ops):
            if "KV" in op:
                kv, entry = op["KV"], self.consul.keys.get(op["KV"]["Key"])
                assert kv["Verb"] in ("check-not-exists", "check-index")
                if (kv["Verb"] == "check-not-exists" and entry) or (
                    kv["Verb"] == "check-index" and (entry or {}).get("ModifyIndex") != kv["Index"]
                ):
                    errors.append({"OpIndex": i, "What": "failed"})
            else:
                node = op["Node"]["Node"]
                found = self.consul.nodes.get(node["Node"])
                if op["Node"]["Verb"] == "delete-cas" and (found or {}).get("ModifyIndex") != node["ModifyIndex"]:
                    errors.append({"OpIndex": i, "What": "index is stale"})
                deletes.append(node["Node"])
        if errors:
            return callback(Response(409, {}, json.dumps({"Results": None, "Errors": errors})))
        for name in deletes:
            self.consul.remove_node(name)
        return callback(Response(200, {}, json.dumps({"Results": [], "Errors": None})))


class FakeSink:
    """What NodeSession needs of CatalogSink: the node, and ``ensure_node`` (which writes it when missing)."""

    def __init__(self, consul: FakeConsul, name: str, instance: str = "") -> None:
        self.node = catalog_node(name, "10.0.0.1", instance)
        self.consul = consul
        self.target = ConsulTarget(port=1)

    def ensure_node(self) -> None:
        if self.node.name not in self.consul.nodes:
            self.consul.add_node(self.node.name, dict(self.node.meta))


@pytest.fixture
def consul() -> FakeConsul:
    return FakeConsul()


def keeper(consul: FakeConsul, name: str, instance: str = "", ttl: int = 10) -> NodeSession:
    """A NodeSession of host ``name`` on the stand-in (its renewal thread not started)."""
    connection = ConsulConnection(ConsulTarget(port=1))
    connection.close()
    connection.client = cast(Any, consul)
    return NodeSession(cast(Any, FakeSink(consul, name, instance)), connection, ttl)


def test_a_session_holds_the_nodes_key_with_no_node_checks(consul: FakeConsul) -> None:
    """At start: the node written, a session on it (no checks, Behavior delete, the TTL), its key acquired."""
    session = keeper(consul, "h1", ttl=15)
    session._establish(take_over=True)
    assert session.holds_key
    assert consul.keys[f"{PREFIX}h1"]["Session"] == session.session_id
    assert consul.sessions[str(session.session_id)] | {"ID": ""} == {
        "ID": "",
        "Name": "registrar h1",
        "Node": "h1",
        "TTL": "15s",
    }
    assert consul.nodes["h1"]["Meta"]["external-node"] == "true"


def test_a_lost_session_is_created_again_with_a_warning(consul: FakeConsul) -> None:
    """A renewal answered 404: one warning, a new session, the key taken again; nothing else is written."""
    session = keeper(consul, "h1")
    session._establish(take_over=True)
    lost = session.session_id
    consul.destroy(str(lost))
    with capture_logs() as logs:
        session.keep()
    assert [(e["event"], e["log_level"]) for e in logs] == [("catalog_session_lost", "warning")]
    assert session.session_id not in (None, lost)
    assert consul.keys[f"{PREFIX}h1"]["Session"] == session.session_id
    assert consul.deregistered == []


def test_a_renewal_keeps_the_session(consul: FakeConsul) -> None:
    """A renewal that succeeds changes nothing and logs nothing."""
    session = keeper(consul, "h1")
    session._establish(take_over=True)
    first = session.session_id
    with capture_logs() as logs:
        session.keep()
    assert (logs, session.session_id, consul.keys[f"{PREFIX}h1"]["Session"]) == ([], first, first)


def test_a_restart_takes_over_its_predecessors_key(consul: FakeConsul) -> None:
    """A registrar started again while its killed predecessor's session lives destroys that session and holds the
    key at once."""
    old = keeper(consul, "h1")
    old._establish(take_over=True)
    new = keeper(consul, "h1")
    with capture_logs() as logs:
        new._establish(take_over=True)
    assert new.holds_key and consul.keys[f"{PREFIX}h1"]["Session"] == new.session_id
    assert old.session_id not in consul.sessions
    assert [e["event"] for e in logs] == ["catalog_session_taken_over"]


def test_another_instances_key_is_left_alone(consul: FakeConsul) -> None:
    """A key held by another registrar's session on this node (another --instance) is not taken: it keeps the node."""
    other = keeper(consul, "h1", instance="blue")
    other._establish(take_over=True)
    mine = keeper(consul, "h1")
    mine._establish(take_over=True)
    assert not mine.holds_key
    assert consul.keys[f"{PREFIX}h1"]["Session"] == other.session_id


def test_a_token_without_the_rights_is_a_configuration_error(consul: FakeConsul) -> None:
    """ACLs refusing the session: NodeSessionDenied (exit 3), its one line naming what the token needs."""
    session = keeper(consul, "h1")
    consul.deny = True
    with pytest.raises(NodeSessionDenied) as denied:
        session._establish(take_over=True)
    message = str(denied.value)
    assert message.startswith("creating a session for catalog node h1: permission denied by Consul's ACLs")
    assert "needs" in message and "\n" not in message


def watching(consul: FakeConsul, name: str = "h1") -> DeadNodeWatch:
    session = keeper(consul, name)
    session._establish(take_over=True)
    return DeadNodeWatch(session, session.consul, grace=10.0)


def test_a_node_keyless_past_the_grace_is_removed_once(consul: FakeConsul) -> None:
    """Only registrar's external nodes without a held key, once past the grace, are deregistered; one info event."""
    watch = watching(consul)
    for name in ("h2", "h3"):
        consul.add_node(name, OWNED | {"registrar-host": name})
    keeper(consul, "h3")._establish(take_over=True)
    consul.add_node("esm-node", {"external-node": "true"})
    consul.add_node("agent-node", {"consul-network-segment": ""})
    with capture_logs() as logs:
        watch.look(None)
    assert set(watch.since) == {"h2"} and consul.deregistered == []
    assert [(e["event"], e["log_level"], e["node"]) for e in logs] == [("catalog_node_keyless", "info", "h2")]

    watch.since["h2"] -= 10.0
    with capture_logs() as logs:
        watch.look("7")
    assert consul.deregistered == ["h2"]
    assert [(e["event"], e["node"]) for e in logs] == [("catalog_node_removed", "h2")]
    assert set(consul.nodes) == {"h1", "h3", "esm-node", "agent-node"}


def test_the_removal_lock_is_let_go_of_after_each_pass(consul: FakeConsul) -> None:
    """Once this registrar has removed the dead nodes, the removal lock is free: another registrar takes it
    and removes the next dead node."""
    watch = watching(consul)
    consul.add_node("h2", OWNED | {"registrar-host": "h2"})
    watch.look(None)
    watch.since["h2"] -= 10.0
    watch.look("7")
    assert consul.deregistered == ["h2"] and not consul.keys[LOCK_KEY].get("Session")
    other = watching(consul, "h3")
    consul.add_node("h4", OWNED | {"registrar-host": "h4"})
    other.look(None)
    other.since["h4"] -= 10.0
    other.look("7")
    assert consul.deregistered == ["h2", "h4"]


def test_only_the_lock_holder_removes(consul: FakeConsul) -> None:
    """Another registrar holding the removal lock: this one removes nothing, and looks again a grace later."""
    watch = watching(consul)
    other = keeper(consul, "h3")
    other._establish(take_over=True)
    consul.kv.put(LOCK_KEY, "h3", acquire=str(other.session_id), token=None)
    consul.add_node("h2", OWNED | {"registrar-host": "h2"})
    watch.look(None)
    watch.since["h2"] -= 10.0
    with capture_logs() as logs:
        watch.look("7")
    assert consul.deregistered == []
    assert past_grace(watch.since, time.monotonic(), 10.0) == []
    assert [(e["event"], e["log_level"], e["nodes"], e["holder"]) for e in logs] == [
        ("catalog_node_removal_elsewhere", "info", ["h2"], "h3")
    ]


def test_a_node_whose_key_came_back_is_not_removed(consul: FakeConsul) -> None:
    """The node's key held again by the time the lock holder looks once more: the node stays."""
    watch = watching(consul)
    consul.add_node("h2", OWNED | {"registrar-host": "h2"})
    watch.look(None)
    keeper(consul, "h2")._establish(take_over=True)
    assert not watch._remove("h2", keyless_for=11.0)
    assert consul.deregistered == []


def test_the_own_node_is_never_removed(consul: FakeConsul) -> None:
    """This registrar's own node, keyless a moment (its session being made again), is not a candidate."""
    watch = watching(consul)
    consul.destroy(str(watch.session.session_id))
    watch.session.session_id = None
    watch.look(None)
    assert watch.since == {}


def test_a_key_deleted_while_its_session_lives_is_taken_again(consul: FakeConsul) -> None:
    """The node's key deleted under a live session (consul kv delete -recurse registrar/): the next renewal takes
    it again, with a warning, and the other registrars never remove the node."""
    h2 = keeper(consul, "h2")
    h2._establish(take_over=True)
    del consul.keys[f"{PREFIX}h2"]
    with capture_logs() as logs:
        h2.keep()
    assert consul.keys[f"{PREFIX}h2"]["Session"] == h2.session_id and h2.holds_key
    assert [(e["event"], e["log_level"]) for e in logs] == [("catalog_key_lost", "warning")]
    watch = watching(consul, "h1")
    watch.look(None)
    assert watch.since == {}
    watch.look("7")
    assert consul.deregistered == []


def test_a_grace_counts_only_what_was_seen_without_a_gap(consul: FakeConsul, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node seen keyless, then a watch that fails for a while: when it sees the node keyless again (its
    registrar restarting at that moment), the grace starts over; the node is not removed at once."""
    monkeypatch.setattr(catalog_liveness, "RETRY", 0.001)
    watch = watching(consul)
    consul.add_node("h2", OWNED | {"registrar-host": "h2"})
    watch.look(None)
    watch.since["h2"] -= 600.0  # ten minutes ago; then Consul is out of reach
    real, looks = watch.look, []

    def look(index: str | None) -> str:
        looks.append(index)
        if len(looks) == 1:
            raise ConsulError("watching registrar/nodes/: connection refused")
        try:
            return real(index)
        finally:
            watch._stop.set()

    monkeypatch.setattr(watch, "look", look)
    watch._run()
    assert len(looks) == 2
    assert consul.deregistered == []
    assert "h2" in watch.since


class Turns:
    """A stop event that lets a thread's loop run on the test's thread: ``wait`` returns at once, and True (stop)
    after ``n`` calls."""

    def __init__(self, n: int) -> None:
        self.left = n

    def wait(self, timeout: float | None = None) -> bool:
        self.left -= 1
        return self.left < 0

    def is_set(self) -> bool:
        return self.left < 0

    def set(self) -> None:
        self.left = -1


def test_readyz_says_so_once_the_session_has_not_been_renewed_for_a_ttl(consul: FakeConsul, started: Any) -> None:
    """Renewals failing for longer than --node-ttl: /readyz names the node and the error (the node may be
    removed by the others); a renewal that goes through makes the daemon ready again."""
    session = keeper(consul, "h1")
    session._establish(take_over=True)

    class CatalogStandIn(MemoryConsul):
        def node_unkept(self) -> str:
            return session.unkept(time.monotonic())

    daemon = started(MemoryDocker(), CatalogStandIn())
    step_until(daemon, daemon.ready.is_set)
    consul.down = True
    cast(Any, session)._stop = Turns(1)
    session._run()
    assert daemon.not_ready() == ""  # within the TTL
    session.renewed = time.monotonic() - 11  # the last renewal that went through, 11 s ago
    cast(Any, session)._stop = Turns(1)
    session._run()
    reason = daemon.not_ready()
    assert reason.startswith("catalog node h1: its session not renewed for 11 s (--node-ttl 10s): renewing the session")
    assert "500 No cluster leader" in reason
    consul.down = False
    cast(Any, session)._stop = Turns(1)
    session._run()
    assert daemon.not_ready() == ""


def test_the_session_held_event_says_whether_the_key_is_held(
    consul: FakeConsul, monkeypatch: pytest.MonkeyPatch
) -> None:
    """catalog_session_held says holds_key=False when another registrar of this node (another --instance)
    holds its key."""
    monkeypatch.setattr(DeadNodeWatch, "start", lambda self: None)
    keeper(consul, "h1", instance="blue")._establish(take_over=True)
    liveness = CatalogLiveness(cast(Any, FakeSink(consul, "h1")), 10)
    client, liveness.connection.client = liveness.connection.client, cast(Any, consul)
    try:
        with capture_logs() as logs:
            liveness.start()
    finally:
        liveness.connection.client = client
        liveness.close()
    assert [(e["event"], e["holds_key"]) for e in logs] == [("catalog_session_held", False)]


def test_a_failed_start_closes_its_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """hold_node failing (Consul unreachable; run retries it at start) leaves no connection to Consul open."""
    made: list[ConsulConnection] = []

    class Recorded(ConsulConnection):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(catalog_liveness, "ConsulConnection", Recorded)
    sink = CatalogSink(ConsulTarget(port=1), catalog_node("h1", "10.0.0.1"))
    try:
        with pytest.raises(ConsulError):
            sink.hold_node(10)
    finally:
        sink.close()
    assert len(made) == 1
    assert made[0].client.http.pool.pool is None, "the liveness connection's pool is still open"


def test_the_catalog_threads_outlive_errors_and_end_on_stop(
    consul: FakeConsul, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected error in a renewal or a look does not end its thread; stop() ends both."""
    monkeypatch.setattr(catalog_liveness, "RETRY", 0.001)
    watch = watching(consul)
    session = watch.session
    cast(Any, session).ttl = 0.002
    keeps: list[int] = []
    looks: list[int] = []
    counted = threading.Condition()

    def keep() -> None:
        with counted:
            keeps.append(1)
            counted.notify_all()
        if len(keeps) == 1:
            raise KeyError("a bug")

    def look(index: str | None) -> str:
        with counted:
            looks.append(1)
            counted.notify_all()
        if len(looks) == 1:
            raise KeyError("a bug")
        if len(looks) >= 3:
            watch._stop.wait()  # a blocking query that returns when the watch stops, as Consul's ends with it
        return "7"

    monkeypatch.setattr(session, "keep", keep)
    monkeypatch.setattr(watch, "look", look)
    session._thread.start()
    watch.start()
    with counted:
        turned = counted.wait_for(lambda: len(keeps) >= 3 and len(looks) >= 3, timeout=5)
    watch.stop()
    session.stop()
    assert turned, f"renewals {len(keeps)}, looks {len(looks)}"
    assert not watch._thread.is_alive() and not session._thread.is_alive()


def test_a_host_that_comes_back_during_its_removal_keeps_its_node(consul: FakeConsul) -> None:
    """The dead host's registrar starts again between the lock holder's last read of its key and the removal:
    the removal does not happen (one transaction, checked against the key), and the node stays with its key."""
    watch = watching(consul)
    consul.add_node("h2", OWNED | {"registrar-host": "h2"})
    watch.look(None)
    watch.since["h2"] -= 10.0
    read_node = consul.catalog.node
    h2 = keeper(consul, "h2")

    def node(name: str, token: Any) -> Any:
        found = read_node(name, token)
        if name == "h2":
            h2._establish(take_over=True)  # h2's registrar is back: its session, its key
        return found

    consul.catalog.node = node  # type: ignore[method-assign]
    with capture_logs() as logs:
        watch.look("7")
    assert consul.deregistered == [] and "h2" in consul.nodes
    assert consul.keys[f"{PREFIX}h2"]["Session"] == h2.session_id
    assert "catalog_node_removed" not in [e["event"] for e in logs]


def test_a_dead_node_is_removed_in_one_transaction_checked_against_its_key() -> None:
    """The removal's transaction: the key still absent (or unchanged, without a session), then the node deleted
    only if unchanged."""
    node = {"Node": "h2", "ModifyIndex": 42}
    assert removal_ops("h2", None, node) == [
        {"KV": {"Verb": "check-not-exists", "Key": f"{PREFIX}h2"}},
        {"Node": {"Verb": "delete-cas", "Node": {"Node": "h2", "ModifyIndex": 42}}},
    ]
    assert removal_ops("h2", {"Key": f"{PREFIX}h2", "ModifyIndex": 7}, {"Node": "h2"})[0] == {
        "KV": {"Verb": "check-index", "Key": f"{PREFIX}h2", "Index": 7}
    }
