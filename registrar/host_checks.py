"""HTTP, TCP and gRPC checks that registrar runs from the host (``--catalog``): no agent runs an external node's
checks.

Each run gives the status and output Consul's agent gives for the same check (agent/checks/check.go, grpc.go):
HTTP: the request with the check's method (GET), headers, body and TLS settings, through urllib3, following
redirects as Go's client does; 2xx is passing, 429 warning, anything else or no answer critical; the output
``HTTP <METHOD> <url>: <code> <reason> Output: <body>``, the body's last OUTPUT_MAX_SIZE bytes. TCP: a
connection opened, then closed; ``TCP connect <host:port>: Success``, or critical with the error. gRPC: the
standard health service's ``Check`` (grpc.health.v1) through grpcio (the ``grpc`` extra, imported at the first
gRPC check), a channel for each run as the agent dials for each; SERVING is passing (``gRPC check <target>:
success``), anything else critical. The timeout bounds the connection and each read (a body that trickles in
slower is read to its end; the agent's client would give up).
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import HTTPError, InsecureRequestWarning

from registrar.model import Check, Health, Probe

USER_AGENT = "Consul Health Check"
"""The agent's User-Agent, so services that leave their health checks out of access logs see them as ever."""
ACCEPT = "text/plain, text/*, */*"
"""The agent's Accept header, unless the check sets one."""
GRPC_MISSING = "registrar runs gRPC checks with grpcio, which is not installed: pip install 'registrar[grpc]'"
GRPC_SKIP_VERIFY = "registrar cannot run a gRPC check over TLS without verifying the server (grpcio cannot skip it)"
BODY_CHUNK = 8192
"""Bytes of a check's response body read at a time."""
REDIRECTS = 10
"""Redirects followed, as Go's HTTP client (and so the agent's check) does."""


def http_status(code: int) -> str:
    """An HTTP check's status for a response code: the agent's rule."""
    if 200 <= code < 300:
        return "passing"
    return "warning" if code == 429 else "critical"


_VARYING = re.compile(
    r"<\S+ object at 0x[0-9a-f]+>: |\w+\(host='[^']*', port=\d+\): | \((read|connect) timeout=[\d.]+\)"
)
"""What urllib3 puts in an error that differs from run to run, or names its own classes: an object's address
(1.26), the pool, the seconds left of the timeout."""


def _error_text(error: BaseException) -> str:
    """An error as the check's output, the same for each run that fails the same way (each new output would be
    a catalog write): ``Failed to establish a new connection: [Errno 111] Connection refused``."""
    reason = getattr(error, "reason", None)  # MaxRetryError: what made the request fail
    cause = reason if isinstance(reason, Exception) else error
    said = [a for a in cause.args if isinstance(a, str)]  # urllib3's (connection, message) and (pool, url, message)
    return _VARYING.sub("", said[-1] if said else str(cause))


def _pool_classes(track: Callable[[socket.socket], None]) -> dict[str, type]:
    """urllib3's pool classes for PoolManager, whose connections hand their socket to ``track`` once connected (so
    ``HostChecks.close`` can end a request that waits for an answer)."""

    def tracked(base: type[HTTPConnection]) -> type[HTTPConnection]:
        class Tracked(base):  # type: ignore[valid-type,misc]
            def connect(self) -> None:
                super().connect()
                track(self.sock)

        return Tracked

    class HTTPPool(HTTPConnectionPool):
        ConnectionCls = tracked(HTTPConnection)

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            for tls in ("server_hostname", "assert_hostname"):  # TLS_SERVER_NAME means nothing to http://
                kwargs.pop(tls, None)  # (urllib3 1.26 passes them on to a connection that refuses them)
            super().__init__(*args, **kwargs)

    https = type("HTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": tracked(HTTPSConnection)})
    return {"http": HTTPPool, "https": https}


def _tail(response: Any, keep: int) -> bytes:
    """The last ``keep`` bytes of a response's body, as the agent keeps them (a circular buffer)."""
    tail = b""
    for chunk in response.stream(BODY_CHUNK, decode_content=True):
        tail = (tail + chunk)[-keep:]
    return tail


def split_hostport(target: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port). Raises ValueError on anything else."""
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{target!r} is not host:port")
    return host.strip("[]"), int(port)


class HostChecks:
    """Runs HTTP, TCP and gRPC checks from this host; safe from the prober's threads at once; ``close`` ends it."""

    def __init__(self) -> None:
        self._managers: dict[tuple[bool, str], urllib3.PoolManager] = {}
        """(verify the server's certificate, TLSServerName) -> urllib3's pools, one for each host:port."""
        self._lock = threading.Lock()
        self._closed = False
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._channels: weakref.WeakSet[Any] = weakref.WeakSet()
        """The sockets and gRPC channels of runs in flight (or done, until collected): ``close`` shuts them."""
        # TLS_SKIP_VERIFY is the label's explicit ask: no warning on stderr for each run (it would break JSON logs).
        warnings.filterwarnings("ignore", category=InsecureRequestWarning)

    def _manager(self, verify: bool, server_name: str) -> urllib3.PoolManager:
        with self._lock:
            manager = self._managers.get((verify, server_name))
            if manager is None:
                tls: dict[str, Any] = {"cert_reqs": "CERT_REQUIRED" if verify else "CERT_NONE"}
                if server_name:
                    tls.update(server_hostname=server_name, assert_hostname=server_name)
                manager = urllib3.PoolManager(num_pools=64, maxsize=1, **tls)
                manager.pool_classes_by_scheme = _pool_classes(self._track_socket)
                self._managers[verify, server_name] = manager
            return manager

    def _track_socket(self, opened: socket.socket) -> None:
        with self._lock:
            self._sockets.add(opened)

    def run(self, probe: Probe) -> Health:
        """One run of ``probe``'s check; its status and output (never raises for the check's own failures)."""
        check = probe.target
        if check is None:
            raise ValueError(f"{probe.check_id}: not an HTTP, TCP or gRPC check")
        if self._closed:
            return Health(probe.check_id, "critical", "registrar is stopping")
        if check.http:
            return self._http(probe, check, check.http)
        if check.tcp:
            return self._tcp(probe, check.tcp)
        if check.grpc:
            return self._grpc(probe, check, check.grpc)
        raise ValueError(f"{probe.check_id}: not an HTTP, TCP or gRPC check")

    def _http(self, probe: Probe, check: Check, url: str) -> Health:
        options = check.options
        method = check.method or "GET"
        headers = {"User-Agent": USER_AGENT, "Accept": ACCEPT, "Connection": "close"}  # the agent keeps none alive
        for name, values in options.header if options else ():  # several values: one line, comma-separated
            headers = {k: v for k, v in headers.items() if k.lower() != name.lower()}
            headers[name] = ", ".join(values)
        server_name = options.tls_server_name or "" if options else ""
        try:
            response = self._manager(not check.tls_skip_verify, server_name).urlopen(
                method,
                url,
                body=options.body if options else None,
                headers=headers,
                retries=urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=REDIRECTS),
                timeout=urllib3.Timeout(total=probe.timeout),
                preload_content=False,
            )
            try:
                body = _tail(response, probe.output_max)
            finally:
                response.release_conn()
        except (HTTPError, OSError, ValueError) as e:
            return Health(probe.check_id, "critical", f"HTTP {method} {url}: {_error_text(e)}")
        text = body.decode("utf-8", "replace")
        return Health(
            probe.check_id,
            http_status(response.status),
            f"HTTP {method} {url}: {response.status} {response.reason} Output: {text}",
        )

    def _tcp(self, probe: Probe, target: str) -> Health:
        try:
            with socket.create_connection(split_hostport(target), timeout=probe.timeout):
                pass
        except (OSError, ValueError) as e:
            return Health(probe.check_id, "critical", f"dial tcp {target}: {e}")
        return Health(probe.check_id, "passing", f"TCP connect {target}: Success")

    def _grpc(self, probe: Probe, check: Check, target: str) -> Health:
        """``target``: ``host:port`` or ``host:port/service`` (the service asked of the health service)."""
        try:
            import grpc
            from grpc_health.v1 import health_pb2, health_pb2_grpc
        except ImportError:
            return Health(probe.check_id, "critical", GRPC_MISSING)
        server, _, service = target.partition("/")
        if check.grpc_use_tls and check.tls_skip_verify:
            return Health(probe.check_id, "critical", GRPC_SKIP_VERIFY)
        if check.grpc_use_tls:
            name = check.options.tls_server_name if check.options else None
            options = [("grpc.ssl_target_name_override", name)] if name else []
            channel = grpc.secure_channel(server, grpc.ssl_channel_credentials(), options)
        else:
            channel = grpc.insecure_channel(server)
        with self._lock:
            self._channels.add(channel)
        try:
            with channel:
                stub = health_pb2_grpc.HealthStub(channel)
                response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=probe.timeout)
        except grpc.RpcError as e:
            code = "".join(w.capitalize() for w in e.code().name.split("_"))  # Go's name: DeadlineExceeded
            return Health(probe.check_id, "critical", f"rpc error: code = {code} desc = {e.details()}")
        if response.status != health_pb2.HealthCheckResponse.SERVING:
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
            return Health(probe.check_id, "critical", f"gRPC {target} serving status: {status}")
        return Health(probe.check_id, "passing", f"gRPC check {target}: success")

    def close(self) -> None:
        """Refuse new runs, end those waiting for an answer (one still connecting ends at its timeout) and close
        the pools' connections."""
        with self._lock:
            self._closed = True
            managers, sockets, channels = list(self._managers.values()), list(self._sockets), list(self._channels)
        for opened in sockets:  # a request waiting for its answer ends now, not at its timeout
            with contextlib.suppress(OSError):  # closed already
                opened.shutdown(socket.SHUT_RDWR)
        for channel in channels:
            channel.close()  # ends its RPC at once
        for manager in managers:
            manager.clear()
