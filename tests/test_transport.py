"""The transport protocol from the runtime's side: one code path whatever moves the bytes.

``StubTransport`` (the public test double) answers in-process, so the runtime's own rules are seen
alone: which address it hands a transport, what each kind of transport failure becomes, and the cap,
framing checks, decompression and deadline applied to whatever a transport hands back. Also here: how
an httpx client or transport is adopted, and what importing the runtime costs.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from webhook_dsl import Runtime, compile_webhook
from webhook_dsl.runtime.calls import CallResult
from webhook_dsl.runtime.httpx_transport import HttpxTransport
from webhook_dsl.runtime.transport import StubRequest, StubResponse, StubTransport, Transport, TransportError

ROOT = Path(__file__).resolve().parent.parent


async def _resolver(host: str, port: int) -> list[str]:
    return {"api.example.com": ["93.184.215.14", "93.184.215.15"]}[host]


def _call(handler: Any, method: str = "GET", url: str = "https://api.example.com/o/1", **options: Any) -> Any:
    async def main() -> tuple[CallResult, StubTransport]:
        stub = StubTransport(handler)
        async with Runtime(transport=stub, resolver=_resolver, **options) as runtime:
            webhook: dict[str, Any] = {"url": url, "method": method}
            if method == "POST":
                webhook["body"] = {"a": 1}
            result = await runtime.execute(compile_webhook(webhook), {})
        assert stub.closed  # the runtime closes its transport
        return result, stub

    return asyncio.run(main())


def test_a_transport_is_told_the_checked_address_and_dials_nothing_else() -> None:
    result, stub = _call(lambda request: StubResponse(200, {"Content-Type": "application/json"}, b'{"ok": true}'))
    assert result.ok and result.json() == {"ok": True}
    (request,) = stub.requests
    assert (request.destination, request.address) == (("https", "api.example.com", 443), "93.184.215.14")
    assert request.url == "https://api.example.com/o/1"
    assert (request.header("User-Agent") or "").startswith("webhook-dsl/")


def test_a_private_answer_never_reaches_the_transport() -> None:
    async def private(host: str, port: int) -> list[str]:
        return ["10.0.0.7"]

    async def main() -> tuple[CallResult, StubTransport]:
        stub = StubTransport(lambda request: StubResponse(200))
        async with Runtime(transport=stub, resolver=private) as runtime:
            plan = compile_webhook({"url": "https://api.example.com/", "method": "GET"})
            return await runtime.execute(plan, {}), stub

    result, stub = asyncio.run(main())
    assert result.category == "blocked" and stub.requests == []


#: kind (stage) -> category, whether it was sent, the error's start, attempts of a POST allowed two retries
KINDS = {
    (TransportError.CONNECT, "answer"): ("connection", False, "not sent: refused", 3),
    (TransportError.POOL, "answer"): ("timeout", False, "not sent: no free connection before the deadline", 1),
    (TransportError.TIMEOUT, "send"): ("timeout", True, "the request was still being sent at the 15 s deadline", 1),
    (TransportError.TIMEOUT, "answer"): ("timeout", True, "no answer within the 15 s deadline", 1),
    (TransportError.TIMEOUT, "body"): ("timeout", True, "the answer began but did not complete within the 15 s", 1),
    (TransportError.LOST, "answer"): ("connection", True, "the connection was lost after the request was sent", 1),
    (TransportError.INVALID, "answer"): ("invalid_response", True, "refused", 1),
    (TransportError.UNSENDABLE, "answer"): ("render", True, "refused", 1),
}


@pytest.mark.parametrize(("kind", "stage"), list(KINDS))
def test_each_kind_of_transport_failure_has_one_meaning(kind: str, stage: str) -> None:
    category, sent, error, attempts = KINDS[(kind, stage)]

    def handler(request: StubRequest) -> StubResponse:
        raise TransportError(kind, "refused", stage=stage)

    result, stub = _call(handler, "POST", backoff_base=0.001)
    assert (result.category, result.attempts) == (category, attempts), result.error
    assert (result.error or "").startswith(error), result.error
    assert (result.error or "").startswith("not sent: ") is not sent
    if kind == TransportError.CONNECT:  # nothing was sent: retried, each time at the next checked address
        assert [request.address for request in stub.requests] == ["93.184.215.14", "93.184.215.15", "93.184.215.14"]


def _pieces(piece: bytes, count: int = 10**9) -> Iterator[bytes]:
    for _ in range(count):
        yield piece


async def _slowly(piece: bytes) -> AsyncIterator[bytes]:
    yield piece
    await asyncio.sleep(30)
    yield piece


BOMB = gzip.compress(b"\0" * 20_000_000)

ANSWERS = {
    "Content-Length beside Transfer-Encoding": (
        StubResponse(200, {"Content-Length": "2", "Transfer-Encoding": "chunked"}, b"ok"), "invalid_response"
    ),
    "a transfer coding other than chunked": (
        StubResponse(200, {"Transfer-Encoding": "gzip"}, b"ok"), "invalid_response"
    ),
    "endless pieces": (StubResponse(200, {}, _pieces(b"x" * 65536)), "too_large"),
    "a lying Content-Length": (StubResponse(200, {"Content-Length": "5"}, _pieces(b"x" * 65536)), None),
    "a gzip bomb": (StubResponse(200, {"Content-Encoding": "gzip", "Content-Length": str(len(BOMB))}, BOMB),
                    "too_large"),
    "bad compression": (StubResponse(200, {"Content-Encoding": "gzip"}, b"not gzip"), "invalid_response"),
    "a coding the runtime does not undo": (StubResponse(200, {"Content-Encoding": "br"}, b"x"), "invalid_response"),
}


@pytest.mark.parametrize("case", list(ANSWERS))
def test_the_runtime_judges_what_a_transport_hands_back(case: str) -> None:
    answer, category = ANSWERS[case]
    result, _ = _call(lambda request: answer, max_retries=0)
    assert result.category == category, (result.category, result.error)
    assert len(result.body) <= 1024 * 1024
    if category is None:
        assert result.body == b"xxxxx"  # cut at the length it declared


def test_the_deadline_ends_an_exchange_that_stalls_before_or_during_the_answer() -> None:
    async def stall(request: StubRequest) -> StubResponse:
        await asyncio.sleep(30)
        return StubResponse(200)

    before, _ = _call(stall, deadline=0.2)
    during, _ = _call(lambda request: StubResponse(200, {}, _slowly(b"x")), deadline=0.2)
    assert (before.category, before.error) == ("timeout", "no answer within the 0.2 s deadline")
    assert during.category == "timeout"
    assert during.error == "the answer began but did not complete within the 0.2 s deadline"
    assert before.elapsed_ms < 1000 and during.elapsed_ms < 1000


def test_a_stub_transport_speaks_the_protocol() -> None:
    assert isinstance(StubTransport(lambda request: StubResponse()), Transport)
    assert isinstance(HttpxTransport(), Transport)


# -- httpx, adopted ----------------------------------------------------------------------------------


def test_an_httpx_mock_transport_is_wrapped_and_sees_the_url_as_written() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"ok": True}, headers={"Content-Encoding": "identity"})

    async def main() -> tuple[CallResult, Any]:
        async with Runtime(transport=httpx.MockTransport(handler), resolver=_resolver) as runtime:
            plan = compile_webhook({"url": "https://api.example.com/o/$id", "method": "POST", "body": {"a": "$id"}})
            return await runtime.execute(plan, {"id": "\u00e9 1"}), runtime.transport

    result, transport = asyncio.run(main())
    assert isinstance(transport, HttpxTransport) and transport.dials_given_address is False
    assert result.ok and result.json() == {"ok": True}
    assert str(sent[0].url) == "https://api.example.com/o/%C3%A9%201"
    assert json.loads(sent[0].content) == {"a": "\u00e9 1"}


def test_a_gzipped_mock_answer_is_inflated_once_by_the_runtime() -> None:
    """httpx would inflate a mock's answer when it is built; the runtime reads the raw stream instead, so
    the cap counts the inflated bytes and nothing is inflated twice."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=gzip.compress(b'{"ok": 1}'),
                              headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})

    async def main() -> CallResult:
        async with Runtime(transport=httpx.MockTransport(handler), resolver=_resolver) as runtime:
            return await runtime.execute(compile_webhook({"url": "https://api.example.com/", "method": "GET"}), {})

    result = asyncio.run(main())
    assert result.ok and result.json() == {"ok": 1}


def test_what_is_not_a_transport_is_refused() -> None:
    with pytest.raises(TypeError, match=r"httpx\.AsyncClient or httpx\.AsyncBaseTransport"):
        Runtime(transport=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="proxy"):
        HttpxTransport(proxy="http://127.0.0.1:3128")
    with pytest.raises(TypeError, match="configure your own client"):
        HttpxTransport(httpx.MockTransport(lambda request: httpx.Response(200)), http2=True)


def test_the_pools_httpx_transport_keeps_are_bounded() -> None:
    """One pool per destination, the least recently used closed once its last request is over."""

    async def main() -> tuple[list[CallResult], list[int]]:
        from tests.http_stub import StubServer, answer

        servers = [StubServer(answer(200, {"ok": True})) for _ in range(5)]
        for server in servers:
            await server.__aenter__()
        transport = HttpxTransport(max_pools=2)
        sizes, results = [], []
        try:
            async with Runtime(transport=transport, allow_networks=["127.0.0.0/8"]) as runtime:
                for server in servers * 2:
                    results.append(await runtime.execute(compile_webhook({"url": server.url(), "method": "GET"}), {}))
                    sizes.append(len(transport))
            assert len(transport) == 0 and not transport._closing  # everything closed with the runtime
        finally:
            for server in servers:
                await server.__aexit__()
        return results, sizes

    results, sizes = asyncio.run(main())
    assert all(r.ok for r in results) and max(sizes) == 2


# -- what importing costs ------------------------------------------------------------------------------


def _modules_after(code: str) -> dict[str, bool]:
    script = (
        "import asyncio, json, sys\n" + code + "\n"
        "print(json.dumps({name: name in sys.modules for name in ('httpx', 'pyreqwest')}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_the_runtime_imports_an_http_client_only_when_it_sends() -> None:
    made = "import webhook_dsl\nruntime = webhook_dsl.Runtime()\n"
    stub = (
        "from webhook_dsl.runtime.transport import StubTransport, StubResponse\n"
        "async def resolver(host, port): return ['93.184.215.14']\n"
        "async def main():\n"
        "    stub = StubTransport(lambda r: StubResponse(200))\n"
        "    async with webhook_dsl.Runtime(transport=stub, resolver=resolver) as rt:\n"
        "        plan = webhook_dsl.compile_webhook({'url': 'https://api.example.com/', 'method': 'GET'})\n"
        "        assert (await rt.execute(plan, {})).ok\n"
        "asyncio.run(main())\n"
    )
    default = (
        "async def main():\n"
        "    async with webhook_dsl.Runtime() as rt:\n"
        "        plan = webhook_dsl.compile_webhook({'url': 'http://127.0.0.1:9/', 'method': 'GET'})\n"
        "        assert (await rt.execute(plan, {})).category == 'blocked'\n"
        "asyncio.run(main())\n"
    )
    assert _modules_after(made) == {"httpx": False, "pyreqwest": False}
    assert _modules_after(made + stub) == {"httpx": False, "pyreqwest": False}
    assert _modules_after(made + default) == {"httpx": False, "pyreqwest": True}
