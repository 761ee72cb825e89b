"""Sends rendered requests and turns whatever comes back into a result the platform can use.

``Runtime.execute`` renders a plan, checks the destination with the outbound
guard, sends the request (retrying only where it is safe), reads at most
``max_response_bytes`` after decompression, and never raises for a bad remote:
every failure becomes a ``CallResult`` with a category. ``Runtime.call_trigger``
adds the session work around it: argument validation against the trigger's
JSON Schema, variables from the session, the message for the LLM, the
``session.client_data`` merge and the call log.

Requests go through a ``transport.Transport``: pyreqwest (Rust's reqwest) by
default, chosen for throughput under concurrency (see benchmarks/ and client.py),
or ``transport=`` anything else that speaks the protocol (``HttpxTransport`` for an
httpx client or transport, ``StubTransport`` for tests). There is one code path
whatever the transport: the guard and the pin choose the address, and the cap,
framing checks, decompression, deadline, retries, redirects and categories are
applied here, on what the transport hands back.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import random
import time
import zlib
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urljoin, urlsplit

import orjson

from .._version import __version__ as _version
from ..errors import RenderError
from ..language.encode import read_json
from ..language.names import SYSTEM_VARIABLES
from ..language.plan import RenderedRequest, WebhookPlan, defined_name, resolve_reference
from ..storage.base import Session, Store, StoreUnavailable
from ..storage.journal import CallJournal, journal_base
from ..storage.sqlite import SQLiteStore
from .auth import AuthFailure, AuthorizedCall, Authorizer
from .client import DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_PINS, PIN_SECONDS, PinnedClients, Pins
from .guard import BlockedError, OutboundGuard, Resolver
from .masking import (
    CREDENTIAL_HEADERS,
    SECRETS_PREFIX,
    Masker,
    secret_strings,
    shown_request,
    whole_secrets,
)
from .policy import CallPolicy, call_policy, with_idempotency_key
from .shaping import select_response, with_mapping
from .transport import Destination, Headers, Transport, TransportError
from .trigger import Trigger

if TYPE_CHECKING:
    import httpx

__all__ = [
    "CATEGORIES",
    "EVENT_LOOPS",
    "CallResult",
    "Runtime",
    "RuntimeSettings",
    "TriggerResult",
    "call_trigger_sync",
    "event_loop_factory",
    "run",
]

T = TypeVar("T")

#: Every failure is exactly one of these.
CATEGORIES = (
    "timeout",
    "connection",
    "http_status",
    "too_large",
    "invalid_response",
    "blocked",
    "dns",
    "bad_arguments",
    "render",
)
log = logging.getLogger("webhook_dsl.runtime")

_IDEMPOTENT = frozenset({"GET", "PUT", "DELETE"})
#: A call begun and not completed this long after its deadline is shown as ``unknown_outcome``.
_UNKNOWN_AFTER_S = 30.0
#: While the store is unavailable, the journal is replayed again after this pause.
_REPLAY_PAUSE_S = 1.0
#: On close, how long the runtime waits for a replay under way to store what the journal holds.
_CLOSE_REPLAY_WAIT_S = 2.0
_RETRY_STATUSES = frozenset({429, 502, 503, 504})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class RuntimeSettings:
    """Network behaviour; the defaults are what we would run in production."""

    connect_timeout: float = 5.0  # seconds to establish a connection
    deadline: float = 15.0  # seconds for the whole call: lookups, attempts, retries, reading the body
    max_response_bytes: int = 1024 * 1024  # counted after decompression
    max_retries: int = 2  # extra attempts for idempotent methods (or POST when the trigger allows)
    backoff_base: float = 0.25  # full-jitter exponential backoff: uniform(0, min(cap, base * 2**n))
    backoff_cap: float = 4.0
    retry_after_cap: float = 10.0  # the longest Retry-After we wait for (and never past the deadline)
    follow_redirects: bool = False  # as Svix and Stripe do
    max_redirects: int = 5
    max_connections: int = 256  # connections one destination's client may open (pyreqwest's own limit)
    #: Clients pinned to checked addresses, one per (scheme, host, port) an LLM may choose: the least recently
    #: used is dropped beyond this, and its connections close once no request is using it.
    max_pinned_hosts: int = DEFAULT_MAX_PINS
    #: Requests in flight to one (scheme, host, port); the rest wait in that destination's queue, their deadline
    #: running, so that a hanging API holds this many at most and never the capacity other destinations need.
    max_in_flight_per_destination: int = DEFAULT_MAX_IN_FLIGHT
    #: How long a name's checked addresses are used before it is resolved and checked again.
    pin_seconds: float = PIN_SECONDS
    llm_response_chars: int = 8000  # response text handed to the LLM
    log_body_chars: int = 65536  # response text kept in a log record
    secrets_cache_seconds: float = 5.0  # how long a company's secrets are reused before they are read again


_UNPARSED: Any = object()


@dataclass
class CallResult:
    """What happened to one webhook call; ``category`` is None exactly when ``ok``.

    The URL, body and error may hold secrets (a key in a query, an echoed header), so the repr
    leaves them out; ``TriggerResult.to_dict`` gives the masked view.
    """

    ok: bool
    method: str
    url: str = field(repr=False)
    status: int | None = None
    body: bytes = field(default=b"", repr=False)
    content_type: str = ""
    elapsed_ms: float = 0.0
    attempts: int = 0
    category: str | None = None
    error: str | None = field(default=None, repr=False)
    request: RenderedRequest | None = field(default=None, repr=False)
    _json: Any = field(default=_UNPARSED, repr=False, compare=False)

    def json(self) -> Any:
        """The body as JSON (parsed once, then kept); raises ``ValueError`` if it is not JSON."""
        if self._json is _UNPARSED:
            self._json = read_json(self.body)
        return self._json

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass
class TriggerResult:
    """A trigger call as the platform sees it: the call, the merge, and what the LLM is told."""

    trigger: str
    session_id: str
    call: CallResult
    message_for_llm: str
    client_data_merged: dict[str, Any] = field(repr=False)
    warnings: list[str]
    log_seq: int | None
    masker: Masker = field(repr=False)
    dry_run: dict[str, Any] | None = field(default=None, repr=False)
    #: The request as a person may see it: each secret masked where it was put (see ``shown_request``).
    request_shown: dict[str, Any] | None = field(default=None, repr=False)
    #: False when the call was made but its log record and merge could not be stored yet: they are in the
    #: local journal (``webhook_dsl.storage.journal``) and are stored once the database takes writes again.
    recorded: bool = True

    def to_dict(self) -> dict[str, Any]:
        """The masked JSON form printed by ``webhook-dsl call``."""
        m = self.masker
        call = self.call
        response: Any = None
        if call.body:
            try:
                response = m.data(call.json())
            except ValueError:
                response = m.head(call.text, 65536)  # a secret across the cut is masked whole
        return {
            "trigger": self.trigger,
            "session_id": self.session_id,
            "ok": call.ok,
            "status": call.status,
            "category": call.category,
            "error": m.text(call.error) if call.error else None,
            "elapsed_ms": round(call.elapsed_ms, 3),
            "attempts": call.attempts,
            "method": call.method,
            "url": self.request_shown["url"] if self.request_shown else m.text(call.url),
            "response": response,
            "client_data_merged": m.data(self.client_data_merged),
            "message_for_llm": self.message_for_llm,
            "warnings": self.warnings,
            "log_seq": self.log_seq,
            "recorded": self.recorded,
            **({"dry_run": self.dry_run} if self.dry_run is not None else {}),
        }


class _Failure(Exception):
    """A failed attempt. ``unsent`` when no byte of the request left (it could not connect, or it never
    left its destination's queue): a retry is then safe whatever the method. A call none of whose
    attempts left has an error starting with ``NOT_SENT``, which ``message_for_llm`` reads to tell the
    LLM that nothing happened, against "the action may have happened" for a request that was sent."""

    NOT_SENT = "not sent: "

    def __init__(self, category: str, message: str, retryable: bool = False, *, unsent: bool = False) -> None:
        super().__init__(message)
        self.category = category
        self.retryable = retryable
        self.unsent = unsent
        self.attempt = ("", "")  # (method, URL) of the request that failed, set by _send_once


@dataclass
class _Response:
    status: int
    headers: Headers  # case-insensitive: pyreqwest's HeaderMap, httpx.Headers...
    body: bytes
    url: str

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


class _BodyReader:
    """Collects a response body, decompressing gzip/deflate itself so the cap counts real bytes."""

    def __init__(self, encoding: str | None, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.parts: list[bytes] = []
        kind = (encoding or "identity").strip().lower()
        if kind in ("identity", ""):
            self._inflate = None
        elif kind in ("gzip", "x-gzip"):
            self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif kind == "deflate":
            self._inflate = zlib.decompressobj(zlib.MAX_WBITS)
        else:
            raise _Failure("invalid_response", f"unsupported Content-Encoding {kind!r}")

    def _add(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise _Failure("too_large", f"response body larger than {self.limit} bytes (after decompression)")
        self.parts.append(data)

    def feed(self, chunk: bytes) -> None:
        if self._inflate is None:
            self._add(chunk)
            return
        try:
            self._add(self._inflate.decompress(chunk, self.limit - self.size + 1))
            while self._inflate.unconsumed_tail:
                self._add(self._inflate.decompress(self._inflate.unconsumed_tail, self.limit - self.size + 1))
        except zlib.error as error:
            raise _Failure("invalid_response", f"response body is not valid compressed data ({error})") from None

    def finish(self) -> bytes:
        return b"".join(self.parts)

    @staticmethod
    def check_framing(length: str | None, transfer: str) -> None:
        """Refuse a body framed two ways, or by a transfer coding the client does not undo.

        RFC 9112, section 6.3: Content-Length with Transfer-Encoding "ought to be handled as an error"
        (the mark of request smuggling and response splitting); anything but ``chunked`` would come
        through still encoded, and bypass the decompressed-size cap."""
        if length is not None:
            raise _Failure("invalid_response", "the response has both Content-Length and Transfer-Encoding")
        if transfer.strip().lower() != "chunked":
            raise _Failure("invalid_response", f"unsupported Transfer-Encoding {transfer[:40]!r}")


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port


def _adopt(transport: Any, settings: RuntimeSettings) -> Transport:
    """A ``Transport`` as it is; an httpx client or transport wrapped in ``HttpxTransport`` (httpx is
    imported only then)."""
    if isinstance(transport, Transport):
        return transport
    try:
        from .httpx_transport import HttpxTransport
    except ImportError as error:  # then it cannot be an httpx object either
        raise TypeError(
            f"transport: expected a webhook_dsl.runtime.transport.Transport, not {type(transport).__name__} "
            "(httpx clients and transports need the extra: pip install 'webhook-dsl[httpx]')"
        ) from error

    return HttpxTransport(transport, connect_timeout=settings.connect_timeout)


class Runtime:
    """Executes webhooks. Create one, reuse it for every call (one connection pool), close it::

    async with Runtime(SQLiteStore("webhooks.db")) as runtime:
        result = await runtime.call_trigger(trigger, "session-1", {"order_number": "A-1"})
        print(result.message_for_llm)
    """

    def __init__(
        self,
        store: Store | None = None,
        *,
        settings: RuntimeSettings | None = None,
        allow_networks: Iterable[str] = (),
        allow_hosts: Iterable[str] = (),
        deny_networks: Iterable[str] = (),
        deny_hosts: Iterable[str] = (),
        resolver: Resolver | None = None,
        transport: Transport | httpx.AsyncBaseTransport | httpx.AsyncClient | None = None,
        **overrides: Any,
    ) -> None:
        """``transport``: what requests go through (see ``transport.Transport``); pyreqwest when None. An
        ``httpx.AsyncClient`` or httpx transport (``httpx.MockTransport``...) is wrapped in
        ``HttpxTransport`` (extra ``[httpx]``), which sends through it unchanged. The runtime closes its
        transport when it is closed."""
        self.store = store
        self.settings = replace(settings or RuntimeSettings(), **overrides)
        self.guard = OutboundGuard.build(allow_networks, allow_hosts, deny_networks, deny_hosts, resolver)
        self._transport: Transport | None = None if transport is None else _adopt(transport, self.settings)
        self._pins: Pins | None = None
        self._secrets_cache: dict[str, tuple[float, dict[str, str]]] = {}
        self._journal: CallJournal | None = None
        self._replaying: asyncio.Task[None] | None = None
        self._authorizer = Authorizer(self.send_request, lambda: self.settings.deadline)  # OAuth2 tokens

    async def __aenter__(self) -> Runtime:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._authorizer.close()
        if self._replaying is not None:
            if not self._replaying.done() and self._journal is not None and len(self._journal):
                with contextlib.suppress(asyncio.TimeoutError, StoreUnavailable):
                    await asyncio.wait_for(asyncio.shield(self._replaying), _CLOSE_REPLAY_WAIT_S)
            self._replaying.cancel()
            self._replaying = None
        if self._journal is not None:
            self._journal.close()  # kept on disk when entries are left: the next process replays them
            self._journal = None
        if self._pins is not None:
            self._pins.close()
            self._pins = None
        if self._transport is not None:
            await self._transport.aclose()
            self._transport = None

    # -- one HTTP exchange ------------------------------------------------------------

    @property
    def transport(self) -> Transport:
        """What requests go through (the default pyreqwest one is made on first use)."""
        if self._transport is None:
            self._transport = PinnedClients(
                max_connections=self.settings.max_connections,
                connect_timeout=self.settings.connect_timeout,
                max_clients=self.settings.max_pinned_hosts,
            )
        return self._transport

    def _pinned(self) -> Pins:
        """The pins and per-destination queues, read with the transport's URL parser (made on first use)."""
        if self._pins is None:
            settings = self.settings
            self._pins = Pins(
                self.guard,
                self.transport.read_url,
                max_pins=settings.max_pinned_hosts,
                max_in_flight=settings.max_in_flight_per_destination,
                pin_seconds=settings.pin_seconds,
            )
        return self._pins

    async def _send_once(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
        deadline: float,
        policy: CallPolicy,
    ) -> _Response:
        """One attempt. A ``_Failure`` says what happened, whether the request surely never left
        (``unsent``), and for which request (``attempt``: a redirect's hop is another). The transport's
        timeout is what is left of the call's deadline, so a request it times out was sent (or was still
        being sent, or still connecting: a transport cannot always tell) and there is no time left to
        retry it."""
        pins = self._pins if self._pins is not None else self._pinned()
        transport = self._transport  # made by _pinned
        assert transport is not None
        in_flight = pins.in_flight
        holding = False
        try:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                message = f"the {policy.deadline:g} s deadline passed before this attempt"
                raise _Failure("timeout", message, unsent=True)
            try:
                key, is_address = pins.destination(url)
            except BlockedError as error:  # "dns" for a name that does not resolve
                raise _Failure(error.category, str(error)) from None
            if not in_flight.take(key):  # the destination is at its cap: wait in its queue, the deadline running
                try:
                    await in_flight.wait(key, remaining)
                except TimeoutError:
                    message = (
                        f"it never left the queue: {in_flight.cap} requests to this destination were in flight "
                        f"until the {policy.deadline:g} s deadline"
                    )
                    raise _Failure("timeout", message, unsent=True) from None
            holding = True
            address = pins.pinned(key)  # a pin that holds: no lookup, no await, no timer
            if address is None:
                try:
                    async with asyncio.timeout(deadline - time.perf_counter()):  # a lookup counts like the rest
                        address = await pins.pin(key, is_address)
                except BlockedError as error:  # "dns" for a name that does not resolve
                    raise _Failure(error.category, str(error)) from None
                except TimeoutError:
                    raise _Failure("timeout", "the host's lookup outlasted the deadline", unsent=True) from None
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise _Failure("timeout", "the deadline passed before the request could leave", unsent=True)
            limit = policy.max_response_bytes
            try:
                exchange = transport.open(
                    method, url, headers, body, destination=key, address=address, timeout=remaining
                )
                async with exchange as response:
                    head = response.headers
                    encoding = head.get("content-encoding")
                    length = head.get("content-length")
                    transfer = head.get("transfer-encoding")
                    if transfer is not None:
                        _BodyReader.check_framing(length, transfer)
                    elif encoding is None and length is not None and length.isdigit() and int(length) <= limit:
                        # Framed by Content-Length alone and not compressed: the transport stops at the length
                        # (and refuses conflicting lengths), so one read is bounded; no per-chunk loop on the
                        # common path. The cap still counts the bytes that came, not the header that promised them.
                        data = bytes(await response.read())  # no copy when it is bytes already
                        if len(data) > limit:
                            raise _Failure("too_large", f"response body larger than {limit} bytes")
                        return _Response(response.status, head, data, url)
                    reader = _BodyReader(encoding, limit)  # counts every byte read, decompressed
                    while (chunk := await response.next_chunk()) is not None:
                        reader.feed(chunk)
                    return _Response(response.status, head, reader.finish(), url)
            except TransportError as error:
                raise self._failure(error, pins, key, address, policy.deadline) from None
        except _Failure as failure:
            failure.attempt = (method, url)
            raise
        finally:
            if holding:
                in_flight.release(key)

    def _failure(
        self, error: TransportError, pins: Pins, key: Destination, address: str, deadline: float
    ) -> _Failure:
        """What a transport's failure means for the call: its category, and whether it may have happened."""
        kind = error.kind
        if kind == TransportError.CONNECT:  # nothing was sent: retried whatever the method, at the next address
            pins.unreachable(key, address)
            return _Failure("connection", str(error), retryable=True, unsent=True)
        if kind == TransportError.POOL:
            return _Failure("timeout", "no free connection before the deadline", unsent=True)
        if kind == TransportError.TIMEOUT:
            if error.stage == "body":
                return _Failure("timeout", f"the answer began but did not complete within the {deadline:g} s deadline")
            if error.stage == "send":
                return _Failure("timeout", f"the request was still being sent at the {deadline:g} s deadline")
            return _Failure("timeout", f"no answer within the {deadline:g} s deadline")
        if kind == TransportError.LOST:
            message = f"the connection was lost after the request was sent ({error})"
            return _Failure("connection", message, retryable=True)
        if kind == TransportError.UNSENDABLE:
            return _Failure("render", str(error))
        return _Failure("invalid_response", str(error))

    async def _follow(
        self, request: RenderedRequest, secret_values: frozenset[str], deadline: float, policy: CallPolicy
    ) -> _Response:
        method, url, headers, body = request.method, request.url, request.headers, request.body
        for _hop in range(self.settings.max_redirects + 1):
            response = await self._send_once(method, url, headers, body, deadline, policy)
            if not policy.follow_redirects or response.status not in _REDIRECTS:
                return response
            location = response.header("Location")
            if not location:
                return response
            next_url = urljoin(url, location)
            if urlsplit(next_url).scheme.lower() not in ("http", "https"):
                raise _Failure("blocked", "redirect to a URL that is not http or https")
            if response.status == 303 or (response.status in (301, 302) and method == "POST"):
                method, body = "GET", None
                headers = [(k, v) for k, v in headers if k.lower() != "content-type"]
            if _origin(next_url) != _origin(url):  # never carry credentials to another origin
                headers = [
                    (k, v)
                    for k, v in headers
                    if k.lower() not in CREDENTIAL_HEADERS and not any(s in v for s in secret_values)
                ]
                # A 307/308 (or a 301/302 of a method other than POST) sends the body again, and a body cannot be
                # stripped of its secret the way a header can be dropped: such a hop is not followed. Every form
                # of a secret counts (JSON-escaped, percent-encoded, inside base64), as the masker finds them.
                if body and secret_values:
                    text = body.decode("utf-8", "replace")
                    if Masker(secret_values).text(text) != text:
                        raise _Failure(
                            "blocked",
                            f"HTTP {response.status} redirect to another origin would send the request body again, "
                            "and it holds a secret; not followed",
                        )
            url = next_url
        raise _Failure("invalid_response", f"more than {self.settings.max_redirects} redirects")

    # -- a whole call -----------------------------------------------------------------

    async def execute(
        self,
        plan: WebhookPlan,
        variables: Mapping[str, Any],
        *,
        retry_post: bool = False,
        secret_names: Iterable[str] = (),
    ) -> CallResult:
        """Render and send; never raises for a bad remote or bad variables (see ``CallResult.category``)."""
        started = time.perf_counter()
        try:
            request = plan.render(variables)
        except RenderError as error:
            elapsed = (time.perf_counter() - started) * 1000
            return CallResult(False, plan.method, "", category="render", error=str(error), elapsed_ms=elapsed)
        policy, _ = call_policy(self.settings, None, retry_post=retry_post, retry_on=_RETRY_STATUSES)
        request = with_idempotency_key(_with_default_headers(request), policy)
        secrets = list(secret_names) + list(plan.secrets)
        return await self._send(request, variables, secrets, retry_post=retry_post, started=started, policy=policy)

    async def send_request(self, request: RenderedRequest, variables: Mapping[str, Any], started: float) -> CallResult:
        """A request built outside a plan (an OAuth2 token request) through the webhook's own path: the outbound
        guard, caps, retries and the deadline counted from ``started``. ``variables`` hold its secrets."""
        return await self._send(_with_default_headers(request), variables, (), retry_post=True, started=started)

    async def _send(
        self,
        request: RenderedRequest,
        variables: Mapping[str, Any],
        secret_names: Iterable[str],
        *,
        retry_post: bool,
        started: float,
        policy: CallPolicy | None = None,
    ) -> CallResult:
        """Send a rendered request: attempts, retries and the deadline (from ``started``); never raises.
        ``policy``: the call's deadline, retries, redirects and cap (None: the process settings)."""
        if policy is None:
            policy, _ = call_policy(self.settings, None, retry_post=retry_post, retry_on=_RETRY_STATUSES)
        result = CallResult(False, request.method, request.url, request=request)
        secret_values: frozenset[str] = frozenset()
        if policy.follow_redirects:
            secret_values = Masker.for_call(variables, secret_names).values
        retry = request.method in _IDEMPOTENT or (policy.retry_post and request.method == "POST")
        deadline = started + policy.deadline
        sent = False  # whether any attempt may have reached the API: then the action may have happened
        last = ""  # the last attempt's outcome, for a deadline that passes before the next
        try:
            while True:
                result.attempts += 1
                try:
                    if policy.follow_redirects:
                        response = await self._follow(request, secret_values, deadline, policy)
                    else:  # one await layer less on the hot path
                        response = await self._send_once(
                            request.method, request.url, request.headers, request.body, deadline, policy
                        )
                except _Failure as failure:
                    # A redirect's hop that never left still came after one that did: not unsent for the call.
                    unsent = failure.unsent and failure.attempt == (request.method, request.url)
                    sent = sent or not unsent
                    if failure.retryable and (retry or unsent) and result.attempts <= policy.retries:
                        last = str(failure)
                        await self._pause(self._backoff(result.attempts), deadline)
                        continue
                    result.category, result.error = failure.category, str(failure)
                    if failure.category in ("timeout", "connection"):
                        if not sent:  # no attempt left: message_for_llm tells the LLM nothing happened
                            result.error = _Failure.NOT_SENT + result.error
                        elif failure.unsent:  # this one did not leave, but an earlier attempt or hop did
                            result.error += "; an earlier request of this call was sent"
                    break
                sent = True
                result.status, result.body = response.status, response.body
                result.content_type = response.header("Content-Type") or ""
                if response.status in policy.retry_on and retry and result.attempts <= policy.retries:
                    delay = _retry_after(response.header("Retry-After"))
                    delay = self._backoff(result.attempts) if delay is None else delay
                    if delay <= min(self.settings.retry_after_cap, deadline - time.perf_counter()):
                        last = f"HTTP {response.status}"
                        await self._pause(delay, deadline)
                        continue
                if 200 <= response.status < 300:
                    result.ok = True
                    if _declares_json(result.content_type) and result.body.strip():
                        try:
                            result._json = read_json(result.body)
                        except ValueError:
                            result.ok = False
                            result.category = "invalid_response"
                            result.error = "the response says it is JSON but does not parse"
                else:
                    result.category = "http_status"
                    result.error = f"HTTP {response.status}"
                break
        except TimeoutError:  # the pause before a retry would pass the deadline
            result.ok, result.category = False, "timeout"
            if sent:
                result.error = f"no complete answer within the {policy.deadline:g} s deadline (last: {last})"
            else:
                result.error = f"{_Failure.NOT_SENT}no attempt got through before the deadline (last: {last})"
        result.elapsed_ms = (time.perf_counter() - started) * 1000
        return result

    @staticmethod
    async def _pause(delay: float, deadline: float) -> None:
        """Sleep before a retry, but never past the deadline (then it is a timeout)."""
        remaining = deadline - time.perf_counter()
        if delay >= remaining:
            await asyncio.sleep(max(remaining, 0))
            raise TimeoutError
        await asyncio.sleep(delay)

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.settings.backoff_cap, self.settings.backoff_base * 2 ** (attempt - 1)))

    # -- triggers and sessions ----------------------------------------------------------

    def _store(self) -> Store:
        if self.store is None:
            raise RuntimeError("this Runtime has no store; pass one, e.g. Runtime(SQLiteStore('webhooks.db'))")
        return self.store

    async def call_trigger(
        self,
        trigger: Trigger,
        session_id: str,
        arguments: Mapping[str, Any],
        images: Sequence[str] = (),
        *,
        dry_run: bool = False,
        protected_keys: Iterable[str] = (),
        company_id: str | None = None,
        request_id: str | None = None,
    ) -> TriggerResult:
        """Validate arguments, build variables from the session, call, merge client_data, log.

        ``protected_keys`` adds to the trigger's own (``Trigger.protected_keys``) the client_data keys no
        response may set: the service passes those of every trigger of the company, so that one trigger's
        answer cannot change where another sends, or swap its credential. ``company_id`` names the session's
        company (a service serving several passes its caller's); None finds the one session with this id.
        ``request_id`` (the service's ``X-Request-Id``) is written into the call's log record.
        """
        store = self._store()
        session = await store.get_session(session_id, company_id=company_id)
        secrets = await self._company_secrets(session.company_id) if trigger.uses_company_secrets else None
        variables = build_variables(
            session.id,
            session.company_id,
            session.assistant_id,
            session.client_data,
            trigger,
            arguments,
            images,
            secrets,
        )
        masker = Masker.for_call(variables, trigger.secret_names)
        argument_errors = trigger.argument_errors(arguments)
        merged: dict[str, Any] = {}
        # A trigger's policy value above the process's is lowered to it, with a warning in the result and log.
        policy, warnings = call_policy(self.settings, trigger, retry_on=_RETRY_STATUSES)
        preview = None
        call_seq: int | None = None  # set once the call is begun in the store: it will be sent
        if argument_errors:
            call = CallResult(
                False, trigger.plan.method, "", category="bad_arguments", error="; ".join(argument_errors)
            )
        elif dry_run:
            call, preview = self._dry_run(trigger, variables, variable_origins(variables, trigger, arguments), masker)
        else:
            call, call_seq, masker = await self._begin_and_send(
                trigger, session, variables, masker, policy=policy, request_id=request_id
            )
            if call.ok or (trigger.merge_on_error and call.category == "http_status"):
                merged, update_warnings = _client_data_update(call, trigger, protected_keys)
                warnings += update_warnings
                if trigger.client_data_mapping:  # where both set a key, the mapping's value is kept
                    merged, warnings = with_mapping(merged, warnings, call, trigger, protected_keys)
                arrived = [s for name in trigger.secret_names if name in merged for s in secret_strings(merged[name])]
                masker = masker.with_values(arrived)  # a secret that arrived now is masked in this call's outputs
        if dry_run and call.ok:
            message = "(dry run: nothing was sent, so there is no response for the LLM)"
        else:
            message = message_for_llm(trigger, call, masker, self.settings.llm_response_chars)
        log_seq = None
        recorded = True
        shown = preview["request"] if preview else None  # a dry run has shown its request already
        if shown is None and call.request is not None:
            shown = _shown(trigger, variables, call.request, masker)
        if not dry_run:
            record = _log_record(
                trigger, session_id, call, variables, merged, warnings, masker, self.settings.log_body_chars, shown
            )
            record["request_id"] = request_id
            if call_seq is None:  # nothing was sent: a store that fails now fails the call, and nothing happened
                log_seq = await store.finish_call(session_id, merged, record, company_id=session.company_id)
            else:
                try:  # complete the begun record and merge, in one transaction
                    log_seq = await store.finish_call(
                        session_id, merged, record, company_id=session.company_id, call_seq=call_seq
                    )
                except Exception as error:  # the call happened: the caller and the LLM get its real result
                    log_seq = call_seq
                    recorded = False
                    warnings = [*warnings, self._journal_completion(session, merged, record, call_seq, error)]
            refused = getattr(log_seq, "merge_refused", None)
            if refused:  # the store kept client_data within its size limit: the call stands, its merge does not
                merged = {}
                warnings = [*warnings, refused]
        return TriggerResult(
            trigger.name, session_id, call, message, merged, warnings, log_seq, masker, preview, shown, recorded
        )

    async def _begin_and_send(
        self,
        trigger: Trigger,
        session: Session,
        variables: Mapping[str, Any],
        masker: Masker,
        *,
        policy: CallPolicy | None = None,
        request_id: str | None = None,
    ) -> tuple[CallResult, int | None, Masker]:
        """Render; put on the trigger's auth and signing; record the intent (``Store.begin_call``); send. A request
        that cannot be rendered or authorized is not begun (nothing will be sent). A ``StoreUnavailable`` from the
        intent propagates: nothing was sent. The masker comes back with the credentials the call revealed."""
        started = time.perf_counter()
        try:
            request = _with_default_headers(trigger.plan.render(variables))
        except RenderError as error:
            elapsed = (time.perf_counter() - started) * 1000
            return CallResult(
                False, trigger.plan.method, "", category="render", error=str(error), elapsed_ms=elapsed
            ), None, masker
        if policy is None:
            policy, _ = call_policy(self.settings, trigger, retry_on=_RETRY_STATUSES)
        request = with_idempotency_key(request, policy)  # before auth and the intent record: signed and logged
        authorized: AuthorizedCall | None = None
        if trigger.auth is not None or trigger.signing is not None:
            try:
                authorized = await self._authorizer.authorize(
                    trigger.auth, trigger.signing, session.company_id, variables, request, started, policy.deadline
                )
            except AuthFailure as failure:  # no credential or no token: the webhook is not sent
                elapsed = (time.perf_counter() - started) * 1000
                failed = CallResult(False, request.method, request.url, category=failure.category, error=str(failure))
                failed.elapsed_ms, failed.request = elapsed, request
                return failed, None, masker
            request, masker = authorized.request, masker.with_values(authorized.revealed)
        self._journal_open()
        now = time.time()
        intent = _intent_record(trigger, session.id, request, _shown(trigger, variables, request, masker), now)
        intent["expires_at"] = now + self.settings.deadline + _UNKNOWN_AFTER_S
        intent["request_id"] = request_id
        call_seq = await self._store().begin_call(session.id, intent, company_id=session.company_id)
        secrets = list(trigger.secret_names) + list(trigger.plan.secrets)

        async def send(request: RenderedRequest) -> CallResult:
            return await self._send(
                request, variables, secrets, retry_post=trigger.retry_post, started=started, policy=policy
            )

        call = await send(request)
        if authorized is not None and call.status == 401:  # an OAuth2 token refused: refreshed once, sent once more
            call = await authorized.after(call, send)
            masker = masker.with_values(authorized.revealed)
        return call, call_seq, masker

    # -- the journal of unrecorded completions -------------------------------------------

    def _journal_open(self) -> CallJournal:
        """This runtime's journal, opened on first use; journals left by processes that died are taken in
        and replayed."""
        if self._journal is None:
            self._journal = CallJournal(journal_base(self.store))
            if self._journal.recover_orphans():
                self._replay_soon()
        return self._journal

    def _journal_completion(
        self, session: Session, merged: Mapping[str, Any], record: Mapping[str, Any], call_seq: int, error: Exception
    ) -> str:
        """Keep a completion the store refused in the journal, start replaying it, and word the warning."""
        journal = self._journal_open()
        entry = {
            "session_id": session.id,
            "company_id": session.company_id,
            "call_seq": int(call_seq),
            "update": dict(merged),
            "record": {**record, "recorded_late": True},
        }
        on_disk = journal.append(entry)
        log.warning(
            "call %s (session %r) was sent, but its record was not stored (%s); journaled%s",
            call_seq,
            session.id,
            error,
            "" if on_disk else " in memory only",
        )
        self._replay_soon()
        return (
            "this call was made, but its record could not be stored yet (the database is unavailable); it is kept "
            "in a local journal and stored as soon as the database takes writes again"
        )

    def _replay_soon(self) -> None:
        if self._replaying is None or self._replaying.done():
            self._replaying = asyncio.get_running_loop().create_task(self._replay())

    async def _replay(self) -> None:
        """Store the journal's completions, oldest first, retrying every ``_REPLAY_PAUSE_S`` while the store
        is unavailable; an entry the store refuses for another reason is logged and dropped."""
        journal = self._journal
        store = self._store()
        while journal is not None and len(journal):
            entries = journal.entries()
            done = 0
            for entry in entries:
                try:
                    await store.finish_call(
                        entry["session_id"],
                        entry["update"],
                        entry["record"],
                        company_id=entry["company_id"],
                        call_seq=entry["call_seq"],
                    )
                except StoreUnavailable:
                    break
                except Exception:  # not an outage (the session is gone...): retrying would not help
                    log.exception("a journaled call record (call %s) cannot be stored; dropped", entry.get("call_seq"))
                done += 1
            if done:
                journal.forget(done)
                log.info("%d journaled call records stored", done)
            if len(journal):
                await asyncio.sleep(_REPLAY_PAUSE_S)

    async def recover(self) -> int:
        """Open the journal, take in those of processes that died, and store what they hold; return how many
        completions were pending. A service calls this at start-up; ``call_trigger`` does it on first use."""
        journal = self._journal_open()
        pending = len(journal)
        if pending:
            self._replay_soon()
        return pending

    async def _company_secrets(self, company_id: str) -> dict[str, str]:
        """The company's secrets, read at most once per ``secrets_cache_seconds`` (a secret set or deleted
        takes effect within that time on every replica)."""
        now = time.monotonic()
        cached = self._secrets_cache.get(company_id)
        if cached is not None and now - cached[0] < self.settings.secrets_cache_seconds:
            return cached[1]
        reader = getattr(self._store(), "company_secrets", None)
        secrets: dict[str, str] = await reader(company_id) if reader is not None else {}
        if len(self._secrets_cache) >= 4096:
            self._secrets_cache.clear()
        self._secrets_cache[company_id] = (now, secrets)
        return secrets

    def _dry_run(
        self, trigger: Trigger, variables: Mapping[str, Any], origins: Mapping[str, str], masker: Masker
    ) -> tuple[CallResult, dict[str, Any]]:
        try:
            request = _with_default_headers(trigger.plan.render(variables))
        except RenderError as error:
            return CallResult(False, trigger.plan.method, "", category="render", error=str(error)), {}
        sources = {}
        for slot in trigger.plan.slots():
            name = defined_name(slot.candidates, variables)
            sources[slot.written] = {"variable": name, "source": origins.get(name or "", "undefined")}
        preview = {
            "request": _shown(trigger, variables, request, masker),
            "variables": sources,
            "sent": False,
        }
        return CallResult(True, request.method, request.url, request=request), preview


def build_variables(
    session_id: str,
    company_id: str,
    assistant_id: str,
    client_data: Mapping[str, Any],
    trigger: Trigger,
    arguments: Mapping[str, Any],
    images: Sequence[str],
    company_secrets: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The flat variable mapping for a call.

    Precedence, lowest first: client_data, then the trigger's declared arguments
    (undeclared arguments are dropped), then images, then system variables and the
    company's secrets (``secrets.NAME``), which nothing can overwrite.
    """
    variables = dict(client_data)
    if _SESSION_ID in variables or _COMPANY_ID in variables or _ASSISTANT_ID in variables:
        for name in SYSTEM_VARIABLES:  # set last, below, so they also come last in a log
            variables.pop(name, None)
    for name in trigger.parameter_names:
        if name in arguments:
            variables[name] = arguments[name]
    variables["images"] = list(images)
    variables[_SESSION_ID], variables[_COMPANY_ID], variables[_ASSISTANT_ID] = session_id, company_id, assistant_id
    if company_secrets is not None:
        for name in [name for name in variables if name.startswith(SECRETS_PREFIX) or name == _SECRETS_ROOT]:
            del variables[name]  # only the company can define a secret (not even by a nested "secrets" object)
        for name, value in company_secrets.items():
            variables[SECRETS_PREFIX + name] = value
    return variables


def variable_origins(variables: Mapping[str, Any], trigger: Trigger, arguments: Mapping[str, Any]) -> dict[str, str]:
    """Where each of ``build_variables``' names came from (for a dry run's preview)."""
    origins = {}
    for name in variables:
        if name in _SYSTEM:
            origins[name] = "system"
        elif name == "images":
            origins[name] = "image"
        elif name.startswith(SECRETS_PREFIX):
            origins[name] = "company_secret"
        elif name in arguments and name in trigger.parameter_names:
            origins[name] = "argument"
        else:
            origins[name] = "client_data"
    return origins


_SYSTEM = frozenset(SYSTEM_VARIABLES)
_SECRETS_ROOT = SECRETS_PREFIX.rstrip(".")
_SESSION_ID, _COMPANY_ID, _ASSISTANT_ID = SYSTEM_VARIABLES
_USER_AGENT = ("User-Agent", f"webhook-dsl/{_version}")
_ACCEPT_ENCODING = ("Accept-Encoding", "gzip, deflate")  # what _BodyReader can inflate


def _with_default_headers(request: RenderedRequest) -> RenderedRequest:
    """Our User-Agent and Accept-Encoding, unless the template set its own."""
    has_agent = has_encoding = False
    for name, _ in request.headers:
        lowered = name.lower()
        has_agent = has_agent or lowered == "user-agent"
        has_encoding = has_encoding or lowered == "accept-encoding"
    if has_agent and has_encoding:
        return request
    extra = ([] if has_agent else [_USER_AGENT]) + ([] if has_encoding else [_ACCEPT_ENCODING])
    return tuple.__new__(RenderedRequest, (request.method, request.url, request.headers + extra, request.body))


def _declares_json(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


def _client_data_update(
    call: CallResult, trigger: Trigger, protected_keys: Iterable[str] = ()
) -> tuple[dict[str, Any], list[str]]:
    """``session.client_data`` of a JSON response: keys to merge, and warnings for what was ignored."""
    try:
        document = call.json() if call.body.strip() else None
    except ValueError:
        return {}, []
    if not isinstance(document, dict) or "session" not in document:
        return {}, []
    session = document["session"]
    if not isinstance(session, dict) or "client_data" not in session:
        return {}, ["response 'session' is not an object with 'client_data'; ignored"]
    data = session["client_data"]
    if not isinstance(data, dict):
        return {}, [f"response session.client_data is {type(data).__name__}, not an object; ignored"]
    warnings = [f"response tried to set system variable '{k}'; ignored" for k in data if k in SYSTEM_VARIABLES]
    refused = (trigger.protected_keys | set(protected_keys)) - set(trigger.client_data_writes)
    for key in data:
        if key in refused:
            warnings.append(
                f"response tried to set '{key}', a declared secret or a key that chooses a webhook's destination; "
                "ignored (list it under the trigger's clientDataWrites to allow it)"
            )
    return {k: v for k, v in data.items() if k not in SYSTEM_VARIABLES and k not in refused}, warnings


def _compact_json(document: Any, body: bytes) -> str:
    """Compact JSON text: orjson (a tenth of the stdlib's time), unless it would change the document:
    integers beyond 64 bits (it refuses them) or NaN and Infinity (it would write null)."""
    if b"NaN" not in body and b"Infinity" not in body:
        try:  # try/except, not contextlib.suppress: a third of this function's time on the hot path
            return orjson.dumps(document).decode("utf-8")
        except TypeError:
            pass
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


def _shown(trigger: Trigger, variables: Mapping[str, Any], request: RenderedRequest, masker: Masker) -> dict[str, Any]:
    plan = trigger.plan if trigger.references_secrets else None
    return shown_request(request, masker, plan, variables, trigger.secret_names)


def message_for_llm(trigger: Trigger, call: CallResult, masker: Masker, limit: int) -> str:
    """What the LLM is handed after the call (see README: "What the LLM receives"): for any HTTP answer,
    success or error status, the status and the body; for a call that got no answer, the failure's category."""
    if call.category == "bad_arguments":
        return masker.text(
            f'The tool "{trigger.name}" was not called: its arguments are invalid ({call.error}). '
            "Ask the user for the missing or corrected values, then call it again."
        )
    answered = call.status is not None and call.category in (None, "http_status", "invalid_response")
    if not answered:
        detail = call.error or call.category
        if call.category == "render":
            detail = "the request could not be built from the session's data"
        unsent = (call.error or "").startswith(_Failure.NOT_SENT)
        if call.category in ("timeout", "connection") and not unsent:
            # The request left: the API may have acted on it, so the LLM must neither report a failure as
            # certain nor repeat the call as if nothing happened.
            if call.category == "timeout":
                head = f'The tool "{trigger.name}" timed out waiting for the answer'
            else:
                head = f'The tool "{trigger.name}" failed ({call.category}: {detail})'
            return masker.text(
                f"{head}: the request was sent, so the action may have happened; do not retry it blindly. "
                "Tell the user the outcome is not known yet (it may have gone through) and, before trying "
                "again, check whether it did or ask the user; do not invent a result."
            )
        if call.category in ("blocked", "dns"):
            # One wording for both: that a name does not resolve, or resolves to a private address, is the
            # operator's to know (the result and the log say which); told to the LLM, it maps internal names.
            host = urlsplit(call.url).hostname or "the destination"
            return masker.text(
                f'The tool "{trigger.name}" failed (unreachable: {host} does not resolve or is not an allowed '
                "destination). Nothing was sent, so the action did not happen. Tell the user the action could "
                "not be completed right now; do not invent a result."
            )
        if call.category in ("timeout", "connection"):
            return masker.text(
                f'The tool "{trigger.name}" failed ({call.category}: {detail}). Nothing was sent, so the '
                "action did not happen. Tell the user the action could not be completed right now; do not "
                "invent a result."
            )
        return masker.text(
            f'The tool "{trigger.name}" failed ({call.category}: {detail}). Tell the user the '
            "action could not be completed right now; do not invent a result."
        )
    assert call.status is not None
    note = None
    if trigger.response_select is not None and call.ok and call.body.strip():  # an error shows its whole body
        selected, note = select_response(trigger.response_select, call)
        text = "" if note is not None else _compact_json(selected, call.body)
    else:
        try:  # JSON is shown compact; anything else as it came
            text = _compact_json(call.json(), call.body)
        except ValueError:
            text = call.text
    if note is not None:
        shown = note
    elif not text.strip():
        shown = "(empty)"
    elif len(text) > limit:  # masked before the cut would be, so a secret across it is masked whole
        shown = masker.head(text, limit) + f"… [truncated, {len(text) - limit} more characters]"
    else:
        shown = masker.text(text)
    status = _status_text(call.status)
    if call.ok:
        head = f'The tool "{trigger.name}" succeeded (HTTP {status}).'
    elif call.category == "http_status":
        head = f'The tool "{trigger.name}" answered with an error status (HTTP {status}): the action did not succeed.'
    else:
        head = masker.text(
            f'The tool "{trigger.name}" answered (HTTP {status}), but the answer is not usable ({call.error}).'
        )
    parts = [head, "Response:", shown]
    directive = trigger.plan.response_directive
    if trigger.interpret_response and directive:
        parts.append(f"Instruction: {directive}")
    elif call.ok:
        parts.append("Use this response as context for your reply; decide freely what to tell the user.")
    else:
        parts.append("Use this response to tell the user what went wrong; do not invent a result.")
    return "\n".join(parts)


def _status_text(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def _log_record(
    trigger: Trigger,
    session_id: str,
    call: CallResult,
    variables: Mapping[str, Any],
    merged: Mapping[str, Any],
    warnings: list[str],
    masker: Masker,
    limit: int,
    shown: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The call's log record, masked. Its variables are the ones the request used (what each reference
    resolved to), not every variable the session defines; bodies are cut at ``limit`` characters."""
    body_text = call.text
    used = {}
    for candidates in trigger.reference_candidates:
        found = resolve_reference(candidates, variables)
        if found is not None:
            used[found[0]] = found[1]
    request_body = shown["body"] if shown else None
    return masker.record(
        {
            "at": time.time(),
            "session_id": session_id,
            "trigger": trigger.name,
            "trigger_version": trigger.version,
            "method": call.method,
            "url": shown["url"] if shown else call.url,
            "request_headers": shown["headers"] if shown else [],
            "request_body": masker.head(request_body, limit) if request_body else None,
            "status": call.status,
            "response_body": masker.head(body_text, limit) if body_text else None,
            "response_truncated": len(body_text) > limit,
            "variables": whole_secrets(used, trigger.secret_names),
            "elapsed_ms": round(call.elapsed_ms, 3),
            "attempts": call.attempts,
            "ok": call.ok,
            "category": call.category,
            "error": call.error or None,
            "client_data_merged": whole_secrets(merged, trigger.secret_names),
            "warnings": warnings,
        }
    )


def _intent_record(
    trigger: Trigger, session_id: str, request: RenderedRequest, shown: Mapping[str, Any], at: float
) -> dict[str, Any]:
    """The log record of a call about to be sent (``Store.begin_call``): what will be sent, masked, with no
    answer yet. Should the process stop before the answer is recorded, this is what the log shows."""
    return {
        "at": at,
        "session_id": session_id,
        "trigger": trigger.name,
        "trigger_version": trigger.version,
        "method": request.method,
        "url": shown["url"],
        "request_headers": shown["headers"],
        "status": None,
        "elapsed_ms": 0.0,
        "attempts": 0,
        "ok": False,
        "category": None,
        "error": None,
        "client_data_merged": {},
        "warnings": [],
    }


def call_trigger_sync(
    trigger: Trigger,
    session_id: str,
    arguments: Mapping[str, Any],
    images: Sequence[str] = (),
    *,
    store: Store | None = None,
    database: str = "webhooks.db",
    dry_run: bool = False,
    event_loop: str = "auto",
    **runtime_options: Any,
) -> TriggerResult:
    """One trigger call from synchronous code (scripts, the CLI): a Runtime for the duration."""

    async def call() -> TriggerResult:
        own_store = store is None
        the_store: Store = store if store is not None else SQLiteStore(database)
        try:
            async with Runtime(the_store, **runtime_options) as runtime:
                return await runtime.call_trigger(trigger, session_id, arguments, images, dry_run=dry_run)
        finally:
            if own_store:
                await the_store.close()

    return run(call(), event_loop=event_loop)


#: The event loops ``run`` and ``webhook-dsl serve`` accept.
EVENT_LOOPS = ("auto", "uvloop", "asyncio")


def event_loop_factory(kind: str = "auto") -> Callable[[], asyncio.AbstractEventLoop]:
    """The event loop to run a Runtime on: uvloop when it is installed ("auto"), else asyncio's own.

    The loop matters as much as the client: at concurrency 64 a trigger call did 0.66-0.69x the
    requests of bare aiohttp on uvloop against 0.49-0.51x on asyncio's own loop, and ``execute``
    1.55-1.87x against 0.86-1.23x (three runs of benchmarks/runtime_bench.py, every contender on
    the same loop). uvloop spends less of the loop thread per event, and the less of it our work
    takes, the less often the HTTP client's I/O thread has to wait for the GIL.
    """
    if kind not in EVENT_LOOPS:
        raise ValueError(f"event loop {kind!r}: expected one of {', '.join(EVENT_LOOPS)}")
    if kind != "asyncio":
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise RuntimeError("uvloop is not installed (pip install uvloop; there is none for Windows)") from None
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


def run(coroutine: Coroutine[Any, Any, T], *, event_loop: str = "auto") -> T:
    """``asyncio.run`` on the loop ``event_loop_factory`` picks."""
    with asyncio.Runner(loop_factory=event_loop_factory(event_loop)) as runner:
        return runner.run(coroutine)
