"""Triggers as LLM tool definitions: every style checked against the SDKs' own types, OpenAI strict schemas
and the errors where strict mode cannot follow, from Python, the CLI and ``GET /triggers``.

The SDKs (``openai``, ``anthropic``) are test dependencies only: ``TOOL_TYPES`` lists the SDK types every
definition is validated against, with pydantic's ``TypeAdapter`` (the value must come back unchanged, so
no key was ignored on the way).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic.types
import jsonschema
import openai.types.chat
import openai.types.responses
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter
from starlette.testclient import TestClient

from tests.service_support import StoreFactory, make_key
from tests.test_service import check
from webhook_dsl.cli import main
from webhook_dsl.errors import ConfigError
from webhook_dsl.runtime.catalog import TriggerCatalog
from webhook_dsl.runtime.dispatch import _arguments
from webhook_dsl.runtime.tools import _KEPT, STRICT_FORMATS, strict_parameters, tool_definition, tool_definitions
from webhook_dsl.runtime.trigger import Trigger, compile_trigger, load_trigger
from webhook_dsl.service.app import create_app
from webhook_dsl.service.middleware import ServiceSettings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples" / "triggers").glob("*.json"))
MAX_EXAMPLES = int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "200"))

#: Each style's definition is checked against the SDK type of one tool and the union a request's ``tools`` takes.
TOOL_TYPES: dict[str, tuple[Any, ...]] = {
    "openai": (openai.types.chat.ChatCompletionFunctionToolParam, openai.types.chat.ChatCompletionToolUnionParam),
    "openai-responses": (openai.types.responses.FunctionToolParam, openai.types.responses.ToolParam),
    "anthropic": (anthropic.types.ToolParam, anthropic.types.ToolUnionParam),
}
SDK_TOOL_TYPES_CHECKED = sum(map(len, TOOL_TYPES.values()))
_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def conforms(value: Any, sdk_type: Any) -> None:
    """``value`` is the SDK's type exactly: it validates, and comes back equal (no key ignored or coerced)."""
    adapter = _ADAPTERS.setdefault(sdk_type, TypeAdapter(sdk_type))
    assert adapter.validate_python(value) == value, sdk_type


def conforms_to_style(tool: Any, style: str) -> None:
    for sdk_type in TOOL_TYPES[style]:
        conforms(tool, sdk_type)


def test_six_sdk_types_are_checked() -> None:
    assert SDK_TOOL_TYPES_CHECKED == 6


# -- the examples, every style -----------------------------------------------------------------


@pytest.mark.parametrize("style", list(TOOL_TYPES))
def test_every_example_trigger_is_each_sdk_s_own_tool_type(style: str) -> None:
    triggers = [load_trigger(path) for path in EXAMPLES]
    tools = tool_definitions(triggers, style)  # type: ignore[call-overload]
    assert len(tools) == 3
    for trigger, tool in zip(triggers, tools, strict=True):
        conforms_to_style(tool, style)
        schema = tool["input_schema"] if style == "anthropic" else tool.get("parameters") or tool["function"]
        if style == "openai":
            assert tool["function"]["name"] == trigger.name and "strict" not in tool["function"]
            schema = tool["function"]["parameters"]
        assert schema == trigger.parameters  # as written, not strict
    if style == "openai-responses":
        assert [tool["strict"] for tool in tools] == [False, False, False]  # said, or the API decides itself


def test_a_mapping_of_triggers_gives_its_values_in_order() -> None:
    triggers = {t.name: t for t in map(load_trigger, reversed(EXAMPLES))}
    assert [t["name"] for t in tool_definitions(triggers, "anthropic")] == list(triggers)


def test_one_trigger_s_definition_and_an_unknown_style() -> None:
    trigger = load_trigger(EXAMPLES[0])  # analyze_image
    assert [tool_definition(trigger, "openai")] == tool_definitions([trigger], "openai")
    assert tool_definition(trigger, "openai-responses", strict=True)["strict"] is True
    with pytest.raises(ValueError, match="unknown tool style 'gemini'"):
        tool_definition(trigger, "gemini")


def test_strict_is_openai_s_only() -> None:
    with pytest.raises(ValueError, match="strict schemas are OpenAI's"):
        tool_definitions([load_trigger(EXAMPLES[0])], "anthropic", strict=True)


# -- strict mode on the examples ---------------------------------------------------------------


@pytest.mark.parametrize("style", ["openai", "openai-responses"])
def test_analyze_image_is_the_one_example_strict_mode_can_express(style: str) -> None:
    (tool,) = tool_definitions(
        [load_trigger(ROOT / "examples" / "triggers" / "analyze_image.json")], style, strict=True
    )  # type: ignore[call-overload]
    conforms_to_style(tool, style)
    function = tool["function"] if style == "openai" else tool
    assert function["strict"] is True
    assert function["parameters"] == {"type": "object", "properties": {}, "required": [], "additionalProperties": False}


def test_check_order_and_create_ticket_break_strict_rules_at_their_length_limits() -> None:
    triggers = [load_trigger(path) for path in EXAMPLES]
    with pytest.raises(ConfigError) as caught:
        tool_definitions(triggers, "openai", strict=True)
    found = [(Path(d.source).name, d.line, d.column, d.field) for d in caught.value.diagnostics]
    assert found == [
        ("check_order.json", 7, 91, "parameters/properties/order_number/minLength"),
        ("check_order.json", 7, 107, "parameters/properties/order_number/maxLength"),
        ("create_ticket.json", 7, 42, "parameters/properties/issue_title/maxLength"),
        ("create_ticket.json", 8, 48, "parameters/properties/issue_description/maxLength"),
    ]
    first = str(caught.value).splitlines()
    assert first[0] == (
        f'{EXAMPLES[1]}:7:91: OpenAI strict mode: "minLength" cannot be expressed (for strings it supports only '
        '"pattern" and "format"); remove it from the schema, or export this trigger without --strict'
    )
    assert first[2].strip() == "^" * len('"minLength"')  # the caret under the keyword
    for diagnostic in caught.value.diagnostics:  # each points at its keyword as written in the file
        assert diagnostic.source_line is not None
        keyword = diagnostic.field.rsplit("/", 1)[-1] if diagnostic.field else ""
        assert diagnostic.source_line[diagnostic.column - 1 :].startswith(f'"{keyword}"')


# -- strict mode, keyword by keyword -----------------------------------------------------------


def trigger_with(parameters: dict[str, Any]) -> Trigger:
    return compile_trigger(
        json.dumps(
            {
                "name": "t",
                "description": "d",
                "parameters": parameters,
                "webhook": {"url": "https://api.example.com/x", "method": "POST"},
            },
            indent=2,
        ),
        source="t.json",
    )


def test_optional_properties_become_required_and_nullable_everywhere() -> None:
    trigger = trigger_with(
        {
            "type": "object",
            "properties": {
                "title": {"type": "string", "description": "Title"},
                "note": {"type": "string", "pattern": "^[a-z ]*$"},
                "priority": {"type": "string", "enum": ["low", "high"]},
                "channel": {"const": "web"},
                "maybe": {"type": ["integer", "null"]},
                "when": {"type": "string", "format": "date-time"},
                "customer": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "email": {"type": "string", "format": "email"}},
                    "required": ["name"],
                },
                "lines": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 5,
                    "items": {
                        "type": "object",
                        "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}},
                        "required": ["sku"],
                    },
                },
                "address": {"$ref": "#/$defs/address", "description": "Where to ship"},
                "either": {"anyOf": [{"type": "string"}, {"type": "number", "multipleOf": 0.5}]},
            },
            "required": ["title", "lines"],
            "$defs": {"address": {"type": "object", "properties": {"city": {"type": "string"}}}},
        }
    )
    strict = strict_parameters(trigger)
    assert strict == {
        "type": "object",
        "properties": {
            "title": {"type": "string", "description": "Title"},
            "note": {"type": ["string", "null"], "pattern": "^[a-z ]*$"},
            "priority": {"type": ["string", "null"], "enum": ["low", "high", None]},
            "channel": {"anyOf": [{"const": "web", "type": "string"}, {"type": "null"}]},
            "maybe": {"type": ["integer", "null"]},
            "when": {"type": ["string", "null"], "format": "date-time"},
            "customer": {
                "type": ["object", "null"],
                "properties": {
                    "name": {"type": "string"},
                    "email": {"type": ["string", "null"], "format": "email"},
                },
                "required": ["name", "email"],
                "additionalProperties": False,
            },
            "lines": {
                "type": "array",
                "minItems": 1,
                "maxItems": 5,
                "items": {
                    "type": "object",
                    "properties": {"sku": {"type": "string"}, "qty": {"type": ["integer", "null"], "minimum": 1}},
                    "required": ["sku", "qty"],
                    "additionalProperties": False,
                },
            },
            "address": {"anyOf": [{"$ref": "#/$defs/address"}, {"type": "null"}], "description": "Where to ship"},
            "either": {"anyOf": [{"type": "string"}, {"type": "number", "multipleOf": 0.5}, {"type": "null"}]},
        },
        "required": ["title", "note", "priority", "channel", "maybe", "when", "customer", "lines", "address", "either"],
        "$defs": {
            "address": {
                "type": "object",
                "properties": {"city": {"type": ["string", "null"]}},
                "required": ["city"],
                "additionalProperties": False,
            }
        },
        "additionalProperties": False,
    }
    jsonschema.Draft202012Validator.check_schema(strict)
    for style in ("openai", "openai-responses"):
        conforms_to_style(tool_definition(trigger, style, strict=True), style)
    assert trigger.parameters["required"] == ["title", "lines"]  # the trigger's own schema is untouched


REFUSED: list[tuple[dict[str, Any], str, str]] = [
    # (a property's schema, the keyword the error points at, words the message holds)
    ({"type": "string", "minLength": 2}, "minLength", 'for strings it supports only "pattern" and "format"'),
    ({"type": "string", "maxLength": 9}, "maxLength", 'for strings it supports only "pattern" and "format"'),
    ({"type": "string", "format": "uri"}, "format", "the formats it knows: date, date-time, duration, email"),
    ({"type": "string", "default": "x"}, "default", 'its only annotations are "title" and "description"'),
    ({"type": "string", "examples": ["x"]}, "examples", 'its only annotations are "title" and "description"'),
    (
        {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        "uniqueItems",
        'for arrays it supports only "items"',
    ),
    ({"type": "array", "prefixItems": [{"type": "string"}]}, "prefixItems", 'for arrays it supports only "items"'),
    ({"type": "array", "items": {"type": "integer"}, "contains": {"const": 1}}, "contains", "for arrays"),
    (
        {"type": "object", "properties": {}, "minProperties": 1},
        "minProperties",
        'for objects it supports only "properties"',
    ),
    ({"type": "object", "properties": {}, "patternProperties": {"^x": {}}}, "patternProperties", "for objects"),
    ({"type": "object", "properties": {}, "propertyNames": {"pattern": "^a"}}, "propertyNames", "for objects"),
    (
        {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": True},
        "additionalProperties",
        "must be false",
    ),
    (
        {"type": "object", "properties": {}, "additionalProperties": {"type": "string"}},
        "additionalProperties",
        "must be false",
    ),
    ({"type": "object"}, "type", 'an object without "properties" cannot be expressed'),
    ({"oneOf": [{"type": "string"}, {"type": "integer"}]}, "oneOf", "it combines schemas only with anyOf"),
    ({"allOf": [{"type": "string"}]}, "allOf", "it combines schemas only with anyOf"),
    ({"type": "string", "not": {"const": "x"}}, "not", "it combines schemas only with anyOf"),
    ({"type": "string", "if": {"const": "a"}}, "if", "it combines schemas only with anyOf"),
    ({"description": "anything"}, "description", 'this schema needs a "type"'),
    ({"type": "string", "nullable": True}, "nullable", "not among the keywords strict mode supports"),
    ({"type": "string", "$comment": "for us"}, "$comment", 'its only annotations are "title" and "description"'),
]


@pytest.mark.parametrize(("schema", "keyword", "words"), REFUSED, ids=[r[1] + str(i) for i, r in enumerate(REFUSED)])
def test_each_keyword_strict_mode_cannot_express_is_an_error_at_that_keyword(
    schema: dict[str, Any], keyword: str, words: str
) -> None:
    trigger = trigger_with({"type": "object", "properties": {"x": schema}, "required": ["x"]})
    with pytest.raises(ConfigError) as caught:
        strict_parameters(trigger)
    (diagnostic,) = caught.value.diagnostics
    assert words in diagnostic.message and diagnostic.source == "t.json"
    assert diagnostic.source_line is not None
    written = diagnostic.source_line[diagnostic.column - 1 :]
    if keyword == "description":  # no keyword to blame: the schema itself, under its property name
        assert written.startswith('"x"')
    else:
        assert written.startswith(f'"{keyword}"'), (written, keyword)
    tool_definition(trigger, "openai")  # without strict the schema goes as written
    with pytest.raises(ConfigError):
        tool_definitions([trigger], "openai-responses", strict=True)


def test_schema_wide_refusals_point_at_their_place() -> None:
    trigger = trigger_with(
        {
            "type": "object",
            "anyOf": [{"required": ["a"]}, {"required": ["b"]}],
            "properties": {"a": {"type": "string"}},
            "required": ["a", "ghost"],
        }
    )
    with pytest.raises(ConfigError) as caught:
        strict_parameters(trigger)
    messages = [(d.field, d.message) for d in caught.value.diagnostics]
    assert (
        "parameters/anyOf",
        "OpenAI strict mode: the root of the parameters cannot be an anyOf; remove it from "
        "the schema, or export this trigger without --strict",
    ) in messages
    assert any(
        field == "parameters/required/1" and '"ghost" is required but not declared' in m for field, m in messages
    )


def test_a_trigger_built_from_a_mapping_points_into_its_generated_text() -> None:
    trigger = compile_trigger(
        {
            "name": "m",
            "description": "d",
            "parameters": {"type": "object", "properties": {"a": {"type": "string", "maxLength": 3}}},
            "webhook": {"url": "https://api.example.com/x", "method": "GET"},
        }
    )
    with pytest.raises(ConfigError) as caught:
        strict_parameters(trigger)
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.source == "<mapping>" and diagnostic.line > 0
    assert diagnostic.source_line is not None and '"maxLength"' in diagnostic.source_line


# -- strict mode on generated schemas ----------------------------------------------------------

NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)
PATTERNS = ["^[A-Z]-[0-9]+$", "^[a-z]*$"]
LEAVES: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.just({"type": "string"}),
    st.sampled_from(PATTERNS).map(lambda p: {"type": "string", "pattern": p}),
    st.sampled_from(sorted(STRICT_FORMATS)).map(lambda f: {"type": "string", "format": f}),
    st.builds(
        lambda low, span: {"type": "integer", "minimum": low, "maximum": low + span},
        st.integers(-5, 5),
        st.integers(0, 9),
    ),
    st.just({"type": "number", "exclusiveMinimum": 0, "maximum": 100}),
    st.just({"type": "boolean"}),
    st.lists(st.sampled_from(["low", "mid", "high"]), min_size=1, unique=True).map(
        lambda v: {"type": "string", "enum": v}
    ),
    st.just({"const": "fixed"}),
    st.just({"enum": [1, 2, 3]}),
    st.just({"type": ["string", "null"]}),
)


def objects(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    def with_required(properties: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
        return st.lists(st.sampled_from(sorted(properties)), unique=True).map(
            lambda required: {"type": "object", "properties": properties, "required": required}
        )

    return st.dictionaries(NAMES, children, min_size=1, max_size=4).flatmap(with_required)


def extend(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        objects(children),
        st.builds(lambda items, most: {"type": "array", "items": items, "maxItems": most}, children, st.integers(1, 3)),
        st.tuples(st.one_of(objects(LEAVES), LEAVES), LEAVES).map(lambda pair: {"anyOf": list(pair)}),
        children.map(lambda schema: {**schema, "description": "described", "title": "T"}),
    )


@st.composite
def roots(draw: st.DrawFn) -> dict[str, Any]:
    root = draw(objects(st.recursive(LEAVES, extend, max_leaves=6)))
    if draw(st.booleans()):  # a definition, and a property that refers to it (with a sibling keyword or not)
        root["$defs"] = {"shared": draw(objects(LEAVES))}
        reference: dict[str, Any] = {"$ref": "#/$defs/shared"}
        if draw(st.booleans()):
            reference["description"] = "by reference"
        root["properties"]["by_ref"] = reference
    return root


def resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def instances(schema: dict[str, Any], root: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid under ``schema``, as a model would send them to a tool that is not strict."""
    schema = resolve(schema, root)
    if "anyOf" in schema:
        return st.one_of([instances(branch, root) for branch in schema["anyOf"]])
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema["type"]
    if isinstance(kind, list):
        return st.one_of([instances({**schema, "type": k}, root) for k in kind])
    if kind == "null":
        return st.none()
    if kind == "string":
        pattern = schema.get("pattern")
        return st.from_regex(pattern, fullmatch=True) if pattern else st.text(max_size=5)
    if kind == "integer":
        return st.integers(schema["minimum"], schema["maximum"])
    if kind == "number":
        return st.floats(0, 100, exclude_min=True)
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(instances(schema["items"], root), max_size=schema["maxItems"])
    properties = schema["properties"]
    required = {k: instances(v, root) for k, v in properties.items() if k in schema.get("required", [])}
    optional = {k: instances(v, root) for k, v in properties.items() if k not in required}
    return st.fixed_dictionaries(required, optional=optional)


def as_strict_model_sends(value: Any, schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """``value`` as a strict tool sends it: every property present, null for those not given."""
    schema = resolve(schema, root)
    if "anyOf" in schema:
        defs = {"$defs": root["$defs"]} if "$defs" in root else {}
        branch = next(b for b in schema["anyOf"] if jsonschema.Draft202012Validator({**b, **defs}).is_valid(value))
        return as_strict_model_sends(value, branch, root)
    if isinstance(value, dict) and "properties" in schema:
        return {
            k: as_strict_model_sends(value[k], sub, root) if k in value else None
            for k, sub in schema["properties"].items()
        }
    if isinstance(value, list) and "items" in schema:
        return [as_strict_model_sends(item, schema["items"], root) for item in value]
    return value


def strict_shape(node: Any) -> Iterator[dict[str, Any]]:
    """Every schema in a strict schema, checked for strict mode's rules on the way."""
    if not isinstance(node, dict):
        return
    assert set(node) <= _KEPT, set(node) - _KEPT
    assert "$ref" not in node or len(node) == 1  # a $ref stands alone; its siblings moved beside an anyOf
    yield node
    if "object" in ([node["type"]] if isinstance(node.get("type"), str) else node.get("type", [])):
        assert node["additionalProperties"] is False and node["required"] == list(node["properties"])
    for key in ("properties", "$defs"):
        for sub in node.get(key, {}).values():
            yield from strict_shape(sub)
    for sub in node.get("anyOf", []):
        yield from strict_shape(sub)
    if "items" in node:
        yield from strict_shape(node["items"])


@settings(max_examples=MAX_EXAMPLES, deadline=None)
@given(st.data())
def test_generated_schemas_export_strict_and_what_a_strict_model_sends_reaches_the_trigger(data: st.DataObject) -> None:
    parameters = data.draw(roots())
    trigger = trigger_with(parameters)
    for style in ("openai", "openai-responses"):
        conforms_to_style(tool_definition(trigger, style, strict=True), style)
        conforms_to_style(tool_definition(trigger, style), style)
    conforms_to_style(tool_definition(trigger, "anthropic"), "anthropic")
    strict = strict_parameters(trigger)
    jsonschema.Draft202012Validator.check_schema(strict)
    assert list(strict_shape(strict))

    value = data.draw(instances(parameters, parameters))
    assert trigger.argument_errors(value) == []
    sent = as_strict_model_sends(value, parameters, parameters)
    jsonschema.Draft202012Validator(strict).validate(sent)  # the strict schema admits it
    received = _arguments(trigger, sent)
    assert trigger.argument_errors(received) == []  # and the trigger's own schema takes it
    # Exactly what was meant, but for an optional property that accepts null itself: there null stays null.
    assert without_nulls(received) == without_nulls(value)


def without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


# -- the command line --------------------------------------------------------------------------


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), out, err)
    return status, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("style", list(TOOL_TYPES))
def test_cli_prints_each_style(style: str) -> None:
    status, out, err = cli("tools", *map(str, EXAMPLES), "--style", style)
    assert status == 0, err
    tools = json.loads(out)
    for tool in tools:
        conforms_to_style(tool, style)
    assert tools == tool_definitions([load_trigger(p) for p in EXAMPLES], style)  # type: ignore[call-overload]


def test_cli_strict_says_which_examples_break_strict_rules_and_where() -> None:
    status, out, err = cli("tools", *map(str, EXAMPLES), "--style", "openai-responses", "--strict")
    assert status == 1 and out == ""
    heads = [line.split(": OpenAI strict mode: ")[0] for line in err.splitlines() if "OpenAI strict mode" in line]
    assert heads == [f"{EXAMPLES[1]}:7:91", f"{EXAMPLES[1]}:7:107", f"{EXAMPLES[2]}:7:42", f"{EXAMPLES[2]}:8:48"]
    status, out, err = cli("tools", str(EXAMPLES[0]), "--strict")
    assert status == 0 and json.loads(out)[0]["function"]["strict"] is True
    status, out, err = cli("tools", str(EXAMPLES[0]), "--style", "anthropic", "--strict")
    assert status == 2 and "--strict makes OpenAI strict schemas" in err


def test_cli_reports_compile_errors_and_strict_errors_together(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"name": "x"}')
    status, _, err = cli("tools", str(broken), str(EXAMPLES[1]), "--strict")
    assert status == 1
    assert "broken.json:1:1: missing required field 'description'" in err
    assert f"{EXAMPLES[1]}:7:91" in err


# -- GET /triggers -----------------------------------------------------------------------------


def service_with(tmp_path: Path, trigger_files: list[Path]) -> tuple[TestClient, dict[str, str], StoreFactory]:
    folder = tmp_path / "triggers"
    folder.mkdir(parents=True)
    for path in trigger_files:
        (folder / path.name).write_text(path.read_text())
    factory = StoreFactory("sqlite", tmp_path)
    key = make_key(factory, "cmp_42")
    app = create_app(factory(), TriggerCatalog.load(folder), settings=ServiceSettings(access_log=False))
    return TestClient(app), {"Authorization": f"Bearer {key}"}, factory


@pytest.mark.parametrize("style", list(TOOL_TYPES))
def test_get_triggers_gives_every_style(tmp_path: Path, style: str) -> None:
    client, auth, _ = service_with(tmp_path, EXAMPLES)
    with client:
        body = check(client.get("/triggers", params={"style": style}, headers=auth), "/triggers", "GET")
    assert body["style"] == style and body["strict"] is False
    for tool in body["tools"]:
        conforms_to_style(tool, style)


def test_get_triggers_strict(tmp_path: Path) -> None:
    client, auth, _ = service_with(tmp_path, EXAMPLES)
    with client:
        response = client.get("/triggers", params={"style": "openai-responses", "strict": "true"}, headers=auth)
        error = check(response, "/triggers", "GET")["error"]
        assert response.status_code == 409 and error["code"] == "strict_unsupported"
        assert 'check_order.json:7:91: OpenAI strict mode: "minLength" cannot be expressed' in error["message"]
        assert "create_ticket.json:8:48" in error["message"] and str(tmp_path) not in error["message"]
        response = client.get("/triggers", params={"style": "anthropic", "strict": "true"}, headers=auth)
        assert (
            response.status_code == 409 and check(response, "/triggers", "GET")["error"]["code"] == "strict_unsupported"
        )
        response = client.get("/triggers", params={"strict": "yes"}, headers=auth)
        assert response.status_code == 400 and check(response, "/triggers", "GET")["error"]["code"] == "bad_request"
    client, auth, _ = service_with(tmp_path / "only_image", [EXAMPLES[0]])
    with client:
        for style in ("openai", "openai-responses"):
            response = client.get("/triggers", params={"style": style, "strict": "true"}, headers=auth)
            body = check(response, "/triggers", "GET")
            assert body["strict"] is True
            (tool,) = body["tools"]
            conforms_to_style(tool, style)
            assert (tool["function"] if style == "openai" else tool)["strict"] is True


# -- packaging ---------------------------------------------------------------------------------


def test_the_runtime_never_imports_the_sdks() -> None:
    script = (
        "import sys, webhook_dsl.runtime.tools, webhook_dsl.runtime.dispatch, webhook_dsl.cli\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('openai', 'anthropic')))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_py_typed_marks_the_package_typed() -> None:
    assert (ROOT / "webhook_dsl" / "py.typed").is_file()


@pytest.mark.slow
def test_the_wheel_ships_py_typed(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("webhook_dsl-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "webhook_dsl/py.typed" in names
    assert {"webhook_dsl/runtime/tools.py", "webhook_dsl/runtime/dispatch.py"} <= set(names)
