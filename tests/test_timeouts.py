"""Truthful categories (issue 14): a request that was sent and got no answer is a ``timeout`` that may have
happened, for every method; ``connection`` with "not sent" is only for a request that never left.

pyreqwest reports reqwest's request timeout, which fires while the answer is awaited, as
``ConnectTimeoutError``, the class it also uses for a connect timeout; hyper's error kind
(``client error (Connect)``) is what tells them apart. Each case runs against a loopback server that
refuses, cannot accept, accepts and reads nothing, reads the request and stalls, stalls the body,
or hangs up.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest

import webhook_dsl.runtime.client
from tests.http_stub import Request, StubServer, response
from webhook_dsl import Runtime, SQLiteStore, compile_trigger, compile_webhook
from webhook_dsl.runtime.calls import CallResult, message_for_llm
from webhook_dsl.runtime.masking import Masker

LOOPBACK = ["127.0.0.0/8"]
METHODS = ["GET", "POST", "PUT", "DELETE"]
NOT_SENT = "not sent: "
MAY_HAVE = "the request was sent, so the action may have happened; do not retry it blindly"

#: Every test here runs on asyncio's loop and on uvloop (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("each_event_loop")


@pytest.fixture(autouse=True)
def only_loopback(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def dialling(address: str, port: int) -> None:
        if not address.startswith("127."):
            raise AssertionError(f"test tried to connect to {address!r}")

    monkeypatch.setattr(webhook_dsl.runtime.client, "dialling", dialling)
    yield


def _trigger(url: str, method: str) -> Any:
    webhook: dict[str, Any] = {"url": url, "method": method}
    if method in ("POST", "PUT"):
        webhook["body"] = {"order": "A-1"}
    return compile_trigger({
        "name": "place_order", "description": "d", "parameters": {"type": "object", "properties": {}},
        "webhook": webhook,
    })


def _message(result: CallResult, method: str = "POST") -> str:
    return message_for_llm(_trigger("http://127.0.0.1:1/", method), result, Masker(), 8000)


# -- the servers -------------------------------------------------------------------------------------------


@asynccontextmanager
async def _refusing() -> AsyncIterator[tuple[str, Callable[[], int]]]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield f"http://127.0.0.1:{port}/orders", lambda: 0  # nothing listens there


@asynccontextmanager
async def _not_accepting() -> AsyncIterator[tuple[str, Callable[[], int]]]:
    """A listener whose accept queue is full: the kernel drops further SYNs, so connecting times out."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with suppress(BlockingIOError):  # the handshake completes, or its SYN is dropped, in the kernel
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        await asyncio.sleep(0.05)
        try:
            yield f"http://127.0.0.1:{port}/orders", lambda: 0
        finally:
            for filler in fillers:
                filler.close()


@asynccontextmanager
async def _silent() -> AsyncIterator[tuple[str, Callable[[], int]]]:
    """Accepts and never reads or answers; counts connections."""
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            await reader.read(0)
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/orders", lambda: connections
    finally:
        server.close()
        await server.wait_closed()


def _stub(handler: Callable[[Request, asyncio.StreamWriter], Awaitable[None]]) -> Any:
    @asynccontextmanager
    async def serve() -> AsyncIterator[tuple[str, Callable[[], int]]]:
        async with StubServer(handler) as server:
            yield server.url("/orders"), lambda: len(server.requests)

    return serve


async def _stall(request: Request, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(30)  # read the request; never answer


async def _stall_body(request: Request, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"st")
    await writer.drain()
    await asyncio.sleep(30)


async def _hang_up(request: Request, writer: asyncio.StreamWriter) -> None:
    writer.close()  # read the request, answer nothing


SERVERS = {
    "refused": _refusing,
    "not accepting": _not_accepting,
    "silent": _silent,
    "stalled after reading the request": _stub(_stall),
    "stalled in the body": _stub(_stall_body),
    "hung up after reading the request": _stub(_hang_up),
}


def _execute(server: str, method: str, **settings: Any) -> tuple[CallResult, int]:
    async def main() -> tuple[CallResult, int]:
        async with SERVERS[server]() as (url, seen), Runtime(allow_networks=LOOPBACK, **settings) as runtime:
            webhook: dict[str, Any] = {"url": url, "method": method}
            if method in ("POST", "PUT"):
                webhook["body"] = {"order": "A-1"}
            result = await runtime.execute(compile_webhook(webhook), {})
            return result, seen()

    return asyncio.run(main())


# -- categories ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("server", ["silent", "stalled after reading the request", "stalled in the body"])
def test_a_request_sent_that_gets_no_answer_is_a_timeout_that_may_have_happened(server: str, method: str) -> None:
    result, seen = _execute(server, method, deadline=0.5, max_retries=2, backoff_base=0.001)
    assert (result.category, result.attempts, seen) == ("timeout", 1, 1), (result.category, result.error)
    assert not (result.error or "").startswith(NOT_SENT)
    message = _message(result, method)
    assert message.startswith(f'The tool "place_order" timed out waiting for the answer: {MAY_HAVE}'), message
    assert "Nothing was sent" not in message


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("server", ["refused", "not accepting"])
def test_a_request_that_could_not_connect_is_a_connection_failure_that_was_not_sent(server: str, method: str) -> None:
    """Nothing left, so it is retried whatever the method (POST included), and the LLM hears nothing happened."""
    result, _ = _execute(server, method, deadline=5, connect_timeout=0.2, max_retries=1, backoff_base=0.001)
    assert (result.category, result.attempts) == ("connection", 2), (result.category, result.error)
    assert (result.error or "").startswith(NOT_SENT)
    if server == "not accepting":
        assert "no connection within 0.2 s" in (result.error or "")
    message = _message(result, method)
    assert message.startswith('The tool "place_order" failed (connection: not sent: ')
    assert "Nothing was sent, so the action did not happen" in message and "may have" not in message


@pytest.mark.parametrize("method", METHODS)
def test_a_connection_lost_after_the_request_left_may_have_happened(method: str) -> None:
    """Sent, then the connection broke: retried only where that is safe, and never called "not sent"."""
    result, seen = _execute("hung up after reading the request", method, max_retries=1, backoff_base=0.001)
    expected = 1 if method == "POST" else 2
    assert (result.category, result.attempts, seen) == ("connection", expected, expected), result.error
    assert "lost after the request was sent" in (result.error or "")
    message = _message(result, method)
    assert message.startswith('The tool "place_order" failed (connection: ') and MAY_HAVE in message


def test_a_timed_out_post_is_not_sent_again_even_when_the_trigger_allows_retries() -> None:
    async def main() -> tuple[CallResult, int]:
        async with SERVERS["stalled after reading the request"]() as (url, seen), Runtime(
            allow_networks=LOOPBACK, deadline=0.5, backoff_base=0.001
        ) as runtime:
            plan = compile_webhook({"url": url, "method": "POST", "body": {"a": 1}})
            return await runtime.execute(plan, {}, retry_post=True), seen()

    result, seen = asyncio.run(main())
    assert (result.category, result.attempts, seen) == ("timeout", 1, 1)


def test_a_deadline_that_passes_while_waiting_to_retry_an_unsent_call_is_not_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Full jitter draws the pause at random from [0, cap]: fixed past the deadline, so the test cannot flake.
    monkeypatch.setattr(Runtime, "_backoff", lambda self, attempt: 10.0)
    result, _ = _execute("refused", "POST", deadline=0.3)
    assert result.category == "timeout" and result.attempts == 1
    assert (result.error or "").startswith(NOT_SENT) and "refused" in (result.error or "").lower()
    assert "Nothing was sent" in _message(result)


def test_the_log_and_the_llm_say_a_post_that_timed_out_may_have_happened(tmp_path: Path) -> None:
    async def main() -> tuple[Any, list[dict[str, Any]]]:
        store = SQLiteStore(tmp_path / "w.db")
        await store.put_session("s1", company_id="cmp_1", assistant_id="asst_1", client_data={})
        async with SERVERS["stalled after reading the request"]() as (url, _seen), Runtime(
            store, allow_networks=LOOPBACK, deadline=0.5
        ) as runtime:
            result = await runtime.call_trigger(_trigger(url, "POST"), "s1", {})
        logs = await store.logs("s1")
        await store.close()
        return result, logs

    result, logs = asyncio.run(main())
    assert result.call.category == "timeout" == logs[0]["category"]
    assert logs[0]["error"] == "no answer within the 0.5 s deadline"
    assert result.message_for_llm.startswith(f'The tool "place_order" timed out waiting for the answer: {MAY_HAVE}')


def test_a_hop_that_never_left_after_a_redirect_that_did_is_not_called_unsent() -> None:
    """POST, answered 303 (the action happened), then the GET it points to cannot connect: the call is
    neither retried from the POST nor reported as not sent."""

    async def main() -> tuple[CallResult, StubServer]:
        async with _refusing() as (dead, _):

            async def see_other(request: Request, writer: asyncio.StreamWriter) -> None:
                writer.write(response(303, "", {"Location": dead}))

            async with StubServer(see_other) as server, Runtime(
                allow_networks=LOOPBACK, follow_redirects=True, backoff_base=0.001
            ) as runtime:
                plan = compile_webhook({"url": server.url("/orders"), "method": "POST", "body": {"a": 1}})
                return await runtime.execute(plan, {}, retry_post=False), server

    result, server = asyncio.run(main())
    assert result.category == "connection" and result.attempts == 1
    assert [r.method for r in server.requests] == ["POST"]
    error = result.error or ""
    assert not error.startswith(NOT_SENT) and error.endswith("an earlier request of this call was sent")
    assert MAY_HAVE in _message(result)


# -- the httpx path ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raised", "category", "unsent"),
    [
        (httpx.ConnectTimeout("connect timed out"), "connection", True),
        (httpx.ConnectError("refused"), "connection", True),
        (httpx.PoolTimeout("no connection free"), "timeout", True),
        (httpx.ReadTimeout("read timed out"), "timeout", False),
        (httpx.WriteTimeout("write timed out"), "timeout", False),
        (httpx.ReadError("reset"), "connection", False),
        (None, "timeout", False),  # the handler outlives the deadline
    ],
)
def test_a_transport_reports_the_same_categories(raised: Exception | None, category: str, unsent: bool) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if raised is not None:
            raise raised
        await asyncio.sleep(30)
        return httpx.Response(200)

    async def main() -> CallResult:
        async with Runtime(transport=httpx.MockTransport(handler), allow_networks=LOOPBACK, deadline=0.3,
                           max_retries=0) as runtime:
            return await runtime.execute(compile_webhook({"url": "http://127.0.0.1:9/", "method": "POST"}), {})

    result = asyncio.run(main())
    assert result.category == category, (result.category, result.error)
    assert (result.error or "").startswith(NOT_SENT) is unsent
    assert (MAY_HAVE in _message(result)) is not unsent
