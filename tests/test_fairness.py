"""Outbound fairness (issue 14): one destination's hanging API cannot hold the capacity other destinations need.

Every destination (scheme, host, port) has its own client and connection pool, and at most
``max_in_flight_per_destination`` requests in flight; the rest wait in that destination's queue with
their deadline running. Servers are on loopback (127.0.0.1 and 127.0.0.2); names are resolved by stub
resolvers, and ``client.dialling`` refuses anything outside 127.0.0.0/8.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

import webhook_dsl.runtime.client
from webhook_dsl import Runtime, compile_trigger, compile_webhook
from webhook_dsl.runtime.calls import message_for_llm
from webhook_dsl.runtime.client import InFlight, PinnedClients
from webhook_dsl.runtime.masking import Masker

LOOPBACK = ["127.0.0.0/8"]
HANGING = 300

#: Every test here runs on asyncio's loop and on uvloop (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("each_event_loop")


@pytest.fixture(autouse=True)
def only_loopback(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def dialling(address: str, port: int) -> None:
        if ipaddress.ip_address(address) not in ipaddress.ip_network("127.0.0.0/8"):
            raise AssertionError(f"test tried to connect to {address!r}")

    monkeypatch.setattr(webhook_dsl.runtime.client, "dialling", dialling)
    yield


@dataclass
class Server:
    """HTTP/1.1 on a loopback address: answers 200 at once, or, for requests ``hangs`` picks, only once
    ``release`` is set. Counts connections open and requests being handled, now and at most."""

    host: str = "127.0.0.1"
    hangs: Callable[[str, str], bool] = lambda host, target: False  # (Host header, target) -> hang?
    release: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    open: int = 0
    max_open: int = 0
    handling: int = 0
    max_handling: int = 0
    received: list[tuple[str, str, bytes]] = field(default_factory=list)  # (Host, target, body)
    _server: asyncio.Server | None = None

    def url(self, path: str = "/", host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}{path}"

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, self.host, 0, backlog=1024)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                lines = head.split("\r\n")
                target = lines[0].split(" ")[1]
                fields = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:] if line)}
                body = await reader.readexactly(int(fields.get("content-length", "0")))
                host = fields.get("host", "")
                self.received.append((host, target, body))
                self.handling += 1
                self.max_handling = max(self.max_handling, self.handling)
                try:
                    if self.hangs(host, target):
                        await self.release.wait()
                finally:
                    self.handling -= 1
                data = json.dumps({"target": target}).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                             % len(data) + data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.open -= 1
            writer.close()


async def _until(condition: Callable[[], bool], guard: float = 20.0) -> None:
    """Wait for *condition*, polling; the guard only stops a broken run from hanging."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + guard
    while not condition():
        assert loop.time() < give_up, "condition not reached"
        await asyncio.sleep(0.01)


def _get(url: str) -> Any:
    return compile_webhook({"url": url, "method": "GET"})


async def _hang_and_call_another(
    runtime: Runtime, slow: Server, slow_url: str, fast_url: str, cap: int
) -> tuple[Any, list[asyncio.Task[Any]], bool]:
    """HANGING calls hang on *slow_url*; with them in flight or queued, one call goes to *fast_url*."""
    hanging = [asyncio.ensure_future(runtime.execute(_get(slow_url + f"?n={i}"), {})) for i in range(HANGING)]
    await _until(lambda: slow.handling >= cap)
    await asyncio.sleep(0.2)  # time for any request beyond the cap to (wrongly) arrive
    assert slow.handling == cap and slow.open == cap, (slow.handling, slow.open)
    healthy = await runtime.execute(_get(fast_url), {})
    still_hanging = not any(task.done() for task in hanging)
    return healthy, hanging, still_hanging


@pytest.mark.parametrize("apart", ["address", "port"])
def test_a_hanging_address_never_delays_a_call_to_another_destination(apart: str) -> None:
    """300 calls hang on one API: it holds 64 connections, the other 236 calls wait in its queue, and a call
    to another address (or another port of the same address) is answered while all 300 still hang."""

    async def main() -> tuple[Any, list[Any], Server, dict[Any, int]]:
        slow = Server("127.0.0.1", hangs=lambda host, target: True)
        fast = Server("127.0.0.2" if apart == "address" else "127.0.0.1")
        async with slow, fast, Runtime(allow_networks=LOOPBACK, deadline=60) as runtime:
            healthy, hanging, still_hanging = await _hang_and_call_another(
                runtime, slow, slow.url("/slow"), fast.url("/fast"), 64
            )
            assert still_hanging
            key = ("http", "127.0.0.1", slow.port)
            assert runtime._pinned().in_flight.in_flight(key) == 64
            assert runtime._pinned().in_flight.queued(key) == HANGING - 64
            slow.release.set()  # the API answers again: the queue drains through the same 64 slots
            results = await asyncio.gather(*hanging)
            return healthy, results, slow, runtime._pinned().in_flight.busy()

    healthy, results, slow, counts = asyncio.run(main())
    assert healthy.ok and healthy.json() == {"target": "/fast"}
    assert all(r.ok for r in results), {(r.category, r.error) for r in results if not r.ok}
    assert len(slow.received) == HANGING and slow.max_handling == 64
    assert counts == {}  # every slot given back


def test_a_hanging_name_never_delays_another_name_on_the_same_server() -> None:
    """Two names for one address and port are two destinations: each its own pin, pool and 64 slots."""

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    async def main() -> tuple[Any, list[Any], Server, int]:
        server = Server(hangs=lambda host, target: host.startswith("slow.test"))
        async with server, Runtime(allow_networks=LOOPBACK, resolver=resolver, deadline=60) as runtime:
            healthy, hanging, still_hanging = await _hang_and_call_another(
                runtime, server, server.url("/slow", "slow.test"), server.url("/fast", "fast.test"), 64
            )
            assert still_hanging
            server.release.set()
            results = await asyncio.gather(*hanging)
            return healthy, results, server, len(runtime._pinned())

    healthy, results, server, pins = asyncio.run(main())
    assert healthy.ok and healthy.json() == {"target": "/fast"}
    assert all(r.ok for r in results)
    assert pins == 2 and server.max_handling == 64 + 1  # the healthy call came while 64 hung


def test_the_cap_is_a_setting() -> None:
    async def main() -> tuple[Any, Server]:
        slow = Server(hangs=lambda host, target: True)
        fast = Server("127.0.0.2")
        async with slow, fast, Runtime(allow_networks=LOOPBACK, deadline=60, max_in_flight_per_destination=5) as rt:
            healthy, hanging, still_hanging = await _hang_and_call_another(
                rt, slow, slow.url("/slow"), fast.url("/fast"), 5
            )
            assert still_hanging
            slow.release.set()
            assert all(r.ok for r in await asyncio.gather(*hanging))
        return healthy, slow

    healthy, slow = asyncio.run(main())
    assert healthy.ok and slow.max_handling == 5


def _trigger(url: str, method: str = "POST") -> Any:
    webhook: dict[str, Any] = {"url": url, "method": method}
    if method != "GET":
        webhook["body"] = {"n": 1}
    return compile_trigger({
        "name": "create_order", "description": "d", "parameters": {"type": "object", "properties": {}},
        "webhook": webhook,
    })


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_a_queued_call_that_reaches_its_deadline_was_not_sent_and_says_so(method: str) -> None:
    """Two calls hold the destination's two slots and hang; three more wait in its queue until their
    (shorter) deadline. Those three are timeouts that never left, so nothing happened, and the LLM is
    told so; the two, once their own deadline passes, are timeouts that may have happened."""

    async def main() -> tuple[list[Any], list[Any], Server, dict[Any, int]]:
        server = Server(hangs=lambda host, target: True)
        async with (
            server,
            Runtime(allow_networks=LOOPBACK, deadline=3.0, max_in_flight_per_destination=2) as patient,
            Runtime(allow_networks=LOOPBACK, deadline=0.5, max_in_flight_per_destination=2) as hurried,
        ):
            hurried._pins, hurried._transport = patient._pinned(), patient.transport  # one queue, two deadlines
            plan = compile_webhook({"url": server.url("/orders"), "method": method})
            holding = [asyncio.ensure_future(patient.execute(plan, {})) for _ in range(2)]
            await _until(lambda: server.handling == 2)
            queued = list(await asyncio.gather(*(hurried.execute(plan, {}) for _ in range(3))))
            assert not any(task.done() for task in holding)
            sent = list(await asyncio.gather(*holding))
            hurried._pins = hurried._transport = None
            return sent, queued, server, patient._pinned().in_flight.busy()

    sent, queued, server, counts = asyncio.run(main())
    assert [r.category for r in sent + queued] == ["timeout"] * 5
    assert all(r.attempts == 1 for r in sent + queued)  # a timeout used the whole deadline: nothing is retried
    assert all((r.error or "").startswith("not sent: it never left the queue") for r in queued), queued[0].error
    assert not any((r.error or "").startswith("not sent") for r in sent), sent[0].error
    assert len(server.received) == 2 and counts == {}
    trigger = _trigger(server.url("/orders"), method)
    for result in sent:
        message = message_for_llm(trigger, result, Masker(), 8000)
        assert message.startswith('The tool "create_order" timed out waiting for the answer: the request was sent')
        assert "may have happened" in message and "do not retry it blindly" in message
    for result in queued:
        message = message_for_llm(trigger, result, Masker(), 8000)
        assert message.startswith('The tool "create_order" failed (timeout: not sent: it never left the queue')
        assert "Nothing was sent, so the action did not happen" in message and "may have" not in message


def test_the_queue_is_first_come_first_served() -> None:
    async def main() -> list[str]:
        server = Server(hangs=lambda host, target: target == "/first")
        async with server, Runtime(allow_networks=LOOPBACK, deadline=30, max_in_flight_per_destination=1) as rt:
            first = asyncio.ensure_future(rt.execute(_get(server.url("/first")), {}))
            await _until(lambda: server.handling == 1)
            queued = []
            for i in range(10):
                queued.append(asyncio.ensure_future(rt.execute(_get(server.url(f"/q{i}")), {})))
                await asyncio.sleep(0.005)  # each is in the queue before the next arrives
            server.release.set()
            results = [await first, *await asyncio.gather(*queued)]
            assert all(r.ok for r in results)
        return [target for _host, target, _body in server.received]

    assert asyncio.run(main()) == ["/first"] + [f"/q{i}" for i in range(10)]


def test_a_queued_call_that_is_cancelled_gives_up_its_place() -> None:
    async def main() -> tuple[Any, Server, dict[Any, int], dict[Any, Any]]:
        server = Server(hangs=lambda host, target: target == "/first")
        async with server, Runtime(allow_networks=LOOPBACK, deadline=30, max_in_flight_per_destination=1) as rt:
            first = asyncio.ensure_future(rt.execute(_get(server.url("/first")), {}))
            await _until(lambda: server.handling == 1)
            cancelled = asyncio.ensure_future(rt.execute(_get(server.url("/cancelled")), {}))
            await asyncio.sleep(0.05)
            cancelled.cancel()
            later = asyncio.ensure_future(rt.execute(_get(server.url("/later")), {}))
            await asyncio.sleep(0.05)
            server.release.set()
            assert (await first).ok
            result = await later
            lanes = rt._pinned().in_flight
            return result, server, lanes.busy(), dict(lanes._queues)

    result, server, counts, queues = asyncio.run(main())
    assert result.ok
    assert [target for _host, target, _body in server.received] == ["/first", "/later"]
    assert counts == {} and queues == {}


def test_a_slot_handed_to_a_waiter_that_gives_up_at_that_moment_passes_on() -> None:
    async def main() -> tuple[dict[Any, int], bool]:
        lanes = InFlight(1)
        key = ("http", "api.test", 80)
        assert lanes.take(key) and not lanes.take(key)
        late = asyncio.ensure_future(lanes.wait(key, 30))
        nxt = asyncio.ensure_future(lanes.wait(key, 30))
        await asyncio.sleep(0)  # both are queued
        lanes.release(key)  # the slot goes to `late`...
        late.cancel()  # ...which is cancelled before it could run: it must pass the slot on
        await asyncio.wait([nxt], timeout=5)
        got_it = nxt.done() and not nxt.cancelled()
        with pytest.raises(asyncio.CancelledError):
            await late
        lanes.release(key)  # `nxt` is done
        return lanes.busy(), got_it

    counts, got_it = asyncio.run(main())
    assert got_it and counts == {}


def test_addresses_have_a_client_each_and_names_one_per_port() -> None:
    """No client is shared by two destinations, so no destination's requests can hold another's slots."""

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    async def main() -> list[Any]:
        one, two, three = Server("127.0.0.1"), Server("127.0.0.2"), Server("127.0.0.1")
        async with one, two, three, Runtime(allow_networks=LOOPBACK, resolver=resolver) as runtime:
            urls = [one.url(), two.url(), three.url(), one.url(host="api.test"), three.url(host="api.test")]
            results = [await runtime.execute(_get(url), {}) for url in urls]
            assert all(r.ok for r in results), [(r.category, r.error) for r in results]
            pins, transport = runtime._pinned(), runtime.transport
            assert isinstance(transport, PinnedClients)
            return [transport.client(pins.destination(url)[0]) for url in urls]

    found = asyncio.run(main())
    assert all(client is not None for client in found)
    assert len({id(client) for client in found}) == 5


def test_an_httpx_transport_gets_the_same_cap() -> None:
    release = asyncio.Event()
    handling = {"now": 0, "max": 0}

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "slow.test":
            handling["now"] += 1
            handling["max"] = max(handling["max"], handling["now"])
            await release.wait()
            handling["now"] -= 1
        return httpx.Response(200, json={"host": request.url.host})

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    async def main() -> tuple[Any, list[Any], bool]:
        async with Runtime(transport=httpx.MockTransport(handler), resolver=resolver, allow_networks=LOOPBACK,
                           deadline=30, max_in_flight_per_destination=3) as runtime:
            hanging = [asyncio.ensure_future(runtime.execute(_get("https://slow.test/x"), {})) for _ in range(20)]
            await _until(lambda: handling["now"] >= 3)
            await asyncio.sleep(0.1)
            healthy = await runtime.execute(_get("https://fast.test/x"), {})
            still_hanging = not any(task.done() for task in hanging)
            release.set()
            return healthy, list(await asyncio.gather(*hanging)), still_hanging

    healthy, results, still_hanging = asyncio.run(main())
    assert healthy.ok and still_hanging and all(r.ok for r in results)
    assert handling["max"] == 3
