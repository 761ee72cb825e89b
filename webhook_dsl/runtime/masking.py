"""Keeps declared secret values out of everything a person, a log or the LLM can read.

A value is secret because it was declared, never because of its name: a company secret
(``$secrets.NAME``), or a client_data key or trigger argument that a webhook or trigger lists under
``secrets`` (for a list or object, every string inside it as well as the whole). A ``Masker`` finds
a secret in every form text can carry it (raw, percent-encoded, JSON-escaped at any depth, base64 or
base64url at any offset) and replaces the whole occurrence with ``***``. Nothing else is changed.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import secrets as secrets_module
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote, unquote_plus

import orjson

from ..errors import RenderError
from ..language.names import MIN_SECRET_LENGTH, SECRET_NAME, SECRET_NAME_PATTERN, SECRETS_PREFIX
from ..language.plan import RenderedRequest, WebhookPlan
from ..storage.base import Session

__all__ = [
    "CREDENTIAL_HEADERS",
    "MASK",
    "MIN_SECRET_LENGTH",
    "SECRETS_PREFIX",
    "SECRET_NAME",
    "SECRET_NAME_PATTERN",
    "Masker",
    "looks_like_credential",
    "mask_client_data",
    "masked_session",
    "masked_variables",
    "secret_strings",
    "shown_request",
    "whole_secret_headers",
    "whole_secrets",
]

MASK = "***"
#: Headers whose value is a credential by definition (RFC 9110 section 11.6, RFC 6265): shown masked whole.
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})

_CREDENTIAL_NAME = re.compile(r"(?i)(token|key|secret|passw(or)?d|pwd|authori[sz]ation|credential|cookie|signature)")
#: A JSON escape at any nesting depth: each level of JSON-in-JSON doubles the backslashes and adds one.
_BACKSLASHES = r"\\{1,16}"
_JSON_SHORT_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "\b": "b", "\f": "f", "\n": "n", "\r": "r", "\t": "t"}
_BASE64_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_")
_BASE64_RUN_END = re.compile(r"[A-Za-z0-9+/_-]*=*")
#: Characters the screen's loose decoding would misread: escape marks themselves and what a short escape
#: letter stands for.
_CONFUSED_BY_LOOSE_DECODING = re.compile("[\\\\%+\x00-\x1f\ud800-\udfff]")
_UNICODE_ESCAPE = re.compile(r"\\+u([0-9a-fA-F]{4})")
#: The longest form one character can take: a surrogate pair, each half escaped behind 16 backslashes.
_LONGEST_CHARACTER_FORM = 2 * (16 + 5)


def looks_like_credential(name: str) -> bool:
    """Whether a name reads like a credential's (token, key, password...): a hint for ``check`` to suggest
    declaring it, never a reason to mask."""
    return bool(_CREDENTIAL_NAME.search(name))


def secret_strings(value: Any) -> list[str]:
    """The strings a declared secret value stands for: itself, or for a list or object every string inside
    it and its whole JSON text. Numbers count by their JSON text; booleans and null are no secret."""
    if isinstance(value, str):
        return [value] if value else []
    if value is None or isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [json.dumps(value)]
    if isinstance(value, list | tuple | dict):
        inner = value.values() if isinstance(value, dict) else value
        found = [s for item in inner for s in secret_strings(item)]
        try:
            found.append(orjson.dumps(value).decode("utf-8"))
        except TypeError:
            found.append(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str))
        return found
    return [str(value)]


def _is_secret(name: str, declared: set[str]) -> bool:
    """A declared name, a company secret, or a name reached by descent into a declared one (``creds.user``)."""
    if name in declared or name.startswith(SECRETS_PREFIX):
        return True
    cut = name.find(".")
    while cut > 0:
        if name[:cut] in declared:
            return True
        cut = name.find(".", cut + 1)
    return False


def whole_secrets(variables: Mapping[str, Any], secret_names: Iterable[str] = ()) -> dict[str, Any]:
    """The variables with each declared secret's value (and every company secret) replaced whole by ``MASK``."""
    names = set(secret_names)
    return {name: MASK if _is_secret(name, names) else value for name, value in variables.items()}


def masked_variables(variables: Mapping[str, Any], secret_names: Iterable[str], placeholder: str) -> dict[str, Any]:
    """The variables with every string inside a secret replaced by ``placeholder`` (structure kept, so that
    ``$api_keys[0]`` and ``$customer.email`` still resolve): a render of these shows where secrets went."""
    names = set(secret_names)

    def hide(value: Any) -> Any:
        if isinstance(value, list | tuple):
            return [hide(item) for item in value]
        if isinstance(value, dict):
            return {key: hide(item) for key, item in value.items()}
        return placeholder

    return {
        name: hide(value) if (name in names or name.startswith(SECRETS_PREFIX)) else value
        for name, value in variables.items()
    }


def whole_secret_headers(headers: Iterable[tuple[str, str]]) -> list[list[str]]:
    """Header pairs, ready for JSON, with a credential header's value replaced whole by ``MASK``."""
    return [[name, MASK if name.lower() in CREDENTIAL_HEADERS else value] for name, value in headers]


def _unicode_character(match: re.Match[str]) -> str:
    return chr(int(match.group(1), 16))


def _hex(number: int, width: int) -> str:
    """A pattern for ``number`` in hex, either case."""
    return "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in f"{number:0{width}x}")


def _character(c: str) -> str:
    """A pattern for one character in any form a text can carry it: raw, JSON-escaped (short escape or
    ``\\uXXXX``, a surrogate pair above U+FFFF, at any depth), or percent-encoded UTF-8 (``+`` for space)."""
    alternatives = [re.escape(c)]
    point = ord(c)
    if point < 0x10000:
        alternatives.append(f"{_BACKSLASHES}u{_hex(point, 4)}")
    else:
        high, low = 0xD800 + ((point - 0x10000) >> 10), 0xDC00 + ((point - 0x10000) & 0x3FF)
        alternatives.append(f"{_BACKSLASHES}u{_hex(high, 4)}{_BACKSLASHES}u{_hex(low, 4)}")
    if c in _JSON_SHORT_ESCAPES:
        alternatives.append(_BACKSLASHES + re.escape(_JSON_SHORT_ESCAPES[c]))
    alternatives.append("".join(f"%{_hex(byte, 2)}" for byte in c.encode("utf-8", "surrogatepass")))
    if c == " ":
        alternatives.append(r"\+")
    return "(?:" + "|".join(alternatives) + ")"


def _base64_cores(secret: str) -> set[str]:
    """What base64 and base64url text holds of ``secret`` at each of the three byte offsets: the characters
    that depend on the secret's bytes alone (so any blob that encodes the secret contains one of them)."""
    data = secret.encode("utf-8", "surrogatepass")
    cores = set()
    for offset, skip in ((0, 0), (1, 2), (2, 3)):
        size = offset + len(data)
        encoded = base64.b64encode(b"\0" * offset + data).decode("ascii").rstrip("=")
        if size % 3:
            encoded = encoded[:-1]  # the last character also depends on what follows
        core = encoded[skip:]
        if len(core) >= MIN_SECRET_LENGTH:
            cores |= {core, core.replace("+", "-").replace("/", "_")}
    return cores


@functools.lru_cache(maxsize=1024)
def _masker(values: frozenset[str]) -> Masker:
    """Maskers are immutable; the same secrets (one session, many calls) share one compiled pattern."""
    return Masker(sorted(values))


class Masker:
    """Replaces every form of the given secret values in text and data with ``MASK``.

    One compiled pattern holds every secret: each character in all of its forms (so any mix of raw,
    escaped and percent-encoded characters is found), and, for secrets of ``MIN_SECRET_LENGTH`` or more,
    their base64 cores, where a match is widened to the whole base64 run around it.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.values = frozenset(value for value in secrets if value)
        long = sorted((v for v in self.values if len(v) >= MIN_SECRET_LENGTH), key=len, reverse=True)
        short = sorted((v for v in self.values if len(v) < MIN_SECRET_LENGTH), key=len, reverse=True)
        alternatives = ["".join(map(_character, value)) for value in long]
        alternatives += [r"(?<![^\W_])" + "".join(map(_character, value)) + r"(?![^\W_])" for value in short]
        cores = sorted(set().union(*map(_base64_cores, long)), key=len, reverse=True)
        if cores:
            # '+' and '/' may arrive escaped (PHP writes '\/') or percent-encoded (base64 in a URL).
            core_patterns = ("".join(_character(c) if c in "+/" else c for c in core) for core in cores)
            alternatives.append("(?P<base64>" + "|".join(core_patterns) + ")")
        self._pattern = re.compile("|".join(alternatives)) if alternatives else None
        self._reach = _LONGEST_CHARACTER_FORM * max(map(len, self.values), default=0)
        # The screen: every form, decoded, is the secret itself or holds a base64 core, so a few substring
        # searches (C's fastsearch) over the text and its decoded view rule out most texts before the
        # pattern tries every position. Decoding is loose (backslashes dropped), which is sound only for
        # secrets without the characters it would confuse; with those, any escape mark sends text to the pattern.
        self._plain = tuple(long) + tuple(short) + tuple(cores)
        # In a decoded view a stray escape just before a form can swallow its first characters ("%4" then
        # "0..." decodes as "@"; "\\u00" then "41..." as "A"), so the decoded view is searched for each form
        # less its first four characters: never fewer matches than the pattern would find.
        self._tails = tuple(form[4:] for form in self._plain)
        self._decodable = not any(_CONFUSED_BY_LOOSE_DECODING.search(value) for value in self.values)
        self._plus = any(" " in value for value in self.values)
        #: Whether a search may miss one of these secrets in text, so a request is better masked by position.
        self.has_short_secrets = bool(short)

    @classmethod
    def for_call(cls, variables: Mapping[str, Any], secret_names: Iterable[str] = ()) -> Masker:
        """The masker for one call: every declared secret among the variables, and every company secret."""
        names = set(secret_names)
        values = [
            s
            for name, value in variables.items()
            if name in names or name.startswith(SECRETS_PREFIX)
            for s in secret_strings(value)
        ]
        return _masker(frozenset(values))

    def with_values(self, values: Iterable[str]) -> Masker:
        """This masker and more secrets (a secret that arrived during the call)."""
        more = frozenset(v for v in values if v) - self.values
        return _masker(self.values | more) if more else self

    def _may_hold(self, text: str) -> bool:
        """False only when ``text`` certainly holds no form of any secret."""
        for form in self._plain:  # a loop, not any(): on the path of every masked text
            if form in text:
                return True
        escaped, encoded = "\\" in text, "%" in text or (self._plus and "+" in text)
        if not (escaped or encoded):
            return False
        if not self._decodable:
            return True
        if escaped:
            if "\\u" in text:
                text = _UNICODE_ESCAPE.sub(_unicode_character, text)
                text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")  # pairs joined
            text = text.replace("\\", "")
        if encoded:
            text = unquote_plus(text) if self._plus else unquote(text)
        for tail in self._tails:  # noqa: SIM110
            if tail in text:
                return True
        return False

    def _spans(self, text: str) -> list[tuple[int, int]]:
        """Where the secrets' forms are, merged; a base64 core widened to its whole run."""
        assert self._pattern is not None
        spans: list[tuple[int, int]] = []
        position = 0
        while (match := self._pattern.search(text, position)) is not None:
            start, end = match.span()
            if match.lastgroup == "base64":
                floor = spans[-1][1] if spans else 0
                while start > floor and text[start - 1] in _BASE64_CHARACTERS:
                    start -= 1
                run = _BASE64_RUN_END.match(text, end)
                end = run.end() if run else end
            if spans and start <= spans[-1][1]:
                spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
            else:
                spans.append((start, end))
            position = max(end, match.start() + 1)
        return spans

    @staticmethod
    def _replace(text: str, spans: list[tuple[int, int]], limit: int) -> str:
        parts: list[str] = []
        position = 0
        for start, end in spans:
            if start >= limit:
                break
            parts += (text[position:start], MASK)
            position = end
        if position < limit:
            parts.append(text[position:limit])
        return "".join(parts)

    def text(self, text: str) -> str:
        if self._pattern is None or not self._may_hold(text):
            return text
        spans = self._spans(text)
        return self._replace(text, spans, len(text)) if spans else text

    def head(self, text: str, limit: int) -> str:
        """The first ``limit`` characters of ``text``, masked as in the whole text: a secret that straddles
        the cut is masked whole (so the result may run past ``limit`` by a mask), never left half-visible.
        Only ``limit`` plus the longest form a secret can take is scanned, however long the text."""
        if len(text) <= limit:
            return self.text(text)
        window = text[: limit + self._reach]
        if self._pattern is None or not self._may_hold(window):
            return text[:limit]
        return self._replace(window, self._spans(window), limit)

    def record(self, record: dict[str, Any]) -> dict[str, Any]:
        """A log record with every string inside its values masked (its own keys are its schema).

        One search over the record's JSON text settles the common case where no secret appears anywhere
        (the pattern knows JSON escapes): the record itself comes back. Otherwise every value is walked, as
        the JSON a store would write, so what orjson writes as strings (dataclass fields) is masked too.
        """
        if self._pattern is None:
            return record
        try:
            document = orjson.dumps(record)
        except TypeError:  # e.g. integers beyond 64 bits: walk it as it is
            return {key: self._walk(value) for key, value in record.items()}
        text = document.decode("utf-8")
        if not self._may_hold(text) or self._pattern.search(text) is None:
            return record
        return {key: self._walk(value) for key, value in orjson.loads(document).items()}

    def data(self, value: Any) -> Any:
        """Mask strings inside JSON-like data, keys included. Data whose JSON text holds no form (one
        encoding and one screen, the common case) comes back as it is, without a walk."""
        if isinstance(value, str):
            return self.text(value)
        if self._pattern is None or not isinstance(value, list | dict):
            return value
        try:
            document = orjson.dumps(value).decode("utf-8")
        except TypeError:  # not plain JSON data (integers beyond 64 bits...): walk it
            pass
        else:
            if not self._may_hold(document) or self._pattern.search(document) is None:
                return value
        return self._walk(value)

    def _walk(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self._walk(v) for v in value]
        if isinstance(value, dict):
            return {self.text(str(k)): self._walk(v) for k, v in value.items()}
        return value

    def variables(self, variables: Mapping[str, Any], secret_names: Iterable[str] = ()) -> dict[str, Any]:
        """Variables for a log: declared secrets replaced whole, the rest masked inside."""
        return self.record(whole_secrets(variables, secret_names))

    def headers(self, headers: Iterable[tuple[str, str]]) -> list[list[str]]:
        """Header pairs, ready for JSON: a credential header's value whole, any other masked inside."""
        return [[name, MASK if name.lower() in CREDENTIAL_HEADERS else self.text(value)] for name, value in headers]


def mask_client_data(
    client_data: Mapping[str, Any], secret_names: Iterable[str], secret_values: Iterable[str] = ()
) -> dict[str, Any]:
    """A session's client_data for display (API, CLI, dashboard): each declared secret key's value replaced
    whole, and every form of those values, and of ``secret_values`` (the company's secrets, which a response
    may have echoed into client_data), masked wherever else they appear."""
    names = set(secret_names)
    masker = Masker.for_call(client_data, names).with_values(secret_values)
    return {masker.text(key): MASK if key in names else masker.data(value) for key, value in client_data.items()}


#: Stands for a secret in a second render of a request (letters and digits only: no encoding changes it).
_PLACEHOLDER = "wdslsecret" + secrets_module.token_hex(12)


def shown_request(
    request: RenderedRequest,
    masker: Masker,
    plan: WebhookPlan | None = None,
    variables: Mapping[str, Any] | None = None,
    secret_names: Iterable[str] = (),
) -> dict[str, Any]:
    """A request as a log, a dry run, a result or ``render`` shows it, ready for JSON.

    A secret of ``MIN_SECRET_LENGTH`` or more is found by search in every form the encoders give it. A
    shorter one is not searched for inside other text, so then, given the plan and variables the request
    was rendered from, the plan is rendered a second time with every secret replaced where it is put:
    masked exactly, and nothing else changed. Where that render cannot be made (a secret in a port), the
    request is masked by search. Headers the sender added after rendering are kept as they are.
    """
    if plan is not None and variables is not None and masker.has_short_secrets:
        try:
            hidden = plan.render(masked_variables(variables, secret_names, _PLACEHOLDER))
        except RenderError:
            pass
        else:
            placeholder = _PLACEHOLDER.encode()
            headers = [(k, v.replace(_PLACEHOLDER, MASK)) for k, v in hidden.headers]
            request = tuple.__new__(
                RenderedRequest,
                (
                    hidden.method,
                    hidden.url.replace(_PLACEHOLDER, MASK),
                    headers + list(request.headers[len(headers) :]),
                    None if hidden.body is None else hidden.body.replace(placeholder, MASK.encode()),
                ),
            )
    return {
        "method": request.method,
        "url": masker.text(request.url),
        "headers": masker.headers(request.headers),
        "body": None if request.body is None else masker.text(request.body.decode("utf-8")),
    }


def masked_session(
    session: Session, secret_names: Iterable[str], secret_values: Iterable[str] = ()
) -> dict[str, Any]:
    """A session as a person sees it (the API, the dashboard, ``webhook-dsl session get``): the values of
    the keys declared secret replaced by ***, and those values and the company's secrets masked wherever
    else they appear."""
    data = session.to_dict()
    data["client_data"] = mask_client_data(session.client_data, secret_names, secret_values)
    return data
