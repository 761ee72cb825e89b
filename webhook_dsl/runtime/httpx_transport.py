"""httpx behind the runtime's transport protocol (extra ``[httpx]``; httpx is imported here and nowhere else).

For those who bring their own ``httpx.AsyncClient`` or transport (``httpx.MockTransport``, respx, a
proxy, custom networking), or want httpx's TLS stack (client certificates through ``verify=`` an
``ssl.SSLContext``). The runtime treats it like any transport: the same guard, pins, caps, framing
checks, deadline and categories apply, in the runtime. Two ways to make one, and one difference:

* ``HttpxTransport(verify=..., http2=..., **options)`` makes its own ``httpx.AsyncHTTPTransport``s
  (options go to them) and **dials the checked address**, as the default transport does: the URL it
  hands httpx names the address, while the ``Host`` header and the TLS server name (httpx's
  ``sni_hostname`` extension) name the host, so certificates are checked against the host. There is one
  pool per destination, as pyreqwest has one client per destination; that also matters for TLS, since
  httpcore keys connections by the URL's host, and two names on one address must not share a
  connection whose certificate was checked for only one of them. No proxy here: through an HTTP proxy,
  httpcore takes the TLS server name from the URL, so an address in it would fail every certificate.
* ``HttpxTransport(client_or_transport)`` sends through what it is given, as it is: its proxies,
  mounts, auth, event hooks and mocks see the URL as written (respx routes match it). The name is
  resolved and checked before the request is handed over, but a network transport then resolves it
  again on its own: this way is **not pinned** (``dials_given_address`` is False), so the
  no-rebinding guarantee does not hold, and a proxy is where egress must then be policed. A mock
  dials nothing. Redirects are never followed by httpx (the runtime follows them, checked); a client's
  cookie jar is set to store nothing, so cookies cannot travel between calls (or companies); a
  client's environment settings (``trust_env``) are its own.

``Runtime(transport=httpx.MockTransport(...))`` (or any httpx client or transport) is wrapped in the
second way automatically. Either way, the adapter closes what it sends through when the runtime closes.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from http.cookiejar import DefaultCookiePolicy
from typing import Any

import httpx

from .client import DEFAULT_MAX_PINS
from .transport import Destination, TransportError

__all__ = ["HttpxTransport"]

_PORTS = {"http": 80, "https": 443}
#: httpcore's words for a connection that ended before the answer did (anything else it refuses is invalid HTTP).
_CLOSED = ("disconnected", "peer closed", "connection closed", "connectionterminated")


class HttpxTransport:
    """A ``transport.Transport`` on httpx; see the module docstring. ``connect_timeout``, ``max_connections``
    (per destination) and ``max_pools`` are its own: ``RuntimeSettings`` sets them for the default transport
    only (and the connect timeout for an httpx object ``Runtime`` wraps itself)."""

    def __init__(
        self,
        through: httpx.AsyncClient | httpx.AsyncBaseTransport | None = None,
        *,
        connect_timeout: float = 5.0,
        max_connections: int = 256,
        max_pools: int = DEFAULT_MAX_PINS,
        verify: ssl.SSLContext | bool = True,
        http2: bool = False,
        **options: Any,
    ) -> None:
        self.connect_timeout = connect_timeout
        self._client: httpx.AsyncClient | None = None
        self._given: httpx.AsyncBaseTransport | None = None
        self._pools: OrderedDict[Destination, _Pool] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()
        self.max_pools = max(1, max_pools)
        if through is None:
            if {"proxy", "mounts", "uds"} & set(options):
                raise TypeError(
                    "HttpxTransport dials the checked address itself; for a proxy, pass your own "
                    "httpx.AsyncHTTPTransport(proxy=...) or client (not pinned: see the module docstring)"
                )
            context = verify
            if not isinstance(context, ssl.SSLContext):  # one context for every pool: loading the roots takes a while
                context = httpx.create_ssl_context(verify=verify, trust_env=False)
            self._options: dict[str, Any] = {
                "verify": context,
                "http2": http2,
                "limits": httpx.Limits(max_connections=max_connections),
                "trust_env": False,
                **options,
            }
            self.dials_given_address = True
        elif options or http2 or verify is not True:
            raise TypeError("options are for the transports HttpxTransport makes; configure your own client instead")
        elif isinstance(through, httpx.AsyncClient):
            through.cookies.jar.set_policy(DefaultCookiePolicy(allowed_domains=[]))  # stores none, sends none
            self._client = through
            self.dials_given_address = False
        elif isinstance(through, httpx.AsyncBaseTransport):
            self._given = through
            self.dials_given_address = False
        else:
            raise TypeError(f"expected an httpx.AsyncClient or httpx.AsyncBaseTransport, not {type(through).__name__}")

    def read_url(self, url: str) -> Destination:
        parsed = httpx.URL(url)
        scheme = parsed.scheme
        port = parsed.port or _PORTS.get(scheme)
        if port is None:
            raise ValueError(f"no port for the scheme {scheme!r}")
        return scheme, parsed.raw_host.decode("ascii").lower(), port

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
    ) -> _HttpxExchange:
        try:
            fields = [(name.encode("ascii"), value.encode("utf-8")) for name, value in headers]
        except UnicodeEncodeError as error:
            raise TransportError(TransportError.UNSENDABLE, f"a header name is not ASCII ({error})") from None
        connect = min(self.connect_timeout, timeout)
        timeouts = {"connect": connect, "read": timeout, "write": timeout, "pool": timeout}
        send: Callable[[httpx.Request], Awaitable[httpx.Response]]
        pool = None
        try:
            if self._client is not None:
                client = self._client
                request = client.build_request(
                    method, url, headers=fields, content=body, timeout=httpx.Timeout(timeout, connect=connect)
                )

                async def send(request: httpx.Request) -> httpx.Response:
                    return await client.send(request, stream=True, follow_redirects=False)

            elif self._given is not None:
                request = httpx.Request(method, url, headers=fields, content=body, extensions={"timeout": timeouts})
                send = self._given.handle_async_request
            else:
                target = httpx.URL(url)
                if not any(name.lower() == b"host" for name, _ in fields):
                    fields.append((b"Host", target.netloc))
                extensions = {"timeout": timeouts, "sni_hostname": target.raw_host.decode("ascii")}
                request = httpx.Request(method, target.copy_with(host=address), headers=fields, content=body,
                                        extensions=extensions)
                pool = self._pool(destination)
                send = pool.transport.handle_async_request
        except (httpx.InvalidURL, httpx.LocalProtocolError, ValueError) as error:
            raise TransportError(TransportError.UNSENDABLE, _describe(error)) from None
        return _HttpxExchange(self, request, send, timeout, pool)

    def _pool(self, key: Destination) -> _Pool:
        pool = self._pools.get(key)
        if pool is not None:
            self._pools.move_to_end(key)
            return pool
        pool = self._pools[key] = _Pool(httpx.AsyncHTTPTransport(**self._options), self._closing)
        while len(self._pools) > self.max_pools:
            _, dropped = self._pools.popitem(last=False)
            dropped.dropped = True
            if not dropped.users:
                dropped.close_soon()
        return pool

    def __len__(self) -> int:
        """Pools kept now (one per destination this transport dials itself)."""
        return len(self._pools)

    def mapped(self, error: BaseException, answered: bool) -> TransportError | None:
        """An httpx error as a ``TransportError`` (None for anything else). *answered*: the head had come."""
        if isinstance(error, httpx.ConnectTimeout):
            return TransportError(
                TransportError.CONNECT, f"no connection within {self.connect_timeout:g} s ({_describe(error)})"
            )
        if isinstance(error, httpx.PoolTimeout):
            return TransportError(TransportError.POOL, _describe(error))
        if isinstance(error, httpx.WriteTimeout):
            return TransportError(TransportError.TIMEOUT, _describe(error), stage="send")
        if isinstance(error, httpx.TimeoutException):
            return TransportError(TransportError.TIMEOUT, _describe(error), stage="body" if answered else "answer")
        if isinstance(error, httpx.ConnectError | httpx.ProxyError):  # the request never reached the API
            return TransportError(TransportError.CONNECT, _describe(error))
        if isinstance(error, httpx.ReadError | httpx.WriteError | httpx.CloseError):
            return TransportError(TransportError.LOST, _describe(error))
        if isinstance(error, httpx.RemoteProtocolError):
            closed = any(words in str(error).lower() for words in _CLOSED)
            return TransportError(TransportError.LOST if closed else TransportError.INVALID, _describe(error))
        if isinstance(error, httpx.LocalProtocolError | httpx.UnsupportedProtocol | httpx.InvalidURL):
            return TransportError(TransportError.UNSENDABLE, _describe(error))
        if isinstance(error, httpx.HTTPError | httpx.StreamError):
            return TransportError(TransportError.INVALID, _describe(error))
        return None

    async def aclose(self) -> None:
        pools = list(self._pools.values())
        self._pools.clear()
        for pool in pools:
            await pool.transport.aclose()
        await asyncio.gather(*self._closing)  # dropped pools closing after their last request
        if self._client is not None:
            await self._client.aclose()
        if self._given is not None:
            await self._given.aclose()


class _Pool:
    """One destination's httpx transport, and how many requests use it (a dropped one is closed after them)."""

    __slots__ = ("closing", "dropped", "transport", "users")

    def __init__(self, transport: httpx.AsyncHTTPTransport, closing: set[asyncio.Task[None]]) -> None:
        self.transport = transport
        self.users = 0
        self.dropped = False
        self.closing = closing

    def close_soon(self) -> None:
        task = asyncio.get_running_loop().create_task(self.transport.aclose())
        self.closing.add(task)
        task.add_done_callback(self.closing.discard)


class _HttpxExchange:
    """One request through httpx, and its answer (``transport.Response``). The whole exchange runs under one
    asyncio timeout: httpx's own timeouts are per operation, and a server dripping a byte at a time would
    outlive them."""

    def __init__(
        self,
        owner: HttpxTransport,
        request: httpx.Request,
        send: Callable[[httpx.Request], Awaitable[httpx.Response]],
        timeout: float,
        pool: _Pool | None,
    ) -> None:
        self._owner = owner
        self._request = request
        self._send = send
        self._deadline = asyncio.timeout(timeout)
        self._pool = pool
        self._response: httpx.Response | None = None
        self._chunks: AsyncIterator[bytes] | None = None
        self.status = 0
        self.headers = httpx.Headers()

    async def __aenter__(self) -> _HttpxExchange:
        if self._pool is not None:
            self._pool.users += 1
        try:
            await self._deadline.__aenter__()
            try:
                response = await self._send(self._request)
            except BaseException as error:
                await self._leave(type(error), error)
                raise
        except BaseException:
            self._release()
            raise
        self._response = response
        self.status = response.status_code
        self.headers = response.headers
        # The stream itself, not aiter_raw(): raw bytes either way, and a mock's answer built from bytes in
        # memory (already "consumed" in httpx's eyes) reads like one from the network.
        self._chunks = aiter(response.stream)  # type: ignore[arg-type]
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: Any) -> None:
        try:
            try:
                if self._response is not None:
                    await self._response.aclose()
            finally:
                await self._leave(kind, error)
        finally:
            self._release()

    async def _leave(self, kind: type[BaseException] | None, error: BaseException | None) -> None:
        """Leave the exchange's timeout; a timeout that fired, or an httpx error, becomes a TransportError."""
        answered = self._response is not None
        try:
            await self._deadline.__aexit__(kind, error, None)
        except TimeoutError:
            stage = "body" if answered else "answer"
            raise TransportError(TransportError.TIMEOUT, "the deadline passed", stage=stage) from None
        if error is not None and not isinstance(error, TransportError):
            mapped = self._owner.mapped(error, answered)
            if mapped is not None:
                raise mapped from None

    def _release(self) -> None:
        pool = self._pool
        if pool is not None:
            self._pool = None
            pool.users -= 1
            if pool.dropped and not pool.users:
                pool.close_soon()

    async def read(self) -> bytes:
        """Up to Content-Length: h11 stops there, and so does this for a mock or custom transport that would not."""
        length = int(self.headers.get("content-length") or 0)
        parts, size = [], 0
        while (chunk := await self.next_chunk()) is not None:
            parts.append(chunk)
            size += len(chunk)
            if size >= length:
                await self.next_chunk()  # the parser sees the message end: the connection can be used again
                break
        return b"".join(parts)[:length]

    async def next_chunk(self) -> bytes | None:
        assert self._chunks is not None
        try:
            return await anext(self._chunks)
        except StopAsyncIteration:
            return None
        except (httpx.HTTPError, httpx.StreamError) as error:
            mapped = self._owner.mapped(error, True)
            assert mapped is not None
            raise mapped from None


def _describe(error: BaseException) -> str:
    """The error's text and its innermost cause's (e.g. 'Connection refused'), at most 300 characters."""
    message = str(error) or type(error).__name__
    inner: BaseException | None = error
    for _ in range(10):
        nxt = inner.__cause__ or inner.__context__ if inner is not None else None
        if isinstance(inner, BaseExceptionGroup) and inner.exceptions:
            nxt = inner.exceptions[0]
        if nxt is None:
            break
        inner = nxt
    cause = str(inner) if inner is not None and inner is not error else ""
    if cause and cause not in message:
        message = f"{message}: {cause}"
    return message if len(message) < 300 else message[:300] + "…"
