"""Render plans: immutability, introspection, serialization and its refusals."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from webhook_dsl import PlanFormatError, RenderError, WebhookPlan, compile_webhook, dump_plans, load_plans
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


def test_a_plan_made_by_dataclasses_replace_generates_its_own_renderer() -> None:
    """The generated function is cached on the plan; a copy with other parts must not reuse it."""
    plan = compile_webhook({"url": "https://x.example/$a", "method": "GET"})
    assert plan.render({"a": "1"}).url == "https://x.example/1"
    other = dataclasses.replace(plan, url=("https://y.example/",))
    assert other.render({"a": "1"}).url == "https://y.example/"
    assert plan.render({"a": "1"}).url == "https://x.example/1"


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


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(format="something-else"), "not a compiled plan"),
        (lambda d: d.update(version=99), "version"),
        (lambda d: d.update(grammar="0" * 16), "another version of the grammar"),
        (lambda d: d["plans"][0].pop("url"), "damaged plan file: plans[0]: missing url"),
        (lambda d: d["plans"][0]["url"].append({"slot": ["a"], "context": "nope"}), "damaged"),
        (lambda d: d.update(extra=1), "the file: unknown field 'extra'"),
        (lambda d: d.update(plans={}), "plans: expected a list, found an object"),
    ],
)
def test_foreign_or_stale_plans_are_refused(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    document = json.loads(dump_plans([compile_webhook(TICKET)]))
    mutate(document)
    with pytest.raises(PlanFormatError, match=re.escape(message)):
        load_plans(json.dumps(document))


# A config with every kind of piece: URL groups of each component, header name and value slots, JSON strings,
# a bare value and an indexed one, a long run (many candidates), a member name with a variable.
RICH = (
    '{"url": "https://${h}.example.com:8$n/a/$p?q=$q#$f", "method": "POST",\n'
    ' "headers": [{"key": "X-$k", "value": "Bearer $token"}],\n'
    ' "body": {"s": "$s", "all": $images, "first": $images[0], "k_$b": 1, "n": 2}}'
)


def _rich() -> dict[str, Any]:
    plan: dict[str, Any] = json.loads(dump_plans([compile_webhook(RICH, source="rich.json")]))["plans"][0]
    return plan


def _slot(plan: dict[str, Any], written: str) -> dict[str, Any]:
    """The (first) slot of the plan data written as ``written``."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if node.get("written") == written and "slot" in node:
                return node
            nodes = list(node.values())
        elif isinstance(node, list):
            nodes = node
        else:
            return None
        return next((found for item in nodes if (found := walk(item)) is not None), None)

    found = walk(plan)
    assert found is not None, written
    return found  # type: ignore[no-any-return]


def _group(plan: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(part for part in plan["url"] if isinstance(part, dict) and part["group"] == kind)


def _body_position(plan: dict[str, Any], test: Callable[[Any], bool]) -> int:
    return next(i for i, piece in enumerate(plan["body"]) if test(piece))


MALFORMED: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    # slots: types, ranges, contexts, positions, candidates, the written text
    ("negative index", lambda p: _slot(p, "$images[0]").update(index=-1), "index: -1 is not a list index"),
    ("index as text", lambda p: _slot(p, "$images[0]").update(index="0"), "index: expected a list index"),
    ("index as boolean", lambda p: _slot(p, "$images[0]").update(index=False), "expected a list index"),
    ("index without [N]", lambda p: _slot(p, "$s").update(index=0), "written: '$s' does not write the reference"),
    ("unknown context", lambda p: _slot(p, "$p").update(context="nope"), "context: unknown context 'nope'"),
    ("host slot as path", lambda p: _slot(p, "${h}").update(context="url_path"),
     "a url_path slot cannot stand here (only url_host)"),
    ("bare value as string", lambda p: _slot(p, "$images").update(context="json_string"),
     "a json_string slot cannot stand here (only json_value)"),
    ("header value as name", lambda p: _slot(p, "$token").update(context="header_name"), "cannot stand here"),
    ("line 0", lambda p: _slot(p, "$s").update(at=[0, 1]), "at[0]: 0 is not a line number"),
    ("column as float", lambda p: _slot(p, "$s").update(at=[1, 1.0]), "at[1]: expected a column number"),
    ("one number at", lambda p: _slot(p, "$s").update(at=[1]), "at: expected [line, column]"),
    ("candidates cut short", lambda p: _slot(p, "$token").update(slot=["token"]), "candidate names are not"),
    ("candidates not prefixes", lambda p: _slot(p, "$token").update(slot=["token", "x"]), "candidate names are not"),
    ("no candidates", lambda p: _slot(p, "$token").update(slot=[]), "slot: no candidate names"),
    ("empty candidate", lambda p: _slot(p, "$token").update(slot=[""]), "expected text, found an empty string"),
    ("braced with candidates", lambda p: _slot(p, "${h}").update(slot=["h", "h"]), "candidate names are not"),
    ("written elsewhere", lambda p: _slot(p, "$s").update(written="$other"), "does not write the reference to 's'"),
    ("written without $", lambda p: _slot(p, "$s").update(written="s"), "does not write the reference"),
    ("url slot in the body's field", lambda p: _slot(p, "$p").update(field="body"), "field: 'body' is not 'url'"),
    ("header slot of another header", lambda p: _slot(p, "$k").update(field="headers[1].key"),
     "'headers[1].key' is not 'headers[0].key'"),
    ("body slot outside the body", lambda p: _slot(p, "$s").update(field="url"), "'url' is not a field of the body"),
    ("unknown slot field", lambda p: _slot(p, "$s").update(extra=1), "unknown field 'extra'"),
    ("missing slot field", lambda p: _slot(p, "$s").pop("context"), "missing context"),
    # the URL
    ("literal URL component", lambda p: _group(p, "host").update(group="literal"), "unknown URL component 'literal'"),
    ("group without a variable", lambda p: _group(p, "path_segment").update(pieces=["a"]), "no variable"),
    ("query of two pieces", lambda p: _group(p, "query")["pieces"].append("x"), "is one variable alone"),
    ("not http", lambda p: p["url"].__setitem__(0, "ftp://"), "the URL, its variables aside, is not an absolute"),
    ("a space in the URL", lambda p: p["url"].__setitem__(4, "/a b/"), "the URL, its variables aside, is not a URL"),
    ("credentials in the URL", lambda p: p["url"].__setitem__(0, "https://u@"), "carries credentials"),
    ("text left unmerged", lambda p: p["url"].insert(1, "x"), "would have merged"),
    ("empty text", lambda p: p["url"].insert(2, ""), "found an empty string"),
    ("whole URL among others", lambda p: _group(p, "fragment").update(group="whole"), "only url_whole"),
    # headers
    ("forbidden header", lambda p: p["headers"].append([["Host"], ["x"]]),
     "headers[2][0]: header name 'Host' refused (leaves the header name"),
    ("header name not a token", lambda p: p["headers"].append([["X Y"], ["x"]]),
     "header name 'X Y' refused (does not leave a valid header name"),
    ("header split", lambda p: p["headers"].append([["X-Y"], ["a\r\nb"]]),
     "headers[2][1][0]: header value refused (contains the control character U+000D"),
    ("header without a name", lambda p: p["headers"].append([[], ["x"]]), "a header has a name"),
    ("header of three parts", lambda p: p["headers"].append([["X-Y"], ["x"], []]), "expected [name pieces, value"),
    # the body
    ("body not JSON", lambda p: p["body"].__setitem__(-1, ",}"), "the body, its variables aside, is not JSON"),
    ("body lone surrogate", lambda p: p["body"].__setitem__(-1, "\ud800}"), "a lone surrogate"),
    ("string without a variable", lambda p: p["body"].__setitem__(
        _body_position(p, lambda piece: isinstance(piece, dict) and "string" in piece), {"string": ["x"]}),
     "no variable"),
    ("empty body", lambda p: p.update(body=[]), "an empty body"),
    ("GET with a body", lambda p: p.update(method="GET"), "a GET request carries no body"),
    ("unknown method", lambda p: p.update(method="FETCH"), "'FETCH' is not one of GET, POST, PUT, DELETE, PATCH"),
    # body objects with variable member names
    ("member name at a negative position", lambda p: p["objects"][0].update(keys=[-1]), "is not a body position"),
    ("member name at a literal", lambda p: p["objects"][0].update(keys=[0]), "body position 0 is not a string with"),
    ("member name past the body", lambda p: p["objects"][0].update(keys=[99]), "body position 99 is not a string"),
    ("member name listed twice", lambda p: p["objects"][0]["keys"].append(p["objects"][0]["keys"][0]),
     "out of order or listed twice"),
    ("positions not one per name", lambda p: p["objects"][0]["at"].pop(), "one position per literal name"),
    ("object without names with variables", lambda p: p["objects"][0].update(keys=[]), "no member name with variables"),
    # the plan's own fields
    ("unknown plan field", lambda p: p.update(extra=None), "plans[0]: unknown field 'extra'"),
    ("missing secrets", lambda p: p.pop("secrets"), "plans[0]: missing secrets"),
    ("secret not text", lambda p: p.update(secrets=[1]), "secrets[0]: expected a string, found a number"),
    ("directive not text", lambda p: p.update(responseDirective=5), "responseDirective: expected a string"),
    ("source not text", lambda p: p.update(source=None), "source: expected a string, found null"),
]


@pytest.mark.parametrize(("mutate", "message"), [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED])
def test_malformed_plans_are_refused_naming_the_field(mutate: Callable[[dict[str, Any]], Any], message: str) -> None:
    plan = _rich()
    assert WebhookPlan.from_data(json.loads(json.dumps(plan))) == compile_webhook(RICH, source="rich.json")
    mutate(plan)
    text = dump_plans([])[:-1].replace('"plans": []', '"plans": [' + json.dumps(plan) + "]")
    with pytest.raises(PlanFormatError, match=re.escape(message)) as caught:
        load_plans(text)
    assert str(caught.value).startswith("damaged plan file: plans[0]")
    with pytest.raises(PlanFormatError, match=re.escape(message.replace("plans[0]", "plan"))):
        WebhookPlan.from_data(plan)


def test_the_issue_case_negative_index_is_refused_where_it_once_rendered_the_last_item() -> None:
    """Index -1 in a plan file made the generated function return the last item, where the careful one refuses."""
    document = json.loads(dump_plans([compile_webhook(RICH)]))
    _slot(document["plans"][0], "$images[0]")["index"] = -1
    with pytest.raises(PlanFormatError, match=r"plans\[0\]\.body\[\d+\]\.index: -1 is not a list index"):
        load_plans(json.dumps(document))


def test_repeated_member_names_and_constants_in_the_file_are_refused() -> None:
    text = dump_plans([compile_webhook(TICKET)])
    with pytest.raises(PlanFormatError, match="the member name 'version' appears twice"):
        load_plans(text.replace('"version": 2', '"version": 2, "version": 2'))
    with pytest.raises(PlanFormatError, match="NaN is not JSON"):
        load_plans(text.replace('"version": 2', '"version": NaN'))


def test_the_methods_a_plan_may_use_are_the_templates() -> None:
    from webhook_dsl.language import plan, template

    assert plan._METHODS == template.METHODS


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
