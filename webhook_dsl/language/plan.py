"""Render plans: immutable, reusable request builders, and the requests they render.

A plan is a flat sequence of literal text and ``Slot`` s per request part (URL,
header names and values, body). Each slot carries its name candidates sorted
longest first, its encoding ``Context``, and where it was written. Rendering is
one pass over the plan and a join: no parsing, and a substituted value is never
scanned again. Its cost does not depend on how many variables are defined.

``WebhookPlan.render`` first runs a generated Python function (``codegen``) that
handles the common case, every reference resolving to its full name. Anything
else (a shorter name, a missing variable, a value to refuse) falls through to
``_CarefulRenderer``, the reference implementation, which also collects every
problem into one ``RenderError``.

A name resolves to a flat key of the variables, else, when dotted, by descending
into nested objects (``customer.email`` in ``{"customer": {"email": ...}}``); the
descent runs only after the flat lookup missed, so flat names cost nothing more.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..errors import Diagnostic, PlanFormatError, RenderError
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
from .syntax import Context, UrlPartKind

__all__ = [
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

#: Largest rendered URL, in characters (RFC 9110 section 4.1 recommends supporting 8,000).
MAX_URL_LENGTH = 8000
#: Largest total of rendered header names and values, in characters.
MAX_HEADERS_SIZE = 32 * 1024
#: Largest rendered body, in bytes.
MAX_BODY_BYTES = 1024 * 1024

PLAN_FORMAT = "webhook-dsl/plan"
PLAN_VERSION = 2  # 2: names descend into nested objects; body objects list their variable member names


class RenderedRequest(NamedTuple):
    """The request a plan renders: ready to send, nothing left to encode."""

    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes | None

    def __repr__(self) -> str:
        """Shapes only: the URL, header values and body may hold secrets, and a repr ends up in tracebacks
        and logs (``to_dict`` and ``masking.shown_request`` give the contents)."""
        names = [name for name, _ in self.headers]
        body = "None" if self.body is None else f"<{len(self.body)} bytes>"
        url = f"<{len(self.url)} characters>"
        return f"RenderedRequest(method={self.method!r}, url={url}, headers={names}, body={body})"

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape ``webhook-dsl render`` prints."""
        return {
            "method": self.method,
            "url": self.url,
            "headers": [list(pair) for pair in self.headers],
            "body": None if self.body is None else self.body.decode("utf-8"),
        }


@dataclass(frozen=True, slots=True)
class Slot:
    """One ``$reference`` in the plan: which names to try, and how to encode what is found."""

    name: str  # the run of name characters after `$` (or inside `${...}`)
    lengths: tuple[int, ...]  # candidate prefix lengths, longest first; one for ${name} and bare values
    index: int | None
    written: str
    context: Context
    field: str
    line: int
    column: int

    @property
    def candidates(self) -> tuple[str, ...]:
        """The names this reference may mean, longest first (kept as lengths: a third of the memory)."""
        return tuple(self.name[:length] for length in self.lengths)

    @property
    def full_name(self) -> str:
        """The longest candidate, which the fast path looks up."""
        return self.name[: self.lengths[0]]

    def remainder(self, matched: str) -> str:
        """Name characters after a shorter match, kept as text (``$session_x`` -> value + ``_x``)."""
        if len(matched) == self.lengths[0]:
            return ""
        return self.text[1 + len(matched) :]

    @property
    def text(self) -> str:
        """The reference as text, its escapes decoded: what lenient mode leaves when nothing matches."""
        index = ""
        if self.index is not None:  # as written: `$a[01]` keeps its `[01]` after a shorter match
            written = _WRITTEN_INDEX.search(self.written)
            index = written.group() if written else f"[{self.index}]"
        if self.written.startswith("${"):
            return "${" + self.name + index + "}"
        return "$" + self.name + index


Piece = str | Slot
_WRITTEN_INDEX = re.compile(r"\[[0-9]+\](?=\}?\Z)")


_MISSING: Any = object()


def _descend(variables: Mapping[str, Any], name: str) -> tuple[str, Any]:
    """Where a dotted name leads through nested objects: (the flat key it starts from, the value).

    The longest leading part that is a flat key holding an object is tried first, then
    shorter ones; the rest of the name is followed one ``.`` segment at a time, through
    JSON objects (``dict``) only. ``("", _MISSING)`` when no way leads to a value. Only
    called after the flat lookup of ``name`` missed.
    """
    cut = name.rfind(".")
    while cut > 0:
        value = variables.get(name[:cut], _MISSING)
        if value.__class__ is dict:
            for segment in name[cut + 1 :].split("."):
                value = value.get(segment, _MISSING) if value.__class__ is dict else _MISSING
                if value is _MISSING:
                    break
            else:
                return name[:cut], value
        cut = name.rfind(".", 0, cut)
    return "", _MISSING


def _resolve(candidates: Sequence[str], variables: Mapping[str, Any]) -> tuple[str, str, Any] | None:
    """(candidate, flat key read, value) for the longest candidate that resolves, or None."""
    get = variables.get
    for name in candidates:
        value = get(name, _MISSING)
        if value is not _MISSING:
            return name, name, value
        if "." in name:
            root, value = _descend(variables, name)
            if value is not _MISSING:
                return name, root, value
    return None


def resolve_reference(candidates: Sequence[str], variables: Mapping[str, Any]) -> tuple[str, Any] | None:
    """What a reference reads: its longest candidate that resolves, and the value found there.

    A candidate resolves when it is a key of ``variables``, or when it is dotted, a
    leading part of it is a key holding an object and the rest leads into it.

    >>> resolve_reference(("customer.email", "customer"), {"customer": {"email": "a@b.example"}})
    ('customer.email', 'a@b.example')
    """
    found = _resolve(candidates, variables)
    return None if found is None else (found[0], found[2])


def defined_name(candidates: Sequence[str], variables: Mapping[str, Any]) -> str | None:
    """The key of ``variables`` a reference reads: its longest candidate that resolves, or for
    one reached by descent, the key the descent starts from (so ``variables[name]`` exists)."""
    found = _resolve(candidates, variables)
    return None if found is None else found[1]


def top_level_names(candidates: Sequence[str]) -> tuple[str, ...]:
    """Every key of the variables that could supply a reference: its candidates and, since a
    dotted name may descend, each of their leading dotted parts; longest first, no repeats."""
    names = dict.fromkeys(candidates)
    for name in candidates:
        cut = name.rfind(".")
        while cut > 0:
            names[name[:cut]] = None
            cut = name.rfind(".", 0, cut)
    return tuple(sorted(names, key=len, reverse=True))


@dataclass(frozen=True, slots=True)
class UrlGroup:
    """A URL component holding variables, checked as a whole after rendering (host, segment...)."""

    kind: UrlPartKind
    pieces: tuple[Piece, ...]


@dataclass(frozen=True, slots=True)
class HeaderPlan:
    name: tuple[Piece, ...]
    value: tuple[Piece, ...]


@dataclass(frozen=True, slots=True)
class JsonStringPlan:
    """A JSON string (value or key) with variables: rendered whole, then JSON-escaped once."""

    pieces: tuple[Piece, ...]


BodyPiece = str | JsonStringPlan | Slot


@dataclass(frozen=True, slots=True)
class MemberNames:
    """A body object with member names that hold variables: after rendering, no name may repeat.

    RFC 8259 section 4 leaves repeated names to the receiver, and most keep the last: a
    value could otherwise replace a literal member (``{"admin": false, "$k": ...}``).
    """

    literal: tuple[str, ...]  # the object's literal member names
    at: tuple[tuple[int, int], ...]  # line and column of each literal name
    keys: tuple[int, ...]  # positions in ``WebhookPlan.body`` of its names with variables (JsonStringPlans)


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
    _fast: list[Callable[[Mapping[str, Any]], RenderedRequest]] = field(default_factory=list, compare=False, repr=False)

    # -- rendering ------------------------------------------------------------

    def render(self, variables: Mapping[str, Any], *, lenient: bool = False) -> RenderedRequest:
        """Build the request; raise ``RenderError`` naming every variable at fault.

        ``variables`` maps the name written after ``$`` to its value. With
        ``lenient=True`` a reference no variable matches is kept as written
        instead of being an error (a bare JSON value still must resolve).
        """
        if not lenient:
            try:  # free when nothing raises (CPython 3.11+): the common case costs a lookup and a call
                return self._fast[0](variables)
            except Exception:
                pass
            if not self._fast:  # the IndexError of the first render: generate the function, try again
                return self._render_first(variables)
        return _CarefulRenderer(self, variables, lenient).render()

    def _render_first(self, variables: Mapping[str, Any]) -> RenderedRequest:
        fast = self._compile_fast()
        try:
            return fast(variables)
        except Exception:
            pass
        return _CarefulRenderer(self, variables, False).render()

    def _compile_fast(self) -> Callable[[Mapping[str, Any]], RenderedRequest]:
        from .codegen import generate_render_function

        function = generate_render_function(self)
        self._fast[:] = [function]
        return function

    def render_careful(self, variables: Mapping[str, Any], *, lenient: bool = False) -> RenderedRequest:
        """The reference renderer alone, without the generated fast path (for tests and tools)."""
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
    def from_data(cls, data: Mapping[str, Any]) -> WebhookPlan:
        body = None if data["body"] is None else tuple(_piece_from(p) for p in data["body"])
        objects = tuple(
            MemberNames(
                tuple(str(n) for n in o["names"]),
                tuple((int(line), int(column)) for line, column in o["at"]),
                tuple(int(k) for k in o["keys"]),
            )
            for o in data["objects"]
        )
        for o in objects:
            if len(o.at) != len(o.literal) or not all(
                body is not None and 0 <= k < len(body) and isinstance(body[k], JsonStringPlan) for k in o.keys
            ):
                raise ValueError("object member names that are not strings of the body")
        return cls(
            method=str(data["method"]),
            url=tuple(_piece_from(p) for p in data["url"]),
            headers=tuple(
                HeaderPlan(tuple(_piece_from(p) for p in n), tuple(_piece_from(p) for p in v))
                for n, v in data["headers"]
            ),
            body=body,
            response_directive=data["responseDirective"],
            secrets=tuple(data["secrets"]),
            source=str(data["source"]),
            objects=objects,
        )

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


def _piece_from(data: Any) -> Any:
    if isinstance(data, str):
        return data
    if "slot" in data:
        line, column = data["at"]
        index = data["index"]
        return Slot(
            **_name_and_lengths([str(c) for c in data["slot"]]),
            index=None if index is None else int(index),
            written=str(data["written"]),
            context=Context(data["context"]),
            field=str(data["field"]),
            line=int(line),
            column=int(column),
        )
    if "group" in data:
        return UrlGroup(UrlPartKind(data["group"]), tuple(_piece_from(p) for p in data["pieces"]))
    if "string" in data:
        return JsonStringPlan(tuple(_piece_from(p) for p in data["string"]))
    raise ValueError("unknown piece")


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
    """Load plans written by ``dump_plans``; refuse anything foreign, damaged or stale."""
    try:
        document = json.loads(text)
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
    try:
        return [WebhookPlan.from_data(item) for item in document["plans"]]
    except (KeyError, TypeError, ValueError) as error:
        raise PlanFormatError(f"damaged plan file ({type(error).__name__}: {error})") from None


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
        found = _resolve(slot.candidates, self.variables)
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


def _name_and_lengths(candidates: list[str]) -> dict[str, Any]:
    """Slot fields from a candidate list, checking that each candidate is a prefix of the first."""
    if not candidates or any(not candidates[0].startswith(c) for c in candidates):
        raise ValueError("slot candidates must be prefixes of the first")
    return {"name": candidates[0], "lengths": tuple(len(c) for c in candidates)}


def _names(candidates: tuple[str, ...]) -> str:
    if len(candidates) == 1:
        return candidates[0]
    return f"{candidates[0]} or any shorter prefix of it"


def _written(slots: list[Slot]) -> str:
    return ", ".join(dict.fromkeys(s.written for s in slots)) or "the template"
