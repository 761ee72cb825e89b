"""Turns well-formed config text into the same AST as the Lark parser, several times faster.

Compiling configs at deploy time is dominated by parsing, and Lark's pure-Python LALR
pays for every token. Most configs are well-formed, so this module reads them with
one compiled regular expression and a small recursive descent, and gives up (returns
None) at the first thing it does not expect: then ``parse`` runs the Lark grammar,
which stays the definition of the language and the source of every error message.

The two must agree exactly, spans included; ``tests/test_fastparse.py`` checks that on
generated and mutated configs (and that this never accepts what Lark rejects, and takes
nearly every well-formed config). It is kept only while benchmarks/README.md ("Second
mechanisms") shows its gain on compiling a deploy's configs.
"""

from __future__ import annotations

import json
import re

from . import syntax

__all__ = ["parse_fast"]

# A name character written as an escape: any \u escape but a lone surrogate.
_ESC = r"\\u(?![dD][89a-fA-F])[0-9a-fA-F]{4}|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"
# `${...}` holding anything but `"`, a raw `}` and invalid escapes; a `$` run (see syntax.read_run).
_BRACED = r'\$\{(?:[^"\\}]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))+\}'
_RUN = rf"\$(?:[^\W\d]|{_ESC})(?:[\w.-]|{_ESC})*(?:\[[0-9]+\])?"

# One token at a time, outside strings. Mirrors the terminals of webhook.lark.
_TOKEN = re.compile(
    r"(?P<ws>[ \t\n\r]+)"
    r"|(?P<punct>[{}\[\],:])"
    r'|(?P<simple>"[^"\\$\x00-\x1f]*")'
    r'|(?P<dquote>")'
    r"|(?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)"
    r"|(?P<word>true|false|null)"
    rf"|(?P<var>{_BRACED}|{_RUN})"
)
# One piece of string content after an opening quote.
_PART = re.compile(
    r'(?P<chars>[^"\\$\x00-\x1f]+)'
    r'|(?P<escape>\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))'
    r"|(?P<dollars>\$\$)"
    rf"|(?P<braced>{_BRACED})"
    rf"|(?P<run>{_RUN})"
    r"|(?P<dollar>\$(?!\{))"  # a `$` that starts no reference is text; a broken `${` is for Lark to explain
    r'|(?P<end>")'
)
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
# After a value, only these may follow: what Lark's lexer would also split there.
_AFTER_SCALAR = re.compile(r"[ \t\n\r,:}\]]|\Z")


class _GiveUp(Exception):
    """Not the common case: let the Lark grammar read it (and explain what is wrong)."""


class _Reader:
    __slots__ = ("depth_limit", "line", "line_start", "pos", "text")

    def __init__(self, text: str, depth_limit: int) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.line_start = 0  # offset where the current line begins
        self.depth_limit = depth_limit

    def span(self, start: int, end: int) -> syntax.Span:
        return syntax.Span(self.line, start - self.line_start + 1, start, end)

    def skip_ws(self) -> None:
        text = self.text
        pos = self.pos
        while pos < len(text) and text[pos] in " \t\n\r":
            if text[pos] == "\n":
                self.line += 1
                self.line_start = pos + 1
            pos += 1
        self.pos = pos

    def value(self, depth: int) -> syntax.JsonNode:
        self.skip_ws()
        match = _TOKEN.match(self.text, self.pos)
        if match is None:
            raise _GiveUp
        kind = match.lastgroup
        start, end = match.span()
        if kind == "punct":
            char = match.group()
            if char == "{":
                return self.object(depth)
            if char == "[":
                return self.array(depth)
            raise _GiveUp
        if kind == "simple":
            self.pos = end
            span = self.span(start, end)
            if end - start == 2:
                return syntax.StringTemplate((), span)
            inner = syntax.Span(span.line, span.column + 1, start + 1, end - 1)
            return syntax.StringTemplate((syntax.Text(self.text[start + 1 : end - 1], inner),), span)
        if kind == "dquote":
            return self.string(start)
        if not _AFTER_SCALAR.match(self.text, end):
            raise _GiveUp
        self.pos = end
        span = self.span(start, end)
        written = match.group()
        if kind == "number":
            return syntax.JsonNumber(written, span)
        if kind == "word":
            if written == "null":
                return syntax.JsonNull(span)
            return syntax.JsonBool(written == "true", span)
        return syntax.BareVar(_var_ref(written, span), span)

    def object(self, depth: int) -> syntax.JsonObject:
        if depth > self.depth_limit:
            raise _GiveUp
        start = self.pos
        line, line_start = self.line, self.line_start
        self.pos += 1
        members: list[syntax.JsonMember] = []
        self.skip_ws()
        if self.text.startswith("}", self.pos):
            self.pos += 1
        else:
            while True:
                key = self.value(depth + 1)
                if not isinstance(key, syntax.StringTemplate):
                    raise _GiveUp
                self.expect(":")
                members.append(syntax.JsonMember(key, self.value(depth + 1)))
                if self.expect(",}") == "}":
                    break
        return syntax.JsonObject(tuple(members), syntax.Span(line, start - line_start + 1, start, self.pos))

    def array(self, depth: int) -> syntax.JsonArray:
        if depth > self.depth_limit:
            raise _GiveUp
        start = self.pos
        line, line_start = self.line, self.line_start
        self.pos += 1
        items: list[syntax.JsonNode] = []
        self.skip_ws()
        if self.text.startswith("]", self.pos):
            self.pos += 1
        else:
            while True:
                items.append(self.value(depth + 1))
                if self.expect(",]") == "]":
                    break
        return syntax.JsonArray(tuple(items), syntax.Span(line, start - line_start + 1, start, self.pos))

    def expect(self, chars: str) -> str:
        self.skip_ws()
        if self.pos < len(self.text) and self.text[self.pos] in chars:
            self.pos += 1
            return self.text[self.pos - 1]
        raise _GiveUp

    def string(self, start: int) -> syntax.StringTemplate:
        text = self.text
        pos = start + 1
        parts: list[syntax.Text | syntax.VarRef | syntax.BadDollar] = []
        run: list[str] = []
        run_start = -1
        high: str | None = None  # first half of an escaped surrogate pair
        while True:
            match = _PART.match(text, pos)
            if match is None:
                raise _GiveUp  # a control character, a bad escape, a lone `$`, or the end of the text
            kind = match.lastgroup
            token_start, pos = match.span()
            if high is not None and kind != "escape":
                raise _GiveUp
            if kind == "end":
                break
            if kind == "braced" or kind == "run":
                written = match.group()
                ref: syntax.VarRef | None
                if kind == "braced":
                    end, ref = len(written), _var_ref(written, self.span(token_start, pos))
                else:  # the name the run spells is the reference; the rest of it is text
                    end, name, index = syntax.read_run(written)
                    span = self.span(token_start, token_start + end)
                    ref = syntax.VarRef(name, index, False, written[:end], span) if end else None
                if ref is not None:
                    if run:
                        parts.append(
                            syntax.Text(
                                "".join(run),
                                syntax.Span(self.line, run_start - self.line_start + 1, run_start, token_start),
                            )
                        )
                        run = []
                    parts.append(ref)
                if end < len(written):
                    if not run:
                        run_start = token_start + end
                    run.append(json.loads(f'"{written[end:]}"'))
                continue
            if kind == "escape":
                letter = text[token_start + 1]
                if letter == "u":
                    code = int(text[token_start + 2 : pos], 16)
                    if 0xD800 <= code <= 0xDBFF:
                        if high is not None:
                            raise _GiveUp
                        high = chr(code)
                        if not run:
                            run_start = token_start
                        continue
                    if 0xDC00 <= code <= 0xDFFF:
                        if high is None:
                            raise _GiveUp
                        value = chr(0x10000 + ((ord(high) - 0xD800) << 10) + (code - 0xDC00))
                        high = None
                        run.append(value)
                        continue
                    value = chr(code)
                else:
                    value = _ESCAPES[letter]
            elif kind == "dollars" or kind == "dollar":
                value = "$"
            else:
                value = match.group()
            if not run:
                run_start = token_start
            run.append(value)
        if run:
            parts.append(
                syntax.Text(
                    "".join(run), syntax.Span(self.line, run_start - self.line_start + 1, run_start, token_start)
                )
            )
        self.pos = pos
        return syntax.StringTemplate(tuple(parts), self.span(start, pos))


def _var_ref(written: str, span: syntax.Span) -> syntax.VarRef:
    try:
        return syntax.VarRef.from_written(written, span)
    except ValueError:  # braces holding a control character or a lone surrogate: Lark reports it
        raise _GiveUp from None


def parse_fast(text: str, depth_limit: int) -> syntax.JsonNode | None:
    """The AST of well-formed *text*, or None when the Lark grammar must read it."""
    reader = _Reader(text, depth_limit)
    try:
        node = reader.value(1)
        reader.skip_ws()
    except (_GiveUp, RecursionError):
        return None
    if reader.pos != len(text):
        return None
    return node
