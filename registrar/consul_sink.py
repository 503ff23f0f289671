"""The Consul adapter: reads the local agent's services and applies actions. Decides nothing.

Every request is a public call of py-consul's API (``agent.services``, ``agent.service.register``
and ``.deregister``, ``agent.check.ttl_pass``), which decides on HTTP status codes: a 404 on a
deregistration means the service is gone already; any other failure raises. The token travels
only in the X-Consul-Token header. Every library error is translated to ConsulError here.

Two settings reach into py-consul's HTTP client (``http.session`` and, for ``consul-unix://``,
``http.base_uri`` with docker-py's ``UnixHTTPAdapter``): no proxy or ``.netrc`` look-ups per call
(~0.3 ms each, measured), a connection pool sized to the writers, and the unix socket, which
py-consul does not offer. setup.cfg pins both libraries to the versions this is tested with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import consul
import requests
from consul.exceptions import ACLPermissionDenied, BadRequest, ConsulException
from docker.transport import UnixHTTPAdapter

from registrar.errors import ConsulError, ConsulRejected
from registrar.model import Health, Service
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
        self.client = consul.Consul(
            host=host, port=target.port, scheme=scheme, verify=verify, cert=cert, connections_timeout=timeout
        )
        # py-consul reads CONSUL_HTTP_TOKEN itself; Settings already decided the token.
        self.token = target.token or None
        self.client.token = self.token
        session = self.client.http.session
        session.trust_env = False
        if target.scheme == "unix":
            session.mount("http+unix://", UnixHTTPAdapter("http+unix://" + target.socket_path))
            self.client.http.base_uri = "http+unix://consul"
        session.mount(f"{scheme}://", requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=16))

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
        what = "reading the agent's services"
        result = self._call(what, lambda: self.client.agent.services(token=self.token))
        if not isinstance(result, dict):
            raise ConsulError(f"{what} at {self.target.describe()}: the answer is not a list of services")
        return result

    def register(self, service: Service) -> None:
        """``PUT /v1/agent/service/register`` with the service and its checks."""
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
        """``PUT /v1/agent/check/pass|fail/<id>?note=<output>``: Docker's health onto registrar's TTL check."""
        check = self.client.agent.check
        update = check.ttl_pass if health.status == "passing" else check.ttl_fail
        what = f"updating check {health.check_id}"
        self._call(what, lambda: update(health.check_id, notes=health.output or None, token=self.token))

    def maintenance(self, service_id: str, enable: bool) -> None:
        """``PUT /v1/agent/service/maintenance/<id>?enable=...``: in or out of the passing set."""
        reason = "registrar: the container is stopping" if enable else None
        what = f"{'enabling' if enable else 'disabling'} maintenance of {service_id}"
        self._call(what, lambda: self.client.agent.service.maintenance(service_id, enable, reason, token=self.token))

    def close(self) -> None:
        self.client.http.session.close()


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]
