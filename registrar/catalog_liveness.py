"""Liveness of catalog nodes (``run --catalog``): each registrar keeps its host's node alive through a Consul
session, and the registrars that live remove the node of a host whose registrar is gone.

No agent runs on a ``--catalog`` host, so nothing in Consul notices when the host dies: its services would
stay in the catalog with their last status (Docker health passing) for ever. So:

- **A session per host** (``NodeSession``): ``PUT /v1/session/create`` on this host's node with ``TTL`` =
  ``--node-ttl``, ``Behavior: delete``, ``LockDelay: 0`` and no node checks (py-consul's
  ``session.create(checks=[])`` sends ``"checks": []``, which Consul 1.8 reads as ``NodeChecks: []``; the
  default, ``serfHealth``, is an agent's check that an external node lacks). With it registrar acquires the
  key ``registrar/nodes/<node>`` (``PUT /v1/kv/<key>?acquire=<session>``), and renews the session every
  TTL/2 in a thread of its own. When the session expires (Consul's timer runs for twice the TTL from the
  last renewal), Consul deletes the key. A renewal answered 404 (the session was lost: a leader change
  that lost it, a partition longer than the TTL) creates a new one and takes the key again, with a
  warning; no registration is touched. Each renewal also reads the key: one deleted while the session lives
  (``consul kv delete -recurse registrar/``) is taken again (``catalog_key_lost``). A renewal that has not gone
  through for a TTL makes ``/readyz`` say so (``unkept``).
- **A watch on the prefix** (``DeadNodeWatch``): a blocking query on ``registrar/nodes/`` (``GET
  /v1/kv/registrar/nodes/?recurse&index=``) and the catalog's external nodes. A node that registrar owns
  (NodeMeta ``external-node=true``, ``external-source=registrar``, ``registrar-host``) and that has no key
  held by a session, continuously for a grace of one TTL as this registrar sees it (``catalog_node_keyless``
  when it starts; a failed look forgets what was seen), is dead. One registrar removes it: the one that takes
  the lock ``registrar/locks/node-removal`` (a key acquired with its session, let go of after each pass; the
  others log ``catalog_node_removal_elsewhere`` and look again a grace later). It reads the node and its key
  once more, then removes the node (its services and checks go with it) in one ``PUT /v1/txn`` that holds
  only while the key is still as read (a registrar starting again on that host takes it) and the node too,
  and logs ``catalog_node_removed``. The rule is level-triggered: a registrar that starts after a host died
  removes that host too.

**A graceful stop leaves the session to expire** (it is not destroyed). Destroying it would delete the
key at once (``Behavior: delete``), and the others would remove the node one grace later, while a
restart for an upgrade commonly takes longer than that; and a SIGTERM would then do to the host's services
what SIGKILL does not. Left alone, the session lasts 1.5 to 2 TTLs after the stop, then the grace runs: a
registrar restarted within about 2 TTLs (60 s with the default 30 s) keeps the node and its services
throughout; at start it destroys its predecessor's session (same node and session name), takes the key at
once and renews from there. A host whose registrar stays stopped leaves the catalog after about 3 TTLs,
as a dead one does: its checks are no longer kept by anyone, so its entries would only lie.

Consequence: a node is kept by a *running* registrar. ``registrar sync --catalog`` alone holds no session,
so where registrars run elsewhere, the node it wrote is removed: seen keyless at a watch's next look (no key
changed to wake it: within ``MOST_WAIT``), and removed a grace later.

The pure rule (which nodes are dead) is ``keyless_since`` and ``past_grace``; the classes do the I/O, through
py-consul's API on registrar's client (registrar.consul_sink.ConsulConnection).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from consul.callback import CB
from consul.exceptions import ACLPermissionDenied, ClientError, NotFound

from registrar.catalog_sink import EXTERNAL_NODE, is_external
from registrar.consul_sink import ConsulConnection
from registrar.errors import ConfigError
from registrar.model import META_HOST, META_INSTANCE, META_SOURCE, META_SOURCE_VALUE

if TYPE_CHECKING:
    from registrar.catalog_sink import CatalogSink

log = structlog.get_logger("registrar")
T = TypeVar("T")

PREFIX = "registrar/nodes/"
"""The KV prefix of the nodes' keys: ``registrar/nodes/<node>``, held by that node's registrar's session."""
LOCK_KEY = "registrar/locks/node-removal"
"""The lock whose holder removes dead nodes (one registrar at a time)."""
RETRY = 2.0
"""Seconds between attempts while the session or its key could not be had (Consul down, key held)."""
MOST_WAIT = 60
"""Seconds a blocking query on the prefix is held at most, when no node's grace ends sooner."""
STOP_WAIT = 1.0
"""Seconds ``close`` waits for each thread, which may be inside a request (the watch's: a blocking query)."""


class NodeSessionDenied(ConfigError):
    """Consul's ACLs refused the session or the node's key: retrying cannot help."""


# The rule (pure) ---------------------------------------------------------------------------------


def node_of_key(key: str) -> str | None:
    """The node a key under ``PREFIX`` names; None for anything else (a deeper key, the prefix itself)."""
    name = key[len(PREFIX) :] if key.startswith(PREFIX) else ""
    return name if name and "/" not in name else None


def held_nodes(entries: Iterable[Mapping[str, Any]] | None) -> set[str]:
    """The nodes whose key, in a recursive ``GET /v1/kv/<PREFIX>`` answer, is held by a session."""
    return {n for e in entries or () if e.get("Session") and (n := node_of_key(str(e.get("Key", "")))) is not None}


def is_owned(node: Mapping[str, Any]) -> bool:
    """Whether a node (as ``/v1/catalog/nodes`` sends each) is an external node that registrar wrote."""
    meta = node.get("Meta") or {}
    return is_external(node) and meta.get(META_SOURCE) == META_SOURCE_VALUE and bool(meta.get(META_HOST))


def keyless_since(owned: Iterable[str], held: set[str], since: Mapping[str, float], now: float) -> dict[str, float]:
    """For each node in ``owned`` whose key is not ``held``: since when it has been so, as seen (``since``
    from the last look; ``now`` for a node newly seen keyless). A node with its key, or gone, is forgotten."""
    return {node: since.get(node, now) for node in owned if node not in held}


def past_grace(since: Mapping[str, float], now: float, grace: float) -> list[str]:
    """The nodes keyless for ``grace`` seconds or more: dead. Sorted."""
    return sorted(node for node, when in since.items() if now - when >= grace)


def next_look(since: Mapping[str, float], now: float, grace: float, most: float) -> float:
    """Seconds until the next node's grace ends (at least 1), at most ``most``: how long to block."""
    ends = [when + grace - now for when in since.values()]
    return max(1.0, min([most, *ends]))


# The I/O -----------------------------------------------------------------------------------------


class _Denied(Exception):
    """ACL denial, carried out of ``ConsulConnection._call`` untranslated."""


class NodeSession:
    """This host's session and its node's key: created at ``start``, renewed every TTL/2 in a thread."""

    def __init__(self, sink: CatalogSink, connection: ConsulConnection, ttl: int) -> None:
        self.sink = sink
        self.consul = connection
        self.node = sink.node.name
        self.ttl = ttl
        self.key = PREFIX + self.node
        instance = dict(sink.node.meta).get(META_INSTANCE, "")
        self.name = f"registrar {self.node}" + (f" {instance}" if instance else "")
        """The session's Name: the same for each run of this host's registrar, so a run knows its predecessor's."""
        self.session_id: str | None = None
        self.holds_key = False
        self.renewed: float | None = None
        """When (``time.monotonic``) the session was last made or renewed, its key checked; None before ``start``."""
        self.error = ""
        """Why the last turn of the renewals failed ("" when it succeeded)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="catalog-session", daemon=True)

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """``fn`` through the connection's error translation, ACL denial a NodeSessionDenied."""

        def guarded() -> T:
            try:
                return fn()
            except ACLPermissionDenied as e:
                raise _Denied(str(e).strip().splitlines()[0] if str(e).strip() else "403") from None

        try:
            return self.consul._call(what, guarded)
        except _Denied as e:
            raise NodeSessionDenied(
                f"{what}: permission denied by Consul's ACLs ({e}); registrar's token (CONSUL_HTTP_TOKEN) needs "
                f"{self.consul.needs}"
            ) from None

    def start(self) -> None:
        """The node, a new session and the key, taken from this host's previous run if it still holds it;
        then the renewals start. Raises ConsulError (unreachable), NodeSessionDenied (ACLs)."""
        self._establish(take_over=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing (the session is left to expire: see the module's docstring)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(STOP_WAIT)

    def unkept(self, now: float) -> str:
        """Why this host's node is not kept alive (``/readyz``): no renewal has gone through for longer than the
        TTL, so Consul may have let the session go and the other registrars may remove the node; "" otherwise."""
        if self.renewed is None or now - self.renewed <= self.ttl:
            return ""
        return (
            f"catalog node {self.node}: its session not renewed for {now - self.renewed:.0f} s "
            f"(--node-ttl {self.ttl}s): {self.error or 'no answer yet'}"
        )

    def _establish(self, take_over: bool) -> None:
        self.sink.ensure_node()
        client, token = self.consul.client, self.consul.token
        self.session_id = self.call(
            f"creating a session for catalog node {self.node}",
            lambda: client.session.create(
                name=self.name, node=self.node, checks=[], lock_delay=0, behavior="delete", ttl=self.ttl, token=token
            ),
        )
        self.holds_key = self._acquire(take_over)
        self.renewed = time.monotonic()

    def _acquire(self, take_over: bool) -> bool:
        """Take the node's key with the session; ``take_over``: from this host's previous run too, whose
        session is destroyed (its key goes with it) if it still holds the key."""
        client, token, session = self.consul.client, self.consul.token, self.session_id
        what, address = f"taking key {self.key}", self.sink.node.address
        if self.call(what, lambda: client.kv.put(self.key, address, acquire=session, token=token)):
            return True
        if not take_over:
            return False
        _, held = self.call(what, lambda: client.kv.get(self.key, token=token))
        holder = (held or {}).get("Session")
        if not holder:
            return bool(self.call(what, lambda: client.kv.put(self.key, address, acquire=session, token=token)))
        _, info = self.call(what, lambda: client.session.info(holder, token=token))
        if not info or info.get("Node") != self.node or info.get("Name") != self.name:
            return False  # another registrar's for this node (another --instance): it keeps the node alive
        self.call(what, lambda: client.session.destroy(holder, token=token))
        log.info("catalog_session_taken_over", node=self.node, previous=holder)
        return bool(self.call(what, lambda: client.kv.put(self.key, address, acquire=session, token=token)))

    def _run(self) -> None:
        while not self._stop.wait(min(RETRY, self.ttl / 2) if self.error else self.ttl / 2):
            self.turn()

    def turn(self) -> None:
        """One turn of the renewals (``keep``); a failure is logged and kept (``unkept`` reports it once no
        renewal has gone through for a TTL), never raised: nothing must end the renewals."""
        try:
            self.keep()
            self.error = ""
        except Exception as e:  # ConsulError, NodeSessionDenied, a bug
            self.error = str(e) or type(e).__name__
            if not self._stop.is_set():
                log.warning("catalog_session_failed", node=self.node, error=self.error)

    def keep(self) -> None:
        """Renew the session (or make a new one, when lost), and make sure it holds the key: a key deleted
        while the session lives (``consul kv delete -recurse registrar/``, a snapshot restored) is taken again,
        else the others would remove this live node."""
        client, token, session = self.consul.client, self.consul.token, self.session_id
        if session is None:
            self._establish(take_over=False)
            return

        def renew() -> bool:
            try:
                client.session.renew(session, token=token)
            except NotFound:
                return False
            return True

        if not self.call(f"renewing the session of catalog node {self.node}", renew):
            log.warning("catalog_session_lost", node=self.node, session=session)
            self.session_id, self.holds_key = None, False
            self._establish(take_over=False)
            return
        if self.holds_key:
            # A read, not a second acquire: acquiring again would be idempotent, but a write, which wakes every
            # registrar's watch of the prefix at each renewal of each host.
            _, held = self.call(f"reading key {self.key}", lambda: client.kv.get(self.key, token=token))
            if (held or {}).get("Session") != session:
                log.warning("catalog_key_lost", node=self.node, key=self.key)
                self.holds_key = False
        if not self.holds_key:
            self.holds_key = self._acquire(take_over=False)
        self.renewed = time.monotonic()


class DeadNodeWatch:
    """Watches the nodes' keys and removes the nodes whose key stays gone for a grace, under the lock."""

    def __init__(self, session: NodeSession, connection: ConsulConnection, grace: float) -> None:
        self.session = session
        self.consul = connection
        self.node = session.node
        self.grace = grace
        self.since: dict[str, float] = {}
        """Node -> since when (``time.monotonic``) it has been seen without a held key."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="catalog-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop watching; a blocking query in flight is not waited for (the thread ends with it or the process)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(STOP_WAIT)

    def _run(self) -> None:
        index: str | None = None
        delay = 0.0
        while not self._stop.is_set():
            try:
                index = self.look(index)
                delay = 0.0
            except Exception as e:  # ConsulError, NodeSessionDenied; anything else must not end the watch
                if self._stop.is_set():
                    return
                log.warning("catalog_watch_failed", error=str(e) or type(e).__name__)
                # A grace counts continuous observation: what was seen before the gap proves nothing after it.
                index, self.since = None, {}
                delay = min(2 * delay or RETRY, MOST_WAIT / 2)
                self._stop.wait(delay)

    def look(self, index: str | None) -> str:
        """One blocking read of the prefix (returns at a change of the keys, or when the next grace ends), then
        the dead nodes removed. Returns the index to block on next."""
        client, token = self.consul.client, self.consul.token
        wait = math.ceil(next_look(self.since, time.monotonic(), self.grace, MOST_WAIT))
        what = f"watching {PREFIX}"
        new_index, entries = self.session.call(
            what, lambda: client.kv.get(PREFIX, recurse=True, index=index, wait=f"{wait}s", token=token)
        )
        if self._stop.is_set():
            return str(new_index)
        _, nodes = self.session.call(
            "reading the catalog's external nodes",
            lambda: client.catalog.nodes(node_meta={EXTERNAL_NODE: "true"}, token=token),
        )
        now = time.monotonic()
        owned = {n["Node"] for n in nodes or () if is_owned(n) and n.get("Node") != self.node}
        before, self.since = self.since, keyless_since(owned, held_nodes(entries), self.since, now)
        for node in sorted(self.since.keys() - before.keys()):
            log.info("catalog_node_keyless", node=node, grace_s=self.grace)
        dead = past_grace(self.since, now, self.grace)
        if dead:
            self._remove_dead(dead, now)
        if index is not None and new_index is not None and int(new_index) < int(index):
            return "0"  # the index went back (a snapshot restored): start over, as Consul advises
        return str(new_index)

    def _remove_dead(self, dead: list[str], now: float) -> None:
        """Remove these nodes, if this registrar can take the node-removal lock; let go of it after. Another
        registrar holding it removes them; should it not, they are tried again after a grace."""
        client, token, session = self.consul.client, self.consul.token, self.session.session_id
        call = self.session.call
        lock = lambda: client.kv.put(LOCK_KEY, self.node, acquire=session, token=token)  # noqa: E731
        if session is None:  # being made again (``NodeSession.keep``): try again after a grace
            for node in dead:
                self.since[node] = now
            return
        if not call("taking the node-removal lock", lock):
            _, held = call(f"reading {LOCK_KEY}", lambda: client.kv.get(LOCK_KEY, token=token))
            holder = (held or {}).get("Value") or b""
            holder = holder.decode(errors="replace") if isinstance(holder, bytes) else str(holder)
            log.info("catalog_node_removal_elsewhere", nodes=dead, holder=holder)
            for node in dead:
                self.since[node] = now
            return
        try:
            for node in dead:
                self._remove(node, now - self.since[node])
                del self.since[node]
        finally:
            unlock = lambda: client.kv.put(LOCK_KEY, self.node, release=session, token=token)  # noqa: E731
            call("letting go of the node-removal lock", unlock)

    def _remove(self, node: str, keyless_for: float) -> bool:
        """Remove a dead node (this registrar holds the lock) if it is still registrar's external node, still
        without its key. True: removed.

        The removal is one transaction (``PUT /v1/txn``) that holds only if the key is still as read (absent,
        or unchanged without a session) and the node unchanged: a host whose registrar starts again between
        the reads and the removal takes its key, and the transaction is rolled back (409) instead of removing
        a live node."""
        client, token = self.consul.client, self.consul.token
        call = self.session.call
        key_name = PREFIX + node
        _, key = call(f"reading {key_name}", lambda: client.kv.get(key_name, token=token))
        if key and key.get("Session"):
            return False  # back: alive
        _, found = call(f"reading catalog node {node}", lambda: client.catalog.node(node, token=token))
        if not found or not is_owned(found.get("Node") or {}):
            return False
        ops = removal_ops(node, key, found["Node"])
        if not call(f"deregistering catalog node {node}", lambda: _transaction(client, token, ops)):
            return False  # rolled back: the key or the node changed meanwhile (its registrar is back)
        log.info("catalog_node_removed", node=node, keyless_for=round(keyless_for, 1))
        return True


def removal_ops(node: str, key: Mapping[str, Any] | None, found: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``/v1/txn`` operations that remove a dead node (its services and checks go with it, as with
    ``/v1/catalog/deregister``) only if its key is still as read (``key``: None when absent) and the node as
    read (``found``, from ``/v1/catalog/node/<node>``)."""
    check: dict[str, Any] = {"Verb": "check-not-exists", "Key": PREFIX + node}
    if key is not None:
        check = {"Verb": "check-index", "Key": PREFIX + node, "Index": int(key.get("ModifyIndex") or 0)}
    index = found.get("ModifyIndex")
    delete: dict[str, Any] = {"Verb": "delete", "Node": {"Node": node}}
    if isinstance(index, int) and index > 0:
        delete = {"Verb": "delete-cas", "Node": {"Node": node, "ModifyIndex": index}}
    return [{"KV": check}, {"Node": delete}]


def _transaction(client: Any, token: str | None, ops: list[dict[str, Any]]) -> bool:
    """``PUT /v1/txn`` through py-consul's client and callback (its ``txn.put`` sends no token): True when
    applied, False when rolled back (409)."""
    try:
        client.http.put(CB.json(), "/v1/txn", data=json.dumps(ops), headers=client.prepare_headers(token))
    except ClientError as e:
        if str(e).startswith("409"):
            return False
        raise
    return True


class CatalogLiveness:
    """This host's session (``NodeSession``) and the watch for dead nodes (``DeadNodeWatch``), on a connection
    of their own (a blocking query holds one of its connections)."""

    def __init__(self, sink: CatalogSink, ttl: int) -> None:
        self.connection = ConsulConnection(sink.target)
        self.connection.needs = (
            f"session:write on node {sink.node.name}, key:write on {PREFIX} and registrar/locks/, node:read, "
            "and node:write on the nodes it may remove"
        )
        self.session = NodeSession(sink, self.connection, ttl)
        self.watch = DeadNodeWatch(self.session, self.connection, grace=float(ttl))

    def start(self) -> None:
        """Raises what ``NodeSession.start`` raises, the connection closed."""
        try:
            self.session.start()
            self.watch.start()
        except BaseException:
            self.close()
            raise
        session = self.session
        log.info(
            "catalog_session_held", node=session.node, key=session.key, holds_key=session.holds_key, ttl=session.ttl
        )

    def unkept(self) -> str:
        """Why this host's node is not kept alive (``NodeSession.unkept``), or ""."""
        return self.session.unkept(time.monotonic())

    def close(self) -> None:
        self.watch.stop()
        self.session.stop()
        self.connection.close()
