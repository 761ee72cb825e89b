"""Turns a validated ``WebhookTemplate`` into an immutable ``WebhookPlan``.

Work done here is work no render repeats: each reference gets its name
candidates sorted longest first, each string literal is JSON-escaped once,
adjacent literal text is merged, and a ``Content-Type: application/json``
header is added when a body is sent and the template sets none.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from . import syntax
from .layout import BodyPiece, HeaderPlan, JsonStringPlan, MemberNames, Piece, Slot, UrlGroup, candidate_lengths
from .parse import SourceText, parse_config, parse_mapping
from .plan import WebhookPlan
from .syntax import Context, UrlPartKind
from .template import validate_webhook

__all__ = ["candidates_for", "compile_template", "compile_webhook", "compile_file"]


def candidates_for(ref: syntax.VarRef, context: Context) -> tuple[str, ...]:
    """Names a reference may mean, longest first.

    ``$session_id.x`` may mean ``session_id.x``, ``session_id``... down to ``s``:
    every prefix that is itself a name (a name never ends with ``.``). ``${name}``
    and a bare JSON value mean exactly one name. Each candidate may also be reached
    by descent into nested objects at render time (``plan.resolve_reference``).
    """
    return tuple(ref.name[:length] for length in _lengths(ref, context))


def _lengths(ref: syntax.VarRef, context: Context) -> tuple[int, ...]:
    """The rule ``load_plans`` also checks a loaded slot against (``layout.candidate_lengths``)."""
    return candidate_lengths(ref.name, ref.braced or context is Context.JSON_VALUE)


def _slot(variable: syntax.Variable, field: str | None = None) -> Slot:
    ref = variable.ref
    return Slot(
        name=ref.name,
        lengths=_lengths(ref, variable.context),
        index=ref.index,
        written=ref.written,
        context=variable.context,
        field=field or variable.field,
        line=ref.span.line,
        column=ref.span.column,
    )


def _pieces(items: tuple[str | syntax.Variable, ...]) -> tuple[Piece, ...]:
    out: list[Piece] = []
    for item in items:
        if isinstance(item, str):
            if out and isinstance(out[-1], str):
                out[-1] += item
            elif item:
                out.append(item)
        else:
            out.append(_slot(item))
    return tuple(out)


class _BodyCompiler:
    """Lays the body out as JSON text with holes; literal runs merged into one string each."""

    def __init__(self) -> None:
        self.out: list[BodyPiece] = []
        self.objects: list[MemberNames] = []

    def literal(self, text: str) -> None:
        if self.out and isinstance(self.out[-1], str):
            self.out[-1] += text
        else:
            self.out.append(text)

    def string(self, node: syntax.StringTemplate, field: str) -> None:
        if not node.has_variables:
            self.literal(orjson.dumps(node.literal).decode("utf-8"))
            return
        pieces: list[Piece] = []
        for part in node.parts:
            if isinstance(part, syntax.Text):
                if pieces and isinstance(pieces[-1], str):
                    pieces[-1] += part.value
                else:
                    pieces.append(part.value)
            elif isinstance(part, syntax.VarRef):
                pieces.append(_slot(syntax.Variable(part, Context.JSON_STRING, field)))
        self.out.append(JsonStringPlan(tuple(pieces)))

    def value(self, node: syntax.JsonNode, field: str) -> None:
        if isinstance(node, syntax.JsonObject):
            self.literal("{")
            literal: list[str] = []
            at: list[tuple[int, int]] = []
            keys: list[int] = []
            for i, member in enumerate(node.members):
                if i:
                    self.literal(",")
                name = member.key.literal
                if member.key.has_variables:
                    keys.append(len(self.out))  # where `string` puts its JsonStringPlan
                else:
                    literal.append(name)
                    at.append((member.key.span.line, member.key.span.column))
                self.string(member.key, field)
                self.literal(":")
                self.value(member.value, f"{field}.{name}")
            self.literal("}")
            if keys:
                self.objects.append(MemberNames(tuple(literal), tuple(at), tuple(keys)))
        elif isinstance(node, syntax.JsonArray):
            self.literal("[")
            for i, item in enumerate(node.items):
                if i:
                    self.literal(",")
                self.value(item, f"{field}[{i}]")
            self.literal("]")
        elif isinstance(node, syntax.StringTemplate):
            self.string(node, field)
        elif isinstance(node, syntax.JsonNumber):
            self.literal(node.text)
        elif isinstance(node, syntax.JsonBool):
            self.literal("true" if node.value else "false")
        elif isinstance(node, syntax.JsonNull):
            self.literal("null")
        else:
            self.out.append(_slot(syntax.Variable(node.ref, Context.JSON_VALUE, field)))


def compile_template(template: syntax.WebhookTemplate) -> WebhookPlan:
    """Build the plan for a validated template."""
    url: list[str | UrlGroup] = []
    for part in template.url.parts:
        if part.kind is UrlPartKind.LITERAL:
            text = "".join(p for p in part.pieces if isinstance(p, str))
            if url and isinstance(url[-1], str):
                url[-1] += text
            else:
                url.append(text)
        else:
            url.append(UrlGroup(part.kind, _pieces(part.pieces)))
    headers = [HeaderPlan(_pieces(h.name), _pieces(h.value)) for h in template.headers]
    body: tuple[BodyPiece, ...] | None = None
    objects: tuple[MemberNames, ...] = ()
    if template.body is not None:
        compiler = _BodyCompiler()
        compiler.value(template.body, "body")
        body = tuple(compiler.out)
        objects = tuple(sorted(compiler.objects, key=lambda o: o.keys[0]))  # in source order
        has_content_type = any(
            all(isinstance(p, str) for p in h.name) and "".join(map(str, h.name)).lower() == "content-type"
            for h in headers
        )
        if not has_content_type:
            headers.append(HeaderPlan(("Content-Type",), ("application/json",)))
    return WebhookPlan(
        method=template.method,
        url=tuple(url),
        headers=tuple(headers),
        body=body,
        response_directive=template.response_directive,
        secrets=template.secrets,
        source=template.source,
        objects=objects,
    )


def compile_webhook(config: str | bytes | Mapping[str, Any], source: str | None = None) -> WebhookPlan:
    """Compile a webhook config (template text, or an already-decoded mapping) into a plan.

    Raises ``ConfigSyntaxError`` or ``ConfigError`` listing every problem found,
    each with file, line and column.

    >>> plan = compile_webhook('{"url": "https://x.example/$id", "method": "GET"}', source="demo.json")
    >>> plan.render({"id": 7}).url
    'https://x.example/7'
    """
    if isinstance(config, Mapping):
        name = source or "<mapping>"
        root = parse_mapping(config, name)
        text = json.dumps(config, ensure_ascii=False, indent=2)
    else:
        text = config.decode("utf-8") if isinstance(config, bytes) else config
        name = source or "<config>"
        root = parse_config(text, name)
    return compile_template(validate_webhook(root, SourceText(text, name)))


def compile_file(path: str | Path) -> WebhookPlan:
    """Compile the config in *path*; errors name the file."""
    file = Path(path)
    return compile_webhook(file.read_text(encoding="utf-8"), source=str(path))
