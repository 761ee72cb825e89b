"""Argument validation: the fast Rust check must agree with the reference, and schemas stay offline.

``Trigger.argument_errors`` asks jsonschema_rs "valid?" first and lets ``jsonschema`` word the
errors. The law checked here: the arguments are accepted exactly when ``jsonschema`` itself (the
reference, called directly) accepts them, for generated schemas and JSON data, so a disagreement
between the two libraries can never let bad arguments reach the network.
"""

from __future__ import annotations

import dataclasses
import decimal
import http.server
import math
import os
import threading
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webhook_dsl import ConfigError, compile_trigger
from webhook_dsl.runtime.trigger import Trigger

MAX_EXAMPLES = int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "200"))
SETTINGS = settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NAMES = ["a", "b", "c"]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)  # beyond 64 bits too
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0, 1, 1.0, 0.5, 2.5, -3, 10, 0.1, 0.30000000000000004])
    | st.text(max_size=6)
    | st.sampled_from(["", "A-12", "abc", "ä", "😀", "2024-01-01", "x@y.z"])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from([*NAMES, "d"]), inner, max_size=3),
    max_leaves=10,
)

TYPES = ["string", "integer", "number", "boolean", "null", "array", "object"]
PATTERNS = ["^A-[0-9]+$", "\\d", "^[a-z]*$", "^.{2,}$", "b", "^\\w+$", "^\\S+$"]  # no lookaround: refused
leaf_schemas = st.one_of(
    st.builds(lambda t: {"type": t}, st.sampled_from(TYPES)),
    st.builds(lambda ts: {"type": ts}, st.lists(st.sampled_from(TYPES), min_size=1, max_size=3, unique=True)),
    st.builds(lambda v: {"enum": v}, st.lists(json_scalars, min_size=1, max_size=4)),
    st.builds(lambda v: {"const": v}, json_values),
    st.builds(lambda k, n: {k: n}, st.sampled_from(["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"]),
              st.integers(-5, 5) | st.floats(-5, 5, allow_nan=False)),
    st.builds(lambda n: {"multipleOf": n}, st.sampled_from([1, 2, 3, 0.5, 0.1, 0.01, 1.5])),
    st.builds(lambda k, n: {k: n}, st.sampled_from(["minLength", "maxLength", "minItems", "maxItems",
                                                    "minProperties", "maxProperties"]), st.integers(0, 4)),
    st.builds(lambda p: {"pattern": p}, st.sampled_from(PATTERNS)),
    st.builds(lambda f: {"type": "string", "format": f}, st.sampled_from(["email", "date", "uri", "uuid"])),
    st.just({"uniqueItems": True}),
    st.just({}),
    st.just(True),
    st.just(False),
)


def _combine(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.builds(lambda s: {"type": "array", "items": s}, inner),
        st.builds(lambda s, n: {"type": "array", "prefixItems": s, "items": n},
                  st.lists(inner, min_size=1, max_size=2), st.booleans()),
        st.builds(lambda s: {"contains": s}, inner),
        st.builds(lambda props, req, extra: {"type": "object", "properties": props, "required": req,
                                             "additionalProperties": extra},
                  st.dictionaries(st.sampled_from(NAMES), inner, max_size=2),
                  st.lists(st.sampled_from(NAMES), max_size=2, unique=True), st.booleans() | inner),
        st.builds(lambda k, xs: {k: xs}, st.sampled_from(["anyOf", "allOf", "oneOf"]),
                  st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda s: {"not": s}, inner),
        st.builds(lambda a, b: {**a, **b} if isinstance(a, dict) and isinstance(b, dict) else a, inner, inner),
        st.just({"$ref": "#/$defs/shared"}),
    )


schemas = st.recursive(leaf_schemas, _combine, max_leaves=6)


@st.composite
def parameter_schemas(draw: st.DrawFn) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": draw(st.dictionaries(st.sampled_from(NAMES), schemas, min_size=1, max_size=3)),
        "$defs": {"shared": draw(leaf_schemas)},
    }
    if draw(st.booleans()):
        schema["required"] = draw(st.lists(st.sampled_from(NAMES), max_size=2, unique=True))
    if draw(st.booleans()):
        schema["additionalProperties"] = draw(st.booleans())
    return schema


def trigger_with(parameters: dict[str, Any]) -> Trigger:
    return compile_trigger({
        "name": "t", "description": "d", "parameters": parameters,
        "webhook": {"url": "https://api.example.test/x", "method": "POST", "body": {"a": 1}},
    })


@SETTINGS
@given(parameter_schemas(), st.lists(st.dictionaries(st.sampled_from([*NAMES, "d"]), json_values, max_size=3),
                                     min_size=1, max_size=8))
def test_arguments_are_accepted_exactly_when_the_reference_accepts_them(
    parameters: dict[str, Any], argument_sets: list[dict[str, Any]]
) -> None:
    reference = jsonschema.Draft202012Validator(parameters)
    trigger = trigger_with(parameters)
    for arguments in argument_sets:
        expected = sorted(e.message for e in reference.iter_errors(arguments))
        errors = trigger.argument_errors(arguments)
        assert (errors == []) == (expected == []), (parameters, arguments, expected)
        assert len(errors) == len(expected)


@pytest.mark.parametrize(
    ("schema", "values", "bad"),
    [
        ({"type": "integer"}, [2**80, -(2**64), 1.0], 1.5),  # beyond 64 bits
        ({"type": "number", "multipleOf": 0.1}, [0.3, 0.7, 1e308], 0.35),
        ({"type": "string", "pattern": "^\\d+$"}, ["123", "\u0663", "\uff11"], "abc"),  # Unicode digits
        ({"type": "string", "pattern": "^\\w+$"}, ["é", "a_1"], "a-b"),
        ({"type": "array", "uniqueItems": True}, [[1, True], [0, False], [{"a": 1}, {"a": 1.5}]], [1, 1.0]),
        ({"type": "string", "maxLength": 1}, ["\U0001F600", "e\u0301"], "ab"),  # code points, not bytes
    ],
)
def test_edge_values_where_two_validators_could_disagree(schema: dict[str, Any], values: list[Any], bad: Any) -> None:
    trigger = trigger_with({"type": "object", "properties": {"v": schema}})
    reference = jsonschema.Draft202012Validator({"type": "object", "properties": {"v": schema}})
    for value in [*values, bad]:
        assert (trigger.argument_errors({"v": value}) == []) == reference.is_valid({"v": value}), value
    assert trigger.argument_errors({"v": bad}) != []


def test_values_that_are_not_json_are_judged_by_the_reference() -> None:
    trigger = trigger_with({"type": "object", "properties": {"n": {"type": "number", "maximum": 2}}})
    assert trigger.argument_errors({"n": decimal.Decimal("1.5")}) == []
    assert "is greater than the maximum of 2" in trigger.argument_errors({"n": decimal.Decimal("3.5")})[0]
    assert "is not of type 'number'" in trigger.argument_errors({"n": object()})[0]
    assert trigger.argument_errors({"n": math.inf}) != []


def test_errors_name_the_argument_for_the_llm() -> None:
    trigger = trigger_with({"type": "object", "properties": {"order": {"type": "string", "pattern": "^A-"}},
                            "required": ["order"]})
    assert trigger.argument_errors({"order": "A-1"}) == []
    assert trigger.argument_errors({"order": "B-1"}) == ["argument 'order': 'B-1' does not match '^A-'"]
    assert trigger.argument_errors({}) == ["'order' is a required property"]


# -- no schema is ever fetched -----------------------------------------------------------------


@pytest.fixture
def schema_server() -> Iterator[tuple[int, list[str]]]:
    """A loopback server that would serve any schema asked of it, and records that it was asked."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"type": "string"}')

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], asked
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("keyword", ["$ref", "$dynamicRef"])
def test_a_remote_reference_is_refused_at_compile_time_with_its_place(
    keyword: str, schema_server: tuple[int, list[str]]
) -> None:
    port, asked = schema_server
    text = (
        '{"name": "t", "description": "d",\n'
        ' "parameters": {"type": "object", "properties": {\n'
        f'   "a": {{"{keyword}": "http://127.0.0.1:{port}/s.json"}},\n'
        '   "b": {"const": {"$ref": "http://data.example/not-a-reference"}}}},\n'
        ' "webhook": {"url": "https://api.example.test/$a", "method": "GET"}}'
    )
    with pytest.raises(ConfigError) as raised:
        compile_trigger(text, source="trig.json")
    [problem] = raised.value.diagnostics
    assert (problem.source, problem.line, problem.column) == ("trig.json", 3, text.splitlines()[2].index('"http') + 1)
    assert "remote schemas are never fetched" in problem.message and "#/$defs/" in problem.message
    assert asked == []


def test_a_hand_built_trigger_with_a_remote_reference_never_fetches_it(
    schema_server: tuple[int, list[str]]
) -> None:
    port, asked = schema_server
    local = trigger_with({"type": "object", "properties": {"a": {"type": "string"}}})
    remote = dataclasses.replace(
        local, parameters={"type": "object", "properties": {"a": {"$ref": f"http://127.0.0.1:{port}/s.json"}}}
    )
    errors = remote.argument_errors({"a": 1})
    assert errors and "s.json" in errors[0]
    assert asked == []


def test_a_local_reference_to_nowhere_is_refused_at_compile_time() -> None:
    with pytest.raises(ConfigError) as raised:
        trigger_with({"type": "object", "$defs": {"order": {"type": "string"}},
                      "properties": {"a": {"$ref": "#/$defs/ordr"}}})
    assert "'#/$defs/ordr', which does not exist in the schema" in str(raised.value)


def test_local_references_still_work() -> None:
    trigger = trigger_with({
        "type": "object", "$defs": {"order": {"type": "string", "pattern": "^A-"}},
        "properties": {"a": {"$ref": "#/$defs/order"}},
    })
    assert trigger.argument_errors({"a": "A-1"}) == []
    assert trigger.argument_errors({"a": "B-1"}) != []


def test_an_argument_error_does_not_quote_a_huge_value_whole() -> None:
    """The schema's error quotes the value; a 900,000-character argument must not reach the LLM whole."""
    trigger = compile_trigger({
        "name": "t",
        "description": "d",
        "parameters": {"type": "object", "properties": {"q": {"type": "string", "maxLength": 10}}},
        "webhook": {"url": "https://api.example.com/x", "method": "GET"},
    })
    [message] = trigger.argument_errors({"q": "a" * 900_000})
    assert message.startswith("argument 'q': 'aaaa") and "is too long" in message
    assert len(message) < 400 and "characters cut" in message
