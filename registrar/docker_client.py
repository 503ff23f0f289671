"""docker-py under registrar's Docker adapters: the APIClient they share, and the one place where the errors of
docker-py, requests and urllib3 become DockerError (DockerUnreachable when the engine is down); cutting and
ending docker-py's streams."""

from __future__ import annotations

import contextlib
import json
import socket
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import docker
import docker.constants
import docker.errors
import requests
import requests.adapters
import urllib3

from registrar.errors import DockerError, DockerUnreachable

T = TypeVar("T")

#: What docker-py, requests and urllib3 raise.
LIBRARY_ERRORS = (docker.errors.DockerException, requests.RequestException, urllib3.exceptions.HTTPError, OSError)
POOL_SIZE = 16
"""Connections kept to the engine, as many as requests in flight at once (the workers' inspects)."""
UNREACHABLE = (
    requests.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.NewConnectionError,
    urllib3.exceptions.ConnectTimeoutError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.MaxRetryError,
    urllib3.exceptions.SSLError,
    OSError,
)
"""The libraries' errors that mean the engine is down, not one request (``DockerUnreachable``): refused,
reset, cut, no connection made in time. Not a read timeout: the engine took the request and did not answer
it in time, as Docker hangs on a container stuck in removal: that request's failure (a plain DockerError)."""


def call(where: str, what: str, fn: Callable[[], T]) -> T:
    """``fn()``, its libraries' errors raised as DockerError naming ``what`` and the engine at ``where``:
    DockerUnreachable when the engine is down (``UNREACHABLE``), a plain DockerError for an answer that is an
    error or no JSON, or that did not come in time."""
    try:
        return fn()
    except docker.errors.APIError as e:
        message = e.explanation or "no message"
        raise DockerError(f"{what} at {where}: the engine answered {e.status_code} ({message})") from None
    except UNREACHABLE as e:
        close_failed_connect(e)
        # requests raises a read timeout in an answer's body as a ConnectionError
        late = any(isinstance(a, urllib3.exceptions.ReadTimeoutError) for a in e.args[:1])
        raise (DockerError if late else DockerUnreachable)(f"{what} at {where}: {reason(e)}") from None
    except (*LIBRARY_ERRORS, ValueError) as e:
        close_failed_connect(e)
        raise DockerError(f"{what} at {where}: {reason(e)}") from None


def client(kwargs: dict[str, Any], version: str, timeout: float) -> Any:
    """docker-py's APIClient (``kwargs``: DOCKER_HOST and TLS, from ``kwargs_from_env``) on ``version``, with
    no per-request proxy, .netrc or CA-bundle look-ups from the environment: the engine is no web site. Its
    pools keep ``POOL_SIZE`` connections: on tcp:// (where docker-py ignores ``max_pool_size``) an adapter
    of that size is mounted for http and https (TLS stays the session's ``verify`` and ``cert``)."""
    api = docker.APIClient(version=version, timeout=timeout, max_pool_size=POOL_SIZE, **kwargs)
    api.trust_env = False
    if not api.base_url.startswith("http+docker://"):
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=docker.constants.DEFAULT_NUM_POOLS, pool_maxsize=POOL_SIZE
        )
        for prefix in ("http://", "https://"):
            api.adapters[prefix].close()
            api.mount(prefix, adapter)
    return api


def cut(stream: Any) -> None:
    """Shut down the socket of docker-py's stream, which ends a read blocked on it at once; any thread,
    idempotent. On ssh:// docker-py cannot cut a stream: it ends when the engine ends it."""
    with contextlib.suppress(docker.errors.DockerException, OSError):
        stream.close()


def end(stream: Any) -> None:
    """Cut docker-py's stream and close its response: by the thread that reads it, once it is done."""
    cut(stream)
    with contextlib.suppress(requests.RequestException, urllib3.exceptions.HTTPError, OSError):
        stream._response.close()


def close_failed_connect(error: BaseException) -> None:
    """Close the socket a failed ``connect`` of docker-py's transport left open in ``error``'s traceback: its
    unix connection leaves it to the garbage collector (docker/docker-py#3356), one descriptor per attempt."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        for frame, _ in traceback.walk_tb(cause.__traceback__):
            sock, module = frame.f_locals.get("sock"), str(frame.f_globals.get("__name__", ""))
            ours = frame.f_code.co_name == "connect" and module.startswith("docker.transport")
            if ours and isinstance(sock, socket.socket):
                sock.close()
        cause = cause.__cause__ or cause.__context__


def parse_body(body: bytes) -> Any:
    """An answer's body: its JSON, else its text."""
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip()


def engine_message(body: Any) -> str:
    """The engine's error message in an answer's body."""
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(body)[:300] if isinstance(body, str) and body else "no message"


def reason(error: BaseException) -> str:
    """An error's first line, at most 300 characters."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]
