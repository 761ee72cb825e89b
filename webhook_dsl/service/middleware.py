"""What every request goes through before its endpoint: the service's settings, who may ask (loopback
only in anonymous mode, no cross-site state change), the body size limit, each company's share of the
event loop (requests at once, time spent on large bodies), its request id, the access log and request
metrics, and the 500 that keeps the connection."""

from __future__ import annotations

import contextvars
import ipaddress
import logging
import math
import os
import random
import re
import time
from dataclasses import dataclass, field
from typing import Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import (
    ApiError,
    _internal,
    _PayloadTooLarge,
    error_response,
)

log = logging.getLogger("webhook_dsl.service")
access_log = logging.getLogger("webhook_dsl.access")


@dataclass(frozen=True)
class ServiceSettings:
    max_body_bytes: int = 1024 * 1024  # a request body larger than this is refused with 413
    key_cache_seconds: float = 10.0  # a key's company is remembered this long (so a revoked key works this long)
    access_log: bool = True  # one line per request: method, path (never the query string), status, ms
    dashboard: bool = True
    #: Requests with no key at all are served as this company (local trials with a bare curl).
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
    #: ``GET /metrics`` answers Prometheus text (``metrics``): requests, trigger calls, webhook latency.
    metrics: bool = True
    #: When set, ``GET /metrics`` needs ``Authorization: Bearer <metrics_token>``; None: it is open, like
    #: ``/livez``. It shows trigger names and counts, never a company, session, key or secret.
    metrics_token: str | None = field(default=None, repr=False)
    #: Call log records older than this many days are purged at start-up and every hour; None: kept.
    log_retention_days: float | None = None
    #: How often a replica asks the store whether a trigger changed, in seconds; 0: never.
    trigger_poll_seconds: float = 2.0

    def __post_init__(self) -> None:
        if self.max_requests_per_company is not None and self.max_requests_per_company < 1:
            raise ValueError("max_requests_per_company must be at least 1, or None for no limit")
        if self.large_body_share is not None and not 0 < self.large_body_share <= 1:
            raise ValueError("large_body_share must be more than 0 and at most 1, or None for no limit")
        if self.log_retention_days is not None and not 0 < self.log_retention_days < math.inf:
            raise ValueError("log_retention_days must be more than 0, or None to keep every record")
        if not 0 <= self.trigger_poll_seconds < math.inf:
            raise ValueError("trigger_poll_seconds must be 0 (no polling) or more")


#: An urlencoded body (``curl -d``) is at most this many bytes, whatever ``max_body_bytes`` is. Its
#: percent-escapes are decoded in Python, at several times the cost per byte of parsing JSON, all on the
#: one event loop. A form that large is a mistake or an attack:
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

#: An ``X-Request-Id`` taken as the client sent it: 1 to 128 visible ASCII characters (no space, no
#: control character, nothing a log line or a header could be split by). Any other is replaced.
MAX_REQUEST_ID = 128
_REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,%d}\Z" % MAX_REQUEST_ID)


def request_id_of(scope: Scope) -> str:
    """The request's id: its first ``X-Request-Id`` when that is 1-128 visible ASCII characters, else a new
    one: 32 random hex digits. An id names a request, it guards nothing, so it is drawn from ``random`` (seeded
    from the OS in each process) rather than from a system call on every request."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            if _REQUEST_ID.match(value):
                return str(value.decode("ascii"))
            break
    return f"{_ids.getrandbits(128):032x}"


#: The request ids' own generator, reseeded in a forked worker (``os.register_at_fork``) so that two
#: workers never draw the same sequence.
_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)


class RequestNote:
    """What one request did, for its access line: its id, and the trigger calls made for it (company,
    trigger and outcome category of each, in order; the runtime adds them as they finish)."""

    __slots__ = ("calls", "company", "request_id")

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.company: str | None = None
        self.calls: list[tuple[str, str]] = []

    def add_call(self, company: str | None, trigger: str, category: str) -> None:
        if company is not None:
            self.company = company
        self.calls.append((trigger, category))

    def fields(self) -> dict[str, str]:
        """The trigger-call fields of the access line: company, trigger and category (comma-separated, in the
        order the calls finished, for a turn of several tool calls)."""
        if not self.calls:
            return {}
        found = {"trigger": ",".join(c[0] for c in self.calls), "category": ",".join(c[1] for c in self.calls)}
        if self.company is not None:
            found["company"] = self.company
        return found


_note: contextvars.ContextVar[RequestNote | None] = contextvars.ContextVar("webhook_dsl_request", default=None)


def current_request() -> RequestNote | None:
    """The request being served in this context (its id, its trigger calls so far), or None outside one."""
    return _note.get()


def current_request_id() -> str | None:
    """The id of the request being served in this context (``X-Request-Id``), or None outside one."""
    note = _note.get()
    return None if note is None else note.request_id


class RequestMeter(Protocol):
    """Counts each request by route template, method and status (``metrics.ServiceMetrics``)."""

    def request(self, route: str, method: str, status: int) -> None: ...


class _Guard:
    """The layer around every request: who may ask (the Host in anonymous mode, no cross-site state change),
    the body size limit (413), the request id (``X-Request-Id`` on every response), the access log, which
    never prints query strings or headers, the request metrics, and the 500 for an exception nothing else
    handled.

    That 500 is answered here, not by Starlette's ``ServerErrorMiddleware`` (outside this layer), because
    that one re-raises after answering and uvicorn then closes the connection without ``Connection:
    close``: a client's next request on its pooled connection would fail with a reset. Here the exception
    is logged once, answered, and the connection stays usable. Only an exception after part of a response
    went out is re-raised: then closing the connection is the one way left to tell the client."""

    def __init__(
        self,
        app: ASGIApp,
        settings: ServiceSettings,
        limit: _CompanyLimit | None = None,
        meter: RequestMeter | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.limit = limit or _CompanyLimit(settings.max_requests_per_company, settings.large_body_share)
        self.meter = meter

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
        note = RequestNote(request_id_of(scope))
        note_token = _note.set(note)
        id_header = (b"x-request-id", note.request_id.encode("ascii"))
        complete = False

        async def send_and_note(message: Message) -> None:
            nonlocal status, complete
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), id_header]}
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
            _note.reset(note_token)
            if self.meter is not None:
                route = scope.get("route")
                self.meter.request(getattr(route, "path", "unmatched"), scope["method"], status or 500)
            if self.settings.access_log and access_log.isEnabledFor(logging.INFO):
                _log_access(scope, status or 500, (time.perf_counter() - started) * 1000, note)


def _log_access(scope: Scope, status: int, milliseconds: float, note: RequestNote) -> None:
    """One access line, whatever the log format: the message says method, path (never the query string, where
    a dashboard ``?key=`` would be), status and time; the fields hold them again with the request id and, for
    a trigger call, the company, trigger and outcome category (``logformat`` writes them as text or JSON)."""
    method, path = scope["method"], scope["path"]
    fields: dict[str, object] = {
        "request_id": note.request_id,
        "method": method,
        "path": path,
        "status": status,
        "duration_ms": round(milliseconds, 1),
    }
    if note.calls:
        fields.update(note.fields())
    # The record is made here rather than by access_log.info, which would walk the stack to find its caller,
    # on every request, to learn this function's name.
    arguments = (method, path, status, milliseconds)
    record = access_log.makeRecord(access_log.name, logging.INFO, __file__, 0, _ACCESS, arguments, None, extra=fields)
    access_log.handle(record)


_ACCESS = "%s %s %s %.1fms"


#: Methods that change something: a web page on another site must not be able to send one here.
_STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_HOST = re.compile(r"(?:\[(?P<ip6>[0-9a-f:.]+)\]|(?P<name>[a-z0-9._-]+))(?::(?P<port>[0-9]{1,5}))?\Z")
_ORIGIN = re.compile(r"(?P<scheme>https?)://(?P<authority>[^/?#@\s]+)\Z")
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def is_json(media_type: str) -> bool:
    """Whether a media type (lower case, without parameters) says JSON: ``application/json`` or ``…+json``."""
    return media_type == "application/json" or media_type.endswith("+json")


def media_type(content_type: str) -> str:
    """The media type of a Content-Type value: lower case, without its parameters (``; charset=...``)."""
    return content_type.split(";", 1)[0].strip().lower()


def expect_json(request: Request, message: str) -> None:
    """A 415 saying ``message`` unless the request's body is declared JSON."""
    if not is_json(media_type(request.headers.get("content-type", ""))):
        raise ApiError(415, "unsupported_media_type", message)


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
        if not is_json(media_type(kinds[0]) if kinds else ""):
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
