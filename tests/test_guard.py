"""The outbound guard: SSRF vectors refused before any connection; resolution stubbed, never real DNS.

An autouse fixture watches every place a connection can start: ``webhook_dsl.runtime.client.dialling`` (the
one point every request passes, with the checked address its transport is told to dial) and the event
loop's sock_connect and create_connection (httpx, the stand-in). A connection to anything but loopback
fails the test before it is made, and every address is recorded. pyreqwest connects in Rust, out of
Python's sight, so what ``dialling`` reports is checked against what really happened: the servers record
the local address of every connection they accept (tests/loopback.py), with a decoy listening where the
system's resolver would have sent the request.
"""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest

import webhook_dsl.runtime.client
from tests.http_stub import StubServer, answer
from tests.loopback import landings
from webhook_dsl import Runtime, compile_webhook
from webhook_dsl.runtime.guard import BlockedError, OutboundGuard, parse_numeric_host, why_blocked
from webhook_dsl.runtime.httpx_transport import HttpxTransport

DIALLED: list[str] = []


@pytest.fixture(autouse=True)
def only_loopback(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every destination goes through client.dialling (pyreqwest) or the loop's sock_connect or
    create_connection (asyncio-based clients); all are spied on, and anything but loopback fails the test."""
    original_sock_connect = asyncio.selector_events.BaseSelectorEventLoop.sock_connect
    original_create = asyncio.BaseEventLoop.create_connection

    def check(host: Any) -> None:
        DIALLED.append(str(host))
        if not ipaddress.ip_address(str(host).split("%")[0]).is_loopback:
            raise AssertionError(f"test tried to connect to {host!r}")

    async def sock_connect(self: Any, sock: Any, address: Any) -> Any:
        check(address[0])
        return await original_sock_connect(self, sock, address)

    async def create_connection(self: Any, protocol_factory: Any, host: Any = None, port: Any = None, **kw: Any) -> Any:
        if host is not None:
            check(host)
        return await original_create(self, protocol_factory, host, port, **kw)

    def dialling(address: str, port: int) -> None:
        check(address)

    monkeypatch.setattr(webhook_dsl.runtime.client, "dialling", dialling)
    monkeypatch.setattr(asyncio.selector_events.BaseSelectorEventLoop, "sock_connect", sock_connect)
    monkeypatch.setattr(asyncio.BaseEventLoop, "create_connection", create_connection)
    DIALLED.clear()
    yield


BLOCKED_ADDRESSES = [
    "127.0.0.1",
    "127.255.255.254",
    "10.0.0.1",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "100.100.100.200",
    "0.0.0.0",
    "0.1.2.3",
    "192.0.0.1",
    "192.0.2.1",
    "198.18.0.1",
    "198.19.255.255",
    "198.51.100.7",
    "203.0.113.9",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "::1",
    "::",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::127.0.0.1",
    "64:ff9b::7f00:1",
    "64:ff9b::a9fe:a9fe",
    "64:ff9b:1::1",
    "2002:7f00:1::1",
    "2002:a9fe:a9fe::",
    "2001:db8::1",
    "fc00::1",
    "fd00:ec2::254",
    "fe80::1",
    "febf::1",
    "fec0::1",
    "ff02::1",
    "100::1",
    "::ffff:0:7f00:1",
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo whose client is 127.0.0.1
]
PUBLIC_ADDRESSES = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.215.14",
    "2606:4700:4700::1111",
    "2a00:1450:4001:81c::200e",
    "::ffff:8.8.8.8",
    "2002:0808:0808::1",
    "64:ff9b::808:808",
]


@pytest.mark.parametrize("address", BLOCKED_ADDRESSES)
def test_non_public_addresses_are_blocked(address: str) -> None:
    assert why_blocked(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", PUBLIC_ADDRESSES)
def test_public_addresses_pass(address: str) -> None:
    assert why_blocked(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0177.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("012.0.0.1", "10.0.0.1"),
        ("0", "0.0.0.0"),
        ("127.0.0.1.", "127.0.0.1"),
        ("0x7F.0.0.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("3232235777", "192.168.1.1"),
        ("example.com", None),
        ("08.1.1.1", None),
        ("1.2.3.4.5", None),
        ("256.0.0.1", None),
    ],
)
def test_numeric_disguises_are_read_like_inet_aton(host: str, address: str | None) -> None:
    parsed = parse_numeric_host(host)
    assert (str(parsed) if parsed else None) == address


SSRF_URLS = [
    "http://127.0.0.1/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0x7f.1/",
    "http://0177.1/",
    "http://017700000001/",
    "http://127.1/",
    "http://012.0.0.1/",
    "http://0/",
    "http://0.0.0.0/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[2002:7f00:1::]/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.100.100.200/",
    "http://localhost/",
    "http://LOCALHOST./",
    "http://foo.localhost/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://metadata.google.internal./",
    "http://rebind.test/",
    "http://private.test/",
    "http://mixed.test/",
    "http://[fe80::1]/",
    "http://224.0.0.1/",
    "http://198.18.0.1:8080/",
    "https://10.1.2.3:443/",
    "http://127.0.0.1.nip.test/",
]
STUB_DNS = {
    "rebind.test": ["127.0.0.1"],
    "private.test": ["192.168.0.10"],
    "mixed.test": ["93.184.215.14", "10.0.0.1"],
    "127.0.0.1.nip.test": ["127.0.0.1"],
    "api.test": ["127.0.0.1"],
}


async def stub_resolver(host: str, port: int) -> list[str]:
    if host not in STUB_DNS:
        raise OSError(f"stub resolver has no {host}")
    return STUB_DNS[host]


def test_ssrf_vectors_are_blocked_before_any_connection() -> None:
    async def main() -> list[Any]:
        async with Runtime(resolver=stub_resolver) as runtime:
            return [
                await runtime.execute(compile_webhook({"url": "$u", "method": "GET"}), {"u": url}) for url in SSRF_URLS
            ]

    results = asyncio.run(main())
    assert [r.category for r in results] == ["blocked"] * len(SSRF_URLS), [
        (url, r.category, r.error) for url, r in zip(SSRF_URLS, results, strict=True) if r.category != "blocked"
    ]
    assert DIALLED == []


@pytest.mark.parametrize("transport", ["pyreqwest", "httpx"])
def test_the_checked_address_is_the_one_dialled(transport: str) -> None:
    """``localhost`` is allowed by name and the stub resolver answers 127.0.0.3; the system's resolver would
    answer 127.0.0.1, where a decoy listens on the same port. The servers, not the client, say where the
    connection arrived, and it is where ``dialling`` said it would be."""
    lookups: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.3"]

    async def main() -> tuple[Any, list[str], list[str]]:
        async with landings("127.0.0.3", "127.0.0.1") as (pinned, decoy), Runtime(
            resolver=resolver,
            allow_hosts=["localhost"],
            transport=HttpxTransport() if transport == "httpx" else None,
        ) as runtime:
            plan = compile_webhook({"url": f"http://localhost:{pinned.port}/", "method": "GET"})
            results = [await runtime.execute(plan, {}) for _ in range(2)]
        return results, pinned.dialled, decoy.dialled

    results, pinned, decoy = asyncio.run(main())
    assert all(result.ok for result in results), [(r.category, r.error) for r in results]
    assert lookups == ["localhost"]
    assert pinned == ["127.0.0.3"] and decoy == []  # one connection, kept alive, at the checked address
    assert set(DIALLED) == {"127.0.0.3"}


def test_what_dialling_reports_is_what_the_servers_saw() -> None:
    """The name answers [127.0.0.9, 127.0.0.3, 127.0.0.4]; nothing listens on the first. ``dialling``
    reports the refused attempt and the failover; the servers saw exactly one connection, at the second."""

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.9", "127.0.0.3", "127.0.0.4"]

    async def main() -> tuple[Any, list[str], list[str]]:
        async with landings("127.0.0.3", "127.0.0.4") as (second, third), Runtime(
            resolver=resolver, allow_networks=["127.0.0.0/8"], backoff_base=0.001
        ) as runtime:
            plan = compile_webhook({"url": f"http://api.test:{second.port}/", "method": "POST", "body": {"a": 1}})
            result = await runtime.execute(plan, {})
        return result, second.dialled, third.dialled

    result, second, third = asyncio.run(main())
    assert result.ok and result.attempts == 2
    assert DIALLED == ["127.0.0.9", "127.0.0.3"]
    assert second == ["127.0.0.3"] and third == []


def test_lookups_that_fail_or_stall_fail_closed() -> None:
    async def slow(host: str, port: int) -> list[str]:
        await asyncio.sleep(10)
        return ["8.8.8.8"]

    async def main() -> None:
        guard = OutboundGuard.build(resolver=slow, resolve_timeout=0.05)
        with pytest.raises(BlockedError, match="longer than"):
            await guard.resolve("slow.test", 80)
        with pytest.raises(BlockedError) as failed:
            await OutboundGuard.build(resolver=stub_resolver).resolve("unknown.test", 80)
        assert "cannot look up" in failed.value.detail

        async def empty(host: str, port: int) -> list[str]:
            return []

        with pytest.raises(BlockedError) as failed:
            await OutboundGuard.build(resolver=empty).resolve("empty.test", 80)
        assert "no address" in failed.value.detail

    asyncio.run(main())


def test_allow_and_deny_lists() -> None:
    async def main() -> None:
        allowed = OutboundGuard.build(allow_networks=["10.0.0.0/8"], resolver=stub_resolver)
        assert await allowed.resolve("10.1.2.3", 80) == ["10.1.2.3"]
        with pytest.raises(BlockedError):
            await allowed.resolve("192.168.0.1", 80)
        by_name = OutboundGuard.build(allow_hosts=["private.test"], resolver=stub_resolver)
        assert await by_name.resolve("PRIVATE.TEST.", 80) == ["192.168.0.10"]
        denied = OutboundGuard.build(deny_networks=["93.184.0.0/16"], deny_hosts=["evil.test"], resolver=stub_resolver)
        with pytest.raises(BlockedError) as failed:
            await denied.resolve("mixed.test", 80)
        assert "deny list" in failed.value.detail
        with pytest.raises(BlockedError, match="deny list"):
            await denied.resolve("evil.test", 80)

    asyncio.run(main())


def test_redirects_are_checked_hop_by_hop() -> None:
    async def main() -> tuple[Any, StubServer]:
        async with (
            StubServer(answer(302, "", {"Location": "http://169.254.169.254/latest/meta-data/"})) as server,
            Runtime(allow_networks=["127.0.0.0/8"], follow_redirects=True) as runtime,
        ):
            result = await runtime.execute(compile_webhook({"url": server.url("/"), "method": "GET"}), {})
        return result, server

    result, _server = asyncio.run(main())
    assert result.category == "blocked" and "169.254.169.254" in (result.error or "")
    assert DIALLED == ["127.0.0.1"]


def test_the_spy_itself_stops_a_non_loopback_connection() -> None:
    """If the guard were bypassed (here: everything allowed), the spy, not the network, would answer."""

    async def public(host: str, port: int) -> list[str]:
        return ["192.0.2.10"]  # TEST-NET-1: allowed below on purpose, never reachable

    async def main() -> None:
        async with Runtime(resolver=public, allow_networks=["0.0.0.0/0"]) as runtime:
            await runtime.execute(compile_webhook({"url": "http://public.test/", "method": "GET"}), {})

    with pytest.raises(AssertionError, match=r"192\.0\.2\.10"):
        asyncio.run(main())
    assert DIALLED == ["192.0.2.10"]
