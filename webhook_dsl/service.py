"""The HTTP service: sessions, trigger calls, call logs and the logs dashboard, for many companies.

``create_app(store, catalog)`` builds the ASGI app (Starlette); ``webhook-dsl serve`` runs it
on uvicorn. Every request but the probes (``/livez``, ``/readyz``, ``/health``) and ``/openapi.json`` carries
an API key
(``Authorization: Bearer KEY`` or ``X-Api-Key: KEY``); the key's company is the only
company the request can see: its sessions, their logs, its triggers. The company of a
session always comes from the key, never from the request body.

Triggers are compiled once, when the app is built: ``TriggerCatalog.load(directory)``
reads ``DIR/*.json`` (triggers every company has) and ``DIR/<company_id>/*.json``
(that company's own, which win over a shared trigger of the same name).

A company's secrets are written (``PUT /secrets/NAME``), listed by name and deleted, never read
back: only the runtime reads them, to fill ``$secrets.NAME``. A session's client_data is shown
with the values of the keys the company's triggers declare secret (their ``secrets``) masked:
by declaration, never by guessing from a key's name.

The runtime (one connection pool for the whole process) addresses sessions by id;
here it is handed a store that scopes every id to the company of the request being
served, so a trigger call can only read and merge into the caller's own session.

**Requests from browsers.** A key is a header, which no web page can make a browser attach
to a request to this service, but two things a page can do are refused here (``_Guard``): a
state-changing request (PUT, POST, PATCH, DELETE) from another site (an ``Origin`` that is not
this service's own, or ``Sec-Fetch-Site: cross-site``/``same-site``) is a 403 in every mode;
and with ``anonymous_company``, where no key is needed at all, only requests addressed to this
machine by name (``Host: localhost``, ``127.0.0.1``, ``[::1]``...) are answered, so that a
page cannot reach the service through a DNS name it controls that resolves to 127.0.0.1 (DNS
rebinding), and a POST must be JSON, which a page on another site cannot send without asking.
A request that carries credentials must carry valid ones, in every mode: a wrong key, an
``Authorization`` that is not ``Bearer KEY`` (``Basic``, which a browser may replay by itself),
two different keys: all 401, never the anonymous company.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ipaddress
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse as _StarletteJSONResponse
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._version import __version__
from .errors import ConfigError, DiagnosticsError
from .masking import mask_client_data
from .openapi import (
    MAX_ASSISTANT_ID,
    MAX_IMAGE_URL,
    MAX_IMAGES,
    MAX_LOGS,
    TRIGGER_NAME_PATTERN,
    openapi_document,
)
from .runtime import Runtime
from .store import (
    MAX_CLIENT_DATA_DEPTH,
    ClientDataTooLarge,
    Session,
    SessionNotFound,
    SQLiteStore,
    Store,
    StoreUnavailable,
    client_data_problems,
    company_id_problem,
    describe_json_type,
    hash_api_key,
    long_digit_run,
    secret_problem,
    session_id_problem,
)
from .trigger import Trigger, compile_trigger

__all__ = [
    "ApiError",
    "ServiceSettings",
    "TriggerCatalog",
    "TriggerLoadError",
    "create_app",
    "masked_session",
    "open_store",
    "sqlite_path",
]

log = logging.getLogger("webhook_dsl.service")
access_log = logging.getLogger("webhook_dsl.access")

_TRIGGER_NAME = re.compile(TRIGGER_NAME_PATTERN)
#: Nesting of a request's JSON: client_data (and arguments) at most MAX_CLIENT_DATA_DEPTH deep, plus the body
#: object around them; deeper is refused, not a stack overflow. client_data_problems applies the exact rule.
_MAX_DEPTH = MAX_CLIENT_DATA_DEPTH + 1


# -- triggers -------------------------------------------------------------------------------


class TriggerLoadError(Exception):
    """Trigger files that do not compile; str() is every error, as FILE:LINE:COLUMN like ``check``."""


@dataclass(frozen=True)
class TriggerCatalog:
    """Compiled triggers: those every company has, and each company's own."""

    shared: Mapping[str, Trigger] = field(default_factory=dict)
    companies: Mapping[str, Mapping[str, Trigger]] = field(default_factory=dict)
    _secret_names: dict[str, frozenset[str]] = field(default_factory=dict, init=False, repr=False, compare=False)
    _protected_keys: dict[str, frozenset[str]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def for_company(self, company_id: str) -> dict[str, Trigger]:
        return {**self.shared, **self.companies.get(company_id, {})}

    def secret_names(self, company_id: str) -> frozenset[str]:
        """The names the company's triggers declare secret (their ``secrets``, their webhooks' ``secrets``):
        the client_data keys whose values a session view masks. Worked out once per company."""
        names = self._secret_names.get(company_id)
        if names is None:
            names = frozenset(n for t in self.for_company(company_id).values() for n in t.secret_names)
            if len(self._secret_names) > 10_000:  # company ids come from keys; bounded all the same
                self._secret_names.clear()
            self._secret_names[company_id] = names
        return names

    def protected_keys(self, company_id: str) -> frozenset[str]:
        """The client_data keys no response may set for this company: every trigger's declared secrets and
        destination keys (``Trigger.protected_keys``), so one API's answer cannot move another trigger's
        calls or swap its credential. A trigger's own ``clientDataWrites`` still lets it write its keys."""
        keys = self._protected_keys.get(company_id)
        if keys is None:
            keys = frozenset(k for t in self.for_company(company_id).values() for k in t.protected_keys)
            if len(self._protected_keys) > 10_000:
                self._protected_keys.clear()
            self._protected_keys[company_id] = keys
        return keys

    def get(self, company_id: str, name: str) -> Trigger | None:
        own = self.companies.get(company_id)
        if own is not None and name in own:
            return own[name]
        return self.shared.get(name)

    def __len__(self) -> int:
        return len(self.shared) + sum(len(t) for t in self.companies.values())

    @classmethod
    def load(cls, path: str | Path) -> TriggerCatalog:
        """Compile ``DIR/*.json`` (shared) and ``DIR/<company_id>/*.json``; a file is one shared trigger.

        Raises ``TriggerLoadError`` listing every problem in every file.
        """
        root = Path(path)
        problems: list[str] = []
        if root.is_file():
            shared = _compile_all([root], problems)
            companies: dict[str, dict[str, Trigger]] = {}
        elif root.is_dir():
            shared = _compile_all(sorted(root.glob("*.json")), problems)
            companies = {}
            for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
                problem = company_id_problem(folder.name)
                if problem is not None:
                    problems.append(f"{folder}: a folder of triggers is named after a company id; {problem}")
                    continue
                companies[folder.name] = _compile_all(sorted(folder.glob("*.json")), problems)
        else:
            raise TriggerLoadError(f"{root}: no such file or directory")
        if problems:
            raise TriggerLoadError("\n".join(problems))
        return cls(shared, companies)


def _compile_all(paths: Iterable[Path], problems: list[str]) -> dict[str, Trigger]:
    triggers: dict[str, Trigger] = {}
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            problems.append(f"{path}: cannot read: {error}")
            continue
        try:
            trigger = compile_trigger(text, source=str(path))
            undefined = trigger.undefined_references()
            if undefined:
                raise ConfigError(undefined)
        except DiagnosticsError as error:
            problems.append(str(error))
            continue
        if trigger.name in triggers:
            problems.append(f"{path}: trigger name {trigger.name!r} is also used by {triggers[trigger.name].source}")
            continue
        triggers[trigger.name] = trigger
    return triggers


# -- storage ----------------------------------------------------------------------------------


def _is_postgresql(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def _sqlite_target(url: str) -> str:
    """What SQLite opens for a ``--database`` value that is not PostgreSQL's; ValueError if it is neither."""
    if url.startswith("sqlite://"):
        path = url[len("sqlite://") :]
        if not path.startswith("/"):
            raise ValueError(f"{url!r}: write sqlite:///relative/path.db or sqlite:////absolute/path.db")
        return path[1:] or ":memory:"
    if "://" in url:
        raise ValueError(f"{url!r}: the database is sqlite:///FILE or postgresql://USER@HOST/DB")
    return url


def sqlite_path(url: str) -> str | None:
    """The file a ``--database`` value names when it is SQLite, as ``open_store`` reads it; None for
    PostgreSQL and for an in-memory or ``file:`` URI database (no file of ours to look at)."""
    if _is_postgresql(url):
        return None
    target = _sqlite_target(url)
    return None if target in ("", ":memory:") or target.startswith("file:") else target


def open_store(url: str) -> Store:
    """``sqlite:///relative.db``, ``sqlite:////absolute.db``, a plain path, or ``postgresql://...``."""
    if _is_postgresql(url):
        from .pgstore import PostgresStore

        return PostgresStore(url)
    return SQLiteStore(_sqlite_target(url))


# -- errors -----------------------------------------------------------------------------------


class ApiError(Exception):
    """An error answered as ``{"error": {"code", "message"}}`` with its status."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


class _PayloadTooLarge(Exception):
    """A body that passed its limit while it was read; str() is the message to answer with."""


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    421: "misdirected_request",
    429: "too_many_requests",
    500: "internal",
    503: "unavailable",
}


class JSONResponse(_StarletteJSONResponse):
    """JSON as UTF-8; a lone surrogate (a remote can send one as ``\\ud800``) goes out escaped, not as a 500."""

    def render(self, content: Any) -> bytes:
        try:  # orjson: a tenth of the stdlib's time; it refuses integers beyond 64 bits and lone surrogates
            return orjson.dumps(content)
        except TypeError:
            pass
        try:
            return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        except UnicodeEncodeError:
            return json.dumps(content, separators=(",", ":")).encode("ascii")


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}},
        status_code=status,
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


async def _api_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ApiError)
    return error_response(error.status, error.code, error.message, error.headers)


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    status = error.status_code
    message = error.detail
    if status == 404:
        message = f"no such endpoint: {request.method} {request.url.path}"
    elif status == 405:
        message = f"{request.method} is not allowed here; use {(error.headers or {}).get('Allow', 'another method')}"
    return error_response(status, _STATUS_CODES.get(status, "error"), message, error.headers)


async def _too_large(request: Request, error: Exception) -> Response:
    limit = request.app.state.settings.max_body_bytes
    return error_response(413, "payload_too_large", str(error) or f"the request body is larger than {limit} bytes")


def _internal(scope: Scope, error: Exception) -> Response:
    """The answer to an exception nothing else handled (a bug), logged here once with its traceback."""
    log.error("internal error on %s %s", scope.get("method"), scope.get("path"), exc_info=error)
    return error_response(500, "internal", "internal error; the service log has the details")


#: The longest ``Retry-After`` the service asks for, in seconds, whatever a store suggests.
_MAX_RETRY_AFTER = 3600


def retry_seconds(retry_after: float) -> int:
    """``StoreUnavailable.retry_after`` as a ``Retry-After`` header takes it: whole seconds, rounded up, at
    least 1 (``0`` would invite an immediate retry storm against a database that is down)."""
    if not isinstance(retry_after, int | float) or not math.isfinite(retry_after):
        return 1
    return min(_MAX_RETRY_AFTER, max(1, math.ceil(retry_after)))


def _one_line(error: BaseException, limit: int = 500) -> str:
    """An error's text on one line (a backend's message can span several), cut at ``limit`` characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


_TRIGGER_CALL = re.compile(r"/session/[^/]+/triggers/[^/]+\Z")


async def _store_unavailable(request: Request, error: Exception) -> Response:
    """A store outage: 503 with ``Retry-After``, a warning without a traceback (an outage is not a bug, and
    a traceback per request would bury the one line that says what happened). The answer keeps the
    backend's words out: they name files and hosts, and they are in the log."""
    assert isinstance(error, StoreUnavailable)
    seconds = retry_seconds(error.retry_after)
    log.warning(
        "the database is unavailable (%s %s answered 503, Retry-After %d): %s",
        request.method,
        request.url.path,
        seconds,
        _one_line(error),
    )
    if request.method == "POST" and _TRIGGER_CALL.match(request.url.path):
        refused = "this trigger call was refused and nothing was sent"
    else:
        refused = "this request was refused"
    return error_response(
        503,
        "store_unavailable",
        f"the database is unavailable (the service log has the reason), so {refused}; retry after {seconds} s",
        {"Retry-After": str(seconds)},
    )


# -- settings and middleware --------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceSettings:
    max_body_bytes: int = 1024 * 1024  # a request body larger than this is refused with 413
    key_cache_seconds: float = 10.0  # a key's company is remembered this long (so a revoked key works this long)
    access_log: bool = True  # one line per request: method, path (never the query string), status, ms
    dashboard: bool = True
    #: Requests with no key at all are served as this company (local trials: the seed's bare curl).
    #: Off by default; a request with a wrong key is still refused, and only requests addressed to
    #: localhost, 127.0.0.1 or [::1] are answered at all (see the module's docstring).
    anonymous_company: str | None = None
    #: A session's client_data holds at most this many bytes of compact JSON; a PUT past it is a 413 and
    #: a webhook response's merge past it is refused with a warning. None: the store's own limit
    #: (``DEFAULT_MAX_CLIENT_DATA_BYTES``, 256 KiB, unless the store was made with another).
    max_client_data_bytes: int | None = None
    #: At most this many requests of one company are processed at once; more is a 429 (``Retry-After: 1``).
    #: One event loop serves every company, so this bounds the share of it one company can take. A trigger
    #: call counts while the service reads and checks its body, not while the runtime makes the call: a
    #: company may have many slow webhooks waiting at once, which costs the loop little. The default is
    #: a well-behaved backend's connection pool (the load test's is 64), not a flood. None: no limit.
    max_requests_per_company: int | None = 64
    #: The share of the event loop's time one company's large bodies (past ``LARGE_BODY_BYTES``) may take to
    #: be parsed and checked, averaged over time; past it, its next large body is a 429 with ``Retry-After``.
    #: A 60,000-key object costs tens of milliseconds of the loop every company shares; small bodies are
    #: never refused by this. None: no limit.
    large_body_share: float | None = 0.1

    def __post_init__(self) -> None:
        if self.max_requests_per_company is not None and self.max_requests_per_company < 1:
            raise ValueError("max_requests_per_company must be at least 1, or None for no limit")
        if self.large_body_share is not None and not 0 < self.large_body_share <= 1:
            raise ValueError("large_body_share must be more than 0 and at most 1, or None for no limit")


#: An urlencoded body (``curl -d``) is at most this many bytes, whatever ``max_body_bytes`` is. Its
#: percent-escapes are decoded in Python, at several times the cost per byte of parsing JSON, all on the
#: one event loop; 64 KiB of them costs a few milliseconds. A form that large is a mistake or an attack:
#: JSON, or a multipart field (``curl -F``), carries client_data as it is, up to ``max_body_bytes``.
MAX_URLENCODED_BYTES = 64 * 1024
_URLENCODED = "application/x-www-form-urlencoded"


def _urlencoded_too_large(limit: int) -> str:
    return (
        f"an urlencoded form ({_URLENCODED}) is at most {limit} bytes here; send client_data as JSON "
        "(Content-Type: application/json) or as a multipart form field (curl -F 'client_data={...}')"
    )


#: A request body past this many bytes is a large one: the time spent parsing and checking it is charged to
#: its company's share of the event loop (``ServiceSettings.large_body_share``).
LARGE_BODY_BYTES = 64 * 1024
#: How much loop time a company's large bodies may take at once before the share is enforced, in seconds.
_LARGE_BODY_BURST_S = 0.05


class _CompanyLimit:
    """How many requests each company has being processed (``enter`` past the limit is a 429), and how much
    of the loop its large bodies have taken (a leaky bucket: ``charge`` adds the seconds, which drain at
    ``share`` seconds per second; ``admit_large`` refuses while more than a burst is left).

    Only the event loop's thread touches it, so plain numbers are enough."""

    def __init__(self, limit: int | None, share: float | None = None) -> None:
        self.limit = limit
        self.active: dict[str, int] = {}
        self.share = share
        self.debts: dict[str, tuple[float, float]] = {}  # company -> (seconds owed, when)

    def _debt(self, company: str, now: float) -> float:
        owed, at = self.debts.get(company, (0.0, now))
        return max(0.0, owed - (now - at) * (self.share or 1.0))

    def admit_large(self, company: str) -> None:
        if self.share is None:
            return
        owed = self._debt(company, time.monotonic())
        if owed > _LARGE_BODY_BURST_S:
            wait = math.ceil((owed - _LARGE_BODY_BURST_S) / self.share)
            raise ApiError(
                429,
                "too_many_requests",
                f"this API key's company has sent more large bodies (over {LARGE_BODY_BYTES} bytes) than the "
                f"service parses for one company ({self.share:.0%} of its time); retry after {wait} s, or send "
                "smaller bodies",
                headers={"Retry-After": str(wait)},
            )

    def charge(self, company: str, seconds: float) -> None:
        if self.share is None:
            return
        now = time.monotonic()
        owed = self._debt(company, now) + seconds
        if len(self.debts) >= 4096:  # drop the paid-up ones
            self.debts = {c: d for c, d in self.debts.items() if self._debt(c, now) > 0}
        self.debts[company] = (owed, now)

    def enter(self, company: str) -> None:
        count = self.active.get(company, 0)
        if self.limit is not None and count >= self.limit:
            raise ApiError(
                429,
                "too_many_requests",
                f"this API key's company already has {self.limit} requests being processed; retry after a "
                "second, or send fewer at once (serve --max-requests-per-company sets the limit)",
                headers={"Retry-After": "1"},
            )
        self.active[company] = count + 1

    def leave(self, company: str) -> None:
        count = self.active[company] - 1
        if count:
            self.active[company] = count
        else:
            del self.active[company]


class _Slot:
    """A request's place in its company's count: taken once the company is known (``company_of``), given
    back by ``_Guard`` when the response is sent, or earlier by ``release`` (a trigger call, before the
    runtime makes it)."""

    def __init__(self, limit: _CompanyLimit) -> None:
        self.limit = limit
        self.company: str | None = None

    def take(self, company: str) -> None:
        if self.company is None:
            self.limit.enter(company)
            self.company = company

    def release(self) -> None:
        if self.company is not None:
            self.limit.leave(self.company)
            self.company = None


class _LargeBody:
    """``with _LargeBody(size):`` around parsing and checking a request body: a large one is refused while its
    company is over its share of the loop, and the time it takes is charged to that company."""

    def __init__(self, size: int) -> None:
        slot = _slot.get()
        self.owner = slot if slot is not None and slot.company is not None and size > LARGE_BODY_BYTES else None
        self.started = 0.0

    def __enter__(self) -> None:
        if self.owner is not None:
            assert self.owner.company is not None
            self.owner.limit.admit_large(self.owner.company)
            self.started = time.perf_counter()

    def __exit__(self, *exc_info: object) -> None:
        if self.owner is not None and self.owner.company is not None:
            self.owner.limit.charge(self.owner.company, time.perf_counter() - self.started)


_slot: contextvars.ContextVar[_Slot | None] = contextvars.ContextVar("webhook_dsl_slot", default=None)


class _Guard:
    """The layer around every request: who may ask (the Host in anonymous mode, no cross-site state change),
    the body size limit (413), the access log, which never prints query strings, and the 500 for an
    exception nothing else handled.

    That 500 is answered here, not by Starlette's ``ServerErrorMiddleware`` (outside this layer), because
    that one re-raises after answering and uvicorn then closes the connection without ``Connection:
    close``: a client's next request on its pooled connection would fail with a reset. Here the exception
    is logged once, answered, and the connection stays usable. Only an exception after part of a response
    went out is re-raised: then closing the connection is the one way left to tell the client."""

    def __init__(self, app: ASGIApp, settings: ServiceSettings, limit: _CompanyLimit | None = None) -> None:
        self.app = app
        self.settings = settings
        self.limit = limit or _CompanyLimit(settings.max_requests_per_company, settings.large_body_share)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        limit = self.settings.max_body_bytes
        too_large = f"the request body is larger than {limit} bytes"
        if any(_URLENCODED in kind.lower() for kind in _header(scope, b"content-type")):
            limit = min(limit, MAX_URLENCODED_BYTES)
            too_large = _urlencoded_too_large(limit)
        slot = _Slot(self.limit)
        slot_token = _slot.set(slot)
        complete = False

        async def send_and_note(message: Message) -> None:
            nonlocal status, complete
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                complete = True
            await send(message)

        try:
            refusal = _refusal(scope, self.settings)
            if refusal is not None:
                await refusal(scope, receive, send_and_note)
                return
            try:
                declared = _content_length(scope)
            except ValueError:
                declared = -1
            if declared is not None and (declared < 0 or declared > limit):
                response: Response = (
                    error_response(400, "bad_request", "the Content-Length header is not a number")
                    if declared < 0
                    else error_response(413, "payload_too_large", too_large)
                )
                await response(scope, receive, send_and_note)
                return
            received = 0

            async def limited_receive() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise _PayloadTooLarge(too_large)
                return message

            await self.app(scope, limited_receive, send_and_note)
        except Exception as error:
            if status and not complete:
                raise  # half a response is out: uvicorn closes the connection (and logs the exception)
            response = _internal(scope, error)
            if not status:
                await response(scope, receive, send_and_note)
        finally:
            slot.release()
            _slot.reset(slot_token)
            if self.settings.access_log:
                access_log.info(
                    "%s %s %s %.1fms",
                    scope["method"],
                    scope["path"],
                    status or 500,
                    (time.perf_counter() - started) * 1000,
                )


#: Methods that change something: a web page on another site must not be able to send one here.
_STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_HOST = re.compile(r"(?:\[(?P<ip6>[0-9a-f:.]+)\]|(?P<name>[a-z0-9._-]+))(?::(?P<port>[0-9]{1,5}))?\Z")
_ORIGIN = re.compile(r"(?P<scheme>https?)://(?P<authority>[^/?#@\s]+)\Z")
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def _header(scope: Scope, name: bytes) -> list[str]:
    return [value.decode("latin-1") for key, value in scope["headers"] if key == name]


def names_loopback(host: str) -> bool:
    """Whether a Host header names this machine, whatever the port: ``localhost`` or a name under it
    (RFC 6761 keeps them on loopback; browsers resolve them so without asking DNS), an address in
    127.0.0.0/8, or ``[::1]``. A name that DNS resolves to 127.0.0.1 does not count: that is how DNS
    rebinding reaches a local service."""
    match = _HOST.match(host.strip().lower())
    if match is None or (match["port"] is not None and not 0 < int(match["port"]) < 65536):
        return False
    if match["ip6"] is not None:
        try:
            address = ipaddress.IPv6Address(match["ip6"])
        except ValueError:
            return False
        mapped = address.ipv4_mapped
        return address.is_loopback or (mapped is not None and mapped.is_loopback)
    name = match["name"].removesuffix(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.IPv4Address(name).is_loopback
    except ValueError:  # 127.1, 0x7f.1, 2130706433: no browser sends those as a Host
        return False


def _same_origin(origin: str, scheme: str, host: str | None) -> bool:
    """Whether an Origin header names this service: its host and port are the request's Host. The schemes
    are not compared, since behind a proxy that ends TLS the service may see http for an https page."""
    match = _ORIGIN.match(origin.strip().lower())
    if match is None or host is None:
        return False  # "null" (a sandboxed frame, a redirect), or not an origin at all
    theirs = match["authority"].removesuffix(_DEFAULT_PORTS[match["scheme"]])
    ours = host.strip().lower().removesuffix(_DEFAULT_PORTS.get(scheme, ":80"))
    return theirs == ours


def _refusal(scope: Scope, settings: ServiceSettings) -> Response | None:
    """The answer to a request this service must not serve at all, or None. See the module's docstring."""
    hosts = _header(scope, b"host")
    host = hosts[0] if len(hosts) == 1 else None
    if settings.anonymous_company is not None and (host is None or not names_loopback(host)):
        shown = "no Host header" if not hosts else f"Host {hosts[0][:100]!r}"
        return error_response(
            421,
            "misdirected_request",
            "this service runs with --anonymous-company (no key needed), so it answers only requests addressed "
            f"to this machine: Host localhost, 127.0.0.1 or [::1], any port; this request has {shown}",
        )
    method = scope["method"]
    if method not in _STATE_CHANGING:
        return None
    sites = {site.strip().lower() for site in _header(scope, b"sec-fetch-site")}
    if sites & {"cross-site", "same-site"}:
        return error_response(
            403,
            "forbidden",
            f"{method} from a page of another site is refused (Sec-Fetch-Site: {', '.join(sorted(sites))}): "
            "send it from a backend, or from this service's own pages",
        )
    for origin in _header(scope, b"origin"):
        # "null" is what a browser sends for a page whose referrer policy is no-referrer, even to its own
        # origin; Sec-Fetch-Site, which no page can set, then says whether it was.
        if origin.strip() == "null" and sites == {"same-origin"}:
            continue
        if not _same_origin(origin, scope.get("scheme", "http"), host):
            return error_response(
                403,
                "forbidden",
                f"{method} from a page of another origin is refused (Origin {origin[:100]!r} is not this "
                "service's): send it from a backend, or from this service's own pages",
            )
    path = scope["path"]
    if settings.anonymous_company is not None and method == "POST" and not path.startswith("/dashboard/"):
        kinds = _header(scope, b"content-type")
        kind = kinds[0].split(";", 1)[0].strip().lower() if kinds else ""
        if kind != "application/json" and not kind.endswith("+json"):
            return error_response(
                415,
                "unsupported_media_type",
                "with --anonymous-company a POST must be JSON (Content-Type: application/json), even an empty "
                "one: a page on another site cannot send JSON here without the service's consent",
            )
    return None


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value)  # ValueError (or a negative number): answered 400 by _Guard
    return None


class _KeyCache:
    """key hash -> company, remembered ``ttl`` seconds; unknown keys are never remembered."""

    def __init__(self, store: Store, ttl: float) -> None:
        self.store = store
        self.ttl = ttl
        self._known: dict[str, tuple[str, float]] = {}

    async def company(self, key: str) -> str | None:
        return await self.company_for_hash(hash_api_key(key))

    async def company_for_hash(self, digest: str) -> str | None:
        """The company of the key with this hash (a dashboard sign-in keeps only the hash)."""
        now = time.monotonic()
        hit = self._known.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        company = await self.store.company_for_key(digest)
        if company is not None and self.ttl > 0:
            if len(self._known) > 10_000:
                self._known.clear()
            self._known[digest] = (company, now + self.ttl)
        return company


_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="webhook-dsl"'}


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, _CHALLENGE)


def request_key(request: Request) -> str | None:
    """The API key of a request: ``Authorization: Bearer KEY`` or ``X-Api-Key: KEY``; None if it carries none.

    Credentials that are there must be well formed (``ApiError`` 401 otherwise): a request with ``Basic``
    credentials, a bare ``Bearer``, an empty ``X-Api-Key``, two of a header or two different keys is
    refused, never read as a request without a key (which ``anonymous_company`` would serve).
    """
    authorizations = request.headers.getlist("authorization")
    api_keys = request.headers.getlist("x-api-key")
    if len(authorizations) > 1 or len(api_keys) > 1:
        raise _unauthorized("send one Authorization header or one X-Api-Key header, not several")
    keys: set[str] = set()
    if authorizations:
        scheme, _, value = authorizations[0].strip().partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer" or not value or any(c.isspace() for c in value):
            raise _unauthorized("the Authorization header must be 'Bearer KEY'; no other scheme is accepted")
        keys.add(value)
    if api_keys:
        value = api_keys[0].strip()
        if not value:
            raise _unauthorized("the X-Api-Key header is empty")
        keys.add(value)
    if len(keys) > 1:
        raise _unauthorized("Authorization and X-Api-Key hold different keys; send one key")
    return keys.pop() if keys else None


async def company_of(request: Request) -> str:
    """The company of the request's API key; 401 without one. The request then counts as one of the
    company's requests being processed, or is a 429 if it already has as many as it may (``_CompanyLimit``)."""
    key = request_key(request)
    anonymous = request.app.state.settings.anonymous_company
    if key is None and anonymous is not None:
        company = str(anonymous)
    elif key is None:
        raise _unauthorized("send an API key: 'Authorization: Bearer KEY' or 'X-Api-Key: KEY'")
    else:
        found = await request.app.state.keys.company(key)
        if found is None:
            raise _unauthorized("the API key is not valid")
        company = str(found)
    slot = _slot.get()
    if slot is not None:
        slot.take(company)
    return company


# -- request parsing --------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_json(data: bytes | str, what: str, *, nesting: bool = True) -> Any:
    """A request's JSON: orjson when it reads the text exactly (a tenth of the time), else the stdlib,
    which also words every refusal. orjson refuses NaN, lone surrogates and out-of-range numbers itself.

    ``nesting=False``: the caller checks the nesting itself, in the walk it makes anyway (client_data's,
    ``client_data_problems``), so a PUT is walked once; orjson's own limit (1,024 levels) still holds, and
    the stdlib's result is always checked here, as its encoding check below recurses."""
    if isinstance(data, bytes) and not long_digit_run(data):
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # the stdlib below says what is wrong, or accepts what orjson does not (1e400)
        else:
            if nesting and _too_deep(value):
                raise ApiError(400, "bad_request", f"{what}: nested deeper than {MAX_CLIENT_DATA_DEPTH} levels")
            return value
    try:
        value = json.loads(data, parse_constant=_reject_constant)
    except RecursionError:
        raise ApiError(400, "bad_request", f"{what}: nested too deeply") from None
    except ValueError as error:  # JSONDecodeError, bad UTF-8, NaN, an integer too long
        raise ApiError(400, "bad_request", f"{what}: not valid JSON ({error})") from None
    if _too_deep(value):
        raise ApiError(400, "bad_request", f"{what}: nested deeper than {MAX_CLIENT_DATA_DEPTH} levels")
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, "bad_request", f"{what}: holds a lone UTF-16 surrogate (\\ud800-\\udfff)") from None
    return value


_CONTAINERS = frozenset({dict, list})


def _too_deep(value: Any) -> bool:
    """Whether more than ``_MAX_DEPTH`` objects and arrays nest in a parsed document. Iterative, and a
    container with nothing nested in it is passed over in C (``map(type, ...)``): a 60,000-key object
    costs no Python loop over its keys."""
    if type(value) not in _CONTAINERS:
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, level = stack.pop()
        if level > _MAX_DEPTH:
            return True
        items = node.values() if type(node) is dict else node
        if _CONTAINERS.isdisjoint(map(type, items)):
            continue
        stack.extend((item, level + 1) for item in items if type(item) in _CONTAINERS)
    return False


def _depth(value: Any, level: int = 0) -> int:
    """How many objects and arrays nest in a document, counted up to just past ``_MAX_DEPTH``: the rule
    ``_too_deep`` applies, written plainly (recursive, item by item) for the tests to hold it to."""
    if level > _MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def _session_id(request: Request) -> str:
    session_id = str(request.path_params["session_id"])
    problem = session_id_problem(session_id)
    if problem is not None:
        raise ApiError(400, "bad_request", problem)
    return session_id


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _check_client_data(value: Any, limit: int) -> dict[str, Any]:
    """client_data as a PUT gives it, checked cheapest first: an object; then its size, which orjson
    measures in C, so an update past the limit is refused before any walk over its keys (the store
    measures it the same way and would refuse it anyway); then the one walk over it, which also bounds its
    nesting (``_parse_json`` left that to this walk)."""
    if not isinstance(value, dict):
        if _too_deep(value):  # the first thing wrong with it, as a body's nesting is checked before its shape
            raise ApiError(400, "bad_request", f"client_data: nested deeper than {MAX_CLIENT_DATA_DEPTH} levels")
        raise ApiError(400, "bad_request", f"client_data must be a JSON object, not {describe_json_type(value)}")
    try:
        size = len(orjson.dumps(value))
    except orjson.JSONEncodeError:  # nested past orjson's limit, a lone surrogate: the walk says which
        size = 0
    if size > limit:
        raise _client_data_too_large(size, limit)
    problems = client_data_problems(value)
    if problems:
        raise ApiError(400, "bad_request", "; ".join(problems))
    return value


def _client_data_too_large(size: int, limit: int) -> ApiError:
    return ApiError(
        413,
        "client_data_too_large",
        f"client_data would be {size} bytes of compact JSON after this update, over the limit of "
        f"{limit} bytes per session; nothing was stored (set keys the session no longer needs to null "
        "to make room; serve --max-client-data-bytes sets the limit)",
    )


def _only(fields: Iterable[str], allowed: tuple[str, ...], where: str, owned: str = "a session") -> None:
    for name in fields:
        if name == "company_id":
            raise ApiError(
                400, "bad_request", f"company_id cannot be sent: {owned} belongs to the company of the API key"
            )
        if name not in allowed:
            raise ApiError(400, "bad_request", f"unknown field {name!r} in {where}; known: {', '.join(allowed)}")


async def _session_update(request: Request) -> tuple[dict[str, Any] | None, str | None]:
    """client_data and assistant_id from a JSON body or a form (multipart or urlencoded)."""
    kind = _media_type(request)
    if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        try:
            declared = _content_length(request.scope) or 0
        except ValueError:
            declared = 0
        with _LargeBody(declared):
            return _checked_update(await _form_fields(request), request)
    body = await request.body()
    if not body.strip():
        return None, None
    if kind != "application/json" and not kind.endswith("+json"):
        raise ApiError(
            415,
            "unsupported_media_type",
            "send client_data as JSON (Content-Type: application/json) or as a form field (curl -F)",
        )
    with _LargeBody(len(body)):
        # only client_data can nest (_only, and assistant_id is a string), and _check_client_data bounds it
        document = _parse_json(body, "the body", nesting=False)
        if not isinstance(document, dict):
            raise ApiError(400, "bad_request", f"the body must be a JSON object, not {describe_json_type(document)}")
        _only(document, ("client_data", "assistant_id"), "the body")
        return _checked_update(document, request)


async def _form_fields(request: Request) -> dict[str, Any]:
    """A PUT's form fields, client_data parsed as JSON."""
    limit = request.app.state.settings.max_body_bytes
    body_fields: dict[str, Any] = {}
    async with request.form(max_files=2, max_fields=20, max_part_size=limit) as form:  # closes uploads
        for name, value in form.multi_items():
            if name in body_fields:
                raise ApiError(400, "bad_request", f"form field {name!r} is given more than once")
            body_fields[name] = await value.read() if isinstance(value, UploadFile) else value
    _only(body_fields, ("client_data", "assistant_id"), "the form")
    if "client_data" in body_fields:
        body_fields["client_data"] = _parse_json(body_fields["client_data"], "the client_data field", nesting=False)
    if isinstance(body_fields.get("assistant_id"), bytes):
        try:
            body_fields["assistant_id"] = body_fields["assistant_id"].decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "bad_request", "assistant_id is not UTF-8 text") from None
    return body_fields


def _checked_update(body_fields: dict[str, Any], request: Request) -> tuple[dict[str, Any] | None, str | None]:
    """client_data and assistant_id of a PUT, each checked."""
    assistant_id = body_fields.get("assistant_id")
    if "assistant_id" in body_fields:
        if not isinstance(assistant_id, str):
            raise ApiError(400, "bad_request", "assistant_id must be a string")
        if len(assistant_id) > MAX_ASSISTANT_ID or "\x00" in assistant_id:
            raise ApiError(400, "bad_request", f"assistant_id: at most {MAX_ASSISTANT_ID} characters, no NUL character")
    limit = request.app.state.store.max_client_data_bytes
    client_data = _check_client_data(body_fields["client_data"], limit) if "client_data" in body_fields else None
    return client_data, assistant_id


def masked_session(session: Session, secret_names: Iterable[str], secret_values: Iterable[str] = ()) -> dict[str, Any]:
    """A session as the API and the dashboard show it: the values of the keys declared secret (see
    ``TriggerCatalog.secret_names``) replaced by ***, and those values and the company's secrets masked
    wherever else they appear."""
    data = session.to_dict()
    data["client_data"] = mask_client_data(session.client_data, secret_names, secret_values)
    return data


async def session_view(request: Request, company: str, session: Session) -> dict[str, Any]:
    """The session as the API and the dashboard show it (one read of the company's secrets)."""
    catalog: TriggerCatalog = request.app.state.catalog
    store: Store = request.app.state.store
    secrets = await store.company_secrets(company)
    return masked_session(session, catalog.secret_names(company), secrets.values())


# -- endpoints ----------------------------------------------------------------------------------


#: How long the outcome of a readiness probe (a committed write) is reused, success or failure: however many
#: load balancers and orchestrators ask, the database sees at most about one probe write a second.
READINESS_CACHE_SECONDS = 1.0


class _Readiness:
    """Whether the store takes writes now, found by committing one (``Store.probe_write``). A database can
    answer reads (the old ``SELECT 1``) while refusing every write: disk full, read-only, a standby.

    The outcome is reused for ``READINESS_CACHE_SECONDS``, and probes that arrive while one is being made
    wait for it rather than making their own. A change of state is logged once, not every probe."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.failure: StoreUnavailable | None = None
        self.checked_at = -math.inf
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    def _fresh(self) -> bool:
        return time.monotonic() - self.checked_at < READINESS_CACHE_SECONDS

    async def failure_now(self) -> StoreUnavailable | None:
        """None when the store takes writes, else why not (cached, see the class)."""
        if self._fresh():
            return self.failure
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:  # a lock serves one event loop
            self._lock, self._lock_loop = asyncio.Lock(), loop
        async with self._lock:
            if self._fresh():
                return self.failure
            failure: StoreUnavailable | None = None
            try:
                await self.store.probe_write()
            except StoreUnavailable as error:
                failure = error
            except Exception as error:  # whatever the backend raised, a store that cannot write is not ready
                failure = StoreUnavailable(f"the write probe failed: {type(error).__name__}: {error}")
                failure.__cause__ = error
            if failure is not None and self.failure is None:
                log.warning("not ready: the database takes no writes: %s", _one_line(failure))
            elif failure is None and self.failure is not None:
                log.info("ready again: the database takes writes")
            self.failure = failure
            self.checked_at = time.monotonic()
            return failure


async def _probe(request: Request, status: str) -> Response:
    """The readiness answer, with ``status`` as the word for ready."""
    failure = await request.app.state.readiness.failure_now()
    if failure is not None:
        seconds = retry_seconds(failure.retry_after)
        return error_response(
            503,
            "store_unavailable",
            f"not ready: the database is unavailable for writes ({_one_line(failure, 300)}); retry after {seconds} s",
            {"Retry-After": str(seconds)},
        )
    store: Store = request.app.state.store
    return JSONResponse(
        {"status": status, "store": getattr(store, "kind", "sqlite"), "version": __version__},
        headers={"Cache-Control": "no-store"},
    )


async def readyz(request: Request) -> Response:
    """Readiness: 200 while the database takes writes, else 503 ``store_unavailable`` with ``Retry-After``.
    What a load balancer should route by."""
    return await _probe(request, "ready")


async def health(request: Request) -> Response:
    """``/readyz`` under its old name, answering ``"ok"`` as it always did, so existing monitors keep
    working and now learn when writes fail."""
    return await _probe(request, "ok")


async def livez(request: Request) -> Response:
    """Liveness: the process answers. Never touches the store, so an orchestrator does not restart a healthy
    process for a database outage, which a restart would not cure."""
    return JSONResponse({"status": "alive"}, headers={"Cache-Control": "no-store"})


async def openapi(request: Request) -> Response:
    return JSONResponse(request.app.state.openapi)


async def put_session(request: Request) -> Response:
    company = await company_of(request)
    session_id = _session_id(request)
    client_data, assistant_id = await _session_update(request)
    store: Store = request.app.state.store
    try:
        session = await store.put_session(
            session_id, company_id=company, assistant_id=assistant_id, client_data=client_data
        )
    except ClientDataTooLarge as error:
        raise _client_data_too_large(error.size, error.limit) from None
    return JSONResponse(await session_view(request, company, session))


async def _existing_session(request: Request, company: str, session_id: str) -> Session:
    store: Store = request.app.state.store
    try:
        return await store.get_session(session_id, company_id=company)
    except SessionNotFound:
        raise ApiError(
            404, "session_not_found", f"no session {session_id!r} for this API key's company; PUT it first"
        ) from None


async def get_session(request: Request) -> Response:
    company = await company_of(request)
    session_id = _session_id(request)
    return JSONResponse(await session_view(request, company, await _existing_session(request, company, session_id)))


def _int_query(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, "bad_request", f"{name} must be an integer from {low} to {high}") from None
    if not low <= value <= high:
        raise ApiError(400, "bad_request", f"{name} must be an integer from {low} to {high}")
    return value


async def get_logs(request: Request) -> Response:
    company = await company_of(request)
    session_id = _session_id(request)
    limit = _int_query(request, "limit", 100, 1, MAX_LOGS)
    await _existing_session(request, company, session_id)
    store: Store = request.app.state.store
    records = await store.logs(session_id, limit, company_id=company)
    return JSONResponse({"session_id": session_id, "logs": records})


def _call_document(body: bytes) -> tuple[dict[str, Any], list[str], bool]:
    """A trigger call's arguments, images and dry_run flag, from its JSON body."""
    with _LargeBody(len(body)):
        document = _parse_json(body, "the body")
    if not isinstance(document, dict):
        raise ApiError(400, "bad_request", f"the body must be a JSON object, not {describe_json_type(document)}")
    _only(document, ("arguments", "images", "dry_run"), "the body")
    arguments = document.get("arguments", {})
    if not isinstance(arguments, dict):
        raise ApiError(400, "bad_request", f"arguments must be a JSON object, not {describe_json_type(arguments)}")
    images = document.get("images", [])
    if (
        not isinstance(images, list)
        or len(images) > MAX_IMAGES
        or not all(isinstance(i, str) and len(i) <= MAX_IMAGE_URL for i in images)
    ):
        raise ApiError(
            400,
            "bad_request",
            f"images must be an array of at most {MAX_IMAGES} strings (URLs of at most {MAX_IMAGE_URL} characters)",
        )
    dry_run = document.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise ApiError(400, "bad_request", "dry_run must be true or false")
    return arguments, images, dry_run


async def call_trigger(request: Request) -> Response:
    company = await company_of(request)
    session_id = _session_id(request)
    name = str(request.path_params["name"])
    catalog: TriggerCatalog = request.app.state.catalog
    trigger = catalog.get(company, name) if _TRIGGER_NAME.match(name) else None
    body = await request.body()
    arguments: dict[str, Any] = {}
    images: list[str] = []
    dry_run = False
    if body.strip():
        kind = _media_type(request)
        if kind != "application/json" and not kind.endswith("+json"):
            raise ApiError(415, "unsupported_media_type", "send the call as JSON (Content-Type: application/json)")
        arguments, images, dry_run = _call_document(body)
    if trigger is None:
        raise ApiError(404, "trigger_not_found", f"no trigger {name!r} for this API key's company; see GET /triggers")
    slot = _slot.get()
    if slot is not None:  # what is left is the runtime's: mostly waiting on the remote, bounded by its own caps
        slot.release()
    runtime: Runtime = request.app.state.runtime
    try:
        result = await runtime.call_trigger(
            trigger,
            session_id,
            arguments,
            images,
            dry_run=dry_run,
            protected_keys=catalog.protected_keys(company),
            company_id=company,
        )
    except SessionNotFound:
        raise ApiError(
            404, "session_not_found", f"no session {session_id!r} for this API key's company; PUT it first"
        ) from None
    return JSONResponse({"message_for_llm": result.message_for_llm, "result": result.to_dict()})


def _secret_name(request: Request) -> str:
    name = str(request.path_params["name"])
    problem = secret_problem(name)
    if problem is not None:
        raise ApiError(400, "bad_request", problem)
    return name


#: Said whenever a secret's body cannot be read: the parser's own words could quote part of the value.
_SECRET_BODY = 'send the secret as JSON: {"value": "..."} (Content-Type: application/json)'


async def put_secret(request: Request) -> Response:
    """Store one of the company's secrets. Nothing of the value is ever answered, logged or quoted in an error."""
    company = await company_of(request)
    name = _secret_name(request)
    kind = _media_type(request)
    if kind != "application/json" and not kind.endswith("+json"):
        raise ApiError(415, "unsupported_media_type", _SECRET_BODY)
    body = await request.body()
    try:
        document = _parse_json(body, "the body") if body.strip() else None
    except ApiError:
        raise ApiError(400, "bad_request", f"the body is not JSON this service reads; {_SECRET_BODY}") from None
    if not isinstance(document, dict) or "value" not in document:
        raise ApiError(400, "bad_request", _SECRET_BODY)
    _only(document, ("value",), "the body", owned="a secret")
    problem = secret_problem(name, document["value"])
    if problem is not None:
        raise ApiError(400, "bad_request", problem)
    store: Store = request.app.state.store
    await store.set_secret(company, name, document["value"])
    return Response(status_code=204, headers={"Cache-Control": "no-store"})


async def list_secrets(request: Request) -> Response:
    company = await company_of(request)
    store: Store = request.app.state.store
    return JSONResponse({"secrets": [info.to_dict() for info in await store.secret_names(company)]})


async def delete_secret(request: Request) -> Response:
    company = await company_of(request)
    name = _secret_name(request)
    store: Store = request.app.state.store
    if not await store.delete_secret(company, name):
        raise ApiError(404, "secret_not_found", f"no secret {name!r} for this API key's company; see GET /secrets")
    return Response(status_code=204, headers={"Cache-Control": "no-store"})


async def list_triggers(request: Request) -> Response:
    company = await company_of(request)
    style = request.query_params.get("style", "openai")
    if style not in ("openai", "anthropic"):
        raise ApiError(400, "bad_request", "style must be 'openai' or 'anthropic'")
    catalog: TriggerCatalog = request.app.state.catalog
    triggers = catalog.for_company(company)
    tools = [triggers[name].tool_definition(style) for name in sorted(triggers)]
    return JSONResponse({"style": style, "tools": tools})


# -- the app ------------------------------------------------------------------------------------


def create_app(
    store: Store,
    catalog: TriggerCatalog,
    *,
    settings: ServiceSettings | None = None,
    close_store: bool = True,
    **runtime_options: Any,
) -> Starlette:
    """The ASGI app. ``runtime_options`` go to ``Runtime`` (``allow_networks=[...]``, ``deadline=...``).

    The store is closed when the app shuts down unless ``close_store=False``. A
    ``settings.max_client_data_bytes`` becomes the store's limit (the store enforces it, in its writes).
    """
    settings = settings or ServiceSettings()
    if settings.max_client_data_bytes is not None:
        store.max_client_data_bytes = settings.max_client_data_bytes
    the_runtime = Runtime(store, **runtime_options)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.ping()  # a database that cannot be reached stops start-up, with its error
        pending = await the_runtime.recover()  # calls journaled by a process that died: stored now
        if pending:
            log.warning("%d call records left in the journal by an earlier process are being stored", pending)
        try:
            yield
        finally:
            await the_runtime.aclose()
            if close_store:
                await store.close()

    routes: list[Route | Mount] = [
        Route("/health", health, methods=["GET"]),
        Route("/livez", livez, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/session/{session_id}", put_session, methods=["PUT"]),
        Route("/session/{session_id}", get_session, methods=["GET"]),
        Route("/session/{session_id}/logs", get_logs, methods=["GET"]),
        Route("/session/{session_id}/triggers/{name}", call_trigger, methods=["POST"]),
        Route("/triggers", list_triggers, methods=["GET"]),
        Route("/secrets", list_secrets, methods=["GET"]),
        Route("/secrets/{name}", put_secret, methods=["PUT"]),
        Route("/secrets/{name}", delete_secret, methods=["DELETE"]),
    ]
    if settings.dashboard:
        from .dashboard import routes as dashboard_routes

        routes.extend(dashboard_routes())
    # No handler for Exception: _Guard answers those (see its docstring for why not Starlette).
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        ApiError: _api_error,
        HTTPException: _http_error,
        _PayloadTooLarge: _too_large,
        StoreUnavailable: _store_unavailable,
    }
    app = Starlette(routes=_merge_methods(routes), lifespan=lifespan, exception_handlers=handlers)
    app.state.store = store
    app.state.catalog = catalog
    app.state.runtime = the_runtime
    app.state.settings = settings
    app.state.keys = _KeyCache(store, settings.key_cache_seconds)
    app.state.readiness = _Readiness(store)
    app.state.openapi = openapi_document(sorted(catalog.shared))
    app.state.company_limit = _CompanyLimit(settings.max_requests_per_company, settings.large_body_share)
    app.add_middleware(_Guard, settings=settings, limit=app.state.company_limit)
    return app


def _merge_methods(routes: list[Route | Mount]) -> list[Route | Mount]:
    """One Route per path, dispatching on the method, so a wrong method is a 405 with every allowed one."""
    merged: dict[str, dict[str, Callable[[Request], Awaitable[Response]]]] = {}
    others: list[Route | Mount] = []
    for route in routes:
        if isinstance(route, Route) and route.methods:
            for method in route.methods - {"HEAD"}:
                merged.setdefault(route.path, {})[method] = route.endpoint
        else:
            others.append(route)
    result: list[Route | Mount] = []
    for path, endpoints in merged.items():

        async def dispatch(
            request: Request, endpoints: dict[str, Callable[[Request], Awaitable[Response]]] = endpoints
        ) -> Response:
            method = "GET" if request.method == "HEAD" else request.method
            return await endpoints[method](request)

        methods = sorted(endpoints) + (["HEAD"] if "GET" in endpoints else [])
        result.append(Route(path, dispatch, methods=methods))
    return result + others
