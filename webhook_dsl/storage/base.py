"""What every store is: the ``Store`` protocol, the records it keeps, and the rules it enforces.

A session is identified by its company and its id; ``company_id=None`` means "the one company with
this id" (the single-tenant command line), an error when there are several. What may be stored is
decided here once (``session_id_problem``, ``client_data_problems``, ``secret_problem``), so every way in
accepts and refuses the same input in the same words. A session's client_data is bounded
(``max_client_data_bytes`` of compact JSON), checked inside the write. ``StoreUnavailable`` is an outage
(a database down, full or read-only), which the service answers with 503.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from ..language.names import MIN_SECRET_LENGTH, SECRET_NAME, SECRET_NAME_PATTERN, SYSTEM_VARIABLES

__all__ = [
    "API_KEY_PREFIX",
    "ID_PATTERN",
    "MAX_CLIENT_DATA_DEPTH",
    "SECRET_NAME_PATTERN",
    "SECRET_VALUE_PATTERN",
    "AmbiguousSession",
    "DEFAULT_MAX_CLIENT_DATA_BYTES",
    "ApiKey",
    "ClientDataTooLarge",
    "DashboardSession",
    "LogSeq",
    "SecretInfo",
    "SecretValues",
    "Session",
    "SchemaTooNew",
    "SessionNotFound",
    "SessionSummary",
    "Store",
    "StoreUnavailable",
    "client_data_problems",
    "compact_json_size",
    "company_id_problem",
    "describe_json_type",
    "hash_api_key",
    "merge_refused_warning",
    "new_api_key",
    "secret_problem",
    "session_id_problem",
    "long_digit_run",
    "read_json",
    "log_view",
]


#: Every key this project makes starts with this, so a leaked one is easy to recognise (and to grep for).
API_KEY_PREFIX = "wdsl_"


#: Session and company ids: what fits in a URL segment and a directory name as is (JSON Schema dialect:
#: ``$`` is the end of the string, as ``\Z`` is below).
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@~-]{0,127}$"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@~-]{0,127}\Z")
_ID_RULE = "1-128 characters: letters, digits and . _ : @ ~ -, starting with a letter or digit"
#: client_data nested deeper than this is refused (a value that deep is a mistake or an attack).
MAX_CLIENT_DATA_DEPTH = 32
#: A session's client_data is at most this many bytes of compact JSON unless a store is given another limit.
DEFAULT_MAX_CLIENT_DATA_BYTES = 256 * 1024
#: A secret's value holds no control character (C0, DEL, C1): it usually goes into a header.
SECRET_VALUE_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def session_id_problem(session_id: str) -> str | None:
    """What is wrong with a session id, or None: the one rule for the service's paths and the command line."""
    return None if _ID.match(session_id) else f"a session id is {_ID_RULE}"


def company_id_problem(company_id: str) -> str | None:
    """What is wrong with a company id (the same shape as a session id: it names a folder of triggers), or None."""
    return None if _ID.match(company_id) else f"a company id is {_ID_RULE}"


def describe_json_type(value: Any) -> str:
    """A JSON value's type in words, for messages: "an array", "a string", "null"..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def client_data_problems(client_data: Any) -> list[str]:
    """Every reason a session's client_data cannot be stored as given (empty when it can).

    The service and the command line both ask this, so they take the same keys and values: an object;
    no system variable (``session.id``, ``company.id``, ``assistant.id``) as a key, since the platform
    sets those; nesting at most ``MAX_CLIENT_DATA_DEPTH`` deep; finite numbers (JSON has no NaN or
    Infinity); no lone UTF-16 surrogate, which neither UTF-8 nor PostgreSQL's jsonb can hold.
    """
    if not isinstance(client_data, dict):
        return [f"client_data must be a JSON object, not {describe_json_type(client_data)}"]
    problems: list[str] = []
    if not client_data.keys().isdisjoint(SYSTEM_VARIABLES):
        problems = [
            f"client_data key {key!r} is a system variable; the platform sets it"
            for key in client_data
            if key in SYSTEM_VARIABLES
        ]
    _value_problems(client_data, [], problems)
    return problems


#: Values that need no look of their own: no nesting, no NaN, and a string's surrogates are found by ``_plain``.
_LEAVES = frozenset({str, int, bool, type(None)})


def _plain(container: dict[Any, Any] | list[Any]) -> bool:
    """Whether a container holds only strings, integers, booleans and nulls, with no lone surrogate in them
    or in its keys: then nothing in it is a problem. Both checks run in C (``map(type, ...)`` and orjson,
    which refuses a lone surrogate), so a request with 60,000 keys does not cost 60,000 turns of a Python
    loop; anything else (a float, a nested value, an integer beyond 64 bits) is walked item by item."""
    items = container.values() if isinstance(container, dict) else container
    if not _LEAVES.issuperset(map(type, items)):
        return False
    try:
        orjson.dumps(container)
    except orjson.JSONEncodeError:
        return False
    return True


def _value_problems(value: Any, path: list[Any], problems: list[str]) -> None:
    """Walk a JSON value once, noting too deep nesting, non-finite numbers and lone surrogates (ten at most).
    ``path`` is where the walk is; it is written out only for a problem. A container of plain values is
    judged at once (``_plain``)."""
    if len(problems) >= 10:
        return
    if isinstance(value, dict | list):
        if len(path) >= MAX_CLIENT_DATA_DEPTH:
            problems.append(f"{_where(path)}: nested deeper than {MAX_CLIENT_DATA_DEPTH} levels")
            return
        if _plain(value):
            return
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            if isinstance(key, str) and _SURROGATE.search(key):
                problems.append(f"{_where(path)}: a key holds a lone UTF-16 surrogate (\\ud800-\\udfff)")
            path.append(key)
            _value_problems(item, path, problems)
            path.pop()
    elif isinstance(value, float) and not math.isfinite(value):
        problems.append(f"{_where(path)} is {value}, which JSON cannot hold; send a finite number or a string")
    elif isinstance(value, str) and _SURROGATE.search(value):
        problems.append(f"{_where(path)} holds a lone UTF-16 surrogate (\\ud800-\\udfff)")


def _where(path: list[Any]) -> str:
    return "client_data" + "".join(f"[{key!r}]" for key in path)


#: ``secret_problem``'s value when only the name is to be checked (a delete); ``None`` is a value JSON can send.
_NAME_ONLY: Any = object()


def secret_problem(name: str, value: Any = _NAME_ONLY) -> str | None:
    """What is wrong with a company secret's name and value (the name alone when no value is given), or None.

    The command line, the service and the stores all ask this one function. The value is never part of
    the message: it is a credential, and messages end up in terminals and logs.
    """
    if not isinstance(name, str) or not SECRET_NAME.match(name):
        return (
            "a secret name is 1-64 letters, digits and '_', not starting with a digit "
            "(it is written $secrets.NAME), e.g. erp_token"
        )
    if value is _NAME_ONLY:
        return None
    if not isinstance(value, str):
        return f"a secret value must be a string, not {describe_json_type(value)}"
    if not value:
        return "a secret value cannot be empty; give the whole credential"
    if len(value) < MIN_SECRET_LENGTH:
        return (
            f"a secret value is at least {MIN_SECRET_LENGTH} characters (a shorter one cannot be masked "
            "safely wherever it appears); give the whole credential"
        )
    if _CONTROL.search(value):
        return (
            "a secret value cannot hold control characters (line breaks, tab, NUL...): it usually goes into "
            "a header; give it on one line"
        )
    if _SURROGATE.search(value):
        return "a secret value holds a lone UTF-16 surrogate (\\ud800-\\udfff); give valid Unicode text"
    return None


def _checked_secret(name: str, value: str) -> None:
    """The stores' own guard: whatever calls them, nothing that ``secret_problem`` refuses is written."""
    problem = secret_problem(name, value)
    if problem is not None:
        raise ValueError(problem)


class SecretValues(dict[str, str]):
    """A company's secrets, name to value, as the runtime reads them; the repr names them, never shows them."""

    def __repr__(self) -> str:
        return f"<secrets {sorted(self)}>"

    __str__ = __repr__


class StoreUnavailable(Exception):
    """The database cannot serve this now: it is down or restarting, its disk is full, its file is read-only.
    An outage, not a bug: the service answers 503 with ``Retry-After``, and a trigger call that meets it
    before sending sends nothing. The backend's own error is the ``__cause__``."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SchemaTooNew(ValueError):
    """The database was written by a newer webhook-dsl (its schema version is past ``known``): this one refuses
    to open it rather than guess what the newer tables mean. One line, saying what to do."""

    def __init__(self, found: int, known: int) -> None:
        super().__init__(
            f"database schema version {found} is newer than this webhook-dsl ({known}); upgrade webhook-dsl"
        )
        self.found = found
        self.known = known


class SessionNotFound(LookupError):
    """No session with that id (for that company)."""


class ClientDataTooLarge(ValueError):
    """A write that would take a session's client_data past the store's limit; nothing was written.

    ``size`` is the compact JSON the client_data would have had, in bytes; ``limit`` the store's limit.
    """

    def __init__(self, session_id: str, size: int, limit: int, company_id: str = "") -> None:
        super().__init__(
            f"client_data of session {session_id!r} would be {size} bytes of compact JSON, "
            f"over the limit of {limit} bytes"
        )
        self.session_id = session_id
        self.size = size
        self.limit = limit
        self.company_id = company_id


class LogSeq(int):
    """What ``finish_call`` returns: the log record's seq, and why the call's client_data was not merged.

    ``merge_refused`` is None when the merge was made (or there was nothing to merge); otherwise it is
    the warning the log record carries. An int, so that a caller wanting only the seq need not know.
    """

    merge_refused: str | None

    def __new__(cls, seq: int, merge_refused: str | None = None) -> LogSeq:
        value = super().__new__(cls, seq)
        value.merge_refused = merge_refused
        return value


#: A call log row is ``started`` from ``begin_call`` (before the request is sent) until ``finish_call``
#: completes it (``done``); rows written whole (nothing was sent) are ``done`` from the start.
_STARTED = "started"
_DONE = "done"


def log_view(seq: int, record: Mapping[str, Any], state: str, now: float) -> dict[str, Any]:
    """A log row as ``Store.logs`` gives it: the record, its ``seq``, and its ``state`` (see ``Store.logs``)."""
    if state == _DONE:
        shown = "recorded"
    else:
        shown = "in_flight" if now < float(record.get("expires_at") or 0) else "unknown_outcome"
    return {"seq": seq, **record, "state": shown}


def compact_json_size(value: Any) -> int:
    """Bytes of a value's compact JSON (UTF-8, no spaces): what the client_data limit measures."""
    return _dumps_sized(value)[1]


def merge_refused_warning(error: ClientDataTooLarge) -> str:
    """The warning a call's result and log carry when its response's client_data was not merged."""
    return (
        f"client_data not merged: with this response's keys the session's client_data would be {error.size} "
        f"bytes of compact JSON, over the limit of {error.limit} bytes"
    )


class AmbiguousSession(SessionNotFound):
    """A session id given without a company matches sessions of several companies (``companies``, sorted)."""

    def __init__(self, session_id: str, companies: Sequence[str] = ()) -> None:
        self.session_id = session_id
        self.companies = sorted(companies)
        listed = ", ".join(self.companies) if self.companies else "several companies"
        super().__init__(f"session {session_id!r} exists in {listed}; name the company (--company-id)")


def new_api_key() -> str:
    """A new API key: the prefix and 256 random bits (URL-safe base64)."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """What is stored for a key: its SHA-256, hex.

    A fast hash is enough here, unlike for passwords: bcrypt and its kin make each guess
    expensive because people choose guessable passwords, but a key holds 256 random bits,
    which no number of fast guesses can find. An unsalted hash is also what lets a request's
    key be looked up by an index instead of checked against every stored key.
    """
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    company_id: str
    assistant_id: str
    client_data: dict[str, Any] = field(default_factory=dict, repr=False)  # values may be secrets
    created_at: float = 0.0
    updated_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "company_id": self.company_id,
            "assistant_id": self.assistant_id,
            "client_data": self.client_data,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """One line of a company's session list: no client_data, but how many calls and when the last was."""

    id: str
    assistant_id: str
    created_at: float
    updated_at: float
    calls: int
    last_call_at: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "assistant_id": self.assistant_id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "calls": self.calls,
            "last_call_at": self.last_call_at,
        }


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key, as listed: never the key itself, only the first characters to recognise it."""

    company_id: str
    prefix: str
    label: str
    created_at: float


@dataclass(frozen=True, slots=True)
class DashboardSession:
    """A dashboard sign-in: the company, the key it was made with (by hash, so that revoking the key
    ends it), and when it expires. Found by the SHA-256 of its token; the token is never stored."""

    company_id: str
    key_hash: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class TriggerVersion:
    """One uploaded version of a company's trigger. Versions are numbered 1, 2, 3... per company and name and
    never change; a rollback appends the old document again as a new version, and a deletion appends a
    version without a document. ``digest`` is the trigger's content hash (``Trigger.version``): what a log
    record names as the version that ran."""

    company_id: str
    name: str
    version: int
    digest: str
    document: str | None  # the trigger's JSON text as uploaded; None: this version deleted the trigger
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "digest": self.digest,
            "deleted": self.document is None,
            "created_at": self.created_at,
        }


@dataclass(frozen=True, slots=True)
class SecretInfo:
    """A company secret as listed: its name and when it was last set, never its value."""

    name: str
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "updated_at": self.updated_at}


class Store(Protocol):
    """What the runtime and the service need from storage. All methods are coroutines."""

    #: A session's client_data is at most this many bytes of compact JSON (see ``compact_json_size``).
    max_client_data_bytes: int

    async def put_session(
        self,
        session_id: str,
        *,
        company_id: str | None = None,
        assistant_id: str | None = None,
        client_data: Mapping[str, Any] | None = None,
    ) -> Session:
        """Create or update a session; client_data is merged (keys replace keys), never replaced.
        ``ClientDataTooLarge`` if the merged client_data would pass ``max_client_data_bytes``."""
        ...

    async def get_session(self, session_id: str, *, company_id: str | None = None) -> Session: ...

    async def merge_client_data(
        self, session_id: str, data: Mapping[str, Any], *, company_id: str | None = None
    ) -> Session:
        """Merge into a session's client_data; ``ClientDataTooLarge`` past ``max_client_data_bytes``."""
        ...

    async def append_log(self, session_id: str, record: Mapping[str, Any], *, company_id: str | None = None) -> int: ...

    async def finish_call(
        self,
        session_id: str,
        client_data_update: Mapping[str, Any],
        record: Mapping[str, Any],
        *,
        company_id: str | None = None,
        call_seq: int | None = None,
    ) -> int:
        """Merge a response's client_data and append the call's log record, atomically; return the log seq.

        With ``call_seq`` (from ``begin_call``) the begun record is completed instead of a new one appended,
        at most once: a completion that finds it completed already (a replay from the journal) changes
        nothing, merge included.

        A merge that would take client_data past ``max_client_data_bytes`` is not made, and the call is
        logged all the same, with ``client_data_merged`` empty and a warning saying why; the ``LogSeq``
        returned carries that warning as ``merge_refused``.
        """
        ...

    async def begin_call(self, session_id: str, intent: Mapping[str, Any], *, company_id: str) -> int:
        """Record that a call is about to be sent (``intent``, a log record without an answer) and return its
        seq. Written and committed before the request leaves: if it cannot be, nothing is sent."""
        ...

    async def logs(self, session_id: str, limit: int = 100, *, company_id: str | None = None) -> list[dict[str, Any]]:
        """The session's most recent ``limit`` log records, oldest first, each with its ``seq`` and ``state``:
        ``recorded``, or for a call begun and not finished ``in_flight`` until its ``expires_at``, then
        ``unknown_outcome`` (the process stopped between sending and recording: the request may have arrived)."""
        ...

    async def list_sessions(self, company_id: str, limit: int = 100, offset: int = 0) -> list[SessionSummary]:
        """A company's sessions, most recently updated first."""
        ...

    async def add_api_key(self, company_id: str, key_hash: str, prefix: str, label: str = "") -> None: ...

    async def company_for_key(self, key_hash: str) -> str | None:
        """The company a key (given by its hash) belongs to, or None."""
        ...

    async def api_keys(self, company_id: str) -> list[ApiKey]: ...

    async def revoke_api_key(self, company_id: str, prefix: str) -> int:
        """Delete the company's keys starting with ``prefix``, and their dashboard sign-ins; return how many."""
        ...

    async def add_dashboard_session(self, token_hash: str, company_id: str, key_hash: str, expires_at: float) -> None:
        """Keep a dashboard sign-in (by its token's hash); expired ones are deleted on the way."""
        ...

    async def dashboard_session(self, token_hash: str) -> DashboardSession | None:
        """The sign-in whose token has this hash, or None if there is none or it has expired."""
        ...

    async def delete_dashboard_session(self, token_hash: str) -> None: ...

    async def set_secret(self, company_id: str, name: str, value: str) -> None:
        """Store the company's secret ``name`` (replacing any), noting when; ``ValueError`` if ``secret_problem``."""
        ...

    async def delete_secret(self, company_id: str, name: str) -> bool:
        """Delete the company's secret ``name``; False when there was none."""
        ...

    async def secret_names(self, company_id: str) -> list[SecretInfo]:
        """The company's secrets by name, with when each was set; never a value."""
        ...

    async def company_secrets(self, company_id: str) -> dict[str, str]:
        """Every secret of the company, name to value: one indexed read, made on each call of a trigger
        that uses ``$secrets.NAME``."""
        ...

    async def delete_session(self, session_id: str, *, company_id: str) -> int:
        """Delete the company's session and all its log records, in one transaction; return how many log
        records went. ``SessionNotFound`` if the company has no such session."""
        ...

    async def purge_logs(self, older_than: float, *, company_id: str | None = None) -> int:
        """Delete log records written before ``older_than`` (epoch seconds), of one company or of all;
        return how many. Deleted in batches, so that a large purge never holds the write lock for long."""
        ...

    async def put_trigger_version(
        self, company_id: str, name: str, document: str | None, digest: str
    ) -> TriggerVersion:
        """Append the next version of the company's trigger ``name`` (``document`` None deletes it) and
        return it. Numbering is per company and name, safe under concurrent writers."""
        ...

    async def trigger_versions(self, company_id: str, name: str) -> list[TriggerVersion]:
        """Every version of the company's trigger ``name``, newest first (empty if it was never uploaded)."""
        ...

    async def current_triggers(self) -> list[TriggerVersion]:
        """For every company and name, the newest version, when it has a document (not deleted)."""
        ...

    async def triggers_revision(self) -> int:
        """A number that grows with every trigger version written by any process (0 before the first): a
        replica polls it, cheaply, and reloads ``current_triggers`` when it changes."""
        ...

    async def ping(self) -> None:
        """Raise if the database cannot be reached."""
        ...

    async def probe_write(self) -> None:
        """Commit a one-row write (the ``write_probe`` table); ``StoreUnavailable`` if the database cannot
        take writes now (readiness: a database that answers reads may still refuse every write)."""
        ...

    async def close(self) -> None: ...


#: bytes.translate table: every ASCII digit to "0", every other byte to " " (see ``read_json``).
_DIGITS = bytes(48 if 48 <= b <= 57 else 32 for b in range(256))
_LONG_DIGIT_RUN = b"0" * 19


def long_digit_run(data: bytes) -> bool:
    """Whether JSON text holds 19 digits in a row, so may hold an integer beyond 64 bits, which orjson would
    turn into a float without a word. A translate and a find, both in C: a regular expression tries every
    position in Python's engine, and on a session's client_data took many times as long as the parse."""
    return data.translate(_DIGITS).find(_LONG_DIGIT_RUN) >= 0


def read_json(text: str | bytes) -> Any:
    """Stored JSON text (client_data, a log record) to data: orjson where it reads exactly, else the stdlib,
    which also reads what orjson refuses (NaN, a lone surrogate escaped by the stdlib). This runs on the
    event loop for every session read, so its cost is the session's size times the parser's speed."""
    data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    if not long_digit_run(data):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


def _dumps(value: Any) -> str:
    """JSON text for a column: orjson (several times faster on the hot path), the stdlib for what orjson
    refuses (integers beyond 64 bits, non-string keys)."""
    return _dumps_sized(value)[0]


def _dumps_sized(value: Any) -> tuple[str, int]:
    """Compact JSON text for a column, and its length in UTF-8 bytes (what the client_data limit counts).
    The stdlib writes what orjson refuses, as compactly; a lone surrogate, which UTF-8 cannot hold, escaped."""
    try:
        data = orjson.dumps(value)
    except TypeError:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        try:
            return text, len(text.encode("utf-8"))
        except UnicodeEncodeError:
            text = json.dumps(value, separators=(",", ":"))
            return text, len(text)
    return data.decode("utf-8"), len(data)
