"""Triggers as the tool definitions LLM APIs take: OpenAI Chat Completions, OpenAI Responses, Anthropic.

>>> from webhook_dsl.runtime.trigger import compile_trigger
>>> trigger = compile_trigger({
...     "name": "check_order", "description": "Look up an order.",
...     "parameters": {"type": "object", "properties": {"order_number": {"type": "string"}, "note": {"type": "string"}},
...                    "required": ["order_number"]},
...     "webhook": {"url": "https://erp.example.com/orders/$order_number", "method": "GET"},
... })
>>> tool_definitions([trigger], "openai-responses", strict=True)[0]["parameters"]["properties"]["note"]
{'type': ['string', 'null']}

``strict=True`` gives OpenAI structured-output schemas (``"strict": true``): every object gets
``additionalProperties: false``, every property is required, and an optional one also accepts null,
which the model then sends for "not given" (``dispatch`` drops such a null where the trigger's own
schema refuses it; an optional property that accepts null already is left as written, and there null
stays null). Strict mode takes only part of JSON Schema. A keyword it cannot express is a
``ConfigError`` at that keyword's line and column in the trigger file, never dropped in silence: a
dropped ``maxLength`` would let the model send what the trigger then refuses. The subset is the one
OpenAI's Structured Outputs guide documents as supported (section "Supported schemas"):

* types string, number, integer, boolean, object, array, null, ``enum``, ``const``, ``anyOf``;
* strings: ``pattern``, and ``format`` among date-time, time, date, duration, email, hostname, ipv4,
  ipv6, uuid (no ``minLength``, ``maxLength``);
* numbers: ``multipleOf``, ``minimum``, ``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum``;
* arrays: ``items``, ``minItems``, ``maxItems``;
* objects: ``properties``, ``required``, ``additionalProperties: false``;
* ``$defs``/``definitions`` and ``$ref``; the annotations ``title`` and ``description``.

The root may not be an ``anyOf``. Anthropic's tools take the schema as written; strict export is
OpenAI's only.

The runtime never imports the SDKs: their TypedDicts type the results for a type checker only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, cast, overload

from ..errors import ConfigError, Diagnostic

if TYPE_CHECKING:
    from typing import TypeAlias

    from anthropic.types import ToolParam as AnthropicToolParam
    from openai.types.chat import ChatCompletionFunctionToolParam
    from openai.types.responses import FunctionToolParam

    from .trigger import Trigger

    #: One tool definition, in whichever style was asked for.
    ToolDefinition: TypeAlias = ChatCompletionFunctionToolParam | FunctionToolParam | AnthropicToolParam
else:
    ToolDefinition = dict

__all__ = ["STRICT_FORMATS", "STYLES", "ToolDefinition", "strict_parameters", "tool_definition", "tool_definitions"]

#: ``openai``: Chat Completions ``tools``; ``openai-responses``: the Responses API's flat function tools;
#: ``anthropic``: Messages ``tools``.
STYLES = ("openai", "openai-responses", "anthropic")

Style = Literal["openai", "openai-responses", "anthropic"]

#: The ``format`` values strict mode knows.
STRICT_FORMATS = frozenset({"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"})

_KEPT = frozenset(
    {
        "type",
        "title",
        "description",
        "enum",
        "const",
        "anyOf",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "$ref",
        "$defs",
        "definitions",
        "pattern",
        "format",
        "multipleOf",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minItems",
        "maxItems",
    }
)
_SCHEMA_MAPS = ("properties", "$defs", "definitions")
_STRINGS = 'for strings it supports only "pattern" and "format"'
_OBJECTS = 'for objects it supports only "properties", "required" and "additionalProperties": false'
_ARRAYS = 'for arrays it supports only "items", "minItems" and "maxItems"'
_WHY = {
    **dict.fromkeys(("minLength", "maxLength", "contentEncoding", "contentMediaType", "contentSchema"), _STRINGS),
    **dict.fromkeys(
        (
            "minProperties",
            "maxProperties",
            "patternProperties",
            "propertyNames",
            "unevaluatedProperties",
            "dependentRequired",
            "dependentSchemas",
            "dependencies",
        ),
        _OBJECTS,
    ),
    **dict.fromkeys(
        ("uniqueItems", "contains", "minContains", "maxContains", "prefixItems", "unevaluatedItems", "additionalItems"),
        _ARRAYS,
    ),
    **dict.fromkeys(("allOf", "oneOf", "not", "if", "then", "else"), "it combines schemas only with anyOf"),
    **dict.fromkeys(
        ("default", "examples", "deprecated", "readOnly", "writeOnly", "$comment"),
        'its only annotations are "title" and "description"; say it in the description',
    ),
}
_REMEDY = "remove it from the schema, or export this trigger without --strict"


@overload
def tool_definitions(
    triggers: Iterable[Trigger] | Mapping[str, Trigger], style: Literal["openai"] = ..., *, strict: bool = ...
) -> list[ChatCompletionFunctionToolParam]: ...
@overload
def tool_definitions(
    triggers: Iterable[Trigger] | Mapping[str, Trigger], style: Literal["openai-responses"], *, strict: bool = ...
) -> list[FunctionToolParam]: ...
@overload
def tool_definitions(
    triggers: Iterable[Trigger] | Mapping[str, Trigger], style: Literal["anthropic"], *, strict: bool = ...
) -> list[AnthropicToolParam]: ...
@overload
def tool_definitions(
    triggers: Iterable[Trigger] | Mapping[str, Trigger], style: str, *, strict: bool = ...
) -> list[ToolDefinition]: ...
def tool_definitions(
    triggers: Iterable[Trigger] | Mapping[str, Trigger], style: str = "openai", *, strict: bool = False
) -> list[Any]:
    """The triggers as the ``tools`` of an LLM request, in order (a mapping's values, in its order).

    Raises ``ConfigError`` with every keyword of every trigger that ``strict`` cannot express, and
    ``ValueError`` for an unknown style or ``strict`` with the Anthropic style.
    """
    _check_style(style, strict)
    items = triggers.values() if isinstance(triggers, Mapping) else triggers
    tools: list[Any] = []
    problems: list[Diagnostic] = []
    for trigger in items:
        try:
            tools.append(tool_definition(trigger, style, strict=strict))
        except ConfigError as error:
            problems.extend(error.diagnostics)
    if problems:
        raise ConfigError(problems)
    return tools


def tool_definition(trigger: Trigger, style: str = "openai", *, strict: bool = False) -> ToolDefinition:
    """One trigger as a tool definition (see ``tool_definitions``)."""
    _check_style(style, strict)
    parameters = strict_parameters(trigger) if strict else dict(trigger.parameters)
    if style == "openai":
        function: dict[str, Any] = {"name": trigger.name, "description": trigger.description, "parameters": parameters}
        if strict:
            function["strict"] = True
        return cast("ChatCompletionFunctionToolParam", {"type": "function", "function": function})
    if style == "openai-responses":
        # Sent explicitly either way: the Responses API makes a tool strict when it can unless told otherwise.
        tool = {
            "type": "function",
            "name": trigger.name,
            "description": trigger.description,
            "parameters": parameters,
            "strict": strict,
        }
        return cast("FunctionToolParam", tool)
    return cast(
        "AnthropicToolParam", {"name": trigger.name, "description": trigger.description, "input_schema": parameters}
    )


def _check_style(style: str, strict: bool) -> None:
    if style not in STYLES:
        raise ValueError(f"unknown tool style {style!r}; use one of {', '.join(STYLES)}")
    if strict and style == "anthropic":
        raise ValueError(
            "strict schemas are OpenAI's (styles openai and openai-responses); Anthropic takes the schema as written"
        )


def strict_parameters(trigger: Trigger) -> dict[str, Any]:
    """The trigger's parameter schema as OpenAI strict mode takes it; ``ConfigError`` at each keyword it
    cannot express (module docstring)."""
    converter = _Strict(trigger)
    schema = converter.schema(dict(trigger.parameters), (), root=True)
    if converter.problems:
        raise ConfigError(converter.problems)
    return cast(dict[str, Any], schema)


class _Strict:
    """One walk over a schema: the strict copy, and a diagnostic for each thing it cannot carry."""

    def __init__(self, trigger: Trigger) -> None:
        self.trigger = trigger
        self.problems: list[Diagnostic] = []

    def problem(self, path: tuple[str | int, ...], message: str) -> None:
        positions = self.trigger.parameter_positions
        place = path
        while place and place not in positions:  # a trigger built by hand may have no positions
            place = place[:-1]
        line, column, width, text = positions.get(place, (0, 0, 1, ""))
        field = "/".join(map(str, ("parameters", *path)))
        self.problems.append(
            Diagnostic(
                f"OpenAI strict mode: {message}",
                self.trigger.source,
                line,
                column,
                width,
                text or None,
                field=field,
            )
        )

    def schema(self, node: Any, path: tuple[str | int, ...], *, root: bool = False) -> Any:
        if not isinstance(node, dict):
            self.problem(path, f'a schema written as {node!r} cannot be expressed; write an object with a "type"')
            return node
        result: dict[str, Any] = {}
        refused = False
        for key, value in node.items():
            where = (*path, key)
            if key not in _KEPT:
                refused = True
                why = _WHY.get(key, "it is not among the keywords strict mode supports")
                self.problem(where, f'"{key}" cannot be expressed ({why}); {_REMEDY}')
            elif key in _SCHEMA_MAPS and isinstance(value, dict):
                result[key] = {name: self.schema(sub, (*where, name)) for name, sub in value.items()}
            elif key == "items":
                result[key] = self.schema(value, where)
            elif key == "anyOf" and isinstance(value, list):
                if root:
                    self.problem(where, f"the root of the parameters cannot be an anyOf; {_REMEDY}")
                result[key] = [self.schema(sub, (*where, index)) for index, sub in enumerate(value)]
            elif key == "format" and value not in STRICT_FORMATS:
                known = ", ".join(sorted(STRICT_FORMATS))
                self.problem(
                    where, f'"format": {value!r} cannot be expressed (the formats it knows: {known}); {_REMEDY}'
                )
            elif key == "additionalProperties" and value is not False:
                self.problem(
                    where,
                    '"additionalProperties" must be false (strict mode cannot let an object hold properties it does '
                    "not declare); declare them under properties, or export this trigger without --strict",
                )
            else:
                result[key] = value
        types = _types(node)
        if root and "type" not in node:
            result["type"] = "object"  # what the arguments always are
            types = {"object"}
        if "object" in types:
            self._object(node, result, path, root)
        elif "type" not in node and not {"anyOf", "$ref"} & set(node):
            inferred = _value_types(node)
            if inferred:
                result["type"] = inferred[0] if len(inferred) == 1 else inferred
            elif not refused:  # a schema built on a refused keyword (oneOf...) is reported once, there
                self.problem(path, f'this schema needs a "type" (or an anyOf, or a $ref); {_REMEDY}')
        if "$ref" in result and len(result) > 1:
            if "anyOf" in result:
                self.problem((*path, "$ref"), f'"$ref" next to "anyOf" cannot be expressed; {_REMEDY}')
            else:  # strict mode takes no keyword beside a $ref, but takes them beside an anyOf
                result = {"anyOf": [{"$ref": result.pop("$ref")}], **result}
        return result

    def _object(self, node: dict[str, Any], result: dict[str, Any], path: tuple[str | int, ...], root: bool) -> None:
        properties = result.get("properties")
        if not isinstance(properties, dict):
            if not root:  # the root's undeclared arguments are never used, so closing it changes nothing
                self.problem(
                    (*path, "type") if "type" in node else path,
                    'an object without "properties" cannot be expressed (every object there has '
                    "additionalProperties: false, so it would accept only {}); declare its properties, or export "
                    "this trigger without --strict",
                )
            properties = {}
            result["properties"] = properties
        required = node.get("required", [])
        for index, name in enumerate(required if isinstance(required, list) else ()):
            if name not in properties:
                self.problem(
                    (*path, "required", index),
                    f'"{name}" is required but not declared under properties, and strict mode cannot require a '
                    "property it does not declare; declare it",
                )
        for name in properties:
            if name not in required:
                properties[name] = _nullable(properties[name])
        result["required"] = list(properties)
        result["additionalProperties"] = False


def _types(node: dict[str, Any]) -> set[str]:
    declared = node.get("type")
    if isinstance(declared, str):
        return {declared}
    if isinstance(declared, list):
        return {t for t in declared if isinstance(t, str)}
    return set()


_JSON_TYPES = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"), (type(None), "null"))


def _value_types(node: dict[str, Any]) -> list[str]:
    """The types of an untyped ``enum``/``const``'s values (none when it has neither, or holds a container)."""
    values = node["enum"] if isinstance(node.get("enum"), list) else [node["const"]] if "const" in node else []
    found: list[str] = []
    for value in values:
        name = next((name for kind, name in _JSON_TYPES if type(value) is kind), None)
        if name is None:
            return []
        if name not in found:
            found.append(name)
    return found


def _accepts_null(schema: dict[str, Any]) -> bool:
    if "null" in _types(schema):
        return True
    if isinstance(schema.get("enum"), list) and None in schema["enum"]:
        return True
    if "const" in schema and schema["const"] is None:
        return True
    branches = schema.get("anyOf")
    return isinstance(branches, list) and any(isinstance(b, dict) and _accepts_null(b) for b in branches)


def _nullable(schema: Any) -> Any:
    """An optional property as strict mode writes it: required, and null for "not given"."""
    if not isinstance(schema, dict) or _accepts_null(schema):
        return schema
    declared = schema.get("type")
    with_null = ([declared] if isinstance(declared, str) else list(declared or [])) + ["null"]
    if isinstance(schema.get("enum"), list):
        widened = {**schema, "enum": [*schema["enum"], None]}
        if declared is not None:
            widened["type"] = with_null
        return widened
    if declared is not None and not {"const", "anyOf", "$ref"} & set(schema):
        return {**schema, "type": with_null}
    if "anyOf" in schema and set(schema) <= {"anyOf", "title", "description"}:
        return {**schema, "anyOf": [*schema["anyOf"], {"type": "null"}]}
    return {"anyOf": [schema, {"type": "null"}]}
