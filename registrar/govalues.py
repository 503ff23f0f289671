"""Go's values as the template engine holds them, and how Go's ``fmt`` prints them.

Pure, no I/O. A Go ``string`` is a str, ``int`` an int, ``float64`` a float, ``bool`` a bool, a slice a
list (a nil slice and an empty one alike), ``[]byte`` bytes, an untyped nil None; structs, maps, times
and nil pointers have a class here. ``sprint``/``sprintln``/``sprintf`` are ``fmt.Sprint``/``Sprintln``/
``Sprintf`` for these values (the verbs ``%v %s %d %q %x %X %t %f %e %g %c %T %%``, flags, width and
precision, ``*`` ones too, with Go's limits on them); what they make is capped at MAX_TEXT (TooLarge).
"""

from __future__ import annotations

import decimal
import math
import re
from collections.abc import Iterable
from typing import Any

MAX_TEXT = 64 * 1024
"""The most a template may render, in bytes, and the longest string any one step of it may make, in
characters. A container's tags all go into the one registration body registrar PUTs to its Consul agent
(and Consul keeps them in its catalog and sends them in every health and catalog answer), so a tag list
larger than this is a mistake or an attack, never a real service's tags; without a cap, one label
(a ``printf`` width of a million, a string doubled in each turn of a ``range``) takes the daemon's memory."""

_GO_MAX_WIDTH = 1_000_000
"""Go's fmt refuses a width or precision larger than this (print.go's ``tooLarge``)."""


class TooLarge(ValueError):
    """A value a template makes, or its output, is over MAX_TEXT."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} is over registrar's limit of {MAX_TEXT} bytes")


class Missing:
    """Go's invalid ``reflect.Value``: what a missing map key yields (printed ``<no value>``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<no value>"


NO_VALUE = Missing()


class Struct:
    """A Go struct (or a non-nil pointer to one): its type's name and its fields, in declaration order."""

    __slots__ = ("fields", "type_name")

    def __init__(self, type_name: str, fields: dict[str, Any]) -> None:
        self.type_name = type_name
        self.fields = fields


class NilPointer:
    """A typed nil pointer (``*docker.SwarmNode`` of a container not in a swarm)."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name


class GoMap(dict[Any, Any]):
    """A Go map: a dict that knows its type and its element's zero value (``index`` of a missing key)."""

    __slots__ = ("type_name", "zero")

    def __init__(self, type_name: str, items: dict[Any, Any], zero: Any) -> None:
        super().__init__(items)
        self.type_name = type_name
        self.zero = zero


class GoTime:
    """A ``time.Time``, held as Go's ``Time.String()`` prints it."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def type_name(value: Any) -> str:
    """The Go type of a value, as ``%T`` and fmt's error forms name it."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes):
        return "[]uint8"
    if isinstance(value, list):
        return "[]string" if all(isinstance(v, str) for v in value) else "[]interface {}"
    if isinstance(value, GoMap | Struct | NilPointer):
        return value.type_name
    if isinstance(value, GoTime):
        return "time.Time"
    return type(value).__name__


def format_float(value: float, verb: str = "g", precision: int = -1) -> str:
    """strconv.FormatFloat: ``g`` with precision -1 is the shortest form that reads back (``1e+06``)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if verb in "fF":
        return f"{value:.{6 if precision < 0 else precision}f}"
    if verb in "eE":
        text = f"{value:.{6 if precision < 0 else precision}e}"
        return text.upper() if verb == "E" else text
    if precision >= 0:  # %g with a precision: Python's rule is Go's, save Go's two-digit exponent
        return re.sub(r"e([+-])(\d)$", r"e\g<1>0\2", f"{value:.{max(precision, 1)}g}")
    sign, digits, exponent = decimal.Decimal(repr(value)).as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits)).rstrip("0") or "0"
    point = len(digits) + exponent  # the decimal point's place after the first digit (digits[0] first)
    exp = point - 1 if text != "0" else 0
    minus = "-" if sign else ""
    if exp < -4 or exp >= 6:  # the shortest form decides with precision 6, as strconv does
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{minus}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return f"{minus}0.{'0' * -point}{text}"
    if point >= len(text):
        return minus + text + "0" * (point - len(text))
    return f"{minus}{text[:point]}.{text[point:]}"


def quote(text: str) -> str:
    """strconv.Quote: a double-quoted Go string literal (printable runes kept, the rest escaped)."""
    out = ['"']
    escapes = {"\a": r"\a", "\b": r"\b", "\f": r"\f", "\n": r"\n", "\r": r"\r", "\t": r"\t", "\v": r"\v"}
    for char in text:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif char in escapes:
            out.append(escapes[char])
        elif 0xDC80 <= ord(char) <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{ord(char) - 0xDC00:02x}")
        elif char.isprintable() or char == " ":
            out.append(char)
        elif ord(char) < 0x80:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return "".join(out) + '"'


def sprint_value(value: Any) -> str:
    """``%v`` of one value."""
    if value is None or isinstance(value, NilPointer):
        return "<nil>"
    if value is NO_VALUE:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | str):
        return str(value)
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, bytes):
        return "[" + " ".join(str(b) for b in value) + "]"
    if isinstance(value, list):
        return "[" + " ".join(sprint_value(v) for v in value) + "]"
    if isinstance(value, GoMap):
        return "map[" + " ".join(f"{sprint_value(k)}:{sprint_value(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, Struct):
        return "{" + " ".join(sprint_value(v) for v in value.fields.values()) + "}"
    if isinstance(value, GoTime):
        return value.text
    return str(value)


def sprint(args: Iterable[Any]) -> str:
    """fmt.Sprint: a space between two operands when neither is a string."""
    out: list[str] = []
    size = 0
    previous_string = True
    for i, arg in enumerate(args):
        is_string = isinstance(arg, str)
        if i > 0 and not is_string and not previous_string:
            out.append(" ")
        out.append(sprint_value(arg))
        size += len(out[-1]) + 1
        if size > MAX_TEXT:  # many large operands: stop before they are joined
            raise TooLarge("print's result")
        previous_string = is_string
    return "".join(out)


def sprintln(args: Iterable[Any]) -> str:
    """fmt.Sprintln: operands always separated by a space, and a newline."""
    out: list[str] = []
    size = 0
    for arg in args:
        out.append(sprint_value(arg))
        size += len(out[-1]) + 1
        if size > MAX_TEXT:
            raise TooLarge("println's result")
    return " ".join(out) + "\n"


_DIRECTIVE = re.compile(r"%([-+# 0]*)(\*|\d+)?(?:\.(?=.)(\*|\d*))?(.)?", re.DOTALL)


def _parse_number(digits: str) -> int | None:
    """Go's ``parsenum``: the number, or None where it overflows (a digit added to more than 1e6)."""
    number = 0
    for digit in digits:
        if number > _GO_MAX_WIDTH:
            return None
        number = number * 10 + int(digit)
    return number


def _int_from_arg(args: list[Any], used: int) -> tuple[int | None, int]:
    """Go's ``intFromArg``: a ``*`` width or precision's operand (None: missing, not an int, or too large)
    and the operands used after it."""
    if used >= len(args):
        return None, used
    value = args[used]
    if not isinstance(value, int) or isinstance(value, bool) or abs(value) > _GO_MAX_WIDTH:
        return None, used + 1
    return value, used + 1


def _bad(verb: str, value: Any, shown: str) -> str:
    """Go's ``badVerb``: ``%!d(string=x)``, the operand as ``%v`` prints it with the directive's width."""
    return f"%!{verb}(<nil>)" if value is None else f"%!{verb}({type_name(value)}={shown})"


def _pad(text: str, width: int | None, flags: str, value: Any) -> str:
    """The text padded to the width: on the right with the - flag, with zeros after the sign for a number
    with the 0 flag, else with spaces on the left."""
    if not width or len(text) >= width:
        return text
    pad = width - len(text)
    if "-" in flags:
        return text + " " * pad
    if "0" in flags and isinstance(value, int | float) and not isinstance(value, bool):
        sign = text[0] if text[:1] in "+-" else ""
        return sign + "0" * pad + text[len(sign) :]
    return " " * pad + text


def _format_one(verb: str, flags: str, precision: int, value: Any) -> str | None:
    """One operand under one verb; None when the verb does not apply to its type (``%!d(string=x)``)."""
    if isinstance(value, list) and verb not in "vT" and not (verb in "xX" and isinstance(value, bytes)):
        parts = [_format_one(verb, flags, precision, v) for v in value]
        return None if None in parts else "[" + " ".join(p or "" for p in parts) + "]"
    if verb == "v":
        return quote(value) if "#" in flags and isinstance(value, str) else sprint_value(value)
    if verb == "T":
        return type_name(value)
    if isinstance(value, bool):
        return ("true" if value else "false") if verb == "t" else None
    if isinstance(value, int):
        sign = "+" if "+" in flags and value >= 0 else (" " if " " in flags and value >= 0 else "")
        if verb == "d":
            return sign + str(value)
        if verb in "xX":
            text = format(abs(value), "x" if verb == "x" else "X")
            return ("-" if value < 0 else sign) + ("0x" if "#" in flags else "") + text
        if verb == "c":
            return chr(value)
        if verb == "q":
            return "'" + quote(chr(value))[1:-1].replace("'", "\\'").replace('\\"', '"') + "'"
        if verb in "o":
            return sign + format(value, "o")
        if verb in "eEfFgG":
            return None
        return None
    if isinstance(value, float):
        if verb in "eEfFgG":
            text = format_float(value, verb.lower() if verb in "gG" else verb, precision)
            return ("+" if "+" in flags and value >= 0 else "") + (text.upper() if verb == "G" else text)
        return None
    if isinstance(value, str | bytes):
        raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
        if verb == "s":
            text = raw.decode("utf-8", "replace")
            return text[:precision] if precision >= 0 else text
        if verb == "q":
            return quote(raw.decode("utf-8", "surrogateescape"))
        if verb in "xX":
            data = raw[:precision] if precision >= 0 else raw
            text = data.hex(" ") if " " in flags else data.hex()
            return text.upper() if verb == "X" else text
        return None
    if isinstance(value, GoTime | Struct | GoMap) and verb == "s":
        return sprint_value(value)
    return None


def sprintf(fmt: str, args: list[Any]) -> str:
    """fmt.Sprintf, with Go's error forms: ``%!d(string=x)``, ``%!s(MISSING)``, ``%!(EXTRA int=1)``."""
    out: list[str] = []
    used = 0
    at = 0
    size = 0
    while True:
        found = fmt.find("%", at)
        if found < 0:
            out.append(fmt[at:])
            break
        out.append(fmt[at:found])
        match = _DIRECTIVE.match(fmt, found)
        assert match is not None
        flags, width_text, prec_text, verb = match.groups()
        at = match.end()
        width: int | None = None
        if width_text == "*":
            width, used = _int_from_arg(args, used)
            if width is None:
                out.append("%!(BADWIDTH)")
            elif width < 0:  # a negative width pads on the right, as the - flag does
                width, flags = -width, flags.replace("0", "") + "-"
        elif width_text:
            width = _parse_number(width_text)
            if width is None:  # Go gives up on the rest of the format
                out.append("%!(NOVERB)")
                break
        precision = -1
        if prec_text == "*":
            star, used = _int_from_arg(args, used)
            if star is None or star < 0:
                out.append("%!(BADPREC)")
            else:
                precision = star
        elif prec_text is not None:
            parsed = _parse_number(prec_text)
            if parsed is None:
                out.append("%!(NOVERB)")
                break
            precision = parsed
        if verb is None:
            out.append("%!(NOVERB)")
            break
        if verb == "%":
            out.append("%")
            continue
        if used >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        value = args[used]
        used += 1
        if (width or 0) > MAX_TEXT or (precision > MAX_TEXT and verb in "eEfFgG"):  # before making it
            raise TooLarge("printf's result")
        text = _format_one(verb, flags, precision, value)
        if text is None:  # Go pads the operand inside the error form: %!.(int=    1)
            text = _bad(verb, value, _pad(sprint_value(value), width, flags, value))
        else:
            text = _pad(text, width, flags, value)
        out.append(text)
        size += len(text)
        if size > MAX_TEXT:
            raise TooLarge("printf's result")
    if used < len(args):
        extra = ", ".join(f"{type_name(a)}={sprint_value(a)}" for a in args[used:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)
