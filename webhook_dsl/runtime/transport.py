"""The one protocol ``Runtime`` sends through, and a test double.

The runtime does everything that decides whether an answer is usable and what a failure means, once,
whatever the transport: the outbound guard and the pin (which checked address a destination dials), the
per-destination queue, the deadline's bookkeeping, the response cap counted on the bytes read, the
framing checks, decompression, retries, redirects and the error categories. A transport only moves
bytes: it sends one request **to the address it is given** and hands back the answer's head and its
body as it arrives, still content-encoded. That keeps the security rules in one code path, and makes a
transport small enough to write for a test.

Implementations: ``client.PinnedClients`` (pyreqwest, the default), ``httpx_transport.HttpxTransport``
(any ``httpx.AsyncClient`` or transport, in the ``[httpx]`` extra) and ``StubTransport`` below. None of
this module imports an HTTP client.

A transport reports a failure as a ``TransportError`` whose ``kind`` says how far the request got,
because that is what the runtime needs to know: whether retrying could repeat an action the API has
already taken.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

__all__ = [
    "Destination",
    "Exchange",
    "Headers",
    "Response",
    "StubRequest",
    "StubResponse",
    "StubTransport",
    "Transport",
    "TransportError",
]

#: (scheme, host, port): what a pin, a connection pool and an in-flight limit are kept per.
Destination = tuple[str, str, int]


class Headers(Protocol):
    """A response's header fields, looked up case-insensitively (pyreqwest's ``HeaderMap``, ``httpx.Headers``)."""

    def get(self, name: str, /) -> str | None: ...


class Response(Protocol):
    """An answer whose head has arrived; its body is read through it, within the exchange's timeout."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Headers: ...

    def read(self) -> Awaitable[bytes]:
        """The whole body, as sent (or any object ``bytes()`` takes, as pyreqwest's ``Bytes``). Called only
        when ``Content-Length`` alone frames it, at most the cap: the transport must stop at that length, as
        any HTTP/1.1 parser does."""
        ...

    async def next_chunk(self) -> bytes | None:
        """The next piece of the body as it arrived (still content-encoded); None at its end."""
        ...


class Exchange(Protocol):
    """``async with exchange as response``: the answer's head is in on entering; leaving ends the exchange
    (the connection goes back to its pool, or is closed if the body was not read to its end)."""

    def __aenter__(self) -> Awaitable[Response]: ...

    def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: Any, /
    ) -> Awaitable[bool | None]: ...


@runtime_checkable
class Transport(Protocol):
    """What the runtime sends through; see the module docstring."""

    #: True when the transport connects to the address it is given and nowhere else (no lookup of its own).
    dials_given_address: bool

    def read_url(self, url: str) -> Destination:
        """(scheme, host, port) the way this transport's own URL parser reads *url* (host lower-cased, no
        brackets, port defaulted); ``ValueError`` if it cannot. The runtime checks that host, and refuses a
        URL that Python's parser reads with another host."""
        ...

    def open(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
        *,
        destination: Destination,
        address: str,
        timeout: float,
    ) -> Exchange:
        """Send one request to *address* (checked by the guard for *destination*) and yield the answer once
        its head is in. Within *timeout* seconds for everything, connecting and every body read included;
        no redirect followed, no cookie kept, nothing decompressed. Raises ``TransportError``."""
        ...

    async def aclose(self) -> None: ...


class TransportError(Exception):
    """A failed exchange; ``kind`` says how far the request got (the runtime words the rest)."""

    #: No connection could be made (refused, unreachable, connect timeout, TLS handshake): nothing was sent.
    CONNECT = "connect"
    #: The deadline passed while waiting for a free connection: nothing was sent.
    POOL = "pool"
    #: The deadline passed once the request may have left; ``stage`` is "send", "answer" or "body".
    TIMEOUT = "timeout"
    #: The connection broke once the request may have left.
    LOST = "lost"
    #: The answer is not valid HTTP (or is framed in a way the transport refuses).
    INVALID = "invalid"
    #: The transport will not send this request (a header value its HTTP library refuses): nothing was sent.
    UNSENDABLE = "unsendable"

    def __init__(self, kind: str, message: str, *, stage: str = "answer") -> None:
        super().__init__(message)
        self.kind = kind
        self.stage = stage


# -- a test double -----------------------------------------------------------------------------------


@dataclass
class StubRequest:
    """A request ``StubTransport`` received, with the address the runtime told it to dial."""

    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes | None
    destination: Destination
    address: str

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), None)


class _StubHeaders:
    __slots__ = ("_fields",)

    def __init__(self, fields: Iterable[tuple[str, str]]) -> None:
        self._fields = [(k.lower(), v) for k, v in fields]

    def get(self, name: str, /) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self._fields if k == lowered), None)


@dataclass
class StubResponse:
    """An answer for ``StubTransport``: the body as bytes, or pieces (any iterable, sync or async, endless
    included, so that a test can play a hostile server). Headers are sent as given: nothing is added."""

    status: int = 200
    headers: Mapping[str, str] | Sequence[tuple[str, str]] = ()
    body: bytes | Iterable[bytes] | AsyncIterable[bytes] = b""

    def header_fields(self) -> list[tuple[str, str]]:
        return list(self.headers.items()) if isinstance(self.headers, Mapping) else list(self.headers)


StubHandler = Callable[[StubRequest], "StubResponse | Awaitable[StubResponse]"]


class StubTransport:
    """A transport that answers from *handler* in-process: nothing is dialled, every request is recorded.

    For tests of code that calls ``Runtime``: the guard, pins, caps, framing checks and categories all run
    as they do on the network. A handler raises ``TransportError`` to play a failure, or sleeps to play a
    slow remote (the exchange's timeout ends it as a ``TIMEOUT``)::

        stub = StubTransport(lambda request: StubResponse(200, {"Content-Type": "application/json"}, b"{}"))
        Runtime(transport=stub, resolver=...)
    """

    dials_given_address = True  # nothing is dialled; the address each request was given is in ``requests``

    def __init__(self, handler: StubHandler) -> None:
        self.handler = handler
        self.requests: list[StubRequest] = []
        self.closed = False

    def read_url(self, url: str) -> Destination:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
        if not parts.hostname or port is None:
            raise ValueError(f"no host or port in {url!r}")
        return scheme, parts.hostname.lower(), port

    def open(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
        *,
        destination: Destination,
        address: str,
        timeout: float,
    ) -> Exchange:
        request = StubRequest(method, url, list(headers), body, destination, address)
        self.requests.append(request)
        return _StubExchange(self.handler, request, timeout)

    async def aclose(self) -> None:
        self.closed = True


class _StubExchange:
    def __init__(self, handler: StubHandler, request: StubRequest, timeout: float) -> None:
        self._handler = handler
        self._request = request
        self._timeout = asyncio.timeout(timeout)
        self._answer: StubResponse | None = None
        self._pieces: Any = None
        self.status = 0
        self.headers = _StubHeaders(())

    async def __aenter__(self) -> _StubExchange:
        await self._timeout.__aenter__()
        try:
            answer = self._handler(self._request)
            if inspect.isawaitable(answer):
                answer = await answer
        except BaseException as error:
            await self._leave(type(error), error)
            raise
        assert isinstance(answer, StubResponse)
        self._answer = answer
        self.status = answer.status
        self.headers = _StubHeaders(answer.header_fields())
        body = answer.body
        if isinstance(body, bytes | bytearray):
            self._pieces = iter([bytes(body)] if body else [])
        elif isinstance(body, AsyncIterable):
            self._pieces = aiter(body)
        else:
            self._pieces = iter(body)
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: Any) -> None:
        await self._leave(kind, error)

    async def _leave(self, kind: type[BaseException] | None, error: BaseException | None) -> None:
        try:
            await self._timeout.__aexit__(kind, error, None)
        except TimeoutError:
            stage = "answer" if self._answer is None else "body"
            raise TransportError(TransportError.TIMEOUT, "the stub did not answer in time", stage=stage) from None

    async def read(self) -> bytes:
        """Up to Content-Length, as an HTTP/1.1 parser stops there (the runtime reads this way only then)."""
        length = int(self.headers.get("content-length") or 0)
        parts, size = [], 0
        while size < length and (chunk := await self.next_chunk()) is not None:
            parts.append(chunk)
            size += len(chunk)
        return b"".join(parts)[:length]

    async def next_chunk(self) -> bytes | None:
        if isinstance(self._pieces, AsyncIterator):
            return await anext(self._pieces, None)
        return next(self._pieces, None)
