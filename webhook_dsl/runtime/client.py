"""The HTTP client under ``Runtime``: pyreqwest (Rust's reqwest), every connection pinned to a checked address.

Why this client: under concurrency pyreqwest needs less client CPU per request than bare
aiohttp and far less than httpx's own pools (the README and benchmarks/README.md have the
measurements), and that CPU is what
limits a runtime's throughput. httpx stays available for anyone who needs its hooks:
``Runtime(transport=...)`` takes any httpx transport (mocks, custom networking).

Why pinning: reqwest resolves names itself, in Rust, where our outbound guard cannot
see. So a name is never handed to it unchecked. For each (scheme, host, port) we
resolve with the guard, check every address, and build a client whose only
resolution is ``host -> checked address`` (reqwest's ``resolve`` override, which it
prefers to DNS). A request is only ever sent through the client pinned for its own
host, so reqwest has nothing left to look up; IP-literal hosts are checked and need
no lookup. A pin lives ``PIN_SECONDS``; then the name is resolved and checked again,
once however many requests are waiting, and while the address being dialled is still
among the answers the client, with its open connections, stays.
A pin holds every checked address but dials one at a time (reqwest takes one per
name): when a connection to it cannot be made, ``unreachable`` moves the pin to the
next, and the runtime's retry goes there.

Why one client per destination: a client's connection limit is a semaphore over every
request it carries, so a client shared by destinations lets one hanging API hold the
slots another API's calls need. Every (scheme, host, port) has its own client, a host
written as an address too (it needs no lookup, and its pin never expires), and at most
``max_in_flight`` requests in flight (``InFlight``); the rest wait in that destination's
queue, first come first served, with their deadline running. The count is kept per
destination, not per client, so requests still running on a dropped client count too.

Why a bound: an LLM chooses hosts, and every pin is a client with its connection pool,
its sockets and its memory, which would otherwise pile up with every new host. At most
``max_pins`` are kept, names and addresses alike; beyond that the least recently used is
dropped. A dropped client is not ``close()``d, which would fail the requests still
running on it: they hold their own reference, and the client, with its connections,
goes when the last of them ends. A client is built on a worker thread: a build takes
milliseconds, during which the event loop would otherwise serve no other call.

The host is read by the same URL parser reqwest uses (Rust's ``url`` crate, via
``pyreqwest.http.Url``), and a URL whose host our own parser reads differently is
refused: a parser differential (``http://a\\@b/``, ``http://127.1/``) can then never
send a request anywhere the guard did not approve.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from pyreqwest.client import Client, ClientBuilder
from pyreqwest.http import Url

from .guard import BlockedError, OutboundGuard

__all__ = [
    "DEFAULT_MAX_IN_FLIGHT",
    "DEFAULT_MAX_PINS",
    "PIN_SECONDS",
    "Destination",
    "InFlight",
    "PinnedClients",
    "describe_error",
    "dialling",
    "never_connected",
]

#: (scheme, host, port): what a connection pool, a pin and an in-flight limit are kept per.
Destination = tuple[str, str, int]

#: How long a checked name -> address pin is used before the name is resolved and checked again.
PIN_SECONDS = 30.0
#: Parsed ``scheme://authority`` prefixes kept (small tuples; a miss costs one URL parse).
MAX_PINS = 4096
#: Pinned clients kept by default (``RuntimeSettings.max_pinned_hosts``).
DEFAULT_MAX_PINS = 256
#: Requests in flight to one destination by default (``RuntimeSettings.max_in_flight_per_destination``).
DEFAULT_MAX_IN_FLIGHT = 64


def dialling(address: str, port: int) -> None:
    """Called with the address and port every request is about to be sent to, after the guard's checks.

    Nothing happens here in production: it is the one place every destination passes, so tests can
    watch it (and stop anything but loopback) although the connection itself is made in Rust."""


def _our_host(url: str) -> str:
    """The host as Python's URL parser reads it (lower case, no brackets)."""
    return (urlsplit(url).hostname or "").lower()


@dataclass(frozen=True, slots=True)
class _Pin:
    client: Client
    addresses: tuple[str, ...]  # all checked; the client dials addresses[current]
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


class PinnedClients:
    """One pyreqwest client per checked destination; see the module docstring."""

    def __init__(
        self,
        guard: OutboundGuard,
        *,
        max_connections: int,
        connect_timeout: float,
        max_pins: int = DEFAULT_MAX_PINS,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        self.guard = guard
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.max_pins = max(1, max_pins)
        self.in_flight = InFlight(max_in_flight)
        # destination -> client, the checked addresses, which one it dials, until when; least recently used first
        self._pins: OrderedDict[Destination, _Pin] = OrderedDict()
        self._literal_keys: set[Destination] = set()  # the pinned destinations whose host is written as an address
        self._renewals: dict[Destination, asyncio.Future[_Pin]] = {}
        # scheme://authority -> (scheme, host, port), and whether the host is an address (checked), parsed once
        self._destinations: dict[str, tuple[Destination, bool]] = {}

    def _builder(self) -> ClientBuilder:
        return (
            ClientBuilder()
            .follow_redirects(False)  # the runtime follows redirects itself, checking every hop
            .gzip(False)  # we inflate ourselves, so the size cap counts decompressed bytes
            .deflate(False)
            .brotli(False)
            .zstd(False)
            .no_proxy()  # proxy environment variables are ignored
            .default_cookie_store(False)  # cookies never travel from one call (or company) to another
            .max_connections(self.max_connections)
            .connect_timeout(timedelta(seconds=self.connect_timeout))
        )

    def destination(self, url: str) -> tuple[Destination, bool]:
        """(scheme, host, port) as reqwest will read the URL, and whether the host is a (checked) address.

        Refused if our own parser reads another host. The result depends only on the text up to the
        path, so it is kept per ``scheme://authority``."""
        scheme, sep, rest = url.partition("://")
        authority = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
        prefix = scheme + sep + authority
        known = self._destinations.get(prefix)
        if known is not None:
            return known
        try:
            parsed = Url(url)
        except Exception as error:  # pyreqwest raises ValueError subclasses; refuse whatever it cannot read
            raise BlockedError(f"the URL cannot be parsed: {error}") from None
        host = (parsed.host_str or "").lower().strip("[]")
        port = parsed.port_or_known_default
        if not host or port is None or parsed.scheme not in ("http", "https"):
            raise BlockedError("the URL has no http(s) host")
        address = self.guard.numeric(host)  # checked here when the host is an address
        ours = _our_host(url)
        if ours != host and (address is None or self.guard.numeric(ours) != address):
            raise BlockedError(f"the URL's host is ambiguous (read as {host!r} and as {ours!r})")
        result = (parsed.scheme, host, port), address is not None
        if len(self._destinations) < MAX_PINS:
            self._destinations[prefix] = result
        return result

    def ready(self, url: str) -> Client | None:
        """The client for *url* when no lookup or build is needed, else None: then ``client_for``.
        Raises ``BlockedError``."""
        return self.pinned(self.destination(url)[0])

    def pinned(self, key: Destination) -> Client | None:
        """The client pinned for *key* if it holds (no lookup, no await), else None: then ``pin``."""
        pinned = self._pins.get(key)
        if pinned is None or pinned.until <= time.monotonic():
            return None
        self._pins.move_to_end(key)
        dialling(pinned.addresses[pinned.current], key[2])
        return pinned.client

    async def client_for(self, url: str) -> Client:
        """The client to send *url* with; raises ``BlockedError`` before anything is sent."""
        key, is_address = self.destination(url)
        client = self.pinned(key)
        return client if client is not None else await self.pin(key, is_address)

    async def pin(self, key: Destination, is_address: bool) -> Client:
        """Pin *key* (a lookup for a name, a client built for either) and return its client; raises
        ``BlockedError`` before anything is sent."""
        pinned = self._pins.get(key)
        if pinned is None or pinned.until <= time.monotonic():
            # One lookup and build per destination at a time: requests that find the pin missing or expired
            # while it is being renewed wait for that renewal instead of each building a client of its own.
            renewal = self._renewals.get(key)
            if renewal is None:
                renewal = self._renewals[key] = asyncio.ensure_future(self._renew(key, pinned, is_address))
                renewal.add_done_callback(functools.partial(self._renewed, key))
            pinned = await asyncio.shield(renewal)  # a caller cancelled does not cancel it for the others
        dialling(pinned.addresses[pinned.current], key[2])
        return pinned.client

    async def _renew(self, key: Destination, old: _Pin | None, is_address: bool = False) -> _Pin:
        """Resolve and check the host again. While the address the client dials is still among the
        checked answers, the client stays, and with it its open connections (each a TCP and TLS
        handshake saved); otherwise a new client dials the first answer. An address was checked when
        the URL was read, and is its own pin."""
        _scheme, host, port = key
        if is_address:
            pin = _Pin(await _build(self._builder()), (host,), 0, math.inf)
            self._literal_keys.add(key)
        else:
            addresses = tuple(await self.guard.resolve(host, port))  # every address checked, or BlockedError
            dialled = old.addresses[old.current] if old is not None else None
            if old is not None and dialled in addresses:
                pin = _Pin(old.client, addresses, addresses.index(dialled), time.monotonic() + PIN_SECONDS)
            else:  # a replaced client is dropped: see the module docstring
                client = await _build(self._builder().resolve(host, addresses[0], port))
                pin = _Pin(client, addresses, 0, time.monotonic() + PIN_SECONDS)
        self._pins[key] = pin
        self._pins.move_to_end(key)
        while len(self._pins) > self.max_pins:
            dropped, _ = self._pins.popitem(last=False)
            self._literal_keys.discard(dropped)
        return pin

    def _renewed(self, key: Destination, renewal: asyncio.Future[_Pin]) -> None:
        if self._renewals.get(key) is renewal:
            del self._renewals[key]
        if not renewal.cancelled():
            renewal.exception()  # retrieved here: an error its waiters already got is not reported as lost

    def unreachable(self, url: str, client: Client) -> bool:
        """*client* could make no connection for *url*: pin the host's next checked address (the old
        client is dropped; requests still using it keep it until they end). Only if *client* is
        still the pin: many requests failing at once move it one step, not back and forth. False when
        there is nothing to move."""
        try:
            key, is_address = self.destination(url)
        except BlockedError:
            return False
        pinned = self._pins.get(key)
        if is_address or pinned is None or pinned.client is not client or len(pinned.addresses) < 2:
            return False
        current = (pinned.current + 1) % len(pinned.addresses)
        moved = self._builder().resolve(key[1], pinned.addresses[current], key[2]).build()
        self._pins[key] = _Pin(moved, pinned.addresses, current, pinned.until)
        return True

    async def aclose(self) -> None:
        for renewal in list(self._renewals.values()):  # none may pin a client after this
            renewal.cancel()
        clients = [pin.client for pin in self._pins.values()]
        self._pins.clear()
        self._literal_keys.clear()
        for client in clients:
            await client.close()


async def _build(builder: ClientBuilder) -> Client:
    """Build a client off the event loop's thread (see the module docstring)."""
    return await asyncio.to_thread(builder.build)


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


def _causes(error: BaseException) -> Sequence[Any]:
    """A pyreqwest error's chain of causes, outermost first (empty for any other error)."""
    details: Any = getattr(error, "details", None)
    return details.get("causes") or [] if isinstance(details, dict) else []
