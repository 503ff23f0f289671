"""The Consul adapter: reads the local agent's services and applies actions. Decides nothing.

Every write is a public call of py-consul's API (``agent.service.register`` and ``.deregister``,
``agent.check.ttl_pass``), which decides on HTTP status codes: a 404 on a deregistration means the
service is gone already; any other failure raises. The read of the agent's services
(``read_services``) sends ``agent.services``'s request itself, to hash the answer's bytes before
they are parsed (and to keep only each service's Meta as they are); an answer other than a 200 is
judged by py-consul's callback. The token travels only in the X-Consul-Token header. Every library
error is translated to ConsulError here.

py-consul's requests-based HTTP client is swapped, through the extension point py-consul offers for
its own transports (``base.Consul.http_connect`` returning a ``base.HTTPClient``, as ``consul.aio``
does), for one on a kept urllib3 connection pool (as botocore and elastic-transport use urllib3):
a request timeout, no proxy or ``.netrc`` look-ups per request, TLS as Consul's own clients set it
up (CA file or directory, client certificate, the server name checked, or no check at all), and
the unix socket of ``consul-unix://``, which py-consul does not offer. urllib3's headers are
case-insensitive, so py-consul's callbacks find ``X-Consul-Index``.
"""

from __future__ import annotations

import json
import socket
import ssl
import urllib.parse
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import consul.base
import structlog
import urllib3
from consul.callback import CB
from consul.exceptions import ACLPermissionDenied, BadRequest, ConsulException
from urllib3.exceptions import HTTPError, InsecureRequestWarning, ProtocolError, SSLError

from registrar.checks import duration_seconds
from registrar.errors import ConsulError, ConsulRejected
from registrar.model import Health, Service
from registrar.settings import ConsulTarget

T = TypeVar("T")
DEFAULT_TIMEOUT = 5.0
#: Connections kept to the agent: as many as registrar's workers write at once.
POOL_SIZE = 16
#: How long Consul holds a blocking query (``?index=``) without ``wait``.
DEFAULT_WAIT = 300.0

log = structlog.get_logger("registrar")


class UnixHTTPConnection(urllib3.connection.HTTPConnection):
    """A urllib3 connection whose socket is the agent's unix socket (the host name is for the Host header)."""

    def __init__(self, *args: Any, socket_path: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class UnixHTTPConnectionPool(urllib3.HTTPConnectionPool):
    """A urllib3 pool of connections to a unix socket (``socket_path=`` reaches each connection)."""

    ConnectionCls = UnixHTTPConnection


def connection_pool(target: ConsulTarget, timeout: float) -> urllib3.HTTPConnectionPool:
    """A kept pool of connections to the agent: ``POOL_SIZE`` of them, ``timeout`` to connect and between
    bytes of an answer, no retries of urllib3's own (``PoolClient`` sends again once on a stale connection)."""
    common: dict[str, Any] = {
        "maxsize": POOL_SIZE,
        "timeout": urllib3.Timeout(connect=timeout, read=timeout),
        "retries": False,
    }
    if target.scheme == "unix":
        return UnixHTTPConnectionPool("localhost", socket_path=target.socket_path, **common)
    if target.scheme != "https":
        return urllib3.HTTPConnectionPool(target.host, target.port, **common)
    tls: dict[str, Any] = {"cert_file": target.cert_file or None, "key_file": target.key_file or None}
    if not target.verify:  # CONSUL_HTTP_SSL_VERIFY=false: no check at all
        warnings.filterwarnings("ignore", category=InsecureRequestWarning)  # said once, at start
        log.warning("consul_tls_unverified", agent=target.describe(), why="CONSUL_HTTP_SSL_VERIFY is false")
        tls.update(cert_reqs=ssl.CERT_NONE, assert_hostname=False)
    else:
        tls.update(cert_reqs=ssl.CERT_REQUIRED, ca_certs=target.ca_file or None, ca_cert_dir=target.ca_path or None)
        if target.tls_server_name:  # checked in the certificate and sent as SNI, whatever the address
            tls.update(server_hostname=target.tls_server_name, assert_hostname=target.tls_server_name)
    return urllib3.HTTPSConnectionPool(target.host, target.port, **common, **tls)


class PoolClient(consul.base.HTTPClient):  # type: ignore[misc]  # py-consul has no type hints
    """py-consul's HTTPClient on a urllib3 pool: the callbacks (status codes, headers) stay py-consul's."""

    def __init__(self, target: ConsulTarget, timeout: float) -> None:
        super().__init__(target.host, target.port, target.scheme, target.verify)
        self.pool = connection_pool(target, timeout)
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        params: Any = None,
        data: str | bytes = "",
        headers: Mapping[str, str] | None = None,
    ) -> urllib3.BaseHTTPResponse:
        """Send one request, once more on a new connection if a kept one turned out closed (every request
        registrar makes is idempotent); the answer read whole."""
        url = urllib.parse.quote(path, safe="/:")
        if params:
            url = f"{url}?{urllib.parse.urlencode(params)}"
        body = data.encode() if isinstance(data, str) else data
        kwargs: dict[str, Any] = {"body": body or None, "headers": headers, "redirect": False, "retries": False}
        held = _held(params) if params else 0.0
        if held:
            kwargs["timeout"] = urllib3.Timeout(connect=self.timeout, read=self.timeout + held)
        try:
            return self.pool.urlopen(method, url, preload_content=True, **kwargs)
        except ProtocolError:  # the agent closed a kept connection before answering (it restarted)
            return self.pool.urlopen(method, url, preload_content=True, **kwargs)

    def _send(self, method: str, callback: Callable[[consul.base.Response], Any], *args: Any, **kwargs: Any) -> Any:
        response = self.request(method, *args, **kwargs)
        return callback(consul.base.Response(response.status, response.headers, response.data.decode()))

    def get(self, callback: Any, path: str, params: Any = None, headers: Any = None, raw: bool = False) -> Any:
        if raw:  # e.g. a snapshot: the bytes as they came
            response = self.request("GET", path, params, headers=headers)
            return callback(consul.base.Response(response.status, response.headers, response.data))
        return self._send("GET", callback, path, params, headers=headers)

    def put(self, callback: Any, path: str, params: Any = None, data: Any = "", headers: Any = None) -> Any:
        return self._send("PUT", callback, path, params, data, headers)

    def delete(self, callback: Any, path: str, params: Any = None, data: Any = "", headers: Any = None) -> Any:
        return self._send("DELETE", callback, path, params, data, headers)

    def post(self, callback: Any, path: str, params: Any = None, data: Any = "", headers: Any = None) -> Any:
        return self._send("POST", callback, path, params, data, headers)

    def close(self) -> None:
        self.pool.close()


def _held(params: Any) -> float:
    """How long the agent may hold a request with these parameters before it answers: a blocking query's
    (``index``) ``wait`` and its jitter (up to a sixteenth more); 0 for any other request."""
    given = dict(params)
    if "index" not in given:
        return 0.0
    wait = given.get("wait")
    seconds = duration_seconds(wait) if wait else DEFAULT_WAIT
    return seconds + seconds / 16


class Client(consul.base.Consul):  # type: ignore[misc]
    """py-consul's API (agent, catalog, ...) on a PoolClient."""

    def __init__(self, target: ConsulTarget, timeout: float) -> None:
        self._target, self._timeout = target, timeout
        host = "localhost" if target.scheme == "unix" else target.host
        super().__init__(
            host=host, port=target.port, scheme=target.scheme, token=target.token or None, verify=target.verify
        )

    def http_connect(self, host: str, port: int, scheme: str, verify: Any = True, cert: Any = None) -> PoolClient:
        return PoolClient(self._target, self._timeout)


class ConsulConnection:
    """One Consul HTTP endpoint, through py-consul's API on a PoolClient, and the one place its errors
    are translated: the base of ConsulSink (an agent) and CatalogSink (the catalog, registrar.catalog_sink)."""

    needs = "service:write"
    """What registrar's token needs here, as a permission-denied error says it."""

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
                f"(CONSUL_HTTP_TOKEN) needs {self.needs}"
            ) from None
        except (ConsulException, HTTPError, OSError, UnicodeDecodeError) as e:
            raise ConsulError(f"{what} at {self.target.describe()}: {_why(e, self.target)}") from None

    def _get_digested(
        self, path: str, params: Any, unless: int, hook: Callable[[dict[str, Any]], Any] | None
    ) -> tuple[int, Any]:
        """``GET path`` as py-consul sends it (the token in its header): (a digest of the answer's bytes, the
        answer parsed with ``hook`` as ``json.loads``'s object_hook), the answer None, not parsed, when the
        digest is ``unless``. An answer other than a 200 is judged by py-consul's callback (a 404: None; any
        other status raises). Call it inside ``_call``."""
        headers = self.client.prepare_headers(self.token)
        response = self.client.http.request("GET", path, params, headers=headers)
        digest = hash(response.data)
        if response.status != 200:  # py-consul's callback raises what the status means
            answer = consul.base.Response(response.status, response.headers, response.data.decode())
            return digest, CB.json()(answer)
        if unless and digest == unless:
            return digest, None
        try:
            return digest, json.loads(response.data, object_hook=hook)
        except json.JSONDecodeError as e:  # as py-consul's callback says it
            raise ConsulException(f"Failed to decode JSON: {e}") from None

    def close(self) -> None:
        """Close the pool's connections to Consul; idempotent (a closed pool stays closed)."""
        self.client.http.close()


class ConsulSink(ConsulConnection):
    """Talks to one Consul agent."""

    def services(self) -> dict[str, Any]:
        """``GET /v1/agent/services``: every service registered with the agent, by ID, as the agent sends it."""
        return self._read(0, "", None)[1] or {}  # never None: no digest given, the answer is parsed

    def read_services(self, unless: int = 0, filter: str = "") -> tuple[int, dict[str, Any] | None]:
        """``GET /v1/agent/services[?filter=...]``: (a digest of the answer's bytes, the services by ID, those
        ``filter`` selects, Consul's expression, when given, each as ``{"Meta": {...}}``). The services are
        None, the answer not parsed, when the digest is ``unless`` (the same answer as the read that gave it).

        The daemon reads the agent every 3 s to notice an agent that lost its services; an answer the
        same as the last costs a hash instead of a JSON parse and a plan of every service. Of each service
        only its Meta is kept as the answer is parsed: all the loop reads (``reconcile.owned_services``).
        The request is the one py-consul's ``agent.services`` sends; an answer other than a 200 is judged
        by py-consul's callback (a 404: None; any other status raises)."""
        return self._read(unless, filter, meta_only)

    def _read(
        self, unless: int, filter: str, hook: Callable[[dict[str, Any]], Any] | None
    ) -> tuple[int, dict[str, Any] | None]:
        what = "reading the agent's services"

        def read() -> tuple[int, Any]:
            params = {"filter": filter} if filter else None
            return self._get_digested("/v1/agent/services", params, unless, hook)

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

    def pass_ttl(self, check_id: str) -> bool:
        """``PUT /v1/agent/check/pass/<id>``: keep a TTL check passing (always sent: the agent's TTL runs)."""
        self._call(
            f"passing TTL check {check_id}", lambda: self.client.agent.check.ttl_pass(check_id, token=self.token)
        )
        return True

    def set_health(self, health: Health) -> bool:
        """``PUT /v1/agent/check/pass|warn|fail/<id>?note=<output>``: Docker's health, or an exec probe's
        result, onto registrar's TTL check."""
        check = self.client.agent.check
        update = {"passing": check.ttl_pass, "warning": check.ttl_warn}.get(health.status, check.ttl_fail)
        what = f"updating check {health.check_id}"
        self._call(what, lambda: update(health.check_id, notes=health.output or None, token=self.token))
        return True

    def maintenance(self, service_id: str, enable: bool) -> None:
        """``PUT /v1/agent/service/maintenance/<id>?enable=...``: in or out of the passing set."""
        reason = "registrar: the container is stopping" if enable else None
        what = f"{'enabling' if enable else 'disabling'} maintenance of {service_id}"
        self._call(what, lambda: self.client.agent.service.maintenance(service_id, enable, reason, token=self.token))


def _why(error: BaseException, target: ConsulTarget) -> str:
    """What went wrong, in a line; a certificate the TLS check refused also says what to set."""
    if not isinstance(error, SSLError):
        return _first_line(error)
    inner = error.args[0] if error.args and isinstance(error.args[0], BaseException) else error.__cause__
    text = _first_line(inner or error)
    if "mismatch" in text or "match either" in text or "doesn't match" in text:
        name = target.tls_server_name or target.host
        hint = "CONSUL_TLS_SERVER_NAME must be" if target.tls_server_name else "set CONSUL_TLS_SERVER_NAME to"
        return f"the agent's TLS certificate does not name {name} ({text}): {hint} a name it holds"
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return f"the agent's TLS certificate was not accepted ({text}): is CONSUL_CACERT or CONSUL_CAPATH its CA?"
    return text


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]


def meta_only(value: dict[str, Any]) -> Any:
    """``json.loads``'s object_hook for an answer that lists services (``GET /v1/agent/services``,
    ``/v1/catalog/node/<name>``): a service (an object with a string ``ID`` and an integer ``Port``; Meta's
    values are all strings) becomes ``{"Meta": its Meta}``, as soon as it is parsed; any other object is kept."""
    if isinstance(value.get("Port"), int) and isinstance(value.get("ID"), str):
        return {"Meta": value.get("Meta") or {}}
    return value
