"""Building Consul health checks from ``SERVICE_[<port>_]CHECK_*`` metadata.

Pure. A malformed value drops that check (never the service) and yields a Problem that names
the container and the key. Like registrator, one check is built from the labels, the first of
HTTP, HTTPS, script, TTL, TCP, gRPC that is set; ``--ttl`` adds registrar's own TTL check.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, replace

from registrar.metadata import BOOLEAN_WORDS, Value, parse_bool
from registrar.model import Check, Problem

_GO_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$")
_HTTP_METHOD = re.compile(r"^[A-Z]{1,16}$")
_STATUSES = ("passing", "warning", "critical")
DEFAULT_INTERVAL = "10s"
KNOWN_KEYS = frozenset(
    "check_" + k
    for k in (
        "http", "https", "http_method", "tcp", "grpc", "grpc_use_tls", "tls_skip_verify", "script", "ttl",
        "interval", "timeout", "initial_status", "deregister_after", "docker_health",
    )
)  # fmt: skip


@dataclass(frozen=True)
class CheckContext:
    """What a check needs to know about its service and the daemon's settings."""

    container: str
    service_id: str
    host: str
    port: int
    allow_script_checks: bool = False
    ttl: int = 0


class _Invalid(Exception):
    def __init__(self, value: Value, message: str) -> None:
        super().__init__(message)
        self.value = value


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _duration(meta: Mapping[str, Value], key: str) -> str | None:
    value = meta.get(key)
    if value is None:
        return None
    text = value.value.strip()
    if not _GO_DURATION.match(text) or not re.search(r"[1-9]", text):
        raise _Invalid(value, f"{text!r} is not a positive duration like 10s, 1m30s or 500ms")
    return text


def _flag(meta: Mapping[str, Value], key: str, ctx: CheckContext, problems: list[Problem]) -> bool:
    """A true/false key (metadata.parse_bool); another word is a problem, and the key is left out."""
    value = meta.get(key)
    if value is None:
        return False
    flag = parse_bool(value.value)
    if flag is None:
        problems.append(
            Problem(ctx.container, value.source, f"{value.value!r} is not a boolean ({BOOLEAN_WORDS}); ignored")
        )
        return False
    return flag


def _path(value: Value) -> str:
    path = value.value.strip()
    if not path.isprintable() or " " in path:
        raise _Invalid(value, f"{path!r} is not a URL path")
    return path if path.startswith("/") else "/" + path


def _label_check(meta: Mapping[str, Value], ctx: CheckContext, problems: list[Problem]) -> Check | None:
    """The one check the labels ask for, or None; raises _Invalid on a malformed value, and adds to
    ``problems`` a key it leaves out."""
    target = _hostport(ctx.host, ctx.port)
    check_id = f"service:{ctx.service_id}"
    timeout = _duration(meta, "check_timeout")
    interval = _duration(meta, "check_interval") or DEFAULT_INTERVAL
    for key, scheme in (("check_http", "http"), ("check_https", "https")):
        if key in meta:
            method = meta.get("check_http_method")
            if method is not None and not _HTTP_METHOD.match(method.value.strip().upper()):
                raise _Invalid(method, f"{method.value!r} is not an HTTP method")
            return Check(
                check_id,
                http=f"{scheme}://{target}{_path(meta[key])}",
                method=method.value.strip().upper() if method else None,
                tls_skip_verify=_flag(meta, "check_tls_skip_verify", ctx, problems),
                interval=interval,
                timeout=timeout,
            )
    if "check_script" in meta:
        script = meta["check_script"]
        if not ctx.allow_script_checks:
            raise _Invalid(script, "script checks are refused unless registrar runs with --allow-script-checks")
        try:
            words = shlex.split(script.value)
        except ValueError as e:
            raise _Invalid(script, f"cannot split the command: {e}") from None
        if not words:
            raise _Invalid(script, "the command is empty")
        subst = {"$SERVICE_IP": ctx.host, "$SERVICE_PORT": str(ctx.port)}
        args = tuple(_substitute(w, subst) for w in words)
        return Check(check_id, args=args, interval=interval, timeout=timeout)
    if "check_ttl" in meta:
        return Check(check_id, ttl=_duration(meta, "check_ttl"))
    if _flag(meta, "check_tcp", ctx, problems):
        return Check(check_id, tcp=target, interval=interval, timeout=timeout)
    if _flag(meta, "check_grpc", ctx, problems):
        return Check(
            check_id,
            grpc=target,
            grpc_use_tls=_flag(meta, "check_grpc_use_tls", ctx, problems),
            tls_skip_verify=_flag(meta, "check_tls_skip_verify", ctx, problems),
            interval=interval,
            timeout=timeout,
        )
    return None


def _status(meta: Mapping[str, Value]) -> str | None:
    value = meta.get("check_initial_status")
    if value is None:
        return None
    status = value.value.strip().lower()
    if status not in _STATUSES:
        raise _Invalid(value, f"{value.value!r} is not one of {', '.join(_STATUSES)}")
    return status


def _substitute(word: str, subst: Mapping[str, str]) -> str:
    for name, value in subst.items():
        word = word.replace(name, value)
    return word


def build_checks(meta: Mapping[str, Value], ctx: CheckContext) -> tuple[tuple[Check, ...], list[Problem]]:
    """The checks of one service and the problems met while building them."""
    checks: list[Check] = []
    problems = [
        Problem(ctx.container, v.source, "unknown check option; ignored")
        for k, v in sorted(meta.items())
        if k.startswith("check_") and k not in KNOWN_KEYS
    ]
    try:
        check = _label_check(meta, ctx, problems)
        if check is not None:
            check = replace(check, status=_status(meta), deregister_after=_duration(meta, "check_deregister_after"))
    except _Invalid as e:
        problems.append(Problem(ctx.container, e.value.source, f"check dropped: {e}"))
    else:
        if check is not None:
            checks.append(check)
    if ctx.ttl > 0:
        checks.append(Check(f"service:{ctx.service_id}:ttl", ttl=f"{ctx.ttl}s", status="passing"))
    return tuple(checks), problems
