"""What a render plan is made of, and how a reference finds its value.

A plan is a flat sequence of literal text and ``Slot`` s per request part. These
types, the size limits and the name lookup live here, apart from ``plan``, so
that both renderers read them from one place: the careful renderer (``plan``)
and the generated one (``codegen``), which ``plan`` imports.

A name resolves to a flat key of the variables, else, when dotted, by descending
into nested objects (``customer.email`` in ``{"customer": {"email": ...}}``); the
descent runs only after the flat lookup missed, so flat names cost nothing more.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from .syntax import Context, UrlPartKind

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_HEADERS_SIZE",
    "MAX_URL_LENGTH",
    "MISSING",
    "BodyPiece",
    "HeaderPlan",
    "JsonStringPlan",
    "MemberNames",
    "Piece",
    "RenderedRequest",
    "Slot",
    "UrlGroup",
    "candidate_lengths",
    "defined_name",
    "descend",
    "resolve",
    "resolve_reference",
    "top_level_names",
]

#: Largest rendered URL, in characters (RFC 9110 section 4.1 recommends supporting 8,000).
MAX_URL_LENGTH = 8000
#: Largest total of rendered header names and values, in characters.
MAX_HEADERS_SIZE = 32 * 1024
#: Largest rendered body, in bytes.
MAX_BODY_BYTES = 1024 * 1024


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


def candidate_lengths(name: str, exact: bool) -> tuple[int, ...]:
    """Lengths of the names a reference may mean, longest first.

    ``$session_id.x`` may mean ``session_id.x``, ``session_id``... down to ``s``:
    every prefix that is itself a name (a name never ends with ``.``). An exact
    reference (``${name}``, or a bare JSON value) means its whole name only.
    """
    if exact:
        return (len(name),)
    return tuple(end for end in range(len(name), 0, -1) if name[end - 1] != ".")


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
        """The longest candidate, which the generated renderer looks up."""
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


# --- finding a reference's value ----------------------------------------------------

#: What a lookup returns when a name has no value: never a value a mapping could hold.
MISSING: Any = object()


def descend(variables: Mapping[str, Any], name: str) -> tuple[str, Any]:
    """Where a dotted name leads through nested objects: (the flat key it starts from, the value).

    The longest leading part that is a flat key holding an object is tried first, then
    shorter ones; the rest of the name is followed one ``.`` segment at a time, through
    JSON objects (``dict``) only. ``("", MISSING)`` when no way leads to a value. Only
    called after the flat lookup of ``name`` missed.
    """
    cut = name.rfind(".")
    while cut > 0:
        value = variables.get(name[:cut], MISSING)
        if value.__class__ is dict:
            for segment in name[cut + 1 :].split("."):
                value = value.get(segment, MISSING) if value.__class__ is dict else MISSING
                if value is MISSING:
                    break
            else:
                return name[:cut], value
        cut = name.rfind(".", 0, cut)
    return "", MISSING


def resolve(candidates: Sequence[str], variables: Mapping[str, Any]) -> tuple[str, str, Any] | None:
    """(candidate, flat key read, value) for the longest candidate that resolves, or None."""
    get = variables.get
    for name in candidates:
        value = get(name, MISSING)
        if value is not MISSING:
            return name, name, value
        if "." in name:
            root, value = descend(variables, name)
            if value is not MISSING:
                return name, root, value
    return None


def resolve_reference(candidates: Sequence[str], variables: Mapping[str, Any]) -> tuple[str, Any] | None:
    """What a reference reads: its longest candidate that resolves, and the value found there.

    A candidate resolves when it is a key of ``variables``, or when it is dotted, a
    leading part of it is a key holding an object and the rest leads into it.

    >>> resolve_reference(("customer.email", "customer"), {"customer": {"email": "a@b.example"}})
    ('customer.email', 'a@b.example')
    """
    found = resolve(candidates, variables)
    return None if found is None else (found[0], found[2])


def defined_name(candidates: Sequence[str], variables: Mapping[str, Any]) -> str | None:
    """The key of ``variables`` a reference reads: its longest candidate that resolves, or for
    one reached by descent, the key the descent starts from (so ``variables[name]`` exists)."""
    found = resolve(candidates, variables)
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
