"""The runtime against real HTTP servers on 127.0.0.1: answers, failures, retries, limits, sessions, logs."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.http_stub import Request, StubServer, answer, response
from webhook_dsl import compile_webhook
from webhook_dsl.runtime.calls import Runtime, TriggerResult
from webhook_dsl.runtime.trigger import Trigger, compile_trigger
from webhook_dsl.storage.sqlite import SQLiteStore

LOOPBACK = ["127.0.0.0/8"]

#: Every test here runs on asyncio's loop and on uvloop (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("each_event_loop")


def run(coroutine: Awaitable[Any]) -> Any:
    return asyncio.run(coroutine)  # type: ignore[arg-type]


def trigger_for(url: str, method: str = "GET", **extra: Any) -> Trigger:
    webhook: dict[str, Any] = {
        "url": url,
        "method": method,
        "headers": [{"key": "Authorization", "value": "Bearer $erp_token"}],
    }
    if method != "GET":
        webhook["body"] = {"order": "$order_number", "session": "$session.id"}
    webhook["responseDirective"] = "Tell the user the status."
    return compile_trigger(
        {
            "name": "check_order",
            "description": "Look up an order",
            "parameters": {
                "type": "object",
                "properties": {"order_number": {"type": "string", "pattern": "^[A-Z]-[0-9]+$"}},
                "required": ["order_number"],
            },
            "clientData": ["erp_token", "patient_id"],
            "secrets": ["erp_token"],
            **extra,
            "webhook": webhook,
        }
    )


async def with_session(tmp_path: Path, client_data: dict[str, Any] | None = None) -> SQLiteStore:
    store = SQLiteStore(tmp_path / "w.db")
    await store.put_session(
        "s1", company_id="cmp_1", assistant_id="asst_1", client_data=client_data or {"erp_token": "tok-UNIQUE-7f3a9"}
    )
    return store


def call(
    tmp_path: Path,
    handler: Callable[..., Awaitable[None]],
    path: str = "/orders/$order_number",
    method: str = "GET",
    arguments: dict[str, Any] | None = None,
    trigger_extra: dict[str, Any] | None = None,
    **settings: Any,
) -> tuple[TriggerResult, StubServer, SQLiteStore]:
    async def main() -> tuple[TriggerResult, StubServer, SQLiteStore]:
        store = await with_session(tmp_path)
        async with StubServer(handler) as server:
            trigger = trigger_for(server.url(path), method, **(trigger_extra or {}))
            async with Runtime(store, allow_networks=LOOPBACK, **settings) as runtime:
                result = await runtime.call_trigger(trigger, "s1", arguments or {"order_number": "A-1"})
        return result, server, store

    return run(main())


def test_success_merges_client_data_for_the_next_call(tmp_path: Path) -> None:
    async def handler(request: Request, writer: asyncio.StreamWriter) -> None:
        if request.target.startswith("/orders/"):
            writer.write(
                response(
                    200,
                    {"status": "delivered", "session": {"client_data": {"patient_id": "pat_12345", "session.id": "x"}}},
                )
            )
        else:
            writer.write(response(200, {"seen": request.target}))

    async def main() -> None:
        store = await with_session(tmp_path)
        async with StubServer(handler) as server, Runtime(store, allow_networks=LOOPBACK) as runtime:
            first = await runtime.call_trigger(
                trigger_for(server.url("/orders/$order_number")), "s1", {"order_number": "A-1"}
            )
            assert first.call.ok and first.call.status == 200
            assert first.client_data_merged == {"patient_id": "pat_12345"}
            assert first.warnings == ["response tried to set system variable 'session.id'; ignored"]
            assert "Instruction: Tell the user the status." in first.message_for_llm
            assert '"status":"delivered"' in first.message_for_llm
            second = await runtime.call_trigger(
                trigger_for(server.url("/patients/$patient_id")), "s1", {"order_number": "A-2"}
            )
            assert second.call.json() == {"seen": "/patients/pat_12345"}
            session = await store.get_session("s1")
            assert session.client_data["patient_id"] == "pat_12345"
            logs = await store.logs("s1")
            assert [log["status"] for log in logs] == [200, 200]
            assert logs[0]["trigger"] == "check_order" and logs[0]["elapsed_ms"] > 0
            # The variables each log names are the ones its request used; the secret one only as a mask.
            assert logs[0]["variables"] == {"order_number": "A-1", "erp_token": "***"}
            assert logs[1]["variables"] == {"patient_id": "pat_12345", "erp_token": "***"}
            assert server.requests[0].header("Authorization") == "Bearer tok-UNIQUE-7f3a9"
            await store.close()

    run(main())


@pytest.mark.parametrize(
    ("status", "method", "attempts"),
    [(404, "GET", 1), (500, "GET", 1), (502, "GET", 3), (503, "POST", 1), (429, "DELETE", 3)],
)
def test_http_errors_and_which_are_retried(tmp_path: Path, status: int, method: str, attempts: int) -> None:
    result, server, _ = call(tmp_path, answer(status, {"error": "nope"}), method=method, backoff_base=0.001)
    assert (result.call.ok, result.call.category, result.call.status) == (False, "http_status", status)
    assert result.call.attempts == attempts == len(server.requests)
    # The error answer reaches the LLM: status, body and directive, worded as an error.
    message = result.message_for_llm
    assert f"answered with an error status (HTTP {status} " in message
    assert 'Response:\n{"error":"nope"}\nInstruction: Tell the user the status.' in message
    assert "succeeded" not in message


def test_503_then_200_honours_retry_after(tmp_path: Path) -> None:
    seen: list[float] = []

    async def handler(request: Request, writer: asyncio.StreamWriter) -> None:
        seen.append(asyncio.get_running_loop().time())
        if len(seen) == 1:
            writer.write(response(503, "busy", {"Retry-After": "1"}))
        else:
            writer.write(response(200, {"ok": True}))

    result, _, _ = call(tmp_path, handler)
    assert result.call.ok and result.call.attempts == 2
    assert seen[1] - seen[0] >= 0.95


def test_post_is_retried_only_when_the_trigger_says_so(tmp_path: Path) -> None:
    result, server, _ = call(
        tmp_path, answer(503), method="POST", trigger_extra={"retryPost": True}, backoff_base=0.001
    )
    assert result.call.attempts == 3 == len(server.requests)


def test_a_stalled_server_times_out(tmp_path: Path) -> None:
    async def stall(request: Request, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    result, _, store = call(tmp_path, stall, deadline=0.5)
    assert result.call.category == "timeout" and result.call.elapsed_ms < 2000
    assert run(store.logs("s1"))[0]["category"] == "timeout"


def test_a_dripping_server_cannot_outlive_the_deadline(tmp_path: Path) -> None:
    async def drip(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        for _ in range(100):
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.3)

    result, _, _ = call(tmp_path, drip, deadline=1.0)
    assert result.call.category == "timeout"
    assert result.call.elapsed_ms < 2500


def test_a_reset_connection_is_a_connection_error_and_retried_for_get(tmp_path: Path) -> None:
    async def reset(request: Request, writer: asyncio.StreamWriter) -> None:
        transport = writer.transport
        sock = transport.get_extra_info("socket")
        import socket
        import struct

        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    result, server, _ = call(tmp_path, reset, backoff_base=0.001)
    assert result.call.category == "connection"
    assert result.call.attempts == 3 == len(server.requests)


def test_more_than_the_cap_is_too_large(tmp_path: Path) -> None:
    result, _, _ = call(tmp_path, answer(200, b"x" * 5000), max_response_bytes=1000)
    assert result.call.category == "too_large"


def test_a_gzip_bomb_is_too_large(tmp_path: Path) -> None:
    bomb = gzip.compress(b"\0" * 50_000_000)
    assert len(bomb) < 100_000
    result, _, _ = call(tmp_path, answer(200, bomb, {"Content-Encoding": "gzip"}), max_response_bytes=1_000_000)
    assert result.call.category == "too_large"


def test_gzip_responses_are_inflated(tmp_path: Path) -> None:
    body = gzip.compress(json.dumps({"status": "ok"}).encode())
    result, _, _ = call(tmp_path, answer(200, body, {"Content-Encoding": "gzip", "Content-Type": "application/json"}))
    assert result.call.ok and result.call.json() == {"status": "ok"}


def test_invalid_json_is_an_invalid_response(tmp_path: Path) -> None:
    result, _, _ = call(tmp_path, answer(200, "{not json", {"Content-Type": "application/json"}))
    assert result.call.category == "invalid_response"


def test_plain_text_responses_are_fine(tmp_path: Path) -> None:
    result, _, _ = call(tmp_path, answer(200, "delivered", {"Content-Type": "text/plain"}))
    assert result.call.ok and "Response:\ndelivered" in result.message_for_llm


def test_redirects_are_not_followed_by_default(tmp_path: Path) -> None:
    result, server, _ = call(tmp_path, answer(302, "", {"Location": "/elsewhere"}))
    assert (result.call.category, result.call.status, len(server.requests)) == ("http_status", 302, 1)


def test_a_redirect_loop_ends(tmp_path: Path) -> None:
    result, server, _ = call(tmp_path, answer(302, "", {"Location": "/orders/A-1"}), follow_redirects=True)
    assert result.call.category == "invalid_response" and "redirects" in (result.call.error or "")
    assert len(server.requests) == 6


def test_redirect_to_another_origin_drops_credentials(tmp_path: Path) -> None:
    async def main() -> tuple[StubServer, TriggerResult]:
        store = await with_session(tmp_path)
        async with StubServer(answer(200, {"ok": 1})) as other:
            async with StubServer(answer(307, "", {"Location": other.url("/landed")})) as first:
                async with Runtime(store, allow_networks=LOOPBACK, follow_redirects=True) as runtime:
                    result = await runtime.call_trigger(
                        trigger_for(first.url("/o/$order_number")), "s1", {"order_number": "A-1"}
                    )
                assert first.requests[0].header("Authorization") == "Bearer tok-UNIQUE-7f3a9"
            return other, result

    other, result = run(main())
    assert result.call.ok
    assert other.requests[0].header("Authorization") is None


def test_bad_arguments_never_reach_the_network(tmp_path: Path) -> None:
    result, server, store = call(tmp_path, answer(200), arguments={"order_number": "not valid"})
    assert result.call.category == "bad_arguments" and server.connections == 0
    assert "order_number" in result.message_for_llm and "Ask the user" in result.message_for_llm
    assert run(store.logs("s1"))[0]["category"] == "bad_arguments"


def test_loopback_is_blocked_unless_allowed(tmp_path: Path) -> None:
    async def main() -> tuple[TriggerResult, StubServer]:
        store = await with_session(tmp_path)
        async with StubServer(answer(200)) as server, Runtime(store) as runtime:
            result = await runtime.call_trigger(
                trigger_for(server.url("/o/$order_number")), "s1", {"order_number": "A-1"}
            )
        return result, server

    result, server = run(main())
    assert result.call.category == "blocked" and "loopback" in (result.call.error or "")
    assert server.connections == 0


def test_names_are_resolved_once_and_the_checked_address_is_dialled(tmp_path: Path) -> None:
    asked: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return {"api.test": ["127.0.0.1"], "evil.test": ["127.0.0.1", "10.0.0.7"]}[host]

    async def main() -> tuple[Any, Any, StubServer]:
        async with (
            StubServer(answer(200, {"ok": True})) as server,
            Runtime(allow_networks=LOOPBACK, resolver=resolver) as runtime,
        ):
            good = await runtime.execute(
                compile_webhook({"url": f"http://api.test:{server.port}/x", "method": "GET"}), {}
            )
            bad = await runtime.execute(
                compile_webhook({"url": f"http://evil.test:{server.port}/x", "method": "GET"}), {}
            )
        return good, bad, server

    good, bad, server = run(main())
    assert good.ok and server.requests[0].header("Host") == f"api.test:{server.port}"
    assert bad.category == "blocked" and "10.0.0.7" not in bad.error and "not public" in bad.error
    assert asked == ["api.test", "evil.test"] and len(server.requests) == 1


def test_proxy_environment_variables_are_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there
    result, server, _ = call(tmp_path, answer(200, {"ok": True}))
    assert result.call.ok and len(server.requests) == 1


def test_an_httpx_transport_can_be_used_for_mocking() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"ok": True})

    async def resolver(host: str, port: int) -> list[str]:
        return ["93.184.215.14"]

    async def main() -> Any:
        plan = compile_webhook({"url": "https://api.example.com/o/$id", "method": "POST", "body": {"a": "$id"}})
        async with Runtime(transport=httpx.MockTransport(handler), resolver=resolver) as runtime:
            return await runtime.execute(plan, {"id": "é 1"})

    result = run(main())
    assert result.ok and result.json() == {"ok": True}
    assert str(sent[0].url) == "https://api.example.com/o/%C3%A9%201"
    assert json.loads(sent[0].content) == {"a": "é 1"}


def test_secrets_never_appear_in_any_output(tmp_path: Path) -> None:
    secret = "tok-UNIQUE-7f3a9"
    forms = [
        secret,
        base64.b64encode(f"user:{secret}".encode()).decode().rstrip("="),
        base64.b64encode(f"{secret}:".encode()).decode().rstrip("="),
    ]

    async def echo(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(response(500, {"you_sent": dict(request.headers), "path": request.target}))

    result, _, store = call(tmp_path, echo, path="/o/$order_number?k=$erp_token", backoff_base=0.001)
    outputs = [
        json.dumps(result.to_dict()),
        result.message_for_llm,
        json.dumps(run(store.logs("s1"))),
        repr(result),
        repr(result.call),
    ]
    for output in outputs:
        for form in forms:
            assert form not in output
    assert "***" in json.dumps(run(store.logs("s1")))


def test_a_secret_cut_by_the_log_limit_is_masked_whole(tmp_path: Path) -> None:
    """Log, LLM message and printed result keep the start of a long body (here all three cut at 65,536
    characters); a secret straddling the cut must be masked whole, not show its start."""
    secret = "tok-UNIQUE-7f3a9"
    padding = "p" * (65536 - 6)
    body = (padding + secret).ljust(65600, "q").encode()

    async def echo(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    result, _, store = call(tmp_path, echo, log_body_chars=65536, llm_response_chars=65536)
    assert result.call.ok
    logged = run(store.logs("s1"))[0]
    assert logged["response_body"] == padding + "***"
    assert logged["response_truncated"] is True
    assert f"\n{padding}***… [truncated, " in result.message_for_llm
    assert result.to_dict()["response"] == padding + "***"
    for output in (json.dumps(logged), result.message_for_llm, json.dumps(result.to_dict())):
        assert "tok-" not in output


def test_concurrent_merges_on_one_session_lose_nothing(tmp_path: Path) -> None:
    async def handler(request: Request, writer: asyncio.StreamWriter) -> None:
        key = request.target.rsplit("/", 1)[1]
        writer.write(response(200, {"session": {"client_data": {key: True}}}))

    async def main() -> dict[str, Any]:
        store = await with_session(tmp_path)
        async with StubServer(handler) as server, Runtime(store, allow_networks=LOOPBACK) as runtime:
            trigger = trigger_for(server.url("/k/$order_number"))
            await asyncio.gather(*(runtime.call_trigger(trigger, "s1", {"order_number": f"K-{i}"}) for i in range(60)))
        data = (await store.get_session("s1")).client_data
        assert len(await store.logs("s1", limit=1000)) == 60
        return data

    data = run(main())
    assert {k for k in data if k.startswith("K-")} == {f"K-{i}" for i in range(60)}


def test_render_errors_become_results_not_exceptions() -> None:
    async def main() -> Any:
        async with Runtime() as runtime:
            return await runtime.execute(compile_webhook({"url": "https://x.example/$id", "method": "GET"}), {})

    result = run(main())
    assert result.category == "render" and "$id is not defined" in result.error


def test_response_integers_beyond_64_bits_stay_exact(tmp_path: Path) -> None:
    big = 123456789012345678901234567890
    result, _, store = call(tmp_path, answer(200, {"id": big, "session": {"client_data": {"big": big}}}))
    assert result.call.json()["id"] == big and result.client_data_merged == {"big": big}
    assert run(store.get_session("s1")).client_data["big"] == big
    assert str(big) in result.message_for_llm


def test_variables_follow_precedence_and_say_where_they_came_from() -> None:
    from webhook_dsl.runtime.calls import build_variables, variable_origins

    trigger = trigger_for("https://erp.example.test/o/$order_number")
    client_data = {"order_number": "from-session", "erp_token": "t", "session.id": "forged", "images": "x"}
    arguments = {"order_number": "A-1", "undeclared": "dropped"}
    variables = build_variables("S1", "C1", "A1", client_data, trigger, arguments, ["https://i/1.png"])
    assert variables == {
        "order_number": "A-1", "erp_token": "t", "images": ["https://i/1.png"],
        "session.id": "S1", "company.id": "C1", "assistant.id": "A1",
    }
    assert variable_origins(variables, trigger, arguments) == {
        "order_number": "argument", "erp_token": "client_data", "images": "image",
        "session.id": "system", "company.id": "system", "assistant.id": "system",
    }
