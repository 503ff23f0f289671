"""Building Consul health checks from ``SERVICE_[<port>_]CHECK_[<N>_]*`` metadata.

Pure. Like registrator, check 1 comes from the unnumbered keys (``CHECK_HTTP``, ...), the first of
HTTP, HTTPS, script, TTL, TCP, gRPC that is set (then H2PING, then EXEC: a command registrar runs
in the container, registrar.probes); ``CHECK_<N>_<FIELD>`` for N = 2..9
defines check N with the same fields, each check from its own keys only. A malformed value drops
that check (never the service, never another check) and yields a Problem that names the container
and the key. ``--ttl`` adds registrar's own TTL check.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from registrar.metadata import BOOLEAN_WORDS, Value, parse_bool, split_tags
from registrar.model import Check, CheckOptions, Probe, Problem

_GO_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$")
_HTTP_METHOD = re.compile(r"^[A-Z]{1,16}$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")  # an HTTP token (RFC 9110)
_SERVER_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")
_COUNT = re.compile(r"^\d{1,9}$")
_STATUSES = ("passing", "warning", "critical")
DEFAULT_INTERVAL = "10s"
DEFAULT_EXEC_OUTPUT = 4096
MAX_EXEC_OUTPUT = 65536
"""An exec probe's output travels in the URL of the TTL update (py-consul's ``ttl_pass`` takes it as ``note``)."""
"""Bytes of an exec probe's output kept as its check's output, unless OUTPUT_MAX_SIZE says otherwise."""
FIELDS = frozenset(
    (
        "http", "https", "http_method", "tcp", "grpc", "grpc_use_tls", "tls_skip_verify", "tls_server_name",
        "script", "ttl", "h2ping", "interval", "timeout", "initial_status", "deregister_after", "body", "notes",
        "success_before_passing", "failures_before_critical", "output_max_size", "exec",
    )
)  # fmt: skip
"""The fields of one check (``CHECK_<FIELD>``, ``CHECK_<N>_<FIELD>``), besides ``HEADER_<Name>``."""
HEADER = "header_"
NUMBERS = frozenset("23456789")
"""The numbered checks: ``CHECK_2_*`` to ``CHECK_9_*``; the unnumbered keys are check 1."""
DOCKER_HEALTH_KEY = "check_docker_health"
"""A per-service switch (services.py), not a field of a check."""


@dataclass(frozen=True)
class CheckContext:
    """What a check needs to know about its service and the daemon's settings."""

    container: str
    service_id: str
    host: str
    port: int
    allow_script_checks: bool = False
    ttl: int = 0
    exec_checks: bool = True
    host_checks: bool = False
    """``--catalog`` (and not ``--catalog-checks esm``): registrar runs HTTP, TCP and gRPC checks from the host."""


class _Invalid(Exception):
    def __init__(self, value: Value, message: str) -> None:
        super().__init__(message)
        self.value = value


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _duration(value: Value) -> str:
    text = value.value.strip()
    if not _GO_DURATION.match(text) or not re.search(r"[1-9]", text):
        raise _Invalid(value, f"{text!r} is not a positive duration like 10s, 1m30s or 500ms")
    return text


def _count(value: Value, least: int = 0) -> int:
    text = value.value.strip()
    if not _COUNT.match(text) or int(text) < least:
        raise _Invalid(value, f"{value.value!r} is not a whole number of at least {least}")
    return int(text)


def _size(value: Value) -> int:
    return _count(value, least=1)


def _method(value: Value) -> str:
    text = value.value.strip().upper()
    if not _HTTP_METHOD.match(text):
        raise _Invalid(value, f"{value.value!r} is not an HTTP method")
    return text


def _server_name(value: Value) -> str:
    name = value.value.strip()
    if not _SERVER_NAME.match(name):
        raise _Invalid(value, f"{value.value!r} is not a TLS server name")
    return name


def _status(value: Value) -> str:
    status = value.value.strip().lower()
    if status not in _STATUSES:
        raise _Invalid(value, f"{value.value!r} is not one of {', '.join(_STATUSES)}")
    return status


def _text(value: Value) -> str:
    return value.value


Reader = Callable[[Value], object]
_TIMING: dict[str, tuple[str, Reader]] = {"interval": ("interval", _duration), "timeout": ("timeout", _duration)}
_TLS: dict[str, tuple[str, Reader]] = {"tls_server_name": ("tls_server_name", _server_name)}
_HTTP: dict[str, tuple[str, Reader]] = {**_TLS, "http_method": ("method", _method), "body": ("body", _text)}
_ANY: dict[str, tuple[str, Reader]] = {
    "initial_status": ("status", _status),
    "deregister_after": ("deregister_after", _duration),
    "notes": ("notes", _text),
    "output_max_size": ("output_max_size", _size),
    "success_before_passing": ("success_before_passing", _count),
    "failures_before_critical": ("failures_before_critical", _count),
}
"""Check fields -> (Check or CheckOptions attribute, reader): of every kind of check, of those speaking
TLS, of HTTP(S)."""
_OPTIONS = frozenset(CheckOptions.__dataclass_fields__)


def _options(fields: Mapping[str, Value], table: Mapping[str, tuple[str, Reader]]) -> dict[str, Any]:
    """The fields of ``table`` that are set, read into Check attributes (a check has a few fields)."""
    return {table[key][0]: table[key][1](value) for key, value in fields.items() if key in table}


def _flag(fields: Mapping[str, Value], key: str, ctx: CheckContext, problems: list[Problem]) -> bool:
    """A true/false key (metadata.parse_bool); another word is a problem, and the key is left out."""
    value = fields.get(key)
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


def _headers(fields: Mapping[str, Value]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``HEADER_<Name>=v1,v2``: the name as written in the label or variable (keys are lower-cased),
    the values split at commas (``\\,`` is a comma)."""
    headers = []
    for key, value in fields.items():
        if not key.startswith(HEADER):
            continue
        lowered = key[len(HEADER) :]
        name = value.source[-len(lowered) :]
        if name.lower() != lowered or not _HEADER_NAME.match(name):
            raise _Invalid(value, f"{name!r} is not an HTTP header name")
        values = tuple(split_tags(value.value))
        if not values or not all(v.isprintable() for v in values):
            raise _Invalid(value, f"{value.value!r} is not a list of header values")
        headers.append((name, values))
    return tuple(sorted(headers))


def _substitute(word: str, subst: Mapping[str, str]) -> str:
    for name, value in subst.items():
        word = word.replace(name, value)
    return word


def _script(value: Value, ctx: CheckContext) -> tuple[str, ...]:
    if not ctx.allow_script_checks:
        raise _Invalid(value, "script checks are refused unless registrar runs with --allow-script-checks")
    try:
        words = shlex.split(value.value)
    except ValueError as e:
        raise _Invalid(value, f"cannot split the command: {e}") from None
    if not words:
        raise _Invalid(value, "the command is empty")
    subst = {"$SERVICE_IP": ctx.host, "$SERVICE_PORT": str(ctx.port)}
    return tuple(_substitute(w, subst) for w in words)


def _kind(fields: Mapping[str, Value], ctx: CheckContext, problems: list[Problem]) -> dict[str, Any] | None:
    """The kind of check its fields ask for, with that kind's own fields, as Check attributes; None when
    they ask for none. Raises _Invalid on a malformed value, adds to ``problems`` a key it leaves out."""
    target = _hostport(ctx.host, ctx.port)
    timing = {"interval": DEFAULT_INTERVAL, **_options(fields, _TIMING)}
    for key, scheme in (("http", "http"), ("https", "https")):
        if key in fields:
            url = f"{scheme}://{target}{_path(fields[key])}"
            skip = _flag(fields, "tls_skip_verify", ctx, problems)
            attrs = {"http": url, "tls_skip_verify": skip, **timing, **_options(fields, _HTTP)}
            header = _headers(fields)
            if header:
                attrs["header"] = header
            return attrs
    if "script" in fields:
        return {"args": _script(fields["script"], ctx), **timing}
    if "ttl" in fields:
        return {"ttl": _duration(fields["ttl"])}
    if _flag(fields, "tcp", ctx, problems):
        return {"tcp": target, **timing}
    if _flag(fields, "grpc", ctx, problems):
        use_tls = _flag(fields, "grpc_use_tls", ctx, problems)
        skip = _flag(fields, "tls_skip_verify", ctx, problems)
        return {"grpc": target, "grpc_use_tls": use_tls, "tls_skip_verify": skip, **timing, **_options(fields, _TLS)}
    if _flag(fields, "h2ping", ctx, problems):
        skip = _flag(fields, "tls_skip_verify", ctx, problems)
        return {"h2ping": target, "tls_skip_verify": skip, **timing, **_options(fields, _TLS)}
    if "exec" in fields:
        return _exec(fields, ctx, problems)
    return None


def _within(
    value: Value, number: float, least: float, most: float, unit: str, problems: list[Problem], ctx: CheckContext
) -> float:
    """``number``, read from ``value``, within [least, most]; beyond them: one problem, and the bound."""
    if least <= number <= most:
        return number
    bound, word = (least, "less") if number < least else (most, "more")
    message = f"{value.value!r} is {word} than an exec check takes; {bound:g}{unit} used"
    problems.append(Problem(ctx.container, value.source, message))
    return bound


def duration_seconds(duration: str) -> float:
    """A Go duration (``1m30s``, ``500ms``) in seconds."""
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", duration))


def _exec(fields: Mapping[str, Value], ctx: CheckContext, problems: list[Problem]) -> dict[str, Any]:
    """``CHECK_EXEC="cmd args"``: a TTL check that registrar passes with the command's result, run in the
    container every INTERVAL (at least 1 s, as Consul's own checks) for at most TIMEOUT (default the
    interval, at most 10 s; never more than the interval or 60 s), its output kept up to OUTPUT_MAX_SIZE
    bytes (default 4 KiB, at most 64 KiB). A value beyond those bounds is one problem, and the bound is used."""
    value = fields["exec"]
    if not ctx.exec_checks:
        raise _Invalid(value, "exec checks are off on this host (--exec-checks off)")
    try:
        args = tuple(shlex.split(value.value))
    except ValueError as e:
        raise _Invalid(value, f"cannot split the command: {e}") from None
    if not args:
        raise _Invalid(value, "the command is empty")
    interval, size = duration_seconds(DEFAULT_INTERVAL), DEFAULT_EXEC_OUTPUT
    if (given := fields.get("interval")) is not None:
        interval = _within(given, duration_seconds(_duration(given)), 1.0, math.inf, "s", problems, ctx)
    timeout = min(interval, 10.0)
    if (given := fields.get("timeout")) is not None:
        timeout = _within(given, duration_seconds(_duration(given)), 0.0, min(interval, 60.0), "s", problems, ctx)
    if (given := fields.get("output_max_size")) is not None:
        size = int(_within(given, _size(given), 1, MAX_EXEC_OUTPUT, "", problems, ctx))
    probe = Probe("", args, interval, timeout, size)
    return {"ttl": probe.ttl, "probe": probe, "exec_notes": f"registrar runs in the container: {value.value}"}


MIN_HOST_INTERVAL = 1.0
"""Seconds: the shortest interval of a check registrar runs from the host (``--catalog``), the agent's."""
HOST_CHECK_TIMEOUT = 10.0
"""Seconds an HTTP, TCP or gRPC check that registrar runs (``--catalog``) waits without a TIMEOUT: the agent's
default."""


def host_probe(check: Check) -> Probe:
    """The probe that runs an HTTP, TCP or gRPC check from the host (``--catalog``), timed as the agent times it
    (agent/checks/check.go): every INTERVAL, at least 1 s; within TIMEOUT if it is under the interval, else
    (HTTP, TCP) within the interval if that is under 10 s, else 10 s (gRPC: TIMEOUT, else 10 s); the output it
    keeps (OUTPUT_MAX_SIZE, else 4 KiB) and its thresholds."""
    options = check.options or CheckOptions()
    interval = max(MIN_HOST_INTERVAL, duration_seconds(check.interval or DEFAULT_INTERVAL))
    timeout = duration_seconds(check.timeout) if check.timeout else 0.0
    if check.grpc:
        timeout = timeout or HOST_CHECK_TIMEOUT
    elif not 0 < timeout < interval:
        timeout = min(interval, HOST_CHECK_TIMEOUT)
    return Probe(
        check.check_id,
        (),
        interval,
        timeout,
        options.output_max_size or DEFAULT_EXEC_OUTPUT,
        target=check,
        passing_after=max(1, options.success_before_passing or 1),
        critical_after=max(1, options.failures_before_critical or 1),
    )


KINDS = ("http", "https", "script", "ttl", "tcp", "grpc", "h2ping", "exec")
"""The kinds of check, in the order ``_kind`` takes the first that is set (registrator's, then ours)."""
_FLAG_KINDS = frozenset({"tcp", "grpc", "h2ping"})


def _one_kind(fields: Mapping[str, Value], ctx: CheckContext, problems: list[Problem]) -> None:
    """A check has one kind: each kind set after the first is one problem (it is ignored, as in registrator)."""
    asked = [k for k in KINDS if k in fields and (k not in _FLAG_KINDS or parse_bool(fields[k].value))]
    for kind in asked[1:]:
        message = (
            f"this check is {asked[0].upper()} already (one kind a check, the first in {'/'.join(KINDS)}); ignored"
        )
        problems.append(Problem(ctx.container, fields[kind].source, message))


def _check(fields: Mapping[str, Value], ctx: CheckContext, check_id: str, problems: list[Problem]) -> Check | None:
    """One check from its own fields (keys without ``check_`` and number), or None (none asked for, or
    dropped with a problem)."""
    _one_kind(fields, ctx, problems)
    try:
        attrs = _kind(fields, ctx, problems)
        if attrs is None:
            return None
        attrs.update(_options(fields, _ANY))
        probe = attrs.pop("probe", None)
        if probe is not None:  # registrar's own TTL check: the output size is registrar's to keep
            attrs["probe"] = replace(probe, check_id=check_id)
            attrs.pop("output_max_size", None)
            attrs.setdefault("notes", attrs.pop("exec_notes"))
        options = {name: attrs.pop(name) for name in _OPTIONS if name in attrs}
        check = Check(check_id, options=CheckOptions(**options) if options else None, **attrs)
        return _from_host(check, fields, ctx, problems) if ctx.host_checks else check
    except _Invalid as e:
        problems.append(Problem(ctx.container, e.value.source, f"check dropped: {e}"))
        return None


def _from_host(check: Check, fields: Mapping[str, Value], ctx: CheckContext, problems: list[Problem]) -> Check:
    """``--catalog``: an HTTP, TCP or gRPC check with the probe that runs it from the host; what registrar
    cannot run as the labels ask is a problem naming the key."""
    if check.grpc and check.grpc_use_tls and check.tls_skip_verify:
        message = "registrar cannot run a gRPC check over TLS without verifying the server: it stays critical"
        problems.append(Problem(ctx.container, fields["tls_skip_verify"].source, message))
    if check.h2ping:
        message = "registrar does not run H2PING checks with --catalog: it stays at its initial status"
        problems.append(Problem(ctx.container, fields["h2ping"].source, message))
    if not (check.http or check.tcp or check.grpc):
        return check
    if check.interval and duration_seconds(check.interval) < MIN_HOST_INTERVAL:
        message = f"{check.interval!r} is less than a check takes; {MIN_HOST_INTERVAL:g}s used"
        problems.append(Problem(ctx.container, fields["interval"].source, message))
    return replace(check, probe=host_probe(check))


def _split(key: str) -> tuple[str, str] | None:
    """``check_2_http`` -> ("2", "http"), ``check_http`` -> ("", "http"); None for an unknown key."""
    field = key[len("check_") :]
    number = ""
    if field[:1] in NUMBERS and field[1:2] == "_":
        number, field = field[0], field[2:]
    if field in FIELDS or (field.startswith(HEADER) and len(field) > len(HEADER)):
        return number, field
    return None


def build_checks(meta: Mapping[str, Value], ctx: CheckContext) -> tuple[tuple[Check, ...], list[Problem]]:
    """The checks of one service (check 1, then 2..9, then ``--ttl``'s) and the problems met."""
    problems: list[Problem] = []
    groups: dict[str, dict[str, Value]] = {}  # "" (check 1), "2" .. "9" -> that check's fields
    for key, value in sorted(meta.items()):
        if not key.startswith("check_") or key == DOCKER_HEALTH_KEY:
            continue
        split = _split(key)
        if split is None:
            problems.append(Problem(ctx.container, value.source, "unknown check option; ignored"))
        else:
            groups.setdefault(split[0], {})[split[1]] = value
    checks = []
    for number, fields in sorted(groups.items()):
        check_id = f"service:{ctx.service_id}:{number}" if number else f"service:{ctx.service_id}"
        check = _check(fields, ctx, check_id, problems)
        if check is not None:
            checks.append(check)
    if ctx.ttl > 0:
        checks.append(Check(f"service:{ctx.service_id}:ttl", ttl=f"{ctx.ttl}s", status="passing"))
    return tuple(checks), problems
