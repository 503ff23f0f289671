"""Go's text/template language, with Go's semantics: the evaluator, over gotemplate_parse.py's nodes. Pure, no I/O.

``parse(source, functions)`` returns a Template or raises TemplateError where Go's ``Parse`` fails
(an undefined function or variable included); ``Template.execute(data)`` returns the text or raises
TemplateError where Go's ``Execute`` fails (a missing field, a function's error). The language as
registrator's users write it: text and actions, ``{{-``/``-}}`` trimming, comments, pipelines (the piped
value is the last argument), parentheses, variables (``$x :=``, ``$x =``), ``if``/``else if``/``else``,
``with``, ``range`` (``$i, $v :=``, ``break``, ``continue``), string, raw-string, char, number, bool and
nil literals, and the builtins and/or/not/len/index/slice/print/printf/println/eq/ne/lt/le/gt/ge. Not:
``define``/``template``/``block``, methods (fields only), html/js/urlquery/call. Values: govalues.py;
builtins and argument types: gotemplate_builtins.py. Limits Go does not have, so that a label cannot take
the daemon's memory or time: the output, and each string a call returns, at most MAX_TEXT (govalues.py);
at most MAX_STEPS range iterations and calls.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from registrar import gotemplate_builtins as builtins_go
from registrar.gotemplate_builtins import Function, TemplateError
from registrar.gotemplate_parse import Action, Const, Control, Dot, Fields, Ident, Jump, Nil, Pipe, parse_nodes
from registrar.govalues import MAX_TEXT, NO_VALUE, GoMap, NilPointer, Struct, sprint_value, type_name

MAX_STEPS = 1_000_000
"""The most range iterations and function calls one rendering may take (about half a second's work). A
template is rendered in the daemon's own inspect path, and ranges nest: two over a 64 KiB string split
into characters would run for half an hour without printing a byte (so the output cap never trips)."""

_NO_FINAL = object()
"""No value piped into a command (Go's ``missingVal``)."""


class _Jump(Exception):
    def __init__(self, kind: str) -> None:
        self.kind = kind


class Template:
    """A parsed template: ``execute(data)`` renders it (``functions`` as given to ``parse``)."""

    def __init__(self, source: str, nodes: tuple[Any, ...], functions: Mapping[str, Function]) -> None:
        self.source = source
        self.nodes = nodes
        self.functions = functions

    def execute(self, data: Any) -> str:
        """The rendered text; TemplateError where Go's fails, or where it (or a string it makes) is over
        MAX_TEXT (checked as it grows: a template never holds much more than that)."""
        out: list[str] = []
        _State(self.functions, out, [("$", data)]).walk_list(data, self.nodes)
        return "".join(out)


def parse(source: str, functions: Mapping[str, Function]) -> Template:
    """Parse a template, or raise TemplateError as Go's ``template.Parse`` would."""
    return Template(source, parse_nodes(source, functions), functions)


@dataclass
class _State:
    functions: Mapping[str, Function]
    out: list[str]
    variables: list[tuple[str, Any]]
    size: int = 0  # the characters in out so far
    steps: int = 0  # the range iterations and calls so far

    def step(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise TemplateError(f"over registrar's limit of {MAX_STEPS} range iterations and calls")

    def emit(self, text: str) -> None:
        self.size += len(text)
        if self.size > MAX_TEXT:
            raise TemplateError(f"the output is over registrar's limit of {MAX_TEXT} bytes")
        self.out.append(text)

    def walk_list(self, dot: Any, nodes: tuple[Any, ...]) -> None:
        for node in nodes:
            self.walk(dot, node)

    def walk(self, dot: Any, node: Any) -> None:
        if isinstance(node, str):
            self.emit(node)
        elif isinstance(node, Action):
            value = self.pipeline(dot, node.pipe)
            if not node.pipe.decl:
                self.emit(sprint_value(value))
        elif isinstance(node, Jump):
            raise _Jump(node.kind)
        else:
            mark = len(self.variables)
            try:
                self.control(dot, node)
            finally:
                del self.variables[mark:]

    def control(self, dot: Any, node: Control) -> None:
        value = self.pipeline(dot, node.pipe)
        if node.kind != "range":
            if builtins_go.truth(value):
                self.walk_list(value if node.kind == "with" else dot, node.body)
            else:
                self.walk_list(dot, node.orelse)
            return
        if isinstance(value, Struct | bool | int | float | str | NilPointer):
            raise TemplateError(f"range can't iterate over {sprint_value(value)}")
        pairs: list[tuple[Any, Any]] = []
        if isinstance(value, GoMap):
            pairs = [(k, value[k]) for k in sorted(value)]
        elif isinstance(value, list | bytes):
            pairs = list(enumerate(value))
        if not pairs:
            self.walk_list(dot, node.orelse)
            return
        mark = len(self.variables)
        for key, elem in pairs:
            self.step()
            decl = node.pipe.decl
            if decl:
                names = dict(zip(decl, (key, elem) if len(decl) == 2 else (elem,), strict=True))
                for name, v in names.items():
                    self.set_var(name, v)
            try:
                self.walk_list(elem, node.body)
            except _Jump as jump:
                if jump.kind == "break":
                    break
            finally:
                del self.variables[mark:]

    def set_var(self, name: str, value: Any) -> None:
        for i in range(len(self.variables) - 1, -1, -1):
            if self.variables[i][0] == name:
                self.variables[i] = (name, value)
                return
        raise TemplateError(f"undefined variable: {name}")  # the parser makes this unreachable

    def var(self, name: str) -> Any:
        for known, value in reversed(self.variables):
            if known == name:
                return value
        raise TemplateError(f"undefined variable: {name}")

    def pipeline(self, dot: Any, pipe: Pipe) -> Any:
        value: Any = _NO_FINAL
        for command in pipe.commands:
            value = self.command(dot, command, value)
        for name in pipe.decl:
            if pipe.assign:
                self.set_var(name, value)
            else:
                self.variables.append((name, value))
        return value

    def command(self, dot: Any, command: tuple[Any, ...], final: Any) -> Any:
        first = command[0]
        if isinstance(first, Fields):
            return self.fields(dot, first, command, final)
        if isinstance(first, Ident):
            return self.call(dot, first.name, command[1:], final)
        if len(command) > 1 or final is not _NO_FINAL:
            raise TemplateError(f"can't give argument to non-function {command[0]}")
        if isinstance(first, Pipe):
            return self.pipeline(dot, first)
        if isinstance(first, Nil):
            raise TemplateError("nil is not a command")
        return dot if isinstance(first, Dot) else first.value

    def fields(self, dot: Any, node: Fields, command: tuple[Any, ...], final: Any) -> Any:
        if node.var:
            receiver = self.var(node.var)
        elif node.base is not None:
            if isinstance(node.base, Nil):
                raise TemplateError("indirection through explicit nil")
            receiver = self.arg(dot, node.base, "value")
        else:
            receiver = dot
        if not node.names:
            if len(command) > 1 or final is not _NO_FINAL:
                raise TemplateError(f"can't give argument to non-function {node.var}")
            return receiver
        has_args = len(command) > 1 or final is not _NO_FINAL
        for i, name in enumerate(node.names):
            receiver = _field(receiver, name, has_args and i == len(node.names) - 1)
        return receiver

    def arg(self, dot: Any, node: Any, kind: str) -> Any:
        """An argument's value, as Go's ``evalArg`` takes it for a parameter of this kind."""
        if isinstance(node, Nil):
            if kind in ("any", "[]string", "map[string]string", "[]byte"):
                return builtins_go.zero(kind)
            raise TemplateError(f"cannot assign nil to {kind}")
        if isinstance(node, Const):
            if kind == "int":
                if node.as_int is None:
                    raise TemplateError(f"expected integer; found {node.text}")
                return node.as_int
            if kind == "string" and not isinstance(node.value, str):
                raise TemplateError(f"expected string; found {node.text}")
            if kind in ("[]string", "map[string]string", "[]byte"):
                raise TemplateError(f"can't handle {node.text} for arg of type {kind}")
            return node.value
        value = self.command(dot, (node,), _NO_FINAL) if not isinstance(node, Pipe) else self.pipeline(dot, node)
        return builtins_go.convert(value, kind)

    def call(self, dot: Any, name: str, args: tuple[Any, ...], final: Any) -> Any:
        self.step()
        nodes: list[Any] = list(args)
        if name in ("and", "or"):  # Go evaluates their arguments only as far as needed
            count = len(nodes) + (final is not _NO_FINAL)
            if count < 1:
                raise TemplateError(f"wrong number of args for {name}: want at least 1 got 0")
            value: Any = NO_VALUE
            for i in range(count):
                value = self.arg(dot, nodes[i], "value") if i < len(nodes) else final
                if builtins_go.truth(value) == (name == "or"):
                    break
            return value
        function = self.functions.get(name) or builtins_go.BUILTINS[name]
        params, variadic = function.params, function.variadic
        count = len(nodes) + (final is not _NO_FINAL)
        if count < len(params) or (not variadic and count != len(params)):
            want = f"at least {len(params)}" if variadic else str(len(params))
            raise TemplateError(f"wrong number of args for {name}: want {want} got {count}")
        kinds = [*params, *[variadic] * (count - len(params))]
        values = [self.arg(dot, node, kinds[i]) for i, node in enumerate(nodes)]
        if final is not _NO_FINAL:
            values.append(builtins_go.convert(final, kinds[-1]))
        try:
            result = function.call(*values)
            if isinstance(result, str) and len(result) > MAX_TEXT:  # a string doubled in a range, say
                raise TemplateError(f"its result is over registrar's limit of {MAX_TEXT} bytes")
            return result
        except TemplateError as e:
            raise TemplateError(f"error calling {name}: {e}") from None
        except (IndexError, ValueError, TypeError, KeyError, re.error) as e:
            raise TemplateError(f"error calling {name}: {e}") from None


def _field(receiver: Any, name: str, has_args: bool) -> Any:
    """``receiver.name`` as Go's ``evalField``: a missing map key is NO_VALUE, a missing field an error."""
    if receiver is NO_VALUE:
        return NO_VALUE
    if isinstance(receiver, Struct):
        if name not in receiver.fields:
            raise TemplateError(f"can't evaluate field {name} in type {receiver.type_name}")
        if has_args:
            raise TemplateError(f"{name} has arguments but cannot be invoked as function")
        return receiver.fields[name]
    if isinstance(receiver, NilPointer):
        raise TemplateError(f"nil pointer evaluating {receiver.type_name}.{name}")
    if isinstance(receiver, GoMap) and receiver.type_name.startswith("map[string]"):
        if has_args:
            raise TemplateError(f"{name} is not a method but has arguments")
        return receiver.get(name, NO_VALUE)
    if receiver is None:
        raise TemplateError(f"nil pointer evaluating interface {{}}.{name}")
    raise TemplateError(f"can't evaluate field {name} in type {type_name(receiver)}")
