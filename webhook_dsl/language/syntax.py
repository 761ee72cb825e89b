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
import json
import re
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
    "decode_braced",
    "read_run",
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
    """A ``$name``, ``$name[N]``, ``${name}`` or ``${name[N]}`` as written.

    ``name`` is the whole run of name characters after ``$``; which prefix of it
    is the variable is only known at render time (longest defined prefix wins),
    except for the braced form, which names its variable exactly. Names are read
    with their JSON escapes decoded (``$caf\\u00e9`` and ``${caf\\u00e9}`` both
    name ``café``), so ``written``, the source text kept for positions and
    messages, may differ from the name.
    """

    name: str
    index: int | None
    braced: bool
    written: str
    span: Span

    @classmethod
    def from_written(cls, written: str, span: Span) -> VarRef:
        """Split a lexed ``$name``, ``$name[N]``, ``${name}`` or ``${name[N]}`` into its parts.

        Raises ``ValueError`` when the text is not one whole reference: braces holding a
        control character or a lone surrogate, or a ``$`` run followed by more text.
        """
        if not written.startswith("${"):
            end, name, index = read_run(written)
            if end != len(written):
                raise ValueError("not one whole reference")
            return cls(name, index, False, written, span)
        inner = written[2:-1]
        index = None
        match = _INDEX.search(inner)
        if match is not None and match.start() > 0:
            inner, index = inner[: match.start()], int(match.group(1))
        return cls(decode_braced(inner), index, True, written, span)


# A bare name: segments of word characters and `-`, joined by `.`, each starting with a non-digit.
_NAME_RUN = re.compile(r"[^\W\d][\w-]*(?:\.[^\W\d][\w-]*)*")
# One unit of a lexed `$` run: a surrogate pair escape, another \u escape, or a raw character.
_RUN_UNIT = re.compile(r"\\u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})|\\u([0-9a-fA-F]{4})|(.)", re.S)
_INDEX = re.compile(r"\[([0-9]+)\]\Z")
_SYNTAX = frozenset("${}[]")  # escaped, these are text: they never start, bound or index a reference
_SURROGATE = re.compile("[\ud800-\udfff]")


def read_run(written: str) -> tuple[int, str, int | None]:
    """Read the reference at the start of a lexed ``$`` token: (its length in ``written``, name, index).

    The lexer takes name characters written raw or as ``\\u`` escapes, then maybe ``[N]``;
    this decodes them and keeps the longest name they spell (``$a.`` is ``$a``; ``$v.1`` is
    ``$v``; an escaped ``$ { } [ ]`` ends it). The rest of the token is text. A length of 0
    means the ``$`` starts no name (``$\\u0035`` is the text ``$5``).
    """
    index_match = _INDEX.search(written)
    body_end = index_match.start() if index_match else len(written)
    if "\\" not in written:  # the usual case, nothing to decode
        run = _NAME_RUN.match(written, 1, body_end)
        if run is None:
            return 0, "", None
        if run.end() == body_end:
            return len(written), written[1:body_end], None if index_match is None else int(index_match.group(1))
        return run.end(), written[1 : run.end()], None
    chars: list[str] = []
    ends: list[int] = []
    for unit in _RUN_UNIT.finditer(written, 1, body_end):
        high, low, code, raw = unit.groups()
        if raw is not None:
            char = raw
        elif code is not None:
            char = chr(int(code, 16))
            if char in _SYNTAX:
                char = "\0"  # not a name character: the run ends here
        else:
            char = chr(0x10000 + ((int(high, 16) - 0xD800) << 10) + (int(low, 16) - 0xDC00))
        chars.append(char)
        ends.append(unit.end())
    decoded = "".join(chars)
    run = _NAME_RUN.match(decoded)
    if run is None:
        return 0, "", None
    if run.end() == len(decoded) and index_match is not None:
        return len(written), decoded, int(index_match.group(1))
    return ends[run.end() - 1], decoded[: run.end()], None


def decode_braced(raw: str) -> str:
    """The name written between ``${`` and ``}``: its JSON escapes decoded, as in any JSON string.

    ``raw`` is source text the lexer accepted (no ``"``, no raw ``}``, only valid escapes);
    an escaped ``}`` is text, part of the name. A control character or a lone surrogate is
    a ``ValueError``, as it is in a string.
    """
    if not raw:
        raise ValueError("empty name")
    name = raw
    if "\\" in raw or not raw.isprintable():
        name = json.loads(f'"{raw}"')  # strict: refuses a raw control character
        if _SURROGATE.search(name):
            raise ValueError("lone surrogate")
    return name


@dataclass(frozen=True, slots=True)
class Text:
    """Literal characters of a string, escapes already decoded."""

    value: str
    span: Span


@dataclass(frozen=True, slots=True)
class BadDollar:
    """A ``${`` with no name or no closing ``}``: an error where templates are read.

    (A ``$`` that starts no reference at all is literal text, a ``Text``.)
    """

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
