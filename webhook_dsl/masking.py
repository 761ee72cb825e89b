"""Keeps secret values out of everything a person or a log can read.

A variable is secret when its name says so (token, key, secret, password,
authorization, credential, cookie, session_secret...) or when a config or
trigger lists it in ``secrets``. Headers such as ``Authorization``, ``Cookie``
and ``X-Api-Key`` are masked whole. A ``Masker`` knows every form in which a
secret value can appear in our outputs (raw, percent-encoded, JSON-escaped,
inside Basic-auth base64) and replaces each with ``***``.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any, AnyStr
from urllib.parse import quote

import orjson

__all__ = ["MASK", "Masker", "is_secret_header", "is_secret_name", "whole_secret_headers", "whole_secrets"]

MASK = "***"

_SECRET_NAME = re.compile(r"(?i)(token|key|secret|passw(or)?d|pwd|authori[sz]ation|credential|cookie|signature)")
_SECRET_HEADER = re.compile(
    r"(?i)^(authorization|proxy-authorization|cookie|set-cookie|x-[a-z0-9-]*(api|auth|token|key|secret|signature)"
    r"[a-z0-9-]*|api-?key|[a-z0-9-]*-token)$"
)
#: Values shorter than this are not searched for in text (masking "1" would garble everything);
#: they are still masked wherever they stand whole (variables, secret headers).
MIN_SECRET_LENGTH = 4
#: Up to this many forms, substring tests screen a text before the regex runs (see ``Masker``).
_MAX_QUICK_FORMS = 32


def looks_like_credential(name: str) -> bool:
    """Whether a name reads like a credential's (token, key, password...): a hint for ``check`` to suggest
    declaring it, never a reason to mask."""
    return bool(_SECRET_NAME.search(name))


is_secret_name = looks_like_credential


def is_secret_header(name: str) -> bool:
    """A header whose whole value is a credential."""
    return bool(_SECRET_HEADER.match(name))


@functools.lru_cache(maxsize=4096)
def _secret_name(name: str) -> bool:
    return is_secret_name(name)


@functools.lru_cache(maxsize=4096)
def _secret_header(name: str) -> bool:
    return is_secret_header(name)


def whole_secrets(variables: Mapping[str, Any], extra_secret_names: Iterable[str] = ()) -> dict[str, Any]:
    """The variables with each secret one's value replaced whole by ``MASK``; the others as they are."""
    names = set(extra_secret_names)
    return {name: MASK if (name in names or _secret_name(name)) else value for name, value in variables.items()}


def whole_secret_headers(headers: Iterable[tuple[str, str]]) -> list[list[str]]:
    """Header pairs, ready for JSON, with a secret header's value replaced whole by ``MASK``."""
    return [[name, MASK if _secret_header(name) else value] for name, value in headers]


def _holds_any(forms: tuple[AnyStr, ...], text: AnyStr) -> bool:
    """Whether any form occurs in text: one C substring search each. A loop, not ``any()``: with three
    forms and a URL, 0.14 against 0.35 us, on a path every masked text takes."""
    for form in forms:  # noqa: SIM110
        if form in text:
            return True
    return False


@functools.lru_cache(maxsize=1024)
def _masker(values: frozenset[str]) -> Masker:
    """Maskers are immutable; the same secrets (one session, many calls) share one compiled pattern."""
    return Masker(sorted(values))


def _forms(value: str) -> set[str]:
    forms = {value, quote(value, safe=""), orjson.dumps(value).decode("utf-8")[1:-1]}
    # Basic auth: base64("user:password") holds the secret; mask the encoding of any pair containing it.
    for pair in (value, f"{value}:", f":{value}"):
        forms.add(base64.b64encode(pair.encode("utf-8", "surrogatepass")).decode("ascii").rstrip("="))
    return {f for f in forms if len(f) >= MIN_SECRET_LENGTH}


class Masker:
    """Replaces every known form of the secret values in text and data."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        self.values: set[str] = set()
        for value in secrets:
            if value:
                self.values.add(value)
                forms |= _forms(value)
        ordered = sorted(forms, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        self._shortest = len(ordered[-1]) if ordered else 0  # a shorter text cannot hold any form
        self._longest = len(ordered[0]) if ordered else 0
        # Substring tests find a form faster than the regex scans for any (CPython's fastsearch against re's
        # per-position alternation: 0.3-0.4 us a form against 2.2 us, over a 660-byte log record), so with
        # a handful of forms they decide whether the regex has anything to do.
        self._forms = tuple(ordered) if len(ordered) <= _MAX_QUICK_FORMS else None
        # The forms as they read inside JSON text. JSON escapes character by character, so a form inside
        # any string of a document is, escaped, inside the document's JSON: one search covers them all.
        self._forms_in_json: tuple[bytes, ...] | None = None
        with contextlib.suppress(TypeError):  # a lone surrogate: no JSON text holds it, so no quick check
            self._forms_in_json = tuple(orjson.dumps(form)[1:-1] for form in ordered)

    @classmethod
    def for_variables(cls, variables: Mapping[str, Any], extra_secret_names: Iterable[str] = ()) -> Masker:
        names = set(extra_secret_names)
        values = []
        for name, value in variables.items():
            if name in names or _secret_name(name):
                values.append(value if isinstance(value, str) else orjson.dumps(value).decode("utf-8"))
        return _masker(frozenset(values))

    def text(self, text: str) -> str:
        if self._pattern is None or len(text) < self._shortest:
            return text
        if self._forms is not None and not _holds_any(self._forms, text):
            return text
        return self._pattern.sub(MASK, text)

    def head(self, text: str, limit: int) -> str:
        """The first ``limit`` characters of ``text``, masked as in the whole text: a secret that straddles
        the cut is masked whole (so the result may run past ``limit`` by a mask), never left half-visible.

        Only ``limit`` plus the longest form's length is scanned, however long the text.
        """
        if len(text) <= limit:
            return self.text(text)
        if self._pattern is None:
            return text[:limit]
        # Every occurrence that starts before the cut ends inside this window, so the scan decides it as a
        # scan of the whole text would.
        window = text[: limit + self._longest - 1]
        parts: list[str] = []
        position = 0
        for match in self._pattern.finditer(window):
            if match.start() >= limit:
                break
            parts += (window[position : match.start()], MASK)
            position = match.end()
        if position < limit:
            parts.append(window[position:limit])
        return "".join(parts)

    def record(self, record: dict[str, Any]) -> dict[str, Any]:
        """A log record with every string inside its values masked (its own keys are its schema).

        One JSON encoding and one search settle the common case, where no secret appears anywhere: the
        record itself comes back. Otherwise every value is walked, as the JSON a store would write, so
        what orjson writes as strings (dataclass fields, datetimes) is masked too.
        """
        if self._pattern is None:
            return record
        if self._forms_in_json is not None:
            try:
                document = orjson.dumps(record)
            except TypeError:  # e.g. integers beyond 64 bits, non-string keys: walk it as it is
                pass
            else:
                if not _holds_any(self._forms_in_json, document):
                    return record
                record = orjson.loads(document)
        return {key: self.data(value) for key, value in record.items()}

    def data(self, value: Any) -> Any:
        """Mask strings inside JSON-like data, keys included."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.data(v) for v in value]
        if isinstance(value, dict):
            return {self.text(str(k)): self.data(v) for k, v in value.items()}
        return value

    def variables(self, variables: Mapping[str, Any], extra_secret_names: Iterable[str] = ()) -> dict[str, Any]:
        """Variables for a log: secret ones replaced whole, the rest masked inside."""
        return self.record(whole_secrets(variables, extra_secret_names))

    def headers(self, headers: Iterable[tuple[str, str]]) -> list[list[str]]:
        """Header pairs, ready for JSON: a secret header's value whole, any other masked inside."""
        return [[name, MASK if _secret_header(name) else self.text(value)] for name, value in headers]


def mask_client_data(client_data: Mapping[str, Any], secret_names: Iterable[str]) -> dict[str, Any]:
    """A session's client_data for display (API, CLI, dashboard): each declared secret key's value replaced
    whole, and every form of those values masked wherever else they appear."""
    names = set(secret_names)
    values = [
        value if isinstance(value, str) else orjson.dumps(value).decode("utf-8")
        for key, value in client_data.items()
        if key in names
    ]
    masker = _masker(frozenset(values))
    return {masker.text(key): MASK if key in names else masker.data(value) for key, value in client_data.items()}
