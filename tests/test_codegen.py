"""The generated renderer's strategies, each against the careful renderer on its edge cases.

``plan.render`` runs the generated function and goes on to the careful renderer
only on the misses it was built for (``Fallback``, ``ValueProblem``), so every
test here compares ``plan.render`` (and the generated function alone, where it
returns) with ``plan.render_careful``; any other exception is a failure.
"""

from __future__ import annotations

import ast
import builtins
import json
import os
import traceback
import types
from collections import defaultdict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webhook_dsl import RenderError, WebhookPlan, compile_webhook
from webhook_dsl.language import codegen
from webhook_dsl.language.codegen import Fallback, generate_render_function, generate_source
from webhook_dsl.language.encode import ValueProblem
from webhook_dsl.language.plan import JsonStringPlan, Slot
from webhook_dsl.language.syntax import Context

ROOT = Path(__file__).resolve().parent.parent


class Text(str):
    """A str subclass: the careful renderer refuses it, so the fast path must not return."""


VALUES: list[Any] = [
    "plain",
    "",
    'quote " backslash \\ newline \n tab \t \u2028 </script> \U0001f389',
    "\ud800",  # a lone surrogate: no UTF-8, no JSON
    "x\x7f\r\n",
    Text("subclass"),
    0,
    -7,
    2**63,
    2**70,
    1.0,
    -0.0,
    1e300,
    5e-324,
    float("nan"),
    float("inf"),
    True,
    False,
    None,
    ["a", "b"],
    ["a", 1],
    [],
    ["\ud800"],
    [Text("s")],
    ("a", "b"),
    {"k": [1, None]},
    {1: "non-string key"},
    b"bytes",
]


def outcome(render: Any, variables: Any) -> tuple[str, Any]:
    try:
        return ("ok", render(variables))
    except RenderError as error:
        return ("error", [(d.message, d.line, d.column, d.variable) for d in error.diagnostics])


def assert_fast_equals_careful(plan: WebhookPlan, variables: Any) -> None:
    assert outcome(plan.render, variables) == outcome(plan.render_careful, variables)
    function = generate_render_function(plan)
    try:
        fast = function(variables)
    except (Fallback, ValueProblem):
        return  # a miss: the careful renderer decides, checked above
    assert fast == plan.render_careful(variables)


def config(body: str, url: str = "https://x.example/") -> WebhookPlan:
    return compile_webhook(f'{{"url": "{url}", "method": "POST", "body": {body}}}')


def uses_display(plan: WebhookPlan) -> bool:
    """Whether the body is one dumps of a dict/list display (else: dumps per hole, joined)."""
    source = generate_source(plan)
    return "body = json_dumps({" in source or "body = json_dumps([" in source


# --- the body as one dumps of a display ------------------------------------------------


MIRRORED = [
    '{"a": "$a", "b": "$b", "c": "$c"}',
    '{"a": "$a", "b": "x-$b-$a", "c": "$c", "f": 1.0, "z": -0.0}',
    '{"a": "$a", "b": "$b", "c": "$c", "n": 12, "t": true, "u": null}',
    '{"a": ["$a", "$b"], "k": {"x": [1, 2, {"y": null}]}, "c": $c, "d": "$d[1]", "e": $d[1]}',
    '[["$a", "$b"], "$c", $c]',
    '{"a": "$a", "b": "$b", "c": $c, "d": ["$a", "$b", "$c"], "e": {}, "f": []}',
    '{"a": "$a", "b": "$b", "small": 5e-324, "big": 1e+300, "c": "$c"}',
    '{"\\u00e9\\"\\\\": "$a", "\\u2028": "$b", "\\u0000": "$c"}',
]


@pytest.mark.parametrize("body", MIRRORED)
def test_display_body_is_used_and_agrees(body: str) -> None:
    plan = config(body)
    assert uses_display(plan), generate_source(plan)
    names = ("a", "b", "c", "d")
    for value in VALUES:
        for name in names:
            variables: dict[str, Any] = {"a": "A", "b": "B", "c": ["x", "y"], "d": ["p", "q"], name: value}
            assert_fast_equals_careful(plan, variables)


NOT_MIRRORED = [
    '{"a": "$a", "b": "$b", "c": "$c", "n": 1e5}',  # orjson writes 100000.0
    '{"a": "$a", "b": "$b", "c": "$c", "n": -0}',  # orjson writes 0
    '{"a": "$a", "b": "$b", "c": "$c", "n": 1.10}',  # orjson writes 1.1
    '{"a": "$a", "b": "$b", "c": "$c", "n": 100000000000000000000000}',  # past 64 bits: orjson refuses
    '{"a": "$a", "b": "$b", "c": "$c", "n": 1E2}',
    '{"$a": "$b", "b": "$b", "c": "$c"}',  # a key with a variable: two keys could render alike
]


@pytest.mark.parametrize("body", NOT_MIRRORED)
def test_display_body_is_refused_unless_byte_identical(body: str) -> None:
    plan = config(body)
    assert not uses_display(plan)
    assert "b''.join" in generate_source(plan)
    for value in VALUES:
        assert_fast_equals_careful(plan, {"a": "A", "b": value, "c": "C"})
        assert_fast_equals_careful(plan, {"a": value, "b": "B", "c": "C"})


def test_numbers_that_orjson_would_rewrite_force_the_join() -> None:
    for literal in ("1e5", "-0", "1.10", "100000000000000000000000", "1E2", "0.30000000000000004e0"):
        plan = config(f'{{"a": "$a", "b": "$b", "c": "$c", "n": {literal}}}')
        assert not uses_display(plan), literal
        assert plan.render({"a": "1", "b": "2", "c": "3"}).body == (
            f'{{"a":"1","b":"2","c":"3","n":{literal}}}'.encode()
        )


def _slot(name: str, context: Context = Context.JSON_STRING) -> Slot:
    return Slot(
        name=name, lengths=(len(name),), index=None, written="$" + name, context=context, field="body", line=1, column=1
    )


def hand_plan(*body: Any) -> WebhookPlan:
    return WebhookPlan(method="POST", url=("https://x.example/",), headers=(), body=tuple(body))


def test_duplicate_keys_in_a_hand_made_plan_keep_both() -> None:
    """A dict display would keep one of two equal keys; the careful renderer writes both."""
    a, b, c = (JsonStringPlan((_slot(n),)) for n in "abc")
    plan = hand_plan('{"k":', a, ',"k":', b, ',"m":', c, "}")
    assert not uses_display(plan)
    assert plan.render({"a": "1", "b": "2", "c": "3"}).body == b'{"k":"1","k":"2","m":"3"}'


def test_non_canonical_or_broken_literals_in_a_hand_made_plan() -> None:
    a, b, c = (JsonStringPlan((_slot(n),)) for n in "abc")
    variables = {"a": "1", "b": "2", "c": "3"}
    spaced = hand_plan('{ "k" : ', a, ', "l": ', b, ',"m":', c, "}")
    assert not uses_display(spaced)
    assert spaced.render(variables).body == b'{ "k" : "1", "l": "2","m":"3"}'
    broken = hand_plan('{"k":', a, ',"l":', b, ',"m":', c)  # not JSON at all: still rendered as written
    assert not uses_display(broken)
    assert broken.render(variables).body == b'{"k":"1","l":"2","m":"3"'
    marked = hand_plan('{"\ue000":', a, ',"l":', b, ',"m":', c, "}")  # the marker character in a literal
    assert not uses_display(marked)
    assert marked.render(variables) == marked.render_careful(variables)


def test_a_long_constant_body_with_one_hole_keeps_the_join() -> None:
    plan = config('{"a": {"b": {"c": "$a"}}, "k": [1, 2, 3], "l": "text"}')
    assert not uses_display(plan)
    assert plan.render({"a": "x"}).body == b'{"a":{"b":{"c":"x"}},"k":[1,2,3],"l":"text"}'


# --- reading the variables -----------------------------------------------------------


class OddMapping(Mapping[str, Any]):
    """A Mapping whose ``get`` is all the careful renderer uses."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


TICKET_VARIABLES = {
    "helpdesk_api_key": "k",
    "session.id": "s",
    "issue_title": "t",
    "issue_description": "d",
    "priority": "p",
    "customer_name": "n",
    "customer_email": "e",
    "company.id": "c",
}


@pytest.fixture
def ticket() -> WebhookPlan:
    return compile_webhook((ROOT / "examples" / "webhooks" / "create_ticket.json").read_text(encoding="utf-8"))


def test_mappings_that_are_not_plain_dicts(ticket: WebhookPlan) -> None:
    want = ticket.render_careful(TICKET_VARIABLES)
    for variables in (
        types.MappingProxyType(TICKET_VARIABLES),
        OddMapping(TICKET_VARIABLES),
        defaultdict(str, TICKET_VARIABLES),
    ):
        assert ticket.render(variables) == want
        assert generate_render_function(ticket)(variables) == want


def test_a_defaultdict_is_read_with_get_and_never_grows(ticket: WebhookPlan) -> None:
    """``v[name]`` would call ``__missing__``: '' for the missing name instead of a shorter one."""
    variables = defaultdict(str, TICKET_VARIABLES)
    del variables["session.id"]
    variables["session"] = "S"
    assert outcome(ticket.render, variables) == outcome(ticket.render_careful, variables)
    assert "session.id" not in variables


def test_not_a_mapping_is_refused_even_without_variables() -> None:
    plan = compile_webhook({"url": "https://x.example/", "method": "GET"})
    with pytest.raises(TypeError, match="mapping"):
        plan.render([("a", "1")])  # type: ignore[arg-type]

    class GetOnly:
        def get(self, key: str, default: Any = None) -> Any:
            return "x"

    with pytest.raises(TypeError, match="mapping"):
        compile_webhook({"url": "https://x.example/$a", "method": "GET"}).render(GetOnly())  # type: ignore[arg-type]


# --- values used in several places --------------------------------------------------


def test_one_value_in_every_context() -> None:
    plan = compile_webhook(
        json.dumps(
            {
                "url": "https://x.example/$a/${a}x?q=$a#$a",
                "method": "POST",
                "headers": [{"key": "X-$a", "value": "$a"}, {"key": "X-B", "value": "v $a"}],
                "body": {"a": "$a", "b": "$a$a", "c": "$l[0]", "l": "$l", "d": "$l[1]"},
            }
        ).replace('"$l"', "$l")
    )
    for value in [*VALUES, ".", "..", "a b/c", "ok"]:
        for l_value in (["x", "y"], [value, "y"], ["x", value], value):
            assert_fast_equals_careful(plan, {"a": value, "l": l_value})
            assert_fast_equals_careful(plan, {"a": "ok", "l": l_value})


def test_constant_url_length_is_not_checked_but_a_templated_one_is() -> None:
    assert "len(url)" not in generate_source(compile_webhook({"url": "https://x.example/", "method": "GET"}))
    plan = compile_webhook({"url": "https://x.example/$p", "method": "GET"})
    assert "len(url) > 8000" in generate_source(plan)
    with pytest.raises(RenderError, match="rendered URL"):
        plan.render({"p": "a" * 8000})


# --- what goes on to the careful renderer, and what does not ---------------------------


def test_each_miss_is_signalled_as_a_miss() -> None:
    """Missing names, values refused, lone surrogates in the body: each raises one of the two misses."""
    plan = compile_webhook(
        {"url": "https://${h}.example/$p", "method": "POST", "headers": [{"key": "X-A", "value": "$a"}],
         "body": {"s": "$s", "b": "$b", "l": "$l[1]"}}
    )
    function = generate_render_function(plan)
    good = {"h": "api", "p": "x", "a": "v", "s": "s", "b": "b", "l": ["p", "q"]}
    assert function(good) == plan.render_careful(good)
    for change, miss in [
        ({"p": None, "h": "api"}, None),  # not a miss: None is '' in a path
        ({"s": "\ud800"}, Fallback),  # orjson refuses a lone surrogate: no JSONEncodeError escapes
        ({"l": ["p"]}, Fallback),  # past the end of the list
        ({"l": "pq"}, Fallback),  # not a list
        ({"h": "a b"}, ValueProblem),  # not a host name
        ({"a": "x\r\ny"}, ValueProblem),  # a header split
        ({"p": b"bytes"}, ValueProblem),  # no text form
    ]:
        variables = {**good, **change}
        if miss is None:
            assert function(variables) == plan.render_careful(variables)
            continue
        with pytest.raises(miss):
            function(variables)
        assert outcome(plan.render, variables) == outcome(plan.render_careful, variables)
    missing = dict(good)
    del missing["s"]
    with pytest.raises(Fallback):  # a KeyError inside is turned into the miss, never leaked
        function(missing)
    with pytest.raises(Fallback):
        function([("a", 1)])  # not a mapping: the careful renderer words the TypeError


class Boom(Exception):
    pass


@pytest.mark.parametrize("error", [Boom, KeyError, TypeError, IndexError, AttributeError])
def test_any_other_exception_from_the_generated_function_propagates(error: type[Exception]) -> None:
    """A bug in generated code must fail loudly, not pass as a slow render by the careful renderer."""
    plan = compile_webhook({"url": "https://x.example/$a", "method": "GET"})

    def broken(variables: Any) -> Any:
        raise error("a bug")

    plan._generated[:] = [broken]
    with pytest.raises(error, match="a bug"):
        plan.render({"a": "1"})
    assert plan.render({"a": "1"}, lenient=True).url == "https://x.example/1"  # lenient never runs it


@pytest.mark.parametrize("miss", [Fallback, ValueProblem])
def test_the_two_misses_go_on_to_the_careful_renderer(miss: type[Exception]) -> None:
    plan = compile_webhook({"url": "https://x.example/$a", "method": "GET"})

    def missing(variables: Any) -> Any:
        raise miss("left to the careful renderer")

    plan._generated[:] = [missing]
    assert plan.render({"a": "1"}).url == "https://x.example/1"
    with pytest.raises(RenderError, match=r"\$a is not defined"):
        plan.render({})


def _globals_read(source: str) -> set[str]:
    """Names the generated module reads but never assigns: its helpers (builtins included)."""
    tree = ast.parse(source)
    assigned = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)}
    assigned |= {arg.arg for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) for arg in node.args.args}
    read = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}
    return read - assigned


def test_generated_code_reads_only_named_helpers() -> None:
    """Every helper the generated function calls has a name that says what it does, so a traceback
    through it (and ``generate_source``, which its line numbers refer to) can be read."""
    plan = compile_webhook(
        '{"url": "https://a-$h.example:8$n/$p/${w.x}?q=$q#$f", "method": "POST",'
        ' "headers": [{"key": "X-$k", "value": "v $v"}],'
        ' "body": {"s": "$s", "bare": $b, "l": $l[0], "n": [1, {"k": 2}], "$m": 1, "o": "$l[1]"}}'
    )
    used = _globals_read(generate_source(plan)) - set(dir(builtins))
    assert used <= set(codegen._NAMESPACE), used - set(codegen._NAMESPACE)
    assert {"read_mapping", "descend_or_fall_back", "to_text", "percent_encode", "check_host", "check_port",
            "check_header_name", "check_header_value", "Fallback", "tuple_new", "RenderedRequest"} <= used
    assert all(len(name) >= 6 for name in codegen._NAMESPACE), sorted(codegen._NAMESPACE)
    body_plan = config('{"a": "$a", "b": "$b", "c": "$c", "d": $d, "k": [1, {"x": 2}]}')
    assert {"json_dumps", "bare_item", "Fragment", "JSONEncodeError"} <= _globals_read(generate_source(body_plan))


def test_a_traceback_names_the_plan_and_the_helper() -> None:
    plan = compile_webhook({"url": "https://x.example/$p", "method": "GET"}, source="hooks/w.json")
    function = generate_render_function(plan)
    with pytest.raises(ValueProblem) as caught:
        function({"p": "\ud800"})
    frames = traceback.extract_tb(caught.value.__traceback__)
    assert [(frame.filename, frame.name) for frame in frames[-2:]] == [
        ("<webhook-dsl plan hooks/w.json>", "render"),
        (codegen.percent_encode.__code__.co_filename, "percent_encode"),
    ]
    line = frames[-2].lineno or 0  # a line of generate_source's text
    assert "percent_encode(" in generate_source(plan).splitlines()[line - 1]


# --- random bodies of holes and literals -----------------------------------------------

_NUMBER_TEXT = st.one_of(  # half of them written in a way orjson would not write them
    st.sampled_from(["1e5", "-0", "1.10", "0.5E-3", "1e16", "123456789012345678901234567890"]),
    st.sampled_from(["-0.0", "1.0", "0", "-12", "0.1", "5e-324", "1e+16"]),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)
_HOLE = st.sampled_from(['"$a"', '"$b"', '"<$c>"', "$l", '"$l[0]"', "$l[1]", '"<$l>"'])
_LEAF = st.integers(0, 4).flatmap(  # mostly holes, so that the display is often worth it
    lambda i: st.one_of(st.sampled_from(["true", "null", '"lit"']), _NUMBER_TEXT) if i == 4 else _HOLE
)
_KEY = st.integers(0, 9).flatmap(
    lambda i: st.just("$b") if i == 9 else st.sampled_from(["k", "m", "é", "\\u2028", "n"])
)
_BODY = st.recursive(
    _LEAF,
    lambda inner: (
        st.lists(inner, max_size=4).map(lambda items: "[" + ", ".join(items) + "]")
        | st.dictionaries(_KEY, inner, max_size=4).map(
            lambda d: "{" + ", ".join(f'"{k}": {v}' for k, v in d.items()) + "}"
        )
    ),
    max_leaves=10,
).filter(lambda text: text[:1] in "{[")
_VALUE = st.one_of(
    st.sampled_from(VALUES), st.text(max_size=4), st.integers(), st.floats(), st.lists(st.text(max_size=2), max_size=3)
)


@settings(max_examples=int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "200")), deadline=None)
@given(
    _BODY,
    st.fixed_dictionaries(
        {"a": _VALUE, "b": _VALUE, "c": _VALUE, "l": st.one_of(_VALUE, _VALUE.map(lambda x: [x, x]))}
    ),
)
def test_random_bodies_agree_with_the_careful_renderer(body: str, variables: dict[str, Any]) -> None:
    plan = config(body)
    assert_fast_equals_careful(plan, variables)
    assert_fast_equals_careful(plan, {"a": "A", "b": "B", "c": "C", "l": ["x", "y"]})
