"""The Consul adapter: reads the local agent's services and applies actions. Decides nothing.

Writes go to the local agent (``/v1/agent/service/...``) through py-consul's HTTP client, which
keeps one keep-alive session. The token travels only in the X-Consul-Token header. Every library
error is translated to ConsulError here, in one place.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import consul
import consul.callback
import requests
from consul.exceptions import ACLPermissionDenied, BadRequest, ConsulException
from docker.transport import UnixHTTPAdapter

from registrar.errors import ConsulError, ConsulRejected
from registrar.model import Service
from registrar.settings import ConsulTarget

T = TypeVar("T")
DEFAULT_TIMEOUT = 5.0


class ConsulSink:
    """Talks to one Consul agent."""

    def __init__(self, target: ConsulTarget, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.target = target
        verify: bool | str = target.ca_file or True
        cert = (target.cert_file, target.key_file) if target.cert_file else None
        host = "localhost" if target.scheme == "unix" else target.host
        scheme = "http" if target.scheme == "unix" else target.scheme
        self.client = consul.Consul(host=host, port=target.port, scheme=scheme, verify=verify, cert=cert)
        # py-consul reads CONSUL_HTTP_TOKEN itself; Settings already decided the token.
        self.client.token = target.token or None
        self.http = self.client.http
        # No per-request proxy/.netrc look-ups (~0.3 ms a call): the agent is local by design.
        self.http.session.trust_env = False
        self.http.connections_timeout = timeout
        if target.scheme == "unix":
            self.http.session.mount("http+unix://", UnixHTTPAdapter("http+unix://" + target.socket_path))
            self.http.base_uri = "http+unix://consul"
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=16)
        self.http.session.mount(f"{scheme}://", adapter)

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
        except (ConsulException, requests.RequestException, OSError) as e:
            raise ConsulError(f"{what} at {self.target.describe()}: {_first_line(e)}") from None

    def services(self) -> dict[str, Any]:
        """``GET /v1/agent/services``: every service registered with the agent, by ID."""
        result: dict[str, Any] = self._call("reading the agent's services", self.client.agent.services)
        return result

    def register(self, service: Service) -> None:
        """``PUT /v1/agent/service/register`` with the service and its checks."""
        body = json.dumps(service.to_consul())
        self._call(
            f"registering {service.id}",
            lambda: self.http.put(
                consul.callback.CB.boolean(),
                "/v1/agent/service/register",
                headers=self.client.prepare_headers(),
                data=body,
            ),
        )

    def deregister(self, service_id: str) -> None:
        """``PUT /v1/agent/service/deregister/<id>``; an ID already gone counts as done."""
        try:
            self._call(f"deregistering {service_id}", lambda: self.client.agent.service.deregister(service_id))
        except ConsulError as e:
            if "Unknown service" not in str(e) and "404" not in str(e):
                raise

    def pass_ttl(self, check_id: str) -> None:
        """``PUT /v1/agent/check/pass/<id>``: keep a TTL check passing."""
        self._call(f"passing TTL check {check_id}", lambda: self.client.agent.check.ttl_pass(check_id))

    def close(self) -> None:
        self.http.session.close()


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]
