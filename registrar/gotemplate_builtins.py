"""The builtin functions of Go's text/template, Go's truth, and how an argument meets a parameter's type.

Pure, no I/O. A Go string is a str whose bytes that are not UTF-8 are held as surrogate escapes, so
that ``len``, ``index`` and ``slice`` count bytes as Go does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from registrar.govalues import NO_VALUE, GoMap, GoTime, NilPointer, Struct, sprint, sprintf, sprintln, type_name


class TemplateError(Exception):
    """A template that does not parse, or fails on the data (Go's parse and exec errors)."""


@dataclass(frozen=True)
class Function:
    """A function a template may call: its parameters' kinds (``string``, ``int``, ``[]string``,
    ``map[string]string``, ``[]byte``, ``any``: an ``interface{}``, ``value``: a ``reflect.Value``),
    the kind of its variadic rest ("" for none), and the Python callable."""

    call: Callable[..., Any]
    params: tuple[str, ...]
    variadic: str = ""


def go_bytes(text: str) -> bytes:
    """A Go string's bytes."""
    return text.encode("utf-8", "surrogateescape")


def go_string(data: bytes) -> str:
    """Bytes as a Go string (bytes that are not UTF-8 kept, as surrogate escapes)."""
    return data.decode("utf-8", "surrogateescape")


def truth(value: Any) -> bool:
    """Go's ``isTrue``: false, 0, "", an empty slice or map, nil and a missing value are false."""
    if value is NO_VALUE or value is None or isinstance(value, NilPointer):
        return False
    if isinstance(value, Struct | GoTime):
        return True
    return bool(value)


def zero(kind: str) -> Any:
    """The zero value of a parameter kind that can be nil (``nil`` given, or a missing value)."""
    return {"[]string": [], "[]byte": b"", "map[string]string": GoMap("map[string]string", {}, "")}.get(kind)


def convert(value: Any, kind: str) -> Any:
    """A value as the argument of a parameter of this kind, or TemplateError as Go's ``validateType``."""
    if kind == "value":
        return value
    if value is NO_VALUE:
        if kind in ("string", "int"):
            raise TemplateError(f"invalid value; expected {kind}")
        return zero(kind)
    if kind == "any":
        return value
    ok = {
        "string": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "[]string": isinstance(value, list) and all(isinstance(v, str) for v in value),
        "[]byte": isinstance(value, bytes),
        "map[string]string": isinstance(value, GoMap) and value.type_name == "map[string]string",
    }[kind]
    if not ok:
        raise TemplateError(f"wrong type for value; expected {kind}; got {type_name(value)}")
    return value


def _len(item: Any) -> int:
    if isinstance(item, str):
        return len(go_bytes(item))
    if isinstance(item, list | bytes | GoMap):
        return len(item)
    if isinstance(item, NilPointer):
        raise TemplateError("len of nil pointer")
    raise TemplateError(f"len of type {type_name(item)}")


def _position(index: Any, size: int, what: str = "index") -> int:
    if not isinstance(index, int) or isinstance(index, bool):
        raise TemplateError(f"cannot index slice/array with type {type_name(index)}")
    if index < 0 or index > size:
        raise TemplateError(f"{what} out of range: {index}")
    return index


def _index(item: Any, *indexes: Any) -> Any:
    for index in indexes:
        if item is NO_VALUE or item is None:
            raise TemplateError("index of untyped nil")
        if isinstance(item, GoMap):
            if not isinstance(index, str) or not item.type_name.startswith("map[string]"):
                raise TemplateError(f"value has type {type_name(index)}; should be string")
            item = item.get(index, item.zero)
        elif isinstance(item, str | list | bytes):
            sequence = go_bytes(item) if isinstance(item, str) else item
            if _position(index, len(sequence)) == len(sequence):
                raise TemplateError(f"index out of range: {index}")
            item = sequence[index]
        else:
            raise TemplateError(f"can't index item of type {type_name(item)}")
    return item


def _slice(item: Any, *indexes: Any) -> Any:
    if item is NO_VALUE or item is None:
        raise TemplateError("slice of untyped nil")
    if len(indexes) > 3:
        raise TemplateError(f"too many slice indexes: {len(indexes)}")
    if not isinstance(item, str | list | bytes):
        raise TemplateError(f"can't slice item of type {type_name(item)}")
    if isinstance(item, str) and len(indexes) == 3:
        raise TemplateError("cannot 3-index slice a string")
    sequence = go_bytes(item) if isinstance(item, str) else item
    bounds = [_position(i, len(sequence)) for i in indexes]
    start, end = (bounds + [0, len(sequence)][len(bounds) :])[:2] if bounds else (0, len(sequence))
    if start > end:
        raise TemplateError(f"invalid slice index: {start} > {end}")
    if len(bounds) == 3 and bounds[1] > bounds[2]:
        raise TemplateError(f"invalid slice index: {bounds[1]} > {bounds[2]}")
    part = sequence[start:end]
    return go_string(part) if isinstance(part, bytes) and isinstance(item, str) else part


def _basic(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    return ""


def _eq(first: Any, *others: Any) -> bool:
    """Go's ``eq``: whether ``first`` equals any of the others (basic kinds by value; slices, maps and structs
    with maps are not comparable)."""
    if not others:
        raise TemplateError("missing argument for comparison")
    kind = _basic(first)
    for other in others:
        if kind != _basic(other):  # a basic value against another kind: unequal to a missing value, else an error
            if first is not NO_VALUE and other is not NO_VALUE:
                raise TemplateError("incompatible types for comparison")
            continue
        if kind:
            if first == other:
                return True
            continue
        if first is NO_VALUE or other is NO_VALUE:  # two missing values are equal, as in Go
            if first is other:
                return True
            continue
        if isinstance(first, list | bytes | GoMap | Struct) or isinstance(other, list | bytes | GoMap | Struct):
            raise TemplateError(f"non-comparable type {type_name(other)}")
        nil_first = first is None or isinstance(first, NilPointer)
        nil_other = other is None or isinstance(other, NilPointer)
        if nil_first or nil_other:
            if nil_first == nil_other:
                return True
            continue
        if isinstance(first, GoTime) and isinstance(other, GoTime) and first.text == other.text:
            return True
    return False


def _less(first: Any, second: Any) -> bool:
    kind = _basic(first)
    if kind in ("", "bool") or _basic(second) in ("", "bool"):
        raise TemplateError("invalid type for comparison")
    if kind != _basic(second):
        raise TemplateError("incompatible types for comparison")
    return bool(first < second)


BUILTINS: dict[str, Function] = {
    "and": Function(lambda *a: a[-1], ("value",), "value"),  # evaluated lazily by the engine
    "or": Function(lambda *a: a[-1], ("value",), "value"),
    "not": Function(lambda a: not truth(a), ("value",)),
    "len": Function(_len, ("value",)),
    "index": Function(_index, ("value",), "value"),
    "slice": Function(_slice, ("value",), "value"),
    "print": Function(lambda *a: sprint(a), (), "any"),
    "println": Function(lambda *a: sprintln(a), (), "any"),
    "printf": Function(lambda f, *a: sprintf(f, list(a)), ("string",), "any"),
    "eq": Function(_eq, ("value",), "value"),
    "ne": Function(lambda a, b: not _eq(a, b), ("value", "value")),
    "lt": Function(_less, ("value", "value")),
    "le": Function(lambda a, b: _less(a, b) or _eq(a, b), ("value", "value")),
    "gt": Function(lambda a, b: not _less(a, b) and not _eq(a, b), ("value", "value")),
    "ge": Function(lambda a, b: not _less(a, b), ("value", "value")),
}
