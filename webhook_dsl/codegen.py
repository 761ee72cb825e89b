"""Turns a plan into a Python function that renders the common case at hand-written speed.

The generated function assumes every reference resolves to its full name and
every value is acceptable; on anything else it raises, and ``WebhookPlan.render``
hands the call to the careful renderer, which gives the exact result or error.
So the generated code only has to be *right when it returns*, which the
property tests check against the careful renderer. The source is built from
``repr`` of plan data only: names and literals can never become code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from .ast import Context, UrlPartKind
from .encode import (
    check_header_name,
    check_header_value,
    check_host,
    check_port,
    check_whole_url,
    json_value,
    percent_encode,
    to_text,
)
from .plan import (
    MAX_BODY_BYTES,
    MAX_HEADERS_SIZE,
    MAX_URL_LENGTH,
    JsonStringPlan,
    RenderedRequest,
    Slot,
    UrlGroup,
    WebhookPlan,
)

__all__ = ["generate_render_function", "generate_source"]


class Fallback(Exception):
    """The fast path cannot decide this render; the careful renderer will."""


_MISSING: Any = object()


def _text(value: Any) -> str:
    if value is _MISSING:
        raise Fallback
    return to_text(value)


def _item(value: Any, index: int) -> Any:
    if value.__class__ is list and index < len(value):
        return value[index]
    raise Fallback


def _bare(value: Any) -> bytes:
    if value.__class__ is list:  # the common case, $images: a list of strings, nothing to check
        for item in value:
            if item.__class__ is not str:
                break
        else:
            return orjson.dumps(value)  # a lone surrogate raises here: the careful path words it
    if value is _MISSING:
        raise Fallback
    return json_value(value)


_NAMESPACE = {
    "M": _MISSING,
    "T": _text,
    "I": _item,
    "B": _bare,
    "P": percent_encode,
    "H": check_host,
    "O": check_port,
    "W": check_whole_url,
    "N": check_header_name,
    "V": check_header_value,
    "D": orjson.dumps,
    "R": RenderedRequest,
    "TN": tuple.__new__,
    "F": Fallback,
}


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.count = 0
        self.header_slots: list[str] = []  # locals holding header slot texts, for the size check
        self.in_headers = False
        self.known: dict[tuple[str, int | None, Context], str] = {}

    def local(self) -> str:
        self.count += 1
        return f"x{self.count}"

    def emit(self, line: str) -> None:
        self.lines.append("    " + line)

    def lookup(self, name: str, slot: Slot) -> None:
        """Emit the full-name lookup (and the index, inline) into local *name*."""
        self.emit(f"{name} = v.get({slot.full_name!r}, M)")
        if slot.index is not None:
            i = slot.index
            self.emit(f"{name} = {name}[{i}] if {name}.__class__ is list and len({name}) > {i} else I({name}, {i})")

    def slot_text(self, slot: Slot) -> str:
        """Emit code that leaves the slot's encoded text in a local; return the local's name.

        The same reference in the same context renders the same text, so it is computed once
        ($session.id in a header and twice in the body costs one lookup).
        """
        key = (slot.full_name, slot.index, slot.context)
        if key in self.known:
            name = self.known[key]
            if self.in_headers:
                self.header_slots.append(name)
            return name
        name = self.local()
        self.known[key] = name
        self.lookup(name, slot)
        self.emit(f"if {name}.__class__ is not str: {name} = T({name})")
        if self.in_headers:
            self.header_slots.append(name)
        context = slot.context
        if context in (Context.URL_PATH, Context.URL_QUERY, Context.URL_FRAGMENT):
            self.emit(f"{name} = P({name})")
        elif context is Context.URL_WHOLE:
            self.emit(f"{name} = W({name})")
        elif context is Context.HEADER_VALUE:
            self.emit(f"if not {name}.isprintable(): {name} = V({name})")
        return name

    def join(self, pieces: tuple[Any, ...]) -> str:
        terms = [repr(p) if isinstance(p, str) else self.slot_text(p) for p in pieces]
        if not terms:
            return "''"
        return " + ".join(terms)

    def url(self, plan: WebhookPlan) -> str:
        terms = []
        for part in plan.url:
            if isinstance(part, str):
                terms.append(repr(part))
                continue
            assert isinstance(part, UrlGroup)
            expression = self.join(part.pieces)
            name = self.local()
            self.emit(f"{name} = {expression}")
            if part.kind is UrlPartKind.HOST:
                self.emit(f"H({name})")
            elif part.kind is UrlPartKind.PORT:
                self.emit(f"O({name})")
            elif part.kind is UrlPartKind.PATH_SEGMENT:
                literal = "".join(p for p in part.pieces if isinstance(p, str))
                if not literal.strip("."):  # only then can the segment come out as '.' or '..'
                    self.emit(f"if {name} == '.' or {name} == '..': raise F")
            terms.append(name)
        return " + ".join(terms) or "''"

    def headers(self, plan: WebhookPlan) -> str:
        self.in_headers = True
        pairs = []
        for header in plan.headers:
            name = self.join(header.name)
            if any(isinstance(p, Slot) for p in header.name):
                local = self.local()
                self.emit(f"{local} = N({name})")
                name = local
            pairs.append(f"({name}, {self.join(header.value)})")
        self.in_headers = False
        return "[" + ", ".join(pairs) + "]"

    def body(self, plan: WebhookPlan) -> str:
        if plan.body is None:
            return "None"
        terms = []
        for piece in plan.body:
            if isinstance(piece, str):
                terms.append(repr(piece.encode("utf-8")))
            elif isinstance(piece, JsonStringPlan):
                terms.append(f"D({self.join(piece.pieces)})")
            else:
                assert isinstance(piece, Slot)
                name = self.local()
                self.lookup(name, piece)
                terms.append(f"B({name})")
        if len(terms) == 1:
            return terms[0]
        return "b''.join((" + ", ".join(terms) + ",))"


def generate_source(plan: WebhookPlan) -> str:
    """The Python source of the plan's fast render function (deterministic)."""
    writer = _Writer()
    url = writer.url(plan)
    headers = writer.headers(plan)
    body = writer.body(plan)
    writer.emit(f"u = {url}")
    writer.emit(f"h = {headers}")
    writer.emit(f"b = {body}")
    # Size limits: anything near them is rare, so the careful renderer words the error.
    checks = [f"len(u) > {MAX_URL_LENGTH}"]
    if writer.header_slots:
        static = sum(len(p) for h in plan.headers for p in h.name + h.value if isinstance(p, str))
        lengths = " + ".join(f"len({name})" for name in writer.header_slots)
        checks.append(f"{lengths} > {MAX_HEADERS_SIZE - static}")
    if plan.body is not None:
        checks.append(f"len(b) > {MAX_BODY_BYTES}")
    writer.emit(f"if {' or '.join(checks)}: raise F")
    writer.emit(f"return TN(R, ({plan.method!r}, u, h, b))")  # tuple.__new__: no Python-level __new__ frame
    return "def render(v):\n" + "\n".join(writer.lines) + "\n"


def generate_render_function(plan: WebhookPlan) -> Callable[[Mapping[str, Any]], RenderedRequest]:
    namespace = dict(_NAMESPACE)
    code = compile(generate_source(plan), f"<webhook-dsl plan {plan.source}>", "exec")
    exec(code, namespace)
    function: Callable[[Mapping[str, Any]], RenderedRequest] = namespace["render"]
    return function
