"""Tags as Go templates, as registrator master renders ``-tags`` and its fork ``SERVICE_TAGS``.

A template is rendered against the container's ``docker inspect`` seen as go-dockerclient's
``*docker.Container`` (``.ID``, ``.Name``, ``.Config.Labels``, ``.NetworkSettings.Networks`` ...), with
registrator's 13 functions (its bridge/bridge.go: argument order and edge rules kept, an index out of
range an error as Go's panic is) and Go's builtins (gotemplate.py). Imported only where a value holds
``{{``: the plain tag list costs nothing. Pure but for ``httpGet``, which fetches only with ``--tags-http``.
"""

from __future__ import annotations

import functools
import json
import re
import time
import warnings
from collections.abc import Callable, Mapping
from functools import cache, lru_cache
from typing import Any
from urllib.parse import urljoin

from registrar.gotemplate import Template, parse
from registrar.gotemplate_builtins import Function, TemplateError, go_bytes, go_string
from registrar.govalues import MAX_TEXT, GoMap, GoTime, NilPointer, Struct, TooLarge

__all__ = ["HTTP_MAX_BODY", "HTTP_TIMEOUT", "MAX_TEXT", "TemplateError", "container_view", "render", "template"]

HTTP_TIMEOUT = 5.0
"""Seconds ``httpGet`` may take in all: connecting, each redirect and the whole body (registrator waits 10;
a resync should not)."""

HTTP_MAX_BODY = 1024 * 1024
"""The largest body ``httpGet`` reads; a larger one is "", as any failure (a tag is a few bytes, and a
template's output is at most MAX_TEXT anyway)."""

# go-dockerclient's types, as much of them as a template reads: "GoName[/jsonName]:type" per field.
_SCHEMA = {
    "Container": "ID/Id:string Created:time Path:string Args:[]string Config:*Config State:State Image:string"
    " Node:*SwarmNode NetworkSettings:*NetworkSettings SysInitPath:string ResolvConfPath:string"
    " HostnamePath:string HostsPath:string LogPath:string Name:string Driver:string Mounts:[]Mount"
    " Volumes:map[string]string VolumesRW:map[string]bool HostConfig:*HostConfig ExecIDs:[]string"
    " GraphDriver:*GraphDriver RestartCount:int AppArmorProfile:string MountLabel:string ProcessLabel:string"
    " Platform:string SizeRw:int SizeRootFs:int",
    "State": "Status:string Running:bool Paused:bool Restarting:bool OOMKilled:bool RemovalInProgress:bool"
    " Dead:bool Pid:int ExitCode:int Error:string StartedAt:time FinishedAt:time Health:Health",
    "Health": "Status:string FailingStreak:int Log:[]HealthCheck",
    "HealthCheck": "Start:time End:time ExitCode:int Output:string",
    "SwarmNode": "ID:string IP:string Addr:string Name:string CPUs:int Memory:int Labels:map[string]string",
    "Mount": "Name:string Source:string Destination:string Driver:string Mode:string RW:bool",
    "GraphDriver": "Name:string Data:map[string]string",
    "Config": "Hostname:string Domainname:string User:string Memory:int MemorySwap:int MemoryReservation:int"
    " KernelMemory:int CPUShares/CpuShares:int CPUSet/Cpuset:string PortSpecs:[]string"
    " ExposedPorts:map[Port]struct{} PublishService:string StopSignal:string StopTimeout:int Env:[]string"
    " Cmd:[]string Shell:[]string DNS/Dns:[]string Image:string Volumes:map[string]struct{}"
    " VolumeDriver:string WorkingDir:string MacAddress:string Entrypoint:[]string SecurityOpts:[]string"
    " OnBuild:[]string Mounts:[]Mount Labels:map[string]string AttachStdin:bool AttachStdout:bool"
    " AttachStderr:bool ArgsEscaped:bool Tty:bool OpenStdin:bool StdinOnce:bool NetworkDisabled:bool"
    " VolumesFrom:string",
    "NetworkSettings": "Networks:map[string]ContainerNetwork IPAddress:string IPPrefixLen:int MacAddress:string"
    " Gateway:string Bridge:string Ports:map[Port][]PortBinding NetworkID:string EndpointID:string"
    " SandboxKey:string GlobalIPv6Address:string GlobalIPv6PrefixLen:int IPv6Gateway:string"
    " LinkLocalIPv6Address:string LinkLocalIPv6PrefixLen:int SecondaryIPAddresses:[]string"
    " SecondaryIPv6Addresses:[]string",
    "ContainerNetwork": "Aliases:[]string MacAddress:string GlobalIPv6PrefixLen:int GlobalIPv6Address:string"
    " IPv6Gateway:string IPPrefixLen:int IPAddress:string Gateway:string EndpointID:string NetworkID:string"
    " Links:[]string",
    "PortBinding": "HostIP/HostIp:string HostPort:string",
    "HostConfig": "Binds:[]string CapAdd:[]string CapDrop:[]string ContainerIDFile:string"
    " PortBindings:map[Port][]PortBinding Links:[]string DNS/Dns:[]string DNSOptions/DnsOptions:[]string"
    " DNSSearch/DnsSearch:[]string ExtraHosts:[]string VolumesFrom:[]string UsernsMode:string"
    " NetworkMode:string IpcMode:string PidMode:string UTSMode:string RestartPolicy:RestartPolicy"
    " Privileged:bool PublishAllPorts:bool ReadonlyRootfs:bool AutoRemove:bool Memory:int MemorySwap:int"
    " MemoryReservation:int NanoCPUs:int CPUShares/CpuShares:int ShmSize:int GroupAdd:[]string"
    " SecurityOpt:[]string Runtime:string LogConfig:LogConfig Tmpfs:map[string]string Sysctls:map[string]string",
    "RestartPolicy": "Name:string MaximumRetryCount:int",
    "LogConfig": "Type:string Config:map[string]string",
}
_ZEROS: dict[str, Any] = {"string": "", "int": 0, "bool": False}
_TIME = re.compile(r"^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


@cache
def _fields(struct: str) -> tuple[tuple[str, str, str], ...]:
    out = []
    for spec in _SCHEMA[struct].split():
        names, _, kind = spec.partition(":")
        go_name, _, json_name = names.partition("/")
        out.append((go_name, json_name or go_name, kind))
    return tuple(out)


def _time(text: Any) -> GoTime:
    """A JSON time as Go's ``Time.String()`` prints it (UTC as Docker gives it; the zero time when absent)."""
    match = _TIME.match(text) if isinstance(text, str) else None
    if match is None:
        return GoTime("0001-01-01 00:00:00 +0000 UTC")
    day, clock, fraction, zone = match.groups()
    fraction = (fraction or "")[:9].rstrip("0")
    zone = "+0000 UTC" if zone == "Z" else f"{zone.replace(':', '')} {zone.replace(':', '')}"
    return GoTime(f"{day} {clock}{'.' + fraction if fraction else ''} {zone}")


def _value(kind: str, raw: Any) -> Any:
    """A JSON value decoded into a Go type as encoding/json does (absent or mistyped: the zero value)."""
    if kind in _ZEROS:
        return raw if type(raw) is type(_ZEROS[kind]) else _ZEROS[kind]  # a bool is no int here, as in Go
    if kind == "time":
        return _time(raw)
    if kind.startswith("[]"):
        return [_value(kind[2:], item) for item in raw] if isinstance(raw, list) else []
    if kind.startswith("map["):
        key, _, elem = kind[4:].partition("]")
        go_key = "docker.Port" if key == "Port" else key
        go_elem = "struct {}" if elem == "struct{}" else elem if elem in _ZEROS else _go_type(elem)
        zero = _zero(elem)
        items = {str(k): _value(elem, v) for k, v in raw.items()} if isinstance(raw, dict) else {}
        return GoMap(f"map[{go_key}]{go_elem}", items, zero)
    if kind == "struct{}":
        return Struct("struct {}", {})
    if kind.startswith("*"):
        if not isinstance(raw, dict):
            return NilPointer(_go_type(kind))
        return _struct(kind[1:], raw, pointer=True)
    return _struct(kind, raw if isinstance(raw, dict) else {}, pointer=False)


def _zero(kind: str) -> Any:
    return _value(kind, None) if kind not in _ZEROS else _ZEROS[kind]


def _go_type(kind: str) -> str:
    return ("*docker." + kind[1:]) if kind.startswith("*") else kind if kind in _ZEROS else "docker." + kind


def _struct(name: str, raw: Mapping[str, Any], pointer: bool) -> Struct:
    folded = {str(k).lower(): v for k, v in raw.items()}
    fields = {
        go_name: _value(kind, raw[json_name] if json_name in raw else folded.get(json_name.lower()))
        for go_name, json_name, kind in _fields(name)
    }
    return Struct(("*docker." if pointer else "docker.") + name, fields)


def container_view(inspect: Mapping[str, Any]) -> Struct:
    """The container's ``docker inspect`` as go-dockerclient's ``*docker.Container``."""
    return _struct("Container", inspect, pointer=True)


# --- registrator's functions (bridge/bridge.go), and RE2 ----------------------------------------


def _go_slice(data: bytes, low: int, high: int | None = None) -> str:
    """``v[low:high]`` on a Go string; bounds Go would panic on are an error."""
    high = len(data) if high is None else high
    if low < 0 or high < low or high > len(data):
        raise IndexError(f"slice bounds out of range [{low}:{high}] with length {len(data)}")
    return go_string(data[low:high])


def str_slice(v: str, *i: int) -> str:
    """strSlice s start [end]: ``s[start:end]``; an end before the start slices to the end; a bound past
    the string gives the string whole."""
    data = go_bytes(v)
    if len(i) == 1 and len(data) >= i[0]:
        return _go_slice(data, i[0])
    if len(i) == 2 and len(data) >= i[0] and len(data) >= i[1]:
        if i[0] == 0:
            return _go_slice(data, 0, i[1])
        return _go_slice(data, i[0]) if i[1] < i[0] else _go_slice(data, i[0], i[1])
    return v


def s_index(i: int, s: list[str]) -> str:
    """sIndex i s: element i; a negative i counts from the end; past either end: the first or last element."""
    if i < 0:
        i = -i
        return s[0] if i >= len(s) else s[len(s) - i]
    if not s:
        raise IndexError("index out of range [-1]")
    return s[-1] if i >= len(s) else s[i]


def go_replace(n: int, old: str, new: str, v: str) -> str:
    """replace n old new s: strings.Replace(s, old, new, n); TooLarge before making a result over MAX_TEXT
    (an empty ``old`` puts ``new`` between every two characters)."""
    count = v.count(old) if n < 0 else min(n, v.count(old))
    if len(v) + count * (len(new) - len(old)) > MAX_TEXT:
        raise TooLarge("replace's result")
    return v.replace(old, new, n)


def go_join(sep: str, s: list[str]) -> str:
    """join sep s: strings.Join(s, sep); TooLarge before making a result over MAX_TEXT."""
    if sum(map(len, s)) + max(len(s) - 1, 0) * len(sep) > MAX_TEXT:
        raise TooLarge("join's result")
    return sep.join(s)


def go_split(sep: str, v: str) -> list[str]:
    """strings.Split(v, sep): an empty separator splits after each character."""
    return list(v) if sep == "" else v.split(sep)


def _upper(v: str) -> str:
    return "".join(c.upper() if len(c.upper()) == 1 else c for c in v)


def _lower(v: str) -> str:
    return "".join(c.lower()[0] for c in v)


_RE2_REFUSED = (  # (what to look for, in the pattern with every escape replaced by "E"), what it is
    (re.compile(r"\(\?(?:[=!>#(]|<[=!]|P=)"), "lookarounds, atomic groups, conditionals, comments"),
    (re.compile(r"\(\?[a-zA-Z]*[xauL]"), "the x, a, u and L flags"),
    (re.compile(r"[*+?}]\+"), "possessive quantifiers"),
    (re.compile(r"\{,\d"), "{,n} repetitions"),
    (re.compile(r"\[:\^"), "negated POSIX classes"),
)
_POSIX = {  # RE2's ASCII classes, inside a bracket expression
    "alnum": "0-9A-Za-z", "alpha": "A-Za-z", "ascii": "\\x00-\\x7f", "blank": "\\t ", "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9", "graph": "!-~", "lower": "a-z", "print": " -~", "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z", "word": "0-9A-Za-z_", "xdigit": "0-9A-Fa-f", "punct": "!-/:-@\\[-`{-~",
}  # fmt: skip
_SPACE_CLASS = {"\\s": "\\t\\n\\f\\r ", "\\d": "0-9", "\\w": "0-9A-Za-z_"}
_OUTSIDE = {"\\s": "[\\t\\n\\f\\r ]", "\\S": "[^\\t\\n\\f\\r ]", "\\d": "[0-9]", "\\D": "[^0-9]", "\\z": "\\Z"}
_OUTSIDE |= {"\\w": "[0-9A-Za-z_]", "\\W": "[^0-9A-Za-z_]"}
_OUTSIDE |= {"\\b": r"(?:(?<=\w)(?!\w)|(?<!\w)(?=\w))".replace("\\w", "[0-9A-Za-z_]")}


@lru_cache(maxsize=128)
def re2(pattern: str) -> re.Pattern[str]:
    """A Go regular expression (RE2) as a Python one that matches the same strings: ``\\d \\w \\s \\b``
    ASCII, ``$`` only at the very end (outside ``(?m)``); what Python would read otherwise is refused."""
    if re.search(r"\\[1-9Z]", re.sub(r"\\\\", "", pattern)):
        raise ValueError(f"regexp: {pattern!r}: back-references and \\Z are not supported (RE2 refuses them)")
    plain = re.sub(r"\\.", "E", pattern)
    for found, what in _RE2_REFUSED:
        if found.search(plain):
            raise ValueError(f"regexp: {pattern!r}: {what} are not supported (RE2 reads them otherwise, or not)")
    multiline = re.match(r"\(\?[a-zA-Z]*m", pattern) is not None
    out: list[str] = []
    in_class = False
    at = 0
    while at < len(pattern):
        char, pair = pattern[at], pattern[at : at + 2]
        if char == "\\":
            if in_class and pair in _SPACE_CLASS:
                out.append(_SPACE_CLASS[pair])
            elif in_class and pair in ("\\S", "\\D", "\\W"):
                raise ValueError(f"regexp: {pattern!r}: a negated class inside a class is not supported")
            else:
                out.append(_OUTSIDE.get(pair, pair) if not in_class else pair)
            at += 2
            continue
        if char == "[" and not in_class:
            in_class = True
            out.append(pattern[at : at + 2] if pair in ("[]", "[^") else char)
            at += 2 if pair in ("[]", "[^") else 1
            if pair == "[^" and pattern[at : at + 1] == "]":
                out.append("]")
                at += 1
            continue
        posix = re.match(r"\[:(\w+):\]", pattern[at:]) if in_class else None
        if posix is not None:
            if posix.group(1) not in _POSIX:
                raise ValueError(f"regexp: {pattern!r}: invalid character class range {posix.group()}")
            out.append(_POSIX[posix.group(1)])
            at += posix.end()
            continue
        if char == "]" and in_class:
            in_class = False
        elif char == "$" and not in_class and not multiline:
            char = "\\Z"
        out.append(char)
        at += 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            return re.compile("".join(out))
        except re.error as e:
            raise ValueError(f"regexp: error parsing {pattern!r}: {e}") from None


def match_first(r: str, s: list[str]) -> str:
    """matchFirstElement regex s: the first element the regular expression matches, "" for none."""
    compiled = re2(r)
    return next((e for e in s if compiled.search(e)), "")


def match_all(r: str, s: list[str]) -> list[str]:
    """matchAllElements regex s: the elements the regular expression matches."""
    compiled = re2(r)
    return [e for e in s if compiled.search(e)]


def json_parse(body: bytes, path: str) -> str:
    """jsonParse b "a::b::[0]": the value at the path, a string without its quotes (unescaped as sent),
    anything else as its JSON text; "" where the path or the JSON is not there."""
    text = body.decode("utf-8", "surrogateescape")
    decoder = json.JSONDecoder()
    at = 0
    try:
        for key in path.split("::"):
            at = _skip(text, at)
            if key.startswith("[") and key.endswith("]") and text[at] == "[":
                at = _member(text, at, decoder, int(key[1:-1]), None)
            elif text[at] == "{":
                at = _member(text, at, decoder, None, key)
            else:
                return ""
        at = _skip(text, at)
        _, end = decoder.raw_decode(text, at)
    except (ValueError, IndexError):
        return ""
    value = text[at:end]
    return value[1:-1] if value.startswith('"') else value


def _skip(text: str, at: int) -> int:
    while text[at] in " \t\r\n":
        at += 1
    return at


def _member(text: str, at: int, decoder: json.JSONDecoder, index: int | None, key: str | None) -> int:
    """Where the value of an array's ``index``th element or an object's ``key`` starts (ValueError: none)."""
    closer = "]" if key is None else "}"
    at, count = _skip(text, at + 1), 0
    while text[at] != closer:
        if key is not None:
            name, at = decoder.raw_decode(text, at)
            at = _skip(text, at)
            if text[at] != ":":
                raise ValueError("':' expected")
            at = _skip(text, at + 1)
            if name == key:
                return at
        elif count == index:
            return at
        _, at = decoder.raw_decode(text, at)
        at, count = _skip(text, at), count + 1
        if text[at] == ",":
            at = _skip(text, at + 1)
    raise ValueError("not found")


def http_get(url: str) -> bytes:
    """httpGet url: the body of a GET, redirects followed (``--tags-http``); b"" on any failure, as registrator's.

    One monotonic deadline, HTTP_TIMEOUT away, covers it all: connecting, each redirect, and the body, read
    in chunks with each read's timeout the time left (urllib3's own timeout bounds each socket read, so a
    server trickling a byte at a time would hold it for ever). A body over HTTP_MAX_BODY is a failure too."""
    global _POOL
    if not url.startswith(("http://", "https://")):
        return b""
    import urllib3  # only with --tags-http, and only where a template calls httpGet

    if _POOL is None:
        _POOL = urllib3.PoolManager(num_pools=4, maxsize=1)
    deadline = time.monotonic() + HTTP_TIMEOUT
    try:
        for _ in range(_MAX_REDIRECTS + 1):
            left = deadline - time.monotonic()
            if left <= 0:
                return b""
            timeout = urllib3.Timeout(connect=left, read=left)
            response = _POOL.request("GET", url, timeout=timeout, retries=False, redirect=False, preload_content=False)
            done = False
            try:
                location = response.get_redirect_location()
                if not location:
                    body = _read_body(response, deadline)
                    done = True
                    return body
                url = urljoin(url, location)
                if not url.startswith(("http://", "https://")):
                    return b""
            finally:
                if not done:  # a body not read to its end: the connection cannot serve another request
                    response.close()
                response.release_conn()
    except (urllib3.exceptions.HTTPError, ValueError, OSError):
        return b""
    return b""  # more redirects than Go's client follows


_MAX_REDIRECTS = 10
"""Redirects ``httpGet`` follows, as Go's http.Client."""


class _BodyFailed(OSError):
    """httpGet's body was too large, or not all there by the deadline."""


def _read_body(response: Any, deadline: float) -> bytes:
    """The response's body, read before ``deadline`` in chunks as they come; _BodyFailed when it is not
    all there by then or is over HTTP_MAX_BODY."""
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > HTTP_MAX_BODY:
        raise _BodyFailed("body too large")
    read1 = getattr(response, "read1", None)  # urllib3 2 (undecoded: no gzip bomb); 1.26: its http.client response's
    read1 = response._fp.read1 if read1 is None else functools.partial(read1, decode_content=False)
    connection = response.connection
    chunks: list[bytes] = []
    size = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _BodyFailed("deadline")
        if connection is not None and connection.sock is not None:
            connection.sock.settimeout(left)
        chunk = read1(_CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > HTTP_MAX_BODY:
            raise _BodyFailed("body too large")
        chunks.append(chunk)


_CHUNK = 64 * 1024


_POOL: Any = None
"""httpGet's urllib3 pool manager, made on its first call."""


def _http_off(url: str) -> bytes:
    raise TemplateError("httpGet is off: run registrar with --tags-http to let templates fetch URLs")


def functions(fetch: Callable[[str], bytes] | None) -> dict[str, Function]:
    """registrator's 13 functions, with ``httpGet`` fetching through ``fetch`` (None: httpGet is an error)."""
    return {
        "strSlice": Function(str_slice, ("string",), "int"),
        "sIndex": Function(s_index, ("int", "[]string")),
        "mIndex": Function(lambda k, m: m.get(k, ""), ("string", "map[string]string")),
        "toUpper": Function(_upper, ("string",)),
        "toLower": Function(_lower, ("string",)),
        "replace": Function(go_replace, ("int", "string", "string", "string")),
        "join": Function(go_join, ("string", "[]string")),
        "split": Function(go_split, ("string", "string")),
        "splitIndex": Function(lambda i, sep, v: s_index(i, go_split(sep, v)), ("int", "string", "string")),
        "matchFirstElement": Function(match_first, ("string", "[]string")),
        "matchAllElements": Function(match_all, ("string", "[]string")),
        "httpGet": Function(fetch or _http_off, ("string",)),
        "jsonParse": Function(json_parse, ("[]byte", "string")),
    }


_FUNCTIONS = {False: functions(None), True: functions(http_get)}


@lru_cache(maxsize=512)
def template(text: str, http: bool = False) -> Template:
    """The parsed template (cached: a label's template is parsed once); TemplateError if it does not parse."""
    return parse(text, _FUNCTIONS[http])


def render(text: str, view: Struct, http: bool = False) -> str:
    """The template's output for this container (``container_view``); TemplateError where Go's fails.
    Bytes that are not UTF-8 (a string sliced mid-character) come out as U+FFFD, as in Go's JSON. An output
    over MAX_TEXT bytes is a TemplateError: the container's service is registered without these tags."""
    out = template(text, http).execute(view).encode("utf-8", "surrogateescape")
    if len(out) > MAX_TEXT:
        raise TemplateError(f"the output is over registrar's limit of {MAX_TEXT} bytes")
    return out.decode("utf-8", "replace")
