"""One contract, every transport: the same guard, pinning, caps, framing checks, deadline and categories.

Each test runs against the default transport (pyreqwest), ``HttpxTransport()`` (httpx, dialling the
checked address itself) and, where the difference is the point, ``HttpxTransport(<your httpx
transport>)``, which sends through what it was given and is not pinned. Servers are on loopback only
(tests/loopback.py records where each connection really arrived); names are resolved by stub
resolvers, and ``client.dialling`` refuses anything but loopback before a transport is even called.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import struct
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import httpx
import pytest

import webhook_dsl.runtime.client
from tests.http_stub import Request, StubServer, answer, response
from tests.loopback import Hostile, landings
from webhook_dsl import Runtime, compile_webhook
from webhook_dsl.runtime.calls import CallResult
from webhook_dsl.runtime.httpx_transport import HttpxTransport

LOOPBACK = ["127.0.0.0/8"]
NOT_SENT = "not sent: "
CAP = 1024 * 1024
OFFERED = 128 * 1024 * 1024  # what a hostile server offers; a client that reads it all ignored the cap
BOUNDED = 32 * 1024 * 1024  # the cap plus loopback socket buffers, generously
PIECE = 64 * 1024

#: The transports that dial the checked address, and the one that sends through what it was given.
PINNED = ["pyreqwest", "httpx"]
ALL = [*PINNED, "httpx (given)"]

#: Every test here runs on asyncio's loop and on uvloop (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("each_event_loop")


@pytest.fixture(autouse=True)
def only_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    def dialling(address: str, port: int) -> None:
        if not address.startswith("127."):
            raise AssertionError(f"test tried to connect to {address!r}")

    monkeypatch.setattr(webhook_dsl.runtime.client, "dialling", dialling)


def runtime(kind: str, **options: Any) -> Runtime:
    """A Runtime on the transport *kind*, loopback allowed unless the options say otherwise."""
    connect_timeout = options.get("connect_timeout", 5.0)
    transport: Any = None
    if kind == "httpx":
        transport = HttpxTransport(connect_timeout=connect_timeout)
    elif kind == "httpx (given)":
        transport = HttpxTransport(httpx.AsyncHTTPTransport(trust_env=False), connect_timeout=connect_timeout)
    options.setdefault("allow_networks", LOOPBACK)
    return Runtime(transport=transport, **options)


def resolver(table: dict[str, list[str]], asked: list[str] | None = None) -> Any:
    async def resolve(host: str, port: int) -> list[str]:
        if asked is not None:
            asked.append(host)
        if host not in table:
            raise OSError(f"stub resolver has no {host}")
        return table[host]

    return resolve


# -- the guard ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL)
def test_the_guard_refuses_private_addresses_unless_allowed(kind: str) -> None:
    table = {"api.test": ["127.0.0.1"], "private.test": ["10.0.0.7"], "mixed.test": ["8.8.8.8", "10.0.0.1"]}

    async def main() -> tuple[list[CallResult], list[CallResult], list[str]]:
        async with landings("127.0.0.1") as (server,):
            def get(host: str) -> Any:
                return compile_webhook({"url": f"http://{host}:{server.port}/", "method": "GET"})

            hosts = ["api.test", "private.test", "mixed.test", "127.0.0.1", "2130706433", "localhost"]
            async with runtime(kind, resolver=resolver(table), allow_networks=()) as closed:
                refused = [await closed.execute(get(host), {}) for host in hosts]
            async with runtime(kind, resolver=resolver(table)) as opened:
                allowed = [await opened.execute(get(host), {}) for host in hosts]
            return refused, allowed, server.dialled

    refused, allowed, dialled = asyncio.run(main())
    assert [r.category for r in refused] == ["blocked"] * 6
    # A given transport looks api.test up again itself, and the system's resolver has never heard of it.
    first = "connection" if kind == "httpx (given)" else None
    assert [r.category for r in allowed] == [first, "blocked", "blocked", None, None, "blocked"]
    assert "10.0.0.7" not in (allowed[1].error or "")  # where a name points is the operator's to see
    assert set(dialled) == {"127.0.0.1"} and len(dialled) <= 3  # nothing was dialled while refused


# -- pinning -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", PINNED)
def test_the_checked_address_is_the_address_dialled(kind: str) -> None:
    """``localhost`` is allowed by name, and the stub resolver answers 127.0.0.3; the system's resolver
    would say 127.0.0.1, where a decoy listens on the same port. The request must land on 127.0.0.3."""
    asked: list[str] = []

    async def main() -> tuple[list[CallResult], list[Any]]:
        async with landings("127.0.0.3", "127.0.0.1") as servers, runtime(
            kind, resolver=resolver({"localhost": ["127.0.0.3"]}, asked), allow_hosts=["localhost"]
        ) as rt:
            plan = compile_webhook({"url": f"http://localhost:{servers[0].port}/x", "method": "GET"})
            return [await rt.execute(plan, {}) for _ in range(3)], servers

    results, (pinned, decoy) = asyncio.run(main())
    assert all(r.ok for r in results), [(r.category, r.error) for r in results]
    assert pinned.dialled == ["127.0.0.3"] and decoy.dialled == []  # one connection, kept alive
    assert pinned.received == [(f"localhost:{pinned.port}", "/x")] * 3  # the Host header names the host
    assert asked == ["localhost"]  # resolved once, for the pin's lifetime


def test_a_given_httpx_transport_is_checked_but_not_pinned() -> None:
    """The documented difference: what ``HttpxTransport(transport)`` was given resolves the name again
    itself (here the system's answer, the decoy), after the guard checked the stub's answer. A name that
    the guard refuses still never reaches it."""
    asked: list[str] = []

    async def main() -> tuple[CallResult, CallResult, list[Any]]:
        table = {"localhost": ["127.0.0.3"], "private.test": ["10.0.0.7"]}
        async with landings("127.0.0.3", "127.0.0.1") as servers, runtime(
            "httpx (given)", resolver=resolver(table, asked), allow_hosts=["localhost"]
        ) as rt:
            assert rt.transport.dials_given_address is False
            port = servers[0].port
            landed = await rt.execute(compile_webhook({"url": f"http://localhost:{port}/x", "method": "GET"}), {})
            refused = await rt.execute(compile_webhook({"url": f"http://private.test:{port}/", "method": "GET"}), {})
            return landed, refused, servers

    landed, refused, (pinned, decoy) = asyncio.run(main())
    assert landed.ok and refused.category == "blocked"
    assert pinned.dialled == [] and decoy.dialled == ["127.0.0.1"]
    assert asked == ["localhost", "private.test"]


@pytest.mark.parametrize("kind", PINNED)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_an_unreachable_address_fails_over_to_the_next_checked_one(kind: str, method: str) -> None:
    """api.test answers [127.0.0.9, 127.0.0.3]; only 127.0.0.3 listens. Nothing was sent to the first, so
    even a POST goes again, to the next checked address, and the pin stays there."""

    async def main() -> tuple[list[CallResult], Any]:
        async with landings("127.0.0.3") as (server,), runtime(
            kind, resolver=resolver({"api.test": ["127.0.0.9", "127.0.0.3"]}), backoff_base=0.001
        ) as rt:
            webhook: dict[str, Any] = {"url": f"http://api.test:{server.port}/x", "method": method}
            if method == "POST":
                webhook["body"] = {"n": 1}
            plan = compile_webhook(webhook)
            return [await rt.execute(plan, {}) for _ in range(2)], server

    (first, second), server = asyncio.run(main())
    assert (first.ok, first.attempts, second.ok, second.attempts) == (True, 2, True, 1), (first.error, second.error)
    assert server.dialled == ["127.0.0.3"] and len(server.received) == 2


# -- the response cap, framing and compression --------------------------------------------------------


def _chunked(piece: bytes, total: int = OFFERED) -> Iterator[bytes]:
    for _ in range(total // len(piece)):
        yield b"%x\r\n" % len(piece) + piece + b"\r\n"
    yield b"0\r\n\r\n"


def _raw(total: int = OFFERED) -> Iterator[bytes]:
    for _ in range(total // PIECE):
        yield b"x" * PIECE


def _gzip_stream(total: int = 64 * 1024 * 1024) -> Iterator[bytes]:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = b"\0" * (4 * 1024 * 1024)
    for _ in range(total // len(zeros)):
        data = packer.compress(zeros) + packer.flush(zlib.Z_SYNC_FLUSH)
        yield b"%x\r\n" % len(data) + data + b"\r\n"
    yield b"0\r\n\r\n"


BOMB = gzip.compress(b"\0" * 50_000_000)

HOSTILE: dict[str, tuple[bytes, Callable[[], Iterator[bytes]], str]] = {
    "Content-Length beside Transfer-Encoding": (
        b"Content-Length: 10\r\nTransfer-Encoding: chunked\r\n", lambda: _chunked(b"x" * PIECE), "invalid_response"
    ),
    "a transfer coding other than chunked": (
        b"Transfer-Encoding: gzip, chunked\r\n", lambda: _chunked(b"x" * PIECE), "invalid_response"
    ),
    "endless chunks": (b"Transfer-Encoding: chunked\r\n", lambda: _chunked(b"x" * PIECE), "too_large"),
    "a Content-Length past the cap": (b"Content-Length: %d\r\n" % OFFERED, _raw, "too_large"),
    "conflicting Content-Lengths": (b"Content-Length: 10\r\nContent-Length: 50000000\r\n", _raw, "invalid_response"),
    "a gzip bomb with a small Content-Length": (
        b"Content-Encoding: gzip\r\nContent-Length: %d\r\n" % len(BOMB), lambda: iter([BOMB]), "too_large"
    ),
    "an endless chunked gzip stream": (
        b"Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", _gzip_stream, "too_large"
    ),
    "a content coding nobody asked for": (b"Content-Encoding: br\r\nContent-Length: 4\r\n", lambda: iter([b"abcd"]),
                                          "invalid_response"),
    "a malformed chunk": (b"Transfer-Encoding: chunked\r\n", lambda: iter([b"zz\r\nabcd\r\n0\r\n\r\n"]),
                          "invalid_response"),
}


@pytest.mark.parametrize("kind", ALL)
@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_answer_fails_the_same_way_on_every_transport(kind: str, case: str) -> None:
    head, body, category = HOSTILE[case]

    async def main() -> tuple[CallResult, int]:
        async with Hostile(head, body) as server:
            async with runtime(kind, max_retries=0) as rt:
                result = await rt.execute(compile_webhook({"url": server.url(), "method": "GET"}), {})
            async with asyncio.timeout(20):  # a hang detector: the client has hung up
                await server.finished.wait()
        return result, server.sent

    result, sent = asyncio.run(main())
    assert result.category == category, (result.category, result.error, len(result.body))
    assert sent < BOUNDED
    assert len(result.body) <= CAP


@pytest.mark.parametrize("kind", ALL)
def test_a_body_longer_than_its_content_length_is_cut_at_the_length(kind: str) -> None:
    async def main() -> list[CallResult]:
        async with Hostile(b"Content-Length: 5\r\n", lambda: _raw(4 * 1024 * 1024)) as server, runtime(
            kind, max_retries=0
        ) as rt:
            plan = compile_webhook({"url": server.url(), "method": "GET"})
            return [await rt.execute(plan, {}) for _ in range(2)]  # the second on a clean connection

    results = asyncio.run(main())
    assert [(r.ok, r.body) for r in results] == [(True, b"xxxxx")] * 2, [(r.category, r.error) for r in results]


@pytest.mark.parametrize("kind", ALL)
def test_compressed_answers_are_inflated_and_capped_after_inflating(kind: str) -> None:
    small = gzip.compress(b'{"ok": true}')
    large = gzip.compress(b"7" * 5000)

    async def main() -> list[CallResult]:
        results = []
        for body, headers in ((small, {"Content-Type": "application/json"}), (large, {})):
            async with StubServer(answer(200, body, {"Content-Encoding": "gzip", **headers})) as server, runtime(
                kind, max_response_bytes=1000
            ) as rt:
                results.append(await rt.execute(compile_webhook({"url": server.url(), "method": "GET"}), {}))
        return results

    inflated, too_large = asyncio.run(main())
    assert inflated.ok and inflated.json() == {"ok": True}
    assert too_large.category == "too_large"


# -- the deadline and the categories ---------------------------------------------------------------------


@asynccontextmanager
async def _refusing() -> AsyncIterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield f"http://127.0.0.1:{port}/orders"  # nothing listens there


@asynccontextmanager
async def _not_accepting() -> AsyncIterator[str]:
    """A listener whose accept queue is full: the kernel drops further SYNs, so connecting times out."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        await asyncio.sleep(0.05)
        try:
            yield f"http://127.0.0.1:{port}/orders"
        finally:
            for filler in fillers:
                filler.close()


def _stub(handler: Any) -> Any:
    @asynccontextmanager
    async def serve() -> AsyncIterator[str]:
        async with StubServer(handler) as server:
            yield server.url("/orders")

    return serve


async def _stall(request: Request, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(30)


async def _stall_body(request: Request, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"st")
    await writer.drain()
    await asyncio.sleep(30)


async def _drip(request: Request, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    for _ in range(100):
        writer.write(b"x")
        await writer.drain()
        await asyncio.sleep(0.2)


async def _hang_up(request: Request, writer: asyncio.StreamWriter) -> None:
    writer.close()


async def _reset(request: Request, writer: asyncio.StreamWriter) -> None:
    sock = writer.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _truncated(request: Request, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"st")
    writer.close()


async def _bad_status(request: Request, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nok")


#: server -> (category, sent?, the error's start, attempts of a POST allowed one retry)
FAILURES: dict[str, tuple[Any, str, bool, str, int]] = {
    "refused": (_refusing, "connection", False, NOT_SENT, 2),
    "not accepting": (_not_accepting, "connection", False, NOT_SENT + "no connection within 0.3 s", 2),
    "stalled before answering": (_stub(_stall), "timeout", True, "no answer within the 1 s deadline", 1),
    "stalled in the body": (
        _stub(_stall_body), "timeout", True, "the answer began but did not complete within the 1 s deadline", 1
    ),
    "dripping the body": (
        _stub(_drip), "timeout", True, "the answer began but did not complete within the 1 s deadline", 1
    ),
    "hung up after reading the request": (
        _stub(_hang_up), "connection", True, "the connection was lost after the request was sent", 1
    ),
    "reset after reading the request": (
        _stub(_reset), "connection", True, "the connection was lost after the request was sent", 1
    ),
    "closed in the body": (_stub(_truncated), "connection", True, "the connection was lost after the request", 1),
    "a malformed status line": (_stub(_bad_status), "invalid_response", True, "", 1),
}


@pytest.mark.parametrize("kind", ALL)
@pytest.mark.parametrize("failure", list(FAILURES))
def test_each_failure_has_the_same_category_on_every_transport(kind: str, failure: str) -> None:
    """A POST, allowed one retry: only a request that never left is sent again."""
    serve, category, sent, error, attempts = FAILURES[failure]

    async def main() -> CallResult:
        async with serve() as url, runtime(
            kind, deadline=1.0, connect_timeout=0.3, max_retries=1, backoff_base=0.001
        ) as rt:
            plan = compile_webhook({"url": url, "method": "POST", "body": {"order": "A-1"}})
            return await rt.execute(plan, {}, retry_post=False)

    result = asyncio.run(main())
    assert (result.category, result.attempts) == (category, attempts), (result.category, result.error)
    assert (result.error or "").startswith(error), result.error
    assert (result.error or "").startswith(NOT_SENT) is not sent
    assert result.elapsed_ms < 2500  # the deadline holds for connecting, the head and every body read


# -- what is sent ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL)
def test_the_request_is_sent_as_rendered_on_one_kept_alive_connection(kind: str) -> None:
    async def main() -> StubServer:
        async with StubServer(answer(200, {"ok": True}, {"Set-Cookie": "sid=company-a; Path=/"})) as server, runtime(
            kind
        ) as rt:
            plan = compile_webhook({
                "url": server.url("/orders/$n?q=$q"), "method": "POST",
                "headers": [{"key": "X-Note", "value": "caf\u00e9 $n"}], "body": {"n": "$n"},
            })
            for n in ("a b/c", "d"):
                result = await rt.execute(plan, {"n": n, "q": "x&y"})
                assert result.ok, result.error
        return server

    server = asyncio.run(main())
    first, second = server.requests
    assert (first.method, first.target) == ("POST", "/orders/a%20b%2Fc?q=x%26y")
    assert first.header("X-Note") == "caf\u00e9 a b/c" and first.json() == {"n": "a b/c"}
    assert first.header("Accept-Encoding") == "gzip, deflate"  # only what the runtime inflates
    assert first.header("Host") == f"127.0.0.1:{server.port}"
    assert second.header("Cookie") is None  # no cookie is kept from one call to the next
    assert server.connections == 1


@pytest.mark.parametrize("kind", ALL)
def test_a_redirect_is_followed_by_the_runtime_and_checked_hop_by_hop(kind: str) -> None:
    async def main() -> tuple[CallResult, CallResult, StubServer]:
        async with StubServer(answer(200, {"landed": True})) as other:

            async def redirect(request: Request, writer: asyncio.StreamWriter) -> None:
                target = other.url("/landed") if request.target == "/away" else "http://169.254.169.254/latest/"
                writer.write(response(307, "", {"Location": target}))

            async with StubServer(redirect) as first, runtime(kind, follow_redirects=True) as rt:
                away = await rt.execute(compile_webhook({"url": first.url("/away"), "method": "GET",
                                                         "headers": [{"key": "Authorization", "value": "k $t"}]}),
                                        {"t": "tok"}, secret_names=["t"])
                inside = await rt.execute(compile_webhook({"url": first.url("/in"), "method": "GET"}), {})
        return away, inside, other

    away, inside, other = asyncio.run(main())
    assert away.ok and away.json() == {"landed": True}
    assert other.requests[0].header("Authorization") is None  # credentials stay with their origin
    assert inside.category == "blocked" and "169.254.169.254" in (inside.error or "")


def test_a_given_httpx_client_keeps_no_cookie_and_follows_no_redirect() -> None:
    async def main() -> tuple[CallResult, StubServer]:
        async def handler(request: Request, writer: asyncio.StreamWriter) -> None:
            writer.write(response(302, "", {"Location": "/elsewhere", "Set-Cookie": "sid=a; Path=/"}))

        async with StubServer(handler) as server, Runtime(
            transport=httpx.AsyncClient(follow_redirects=True, trust_env=False), allow_networks=LOOPBACK
        ) as rt:
            plan = compile_webhook({"url": server.url("/"), "method": "GET"})
            results = [await rt.execute(plan, {}) for _ in range(2)]
        return results[1], server

    result, server = asyncio.run(main())
    assert (result.status, result.category) == (302, "http_status")
    assert [r.target for r in server.requests] == ["/", "/"]
    assert all(r.header("Cookie") is None for r in server.requests)
