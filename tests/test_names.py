"""Names reach every key: what a `$` run and `${...}` name, a literal `$`, descent into nested objects,
and unique member names in the rendered body (issue 12)."""

from __future__ import annotations

import json
import types
from typing import Any

import pytest

from tests.test_fastparse import agree
from webhook_dsl import ConfigError, ConfigSyntaxError, PlanFormatError, RenderError, compile_webhook, load_plans
from webhook_dsl.language.codegen import Fallback, generate_render_function, generate_source
from webhook_dsl.language.parse import parse_config
from webhook_dsl.language.plan import (
    PLAN_VERSION,
    WebhookPlan,
    defined_name,
    dump_plans,
    resolve_reference,
    top_level_names,
)
from webhook_dsl.language.syntax import JsonObject, StringTemplate, VarRef


def _parts(template: str) -> tuple[Any, ...]:
    """The parts of one JSON string, written as it stands in the source (escapes and all)."""
    text = '{"a": "' + template + '"}'
    assert agree(text), text  # the fast parser takes it, and agrees with the grammar
    tree = parse_config(text)
    assert isinstance(tree, JsonObject)
    value = tree.members[0].value
    assert isinstance(value, StringTemplate)
    return tuple((p.name, p.index, p.braced, p.written) if isinstance(p, VarRef) else p.value for p in value.parts)


def _body(body: Any, variables: dict[str, Any], **kw: Any) -> Any:
    plan = compile_webhook({"url": "https://x.example/", "method": "POST", "body": body})
    request = plan.render(variables, **kw)
    assert plan.render_careful(variables, **kw) == request
    return json.loads(request.body or b"")


# --- what a run is -------------------------------------------------------------------------


def test_a_run_takes_dashes_and_unicode_letters_and_digits() -> None:
    assert _parts("$user-id $endereço, $名前.x-1 $a. $v.1 $a-.b") == (
        ("user-id", None, False, "$user-id"),
        " ",
        ("endereço", None, False, "$endereço"),
        ", ",
        ("名前.x-1", None, False, "$名前.x-1"),
        " ",
        ("a", None, False, "$a"),
        ". ",
        ("v", None, False, "$v"),
        ".1 ",
        ("a-.b", None, False, "$a-.b"),
    )


def test_a_dollar_that_starts_no_name_is_text() -> None:
    literal = "costs $5, US$ 10, $, a $ b, $2fa_code, $-x, $.y, $[0], $€, $٣"
    assert _parts(literal) == (literal,)
    assert _parts("$") == ("$",)
    assert _body({"a": literal, "b": "$", "$": "$ $"}, {}) == {"a": literal, "b": "$", "$": "$ $"}


def test_double_dollar_is_still_the_escape() -> None:
    assert _parts("$$5 $$name $${x} $$$y") == ("$5 $name ${x} $", ("y", None, False, "$y"))


def test_braced_names_take_any_text_with_json_escapes_decoded() -> None:
    assert _parts(r"${2fa_code}${a b}${a\u0041}${say \"hi\"}${$}${x[2]}${[0]}${a\u005b0]}${a\u007db}") == (
        ("2fa_code", None, True, "${2fa_code}"),
        ("a b", None, True, "${a b}"),
        ("aA", None, True, r"${a\u0041}"),
        ('say "hi"', None, True, r"${say \"hi\"}"),
        ("$", None, True, "${$}"),
        ("x", 2, True, "${x[2]}"),
        ("[0]", None, True, "${[0]}"),
        ("a[0]", None, True, r"${a\u005b0]}"),  # an escaped '[' is text: part of the name
        ("a}b", None, True, r"${a\u007db}"),  # an escaped '}' is text: part of the name
    )


def test_escaped_name_characters_count_but_escaped_syntax_is_text() -> None:
    assert _parts(r"$caf\u00e9 $\u540d\u524d $a\u002eb $\ud840\udc00") == (
        ("café", None, False, r"$caf\u00e9"),
        " ",
        ("名前", None, False, r"$\u540d\u524d"),
        " ",
        ("a.b", None, False, r"$a\u002eb"),
        " ",
        ("\U00020000", None, False, r"$\ud840\udc00"),
    )
    assert _parts(r"\u0024a $\u007ba} $a\u005b0] $\u0035 $a\u0020b") == (
        "$a ${a} ",
        ("a", None, False, "$a"),
        "[0] $5 ",
        ("a", None, False, "$a"),
        " b",
    )


def test_json_escaped_configs_mean_the_same_as_raw_ones() -> None:
    config = {"url": "https://x.example/", "method": "POST", "body": {"a": "$endereço ${名前} $ç-1"}}
    variables = {"endereço": "E", "名前": "N", "ç-1": "C"}
    raw, escaped = (compile_webhook(json.dumps(config, ensure_ascii=flag)) for flag in (False, True))
    assert raw.render(variables) == escaped.render(variables)
    assert json.loads(raw.render(variables).body or b"") == {"a": "E N C"}


def test_bare_values_name_any_key() -> None:
    plan = compile_webhook(r'{"url": "https://x.example/", "method": "POST", '
                           r'"body": [$user-id, ${user id}, $caf\u00e9, ${2fa}]}')
    assert json.loads(plan.render({"user-id": 1, "user id": 2, "café": 3, "2fa": 4}).body or b"") == [1, 2, 3, 4]


_PREFIX = '{"url": "https://x.example/", "method": "POST", "body": '


def _column(body: str, at: str) -> int:
    return len(_PREFIX) + body.index(at) + 1


@pytest.mark.parametrize(
    ("body", "at", "fragment"),
    [
        ('{"a": "x ${} y"}', "${}", "'${' names nothing"),
        ('{"a": "total ${amount"}', "${amount", "has no closing '}'"),
        ('{"a": "${a\\u0041"}', "${a", "has no closing '}'"),
    ],
)
def test_a_broken_brace_is_a_config_error(body: str, at: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        compile_webhook(_PREFIX + body + "}", source="c.json")
    (diagnostic,) = caught.value.diagnostics
    assert (diagnostic.source, diagnostic.line, diagnostic.column) == ("c.json", 1, _column(body, at))
    assert fragment in diagnostic.message and "$${" in diagnostic.message


@pytest.mark.parametrize(
    ("body", "at", "fragment"),
    [
        ('{"a": "${a\tb}"}', "\t", "control character U+0009"),
        ('{"a": "${x\\ud800}"}', "\\ud800", "half of a surrogate pair"),
        ('{"a": "${x\\udc00\\ud800}"}', "\\udc00", "half of a surrogate pair"),
        ('{"a": "${x\\qy}"}', "\\q", "invalid escape"),
        ('{"a": $a\\u0020b}', "\\u0020", "' b' cannot follow $a"),
        ('{"a": $\\u0035}', "$", "'$5' starts no name"),
        ('{"a": $5}', "$", "unexpected '$'"),
    ],
)
def test_names_that_are_not_json_text_are_syntax_errors(body: str, at: str, fragment: str) -> None:
    with pytest.raises(ConfigSyntaxError) as caught:
        compile_webhook(_PREFIX + body + "}", source="c.json")
    first = caught.value.diagnostics[0]
    assert (first.line, first.column) == (1, _column(body, at)), str(caught.value)
    assert fragment in first.message, str(caught.value)


def test_response_directive_keeps_dollars_as_written() -> None:
    plan = compile_webhook(
        {"url": "https://x.example/", "method": "GET", "responseDirective": "costs ${ $5 ${} $name"}
    )
    assert plan.response_directive == "costs ${ $5 ${} $name"


# --- longest match over the wider alphabet ---------------------------------------------------


def test_longest_defined_prefix_with_dashes() -> None:
    assert _body({"a": "$user-id|$user-name|$username"}, {"user": "U", "user-id": "I"}) == {"a": "I|U-name|Uname"}
    assert _body({"a": "$user-id"}, {"user": "U"}) == {"a": "U-id"}


# --- descent into nested objects -------------------------------------------------------------

CUSTOMER = {"customer": {"email": "ana@example.com", "address": {"city": "Lisboa"}, "tags": ["a", "b"]}}


def test_a_dotted_run_descends_into_nested_objects() -> None:
    assert _body(
        {"e": "$customer.email", "c": "${customer.address.city}", "t": "$customer.tags[1]", "all": "$customer.tags"},
        CUSTOMER,
    ) == {"e": "ana@example.com", "c": "Lisboa", "t": "b", "all": '["a","b"]'}


def test_a_flat_key_wins_over_descent() -> None:
    assert _body({"e": "$customer.email"}, {**CUSTOMER, "customer.email": "flat"}) == {"e": "flat"}


def test_descent_composes_with_longest_match() -> None:
    variables = {"customer": {"email": "E"}, "s": "S"}
    assert _body({"a": "$customer.emails|$customer.x|$s.email"}, variables) == {
        "a": 'Es|{"email":"E"}.x|S.email'
    }
    assert _body({"a": "$customer.email"}, {"customer": "C"}) == {"a": "C.email"}


def test_descent_starts_from_the_longest_flat_key_that_leads_to_a_value() -> None:
    variables = {"a.b": {"c": "from a.b"}, "a": {"b": {"c": "from a", "d": "D"}}}
    assert _body({"x": "$a.b.c|$a.b.d"}, variables) == {"x": "from a.b|D"}


def test_descent_goes_through_json_objects_only() -> None:
    class Sub(dict[str, Any]):
        pass

    plan = compile_webhook({"url": "https://x.example/", "method": "POST", "body": {"a": "${o.k}"}})
    for value in (Sub(k="v"), [{"k": "v"}], types.MappingProxyType({"k": "v"}), "k"):
        with pytest.raises(RenderError, match="not defined"):
            plan.render({"o": value})
    nested = compile_webhook({"url": "https://x.example/", "method": "POST", "body": {"a": "${o.k.x}"}})
    with pytest.raises(RenderError, match="not defined"):
        nested.render({"o": {"k.x": "unreachable"}})  # a segment is one nested key


def test_bare_values_and_indexes_descend() -> None:
    plan = compile_webhook(
        '{"url": "https://x.example/$customer.address.city", "method": "POST", '
        '"body": {"a": $customer.tags, "b": $customer.tags[0], "c": ${customer.address}}}'
    )
    request = plan.render(CUSTOMER)
    assert request.url == "https://x.example/Lisboa"
    assert json.loads(request.body or b"") == {"a": ["a", "b"], "b": "a", "c": {"city": "Lisboa"}}
    with pytest.raises(RenderError, match=r"\$customer.tags\[0\] indexes customer.tags, which is a string"):
        plan.render({"customer": {"tags": "x", "address": {"city": "c"}}})


def test_the_generated_function_descends_itself_and_reads_flat_names_as_before() -> None:
    plan = compile_webhook({"url": "https://x.example/$id", "method": "POST", "body": {"e": "$customer.email"}})
    source = generate_source(plan)
    assert "    x1 = v['id']\n" in source  # a name without a dot: one subscript, as before
    descend = "try: x2 = v['customer.email']\n        except KeyError: x2 = descend_or_fall_back(v, 'customer.email')"
    assert descend in source
    function = generate_render_function(plan)
    for variables in ({"id": "1", **CUSTOMER}, types.MappingProxyType({"id": "1", **CUSTOMER})):
        assert function(variables) == plan.render_careful(variables)  # returned: no fallback was needed
        assert json.loads(function(variables).body or b"") == {"e": "ana@example.com"}


def test_lenient_mode_keeps_unresolved_dotted_references() -> None:
    assert _body({"a": "$customer.phone"}, {"customer": {"email": "E"}}, lenient=True) == {
        "a": '{"email":"E"}.phone'
    }
    assert _body({"a": "${customer.phone}"}, {"customer": {"email": "E"}}, lenient=True) == {
        "a": "${customer.phone}"
    }


# --- the helpers the runtime and trigger use ------------------------------------------------------


def test_resolve_reference_and_defined_name() -> None:
    plan = compile_webhook({"url": "https://x.example/", "method": "POST", "body": {"a": "$customer.emailx"}})
    (slot,) = plan.slots()
    assert resolve_reference(slot.candidates, CUSTOMER) == ("customer.email", "ana@example.com")
    assert defined_name(slot.candidates, CUSTOMER) == "customer"  # the key of the mapping the value came from
    flat = {"customer.email": "F", **CUSTOMER}
    assert resolve_reference(slot.candidates, flat) == ("customer.email", "F")
    assert defined_name(slot.candidates, flat) == "customer.email"
    assert resolve_reference(slot.candidates, {"c": 1}) == ("c", 1)
    assert resolve_reference(slot.candidates, {}) is None
    assert defined_name(slot.candidates, {}) is None


def test_top_level_names_lists_every_key_that_could_supply_a_reference() -> None:
    assert top_level_names(("customer.address.city",)) == ("customer.address.city", "customer.address", "customer")
    assert top_level_names(("a.b", "a")) == ("a.b", "a")
    assert top_level_names(("user-id",)) == ("user-id",)


# --- unique member names ------------------------------------------------------------------------


def _both(plan: WebhookPlan, variables: dict[str, Any], **kw: Any) -> list[RenderError]:
    errors = []
    for render in (plan.render, plan.render_careful):
        with pytest.raises(RenderError) as caught:
            render(variables, **kw)
        errors.append(caught.value)
    assert str(errors[0]) == str(errors[1])
    return errors


def test_a_variable_member_name_may_not_repeat_a_literal_one() -> None:
    plan = compile_webhook(
        '{"url": "https://x.example/", "method": "POST",\n "body": {"admin": false, "$k": "x"}}', source="w.json"
    )
    (error, _) = _both(plan, {"k": "admin"})
    (diagnostic,) = error.diagnostics
    assert (diagnostic.line, diagnostic.column, diagnostic.variable) == (2, 28, "$k")
    assert diagnostic.message.startswith("$k makes a member name this object already has (the literal key at line 2")
    assert "admin" not in str(error)  # the value is never quoted
    assert json.loads(plan.render({"k": "Admin"}).body or b"") == {"admin": False, "Admin": "x"}


def test_two_variable_member_names_may_not_render_alike() -> None:
    plan = compile_webhook({"url": "https://x.example/", "method": "POST", "body": {"p_$a": 1, "${b}": 2, "$a$a": 3}})
    (error, _) = _both(plan, {"a": "q", "b": "p_q"})
    assert [d.variable for d in error.diagnostics] == ["${b}"]
    assert "(the key made by $a at line 5, column 8)" in error.diagnostics[0].message
    (error, _) = _both(plan, {"a": "", "b": "p_"}, lenient=True)  # "p_", "p_" and "": lenient mode too
    assert [d.variable for d in error.diagnostics] == ["${b}"]
    same = compile_webhook({"url": "https://x.example/", "method": "POST", "body": {"$k": 1, "o": {"$k": 2}}})
    assert json.loads(same.render({"k": "x"}).body or b"") == {"x": 1, "o": {"x": 2}}


def test_the_generated_function_checks_member_names_without_falling_back() -> None:
    plan = compile_webhook({"url": "https://x.example/", "method": "POST", "body": {"admin": 0, "$k": 1, "$j": 2}})
    source = generate_source(plan)
    assert "LITERAL_NAMES_1 = frozenset(('admin',))" in source
    assert "if x1 in LITERAL_NAMES_1 or x2 in LITERAL_NAMES_1 or len({x1, x2}) < 2: raise Fallback" in source
    function = generate_render_function(plan)
    assert function({"k": "a", "j": "b"}) == plan.render_careful({"k": "a", "j": "b"})
    for clash in ({"k": "admin", "j": "b"}, {"k": "a", "j": "admin"}, {"k": "a", "j": "a"}):
        with pytest.raises(Fallback):  # the careful renderer decides (and words the error)
            function(clash)


# --- the plan format ------------------------------------------------------------------------------


def test_plans_of_format_version_1_are_refused() -> None:
    plan = compile_webhook({"url": "https://x.example/", "method": "POST", "body": {"$k": 1, "admin": 2}})
    document = json.loads(dump_plans([plan]))
    assert document["version"] == PLAN_VERSION == 2
    assert document["plans"][0]["objects"] == [{"names": ["admin"], "at": [[6, 5]], "keys": [1]}]
    assert load_plans(json.dumps(document))[0] == plan
    document["version"] = 1
    with pytest.raises(PlanFormatError, match="version 1 is not 2; recompile the configs"):
        load_plans(json.dumps(document))


@pytest.mark.parametrize("keys", [[0], [5], [-1], ["x"]])
def test_member_names_that_point_nowhere_are_a_damaged_plan(keys: list[Any]) -> None:
    plan = compile_webhook({"url": "https://x.example/", "method": "POST", "body": {"$k": 1, "admin": 2}})
    document = json.loads(dump_plans([plan]))
    document["plans"][0]["objects"][0]["keys"] = keys
    with pytest.raises(PlanFormatError, match="damaged"):
        load_plans(json.dumps(document))
