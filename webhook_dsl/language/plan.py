"""Render plans: immutable, reusable request builders, their serialization, and the careful renderer.

A plan is a flat sequence of literal text and ``Slot`` s per request part (URL,
header names and values, body; the parts are defined in ``layout``). Each slot
carries its name candidates sorted longest first, its encoding ``Context``, and
where it was written. Rendering is one pass over the plan and a join: no parsing,
and a substituted value is never scanned again. Its cost does not depend on how
many variables are defined.

Two renderers, kept because benchmarks/README.md measures what the second one
saves on every webhook call: ``WebhookPlan.render`` first runs a function
generated for the plan (``codegen``) that handles the common case, every
reference resolving to its full name. On the misses it was built for
(``codegen.Fallback``, or a value refused, ``ValueProblem``) the call goes to
``_CarefulRenderer``, the reference implementation, which also collects every
problem into one ``RenderError``; any other exception propagates, so a bug in
the generated code cannot hide as slowness. The property tests hold the two equal.

``load_plans`` checks every field of a plan file against what the compiler
makes, so a loaded plan renders exactly like a compiled one, on both renderers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..errors import Diagnostic, PlanFormatError, RenderError
from .codegen import Fallback, RenderFunction, generate_render_function
from .encode import (
    ValueProblem,
    check_header_name,
    check_header_value,
    check_host,
    check_port,
    check_whole_url,
    json_string,
    json_value,
    kind_of,
    percent_encode,
    to_text,
)
from .grammar import grammar_hash
from .layout import (
    MAX_BODY_BYTES,
    MAX_HEADERS_SIZE,
    MAX_URL_LENGTH,
    BodyPiece,
    HeaderPlan,
    JsonStringPlan,
    MemberNames,
    Piece,
    RenderedRequest,
    Slot,
    UrlGroup,
    candidate_lengths,
    defined_name,
    resolve,
    resolve_reference,
    top_level_names,
)
from .syntax import Context, Span, UrlPartKind, VarRef

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_HEADERS_SIZE",
    "MAX_URL_LENGTH",
    "PLAN_FORMAT",
    "PLAN_VERSION",
    "BodyPiece",
    "HeaderPlan",
    "JsonStringPlan",
    "MemberNames",
    "RenderedRequest",
    "Slot",
    "UrlGroup",
    "WebhookPlan",
    "defined_name",
    "dump_plans",
    "load_plans",
    "resolve_reference",
    "top_level_names",
]

PLAN_FORMAT = "webhook-dsl/plan"
PLAN_VERSION = 2  # 2: names descend into nested objects; body objects list their variable member names

#: What the generated renderer raises for the cases it leaves to the careful one; anything else propagates.
_GENERATED_MISSES = (Fallback, ValueProblem)


@dataclass(frozen=True, slots=True)
class WebhookPlan:
    """A compiled webhook: render it with a flat mapping of variables, as often as you like.

    >>> from webhook_dsl import compile_webhook
    >>> plan = compile_webhook({"url": "https://api.example.com/orders/$id", "method": "GET"})
    >>> plan.render({"id": "A/1 2"}).url
    'https://api.example.com/orders/A%2F1%202'
    """

    method: str
    url: tuple[str | UrlGroup, ...]
    headers: tuple[HeaderPlan, ...]
    body: tuple[BodyPiece, ...] | None
    response_directive: str | None = None
    secrets: tuple[str, ...] = ()
    source: str = "<config>"
    objects: tuple[MemberNames, ...] = ()  # body objects whose member names hold variables
    # Built on first render; not an __init__ field, so dataclasses.replace never hands it to another plan.
    _generated: list[RenderFunction] = field(default_factory=list, init=False, compare=False, repr=False)

    # -- rendering ------------------------------------------------------------

    def render(self, variables: Mapping[str, Any], *, lenient: bool = False) -> RenderedRequest:
        """Build the request; raise ``RenderError`` naming every variable at fault.

        ``variables`` maps the name written after ``$`` to its value. With
        ``lenient=True`` a reference no variable matches is kept as written
        instead of being an error (a bare JSON value still must resolve).
        """
        if not lenient:
            try:  # a try is free until something raises (CPython 3.11+)
                generated = self._generated[0]
            except IndexError:  # the first render: generate the function once
                generated = self.generated_renderer()
            try:
                return generated(variables)
            except _GENERATED_MISSES:
                pass  # a case the generated function leaves to the careful renderer
        return _CarefulRenderer(self, variables, lenient).render()

    def generated_renderer(self) -> RenderFunction:
        """The plan's generated render function (built on first use): the common case only.

        It returns the request or raises ``codegen.Fallback`` or ``ValueProblem``
        where ``render`` goes on to the careful renderer; for benchmarks and tests.
        """
        if not self._generated:
            self._generated[:] = [generate_render_function(self)]
        return self._generated[0]

    def render_careful(self, variables: Mapping[str, Any], *, lenient: bool = False) -> RenderedRequest:
        """The careful renderer alone, without the generated function (for tests and tools)."""
        return _CarefulRenderer(self, variables, lenient).render()

    # -- introspection ----------------------------------------------------------

    def slots(self) -> list[Slot]:
        """Every slot in request order: URL, headers, body."""
        out: list[Slot] = []

        def add(pieces: tuple[Any, ...]) -> None:
            for piece in pieces:
                if isinstance(piece, Slot):
                    out.append(piece)
                elif isinstance(piece, (UrlGroup, JsonStringPlan)):
                    add(piece.pieces)

        add(self.url)
        for header in self.headers:
            add(header.name)
            add(header.value)
        add(self.body or ())
        return out

    @property
    def references(self) -> tuple[str, ...]:
        """The references as written, in order, without repeats: what a render may read."""
        return tuple(dict.fromkeys(slot.written for slot in self.slots()))

    # -- serialization ----------------------------------------------------------

    def to_data(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "method": self.method,
            "url": [_piece_data(p) for p in self.url],
            "headers": [[[_piece_data(p) for p in h.name], [_piece_data(p) for p in h.value]] for h in self.headers],
            "body": None if self.body is None else [_piece_data(p) for p in self.body],
            "responseDirective": self.response_directive,
            "secrets": list(self.secrets),
            "objects": [
                {"names": list(o.literal), "at": [list(a) for a in o.at], "keys": list(o.keys)} for o in self.objects
            ],
        }

    @classmethod
    def from_data(cls, data: Any) -> WebhookPlan:
        """The plan ``to_data`` wrote; ``PlanFormatError`` for anything the compiler would not have made."""
        return _PlanReader().plan(data, "plan")

    def to_json(self) -> str:
        """Deterministic JSON for this one plan, stamped with format, version and grammar."""
        return dump_plans([self])

    @classmethod
    def from_json(cls, text: str | bytes) -> WebhookPlan:
        plans = load_plans(text)
        if len(plans) != 1:
            raise PlanFormatError(f"expected one plan, found {len(plans)}")
        return plans[0]


def _slot_data(slot: Slot) -> dict[str, Any]:
    return {
        "slot": list(slot.candidates),  # names, not lengths: a plan file stays readable
        "index": slot.index,
        "written": slot.written,
        "context": slot.context.value,
        "field": slot.field,
        "at": [slot.line, slot.column],
    }


def _piece_data(piece: Any) -> Any:
    if isinstance(piece, str):
        return piece
    if isinstance(piece, Slot):
        return _slot_data(piece)
    if isinstance(piece, UrlGroup):
        return {"group": piece.kind.value, "pieces": [_piece_data(p) for p in piece.pieces]}
    if isinstance(piece, JsonStringPlan):
        return {"string": [_piece_data(p) for p in piece.pieces]}
    raise TypeError(f"not a plan piece: {type(piece).__name__}")


def dump_plans(plans: list[WebhookPlan] | tuple[WebhookPlan, ...]) -> str:
    """Serialize plans as deterministic JSON: same plans, same bytes. No pickle."""
    document = {
        "format": PLAN_FORMAT,
        "version": PLAN_VERSION,
        "grammar": grammar_hash(),
        "plans": [plan.to_data() for plan in plans],
    }
    return json.dumps(document, ensure_ascii=False, sort_keys=True, indent=1) + "\n"


def load_plans(text: str | bytes) -> list[WebhookPlan]:
    """Load plans written by ``dump_plans``; refuse anything foreign, damaged or stale.

    Every field is checked against what the compiler makes (types, ranges, contexts,
    positions, candidates, the URL and body shapes), so that a loaded plan renders
    exactly like a compiled one; anything else is a ``PlanFormatError`` naming the field.
    """
    try:
        document = json.loads(text, object_pairs_hook=_unique_members, parse_constant=_no_constant)
    except ValueError as error:
        raise PlanFormatError(f"not a compiled plan file (not JSON: {error})") from None
    if not isinstance(document, dict) or document.get("format") != PLAN_FORMAT:
        raise PlanFormatError(f'not a compiled plan file (no "format": "{PLAN_FORMAT}")')
    if document.get("version") != PLAN_VERSION:
        raise PlanFormatError(
            f"plan format version {document.get('version')!r} is not {PLAN_VERSION}; recompile the configs"
        )
    if document.get("grammar") != grammar_hash():
        raise PlanFormatError("plans were compiled by another version of the grammar; recompile the configs")
    reader = _PlanReader()
    fields = reader.fields(document, "the file", ("format", "grammar", "plans", "version"))
    items = reader.list(fields["plans"], "plans")
    return [reader.plan(item, f"plans[{i}]") for i, item in enumerate(items)]


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) != len(pairs):
        repeated = next(name for i, (name, _) in enumerate(pairs) if any(name == n for n, _ in pairs[:i]))
        raise ValueError(f"the member name {repeated!r} appears twice in one object")
    return members


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# The methods a template may use (``template.METHODS``, pinned equal by tests/test_plan.py; not imported
# from there, so loading plans never loads the config validator).
_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")
_SURROGATE = re.compile("[\ud800-\udfff]")
_GROUP_CONTEXTS = {
    UrlPartKind.WHOLE: Context.URL_WHOLE,
    UrlPartKind.HOST: Context.URL_HOST,
    UrlPartKind.PORT: Context.URL_PORT,
    UrlPartKind.PATH_SEGMENT: Context.URL_PATH,
    UrlPartKind.QUERY: Context.URL_QUERY,
    UrlPartKind.FRAGMENT: Context.URL_FRAGMENT,
}
# What stands for a group when the literal rest of a URL is checked: text each component accepts whole.
_GROUP_STAND_INS = {
    UrlPartKind.HOST: "a",
    UrlPartKind.PORT: "1",
    UrlPartKind.PATH_SEGMENT: "a",
    UrlPartKind.QUERY: "a",
    UrlPartKind.FRAGMENT: "a",
}
_BODY_FIELD = re.compile(r"body(?:[.\[].*)?\Z", re.S)


class _PlanReader:
    """Reads plans as ``dump_plans`` writes them, checking each field against what the compiler makes.

    Each check is one the renderers rely on: a negative list index would make the
    generated function read from the end where the careful one refuses; a slot in
    the wrong context would skip its encoding. A message names the field by its
    path in the file (``plans[0].url[1].pieces[0].index``).
    """

    def fail(self, path: str, message: str) -> PlanFormatError:
        return PlanFormatError(f"damaged plan file: {path}: {message}")

    # -- JSON shapes ----------------------------------------------------------------

    def fields(self, data: Any, path: str, keys: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.fail(path, f"expected an object with {', '.join(keys)}, found {_kind(data)}")
        missing = [key for key in keys if key not in data]
        if missing:
            raise self.fail(path, f"missing {', '.join(missing)}")
        unknown = sorted(key for key in data if key not in keys)
        if unknown:
            raise self.fail(path, f"unknown field {', '.join(map(repr, unknown))}")
        return data

    def list(self, data: Any, path: str) -> list[Any]:
        if not isinstance(data, list):
            raise self.fail(path, f"expected a list, found {_kind(data)}")
        return data

    def text(self, data: Any, path: str, *, empty: bool = True) -> str:
        if not isinstance(data, str):
            raise self.fail(path, f"expected a string, found {_kind(data)}")
        if not empty and not data:
            raise self.fail(path, "expected text, found an empty string")
        if _SURROGATE.search(data):
            raise self.fail(path, "a lone surrogate, which is not Unicode text")
        return data

    def integer(self, data: Any, path: str, minimum: int, what: str) -> int:
        if type(data) is not int:
            raise self.fail(path, f"expected {what}, found {_kind(data)}")
        if data < minimum:
            raise self.fail(path, f"{data} is not {what}")
        return data

    # -- a plan -----------------------------------------------------------------------

    def plan(self, data: Any, path: str) -> WebhookPlan:
        fields = self.fields(
            data, path, ("body", "headers", "method", "objects", "responseDirective", "secrets", "source", "url")
        )
        method = self.text(fields["method"], f"{path}.method")
        if method not in _METHODS:
            raise self.fail(f"{path}.method", f"{method!r} is not one of {', '.join(_METHODS)}")
        body = None if fields["body"] is None else self.body(fields["body"], f"{path}.body")
        if body is not None and method == "GET":
            raise self.fail(f"{path}.body", "a GET request carries no body")
        directive = fields["responseDirective"]
        secrets = self.list(fields["secrets"], f"{path}.secrets")
        return WebhookPlan(
            method=method,
            url=self.url(fields["url"], f"{path}.url"),
            headers=tuple(
                self.header(item, f"{path}.headers[{i}]", i)
                for i, item in enumerate(self.list(fields["headers"], f"{path}.headers"))
            ),
            body=body,
            response_directive=None if directive is None else self.text(directive, f"{path}.responseDirective"),
            secrets=tuple(self.text(item, f"{path}.secrets[{i}]") for i, item in enumerate(secrets)),
            source=self.text(fields["source"], f"{path}.source"),
            objects=self.objects(fields["objects"], f"{path}.objects", body),
        )

    def slot(self, data: Any, path: str, contexts: tuple[Context, ...], field: str | None) -> Slot:
        """A slot whose context is one of ``contexts`` and whose field is ``field`` (or, if None, in the body)."""
        fields = self.fields(data, path, ("at", "context", "field", "index", "slot", "written"))
        listed = self.list(fields["slot"], f"{path}.slot")
        candidates = [self.text(c, f"{path}.slot[{i}]", empty=False) for i, c in enumerate(listed)]
        if not candidates:
            raise self.fail(f"{path}.slot", "no candidate names")
        index = fields["index"]
        if index is not None:
            self.integer(index, f"{path}.index", 0, "a list index (a whole number, 0 or more)")
        try:
            context = Context(fields["context"])
        except (ValueError, TypeError):
            raise self.fail(f"{path}.context", f"unknown context {fields['context']!r}") from None
        if context not in contexts:
            allowed = " or ".join(c.value for c in contexts)
            raise self.fail(f"{path}.context", f"a {context.value} slot cannot stand here (only {allowed})")
        where = self.text(fields["field"], f"{path}.field")
        if field is None and not _BODY_FIELD.match(where):
            raise self.fail(f"{path}.field", f"{where!r} is not a field of the body")
        if field is not None and where != field:
            raise self.fail(f"{path}.field", f"{where!r} is not {field!r}")
        at = self.list(fields["at"], f"{path}.at")
        if len(at) != 2:
            raise self.fail(f"{path}.at", "expected [line, column]")
        line = self.integer(at[0], f"{path}.at[0]", 1, "a line number (1 or more)")
        column = self.integer(at[1], f"{path}.at[1]", 1, "a column number (1 or more)")
        written = self.text(fields["written"], f"{path}.written")
        name = candidates[0]
        if not _spells(written, name, index):
            raise self.fail(f"{path}.written", f"{written!r} does not write the reference to {name!r}")
        lengths = candidate_lengths(name, written.startswith("${") or context is Context.JSON_VALUE)
        if candidates != [name[:length] for length in lengths]:
            raise self.fail(f"{path}.slot", "the candidate names are not the prefixes of the first, longest first")
        return Slot(name, lengths, index, written, context, where, line, column)

    def pieces(
        self, data: Any, path: str, contexts: tuple[Context, ...], field: str | None, *, slots: int = 0
    ) -> tuple[Piece, ...]:
        """Literal text and slots, the text merged as the compiler merges it; at least ``slots`` slots."""
        out: list[Piece] = []
        for i, item in enumerate(self.list(data, path)):
            if isinstance(item, str):
                if out and isinstance(out[-1], str):
                    raise self.fail(f"{path}[{i}]", "literal text the compiler would have merged with the text before")
                out.append(self.text(item, f"{path}[{i}]", empty=False))
            else:
                out.append(self.slot(item, f"{path}[{i}]", contexts, field))
        if sum(isinstance(piece, Slot) for piece in out) < slots:
            raise self.fail(path, "no variable: the compiler writes this as literal text")
        return tuple(out)

    def url(self, data: Any, path: str) -> tuple[str | UrlGroup, ...]:
        out: list[str | UrlGroup] = []
        for i, item in enumerate(self.list(data, path)):
            where = f"{path}[{i}]"
            if isinstance(item, str):
                if out and isinstance(out[-1], str):
                    raise self.fail(where, "literal text the compiler would have merged with the text before")
                out.append(self.text(item, where, empty=False))
                continue
            fields = self.fields(item, where, ("group", "pieces"))
            try:
                kind = UrlPartKind(fields["group"])
            except (ValueError, TypeError):
                kind = UrlPartKind.LITERAL
            if kind is UrlPartKind.LITERAL:
                raise self.fail(f"{where}.group", f"unknown URL component {fields['group']!r}")
            pieces = self.pieces(fields["pieces"], f"{where}.pieces", (_GROUP_CONTEXTS[kind],), "url", slots=1)
            if kind in (UrlPartKind.WHOLE, UrlPartKind.QUERY, UrlPartKind.FRAGMENT) and len(pieces) != 1:
                raise self.fail(f"{where}.pieces", f"a {kind.value} component is one variable alone")
            out.append(UrlGroup(kind, pieces))
        whole = [part for part in out if isinstance(part, UrlGroup) and part.kind is UrlPartKind.WHOLE]
        if whole and len(out) != 1:
            raise self.fail(path, "a URL given whole by a variable has nothing else")
        if not whole:
            shape = "".join(part if isinstance(part, str) else _GROUP_STAND_INS[part.kind] for part in out)
            try:
                check_whole_url(shape)
            except ValueProblem as problem:
                raise self.fail(path, f"the URL, its variables aside, {problem}") from None
        return tuple(out)

    def header(self, data: Any, path: str, position: int) -> HeaderPlan:
        pair = self.list(data, path)
        if len(pair) != 2:
            raise self.fail(path, "expected [name pieces, value pieces]")
        field = f"headers[{position}]"
        name = self.pieces(pair[0], f"{path}[0]", (Context.HEADER_NAME,), f"{field}.key")
        value = self.pieces(pair[1], f"{path}[1]", (Context.HEADER_VALUE,), f"{field}.value")
        if not name:
            raise self.fail(f"{path}[0]", "a header has a name")
        if all(isinstance(piece, str) for piece in name):
            literal = "".join(map(str, name))
            try:
                check_header_name(literal)
            except ValueProblem as problem:
                raise self.fail(f"{path}[0]", f"header name {literal!r} refused ({problem})") from None
        for i, piece in enumerate(value):
            try:
                if isinstance(piece, str):
                    check_header_value(piece)
            except ValueProblem as problem:
                raise self.fail(f"{path}[1][{i}]", f"header value refused ({problem})") from None
        return HeaderPlan(name, value)

    def body(self, data: Any, path: str) -> tuple[BodyPiece, ...]:
        out: list[BodyPiece] = []
        skeleton: list[str] = []  # the body with '""' for each string and 'null' for each bare value
        for i, item in enumerate(self.list(data, path)):
            where = f"{path}[{i}]"
            if isinstance(item, str):
                if out and isinstance(out[-1], str):
                    raise self.fail(where, "literal text the compiler would have merged with the text before")
                out.append(self.text(item, where, empty=False))
                skeleton.append(item)
            elif isinstance(item, dict) and "string" in item:
                fields = self.fields(item, where, ("string",))
                pieces = self.pieces(fields["string"], f"{where}.string", (Context.JSON_STRING,), None, slots=1)
                out.append(JsonStringPlan(pieces))
                skeleton.append('""')
            else:
                out.append(self.slot(item, where, (Context.JSON_VALUE,), None))
                skeleton.append("null")
        if not out:
            raise self.fail(path, "an empty body (no body is null)")
        try:
            orjson.loads("".join(skeleton))  # strict: no NaN, no lone surrogate escape, no trailing text
        except orjson.JSONDecodeError:
            raise self.fail(path, "the body, its variables aside, is not JSON") from None
        return tuple(out)

    def objects(self, data: Any, path: str, body: tuple[BodyPiece, ...] | None) -> tuple[MemberNames, ...]:
        out: list[MemberNames] = []
        taken: set[int] = set()
        for i, item in enumerate(self.list(data, path)):
            where = f"{path}[{i}]"
            fields = self.fields(item, where, ("at", "keys", "names"))
            listed = self.list(fields["names"], f"{where}.names")
            names = tuple(self.text(n, f"{where}.names[{j}]") for j, n in enumerate(listed))
            at = []
            for j, pair in enumerate(self.list(fields["at"], f"{where}.at")):
                if not isinstance(pair, list) or len(pair) != 2:
                    raise self.fail(f"{where}.at[{j}]", "expected [line, column]")
                at.append((
                    self.integer(pair[0], f"{where}.at[{j}][0]", 1, "a line number (1 or more)"),
                    self.integer(pair[1], f"{where}.at[{j}][1]", 1, "a column number (1 or more)"),
                ))
            if len(at) != len(names):
                raise self.fail(f"{where}.at", "one position per literal name")
            keys: list[int] = []
            for j, key in enumerate(self.list(fields["keys"], f"{where}.keys")):
                self.integer(key, f"{where}.keys[{j}]", 0, "a body position (0 or more)")
                if body is None or key >= len(body) or not isinstance(body[key], JsonStringPlan):
                    raise self.fail(f"{where}.keys[{j}]", f"body position {key} is not a string with variables")
                if key in taken or (keys and key <= keys[-1]):
                    raise self.fail(f"{where}.keys[{j}]", f"body position {key} is out of order or listed twice")
                keys.append(key)
            if not keys:
                raise self.fail(f"{where}.keys", "no member name with variables")
            if out and keys[0] <= out[-1].keys[0]:
                raise self.fail(where, "objects out of source order")
            taken.update(keys)
            out.append(MemberNames(names, tuple(at), tuple(keys)))
        return tuple(out)


def _spells(written: str, name: str, index: int | None) -> bool:
    """Whether ``written`` is the source text of a reference to ``name`` (and ``index``)."""
    if not written.startswith("$") or (written.startswith("${") and not written.endswith("}")):
        return False
    try:
        ref = VarRef.from_written(written, _NOWHERE)
    except ValueError:
        return False
    return ref.name == name and ref.index == index


_NOWHERE = Span(0, 0, 0, 0)


def _kind(data: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(data), "a number"
    )


# --- the reference renderer ---------------------------------------------------------

_PERCENT_CONTEXTS = (Context.URL_PATH, Context.URL_QUERY, Context.URL_FRAGMENT)


class _CarefulRenderer:
    """Renders a plan step by step, collecting every problem instead of stopping at the first."""

    def __init__(self, plan: WebhookPlan, variables: Mapping[str, Any], lenient: bool) -> None:
        if not isinstance(variables, Mapping):
            raise TypeError(f"variables must be a mapping of name to value, not {type(variables).__name__}")
        self.plan = plan
        self.variables = variables
        self.lenient = lenient
        self.problems: list[Diagnostic] = []

    def problem(self, slots: list[Slot] | tuple[Slot, ...], message: str) -> None:
        first = slots[0]
        self.problems.append(
            Diagnostic(
                message=message,
                source=self.plan.source,
                line=first.line,
                column=first.column,
                width=len(first.written),
                field=first.field,
                variable=first.written,
            )
        )

    def lookup(self, slot: Slot) -> tuple[Any, str] | None:
        """The value a slot refers to and the text that follows it, or None (problem recorded)."""
        found = resolve(slot.candidates, self.variables)
        if found is None:
            if not self.lenient or slot.context is Context.JSON_VALUE:
                self.problem([slot], f"{slot.written} is not defined (no variable named {_names(slot.candidates)})")
            return None
        name, _, value = found
        if slot.index is not None and len(name) == slot.lengths[0]:
            if type(value) not in (list, tuple):
                self.problem([slot], f"{slot.written} indexes {name}, which is {kind_of(value)}, not a list")
                return None
            if not 0 <= slot.index < len(value):
                self.problem([slot], f"{slot.written} is past the end of {name} ({len(value)} item(s))")
                return None
            value = value[slot.index]
        return value, slot.remainder(name)

    def text(self, slot: Slot) -> str | None:
        """The slot's text, encoded for its context (group checks come later)."""
        found = self.lookup(slot)
        if found is None:
            if not self.lenient or self.problems_for(slot):
                return None
            found = (slot.text, "")  # lenient: the reference as written, encoded like any text here
        value, rest = found
        try:
            text = to_text(value) + rest
            if slot.context in _PERCENT_CONTEXTS:
                return percent_encode(text)
            if slot.context is Context.URL_WHOLE:
                return check_whole_url(text)
            if slot.context is Context.HEADER_VALUE:
                return check_header_value(text)
            if slot.context is Context.JSON_STRING:
                json_string(text)  # refuses lone surrogates here, so the slot is named
            return text
        except ValueProblem as problem:
            self.problem([slot], f"{slot.written} {problem}")
            return None

    def problems_for(self, slot: Slot) -> bool:
        return any(
            p.variable == slot.written and p.line == slot.line and p.column == slot.column for p in self.problems
        )

    def join(self, pieces: tuple[Piece, ...]) -> str | None:
        out = []
        ok = True
        for piece in pieces:
            if isinstance(piece, str):
                out.append(piece)
                continue
            text = self.text(piece)
            if text is None:
                ok = False
            else:
                out.append(text)
        return "".join(out) if ok else None

    def url(self) -> str:
        out = []
        for part in self.plan.url:
            if isinstance(part, str):
                out.append(part)
                continue
            text = self.join(part.pieces)
            if text is None:
                continue
            slots = [p for p in part.pieces if isinstance(p, Slot)]
            try:
                if part.kind is UrlPartKind.HOST:
                    check_host(text)
                elif part.kind is UrlPartKind.PORT:
                    check_port(text)
                elif part.kind is UrlPartKind.PATH_SEGMENT and text in (".", ".."):
                    raise ValueProblem(
                        f"makes the path segment {text!r}, which would move up the path (RFC 3986 dot-segment)"
                    )
            except ValueProblem as problem:
                self.problem(slots, f"{_written(slots)} {problem}")
            out.append(text)
        return "".join(out)

    def headers(self) -> list[tuple[str, str]]:
        out = []
        for header in self.plan.headers:
            name = self.join(header.name)
            value = self.join(header.value)
            if name is not None and any(isinstance(p, Slot) for p in header.name):
                try:
                    check_header_name(name)
                except ValueProblem as problem:
                    slots = [p for p in header.name if isinstance(p, Slot)]
                    self.problem(slots, f"{_written(slots)} {problem}")
            if name is not None and value is not None:
                out.append((name, value))
        return out

    def body(self) -> bytes | None:
        if self.plan.body is None:
            return None
        out: list[bytes] = []
        names: dict[int, str] = {}  # rendered member names with variables, by body position
        for position, piece in enumerate(self.plan.body):
            if isinstance(piece, str):
                out.append(piece.encode("utf-8"))
            elif isinstance(piece, JsonStringPlan):
                text = self.join(piece.pieces)
                if text is not None:
                    out.append(json_string(text))
                    names[position] = text
            else:
                found = self.lookup(piece)
                if found is None:
                    continue
                value, rest = found
                if rest:
                    self.problem([piece], f"{piece.written}: a bare value must name its variable exactly")
                    continue
                try:
                    out.append(json_value(value))
                except ValueProblem as problem:
                    self.problem([piece], f"{piece.written} {problem}")
        for obj in self.plan.objects:
            self.unique_names(obj, names)
        return b"".join(out)

    def unique_names(self, obj: MemberNames, names: dict[int, str]) -> None:
        """A member name made from variables must not repeat another name of its object."""
        body = self.plan.body or ()
        seen = {
            name: f"the literal key at line {line}, column {column}"
            for name, (line, column) in zip(obj.literal, obj.at, strict=True)
        }
        for position in obj.keys:
            text = names.get(position)
            piece = body[position]
            if text is None or not isinstance(piece, JsonStringPlan):
                continue  # not rendered: its problem is already recorded
            slots = [p for p in piece.pieces if isinstance(p, Slot)]
            other = seen.get(text)
            if other is not None:
                self.problem(
                    slots,
                    f"{_written(slots)} makes a member name this object already has ({other}); "
                    "a repeated name would let one member override the other",
                )
            else:
                seen[text] = f"the key made by {_written(slots)} at line {slots[0].line}, column {slots[0].column}"

    def render(self) -> RenderedRequest:
        request = RenderedRequest(self.plan.method, self.url(), self.headers(), self.body())
        if not self.problems:
            self.check_sizes(request)
        if self.problems:
            raise RenderError(self.problems)
        return request

    def check_sizes(self, request: RenderedRequest) -> None:
        """The limits of section 7 of the spec: a request too large to be sensible is not built."""
        slots = self.plan.slots()
        if len(request.url) > MAX_URL_LENGTH:
            url_slots = [s for s in slots if s.field == "url"] or slots
            self.problem(
                url_slots,
                f"the rendered URL is {len(request.url)} characters, more than the "
                f"{MAX_URL_LENGTH} servers reliably accept",
            )
        size = sum(len(name) + len(value) for name, value in request.headers)
        if size > MAX_HEADERS_SIZE:
            header_slots = [s for s in slots if s.field.startswith("headers")] or slots
            self.problem(header_slots, f"the rendered headers are {size} characters, more than {MAX_HEADERS_SIZE}")
        if request.body is not None and len(request.body) > MAX_BODY_BYTES:
            body_slots = [s for s in slots if s.field.startswith("body")] or slots
            self.problem(body_slots, f"the rendered body is {len(request.body)} bytes, more than {MAX_BODY_BYTES}")


def _names(candidates: tuple[str, ...]) -> str:
    if len(candidates) == 1:
        return candidates[0]
    return f"{candidates[0]} or any shorter prefix of it"


def _written(slots: list[Slot]) -> str:
    return ", ".join(dict.fromkeys(s.written for s in slots)) or "the template"
