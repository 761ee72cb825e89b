"""Turns a parsed JSON template into a ``WebhookTemplate``: fields validated, variables placed.

Field types are checked by pydantic against a skeleton of the tree (templates as
their text, bare variables as markers); each pydantic error is mapped back to the
node it concerns, so it keeps its line and column. Then every variable gets the
encoding ``Context`` of the place it stands: URL host, port, path, query or
fragment; header name or value; JSON string or bare JSON value.
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import ConfigError, Diagnostic
from . import syntax
from .encode import FORBIDDEN_HEADER_NAMES, ValueProblem, check_header_value, check_host, check_port
from .parse import SourceText
from .syntax import Context, UrlPartKind

__all__ = ["METHODS", "skeleton", "validate_webhook"]

METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")


class _BareVariable:
    """Stands for a bare ``$name`` in the skeleton handed to pydantic."""

    __slots__ = ("written",)

    def __init__(self, written: str) -> None:
        self.written = written


class _HeaderModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    key: str
    value: str


class _WebhookModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True)
    type: Literal["WEBHOOK"] = "WEBHOOK"
    url: str
    method: Literal["GET", "POST", "PUT", "DELETE", "PATCH"]
    headers: list[_HeaderModel] = []
    body: Any = None
    responseDirective: str | None = None  # noqa: N815 - the seed's field name
    secrets: list[str] = []


_FIELDS = tuple(_WebhookModel.model_fields)
_TYPE_NAMES = {"string_type": "a string", "list_type": "a list", "model_type": "an object", "dict_type": "an object"}


def skeleton(node: syntax.JsonNode) -> Any:
    """The node as plain data: templates as their text, bare variables as markers (for validation)."""
    if isinstance(node, syntax.JsonObject):
        return {m.key.literal: skeleton(m.value) for m in node.members}
    if isinstance(node, syntax.JsonArray):
        return [skeleton(item) for item in node.items]
    if isinstance(node, syntax.StringTemplate):
        return node.literal
    if isinstance(node, syntax.JsonNumber):
        return json.loads(node.text)
    if isinstance(node, syntax.JsonBool):
        return node.value
    if isinstance(node, syntax.JsonNull):
        return None
    return _BareVariable(node.ref.written)


def _member(node: syntax.JsonObject, key: str) -> syntax.JsonMember | None:
    for member in node.members:
        if member.key.literal == key:
            return member
    return None


def _field_name(loc: tuple[int | str, ...]) -> str:
    out = ""
    for step in loc:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else str(step))
    return out


class _Validator:
    def __init__(self, root: syntax.JsonNode, source: SourceText) -> None:
        self.root = root
        self.source = source
        self.problems: list[Diagnostic] = []

    def error(self, span: syntax.Span, message: str, field: str | None = None, variable: str | None = None) -> None:
        self.problems.append(self.source.at(span, message, field=field, variable=variable))

    # -- structure ---------------------------------------------------------------

    def locate(self, loc: tuple[int | str, ...]) -> tuple[syntax.JsonNode | None, syntax.JsonMember | None]:
        node: syntax.JsonNode | None = self.root
        member = None
        for step in loc:
            if isinstance(node, syntax.JsonObject) and isinstance(step, str):
                member = _member(node, step)
                if member is None:
                    return node, None
                node = member.value
            elif isinstance(node, syntax.JsonArray) and isinstance(step, int) and step < len(node.items):
                node, member = node.items[step], None
            else:
                return node, member
        return node, member

    def check_fields(self) -> bool:
        if not isinstance(self.root, syntax.JsonObject):
            self.error(self.root.span, "a webhook config must be a JSON object with at least 'url' and 'method'")
            return False
        try:
            _WebhookModel.model_validate(skeleton(self.root))
        except ValidationError as failure:
            for item in failure.errors():
                self.pydantic_error(tuple(item["loc"]), item["type"], item.get("ctx") or {})
        return not self.problems

    def pydantic_error(self, loc: tuple[int | str, ...], kind: str, ctx: dict[str, Any]) -> None:
        name = _field_name(loc)
        if kind == "missing":
            parent, _ = self.locate(loc[:-1])
            assert parent is not None
            brace = syntax.Span(parent.span.line, parent.span.column, parent.span.start, parent.span.start + 1)
            self.error(brace, f"missing required field '{loc[-1]}'", field=name)
            return
        node, member = self.locate(loc)
        assert node is not None
        if kind == "extra_forbidden" and member is not None:
            known = _FIELDS if len(loc) == 1 else ("key", "value")
            hint = difflib.get_close_matches(str(loc[-1]), known, n=1)
            suggestion = f"; did you mean '{hint[0]}'?" if hint else f"; known fields: {', '.join(known)}"
            self.error(member.key.span, f"unknown field '{loc[-1]}'{suggestion}", field=name)
        elif kind == "literal_error" and loc == ("method",):
            self.error(node.span, f"method must be one of {', '.join(METHODS)} (upper case)", field=name)
        elif kind == "literal_error" and loc == ("type",):
            self.error(node.span, 'type must be "WEBHOOK"', field=name)
        elif kind in _TYPE_NAMES:
            written = (
                " (a bare variable; put it in quotes to make a string template)"
                if isinstance(node, syntax.BareVar)
                else ""
            )
            self.error(node.span, f"'{name}' must be {_TYPE_NAMES[kind]}{written}", field=name)
        else:
            self.error(node.span, f"'{name}' is invalid ({kind}: {ctx})", field=name)

    def check_duplicates(self, node: syntax.JsonNode, path: str) -> None:
        if isinstance(node, syntax.JsonObject):
            seen: dict[str, syntax.Span] = {}
            for member in node.members:
                key = member.key
                if not key.has_variables:
                    if key.literal in seen:
                        first = seen[key.literal]
                        self.error(
                            key.span,
                            f"duplicate key {json.dumps(key.literal)} (first at line {first.line}, "
                            f"column {first.column})",
                            field=path or None,
                        )
                    else:
                        seen[key.literal] = key.span
                self.check_duplicates(member.value, f"{path}.{key.literal}" if path else key.literal)
        elif isinstance(node, syntax.JsonArray):
            for i, item in enumerate(node.items):
                self.check_duplicates(item, f"{path}[{i}]")

    def check_dollars(self, node: syntax.JsonNode, field: str) -> None:
        if isinstance(node, syntax.StringTemplate):
            for part in node.parts:
                if isinstance(part, syntax.BadDollar):
                    problem = "names nothing" if part.written == "${}" else "has no closing '}' in this string"
                    self.error(
                        part.span,
                        f"'${{' {problem}: write ${{name}} (any key without '}}'), or $${{ for a literal '${{'",
                        field=field,
                    )
        elif isinstance(node, syntax.JsonObject):
            for member in node.members:
                self.check_dollars(member.key, field)
                self.check_dollars(member.value, field)
        elif isinstance(node, syntax.JsonArray):
            for item in node.items:
                self.check_dollars(item, field)

    # -- pieces ------------------------------------------------------------------

    def pieces(
        self, template: syntax.StringTemplate, context: Context, field: str
    ) -> tuple[str | syntax.Variable, ...]:
        out: list[str | syntax.Variable] = []
        for part in template.parts:
            if isinstance(part, syntax.Text):
                out.append(part.value)
            elif isinstance(part, syntax.VarRef):
                out.append(syntax.Variable(part, context, field))
        return tuple(out)

    def header(self, index: int, node: syntax.JsonObject) -> syntax.HeaderTemplate:
        key_member, value_member = _member(node, "key"), _member(node, "value")
        assert key_member is not None and value_member is not None
        key, value = key_member.value, value_member.value
        assert isinstance(key, syntax.StringTemplate) and isinstance(value, syntax.StringTemplate)
        field = f"headers[{index}]"
        self.check_dollars(key, f"{field}.key")
        self.check_dollars(value, f"{field}.value")
        if not key.has_variables:
            name = key.literal
            if not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", name):
                self.error(
                    key.span,
                    f"header name {json.dumps(name)} is not an RFC 9110 token "
                    "(letters, digits and !#$%&'*+-.^_`|~; no spaces or ':')",
                    field=f"{field}.key",
                )
            elif name.lower() in FORBIDDEN_HEADER_NAMES:
                self.error(
                    key.span,
                    f"header {name!r} is set by the HTTP client; a template may not set it",
                    field=f"{field}.key",
                )
        for part in value.parts:
            if isinstance(part, syntax.Text):
                try:
                    check_header_value(part.value)
                except ValueProblem as problem:
                    self.error(part.span, f"header value {problem}", field=f"{field}.value")
        return syntax.HeaderTemplate(
            self.pieces(key, Context.HEADER_NAME, f"{field}.key"),
            self.pieces(value, Context.HEADER_VALUE, f"{field}.value"),
            node.span,
        )

    def url(self, template: syntax.StringTemplate) -> syntax.UrlTemplate:
        return _UrlSplitter(self, template).split()


_SCHEME = re.compile(r"(?i)https?://")
# RFC 3986: pchar = unreserved / pct-encoded / sub-delims / ":" / "@"; query and fragment add "/" "?".
_URL_LITERAL = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*\Z")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


class _UrlSplitter:
    """Cuts a URL template into components so each variable gets its URL context."""

    def __init__(self, validator: _Validator, template: syntax.StringTemplate) -> None:
        self.v = validator
        self.template = template
        self.parts: list[syntax.UrlPart] = []

    def emit(self, kind: UrlPartKind, pieces: list[str | syntax.Variable]) -> None:
        if not pieces:
            return
        if all(isinstance(p, str) for p in pieces):
            kind = UrlPartKind.LITERAL
        if kind is UrlPartKind.LITERAL and self.parts and self.parts[-1].kind is UrlPartKind.LITERAL:
            merged = str(self.parts[-1].pieces[0]) + "".join(map(str, pieces))
            self.parts[-1] = syntax.UrlPart(UrlPartKind.LITERAL, (merged,))
        elif kind is UrlPartKind.LITERAL:
            self.parts.append(syntax.UrlPart(kind, ("".join(map(str, pieces)),)))
        else:
            self.parts.append(syntax.UrlPart(kind, tuple(pieces)))

    def split(self) -> syntax.UrlTemplate:
        t = self.template
        refs = [p for p in t.parts if not isinstance(p, syntax.Text)]
        if len(t.parts) == 1 and isinstance(t.parts[0], syntax.VarRef):
            var = syntax.Variable(t.parts[0], Context.URL_WHOLE, "url")
            return syntax.UrlTemplate((syntax.UrlPart(UrlPartKind.WHOLE, (var,)),), t.span)
        first = t.parts[0] if t.parts else None
        scheme = _SCHEME.match(first.value) if isinstance(first, syntax.Text) else None
        if scheme is None:
            if refs and not isinstance(first, syntax.Text):
                message = (
                    "the URL must start with http:// or https:// written out, "
                    "or be exactly one variable holding a whole URL"
                )
            else:
                message = "the URL must be absolute and start with http:// or https://"
            self.v.error(t.span, message, field="url")
            return syntax.UrlTemplate((), t.span)
        # Tag every character run with its component: authority, path, query, fragment.
        component = "authority"
        tagged: list[tuple[str, syntax.Text | syntax.VarRef]] = []
        rest_of_first = _sub_text(first, scheme.end(), len(first.value)) if isinstance(first, syntax.Text) else None
        self.emit(UrlPartKind.LITERAL, [first.value[: scheme.end()]] if isinstance(first, syntax.Text) else [])
        for part in ([rest_of_first] if rest_of_first else []) + list(t.parts[1:]):
            if isinstance(part, syntax.BadDollar):
                continue
            if isinstance(part, syntax.VarRef):
                tagged.append((component, part))
                continue
            run_start = 0
            for i, char in enumerate(part.value):
                next_component = component
                if char == "#" and component != "fragment":
                    next_component = "fragment"
                elif char == "?" and component in ("authority", "path"):
                    next_component = "query"
                elif char == "/" and component == "authority":
                    next_component = "path"
                if next_component != component:
                    if i > run_start:
                        tagged.append((component, _sub_text(part, run_start, i)))
                    run_start, component = i, next_component
            if len(part.value) > run_start:
                tagged.append((component, _sub_text(part, run_start, len(part.value))))
        self.authority([p for c, p in tagged if c == "authority"])
        self.path([p for c, p in tagged if c == "path"])
        for name, kind in (("query", UrlPartKind.QUERY), ("fragment", UrlPartKind.FRAGMENT)):
            runs = [p for c, p in tagged if c == name]
            self.check_literals(runs, name)
            for p in runs:
                if isinstance(p, syntax.Text):
                    self.emit(UrlPartKind.LITERAL, [p.value])
                else:
                    self.emit(kind, [syntax.Variable(p, _CONTEXT[kind], "url")])
        return syntax.UrlTemplate(tuple(self.parts), t.span)

    def check_literals(self, runs: list[syntax.Text | syntax.VarRef], component: str) -> None:
        for p in runs:
            if not isinstance(p, syntax.Text):
                continue
            text = p.value[1:] if component == "fragment" and p.value.startswith("#") else p.value
            if not _URL_LITERAL.match(text) or _BAD_PERCENT.search(text):
                at = next((i for i, c in enumerate(p.value) if not _URL_LITERAL.match(c) and (c != "#" or i)), None)
                if at is None:
                    match = _BAD_PERCENT.search(p.value)
                    at = match.start() if match else 0
                bad = p.value[at]
                shown = "a space" if bad == " " else f"{bad!r}" if bad.isprintable() else f"U+{ord(bad):04X}"
                if bad == "%":
                    shown = "a '%' not followed by two hex digits"
                self.v.error(
                    _sub_text(p, at, at + 1).span,
                    f"the URL {component} holds {shown}, which a URL "
                    "cannot carry as is; percent-encode it (%XX) in the template",
                    field="url",
                )

    def authority(self, runs: list[syntax.Text | syntax.VarRef]) -> None:
        host: list[str | syntax.Variable] = []
        port: list[str | syntax.Variable] = []
        target = host
        bracket = False
        for p in runs:
            if isinstance(p, syntax.VarRef):
                context = Context.URL_PORT if target is port else Context.URL_HOST
                target.append(syntax.Variable(p, context, "url"))
                continue
            for char in p.value:
                if char == "@":
                    self.v.error(
                        _sub_text(p, p.value.index("@"), p.value.index("@") + 1).span,
                        "the URL carries credentials (user@host); send them in a header",
                        field="url",
                    )
                    return
                if char == "[":
                    bracket = True
                elif char == "]":
                    bracket = False
                elif char == ":" and not bracket and target is host:
                    target = port
                    continue
                target.append(char)
        if not host:
            self.v.error(self.template.span, "the URL has no host", field="url")
            return
        literal_host = "".join(h for h in host if isinstance(h, str))
        if all(isinstance(h, str) for h in host) and not literal_host.startswith("["):
            try:
                check_host(literal_host)
            except ValueProblem:
                self.v.error(self.template.span, f"the URL host {literal_host!r} is not a valid host name", field="url")
        self.emit(UrlPartKind.HOST, _join_chars(host))
        if target is port:
            self.emit(UrlPartKind.LITERAL, [":"])
            if all(isinstance(p, str) for p in port):
                try:
                    check_port("".join(map(str, port)))
                except ValueProblem:
                    self.v.error(self.template.span, "the URL port must be a number from 1 to 65535", field="url")
            self.emit(UrlPartKind.PORT, _join_chars(port))

    def path(self, runs: list[syntax.Text | syntax.VarRef]) -> None:
        self.check_literals(runs, "path")
        segment: list[str | syntax.Variable] = []
        for p in runs:
            if isinstance(p, syntax.VarRef):
                segment.append(syntax.Variable(p, Context.URL_PATH, "url"))
                continue
            pieces = p.value.split("/")
            for i, piece in enumerate(pieces):
                if i:
                    self.emit(UrlPartKind.PATH_SEGMENT, segment)
                    self.emit(UrlPartKind.LITERAL, ["/"])
                    segment = []
                if piece:
                    segment.append(piece)
        self.emit(UrlPartKind.PATH_SEGMENT, segment)


def _sub_text(text: syntax.Text, start: int, end: int) -> syntax.Text:
    """Characters ``start:end`` of a text, with their own span when the source had no escapes there."""
    span = text.span
    if span.end - span.start == len(text.value) and "\n" not in text.value:
        span = syntax.Span(span.line, span.column + start, span.start + start, span.start + end)
    return syntax.Text(text.value[start:end], span)


_CONTEXT = {UrlPartKind.QUERY: Context.URL_QUERY, UrlPartKind.FRAGMENT: Context.URL_FRAGMENT}


def _join_chars(items: list[str | syntax.Variable]) -> list[str | syntax.Variable]:
    out: list[str | syntax.Variable] = []
    for item in items:
        if isinstance(item, str) and out and isinstance(out[-1], str):
            out[-1] += item
        else:
            out.append(item)
    return out


def validate_webhook(root: syntax.JsonNode, source: SourceText) -> syntax.WebhookTemplate:
    """Check a parsed config and place its variables; raise ``ConfigError`` listing every problem.

    Field-type errors do not stop the other checks: every field whose shape is
    right is still checked, so one run reports everything wrong in the file.
    """
    v = _Validator(root, source)
    v.check_duplicates(root, "")
    v.check_fields()
    if not isinstance(root, syntax.JsonObject):
        raise ConfigError(v.problems)

    def get(key: str) -> syntax.JsonNode | None:
        member = _member(root, key)
        return member.value if member else None

    method_node, url_node = get("method"), get("url")
    method = method_node.literal if isinstance(method_node, syntax.StringTemplate) else ""
    url = syntax.UrlTemplate((), root.span)
    if isinstance(url_node, syntax.StringTemplate):
        v.check_dollars(url_node, "url")
        url = v.url(url_node)
    headers_node = get("headers")
    headers = []
    if isinstance(headers_node, syntax.JsonArray):
        for i, item in enumerate(headers_node.items):
            key, value = (_member(item, k) if isinstance(item, syntax.JsonObject) else None for k in ("key", "value"))
            if (
                key
                and value
                and isinstance(key.value, syntax.StringTemplate)
                and isinstance(value.value, syntax.StringTemplate)
            ):
                assert isinstance(item, syntax.JsonObject)
                headers.append(v.header(i, item))
    body = get("body")
    if isinstance(body, syntax.JsonNull):
        body = None
    if body is not None:
        v.check_dollars(body, "body")
        if method == "GET":
            v.error(body.span, "a GET request cannot carry a body; use POST or PUT, or drop 'body'", field="body")
    directive = get("responseDirective")
    secrets_node = get("secrets")
    secrets = (
        tuple(s.literal for s in secrets_node.items if isinstance(s, syntax.StringTemplate))
        if isinstance(secrets_node, syntax.JsonArray)
        else ()
    )
    if v.problems:
        raise ConfigError(sorted(v.problems, key=lambda d: (d.line, d.column)))
    return syntax.WebhookTemplate(
        method=method,
        url=url,
        headers=tuple(headers),
        body=body,
        response_directive=directive.literal if isinstance(directive, syntax.StringTemplate) else None,
        secrets=secrets,
        source=source.name,
    )
