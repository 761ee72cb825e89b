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
import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

import orjson

__all__ = ["MASK", "Masker", "is_secret_header", "is_secret_name"]

MASK = "***"

_SECRET_NAME = re.compile(r"(?i)(token|key|secret|passw(or)?d|pwd|authori[sz]ation|credential|cookie|signature)")
_SECRET_HEADER = re.compile(
    r"(?i)^(authorization|proxy-authorization|cookie|set-cookie|x-[a-z0-9-]*(api|auth|token|key|secret|signature)"
    r"[a-z0-9-]*|api-?key|[a-z0-9-]*-token)$"
)
#: Values shorter than this are not searched for in text (masking "1" would garble everything);
#: they are still masked wherever they stand whole (variables, secret headers).
MIN_SECRET_LENGTH = 4


def is_secret_name(name: str) -> bool:
    """A variable whose name says it is a credential."""
    return bool(_SECRET_NAME.search(name))


def is_secret_header(name: str) -> bool:
    """A header whose whole value is a credential."""
    return bool(_SECRET_HEADER.match(name))


@functools.lru_cache(maxsize=4096)
def _secret_name(name: str) -> bool:
    return is_secret_name(name)


@functools.lru_cache(maxsize=4096)
def _secret_header(name: str) -> bool:
    return is_secret_header(name)


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
        return self._pattern.sub(MASK, text)

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
        names = set(extra_secret_names)
        return {
            name: MASK if (name in names or _secret_name(name)) else self.data(value)
            for name, value in variables.items()
        }

    def headers(self, headers: Iterable[tuple[str, str]]) -> list[list[str]]:
        """Header pairs, ready for JSON: a secret header's value whole, any other masked inside."""
        return [[name, MASK if _secret_header(name) else self.text(value)] for name, value in headers]
