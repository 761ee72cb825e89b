"""Pins and the default transport: destinations read as reqwest reads them, pinned to checked addresses.

Only loopback servers are used; names are resolved by stub resolvers, never by real DNS, and
``client.dialling`` (where every request's destination passes) refuses anything but loopback. Where a
request really went is read at the servers (tests/loopback.py). The same rules on the httpx transport
are in tests/test_transport_contract.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

import webhook_dsl.runtime.client
from tests.http_stub import StubServer, answer
from tests.loopback import landings
from webhook_dsl import Runtime, compile_webhook
from webhook_dsl.runtime.client import PinnedClients, Pins
from webhook_dsl.runtime.guard import BlockedError, OutboundGuard

DIALLED: list[tuple[str, int]] = []

#: Every test here runs on asyncio's loop and on uvloop (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("each_event_loop")


@pytest.fixture(autouse=True)
def only_loopback(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def dialling(address: str, port: int) -> None:
        DIALLED.append((address, port))
        if address not in ("127.0.0.1", "::1"):
            raise AssertionError(f"test tried to connect to {address!r}")

    monkeypatch.setattr(webhook_dsl.runtime.client, "dialling", dialling)
    DIALLED.clear()
    yield


def _pins(clock: Any = None, max_pins: int = 256, **guard: Any) -> Pins:
    """Pins reading URLs as the default transport (reqwest) does; *clock* replaces the monotonic clock."""
    extra = {"clock": clock} if clock is not None else {}
    return Pins(OutboundGuard.build(**guard), PinnedClients().read_url, max_pins=max_pins, **extra)


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://a.test\\@b.test/", None),  # reqwest (WHATWG): a.test, the backslash ends the authority; urllib: b.test
        ("http://b.test\\.a.test/", None),  # reqwest: b.test; urllib: 'b.test\\.a.test'
        ("http://a.test%2f@b.test/", "b.test"),  # both: user info 'a.test%2f', host b.test
        ("http://user:pw@B.Test:8080/", "b.test"),
    ],
)
def test_a_host_two_parsers_read_differently_is_refused(url: str, host: str | None) -> None:
    pins = _pins(allow_hosts=["a.test", "b.test"])
    if host is None:
        with pytest.raises(BlockedError, match="ambiguous"):
            pins.destination(url)
    else:
        (scheme, read, _port), is_address = pins.destination(url)
        assert (scheme, read, is_address) == ("http", host, False)


def test_numeric_hosts_are_read_and_checked_like_reqwest_reads_them() -> None:
    pins = _pins(allow_networks=["127.0.0.0/8"])
    assert pins.destination("http://127.1:8080/x") == (("http", "127.0.0.1", 8080), True)
    assert pins.destination("http://0x7f.1/") == (("http", "127.0.0.1", 80), True)
    with pytest.raises(BlockedError):
        _pins().destination("http://127.1/")  # loopback is not allowed by default
    with pytest.raises(BlockedError):
        _pins().destination("http://[::ffff:169.254.169.254]/")


def test_a_name_is_resolved_again_when_its_pin_expires() -> None:
    """DNS rebinding across pins: once the pin has expired (a real expiry: ``pin_seconds``), the name is
    looked up again, and the second answer, a private address, is refused."""
    answers = [["127.0.0.1"], ["10.0.0.7"]]
    lookups: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        lookups.append(host)
        return answers[min(len(lookups), len(answers)) - 1]

    async def main() -> tuple[Any, Any, Any, list[str]]:
        async with (
            landings("127.0.0.1") as (server,),
            Runtime(resolver=resolver, allow_networks=["127.0.0.0/8"], pin_seconds=0.5) as runtime,
        ):
            plan = compile_webhook({"url": f"http://api.test:{server.port}/", "method": "GET"})
            first = await runtime.execute(plan, {})
            again = await runtime.execute(plan, {})  # within the pin: no lookup
            await asyncio.sleep(0.6)  # the pin expires
            third = await runtime.execute(plan, {})
        return first, again, third, server.dialled

    first, again, third, dialled = asyncio.run(main())
    assert first.ok and again.ok
    assert lookups == ["api.test", "api.test"]
    assert third.category == "blocked" and "not public" in (third.error or "")
    assert "10.0.0.7" not in (third.error or "")  # what a name resolves to is the operator's to see, not the LLM's
    assert [address for address, _ in DIALLED] == ["127.0.0.1", "127.0.0.1"]
    assert dialled == ["127.0.0.1"]  # one connection, kept alive, and none after the refusal


def test_a_renewed_pin_keeps_its_connection_while_the_answer_holds() -> None:
    """Every pin expires at once here, so every call resolves and checks again; the answer does not change,
    so the client, and its keep-alive connection, stay."""
    lookups: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    async def main() -> tuple[list[Any], StubServer]:
        async with (
            StubServer(answer(200, {"ok": True})) as server,
            Runtime(resolver=resolver, allow_networks=["127.0.0.0/8"], pin_seconds=0.0) as runtime,
        ):
            plan = compile_webhook({"url": f"http://api.test:{server.port}/", "method": "GET"})
            return [await runtime.execute(plan, {}) for _ in range(3)], server

    results, server = asyncio.run(main())
    assert all(result.ok for result in results)
    assert lookups == ["api.test"] * 3
    assert server.connections == 1


def test_requests_that_find_a_pin_missing_share_one_lookup() -> None:
    lookups: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        lookups.append(host)
        await asyncio.sleep(0.05)  # every request below arrives while this lookup is under way
        return ["127.0.0.1"]

    async def main() -> list[Any]:
        async with (
            StubServer(answer(200, {"ok": True})) as server,
            Runtime(resolver=resolver, allow_networks=["127.0.0.0/8"]) as runtime,
        ):
            plan = compile_webhook({"url": f"http://api.test:{server.port}/", "method": "GET"})
            return list(await asyncio.gather(*(runtime.execute(plan, {}) for _ in range(20))))

    results = asyncio.run(main())
    assert all(result.ok for result in results)
    assert lookups == ["api.test"]


def test_a_shared_lookup_that_is_refused_refuses_every_waiting_request() -> None:
    lookups: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        lookups.append(host)
        await asyncio.sleep(0.05)
        return ["10.0.0.7"]  # private: refused

    async def main() -> list[Any]:
        async with Runtime(resolver=resolver, allow_networks=["127.0.0.0/8"]) as runtime:
            plan = compile_webhook({"url": "http://api.test/", "method": "GET"})
            first = list(await asyncio.gather(*(runtime.execute(plan, {}) for _ in range(5))))
            return [*first, await runtime.execute(plan, {})]  # the next request looks up again

    results = asyncio.run(main())
    assert [result.category for result in results] == ["blocked"] * 6
    assert lookups == ["api.test", "api.test"]
    assert DIALLED == []


def test_closing_while_a_lookup_is_under_way_pins_nothing() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        await asyncio.sleep(0.05)
        return ["127.0.0.1"]

    async def main() -> int:
        pins = _pins(allow_networks=["127.0.0.0/8"], resolver=resolver)
        key, is_address = pins.destination("http://api.test/")
        request = asyncio.ensure_future(pins.pin(key, is_address))
        await asyncio.sleep(0.01)
        pins.close()
        with pytest.raises(asyncio.CancelledError):
            await request
        await asyncio.sleep(0.06)  # past the moment the lookup would have answered
        return len(pins)

    assert asyncio.run(main()) == 0
    assert DIALLED == []


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_pin_moves_only_when_its_address_leaves_the_answer() -> None:
    """The pin's own clock is moved past each expiry: the second answer still holds 127.0.0.1 (kept, with
    its client and connections), the third does not (the first answer is dialled)."""
    answers = iter([["127.0.0.1", "::1"], ["::1", "127.0.0.1"], ["::1"]])
    clock = FakeClock()

    async def resolver(host: str, port: int) -> list[str]:
        return next(answers)

    async def main() -> list[str]:
        pins = _pins(clock, allow_networks=["127.0.0.0/8", "::1/128"], resolver=resolver)
        key, is_address = pins.destination("http://api.test/")
        seen = []
        for _ in range(3):
            assert pins.pinned(key) is None  # expired (or never pinned): a lookup is needed
            seen.append(await pins.pin(key, is_address))
            assert pins.pinned(key) == seen[-1]  # holds until the clock passes its expiry
            clock.now += webhook_dsl.runtime.client.PIN_SECONDS
        return seen

    assert asyncio.run(main()) == ["127.0.0.1", "127.0.0.1", "::1"]


def test_cookies_never_travel_from_one_call_to_the_next() -> None:
    async def main() -> StubServer:
        async with (
            StubServer(answer(200, {"ok": True}, {"Set-Cookie": "sid=company-a-secret; Path=/"})) as server,
            Runtime(allow_networks=["127.0.0.0/8"]) as runtime,
        ):
            plan = compile_webhook({"url": server.url("/"), "method": "GET"})
            for _ in range(2):
                assert (await runtime.execute(plan, {})).ok
        return server

    server = asyncio.run(main())
    assert len(server.requests) == 2
    assert all(request.header("Cookie") is None for request in server.requests)


def test_the_client_sends_what_was_rendered_and_reuses_connections() -> None:
    async def main() -> StubServer:
        async with (
            StubServer(answer(200, {"ok": True})) as server,
            Runtime(allow_networks=["127.0.0.0/8"]) as runtime,
        ):
            plan = compile_webhook(
                {
                    "url": server.url("/orders/$n?q=$q"),
                    "method": "POST",
                    "headers": [{"key": "X-Note", "value": "caf\u00e9 $n"}],
                    "body": {"n": "$n"},
                }
            )
            for n in ("a b/c", "d"):
                result = await runtime.execute(plan, {"n": n, "q": "x&y"})
                assert result.ok, result.error
        return server

    server = asyncio.run(main())
    first = server.requests[0]
    assert (first.method, first.target) == ("POST", "/orders/a%20b%2Fc?q=x%26y")
    assert first.header("X-Note") == "caf\u00e9 a b/c"
    assert first.json() == {"n": "a b/c"}
    assert first.header("Accept-Encoding") == "gzip, deflate"  # only what we inflate ourselves
    assert server.connections == 1  # keep-alive: the second call reused the connection


def test_a_refused_connection_is_a_connection_failure_with_its_cause() -> None:
    async def main() -> Any:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        async with Runtime(allow_networks=["127.0.0.0/8"], max_retries=0) as runtime:
            return await runtime.execute(compile_webhook({"url": f"http://127.0.0.1:{port}/", "method": "GET"}), {})

    result = asyncio.run(main())
    assert result.category == "connection"
    assert "refused" in (result.error or "").lower()


def _failover_runtime(addresses: list[str]) -> Runtime:
    async def resolver(host: str, port: int) -> list[str]:
        return list(addresses)

    return Runtime(resolver=resolver, allow_networks=["127.0.0.0/8", "::1/128"], backoff_base=0.001)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_an_unreachable_address_fails_over_to_the_next_checked_one(method: str) -> None:
    """The name answers [::1, 127.0.0.1]; only 127.0.0.1 listens. Nothing was sent to ::1, so even a
    POST (never retried once sent) goes again, to the next address, and the pin stays there."""

    async def main() -> tuple[Any, Any, StubServer, int]:
        async with StubServer(answer(200, {"ok": True})) as server, _failover_runtime(["::1", "127.0.0.1"]) as runtime:
            body = {"n": "$n"} if method == "POST" else None
            plan = compile_webhook({"url": f"http://api.test:{server.port}/x", "method": method, "body": body}
                                   if body else {"url": f"http://api.test:{server.port}/x", "method": method})
            first = await runtime.execute(plan, {"n": "1"})
            second = await runtime.execute(plan, {"n": "2"})
            return first, second, server, server.port

    first, second, server, port = asyncio.run(main())
    assert first.ok and first.attempts == 2, (first.category, first.error)
    assert second.ok and second.attempts == 1
    assert [("::1", port), ("127.0.0.1", port), ("127.0.0.1", port)] == DIALLED
    assert len(server.requests) == 2  # each call sent exactly once


def test_a_post_that_was_sent_is_not_sent_again() -> None:
    async def hang_up(request: Any, writer: asyncio.StreamWriter) -> None:
        writer.close()  # read the request, answer nothing

    async def main() -> tuple[Any, StubServer]:
        async with StubServer(hang_up) as server, _failover_runtime(["127.0.0.1"]) as runtime:
            plan = compile_webhook({"url": f"http://api.test:{server.port}/x", "method": "POST", "body": {"a": 1}})
            return await runtime.execute(plan, {}), server

    result, server = asyncio.run(main())
    assert (result.ok, result.category, result.attempts) == (False, "connection", 1)
    assert len(server.requests) == 1


def test_when_no_address_answers_the_call_fails_after_its_retries() -> None:
    async def main() -> tuple[Any, int]:
        async with StubServer(answer(200)) as server, _failover_runtime(["::1"]) as runtime:
            plan = compile_webhook({"url": f"http://api.test:{server.port}/x", "method": "POST", "body": {"a": 1}})
            return await runtime.execute(plan, {}), server.port

    result, port = asyncio.run(main())
    assert (result.ok, result.category, result.attempts) == (False, "connection", 3)
    assert [("::1", port)] * 3 == DIALLED


def test_many_requests_failing_at_once_move_the_pin_once() -> None:
    """Twenty calls fail on ::1 at the same moment; the pin moves to 127.0.0.1 once and stays there
    (moving it once per failure would swing it back to ::1 for half of the retries)."""

    async def main() -> list[Any]:
        async with StubServer(answer(200, {"ok": True})) as server, _failover_runtime(["::1", "127.0.0.1"]) as runtime:
            plan = compile_webhook({"url": f"http://api.test:{server.port}/x", "method": "GET"})
            return list(await asyncio.gather(*(runtime.execute(plan, {}) for _ in range(20))))

    results = asyncio.run(main())
    assert all(r.ok for r in results), [(r.category, r.error) for r in results if not r.ok]
    assert max(r.attempts for r in results) == 2
    assert sum(address == "::1" for address, _ in DIALLED) <= 20


def test_addresses_and_names_are_pinned_alike_under_one_bound() -> None:
    """A host written as an address gets a pin and a client of its own, like a name, and both count against
    ``max_pinned_hosts``: an LLM writing addresses cannot pile up clients any more than one writing names."""

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    async def main() -> tuple[list[Any], list[Any], int, int]:
        servers = [StubServer(answer(200, {"ok": True})) for _ in range(3)]
        for server in servers:
            await server.__aenter__()
        try:
            async with Runtime(resolver=resolver, allow_networks=["127.0.0.0/8"], max_pinned_hosts=3) as runtime:
                ports = [server.port for server in servers]
                urls = [f"http://127.0.0.1:{ports[0]}/", f"http://127.0.0.1:{ports[1]}/",
                        f"http://api.test:{ports[0]}/", f"http://127.0.0.1:{ports[2]}/"]
                for url in urls:
                    assert (await runtime.execute(compile_webhook({"url": url, "method": "GET"}), {})).ok
                pins, transport = runtime._pinned(), runtime.transport
                assert isinstance(transport, PinnedClients)
                keys = [pins.destination(url)[0] for url in urls]
                return [key in pins for key in keys], [transport.client(key) for key in keys], len(pins), len(transport)
        finally:
            for server in servers:
                await server.__aexit__()

    pinned, clients, pins, kept = asyncio.run(main())
    assert pinned == [False, True, True, True]  # the least recently used was dropped
    assert clients[0] is None and len({id(client) for client in clients[1:]}) == 3
    assert pins == kept == 3
