"""Where a request may go and how it gets there: pins to checked addresses, per-destination queues, and
the default transport, pyreqwest (Rust's reqwest) clients that dial only the address they are given.

Why pinning: a name resolved twice can answer differently the second time (DNS rebinding), so it is
resolved once, with the guard, and the checked address is the one dialled. ``Pins`` keeps, for each
(scheme, host, port), the checked addresses and the one in use; the runtime hands that address to the
transport with the request (``transport.Transport.open``), so the same rule holds whatever the
transport. A pin lives ``pin_seconds``; then the name is resolved and checked again, once however many
requests are waiting, and while the address in use is still among the answers it stays in use (with a
transport's open connections to it). When no connection can be made to it (``unreachable``), the pin
moves to the next checked address, and the runtime's retry goes there.

The host is read by the transport's own URL parser (for pyreqwest, Rust's ``url`` crate via
``pyreqwest.http.Url``), and a URL whose host Python's parser reads differently is refused: a parser
differential (``http://a\\@b/``, ``http://127.1/``) can then never send a request anywhere the guard did
not approve.

Why one queue per destination: a connection limit shared by destinations lets one hanging API hold the
slots another API's calls need. Every destination, a host written as an address too, has at most
``max_in_flight`` requests in flight (``InFlight``); the rest wait in its queue, first come first
served, with their deadline running.

Why a bound: an LLM chooses hosts, and every pin (and the client behind it) holds memory, sockets and a
connection pool. At most ``max_pins`` are kept, names and addresses alike; beyond that the least
recently used is dropped.

Why pyreqwest by default: under concurrency it needs less client CPU per request than bare aiohttp and
far less than httpx's own pools (the README and benchmarks/README.md have the measurements). It is
imported when the first ``PinnedClients`` is made, not with this module, so the pins and the guard
cost no HTTP client import. ``PinnedClients`` builds one client per destination whose only resolution
is *host -> the address it was given* (reqwest's ``resolve`` override, which it prefers to DNS), so
reqwest has nothing left to look up. A client for an address that is no longer the pin's is dropped,
not ``close()``d, which would fail the requests still running on it: they hold their own reference,
and the client, with its connections, goes when the last of them ends. A client is built on a worker
thread: a build takes milliseconds, during which the event loop would otherwise serve no other call.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .guard import BlockedError, OutboundGuard
from .transport import Destination, TransportError

if TYPE_CHECKING:
    from pyreqwest.client import Client, ClientBuilder
    from pyreqwest.response import Response as ReqwestResponse
    from pyreqwest.response import ResponseBodyReader

__all__ = [
    "DEFAULT_MAX_IN_FLIGHT",
    "DEFAULT_MAX_PINS",
    "PIN_SECONDS",
    "Destination",
    "InFlight",
    "PinnedClients",
    "Pins",
    "describe_error",
    "dialling",
    "never_connected",
]

#: How long a checked name -> address pin is used before the name is resolved and checked again.
PIN_SECONDS = 30.0
#: Parsed ``scheme://authority`` prefixes kept (small tuples; a miss costs one URL parse).
MAX_PREFIXES = 4096
#: Pins (and pinned clients) kept by default (``RuntimeSettings.max_pinned_hosts``).
DEFAULT_MAX_PINS = 256
#: Requests in flight to one destination by default (``RuntimeSettings.max_in_flight_per_destination``).
DEFAULT_MAX_IN_FLIGHT = 64


def dialling(address: str, port: int) -> None:
    """Called with the address and port every request is about to be sent to, after the guard's checks.

    Nothing happens here in production. Tests replace it to stop anything but loopback before a
    transport is even called; what was really dialled they read at the servers."""


def _our_host(url: str) -> str:
    """The host as Python's URL parser reads it (lower case, no brackets)."""
    return (urlsplit(url).hostname or "").lower()


@dataclass(frozen=True, slots=True)
class _Pin:
    addresses: tuple[str, ...]  # all checked; addresses[current] is the one dialled
    current: int
    until: float  # infinite for a host written as an address: there is nothing to look up again


class InFlight:
    """At most ``cap`` requests in flight per destination; the others wait their turn, first come first served.

    A plain counter per destination, not a semaphore: a request under the cap takes its slot with two
    dict operations and no await, and only one over it pays for a future. A slot that is freed passes
    straight to the next live waiter, so a newcomer never overtakes the queue. The wait is bounded by
    the caller's deadline; a waiter that gives up is skipped when its turn comes."""

    __slots__ = ("_counts", "_queues", "cap")

    def __init__(self, cap: int) -> None:
        self.cap = max(1, cap)
        self._counts: dict[Destination, int] = {}
        self._queues: dict[Destination, deque[asyncio.Future[None]]] = {}

    def take(self, key: Destination) -> bool:
        """Take a slot if one is free (then ``release`` it when the request is over)."""
        count = self._counts.get(key, 0)
        if count >= self.cap:
            return False
        self._counts[key] = count + 1
        return True

    async def wait(self, key: Destination, timeout: float) -> None:
        """Wait in the destination's queue for a slot (then ``release`` it); TimeoutError after *timeout* s."""
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(key, deque()).append(turn)
        try:
            async with asyncio.timeout(timeout):
                await turn
        except BaseException:
            if turn.done() and not turn.cancelled():  # the slot came as the wait ended: pass it on
                self.release(key)
            else:
                turn.cancel()  # skipped when its turn comes
            raise

    def release(self, key: Destination) -> None:
        queue = self._queues.get(key)
        while queue:
            turn = queue.popleft()
            if not turn.done():
                turn.set_result(None)  # the slot goes to the next in line; the count stays
                if not queue:
                    del self._queues[key]
                return
        if queue is not None:
            del self._queues[key]
        count = self._counts[key] - 1
        if count:
            self._counts[key] = count
        else:
            del self._counts[key]

    def in_flight(self, key: Destination) -> int:
        """Requests holding a slot for *key* now."""
        return self._counts.get(key, 0)

    def queued(self, key: Destination) -> int:
        """Requests waiting for a slot for *key* now."""
        return sum(not turn.done() for turn in self._queues.get(key, ()))

    def busy(self) -> dict[Destination, int]:
        """Slots held now, per destination (empty when every request is over)."""
        return dict(self._counts)


class Pins:
    """Destinations read as the transport reads them, each pinned to addresses the guard checked; see the
    module docstring. ``clock`` is for tests (``time.monotonic`` by default)."""

    def __init__(
        self,
        guard: OutboundGuard,
        read_url: Callable[[str], Destination],
        *,
        max_pins: int = DEFAULT_MAX_PINS,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        pin_seconds: float = PIN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.guard = guard
        self.read_url = read_url
        self.max_pins = max(1, max_pins)
        self.pin_seconds = pin_seconds
        self.clock = clock
        self.in_flight = InFlight(max_in_flight)
        # destination -> the checked addresses, which one is dialled, until when; least recently used first
        self._pins: OrderedDict[Destination, _Pin] = OrderedDict()
        self._renewals: dict[Destination, asyncio.Future[_Pin]] = {}
        # scheme://authority -> (scheme, host, port), and whether the host is an address (checked), parsed once
        self._destinations: dict[str, tuple[Destination, bool]] = {}

    def destination(self, url: str) -> tuple[Destination, bool]:
        """(scheme, host, port) as the transport will read the URL, and whether the host is a (checked) address.

        Raises ``BlockedError``, also when Python's parser reads another host. The result depends only on
        the text up to the path, so it is kept per ``scheme://authority``."""
        scheme, sep, rest = url.partition("://")
        authority = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
        prefix = scheme + sep + authority
        known = self._destinations.get(prefix)
        if known is not None:
            return known
        try:
            scheme, host, port = self.read_url(url)
        except Exception as error:  # a parser raises what it likes; refuse whatever it cannot read
            raise BlockedError(f"the URL cannot be parsed: {error}") from None
        if not host or scheme not in ("http", "https"):
            raise BlockedError("the URL has no http(s) host")
        address = self.guard.numeric(host)  # checked here when the host is an address
        ours = _our_host(url)
        if ours != host and (address is None or self.guard.numeric(ours) != address):
            raise BlockedError(f"the URL's host is ambiguous (read as {host!r} and as {ours!r})")
        result = (scheme, host, port), address is not None
        if len(self._destinations) < MAX_PREFIXES:
            self._destinations[prefix] = result
        return result

    def pinned(self, key: Destination) -> str | None:
        """The address to dial for *key* if its pin holds (no lookup, no await), else None: then ``pin``."""
        pin = self._pins.get(key)
        if pin is None or pin.until <= self.clock():
            return None
        self._pins.move_to_end(key)
        address = pin.addresses[pin.current]
        dialling(address, key[2])
        return address

    async def pin(self, key: Destination, is_address: bool) -> str:
        """Pin *key* (a lookup for a name) and return the address to dial; raises ``BlockedError``."""
        pin = self._pins.get(key)
        if pin is None or pin.until <= self.clock():
            # One lookup per destination at a time: requests that find the pin missing or expired while it
            # is being renewed wait for that renewal instead of each looking up on its own.
            renewal = self._renewals.get(key)
            if renewal is None:
                renewal = self._renewals[key] = asyncio.ensure_future(self._renew(key, pin, is_address))
                renewal.add_done_callback(functools.partial(self._renewed, key))
            pin = await asyncio.shield(renewal)  # a caller cancelled does not cancel it for the others
        address = pin.addresses[pin.current]
        dialling(address, key[2])
        return address

    async def _renew(self, key: Destination, old: _Pin | None, is_address: bool) -> _Pin:
        """Resolve and check the host again. While the address in use is still among the checked answers,
        it stays in use; otherwise the first answer is. An address was checked when the URL was read, and
        is its own pin."""
        _scheme, host, port = key
        if is_address:
            pin = _Pin((str(self.guard.numeric(host)),), 0, math.inf)
        else:
            addresses = tuple(await self.guard.resolve(host, port))  # every address checked, or BlockedError
            dialled = old.addresses[old.current] if old is not None else None
            current = addresses.index(dialled) if dialled in addresses else 0
            pin = _Pin(addresses, current, self.clock() + self.pin_seconds)
        self._pins[key] = pin
        self._pins.move_to_end(key)
        while len(self._pins) > self.max_pins:
            self._pins.popitem(last=False)
        return pin

    def _renewed(self, key: Destination, renewal: asyncio.Future[_Pin]) -> None:
        if self._renewals.get(key) is renewal:
            del self._renewals[key]
        if not renewal.cancelled():
            renewal.exception()  # retrieved here: an error its waiters already got is not reported as lost

    def unreachable(self, key: Destination, address: str) -> bool:
        """No connection could be made to *address* for *key*: pin the next checked address. Only if
        *address* is still the one pinned: many requests failing at once move it one step, not back and
        forth. False when there is nothing to move to."""
        pin = self._pins.get(key)
        if pin is None or len(pin.addresses) < 2 or pin.addresses[pin.current] != address:
            return False
        self._pins[key] = _Pin(pin.addresses, (pin.current + 1) % len(pin.addresses), pin.until)
        return True

    def addresses(self, key: Destination) -> tuple[tuple[str, ...], str] | None:
        """The checked addresses pinned for *key* and the one dialled, expired or not (None if unpinned)."""
        pin = self._pins.get(key)
        return None if pin is None else (pin.addresses, pin.addresses[pin.current])

    def __len__(self) -> int:
        return len(self._pins)

    def __contains__(self, key: object) -> bool:
        return key in self._pins

    def close(self) -> None:
        """Cancel the lookups under way: none may pin anything after this."""
        for renewal in list(self._renewals.values()):
            renewal.cancel()
        self._pins.clear()


# -- the default transport: pyreqwest ------------------------------------------------------------------


class PinnedClients:
    """The default ``Transport``: one pyreqwest client per destination, resolving its host only to the
    address it was given; see the module docstring."""

    dials_given_address = True

    def __init__(
        self,
        *,
        max_connections: int = 256,
        connect_timeout: float = 5.0,
        max_clients: int = DEFAULT_MAX_PINS,
    ) -> None:
        global _errors
        import pyreqwest.exceptions
        from pyreqwest.client import ClientBuilder
        from pyreqwest.http import Url

        _errors = pyreqwest.exceptions
        self._builder_type = ClientBuilder
        self._url = Url
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.max_clients = max(1, max_clients)
        # destination -> (the address its client dials, the client); least recently used first
        self._clients: OrderedDict[Destination, tuple[str, Client]] = OrderedDict()
        self._builds: dict[tuple[Destination, str], asyncio.Future[Client]] = {}
        self._closed = False

    def read_url(self, url: str) -> Destination:
        parsed = self._url(url)
        port = parsed.port_or_known_default
        if port is None:
            raise ValueError("no port")
        return parsed.scheme, (parsed.host_str or "").lower().strip("[]"), port

    def client(self, key: Destination) -> Client | None:
        """The client kept for *key*, if any."""
        entry = self._clients.get(key)
        return None if entry is None else entry[1]

    def __len__(self) -> int:
        return len(self._clients)

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
    ) -> _ReqwestExchange:
        entry = self._clients.get(destination)
        if entry is None or entry[0] != address:  # built on entering the exchange, off the event loop's thread
            return _ReqwestExchange(self, None, (method, url, headers, body, destination, address, timeout))
        self._clients.move_to_end(destination)
        try:  # _request, inlined: this is every call's path
            builder = entry[1].request(method, url).headers(headers).timeout(timedelta(seconds=timeout))
            if body is not None:
                builder = builder.body_bytes(body)
            return _ReqwestExchange(self, builder.build_streamed())
        except Exception as error:
            mapped = self._mapped(error)
            if mapped is error:
                raise
            raise mapped from None

    def _builder(self) -> ClientBuilder:
        return (
            self._builder_type()
            .follow_redirects(False)  # the runtime follows redirects itself, checking every hop
            .gzip(False)  # the runtime inflates, so the size cap counts decompressed bytes
            .deflate(False)
            .brotli(False)
            .zstd(False)
            .no_proxy()  # proxy environment variables are ignored
            .default_cookie_store(False)  # cookies never travel from one call (or company) to another
            .max_connections(self.max_connections)
            .connect_timeout(timedelta(seconds=self.connect_timeout))
        )

    async def _client_for(self, key: Destination, address: str) -> Client:
        """Build (once, however many requests wait for it) the client for *key* dialling *address*."""
        job = (key, address)
        build = self._builds.get(job)
        if build is None:
            build = self._builds[job] = asyncio.ensure_future(self._build(key, address))
            build.add_done_callback(functools.partial(self._built, job))
        return await asyncio.shield(build)

    async def _build(self, key: Destination, address: str) -> Client:
        builder = self._builder()
        if key[1] != address:  # a name: its only resolution is the checked address
            builder = builder.resolve(key[1], address, key[2])
        client = await asyncio.to_thread(builder.build)  # off the event loop's thread
        if self._closed:
            await client.close()
            raise TransportError(TransportError.CONNECT, "the runtime is closing")
        self._clients[key] = (address, client)  # a client for another address is dropped: see the module docstring
        self._clients.move_to_end(key)
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)
        return client

    def _built(self, job: tuple[Destination, str], build: asyncio.Future[Client]) -> None:
        if self._builds.get(job) is build:
            del self._builds[job]
        if not build.cancelled():
            build.exception()

    def _mapped(self, error: Exception) -> Exception:
        """A pyreqwest error as a ``TransportError``; any other error as it is.

        pyreqwest's class does not say how far the request got: its ``ConnectTimeoutError`` is also
        reqwest's own timeout firing while the answer was awaited, long after the request was sent, and
        ``ConnectError`` also a connection lost mid-request. hyper's error kind does: only a failure of
        the connector (DNS override, TCP, TLS handshake) is "client error (Connect)"."""
        if not isinstance(error, _errors.PyreqwestError):
            return error
        detail = describe_error(error)
        if isinstance(error, _errors.RequestTimeoutError):
            if never_connected(error):
                return TransportError(
                    TransportError.CONNECT, f"no connection within {self.connect_timeout:g} s ({detail})"
                )
            if isinstance(error, _errors.PoolTimeoutError):
                return TransportError(TransportError.POOL, detail)
            stage = "body" if isinstance(error, _errors.ReadTimeoutError) else "answer"
            stage = "send" if isinstance(error, _errors.WriteTimeoutError) else stage
            return TransportError(TransportError.TIMEOUT, detail, stage=stage)
        if isinstance(error, _errors.ConnectError) and never_connected(error):
            return TransportError(TransportError.CONNECT, detail)
        if isinstance(error, _errors.NetworkError | _errors.ClientClosedError) or _closed_early(error):
            return TransportError(TransportError.LOST, detail)
        if isinstance(error, _errors.BuilderError):  # e.g. a header value the HTTP library will not send
            return TransportError(TransportError.UNSENDABLE, detail)
        return TransportError(TransportError.INVALID, detail)

    async def aclose(self) -> None:
        self._closed = True
        for build in list(self._builds.values()):
            build.cancel()
        clients = [client for _address, client in self._clients.values()]
        self._clients.clear()
        for client in clients:
            await client.close()


_errors: Any = None  # pyreqwest.exceptions, once the first PinnedClients is made


class _ReqwestExchange:
    """One request on a pinned client, and its answer (``transport.Response``). The request is built when
    the exchange is made if its client is ready (the common case), else once the client is built."""

    __slots__ = ("_owner", "_pending", "_reader", "_response", "_streamed", "headers", "status")

    def __init__(self, owner: PinnedClients, streamed: Any, pending: tuple[Any, ...] | None = None) -> None:
        self._owner = owner
        self._streamed = streamed
        self._pending = pending  # (method, url, headers, body, destination, address, timeout) until a client is built
        self._reader: ResponseBodyReader | None = None

    async def __aenter__(self) -> _ReqwestExchange:
        owner = self._owner
        try:
            if self._pending is not None:
                method, url, headers, body, key, address, timeout = self._pending
                client = await owner._client_for(key, address)
                self._streamed = _request(client, method, url, headers, body, timeout)
            response: ReqwestResponse = await self._streamed.__aenter__()
        except Exception as error:
            mapped = owner._mapped(error)
            if mapped is error:
                raise
            raise mapped from None
        self._response = response
        self.status = response.status
        self.headers = response.headers
        return self

    def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: Any
    ) -> Awaitable[bool | None]:
        if isinstance(error, _errors.PyreqwestError):  # from read(): it leaves here as a TransportError
            return self._leave_mapped(kind, error, tb)
        done: Awaitable[bool | None] = self._streamed.__aexit__(kind, error, tb)  # pyreqwest's, awaited as is
        return done

    async def _leave_mapped(self, kind: type[BaseException] | None, error: Exception, tb: Any) -> bool | None:
        await self._streamed.__aexit__(kind, error, tb)
        raise self._owner._mapped(error) from None

    def read(self) -> Awaitable[Any]:
        """pyreqwest's own read, awaited as is (its errors are mapped on leaving the exchange)."""
        response: ReqwestResponse = self._response
        return response.bytes()

    async def next_chunk(self) -> bytes | None:
        if self._reader is None:
            self._reader = self._response.body_reader
        try:
            chunk = await self._reader.read_chunk()
        except Exception as error:
            mapped = self._owner._mapped(error)
            if mapped is error:
                raise
            raise mapped from None
        return None if chunk is None else bytes(chunk)


def _request(
    client: Client, method: str, url: str, headers: Sequence[tuple[str, str]], body: bytes | None, timeout: float
) -> Any:
    """The streamed request (an async context manager). reqwest's timeout is a deadline for the whole
    exchange: connecting, sending, every body chunk."""
    builder = client.request(method, url).headers(headers).timeout(timedelta(seconds=timeout))
    if body is not None:
        builder = builder.body_bytes(body)
    return builder.build_streamed()


def describe_error(error: BaseException) -> str:
    """An HTTP client's error in one line, at most 300 characters: a pyreqwest error's message and its
    innermost cause (e.g. 'Connection refused'), or any other error's text."""
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    causes = _causes(error)
    if causes:
        last = causes[-1]
        cause = last.get("message") if isinstance(last, dict) else str(last)
        if cause and cause not in message:
            message = f"{message}: {cause}"
    return message if len(message) < 300 else message[:300] + "…"


def never_connected(error: BaseException) -> bool:
    """Whether a pyreqwest error came from making the connection, so that no byte of the HTTP request left.

    Its exception class does not say: ``ConnectError`` is also raised for a connection closed while
    the request was being sent. hyper's own error kind does: ``client error (Connect)`` is a failure
    of the connector (DNS override, TCP, TLS handshake), before anything is written."""
    return any(isinstance(cause, dict) and cause.get("message") == "client error (Connect)" for cause in _causes(error))


#: hyper's words for a connection that ended before the answer did (a body cut short is no malformed body).
_CLOSED_EARLY = ("end of file", "eof", "connection closed before message completed")


def _closed_early(error: BaseException) -> bool:
    causes = _causes(error)
    last = causes[-1].get("message", "") if causes and isinstance(causes[-1], dict) else ""
    return any(words in str(last).lower() for words in _CLOSED_EARLY)


def _causes(error: BaseException) -> Sequence[Any]:
    """A pyreqwest error's chain of causes, outermost first (empty for any other error)."""
    details: Any = getattr(error, "details", None)
    return details.get("causes") or [] if isinstance(details, dict) else []
