"""Turns config text into the JSON template tree (``syntax.JsonNode``), or positioned syntax errors.

Lark does the lexing and LALR parsing (grammar in ``webhook.lark`` beside this module); this
module converts Lark's tree into our frozen AST so Lark types stop here. String
escapes are decoded token by token, so an escaped ``\\u0024`` is text, never a
``$``, and every variable keeps its own line and column in the file.

Well-formed text is read first by ``fastparse``, a second reader kept because it makes
compiling a deploy's configs faster (figures in benchmarks/README.md, "Second
mechanisms") and held equal to Lark, spans included, by ``tests/test_fastparse.py``.
Whatever it does not take, Lark reads, and Lark words every error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from lark import Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from ..errors import ConfigSyntaxError, Diagnostic
from . import syntax
from .fastparse import parse_fast
from .grammar import parser

__all__ = ["MAX_CONFIG_BYTES", "MAX_NESTING", "SourceText", "parse_config", "parse_mapping"]

#: Largest config text accepted; a webhook config is a few kilobytes.
MAX_CONFIG_BYTES = 1024 * 1024
#: Deepest nesting of objects and arrays accepted in a config.
MAX_NESTING = 64
#: Syntax errors collected before giving up on a file.
MAX_SYNTAX_ERRORS = 50

_HUMAN_TERMINALS = {
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "LSQB": "'['",
    "RSQB": "']'",
    "COMMA": "','",
    "COLON": "':'",
    "DQUOTE": "'\"'",
    "SIMPLE_STRING": "a string",
    "NUMBER": "a number",
    "TRUE": "true",
    "FALSE": "false",
    "NULL": "null",
    "VAR": "a $variable",
    "BRACED_VAR": "a ${variable}",
    "CHARS": "text",
    "PUNCT_CHARS": "text",
    "ESCAPE": "an escape",
    "BAD_ESCAPE": "an escape",
    "DOLLAR_DOLLAR": "'$$'",
    "BAD_BRACE": "'${'",
    "LONE_DOLLAR": "'$'",
    "$END": "end of input",
}
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
# Inside `${...}`: a raw control character or lone surrogate, or an escape (\\u ones are checked for pairs).
_NAME_TROUBLE = re.compile(r"[\x00-\x1f\ud800-\udfff]|\\(?:u[0-9a-fA-F]{4}|.)")


class SourceText:
    """Config text plus its name, able to say which line a position is on."""

    __slots__ = ("lines", "name", "text")

    def __init__(self, text: str, name: str) -> None:
        self.text = text
        self.name = name
        self.lines = text.split("\n")

    def line(self, number: int) -> str | None:
        if 1 <= number <= len(self.lines):
            return self.lines[number - 1].rstrip("\r")
        return None

    def diagnostic(
        self,
        message: str,
        line: int,
        column: int,
        width: int = 1,
        field: str | None = None,
        variable: str | None = None,
    ) -> Diagnostic:
        return Diagnostic(
            message=message,
            source=self.name,
            line=line,
            column=column,
            width=width,
            source_line=self.line(line),
            field=field,
            variable=variable,
        )

    def at(self, span: syntax.Span, message: str, **extra: Any) -> Diagnostic:
        return self.diagnostic(message, span.line, span.column, max(1, span.end - span.start), **extra)


def _span(token: Token) -> syntax.Span:
    return syntax.Span(token.line or 0, token.column or 0, token.start_pos or 0, token.end_pos or 0)


def _tree_span(tree: Tree[Token]) -> syntax.Span:
    meta = tree.meta
    return syntax.Span(meta.line, meta.column, meta.start_pos, meta.end_pos)


def _offset_span(token: Token, offset: int, width: int = 1) -> syntax.Span:
    """Position of character ``offset`` inside a token that may span lines."""
    before = token[:offset]
    newlines = before.count("\n")
    line = (token.line or 0) + newlines
    column = (offset - before.rfind("\n")) if newlines else (token.column or 0) + offset
    start = (token.start_pos or 0) + offset
    return syntax.Span(line, column, start, start + width)


def _describe(token_type: str) -> str:
    return _HUMAN_TERMINALS.get(token_type, token_type)


def _expected(names: set[str] | frozenset[str]) -> str:
    described = sorted({_describe(n) for n in names if not n.startswith("__")})
    if not described:
        return "nothing more"
    if len(described) == 1:
        return described[0]
    return ", ".join(described[:-1]) + " or " + described[-1]


class _Converter:
    """Walks Lark's tree into our AST, collecting token-level problems as it goes."""

    def __init__(self, source: SourceText) -> None:
        self.source = source
        self.problems: list[Diagnostic] = []

    def value(self, node: Tree[Token] | Token, depth: int) -> syntax.JsonNode:
        if isinstance(node, Token):  # a bare VAR / BRACED_VAR never arrives without a rule
            raise AssertionError(f"unexpected token {node.type}")
        kind = node.data
        if kind == "object":
            return self.object(node, depth)
        if kind == "array":
            return self.array(node, depth)
        if kind == "string":
            return self.string(node)
        token = node.children[0]
        assert isinstance(token, Token)
        span = _span(token)
        if kind == "number":
            return syntax.JsonNumber(str(token), span)
        if kind == "true":
            return syntax.JsonBool(True, span)
        if kind == "false":
            return syntax.JsonBool(False, span)
        if kind == "null":
            return syntax.JsonNull(span)
        if kind == "bare_var":
            ref = self.var_ref(token)
            if ref is None:
                return syntax.JsonNull(span)  # its problem is recorded; the parse fails
            return syntax.BareVar(ref, span)
        raise AssertionError(f"unknown rule {kind}")

    def _too_deep(self, node: Tree[Token], depth: int) -> bool:
        if depth > MAX_NESTING:
            self.problems.append(
                self.source.at(_tree_span(node), f"nesting deeper than {MAX_NESTING} levels of objects and arrays")
            )
            return True
        return False

    def object(self, node: Tree[Token], depth: int) -> syntax.JsonObject:
        span = _tree_span(node)
        if self._too_deep(node, depth):
            return syntax.JsonObject((), span)
        members = []
        for pair in node.children:
            if isinstance(pair, Tree) and pair.data == "pair":
                key_tree, _colon, value_tree = pair.children
                assert isinstance(key_tree, Tree)
                members.append(syntax.JsonMember(self.string(key_tree), self.value(value_tree, depth + 1)))
        return syntax.JsonObject(tuple(members), span)

    def array(self, node: Tree[Token], depth: int) -> syntax.JsonArray:
        span = _tree_span(node)
        if self._too_deep(node, depth):
            return syntax.JsonArray((), span)
        items = tuple(
            self.value(child, depth + 1)
            for child in node.children
            if not (isinstance(child, Token) and child.type in ("LSQB", "RSQB", "COMMA"))
        )
        return syntax.JsonArray(items, span)

    def var_ref(self, token: Token) -> syntax.VarRef | None:
        """The reference a VAR or BRACED_VAR token writes, or None (the problem reported here): braces
        holding what a JSON string may not, or a bare value where the name is followed by more text."""
        written = str(token)
        if token.type == "BRACED_VAR":
            return syntax.VarRef.from_written(written, _span(token)) if self.braced_name_ok(token) else None
        end = syntax.read_run(written)[0]
        if end == len(written):
            return syntax.VarRef.from_written(written, _span(token))
        rest = json.loads(f'"{written[end:]}"')
        message = f"{rest!r} cannot follow {written[:end]}: a bare value is one name; put the text in a string"
        if not end:
            message = f"{rest!r} starts no name: a bare value is one $name or ${{name}}"
        self.problems.append(self.source.at(_offset_span(token, end, len(written) - end), message))
        return None

    def braced_name_ok(self, token: Token) -> bool:
        """Check the text between ``${`` and ``}`` as JSON string content, reporting each problem."""
        before = len(self.problems)
        high: re.Match[str] | None = None  # a \\uD8xx escape waiting for its low half
        for match in _NAME_TROUBLE.finditer(token, 2, len(token) - 1):
            piece = match.group()
            if len(piece) == 1:  # a raw control character or a raw lone surrogate
                code = ord(piece)
                message = (
                    f"control character U+{code:04X} inside a string; write it as an escape such as \\u{code:04x}"
                    if code < 0x20
                    else f"lone surrogate U+{code:04X} inside a string; JSON text must be Unicode"
                )
                self.problems.append(self.source.at(_offset_span(token, match.start()), message))
                continue
            code = int(piece[2:], 16) if piece[1] == "u" else -1
            if high is not None and 0xDC00 <= code <= 0xDFFF and high.end() == match.start():
                high = None
                continue
            if high is not None:
                self.lone_surrogate_at(token, high)
                high = None
            if 0xD800 <= code <= 0xDBFF:
                high = match
            elif 0xDC00 <= code <= 0xDFFF:
                self.lone_surrogate_at(token, match)
        if high is not None:
            self.lone_surrogate_at(token, high)
        return len(self.problems) == before

    def lone_surrogate_at(self, token: Token, match: re.Match[str]) -> None:
        self.problems.append(
            self.source.at(
                _offset_span(token, match.start(), 6),
                f"escape {match.group()} is half of a surrogate pair; JSON text must be Unicode",
            )
        )

    def string(self, node: Tree[Token]) -> syntax.StringTemplate:
        parts: list[syntax.Text | syntax.VarRef | syntax.BadDollar] = []
        text: list[str] = []
        text_span: syntax.Span | None = None
        pending_high: str | None = None  # first half of a \uD8xx\uDCxx pair
        pending_token: Token | None = None

        def flush() -> None:
            nonlocal text_span
            if text and text_span is not None:
                parts.append(syntax.Text("".join(text), text_span))
            text.clear()
            text_span = None

        def add_text(value: str, token: Token, offset: int = 0) -> None:
            """Text from ``token[offset:]``, merged with the text before it."""
            nonlocal text_span
            if text_span is None:
                text_span = _offset_span(token, offset, len(token) - offset) if offset else _span(token)
            else:
                text_span = syntax.Span(text_span.line, text_span.column, text_span.start, token.end_pos or 0)
            text.append(value)

        def lone_surrogate(token: Token) -> None:
            self.problems.append(
                self.source.at(_span(token), f"escape {token} is half of a surrogate pair; JSON text must be Unicode")
            )

        first = node.children[0]
        if isinstance(first, Token) and first.type == "SIMPLE_STRING":
            span = _span(first)
            if len(first) == 2:
                return syntax.StringTemplate((), span)
            inner = syntax.Span(span.line, span.column + 1, span.start + 1, span.end - 1)
            return syntax.StringTemplate((syntax.Text(first[1:-1], inner),), span)
        for token in node.children[1:-1]:
            assert isinstance(token, Token)
            kind = token.type
            if pending_high is not None and not (kind == "ESCAPE" and 0xDC00 <= _code(token) <= 0xDFFF):
                assert pending_token is not None
                lone_surrogate(pending_token)
                pending_high = None
            if kind == "PUNCT_CHARS":
                add_text(str(token), token)
            elif kind == "CHARS":
                for offset, char in enumerate(token):
                    if char < " ":
                        self.problems.append(
                            self.source.at(
                                _offset_span(token, offset),
                                f"control character U+{ord(char):04X} inside a string; write it as an escape "
                                f"such as \\n or \\u{ord(char):04x}",
                            )
                        )
                add_text(str(token), token)
            elif kind == "ESCAPE":
                if token[1] == "u":
                    code = _code(token)
                    if 0xD800 <= code <= 0xDBFF:
                        pending_high, pending_token = chr(code), token
                        continue
                    if 0xDC00 <= code <= 0xDFFF:
                        if pending_high is None:
                            lone_surrogate(token)
                            continue
                        combined = 0x10000 + ((ord(pending_high) - 0xD800) << 10) + (code - 0xDC00)
                        pending_high = None
                        if text_span is None and pending_token is not None:  # the pair starts the run
                            text_span = _span(pending_token)
                        add_text(chr(combined), token)
                        continue
                    add_text(chr(code), token)
                else:
                    add_text(_ESCAPES[token[1]], token)
            elif kind == "BAD_ESCAPE":
                self.problems.append(
                    self.source.at(
                        _span(token),
                        f"invalid escape {json.dumps(str(token))[1:-1]}; JSON allows "
                        '\\" \\\\ \\/ \\b \\f \\n \\r \\t and \\uXXXX',
                    )
                )
            elif kind in ("DOLLAR_DOLLAR", "LONE_DOLLAR"):  # `$$`, or a `$` that starts no reference
                add_text("$", token)
            elif kind == "VAR":  # the name it spells is the reference; the rest of the token is text
                end, name, index = syntax.read_run(token)
                if end:
                    flush()
                    parts.append(syntax.VarRef(name, index, False, str(token[:end]), _offset_span(token, 0, end)))
                if end < len(token):
                    add_text(json.loads(f'"{token[end:]}"'), token, end)
            elif kind == "BRACED_VAR":
                flush()
                ref = self.var_ref(token)
                if ref is not None:
                    parts.append(ref)
            elif kind == "BAD_BRACE":
                flush()
                parts.append(syntax.BadDollar(str(token), _span(token)))
            else:
                raise AssertionError(f"unexpected string token {kind}")
        if pending_high is not None:
            assert pending_token is not None
            lone_surrogate(pending_token)
        flush()
        return syntax.StringTemplate(tuple(parts), _tree_span(node))


def _code(token: Token) -> int:
    return int(token[2:6], 16) if len(token) == 6 and token[1] == "u" else -1


def _acceptable(error: UnexpectedToken) -> set[str]:
    """What the parser could take here, after the reductions LALR postpones; falls back to Lark's set."""
    interactive = getattr(error, "interactive_parser", None)
    if interactive is not None:
        try:
            accepted: set[str] = interactive.accepts()
            if accepted:
                return accepted
        except UnexpectedInput:  # pragma: no cover - accepts() only simulates
            pass
    return set(error.expected)


def _syntax_diagnostic(source: SourceText, error: UnexpectedInput) -> Diagnostic:
    line, column = error.line, error.column
    if isinstance(error, UnexpectedCharacters):
        position = error.pos_in_stream or 0
        char = source.text[position] if position < len(source.text) else ""
        shown = repr(char) if char.isprintable() else f"U+{ord(char):04X}" if char else "end of input"
        message = f"unexpected character {shown}; expected {_expected(error.allowed or set())}"
        if char == "'":
            message += " (JSON strings use double quotes)"
    elif isinstance(error, UnexpectedToken):
        token = error.token
        if token.type == "$END":
            message = f"unexpected end of input; expected {_expected(_acceptable(error))}"
            lines = source.lines
            line = len(lines)
            column = len(lines[-1].rstrip("\r")) + 1
        else:
            if token.type in ("CHARS", "PUNCT_CHARS"):  # text outside any string
                message = f"unexpected {str(token)[:1]!r}"
            elif token.type == "SIMPLE_STRING":
                message = f"unexpected string {token if len(token) <= 40 else token[:37] + '...'}"
            else:
                message = f"unexpected {_describe(token.type)}"
            if token.type in ("NUMBER", "VAR", "BRACED_VAR"):
                message += f" {token}"
            message += f"; expected {_expected(_acceptable(error))}"
            before = source.text[: token.start_pos or 0].rstrip(" \t\r\n")
            if str(token)[:1] in "}]" and before.endswith(","):
                message += " (JSON allows no trailing comma)"
            elif str(token).startswith("'"):
                message += " (JSON strings use double quotes)"
    elif isinstance(error, UnexpectedEOF):
        message = f"unexpected end of input; expected {_expected(set(error.expected))}"
    else:  # pragma: no cover - Lark raises only the three above
        message = str(error)
    return source.diagnostic(message, max(line, 1), max(column, 1))


def parse_config(text: str, source: str = "<config>") -> syntax.JsonNode:
    """Parse config *text* into a JSON template tree.

    Raises ``ConfigSyntaxError`` listing every syntax problem found, each with
    the file name, line and column.
    """
    src = SourceText(text, source)
    if len(text) > MAX_CONFIG_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_CONFIG_BYTES:
        raise ConfigSyntaxError([src.diagnostic(f"config larger than {MAX_CONFIG_BYTES} bytes", 1, 1)])
    fast = parse_fast(text, MAX_NESTING)
    if fast is not None:
        return fast
    return _parse_with_lark(src)


def _parse_with_lark(src: SourceText) -> syntax.JsonNode:
    """The grammar's own parser: the definition of the language, and every syntax error's source."""
    text = src.text
    syntax: list[Diagnostic] = []

    def on_error(error: UnexpectedInput) -> bool:
        diagnostic = _syntax_diagnostic(src, error)
        if not syntax or (syntax[-1].line, syntax[-1].column) != (diagnostic.line, diagnostic.column):
            syntax.append(diagnostic)
        if len(syntax) >= MAX_SYNTAX_ERRORS:
            return False
        if isinstance(error, UnexpectedToken):
            if error.token.type == "$END":
                return False
            _repair(error)
        return True

    try:
        tree = parser().parse(text, on_error=on_error)
    except UnexpectedInput as error:
        if not syntax:
            syntax.append(_syntax_diagnostic(src, error))
        raise ConfigSyntaxError(syntax) from None
    except RecursionError:  # pragma: no cover - LALR does not recurse; kept as a guard
        raise ConfigSyntaxError([src.diagnostic("config nested too deeply", 1, 1)]) from None
    converter = _Converter(src)
    node = converter.value(tree, 1) if isinstance(tree, Tree) else None
    problems = syntax + converter.problems
    if problems or node is None:
        raise ConfigSyntaxError(sorted(problems, key=lambda d: (d.line, d.column)))
    return node


_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_PUNCTUATION = {",": "COMMA", ":": "COLON", "{": "LBRACE", "}": "RBRACE", "[": "LSQB", "]": "RSQB"}
_FILLER = {"COMMA": ",", "COLON": ":", "NULL": "null", "DQUOTE": '"', "RBRACE": "}", "RSQB": "]"}
#: Token sequences tried, in order, in front of an unexpected token to resynchronise.
_INSERTIONS: tuple[tuple[str, ...], ...] = (
    ("COMMA",),
    ("NULL",),
    ("COLON",),
    ("COLON", "NULL"),
    ("DQUOTE", "DQUOTE", "COLON", "NULL"),
    ("RSQB",),
    ("RBRACE",),
)


_STRAY = ("CHARS", "PUNCT_CHARS", "LONE_DOLLAR", "BAD_BRACE", "BAD_ESCAPE", "ESCAPE", "DOLLAR_DOLLAR")


def _repair(error: UnexpectedToken) -> None:
    """Resynchronise after a syntax error so later, independent errors are found too.

    Stray text where a value belongs is replaced by ``null``; otherwise the first
    short insertion (a missing ',', ':' or value) that makes the token acceptable
    is fed; failing all, the token is dropped.
    """
    interactive = error.interactive_parser
    token = error.token
    if token.type == "CHARS":  # Lark's root lexer reads stray words as string text
        word = str(token).strip()
        if _NUMBER.fullmatch(word):
            token = Token("NUMBER", word, token.start_pos, token.line, token.column)
        elif word in ("true", "false", "null"):
            token = Token(word.upper(), word, token.start_pos, token.line, token.column)
    if token.type == "PUNCT_CHARS" and len(token) == 1:
        token = Token(_PUNCTUATION[str(token)], str(token), token.start_pos, token.line, token.column)
    elif token.type in _STRAY and _try_feed(interactive, ("NULL",), None):
        return
    for insertion in _INSERTIONS:
        if _try_feed(interactive, insertion, token):
            return


def _try_feed(interactive: Any, insertion: tuple[str, ...], token: Token | None) -> bool:
    trial = interactive.copy()
    try:
        for kind in insertion:
            trial.feed_token(Token(kind, _FILLER[kind]))
        if token is not None:
            trial.feed_token(token)
    except UnexpectedInput:
        return False
    for kind in insertion:
        interactive.feed_token(Token(kind, _FILLER[kind]))
    if token is not None:
        interactive.feed_token(token)
    return True


def parse_mapping(config: Mapping[str, Any], source: str = "<mapping>") -> syntax.JsonNode:
    """Parse an already-decoded config: its strings are templates like those in a file.

    The mapping is written out as indented JSON and parsed, so errors still carry a
    line and column (in that generated text) and nothing takes a second path.
    """
    try:
        text = json.dumps(config, ensure_ascii=False, indent=2, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ConfigSyntaxError([Diagnostic(f"config is not JSON data: {error}", source, 1, 1)]) from None
    return parse_config(text, source)
