"""The syntax tree: what a config says, with a position on every node.

Two layers live here. The *JSON template* nodes (``JsonObject``, ``StringTemplate``,
``BareVar``...) are what the parser produces for any config text. The *webhook*
nodes (``WebhookTemplate``, ``UrlTemplate``, ``HeaderTemplate``) are what the
config stage makes of them once fields are known; there every variable is a
``Variable`` carrying the ``Context`` that decides its encoding. The context is
fixed by grammatical position, never guessed at render time.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "BadDollar",
    "BareVar",
    "Context",
    "HeaderTemplate",
    "JsonArray",
    "JsonBool",
    "JsonMember",
    "JsonNode",
    "JsonNull",
    "JsonNumber",
    "JsonObject",
    "Span",
    "StringTemplate",
    "Text",
    "UrlPart",
    "UrlPartKind",
    "UrlTemplate",
    "VarRef",
    "Variable",
    "WebhookTemplate",
]


@dataclass(frozen=True, slots=True)
class Span:
    """Where a node sits in the source: 1-based line and column, 0-based offsets."""

    line: int
    column: int
    start: int
    end: int


class Context(enum.Enum):
    """Where a substituted value lands, which decides how it is encoded."""

    URL_WHOLE = "url_whole"  # the URL is exactly one variable: an absolute http(s) URL
    URL_HOST = "url_host"  # part of the host: must leave a valid host name
    URL_PORT = "url_port"  # the port: digits 1-65535
    URL_PATH = "url_path"  # a path segment: percent-encoded, `/` included
    URL_QUERY = "url_query"  # a query name or value: percent-encoded, `&` `=` included
    URL_FRAGMENT = "url_fragment"  # the fragment: percent-encoded
    HEADER_NAME = "header_name"  # a header name: must stay an RFC 9110 token
    HEADER_VALUE = "header_value"  # a header value: literal, no control characters
    JSON_STRING = "json_string"  # inside a JSON string (keys too): JSON-escaped
    JSON_VALUE = "json_value"  # a bare variable standing as a JSON value


# --- JSON template layer -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VarRef:
    """A ``$name``, ``$name[N]`` or ``${name}`` as written.

    ``name`` is the whole run of name characters after ``$``; which prefix of it
    is the variable is only known at render time (longest defined prefix wins),
    except for the braced form, which names its variable exactly.
    """

    name: str
    index: int | None
    braced: bool
    written: str
    span: Span

    @classmethod
    def from_written(cls, written: str, span: Span) -> VarRef:
        """Split ``$name``, ``$name[N]``, ``${name}`` or ``${name[N]}`` (already lexed) into its parts."""
        braced = written.startswith("${")
        inner = written[2:-1] if braced else written[1:]
        index = None
        if inner.endswith("]"):
            inner, _, digits = inner[:-1].partition("[")
            index = int(digits)
        return cls(inner, index, braced, written, span)


@dataclass(frozen=True, slots=True)
class Text:
    """Literal characters of a string, escapes already decoded."""

    value: str
    span: Span


@dataclass(frozen=True, slots=True)
class BadDollar:
    """A ``$`` not followed by a name, ``{name}`` or ``$``: an error where templates are read."""

    written: str
    span: Span


StringPart = Text | VarRef | BadDollar


@dataclass(frozen=True, slots=True)
class StringTemplate:
    """A JSON string whose content may hold variables."""

    parts: tuple[StringPart, ...]
    span: Span

    @property
    def literal(self) -> str:
        """The string with ``$`` tokens kept as written: for fields that are not templates."""
        return "".join(p.value if isinstance(p, Text) else p.written for p in self.parts)

    @property
    def has_variables(self) -> bool:
        return any(not isinstance(p, Text) for p in self.parts)


@dataclass(frozen=True, slots=True)
class JsonNumber:
    """A number kept as its source text, so large integers stay exact."""

    text: str
    span: Span


@dataclass(frozen=True, slots=True)
class JsonBool:
    value: bool
    span: Span


@dataclass(frozen=True, slots=True)
class JsonNull:
    span: Span


@dataclass(frozen=True, slots=True)
class BareVar:
    """A variable standing where a JSON value is expected: ``"all_images": $images``."""

    ref: VarRef
    span: Span


@dataclass(frozen=True, slots=True)
class JsonMember:
    key: StringTemplate
    value: JsonNode


@dataclass(frozen=True, slots=True)
class JsonObject:
    members: tuple[JsonMember, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class JsonArray:
    items: tuple[JsonNode, ...]
    span: Span


JsonNode = JsonObject | JsonArray | StringTemplate | JsonNumber | JsonBool | JsonNull | BareVar


# --- webhook layer ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Variable:
    """A reference whose encoding context is known: the unit the compiler turns into a slot."""

    ref: VarRef
    context: Context
    field: str


class UrlPartKind(enum.Enum):
    """The URL components a template can put variables in, each checked after rendering."""

    LITERAL = "literal"
    WHOLE = "whole"
    HOST = "host"
    PORT = "port"
    PATH_SEGMENT = "path_segment"
    QUERY = "query"
    FRAGMENT = "fragment"


@dataclass(frozen=True, slots=True)
class UrlPart:
    """A run of one URL component: literal text (already valid URL text) and variables."""

    kind: UrlPartKind
    pieces: tuple[str | Variable, ...]


@dataclass(frozen=True, slots=True)
class UrlTemplate:
    parts: tuple[UrlPart, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class HeaderTemplate:
    name: tuple[str | Variable, ...]
    value: tuple[str | Variable, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class WebhookTemplate:
    """A validated webhook config: every field checked, every variable placed in context."""

    method: str
    url: UrlTemplate
    headers: tuple[HeaderTemplate, ...]
    body: JsonNode | None
    response_directive: str | None
    secrets: tuple[str, ...]
    source: str
