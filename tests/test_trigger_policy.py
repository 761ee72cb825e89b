"""Per-trigger policy: timeout, retries, retryOn, followRedirects, maxResponseBytes and POST's Idempotency-Key.

Each field is checked when the trigger is compiled, at its FILE:LINE:COLUMN; at call time the process's
settings are the defaults and the ceilings, and the stub's request count says exactly what was retried.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.http_stub import Request, StubServer, answer, response
from webhook_dsl import ConfigError, compile_trigger
from webhook_dsl.errors import Diagnostic
from webhook_dsl.runtime.calls import Runtime, TriggerResult
from webhook_dsl.runtime.trigger import Trigger
from webhook_dsl.storage.sqlite import SQLiteStore

LOOPBACK = ["127.0.0.0/8"]


def config_text(fields: str, method: str = "GET") -> str:
    """A trigger file with ``fields`` (JSON members, one per line) between its description and its webhook."""
    body = ',\n    "body": {"a": 1}' if method in ("POST", "PATCH") else ""
    return (
        "{\n"
        '  "name": "t",\n'
        '  "description": "d",\n'
        f"{fields}\n"
        f'  "webhook": {{"url": "https://api.example.test/x", "method": "{method}"{body}}}\n'
        "}\n"
    )


def problems(fields: str, method: str = "GET") -> list[Diagnostic]:
    with pytest.raises(ConfigError) as raised:
        compile_trigger(config_text(fields, method), source="t.json")
    return list(raised.value.diagnostics)


def where(text: str, needle: str, occurrence: int = 0) -> tuple[int, int]:
    """The 1-based line and column of ``needle`` in ``text``."""
    index = -1
    for _ in range(occurrence + 1):
        index = text.index(needle, index + 1)
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


# -- compile time -------------------------------------------------------------------------------


def test_policy_fields_reach_the_trigger() -> None:
    trigger = compile_trigger(
        config_text(
            '  "timeout": 2.5, "retries": 1, "retryOn": [500, 503], "followRedirects": true,\n'
            '  "maxResponseBytes": 4096, "retryPost": true,',
            "POST",
        )
    )
    assert (trigger.timeout, trigger.retries, trigger.retry_on) == (2.5, 1, (500, 503))
    assert (trigger.follow_redirects, trigger.max_response_bytes, trigger.retry_post) == (True, 4096, True)
    plain = compile_trigger(config_text('  "timeout": 3, "retries": null,'))
    assert (plain.timeout, plain.retries, plain.retry_on, plain.follow_redirects) == (3, None, None, None)


@pytest.mark.parametrize(
    ("member", "needle", "fragment"),
    [
        ('"timeout": -1,', "-1", "timeout must be a positive number of seconds"),
        ('"timeout": 0,', "0", "timeout must be a positive number of seconds"),
        ('"timeout": 1e999,', "1e999", "timeout must be a positive number of seconds"),
        ('"timeout": "5",', '"5"', "'timeout': input should be a valid number"),
        ('"timeout": true,', "true", "'timeout': input should be a valid number"),
        ('"retries": -1,', "-1", "retries must be 0 to 10"),
        ('"retries": 11,', "11", "retries must be 0 to 10"),
        ('"retries": 1.5,', "1.5", "'retries': input should be a valid integer"),
        ('"retries": false,', "false", "'retries': input should be a valid integer"),
        ('"retryOn": [503, 200],', "200", "retryOn: 200 is not an HTTP error status"),
        ('"retryOn": [503, 600],', "600", "retryOn: 600 is not an HTTP error status"),
        ('"retryOn": [503, "429"],', '"429"', "'retryOn.1': input should be a valid integer"),
        ('"retryOn": 503,', "503", "'retryOn': input should be a valid list"),
        ('"followRedirects": "yes",', '"yes"', "'followRedirects': input should be a valid boolean"),
        ('"maxResponseBytes": 0,', "0", "maxResponseBytes must be a positive number of bytes"),
        ('"maxResponseBytes": -5,', "-5", "maxResponseBytes must be a positive number of bytes"),
        ('"maxResponseBytes": 10.5,', "10.5", "'maxResponseBytes': input should be a valid integer"),
    ],
)
def test_each_policy_field_is_checked_at_its_position(member: str, needle: str, fragment: str) -> None:
    fields = f"  {member}"
    found = problems(fields)
    assert len(found) == 1, found
    text = config_text(fields)
    line, column = where(text, needle, occurrence=text.count(needle, 0, text.index(member)))
    assert (found[0].source, found[0].line, found[0].column) == ("t.json", line, column)
    assert fragment in found[0].message
    assert str(found[0]).startswith(f"t.json:{line}:{column}: ")


def test_every_policy_problem_is_reported_in_one_pass() -> None:
    found = problems('  "timeout": -2, "retries": 99, "retryOn": [302, 503, 700], "maxResponseBytes": 0,')
    assert [d.field for d in found] == ["timeout", "retries", "retryOn[0]", "retryOn[2]", "maxResponseBytes"]


@pytest.mark.parametrize(
    ("method", "member", "needle"),
    [
        ("POST", '"retries": 2,', "2"),
        ("POST", '"retryOn": [503],', "[503]"),
        ("PATCH", '"retryOn": [503],', "[503]"),
        ("PATCH", '"retries": 1,', "1"),
    ],
)
def test_retrying_a_method_that_is_not_retried_is_an_error(method: str, member: str, needle: str) -> None:
    found = problems(f"  {member}", method)
    text = config_text(f"  {member}", method)
    assert len(found) == 1 and (found[0].line, found[0].column) == where(
        text, needle, text.count(needle, 0, text.index(member))
    )
    assert "not apply" in found[0].message
    assert ("retryPost" in found[0].message) == (method == "POST")


def test_post_retries_need_retry_post_and_zero_is_always_allowed() -> None:
    compile_trigger(config_text('  "retryPost": true, "retries": 3, "retryOn": [409, 503],', "POST"))
    compile_trigger(config_text('  "retries": 0, "retryOn": [],', "POST"))
    compile_trigger(config_text('  "retries": 0,', "PATCH"))


# -- at call time ----------------------------------------------------------------------------------


def make_trigger(url: str, method: str = "GET", **fields: Any) -> Trigger:
    webhook: dict[str, Any] = {"url": url, "method": method}
    if method == "POST":
        webhook["body"] = {"order": "$order"}
    return compile_trigger(
        {
            "name": "place_order",
            "description": "d",
            "parameters": {"type": "object", "properties": {"order": {"type": "string"}}},
            **fields,
            "webhook": webhook,
        }
    )


def calls(
    tmp_path: Path,
    handler: Any,
    times: int = 1,
    method: str = "GET",
    fields: dict[str, Any] | None = None,
    **settings: Any,
) -> tuple[list[TriggerResult], StubServer, list[dict[str, Any]]]:
    """``times`` calls of one trigger against a stub answering with ``handler``; the results, the stub and the logs."""

    async def main() -> tuple[list[TriggerResult], StubServer, list[dict[str, Any]]]:
        tmp_path.mkdir(parents=True, exist_ok=True)
        store = SQLiteStore(tmp_path / "w.db")
        await store.put_session("s1", company_id="cmp_1", client_data={})
        settings.setdefault("backoff_base", 0.001)
        async with StubServer(handler) as server:
            trigger = make_trigger(server.url("/orders"), method, **(fields or {}))
            async with Runtime(store, allow_networks=LOOPBACK, **settings) as runtime:
                results = [await runtime.call_trigger(trigger, "s1", {"order": f"o{i}"}) for i in range(times)]
        logs = await store.logs("s1")
        await store.close()
        return results, server, logs

    return asyncio.run(main())


def test_a_trigger_timeout_shorter_than_the_deadline_ends_the_call_in_time(tmp_path: Path) -> None:
    async def stall(request: Request, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    [result], _, logs = calls(tmp_path, stall, fields={"timeout": 0.4}, deadline=15)
    assert result.call.category == "timeout" and result.call.elapsed_ms < 2000
    assert "0.4 s deadline" in (result.call.error or "")
    assert result.warnings == [] and logs[0]["category"] == "timeout"


def test_a_timeout_above_the_process_deadline_is_lowered_to_it_with_a_warning(tmp_path: Path) -> None:
    async def stall(request: Request, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    [result], _, logs = calls(tmp_path, stall, fields={"timeout": 60}, deadline=0.4)
    assert result.call.category == "timeout" and result.call.elapsed_ms < 2000
    warning = "the trigger's timeout (60 s) is above this runtime's deadline (0.4 s); 0.4 s applies"
    assert result.warnings == [warning] and logs[0]["warnings"] == [warning]


@pytest.mark.parametrize(
    ("fields", "status", "requests"),
    [
        ({}, 503, 3),  # the process default: 2 retries on 429, 502-504
        ({"retries": 0}, 503, 1),
        ({"retries": 1}, 503, 2),
        ({"retryOn": [500]}, 500, 3),
        ({"retryOn": [500]}, 503, 1),
        ({"retryOn": []}, 503, 1),
        ({"retries": 1, "retryOn": [409, 500]}, 409, 2),
        ({}, 500, 1),
    ],
)
def test_retries_and_retry_on_retry_exactly_what_they_say(
    tmp_path: Path, fields: dict[str, Any], status: int, requests: int
) -> None:
    [result], server, _ = calls(tmp_path, answer(status, {"error": "busy"}), fields=fields)
    assert (result.call.status, result.call.category) == (status, "http_status")
    assert result.call.attempts == requests == len(server.requests)


def test_retries_above_the_process_ceiling_are_lowered_to_it(tmp_path: Path) -> None:
    [result], server, _ = calls(tmp_path, answer(503), fields={"retries": 5}, max_retries=1)
    assert len(server.requests) == 2
    assert result.warnings == ["the trigger's retries (5) is above this runtime's max_retries (1); 1 applies"]


def test_retried_posts_carry_one_idempotency_key_per_call(tmp_path: Path) -> None:
    results, server, logs = calls(
        tmp_path, answer(503), times=2, method="POST", fields={"retryPost": True, "retries": 2}
    )
    assert [r.call.attempts for r in results] == [3, 3] and len(server.requests) == 6
    keys = [request.header("Idempotency-Key") for request in server.requests]
    assert keys[0] == keys[1] == keys[2] and keys[3] == keys[4] == keys[5] and keys[0] != keys[3]
    assert all(str(uuid.UUID(key or "")) == key for key in keys)
    shown = [dict((name.lower(), value) for name, value in log["request_headers"]) for log in logs]
    assert [entry["idempotency-key"] for entry in shown] == [keys[0], keys[3]]  # the log shows what was sent


def test_retry_post_alone_still_retries_with_the_process_default(tmp_path: Path) -> None:
    [result], server, _ = calls(tmp_path, answer(502), method="POST", fields={"retryPost": True})
    assert result.call.attempts == 3 == len(server.requests)
    assert len({request.header("Idempotency-Key") for request in server.requests}) == 1


@pytest.mark.parametrize(
    "fields", [{}, {"retries": 0}, {"retryPost": True, "retries": 0}], ids=["no-retry-post", "zero", "zero-retries"]
)
def test_a_post_that_is_not_retried_carries_no_key(tmp_path: Path, fields: dict[str, Any]) -> None:
    _, server, _ = calls(tmp_path, answer(503), method="POST", fields=fields)
    assert len(server.requests) == 1 and server.requests[0].header("Idempotency-Key") is None


def test_a_webhook_that_sets_its_own_idempotency_key_keeps_it(tmp_path: Path) -> None:
    async def main() -> StubServer:
        store = SQLiteStore(tmp_path / "w.db")
        await store.put_session("s1", company_id="cmp_1", client_data={})
        async with StubServer(answer(503)) as server:
            trigger = compile_trigger(
                {
                    "name": "t",
                    "description": "d",
                    "parameters": {"type": "object", "properties": {"order": {"type": "string"}}},
                    "retryPost": True,
                    "webhook": {
                        "url": server.url("/o"),
                        "method": "POST",
                        "headers": [{"key": "idempotency-key", "value": "order-$order"}],
                        "body": {"a": 1},
                    },
                }
            )
            async with Runtime(store, allow_networks=LOOPBACK, backoff_base=0.001) as runtime:
                await runtime.call_trigger(trigger, "s1", {"order": "A-7"})
        await store.close()
        return server

    server = asyncio.run(main())
    assert len(server.requests) == 3
    for request in server.requests:
        assert [v for k, v in request.headers if k.lower() == "idempotency-key"] == ["order-A-7"]


async def redirect_then_land(request: Request, writer: asyncio.StreamWriter) -> None:
    if request.target == "/orders":
        writer.write(response(302, "", {"Location": "/landed"}))
    else:
        writer.write(response(200, {"landed": True}))


@pytest.mark.parametrize(
    ("process", "trigger", "followed"),
    [(False, True, True), (True, False, False), (True, None, True), (False, None, False)],
)
def test_follow_redirects_per_trigger(tmp_path: Path, process: bool, trigger: bool | None, followed: bool) -> None:
    fields = {} if trigger is None else {"followRedirects": trigger}
    [result], server, _ = calls(tmp_path, redirect_then_land, fields=fields, follow_redirects=process)
    assert [r.target for r in server.requests] == (["/orders", "/landed"] if followed else ["/orders"])
    assert result.call.status == (200 if followed else 302)


def test_max_response_bytes_cuts_at_the_trigger_cap(tmp_path: Path) -> None:
    [small], _, _ = calls(tmp_path / "a", answer(200, b"x" * 2000), fields={"maxResponseBytes": 1000})
    assert small.call.category == "too_large" and "1000 bytes" in (small.call.error or "")
    [fits], _, _ = calls(tmp_path / "b", answer(200, b"x" * 900), fields={"maxResponseBytes": 1000})
    assert fits.call.ok and len(fits.call.body) == 900


def test_max_response_bytes_above_the_process_cap_is_lowered_to_it(tmp_path: Path) -> None:
    [result], _, _ = calls(
        tmp_path, answer(200, b"x" * 1500), fields={"maxResponseBytes": 10_000}, max_response_bytes=1000
    )
    assert result.call.category == "too_large"
    assert result.warnings == [
        "the trigger's maxResponseBytes (10000) is above this runtime's max_response_bytes (1000); 1000 applies"
    ]


def test_a_bare_execute_with_retry_post_carries_a_key_too(tmp_path: Path) -> None:
    from webhook_dsl import compile_webhook

    async def main() -> StubServer:
        async with StubServer(answer(503)) as server:
            plan = compile_webhook({"url": server.url("/x"), "method": "POST", "body": {"a": 1}})
            async with Runtime(allow_networks=LOOPBACK, backoff_base=0.001) as runtime:
                await runtime.execute(plan, {}, retry_post=True)
        return server

    server = asyncio.run(main())
    assert len(server.requests) == 3 and len({r.header("Idempotency-Key") for r in server.requests}) == 1
    assert server.requests[0].header("Idempotency-Key") is not None
    assert json.loads(server.requests[0].body) == {"a": 1}
