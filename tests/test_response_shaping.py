"""Response shaping: ``responseSelect`` chooses what the LLM reads, ``clientDataMapping`` fills the session.

Expressions are JMESPath, checked when the trigger is compiled (at the column inside the string where the
string is written as JSON writes it); at call time they never raise, and the mapped keys obey the rules of
the ``session.client_data`` merge.
"""

from __future__ import annotations

import asyncio
import json
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
SECRET = "tok-UNIQUE-5c81e2"


def problems(text: str) -> list[Diagnostic]:
    with pytest.raises(ConfigError) as raised:
        compile_trigger(text, source="t.json")
    return list(raised.value.diagnostics)


def config_text(fields: str) -> str:
    return (
        "{\n"
        '  "name": "t",\n'
        '  "description": "d",\n'
        '  "clientData": ["erp_token", "api_host"],\n'
        '  "secrets": ["erp_token"],\n'
        f"{fields}\n"
        '  "webhook": {"url": "https://$api_host/x", "method": "GET",\n'
        '              "headers": [{"key": "Authorization", "value": "Bearer $erp_token"}]}\n'
        "}\n"
    )


def where(text: str, needle: str) -> tuple[int, int]:
    index = text.index(needle)
    return text.count("\n", 0, index) + 1, index - (text.rfind("\n", 0, index) + 1) + 1


# -- compile time -------------------------------------------------------------------------------


def test_shaping_fields_reach_the_trigger() -> None:
    trigger = compile_trigger(
        config_text('  "responseSelect": "order.{status: status, eta: eta}",\n  "clientDataMapping": {"tier": "tier"},')
    )
    assert trigger.response_select == "order.{status: status, eta: eta}"
    assert dict(trigger.client_data_mapping) == {"tier": "tier"}


@pytest.mark.parametrize(
    ("member", "needle", "fragment"),
    [
        ('"responseSelect": "order status",', "status", "Unexpected token: status"),
        ('"responseSelect": "items[?price > `10`",', '",\n  "webhook', "ends too early"),  # at its end
        ('"responseSelect": "a.\\"b",', '\\"b', 'Unclosed " delimiter'),
        ('"responseSelect": "nosuch(order)",', "nosuch(", "unknown function nosuch()"),
        ('"responseSelect": "length(a, b)",', "length(", "length() takes 1 argument(s), not 2"),
        ('"responseSelect": "merge()",', "merge(", "merge() takes at least 1 argument(s), not 0"),
        ('"responseSelect": "  ",', '"  "', "the JMESPath expression is empty"),
        ('"responseSelect": 5,', "5", "'responseSelect': input should be a valid string"),
        ('"clientDataMapping": {"tier": "account..tier"},', ".tier", "clientDataMapping.tier: invalid JMESPath"),
        ('"clientDataMapping": {"tier": "to_string(@, @)"},', "to_string(", "to_string() takes 1 argument(s)"),
        ('"clientDataMapping": {"tier": 7},', "7", "'clientDataMapping.tier': input should be a valid string"),
        ('"clientDataMapping": ["tier"],', '["tier"]', "'clientDataMapping': input should be a valid dictionary"),
        ('"clientDataMapping": {"session.id": "id"},', '"session.id"', "'session.id' is a system variable"),
        ('"clientDataMapping": {"": "id"},', '""', "a key must not be empty"),
    ],
)
def test_each_expression_is_checked_at_its_position(member: str, needle: str, fragment: str) -> None:
    text = config_text(f"  {member}")
    found = problems(text)
    assert len(found) == 1, found
    line, column = where(text, needle)
    assert (found[0].source, found[0].line, found[0].column) == ("t.json", line, column)
    assert fragment in found[0].message
    assert str(found[0]).startswith(f"t.json:{line}:{column}: ")


def test_a_syntax_error_in_a_mapping_points_inside_the_generated_text() -> None:
    """A config given as a mapping is written out as JSON (quotes escaped): the column still lands on the token."""
    config = {
        "name": "t",
        "description": "d",
        "responseSelect": 'a."b c" d',
        "webhook": {"url": "https://api.example.test/x", "method": "GET"},
    }
    [found] = problems_of(config)
    assert found.source_line is not None
    assert found.source_line[found.column - 1 :].startswith("d")
    assert "Unexpected token: d" in found.message


def problems_of(config: dict[str, Any]) -> list[Diagnostic]:
    with pytest.raises(ConfigError) as raised:
        compile_trigger(config)
    return list(raised.value.diagnostics)


def test_mapping_a_key_the_trigger_protects_is_refused_unless_allowed() -> None:
    text = config_text('  "clientDataMapping": {"erp_token": "token", "api_host": "host", "tier": "tier"},')
    found = problems(text)
    assert [(d.line, d.column) for d in found] == [where(text, '"erp_token": "token"'), where(text, '"api_host": "h')]
    assert all("list it under clientDataWrites" in d.message for d in found)
    allowed = config_text(
        '  "clientDataMapping": {"erp_token": "token", "tier": "tier"},\n  "clientDataWrites": ["erp_token"],'
    )
    assert compile_trigger(allowed).client_data_mapping == {"erp_token": "token", "tier": "tier"}


def test_all_problems_come_together() -> None:
    text = config_text('  "timeout": -1,\n  "responseSelect": "a[",\n  "clientDataMapping": {"x": "b |"},')
    assert [d.field for d in problems(text)] == ["timeout", "responseSelect", "clientDataMapping.x"]


# -- at call time ----------------------------------------------------------------------------------


def make_trigger(url: str, **fields: Any) -> Trigger:
    return compile_trigger(
        {
            "name": "check_order",
            "description": "d",
            "parameters": {"type": "object", "properties": {"order": {"type": "string"}}},
            "clientData": ["erp_token"],
            "secrets": ["erp_token"],
            **fields,
            "webhook": {
                "url": url,
                "method": "GET",
                "headers": [{"key": "Authorization", "value": "Bearer $erp_token"}],
                "responseDirective": "Tell the user the status.",
            },
        }
    )


def call(
    tmp_path: Path,
    handler: Any,
    fields: dict[str, Any],
    protected_keys: tuple[str, ...] = (),
    **settings: Any,
) -> tuple[TriggerResult, SQLiteStore, dict[str, Any], list[dict[str, Any]]]:
    """One call; the result, the store, the session's client_data afterwards and the log."""

    async def main() -> tuple[TriggerResult, SQLiteStore, dict[str, Any], list[dict[str, Any]]]:
        tmp_path.mkdir(parents=True, exist_ok=True)
        store = SQLiteStore(tmp_path / "w.db")
        await store.put_session("s1", company_id="cmp_1", client_data={"erp_token": SECRET, "tier": "free"})
        async with StubServer(handler) as server:
            trigger = make_trigger(server.url("/orders/$order"), **fields)
            async with Runtime(store, allow_networks=LOOPBACK, **settings) as runtime:
                result = await runtime.call_trigger(trigger, "s1", {"order": "A-1"}, protected_keys=protected_keys)
        client_data = (await store.get_session("s1")).client_data
        logs = await store.logs("s1")
        await store.close()
        return result, store, client_data, logs

    return asyncio.run(main())


ORDER = {"order": {"id": "A-1", "status": "delivered", "internal_notes": "call the courier"}, "tier": "gold"}


def shown(result: TriggerResult) -> str:
    return result.message_for_llm.split("\nResponse:\n", 1)[1].rsplit("\nInstruction: ", 1)[0]


def test_response_select_changes_what_the_llm_reads(tmp_path: Path) -> None:
    result, _, _, logs = call(tmp_path, answer(200, ORDER), {"responseSelect": "order.{id: id, status: status}"})
    assert result.call.ok
    assert json.loads(shown(result)) == {"id": "A-1", "status": "delivered"}
    assert "internal_notes" not in result.message_for_llm
    assert result.message_for_llm.startswith('The tool "check_order" succeeded (HTTP 200 OK).')
    assert "Instruction: Tell the user the status." in result.message_for_llm
    assert result.to_dict()["response"] == ORDER  # the platform, and the log, still get the whole answer
    assert json.loads(logs[0]["response_body"]) == ORDER


def test_a_selected_string_is_shown_as_json(tmp_path: Path) -> None:
    result, *_ = call(tmp_path, answer(200, ORDER), {"responseSelect": "order.status"})
    assert shown(result) == '"delivered"'


def test_a_selection_of_nothing_says_so(tmp_path: Path) -> None:
    result, *_ = call(tmp_path, answer(200, ORDER), {"responseSelect": "order.eta"})
    assert result.call.ok
    assert shown(result) == "(the response holds nothing where this tool looks: the selection is null)"


def test_a_response_that_is_not_json_is_not_shown(tmp_path: Path) -> None:
    body = "status: delivered; internal: call the courier"
    result, *_ = call(tmp_path, answer(200, body, {"Content-Type": "text/plain"}), {"responseSelect": "status"})
    assert result.call.ok and "courier" not in result.message_for_llm
    assert "the response is not JSON" in shown(result)


def test_a_type_error_at_call_time_is_worded_not_raised(tmp_path: Path) -> None:
    result, *_ = call(tmp_path, answer(200, {"count": 5}), {"responseSelect": "length(count)"})
    assert result.call.ok
    assert "length() was given number" in shown(result) and "it is not shown" in shown(result)


def test_an_error_status_shows_its_whole_body(tmp_path: Path) -> None:
    result, *_ = call(tmp_path, answer(404, {"error": "no such order"}), {"responseSelect": "order.status"})
    assert result.call.category == "http_status"
    assert shown(result) == '{"error":"no such order"}'


def test_masking_applies_to_the_selection(tmp_path: Path) -> None:
    async def echo(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(response(200, {"debug": {"auth": request.header("Authorization")}, "status": "ok"}))

    result, *_ = call(tmp_path, echo, {"responseSelect": "debug"})
    assert SECRET not in result.message_for_llm
    assert json.loads(shown(result)) == {"auth": "Bearer ***"}


def test_a_long_selection_is_cut_for_the_llm(tmp_path: Path) -> None:
    result, *_ = call(
        tmp_path, answer(200, {"items": ["x" * 100] * 50}), {"responseSelect": "items"}, llm_response_chars=300
    )
    assert "… [truncated, " in shown(result) and len(shown(result)) < 400


def test_client_data_mapping_merges_into_the_session(tmp_path: Path) -> None:
    result, _, client_data, logs = call(
        tmp_path,
        answer(200, ORDER),
        {"clientDataMapping": {"last_order": "order.id", "tier": "tier", "status_pair": "order.[id, status]"}},
    )
    assert result.client_data_merged == {"last_order": "A-1", "tier": "gold", "status_pair": ["A-1", "delivered"]}
    assert client_data["last_order"] == "A-1" and client_data["tier"] == "gold"
    assert logs[0]["client_data_merged"] == result.client_data_merged and result.warnings == []


def test_the_mapping_wins_over_session_client_data_and_says_so(tmp_path: Path) -> None:
    body = {"tier": "gold", "session": {"client_data": {"tier": "silver", "other": 1}}}
    result, _, client_data, _ = call(tmp_path, answer(200, body), {"clientDataMapping": {"tier": "tier"}})
    assert result.client_data_merged == {"tier": "gold", "other": 1} and client_data["tier"] == "gold"
    assert result.warnings == [
        "clientDataMapping and the response's session.client_data both set 'tier'; the mapping's value is kept"
    ]


def test_mapped_keys_respect_protected_keys(tmp_path: Path) -> None:
    """A key another trigger of the company protects (the service passes them) is refused like in the merge."""
    result, _, client_data, _ = call(
        tmp_path,
        answer(200, ORDER),
        {"clientDataMapping": {"billing_host": "order.id", "tier": "tier"}},
        protected_keys=("billing_host",),
    )
    assert result.client_data_merged == {"tier": "gold"} and "billing_host" not in client_data
    assert len(result.warnings) == 1 and "clientDataMapping tried to set 'billing_host'" in result.warnings[0]


def test_a_mapped_secret_allowed_by_client_data_writes_is_masked_everywhere(tmp_path: Path) -> None:
    fresh = "tok-FRESH-9d0a77e1"
    result, _, client_data, logs = call(
        tmp_path,
        answer(200, {"access_token": fresh, "echo": fresh}),
        {"clientDataMapping": {"erp_token": "access_token"}, "clientDataWrites": ["erp_token"]},
    )
    assert client_data["erp_token"] == fresh and result.client_data_merged == {"erp_token": fresh}
    assert logs[0]["client_data_merged"] == {"erp_token": "***"}
    for output in (result.message_for_llm, json.dumps(logs), json.dumps(result.to_dict())):
        assert fresh not in output


def test_mapping_nothing_or_a_non_json_answer_sets_nothing(tmp_path: Path) -> None:
    result, _, client_data, _ = call(tmp_path / "a", answer(200, ORDER), {"clientDataMapping": {"eta": "order.eta"}})
    assert result.client_data_merged == {} and "eta" not in client_data
    assert result.warnings == ["clientDataMapping 'eta': the response holds nothing there (null); not set"]
    text, _, _, _ = call(
        tmp_path / "b", answer(200, "ok", {"Content-Type": "text/plain"}), {"clientDataMapping": {"a": "a"}}
    )
    assert text.client_data_merged == {} and text.warnings == [
        "clientDataMapping: the response is not JSON; nothing was mapped"
    ]


def test_a_mapped_value_the_store_cannot_hold_is_refused(tmp_path: Path) -> None:
    result, _, client_data, _ = call(
        tmp_path, answer(200, {"a": [1e308, 1e308]}), {"clientDataMapping": {"total": "sum(a)", "n": "length(a)"}}
    )
    assert result.client_data_merged == {"n": 2} and "total" not in client_data
    assert len(result.warnings) == 1 and result.warnings[0].startswith("clientDataMapping 'total': ")


def test_an_error_status_is_mapped_only_with_merge_on_error(tmp_path: Path) -> None:
    body = {"error": "expired", "login_state": "expired"}
    fields: dict[str, Any] = {"clientDataMapping": {"login_state": "login_state"}}
    plain, *_ = call(tmp_path / "a", answer(401, body), fields)
    assert plain.client_data_merged == {}
    merged, *_ = call(tmp_path / "b", answer(401, body), {**fields, "mergeOnError": True})
    assert merged.client_data_merged == {"login_state": "expired"}
