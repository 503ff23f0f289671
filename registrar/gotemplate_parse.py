"""Go's text/template syntax: template source -> nodes (a lexer and a recursive-descent parser). Pure, no I/O.

Errors are Go's parse errors, as TemplateError: an unclosed action, an unexpected ``{{end}}``, an
undefined function or variable, a constant as a later pipeline stage. The nodes are plain frozen
values; gotemplate.py evaluates them.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from registrar.gotemplate_builtins import BUILTINS, TemplateError

# --- lexer ------------------------------------------------------------------------------------

_SPACE = " \t\r\n"
_TOKEN = re.compile(
    r"""(?P<space>[ \t\r\n]+)|(?P<declare>:=)|(?P<char>[=|(),])
    |(?P<string>"(?:[^"\\\n]|\\.)*")|(?P<raw>`[^`]*`)|(?P<rune>'(?:[^'\\\n]|\\[^\n]+?)')
    |(?P<number>[+-]?(?:0[xX][0-9a-fA-F_]*(?:\.[0-9a-fA-F_]*)?(?:[pP][+-]?[0-9_]+)?|0[oObB][0-7_]+
        |(?:[0-9_]+(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][+-]?[0-9_]+)?)i?)
    |(?P<variable>\$\w*)|(?P<field>\.\w+)|(?P<dot>\.)|(?P<word>[^\W\d]\w*)""",
    re.VERBOSE,
)
_KEYWORDS = {"if", "else", "end", "range", "with", "break", "continue", "define", "template", "block"}


@dataclass(frozen=True)
class _Tok:
    kind: str  # text, open, close, or a _TOKEN group name (keywords: their word)
    text: str
    adjacent: bool = False  # no space before it (a field that follows an operand chains onto it)


def _lex(source: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    at = 0
    trim_next = False
    while at <= len(source):
        start = source.find("{{", at)
        text = source[at:] if start < 0 else source[at:start]
        left_trim = start >= 0 and source[start + 2 : start + 3] == "-" and source[start + 3 : start + 4] in _SPACE
        left_trim = left_trim and source[start + 3 : start + 4] != ""
        if trim_next:
            text = text.lstrip(_SPACE)
        if left_trim:
            text = text.rstrip(_SPACE)
        if text:
            tokens.append(_Tok("text", text))
        if start < 0:
            break
        at = start + (4 if left_trim else 2)
        rest = source[at:].lstrip(_SPACE) if left_trim else source[at:]
        if rest.startswith("/*"):  # a comment: all of the action
            at = len(source) - len(rest)
            end = source.find("*/", at + 2)
            if end < 0:
                raise TemplateError("unclosed comment")
            at = end + 2
            trim_next = source[at : at + 1] in _SPACE and source[at + 1 : at + 4] == "-}}" and at < len(source)
            if trim_next:
                at += 4
            elif source.startswith("}}", at):
                at += 2
            else:
                raise TemplateError("comment ends before closing delimiter")
            continue
        tokens.append(_Tok("open", "{{"))
        at, trim_next = _lex_action(source, at, tokens)
    return tokens


def _lex_action(source: str, at: int, tokens: list[_Tok]) -> tuple[int, bool]:
    adjacent = True
    while True:
        if source.startswith("}}", at):
            tokens.append(_Tok("close", "}}"))
            return at + 2, False
        if source[at : at + 1] in _SPACE and source.startswith("-}}", at + 1) and at < len(source):
            tokens.append(_Tok("close", "}}"))
            return at + 4, True
        if at >= len(source):
            raise TemplateError("unclosed action")
        match = _TOKEN.match(source, at)
        if match is None or not match.lastgroup:
            raise TemplateError(f"unrecognized character in action: {source[at]!r}")
        kind, text = match.lastgroup, match.group()
        at = match.end()
        if kind == "space":
            adjacent = False
            continue
        if kind == "number" and re.match(r"\w", source[at : at + 1]):
            raise TemplateError(f"bad number syntax: {text + source[at]!r}")
        if kind == "word" and text in _KEYWORDS:
            kind = text
        tokens.append(_Tok(kind, text, adjacent))
        adjacent = True


# --- parser: nodes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Const:
    """A literal: string, number, bool; ``value`` as Go would use it where any type is taken."""

    value: Any
    text: str
    as_int: int | None = None  # a number usable where an int is wanted


@dataclass(frozen=True)
class Nil:
    pass


@dataclass(frozen=True)
class Dot:
    pass


@dataclass(frozen=True)
class Fields:
    """``.A.B`` on dot, ``$x.A.B`` on a variable (``var``), or ``(pipe).A`` on an operand (``base``)."""

    names: tuple[str, ...]
    var: str = ""
    base: Any = None


@dataclass(frozen=True)
class Ident:
    name: str


@dataclass(frozen=True)
class Pipe:
    commands: tuple[tuple[Any, ...], ...]
    decl: tuple[str, ...] = ()
    assign: bool = False


@dataclass(frozen=True)
class Action:
    pipe: Pipe


@dataclass(frozen=True)
class Control:
    """``if``, ``with`` or ``range``: its pipeline, its list and its ``else`` list."""

    kind: str
    pipe: Pipe
    body: tuple[Any, ...]
    orelse: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Jump:
    kind: str  # break, continue


@dataclass
class _Parser:
    tokens: list[_Tok]
    functions: Mapping[str, Any]
    at: int = 0
    variables: list[str] = field(default_factory=lambda: ["$"])
    in_range: int = 0

    def peek(self, offset: int = 0) -> _Tok:
        i = self.at + offset
        return self.tokens[i] if i < len(self.tokens) else _Tok("eof", "")

    def next(self) -> _Tok:
        token = self.peek()
        self.at += 1
        return token

    def expect(self, kind: str, context: str) -> _Tok:
        token = self.next()
        if token.kind != kind:
            raise TemplateError(f"unexpected {token.text or 'EOF'!r} in {context}")
        return token

    def items(self, closers: tuple[str, ...]) -> tuple[list[Any], str]:
        """Nodes up to one of ``closers`` (``end``, ``else``; "" for EOF), and which one ended them."""
        nodes: list[Any] = []
        while True:
            token = self.next()
            if token.kind == "eof":
                if "" in closers:
                    return nodes, ""
                raise TemplateError("unexpected EOF")
            if token.kind == "text":
                nodes.append(token.text)
                continue
            word = self.peek().kind
            if word in ("end", "else"):
                if word not in closers:
                    raise TemplateError(f"unexpected {{{{{word}}}}}")
                self.next()
                if word == "end":
                    self.expect("close", "end")
                return nodes, word
            if word in ("if", "with", "range"):
                self.next()
                nodes.append(self.control(word))
            elif word in ("break", "continue"):
                self.next()
                if not self.in_range:
                    raise TemplateError(f"{{{{{word}}}}} outside {{{{range}}}}")
                self.expect("close", word)
                nodes.append(Jump(word))
            elif word in ("define", "template", "block"):
                raise TemplateError(f"{{{{{word}}}}} is not supported in tag templates")
            else:
                nodes.append(Action(self.pipeline("command", allow_decl=True)))

    def control(self, kind: str) -> Control:
        mark = len(self.variables)
        pipe = self.pipeline(kind, allow_decl=True, range_decl=kind == "range")
        self.in_range += kind == "range"
        body, closer = self.items(("end", "else"))
        self.in_range -= kind == "range"
        orelse: list[Any] = []
        if closer == "else":
            if self.peek().kind == "if":  # {{else if}}: an if inside the else, ended by the same {{end}}
                self.next()
                orelse = [self.control("if")]
            else:
                self.expect("close", "else")
                orelse, _ = self.items(("end",))
        del self.variables[mark:]
        return Control(kind, pipe, tuple(body), tuple(orelse))

    def pipeline(self, context: str, allow_decl: bool = False, range_decl: bool = False) -> Pipe:
        decl: list[str] = []
        assign = False
        declares = self.peek(1).text in (":=", "=") or (range_decl and self.peek(1).text == ",")
        if allow_decl and self.peek().kind == "variable" and declares:
            decl.append(self.next().text)
            if self.peek().text == ",":
                self.next()
                decl.append(self.expect("variable", "range declaration").text)
            op = self.next()
            if op.text not in (":=", "="):
                raise TemplateError(f"expected := or = in {context} declaration")
            assign = op.text == "="
            for name in decl:
                if assign and name not in self.variables:
                    raise TemplateError(f"undefined variable {name!r}")
        commands: list[tuple[Any, ...]] = []
        while True:
            operands: list[Any] = []
            while self.peek().kind not in ("close", "eof") and self.peek().text not in ("|", ")"):
                if operands and self.peek().adjacent:
                    raise TemplateError(f"missing space? {self.peek().text!r} in {context}")
                operands.append(self.operand(context))
            if not operands:
                raise TemplateError(f"missing value for {context}")
            if commands and isinstance(operands[0], Const | Nil | Dot):
                raise TemplateError(f"non executable command in pipeline stage {len(commands) + 1}")
            commands.append(tuple(operands))
            if self.peek().text != "|":
                break
            self.next()
        closer = self.next()
        if closer.kind != ("close" if context != "parenthesized pipeline" else "char") or (
            context == "parenthesized pipeline" and closer.text != ")"
        ):
            raise TemplateError(f"unexpected {closer.text or 'EOF'!r} in {context}")
        if not assign:
            self.variables.extend(decl)
        return Pipe(tuple(commands), tuple(decl), assign)

    def operand(self, context: str) -> Any:
        node = self.term(context)
        names: list[str] = []
        while self.peek().kind == "field" and self.peek().adjacent:
            names.append(self.next().text[1:])
        if not names:
            return node
        if isinstance(node, Fields):
            return Fields(node.names + tuple(names), node.var, node.base)
        if isinstance(node, Nil | Const | Ident):
            raise TemplateError(f"unexpected . after term {getattr(node, 'text', 'nil')!r}")
        return Fields(tuple(names), base=node)

    def term(self, context: str) -> Any:
        token = self.next()
        kind, text = token.kind, token.text
        if kind == "dot":
            return Dot()
        if kind == "field":
            return Fields((text[1:],))
        if kind == "variable":
            if text not in self.variables:
                raise TemplateError(f"undefined variable {text!r}")
            return Fields((), var=text)
        if kind == "word":
            if text in ("true", "false"):
                return Const(text == "true", text)
            if text == "nil":
                return Nil()
            if text not in self.functions and text not in BUILTINS:
                raise TemplateError(f"function {text!r} not defined")
            return Ident(text)
        if kind == "string":
            try:
                return Const(ast.literal_eval(text), text)
            except (ValueError, SyntaxError):
                raise TemplateError(f"bad string literal {text}") from None
        if kind == "raw":
            return Const(text[1:-1].replace("\r", ""), text)
        if kind == "rune":
            value = ast.literal_eval(text) if len(text) > 3 else text[1]
            if len(value) != 1:
                raise TemplateError(f"malformed character constant: {text}")
            return Const(ord(value), text, ord(value))
        if kind == "number":
            return _number(text)
        if text == "(":
            return self.pipeline("parenthesized pipeline")
        raise TemplateError(f"unexpected {text or 'EOF'!r} in {context}")


def _number(text: str) -> Const:
    """A number constant as Go's parser reads it: an int where it is one, else a float."""
    plain = text.replace("_", "")
    if plain.endswith("i"):
        raise TemplateError(f"complex numbers are not supported: {text}")
    try:
        if re.fullmatch(r"[+-]?0[0-7]+", plain):
            value: int | float = int(plain, 8)
        elif re.fullmatch(r"[+-]?(0[xXoObB][0-9a-fA-F]+|\d+)", plain):
            value = int(plain, 0)
        elif plain.lstrip("+-")[:2] in ("0x", "0X"):
            value = float.fromhex(plain)
        else:
            value = float(plain)
    except ValueError:
        raise TemplateError(f"bad number syntax: {text!r}") from None
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise TemplateError(f"{text} overflows int")
        return Const(value, text, value)
    as_int = int(value) if value.is_integer() and abs(value) < 2**63 else None
    return Const(value, text, as_int)


def parse_nodes(source: str, functions: Mapping[str, Any]) -> tuple[Any, ...]:
    """The template's nodes (text as str, Action, Control, Jump), or TemplateError where Go's parser fails;
    ``functions``: the names a template may call besides the builtins."""
    nodes, _ = _Parser(_lex(source), functions).items(("",))
    return tuple(nodes)
