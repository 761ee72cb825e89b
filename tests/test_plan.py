"""Render plans: immutability, introspection, serialization and its refusals."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import webhook_dsl
from webhook_dsl import PlanFormatError, RenderError, compile_webhook, dump_plans, load_plans
from webhook_dsl.language.codegen import generate_source

ROOT = Path(__file__).resolve().parent.parent
TICKET = (ROOT / "examples" / "webhooks" / "create_ticket.json").read_text(encoding="utf-8")
VARIABLES = json.loads((ROOT / "examples" / "variables.json").read_text(encoding="utf-8"))


def test_plan_is_immutable_and_reusable() -> None:
    plan = compile_webhook(TICKET)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.method = "GET"  # type: ignore[misc]
    first = plan.render(VARIABLES)
    assert plan.render(VARIABLES) == first
    other = dict(VARIABLES, issue_title="other")
    assert json.loads(plan.render(other).body or b"")["title"] == "other"


def test_candidates_are_sorted_longest_first() -> None:
    plan = compile_webhook({"url": "https://x.example/$session.id_x", "method": "GET"})
    (slot,) = plan.slots()
    assert slot.candidates[0] == "session.id_x"
    assert list(slot.candidates) == sorted(slot.candidates, key=len, reverse=True)
    assert "session." not in slot.candidates  # a name never ends with a dot
    assert slot.candidates[-1] == "s"


def test_references_lists_each_reference_once() -> None:
    plan = compile_webhook(TICKET)
    assert plan.references == (
        "$helpdesk_api_key",
        "$session.id",
        "$issue_title",
        "$issue_description",
        "$priority",
        "$customer_name",
        "$customer_email",
        "$company.id",
    )


def test_content_type_is_added_only_when_missing() -> None:
    plan = compile_webhook({"url": "https://x.example/", "method": "POST", "body": {}})
    assert plan.render({}).headers == [("Content-Type", "application/json")]
    own = compile_webhook(
        {
            "url": "https://x.example/",
            "method": "POST",
            "body": {},
            "headers": [{"key": "content-type", "value": "application/vnd.api+json"}],
        }
    )
    assert own.render({}).headers == [("content-type", "application/vnd.api+json")]


def test_dump_is_deterministic_and_round_trips() -> None:
    plans = [compile_webhook(TICKET, source="t.json"), compile_webhook(TICKET, source="t.json")]
    text = dump_plans(plans[:1])
    assert text == dump_plans(plans[1:])
    loaded = load_plans(text)[0]
    assert loaded == plans[0]
    assert loaded.render(VARIABLES) == plans[0].render(VARIABLES)
    assert webhook_dsl.WebhookPlan.from_json(plans[0].to_json()) == plans[0]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(format="something-else"), "not a compiled plan"),
        (lambda d: d.update(version=99), "version"),
        (lambda d: d.update(grammar="0" * 16), "another version of the grammar"),
        (lambda d: d["plans"][0].pop("url"), "damaged"),
        (lambda d: d["plans"][0]["url"].append({"slot": ["a"], "context": "nope"}), "damaged"),
    ],
)
def test_foreign_or_stale_plans_are_refused(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    document = json.loads(dump_plans([compile_webhook(TICKET)]))
    mutate(document)
    with pytest.raises(PlanFormatError, match=message):
        load_plans(json.dumps(document))


def test_not_json_is_refused() -> None:
    with pytest.raises(PlanFormatError, match="not JSON"):
        load_plans("{nope")


def test_generated_source_is_deterministic_and_holds_no_values() -> None:
    plan = compile_webhook(TICKET)
    source = generate_source(plan)
    assert source == generate_source(compile_webhook(TICKET))
    assert "hd-secret-key" not in source


def test_hostile_names_and_literals_cannot_become_code() -> None:
    config = {
        "url": "https://x.example/'+__import__('os').getcwd()+'",
        "method": "POST",
        "headers": [{"key": "X-A", "value": "\"\"\"'''\\n $a"}],
        "body": {"k\"'": "'''$a\"\"\""},
    }
    plan = compile_webhook(config)
    request = plan.render({"a": "v"})
    assert request.url == "https://x.example/'+__import__('os').getcwd()+'"
    assert json.loads(request.body or b"") == {"k\"'": "'''v\"\"\""}


def test_fast_path_falls_back_for_shorter_names_and_errors() -> None:
    plan = compile_webhook({"url": "https://x.example/$ab", "method": "GET"})
    assert plan.render({"a": "1"}).url == "https://x.example/1b"
    with pytest.raises(RenderError):
        plan.render({})


def test_variables_must_be_a_mapping() -> None:
    plan = compile_webhook({"url": "https://x.example/$a", "method": "GET"})
    with pytest.raises(TypeError, match="mapping"):
        plan.render([("a", "1")])  # type: ignore[arg-type]


def test_render_errors_never_quote_values() -> None:
    plan = compile_webhook(
        {"url": "https://$h.example/", "method": "GET", "headers": [{"key": "Authorization", "value": "Bearer $token"}]}
    )
    secret = "s3cr3t\r\nvalue"
    with pytest.raises(RenderError) as caught:
        plan.render({"token": secret, "h": "evil/" + secret})
    text = str(caught.value) + repr(caught.value) + repr(caught.value.diagnostics)
    assert "s3cr3t" not in text
    assert len(caught.value.diagnostics) == 2


def test_rendered_size_limits() -> None:
    from webhook_dsl.language.plan import MAX_BODY_BYTES, MAX_URL_LENGTH

    plan = compile_webhook(
        {
            "url": "https://x.example/$p",
            "method": "POST",
            "body": {"a": "$b"},
            "headers": [{"key": "X-H", "value": "$h"}],
        }
    )
    assert plan.render({"p": "a" * 100, "b": "b" * 1000, "h": "h"}).url.endswith("a" * 100)
    with pytest.raises(RenderError, match="rendered URL is"):
        plan.render({"p": "a" * MAX_URL_LENGTH, "b": "", "h": ""})
    with pytest.raises(RenderError, match="rendered body is"):
        plan.render({"p": "", "b": "b" * MAX_BODY_BYTES, "h": ""})
    with pytest.raises(RenderError, match="rendered headers are"):
        plan.render({"p": "", "b": "", "h": "h" * 40_000})


def test_lenient_references_are_encoded_like_text_in_the_url() -> None:
    """Regression: lenient mode used to leave `${zz}` raw in the URL, making it invalid."""
    plan = compile_webhook({"url": "https://x.example/a/${zz}/$y[0]?q=$zz", "method": "GET"})
    assert plan.render({}, lenient=True).url == "https://x.example/a/%24%7Bzz%7D/%24y%5B0%5D?q=%24zz"
