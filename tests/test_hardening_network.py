"""The outbound path against hostile remotes and LLM-chosen destinations (issue 13: L2, L3, L5, L6, L8, L12).

Names are resolved by stub resolvers, never by real DNS, and every destination is loopback:
``client.dialling`` (where every request of the default client passes, with the address it will
dial) records it and refuses anything else.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import webhook_dsl.runtime.client
from tests.http_stub import Request, StubServer, answer, response
from webhook_dsl import Runtime, SQLiteStore, compile_trigger, compile_webhook
from webhook_dsl.runtime.client import PinnedClients
from webhook_dsl.runtime.guard import BlockedError, NetworkSpecError, OutboundGuard, parse_network

DIALLED: list[str] = []
LOOPBACK = ["127.0.0.0/8"]


@pytest.fixture(autouse=True)
def only_loopback(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def dialling(address: str, port: int) -> None:
        DIALLED.append(address)
        if address not in ("127.0.0.1", "::1"):
            raise AssertionError(f"test tried to connect to {address!r}")

    monkeypatch.setattr(webhook_dsl.runtime.client, "dialling", dialling)
    DIALLED.clear()
    yield


def _resolver(table: dict[str, list[str]]) -> Any:
    async def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"stub resolver has no {host}")
        return table[host]

    return resolve


# -- L2: the deadline covers the lookup ----------------------------------------------------------


async def _slow_lookup(host: str, port: int) -> list[str]:
    await asyncio.sleep(3)  # slower than the call's deadline, faster than the guard's own lookup limit
    return ["127.0.0.1"]


def test_a_slow_lookup_counts_against_the_deadline() -> None:
    async def main() -> tuple[Any, StubServer]:
        async with (
            StubServer(answer(200, {"ok": True})) as server,
            Runtime(resolver=_slow_lookup, allow_networks=LOOPBACK, deadline=0.3) as runtime,
        ):
            plan = compile_webhook({"url": f"http://slow.test:{server.port}/", "method": "GET"})
            result = await runtime.execute(plan, {})
        return result, server

    result, server = asyncio.run(main())
    assert result.category == "timeout", (result.category, result.error)
    assert server.requests == [] and DIALLED == []


def test_a_slow_lookup_counts_against_the_deadline_on_the_httpx_path_too() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"ok": True})

    async def main() -> Any:
        async with Runtime(transport=httpx.MockTransport(handler), resolver=_slow_lookup, allow_networks=LOOPBACK,
                           deadline=0.3) as runtime:
            return await runtime.execute(compile_webhook({"url": "https://slow.test/", "method": "GET"}), {})

    result = asyncio.run(main())
    assert result.category == "timeout" and sent == []


def test_a_lookup_shared_by_waiting_calls_outlives_one_that_gives_up() -> None:
    """The deadline cancels a caller's wait, not the lookup others are waiting for."""
    lookups: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        lookups.append(host)
        await asyncio.sleep(0.3)
        return ["127.0.0.1"]

    async def main() -> tuple[Any, Any]:
        async with (
            StubServer(answer(200, {"ok": True})) as server,
            Runtime(resolver=resolver, allow_networks=LOOPBACK) as runtime,
            Runtime(resolver=resolver, allow_networks=LOOPBACK, deadline=0.1) as hurried,
        ):
            plan = compile_webhook({"url": f"http://api.test:{server.port}/", "method": "GET"})
            hurried._pins, hurried._transport = runtime._pinned(), runtime.transport  # one pin table, two deadlines
            short, patient = await asyncio.gather(hurried.execute(plan, {}), runtime.execute(plan, {}))
            hurried._pins = hurried._transport = None
        return short, patient

    short, patient = asyncio.run(main())
    assert short.category == "timeout" and patient.ok
    assert lookups == ["api.test"]


# -- L3: a deny entry wins over every allow entry ------------------------------------------------


def _plan(port: int) -> Any:
    return compile_webhook({"url": f"http://api.test:{port}/", "method": "GET"})


@pytest.mark.parametrize(
    ("allow", "deny", "answer_"),
    [
        ({"allow_hosts": ["api.test"]}, ["127.0.0.0/8"], ["127.0.0.1"]),
        ({"allow_networks": ["127.0.0.0/8"]}, ["127.0.0.1/32"], ["127.0.0.1"]),
        ({"allow_hosts": ["api.test"], "allow_networks": ["0.0.0.0/0"]}, ["127.0.0.0/8"], ["8.8.8.8", "127.0.0.1"]),
        ({"allow_networks": ["::/0"]}, ["127.0.0.0/8"], ["::ffff:127.0.0.1"]),  # IPv4 inside IPv6
        ({"allow_hosts": ["api.test"]}, ["::1/128"], ["::1"]),
    ],
)
def test_a_deny_entry_wins_over_every_allow_entry(allow: dict[str, Any], deny: list[str], answer_: list[str]) -> None:
    async def main() -> Any:
        async with (
            StubServer(answer(200, {"ok": True})) as server,
            Runtime(resolver=_resolver({"api.test": answer_}), deny_networks=deny, **allow) as runtime,
        ):
            return await runtime.execute(_plan(server.port), {})

    result = asyncio.run(main())
    assert result.category == "blocked", (result.category, result.error)
    assert DIALLED == []


@pytest.mark.parametrize("host", ["127.0.0.1", "2130706433", "0x7f.1", "[::ffff:127.0.0.1]"])
def test_a_deny_entry_wins_for_a_host_written_as_an_address(host: str) -> None:
    guard = OutboundGuard.build(allow_networks=["127.0.0.0/8", "::/0"], deny_networks=["127.0.0.1/32"])
    with pytest.raises(BlockedError, match="deny list"):
        guard.numeric(host)


def test_allow_entries_still_open_what_no_deny_entry_covers() -> None:
    async def main() -> Any:
        async with (
            StubServer(answer(200, {"ok": True})) as server,
            Runtime(resolver=_resolver({"api.test": ["127.0.0.1"]}), allow_hosts=["api.test"],
                    deny_networks=["10.0.0.0/8"]) as runtime,
        ):
            return await runtime.execute(_plan(server.port), {})

    assert asyncio.run(main()).ok
    assert DIALLED == ["127.0.0.1"]


# -- L5: networks are read strictly --------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        ("127.0.0.1/0", "did you mean 127.0.0.1/32 or 0.0.0.0/0?"),
        ("10.1.2.3/8", "did you mean 10.1.2.3/32 or 10.0.0.0/8?"),
        ("::1/64", "did you mean ::1/128 or ::/64?"),
    ],
)
def test_a_network_with_host_bits_is_an_error_that_says_what_was_meant(written: str, meant: str) -> None:
    with pytest.raises(NetworkSpecError) as raised:
        parse_network(written)
    message = str(raised.value)
    assert message == f"{written} has host bits set; {meant}" and "\n" not in message
    assert isinstance(raised.value, ValueError)
    for options in ({"allow_networks": [written]}, {"deny_networks": [written]}):
        with pytest.raises(NetworkSpecError):
            Runtime(**options)


@pytest.mark.parametrize("written", ["localhost/8", "10.0.0.0/33", "", "10.0.0.0/8/8"])
def test_what_is_not_a_network_is_an_error(written: str) -> None:
    with pytest.raises(NetworkSpecError, match="is not a network"):
        OutboundGuard.build(allow_networks=[written])


def test_networks_written_right_are_read_as_written() -> None:
    guard = OutboundGuard.build(allow_networks=["127.0.0.0/8", " 10.0.0.0/8 ", "192.0.2.7", "fd00::/8"])
    assert [str(n) for n in guard.allow_networks] == ["127.0.0.0/8", "10.0.0.0/8", "192.0.2.7/32", "fd00::/8"]


# -- L6: pinned clients are bounded, and a dropped one takes its connections with it --------------


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.slow  # each new pin builds a client (TLS roots and all): about 6 ms each, so half a minute
def test_five_thousand_llm_chosen_hosts_keep_the_pins_and_descriptors_bounded() -> None:
    cap = 32
    hosts = [f"h{i}.test" for i in range(5000)]
    table = {host: ["127.0.0.1"] for host in hosts}  # every name on loopback, each its own pin and pool

    async def main() -> tuple[list[int], list[int], int, int]:
        pins_seen, fds_seen = [], []
        async with (
            StubServer(answer(200, {"ok": True})) as server,
            Runtime(resolver=_resolver(table), allow_networks=LOOPBACK, max_pinned_hosts=cap) as runtime,
        ):
            plan = compile_webhook({"url": f"http://$host:{server.port}/", "method": "GET"})
            baseline = _open_fds()
            for start in range(0, len(hosts), 50):
                batch = hosts[start : start + 50]
                results = await asyncio.gather(*(runtime.execute(plan, {"host": h}) for h in batch))
                assert all(r.ok for r in results), [(r.category, r.error) for r in results if not r.ok][:3]
                await asyncio.sleep(0)  # let the server see the hang-ups
                pins_seen.append(len(runtime._pinned()))
                fds_seen.append(_open_fds() - baseline)
            return pins_seen, fds_seen, len(server.requests), server.connections

    pins_seen, fds_seen, requests, connections = asyncio.run(main())
    assert requests == 5000 and connections == 5000  # one pin, one pool, one connection per name
    assert max(pins_seen) <= cap
    # a kept pin holds its idle connection: two descriptors here (client and server side), plus a batch in flight
    assert max(fds_seen) <= 2 * cap + 2 * 50 + 20, fds_seen[-10:]


def test_a_dropped_pin_does_not_break_the_request_in_flight_on_it() -> None:
    async def slow(request: Request, writer: asyncio.StreamWriter) -> None:
        if (request.header("Host") or "").startswith("slow.test"):
            await asyncio.sleep(0.3)
        writer.write(response(200, {"host": request.header("Host")}))

    table = {"slow.test": ["127.0.0.1"], "a.test": ["127.0.0.1"], "b.test": ["127.0.0.1"]}

    async def main() -> tuple[Any, list[Any], int]:
        async with (
            StubServer(slow) as server,
            Runtime(resolver=_resolver(table), allow_networks=LOOPBACK, max_pinned_hosts=1) as runtime,
        ):
            def plan(host: str) -> Any:
                return compile_webhook({"url": f"http://{host}:{server.port}/", "method": "GET"})

            in_flight = asyncio.ensure_future(runtime.execute(plan("slow.test"), {}))
            await asyncio.sleep(0.1)  # the slow request is on its way
            others = [await runtime.execute(plan(h), {}) for h in ("a.test", "b.test")]  # slow.test's pin is dropped
            pins = len(runtime._pinned())
            return await in_flight, others, pins

    slow_result, others, pins = asyncio.run(main())
    assert slow_result.ok, (slow_result.category, slow_result.error)
    assert all(r.ok for r in others) and pins == 1


def test_hosts_written_as_addresses_keep_a_bounded_number_of_clients() -> None:
    """An address is pinned like a name, with a client of its own; beyond ``max_pinned_hosts`` destinations
    the least recently used client is dropped, and goes with its connections."""

    async def main() -> tuple[list[int], list[int]]:
        servers = [StubServer(answer(200, {"ok": True})) for _ in range(12)]
        for server in servers:
            await server.__aenter__()
        keys, fds = [], []
        try:
            async with Runtime(allow_networks=LOOPBACK, max_pinned_hosts=4) as runtime:
                baseline = _open_fds()
                for _ in range(3):
                    for server in servers:
                        result = await runtime.execute(compile_webhook({"url": server.url("/"), "method": "GET"}), {})
                        assert result.ok
                        await asyncio.sleep(0)
                        transport = runtime.transport
                        assert isinstance(transport, PinnedClients)
                        keys.append(len(transport))
                        fds.append(_open_fds() - baseline)
        finally:
            for server in servers:
                await server.__aexit__()
        return keys, fds

    keys, fds = asyncio.run(main())
    assert max(keys) <= 4
    assert max(fds) <= 2 * 4 + 6, fds


# -- L8: what a name resolved to stays with the operator -----------------------------------------


def test_a_refused_name_never_tells_the_llm_or_the_caller_where_it_points(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    trigger = compile_trigger({
        "name": "fetch", "description": "d",
        "parameters": {"type": "object", "properties": {"target": {"type": "string"}}},
        "webhook": {"url": "$target", "method": "GET"},
    })
    table = {
        "db.corp.test": ["10.20.30.40"],
        "meta.corp.test": ["169.254.169.254"],
        "mixed.test": ["8.8.8.8", "192.168.7.7"],
    }

    async def main() -> list[Any]:
        store = SQLiteStore(tmp_path / "w.db")
        await store.put_session("s1", company_id="cmp_1", assistant_id="asst_1", client_data={})
        async with Runtime(store, resolver=_resolver(table)) as runtime:
            results = [
                await runtime.call_trigger(trigger, "s1", {"target": f"http://{host}/"})
                for host in [*table, "nowhere.test"]
            ]
        logs = await store.logs("s1")
        await store.close()
        return [results, logs]

    with caplog.at_level(logging.INFO, logger="webhook_dsl.runtime.guard"):
        results, logs = asyncio.run(main())
    addresses = ["10.20.30.40", "169.254.169.254", "192.168.7.7", "8.8.8.8"]
    shown = [r.message_for_llm for r in results] + [str(r.to_dict()) for r in results] + [str(logs)]
    for text in shown:
        assert not any(address in text for address in addresses), text
    # a name that does not resolve is "dns" (a typo is not a policy to loosen); the others, the same words
    # wherever inside they point, naming the option that allows the name and never a network
    assert [r.call.category for r in results] == ["blocked"] * 3 + ["dns"]
    assert {r.call.error.replace(h, "HOST") for r, h in zip(results, table, strict=False)} == {
        "HOST: its address is not public (allow it with --allow-host HOST or WEBHOOK_DSL_ALLOW_HOSTS)"
    }
    assert results[3].call.error == "nowhere.test: the name does not resolve"
    assert "stub resolver" not in str(results[3].to_dict())  # the resolver's own words are the operator's
    operator = caplog.text
    assert "10.20.30.40" in operator and "169.254.169.254" in operator and "cannot look up nowhere.test" in operator


def test_an_address_the_caller_wrote_is_still_named_with_its_reason() -> None:
    async def main() -> Any:
        async with Runtime() as runtime:
            plan = compile_webhook({"url": "http://169.254.169.254/latest/", "method": "GET"})
            return await runtime.execute(plan, {})

    result = asyncio.run(main())
    assert result.category == "blocked" and "169.254.169.254" in result.error and "link-local" in result.error


# -- L12: a redirect to another origin never re-sends a body holding a secret ---------------------

SECRET = 'sk-"live"/7f3a9c'  # a quote and a slash: JSON-escaped in the body, not a plain substring


def _redirecting(status: int, target: str) -> Any:
    async def handler(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(response(status, "", {"Location": target}))

    return handler


def _send(status: int, body: dict[str, Any], same_origin: bool = False) -> tuple[Any, StubServer, StubServer]:
    async def main() -> tuple[Any, StubServer, StubServer]:
        other = StubServer(answer(200, {"landed": True}))
        first = StubServer(_same_origin_then_answer(status) if same_origin else _redirecting(status, ""))
        async with other, first, Runtime(allow_networks=LOOPBACK, follow_redirects=True, max_retries=0) as runtime:
            if not same_origin:
                first.handler = _redirecting(status, other.url("/landed"))
            plan = compile_webhook({"url": first.url("/start"), "method": "POST", "body": body})
            result = await runtime.execute(plan, {"api_token": SECRET, "note": "hello"}, secret_names=["api_token"])
        return result, first, other

    return asyncio.run(main())


def _same_origin_then_answer(status: int) -> Any:
    async def handler(request: Request, writer: asyncio.StreamWriter) -> None:
        if request.target == "/start":
            writer.write(response(status, "", {"Location": "/landed"}))
        else:
            writer.write(response(200, {"landed": True}))

    return handler


@pytest.mark.parametrize("status", [307, 308])
def test_a_cross_origin_redirect_that_would_resend_a_secret_body_is_refused(status: int) -> None:
    result, first, other = _send(status, {"token": "$api_token", "note": "$note"})
    assert result.category == "blocked", (result.category, result.error)
    assert "holds a secret" in (result.error or "") and SECRET not in (result.error or "")
    assert len(first.requests) == 1 and other.requests == []


@pytest.mark.parametrize("status", [307, 308])
def test_a_body_without_a_secret_still_follows(status: int) -> None:
    result, _first, other = _send(status, {"note": "$note"})
    assert result.ok and other.requests[0].json() == {"note": "hello"}


def test_a_redirect_that_drops_the_body_still_follows() -> None:
    result, _first, other = _send(303, {"token": "$api_token"})
    assert result.ok and other.requests[0].method == "GET" and other.requests[0].body == b""


def test_a_same_origin_redirect_keeps_its_body() -> None:
    result, first, _other = _send(307, {"token": "$api_token"}, same_origin=True)
    assert result.ok and [r.target for r in first.requests] == ["/start", "/landed"]
    assert first.requests[1].json() == {"token": SECRET}
