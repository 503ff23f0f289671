"""Reading ``SERVICE_*`` metadata from a container's labels and environment.

Pure: takes the ``Config`` section of ``docker inspect`` and returns plain values. No I/O.
The rules are registrator's: ``SERVICE_<KEY>`` applies to every port, ``SERVICE_<port>_<KEY>``
to one port and beats the general key; a label beats an environment variable; an empty value
counts as unset; keys are lower-cased. Its living fork's forms (fayrus/registrator v9) are read
too: ``SERVICE_<port>_<proto>_<KEY>`` (``SERVICE_53_udp_NAME``) beats ``SERVICE_<port>_<KEY>`` for
that protocol, and ``SERVICE_<N>-<M>_<KEY>`` (``SERVICE_8000-8009_IGNORE``) applies to the ports of
that range: a single port beats a range, a range beats the general key. Within each form, a label
beats an environment variable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

PREFIX = "SERVICE_"

BOOLEANS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}
"""The words of every true/false key, in any case (``SERVICE_IGNORE`` excepted: any non-empty value)."""
BOOLEAN_WORDS = "true/false, 1/0, yes/no, on/off"


def parse_bool(text: str) -> bool | None:
    """A true/false key's value (``BOOLEANS``, any case, surrounding spaces ignored); None for any other word."""
    return BOOLEANS.get(text.strip().lower())


@dataclass(frozen=True)
class Value:
    """A metadata value with where it came from, so a warning can name the key."""

    value: str
    source: str  # e.g. "label SERVICE_80_CHECK_HTTP"
    from_port: bool = False


Warn = Callable[[Value | str, str], None]
"""How a reader of the keys reports a problem: the Value (or what else it is about, e.g. a label) and the message."""

PROTOCOLS = ("tcp", "udp")


@dataclass(frozen=True)
class ContainerMetadata:
    """All ``SERVICE_*`` entries of one container: general, per port range, per port, per port and protocol."""

    general: Mapping[str, Value]
    per_port: Mapping[str, Mapping[str, Value]]
    """Port (``"80"``) -> its keys."""
    per_protocol: Mapping[tuple[str, str], Mapping[str, Value]] = field(default_factory=dict)
    """(port, ``tcp`` or ``udp``) -> its keys."""
    per_range: Mapping[tuple[int, int], Mapping[str, Value]] = field(default_factory=dict)
    """(first port, last port) -> its keys."""

    def for_port(self, port: str, proto: str = "tcp") -> dict[str, Value]:
        """The metadata for one container port: the port and protocol's own keys beat the port's, which
        beat a range's (a narrower range beats a wider one), which beat the general ones."""
        merged = dict(self.general)
        number = int(port) if port.isdigit() else -1
        for (first, last), values in sorted(self.per_range.items(), key=lambda r: r[0][0] - r[0][1]):
            if first <= number <= last:
                merged.update(values)
        merged.update(self.per_port.get(port, {}))
        merged.update(self.per_protocol.get((port, proto), {}))
        return merged


def _entries(config: Mapping[str, Any]) -> Iterable[tuple[str, str, str]]:
    """(name, value, kind) of env entries then labels, so later labels win."""
    for entry in config.get("Env") or ():
        if isinstance(entry, str) and "=" in entry:
            name, _, value = entry.partition("=")
            yield name, value, "env"
    labels = config.get("Labels") or {}
    for name, value in labels.items():
        if isinstance(name, str) and isinstance(value, str):
            yield name, value, "label"


@dataclass(frozen=True)
class Found:
    """One ``SERVICE_*`` entry as read, overridden or not, with its scope (``registrar explain`` lists them)."""

    key: str
    """The key without prefix and scope, lower-cased: ``name``, ``check_http``."""
    value: Value
    port: str = ""
    """The port of ``SERVICE_<port>_<KEY>`` and ``SERVICE_<port>_<proto>_<KEY>``; empty otherwise."""
    proto: str = ""
    """The protocol of ``SERVICE_<port>_<proto>_<KEY>``; empty otherwise."""
    span: tuple[int, int] | None = None
    """The first and last port of ``SERVICE_<N>-<M>_<KEY>``."""

    @property
    def scope(self) -> str:
        """``general``, ``port 80``, ``port 53/udp`` or ``ports 8000-8009``."""
        if self.span is not None:
            return f"ports {self.span[0]}-{self.span[1]}"
        if self.port:
            return f"port {self.port}/{self.proto}" if self.proto else f"port {self.port}"
        return "general"

    def applies_to(self, port: str, proto: str) -> bool:
        """Whether ``ContainerMetadata.for_port(port, proto)`` consults this entry's scope."""
        if self.span is not None:
            return port.isdigit() and self.span[0] <= int(port) <= self.span[1]
        return self.port in ("", port) and self.proto in ("", proto)


def read_metadata(config: Mapping[str, Any], found: list[Found] | None = None) -> ContainerMetadata:
    """Collect the ``SERVICE_*`` labels and environment variables of a container's Config.

    With ``found``, every entry read is also appended to it, those that a label or a later entry of
    the same scope replaced included (``registrar explain``); the daemon passes none.
    """
    general: dict[str, Value] = {}
    per_port: dict[str, dict[str, Value]] = {}
    per_protocol: dict[tuple[str, str], dict[str, Value]] = {}
    per_range: dict[tuple[int, int], dict[str, Value]] = {}
    for name, value, kind in _entries(config):
        if not name.startswith(PREFIX) or value == "":
            continue
        key = name[len(PREFIX) :].lower()
        head, sep, rest = key.partition("_")
        first, dash, last = head.partition("-")
        scope = sep and rest and head.isascii()
        port = proto = ""
        span = None
        if scope and head.isdigit():
            port = str(int(head))
            proto, sep2, inner = rest.partition("_")
            if proto in PROTOCOLS and sep2 and inner:
                target, key = per_protocol.setdefault((port, proto), {}), inner
            else:
                target, key, proto = per_port.setdefault(port, {}), rest, ""
        elif scope and dash and first.isdigit() and last.isdigit() and int(first) <= int(last):
            span = (int(first), int(last))
            target, key = per_range.setdefault(span, {}), rest
        elif key:
            target = general
        else:
            continue
        entry = target[key] = Value(value, f"{kind} {name}", from_port=target is not general)
        if found is not None:
            found.append(Found(key, entry, port, proto, span))
    return ContainerMetadata(general, per_port, per_protocol, per_range)


def split_tags(text: str) -> list[str]:
    r"""Split a comma-separated tag list; ``\,`` is a literal comma. Blank tags are dropped."""
    tags: list[str] = []
    current: list[str] = []
    chars = iter(text)
    for char in chars:
        if char == "\\":
            nxt = next(chars, "")
            current.append("," if nxt == "," else char + nxt)
        elif char == ",":
            tags.append("".join(current))
            current = []
        else:
            current.append(char)
    tags.append("".join(current))
    return [t.strip() for t in tags if t.strip()]
