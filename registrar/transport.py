"""Keep-alive HTTP connection pools (urllib3) for the hot calls to Docker and Consul.

A request through requests' Session costs about 0.5 ms more than the same request through the
urllib3 pool underneath (preparing, merging settings, cookies, hooks; measured in the README's
profile), and registrar makes two such requests per container start. The adapters send their hot
calls through a pool from here instead: plain HTTP, HTTPS with the agent's CA and client
certificate, or a unix socket (Docker's, or Consul's ``consul-unix://``).

Docker's event stream, one long response read line by line, goes through the standard library's
``http.client`` instead (UnixHTTPConnection): no pool holds it, and it costs about half the CPU of
docker-py's reader per event once woken (7 against 15 us; the wake-up itself costs more, and stays).
"""

from __future__ import annotations

import http.client
import socket
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection

#: Connections kept open per pool: as many as registrar's workers write at once.
POOL_SIZE = 16


class UnixConnection(HTTPConnection):
    """An HTTP connection over a unix socket (the host name is only for the Host header)."""

    def __init__(self, *args: Any, socket_path: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        timeout = self.timeout
        sock.settimeout(timeout if isinstance(timeout, int | float) else None)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class UnixHTTPConnection(http.client.HTTPConnection):
    """A standard-library HTTP connection over a unix socket, connected within ``timeout`` seconds."""

    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class UnixConnectionPool(urllib3.HTTPConnectionPool):
    """A pool of UnixConnections to one socket."""

    ConnectionCls = UnixConnection

    def __init__(self, socket_path: str, timeout: float, maxsize: int = POOL_SIZE) -> None:
        super().__init__(
            "localhost", timeout=urllib3.Timeout(timeout), maxsize=maxsize, retries=False, socket_path=socket_path
        )


def tcp_pool(
    scheme: str,
    host: str,
    port: int,
    timeout: float,
    ca_file: str = "",
    cert_file: str = "",
    key_file: str = "",
) -> urllib3.HTTPConnectionPool:
    """A pool to ``scheme://host:port``; HTTPS verifies the server against ``ca_file`` (or the
    system's CAs) and presents ``cert_file``/``key_file`` if given."""
    common: dict[str, Any] = {"timeout": urllib3.Timeout(timeout), "maxsize": POOL_SIZE, "retries": False}
    if scheme != "https":
        return urllib3.HTTPConnectionPool(host, port, **common)
    return urllib3.HTTPSConnectionPool(
        host,
        port,
        cert_reqs="CERT_REQUIRED",
        ca_certs=ca_file or None,
        cert_file=cert_file or None,
        key_file=key_file or None,
        **common,
    )
