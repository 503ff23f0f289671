"""The Consul adapter: reads the local agent's services and applies actions. Decides nothing.

Every write is a public call of py-consul's API (``agent.service.register`` and ``.deregister``,
``agent.check.ttl_pass``), which decides on HTTP status codes: a 404 on a deregistration means the
service is gone already; any other failure raises. The read of the agent's services
(``read_services``) sends ``agent.services``'s request itself, to hash the answer's bytes before
they are parsed (and to keep only each service's Meta as they are); an answer other than a 200 is
judged by py-consul's callback. The token travels
only in the X-Consul-Token header. Every library error is translated to ConsulError here.

py-consul's requests-based client is swapped, through the extension point py-consul offers for its
own transports (``base.Consul.http_connect`` returning a ``base.HTTPClient``, as ``consul.aio``
does), for one over keep-alive ``http.client`` connections (registrar.transport): less CPU per request, no proxy
or ``.netrc`` look-ups, and the unix socket of ``consul-unix://``, which py-consul does not offer.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import consul.base
from consul.callback import CB
from consul.exceptions import ACLPermissionDenied, BadRequest, ConsulException

from registrar.errors import ConsulError, ConsulRejected
from registrar.model import Health, Service
from registrar.settings import ConsulTarget
from registrar.transport import ConnectionPool, tcp_pool, unix_pool

T = TypeVar("T")
DEFAULT_TIMEOUT = 5.0


class PoolClient(consul.base.HTTPClient):  # type: ignore[misc]  # py-consul has no type hints
    """py-consul's HTTPClient over one ConnectionPool: the callbacks (status codes) stay py-consul's."""

    def __init__(self, target: ConsulTarget, timeout: float) -> None:
        super().__init__(target.host, target.port, target.scheme)
        if target.scheme == "unix":
            self.pool: ConnectionPool = unix_pool(target.socket_path, timeout)
        else:
            self.pool = tcp_pool(
                target.scheme, target.host, target.port, timeout, target.ca_file, target.cert_file, target.key_file
            )

    def _send(
        self,
        method: str,
        callback: Callable[[consul.base.Response], Any],
        path: str,
        params: Any = None,
        data: str | bytes = "",
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        url = urllib.parse.quote(path, safe="/:")
        if params:
            url = f"{url}?{urllib.parse.urlencode(params)}"
        body = data.encode() if isinstance(data, str) else data
        response = self.pool.request(method, url, body=body or None, headers=headers)
        return callback(consul.base.Response(response.status, response.headers, response.data.decode()))

    def get(self, callback: Any, path: str, params: Any = None, headers: Any = None, raw: bool = False) -> Any:
        return self._send("GET", callback, path, params, headers=headers)

    def put(self, callback: Any, path: str, params: Any = None, data: Any = "", headers: Any = None) -> Any:
        return self._send("PUT", callback, path, params, data, headers)

    def delete(self, callback: Any, path: str, params: Any = None, data: Any = "", headers: Any = None) -> Any:
        return self._send("DELETE", callback, path, params, data, headers)

    def post(self, callback: Any, path: str, params: Any = None, data: Any = "", headers: Any = None) -> Any:
        return self._send("POST", callback, path, params, data, headers)

    def close(self) -> None:
        self.pool.close()


class Client(consul.base.Consul):  # type: ignore[misc]
    """py-consul's API (agent, catalog, ...) on a PoolClient."""

    def __init__(self, target: ConsulTarget, timeout: float) -> None:
        self._target, self._timeout = target, timeout
        host = "localhost" if target.scheme == "unix" else target.host
        super().__init__(host=host, port=target.port, scheme=target.scheme, token=target.token or None)

    def http_connect(self, host: str, port: int, scheme: str, verify: Any = True, cert: Any = None) -> PoolClient:
        return PoolClient(self._target, self._timeout)


class ConsulSink:
    """Talks to one Consul agent."""

    def __init__(self, target: ConsulTarget, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.target = target
        self.client = Client(target, timeout)
        # py-consul reads CONSUL_HTTP_TOKEN itself; Settings already decided the token.
        self.token = target.token or None
        self.client.token = self.token

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except BadRequest as e:
            raise ConsulRejected(f"{what}: Consul refused it ({_first_line(e)})") from None
        except ACLPermissionDenied as e:
            raise ConsulError(
                f"{what}: permission denied by Consul's ACLs ({_first_line(e)}); registrar's token "
                "(CONSUL_HTTP_TOKEN) needs service:write"
            ) from None
        except (ConsulException, http.client.HTTPException, OSError, UnicodeDecodeError) as e:
            raise ConsulError(f"{what} at {self.target.describe()}: {_first_line(e)}") from None

    def services(self) -> dict[str, Any]:
        """``GET /v1/agent/services``: every service registered with the agent, by ID, as the agent sends it."""
        return self._read(0, "", -1, None)[1] or {}  # never None: no digest given, the answer is parsed

    @property
    def connections_opened(self) -> int:
        """Connections opened to the agent so far. An agent that restarted closed every connection to it:
        while this count stands still, the agent answering is the process that answered before."""
        return int(self.client.http.pool.opened)

    def read_services(
        self, unless: int = 0, filter: str = "", same_agent: int = -1
    ) -> tuple[int, dict[str, Any] | None]:
        """``GET /v1/agent/services[?filter=...]``: (a digest of the answer's bytes, the services by ID, those
        ``filter`` selects, Consul's expression, when given, each as ``{"Meta": {...}}``). The services are
        None, the answer not parsed, when the digest is ``unless`` (the same answer as the read that gave
        it), or when ``connections_opened`` is still ``same_agent`` after the answer (the same agent process
        answered).

        The daemon reads the agent every 3 s to notice an agent that lost its services; an answer the
        same as the last costs a hash instead of a JSON parse and a plan of every service. Of each service
        only its Meta is kept as the answer is parsed: all the loop reads (``reconcile.owned_services``);
        the whole of 500 services held 1.7 MiB at the parse's peak, and the process kept most of it.
        The request is the one py-consul's ``agent.services`` sends; an answer other than a 200 is judged
        by py-consul's callback (a 404: None; any other status raises)."""
        return self._read(unless, filter, same_agent, _meta_only)

    def _read(
        self, unless: int, filter: str, same_agent: int, hook: Callable[[dict[str, Any]], Any] | None
    ) -> tuple[int, dict[str, Any] | None]:
        what = "reading the agent's services"

        def read() -> tuple[int, Any]:
            path = "/v1/agent/services" + (f"?{urllib.parse.urlencode({'filter': filter})}" if filter else "")
            response = self.client.http.pool.request("GET", path, headers=self.client.prepare_headers(self.token))
            digest = hash(response.data)
            if response.status != 200:  # py-consul's callback raises what the status means
                answer = consul.base.Response(response.status, response.headers, response.data.decode())
                return digest, CB.json()(answer)
            if (unless and digest == unless) or same_agent == self.connections_opened:
                return digest, None
            try:
                return digest, json.loads(response.data, object_hook=hook)
            except json.JSONDecodeError as e:  # as py-consul's callback says it
                raise ConsulException(f"Failed to decode JSON: {e}") from None

        digest, result = self._call(what, read)
        if result is not None and not isinstance(result, dict):
            raise ConsulError(f"{what} at {self.target.describe()}: the answer is not a list of services")
        return digest, result

    def register(self, service: Service) -> None:
        """``PUT /v1/agent/service/register?replace-existing-checks=true`` with the service and its checks:
        the agent drops the service's checks that the body no longer carries (a label removed)."""
        body = service.to_consul()
        checks = body.get("Checks") or [None]
        self._call(
            f"registering {service.id}",
            lambda: self.client.agent.service.register(
                body["Name"],
                service_id=body["ID"],
                address=body.get("Address"),
                port=body["Port"],
                tags=body.get("Tags"),
                meta=body["Meta"],
                check=checks[0],
                extra_checks=checks[1:],
                replace_existing_checks=True,
                enable_tag_override=body.get("EnableTagOverride", False),
                tagged_addresses=body.get("TaggedAddresses"),
                token=self.token,
            ),
        )

    def deregister(self, service_id: str) -> None:
        """``PUT /v1/agent/service/deregister/<id>``; a 404 (already gone) counts as done."""
        self._call(
            f"deregistering {service_id}", lambda: self.client.agent.service.deregister(service_id, token=self.token)
        )

    def pass_ttl(self, check_id: str) -> None:
        """``PUT /v1/agent/check/pass/<id>``: keep a TTL check passing."""
        self._call(
            f"passing TTL check {check_id}", lambda: self.client.agent.check.ttl_pass(check_id, token=self.token)
        )

    def set_health(self, health: Health) -> None:
        """``PUT /v1/agent/check/pass|warn|fail/<id>?note=<output>``: Docker's health, or an exec probe's
        result, onto registrar's TTL check."""
        check = self.client.agent.check
        update = {"passing": check.ttl_pass, "warning": check.ttl_warn}.get(health.status, check.ttl_fail)
        what = f"updating check {health.check_id}"
        self._call(what, lambda: update(health.check_id, notes=health.output or None, token=self.token))

    def maintenance(self, service_id: str, enable: bool) -> None:
        """``PUT /v1/agent/service/maintenance/<id>?enable=...``: in or out of the passing set."""
        reason = "registrar: the container is stopping" if enable else None
        what = f"{'enabling' if enable else 'disabling'} maintenance of {service_id}"
        self._call(what, lambda: self.client.agent.service.maintenance(service_id, enable, reason, token=self.token))

    def close(self) -> None:
        """Close the pool's connections to the agent; idempotent (a closed pool stays closed)."""
        self.client.http.close()


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]


def _meta_only(value: dict[str, Any]) -> Any:
    """``json.loads``'s object_hook for ``GET /v1/agent/services``: a service (an object with a string
    ``ID`` and an integer ``Port``; Meta's values are all strings) becomes ``{"Meta": its Meta}``, as soon as
    it is parsed; any other object is kept."""
    if isinstance(value.get("Port"), int) and isinstance(value.get("ID"), str):
        return {"Meta": value.get("Meta") or {}}
    return value
