"""What flows back to the assistant: every HTTP answer with its status and body, declared secrets masked in
every output of the call, and nothing else altered."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.http_stub import Request, StubServer, response
from tests.test_masking import _recoverable
from webhook_dsl.runtime.calls import CallResult, Runtime, TriggerResult, message_for_llm
from webhook_dsl.runtime.masking import MASK, Masker
from webhook_dsl.runtime.trigger import Trigger, compile_trigger
from webhook_dsl.storage.sqlite import SQLiteStore

LOOPBACK = ["127.0.0.0/8"]
SECRET = "tok-UNIQUE-7f3a9/x"
MAX_EXAMPLES = int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "200"))


def make_trigger(url: str, **extra: Any) -> Trigger:
    webhook = {
        "url": url,
        "method": "GET",
        "headers": [{"key": "Authorization", "value": "Bearer $erp_token"}],
        "responseDirective": "If the status is 'error', ask the user to try again.",
        **extra.pop("webhook", {}),
    }
    return compile_trigger({
        "name": "lookup",
        "description": "Look something up",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        "clientData": ["erp_token", "api_keys", "pin", "max_tokens", "access_token", "search_keyword"],
        "secrets": ["erp_token"],
        **extra,
        "webhook": webhook,
    })


def fire(
    tmp_path: Path,
    body: bytes,
    *,
    status: int = 200,
    content_type: str = "application/json",
    path: str = "/q/$q",
    client_data: dict[str, Any] | None = None,
    arguments: dict[str, Any] | None = None,
    dry_run: bool = False,
    company_secrets: dict[str, str] | None = None,
    **extra: Any,
) -> tuple[TriggerResult, list[Request], list[dict[str, Any]]]:
    """One trigger call against a loopback server that answers ``body``; the result, what the server got,
    and the session's log."""

    async def handler(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(response(status, body, {"Content-Type": content_type}))

    async def main() -> tuple[TriggerResult, list[Request], list[dict[str, Any]]]:
        store = SQLiteStore(tmp_path / "w.db")
        await store.put_session("s1", company_id="cmp_1", client_data=client_data or {"erp_token": SECRET})
        for name, value in (company_secrets or {}).items():
            await store.set_secret("cmp_1", name, value)
        try:
            async with StubServer(handler) as server, Runtime(store, allow_networks=LOOPBACK) as runtime:
                trigger = make_trigger(server.url(path), **extra)
                result = await runtime.call_trigger(trigger, "s1", arguments or {"q": "A-1"}, dry_run=dry_run)
            return result, server.requests, await store.logs("s1")
        finally:
            await store.close()

    return asyncio.run(main())


def outputs(result: TriggerResult, logs: list[dict[str, Any]]) -> list[str]:
    """Everything of a call a person, a log or the LLM can read."""
    return [result.message_for_llm, json.dumps(result.to_dict()), json.dumps(logs), repr(result), repr(result.call)]


def test_an_error_answer_reaches_the_llm_with_status_body_and_directive(tmp_path: Path) -> None:
    body = json.dumps({"status": "error", "message": "order A-9 not found"}).encode()
    result, _, logs = fire(tmp_path, body, status=404)
    message = result.message_for_llm
    assert message.startswith('The tool "lookup" answered with an error status (HTTP 404 Not Found)')
    assert '{"status":"error","message":"order A-9 not found"}' in message
    assert "Instruction: If the status is 'error', ask the user to try again." in message
    assert (result.call.ok, result.call.category, logs[0]["status"]) == (False, "http_status", 404)


def test_an_error_answer_without_directive_or_body_is_still_worded_as_an_error(tmp_path: Path) -> None:
    result, _, _ = fire(tmp_path, b"", status=503, interpretResponse=False)
    message = result.message_for_llm
    assert "error status (HTTP 503 Service Unavailable)" in message
    assert "Response:\n(empty)" in message
    assert "Instruction" not in message and "what went wrong; do not invent a result" in message


def test_a_success_says_so(tmp_path: Path) -> None:
    result, _, _ = fire(tmp_path, b'{"status":"success"}')
    assert result.message_for_llm.startswith('The tool "lookup" succeeded (HTTP 200 OK).\nResponse:\n')


def test_a_call_with_no_answer_keeps_its_category(tmp_path: Path) -> None:
    async def main() -> TriggerResult:
        store = SQLiteStore(tmp_path / "w.db")
        await store.put_session("s1", company_id="cmp_1", client_data={"erp_token": SECRET})
        async with Runtime(store, allow_networks=LOOPBACK, connect_timeout=1, max_retries=0) as runtime:
            return await runtime.call_trigger(make_trigger("http://127.0.0.1:9/x"), "s1", {"q": "a"})

    result = asyncio.run(main())
    assert result.message_for_llm.startswith('The tool "lookup" failed (connection: ')
    assert "do not invent a result" in result.message_for_llm


def test_client_data_merges_on_2xx_only_unless_the_trigger_says_otherwise(tmp_path: Path) -> None:
    body = json.dumps({"error": "expired", "session": {"client_data": {"state": "expired"}}}).encode()
    (tmp_path / "default").mkdir()
    result, _, logs = fire(tmp_path / "default", body, status=409)
    assert result.client_data_merged == {} and logs[0]["client_data_merged"] == {}
    (tmp_path / "opted").mkdir()
    result, _, logs = fire(tmp_path / "opted", body, status=409, mergeOnError=True)
    assert result.client_data_merged == {"state": "expired"} == logs[0]["client_data_merged"]


def test_values_that_are_not_declared_secrets_are_never_altered(tmp_path: Path) -> None:
    """Names decide nothing: `search_keyword` and `max_tokens` are data the LLM must read as they are."""
    answer = {"title": "Red running shoes", "price": 1500, "tokens": "1500", "key": "shoes"}
    result, _, logs = fire(
        tmp_path,
        json.dumps(answer).encode(),
        client_data={"erp_token": SECRET, "max_tokens": 1500, "search_keyword": "shoes"},
        path="/q/$search_keyword/$max_tokens",
    )
    assert '{"title":"Red running shoes","price":1500,"tokens":"1500","key":"shoes"}' in result.message_for_llm
    assert result.to_dict()["response"] == answer
    assert json.loads(logs[0]["response_body"]) == answer
    assert logs[0]["url"].endswith("/q/shoes/1500")
    assert logs[0]["variables"] == {"erp_token": MASK, "search_keyword": "shoes", "max_tokens": 1500}


def test_a_secret_echoed_in_any_json_escape_is_masked_in_every_output(tmp_path: Path) -> None:
    """PHP writes '/' as '\\/'; other encoders write \\uXXXX; the stored raw text and every view are masked."""
    escaped = json.dumps(SECRET)[1:-1].replace("/", "\\/")
    unicode_escaped = "".join(f"\\u{ord(c):04X}" for c in SECRET)
    body = f'{{"php":"{escaped}","u":"{unicode_escaped}"}}'.encode()
    result, _, logs = fire(tmp_path, body, status=401)
    for output in outputs(result, logs):
        assert SECRET not in output and escaped not in output and unicode_escaped not in output
    assert logs[0]["response_body"] == f'{{"php":"{MASK}","u":"{MASK}"}}'


def test_a_secret_that_arrives_in_the_response_is_masked_in_that_same_call(tmp_path: Path) -> None:
    fresh = "fresh-access-token-0001"
    body = json.dumps({"ok": True, "token": fresh, "session": {"client_data": {"access_token": fresh}}}).encode()
    result, _, logs = fire(tmp_path, body, secrets=["access_token"], clientDataWrites=["access_token"])
    assert result.client_data_merged == {"access_token": fresh}
    for output in outputs(result, logs):
        assert fresh not in output
    assert logs[0]["client_data_merged"] == {"access_token": MASK}


def test_every_element_of_a_secret_list_is_masked_in_dry_run_result_and_log(tmp_path: Path) -> None:
    keys = ["first-key-000001", "second-key-000002"]
    result, requests, logs = fire(
        tmp_path,
        b"{}",
        client_data={"erp_token": SECRET, "api_keys": keys},
        secrets=["erp_token", "api_keys"],
        path="/k/$api_keys[0]",
    )
    assert requests[0].target == f"/k/{keys[0]}" and requests[0].header("Authorization") == f"Bearer {SECRET}"
    for output in outputs(result, logs):
        assert keys[0] not in output and SECRET not in output
    assert logs[0]["url"].endswith(f"/k/{MASK}")
    (tmp_path / "dry").mkdir()
    preview, _, _ = fire(
        tmp_path / "dry",
        b"{}",
        client_data={"erp_token": SECRET, "api_keys": keys},
        secrets=["erp_token", "api_keys"],
        path="/k/$api_keys[0]",
        dry_run=True,
    )
    shown = json.dumps(preview.to_dict())
    assert preview.dry_run is not None and preview.dry_run["request"]["url"].endswith(f"/k/{MASK}")
    assert keys[0] not in shown and SECRET not in shown


def test_a_short_secret_is_masked_where_it_was_put(tmp_path: Path) -> None:
    """A 4-digit PIN is too short to search for inside other text, but the log shows the request masked where
    the PIN was put, and an echo of it standing alone is masked too."""
    result, requests, logs = fire(
        tmp_path,
        b'{"price":12345,"pin":"1234","ref":"x1234"}',
        client_data={"erp_token": SECRET, "pin": "1234"},
        secrets=["erp_token", "pin"],
        path="/u/x$pin/p",
    )
    assert requests[0].target == "/u/x1234/p"
    assert logs[0]["url"].endswith(f"/u/x{MASK}/p")
    assert json.loads(logs[0]["response_body"]) == {"price": 12345, "pin": MASK, "ref": "x1234"}
    assert result.to_dict()["url"].endswith(f"/u/x{MASK}/p")
    assert "1234" not in json.dumps(logs[0]["variables"])


def test_basic_credentials_are_masked_for_any_user_name(tmp_path: Path) -> None:
    for user in ("user", "root", "a"):
        echoed = base64.b64encode(f"{user}:{SECRET}".encode()).decode()
        (tmp_path / user).mkdir()
        result, _, logs = fire(tmp_path / user, json.dumps({"auth": f"Basic {echoed}"}).encode())
        for output in outputs(result, logs):
            assert echoed not in output and echoed.rstrip("=")[:-4] not in output


def test_a_company_secret_reaches_the_api_and_no_output(tmp_path: Path) -> None:
    company_secret = "company-erp-secret-01"
    result, requests, logs = fire(
        tmp_path,
        json.dumps({"echo": company_secret}).encode(),
        company_secrets={"erp": company_secret},
        webhook={"headers": [{"key": "Authorization", "value": "Bearer $secrets.erp"}]},
        client_data={"secrets.erp": "client-data-cannot-define-this"},
    )
    assert requests[0].header("Authorization") == f"Bearer {company_secret}"
    for output in outputs(result, logs):
        assert company_secret not in output
    assert logs[0]["variables"] == {"secrets.erp": MASK, "q": "A-1"}


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=10)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), _TEXT | st.integers(), max_size=4),
    st.lists(st.text(min_size=8, max_size=16), max_size=2),
    _JSON,
)
def test_the_message_carries_the_response_exactly(
    variables: dict[str, Any], secrets: list[str], answer: Any
) -> None:
    """For random responses that echo random non-secret variables, with declared secrets that do not occur
    in them, the LLM reads the response exactly (checked by the json module, not by our own code)."""
    document = {"answer": answer, "echo": list(variables.values())}
    body = json.dumps(document).encode()
    assume(not any(_recoverable(body.decode(), s) or _recoverable(json.dumps(document, ensure_ascii=False), s)
                   for s in secrets))
    declared = {f"secret_{i}": s for i, s in enumerate(secrets)}
    trigger = make_trigger("http://127.0.0.1:1/x", secrets=list(declared))
    call = CallResult(True, "GET", "http://127.0.0.1:1/x", status=200, body=body, content_type="application/json")
    masker = Masker.for_call({**variables, **declared}, trigger.secret_names)
    message = message_for_llm(trigger, call, masker, 10**6)
    shown = message.split("\nResponse:\n", 1)[1].rsplit("\nInstruction: ", 1)[0]
    assert json.loads(shown) == document


def test_reprs_show_no_secret_values(tmp_path: Path) -> None:
    """Reprs end up in tracebacks and logs: a session, a rendered request and every result show shapes only."""
    from webhook_dsl.language.plan import RenderedRequest
    from webhook_dsl.storage.base import Session

    session = Session("s1", "cmp_1", "asst", {"erp_token": SECRET})
    request = RenderedRequest("POST", f"https://x.example/?k={SECRET}", [("Authorization", SECRET)], SECRET.encode())
    result, _, _ = fire(tmp_path, json.dumps({"echo": SECRET}).encode())
    for shown in (repr(session), repr(request), repr(result), repr(result.call), str(result.call)):
        assert SECRET not in shown and json.dumps(SECRET)[1:-1] not in shown
    assert "Authorization" in repr(request) and "cmp_1" in repr(session)


def test_a_merge_past_the_session_limit_is_refused_in_the_result_too(tmp_path: Path) -> None:
    """The runtime reports what the store refused: `webhook-dsl call` and the Python API show it, not only
    the service."""
    big = {"session": {"client_data": {"note": "x" * 400}}}

    async def handler(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(response(200, big))

    async def main() -> TriggerResult:
        store = SQLiteStore(tmp_path / "w.db", max_client_data_bytes=300)
        await store.put_session("s1", company_id="cmp_1", client_data={"erp_token": SECRET})
        async with StubServer(handler) as server, Runtime(store, allow_networks=LOOPBACK) as runtime:
            result = await runtime.call_trigger(make_trigger(server.url("/q/$q")), "s1", {"q": "a"})
        assert "note" not in (await store.get_session("s1")).client_data
        await store.close()
        return result

    result = asyncio.run(main())
    assert result.call.ok and result.client_data_merged == {}
    assert any("300" in warning for warning in result.warnings)
