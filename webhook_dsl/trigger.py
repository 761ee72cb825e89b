"""Turns a trigger file into a ``Trigger``: the tool an LLM calls, with its compiled webhook.

A trigger file is a JSON template (its ``webhook`` may hold bare ``$images``)::

    {"name": "check_order", "description": "...",
     "parameters": {"type": "object", "properties": {"order_number": {"type": "string"}}},
     "interpretResponse": true,
     "clientData": ["erp_token"],
     "webhook": {"url": "https://erp.example.com/orders/$order_number", "method": "GET", ...}}

``parameters`` is a JSON Schema (checked against its metaschema at compile time,
arguments validated with ``jsonschema`` at call time). ``clientData`` declares
the session keys the webhook expects, so ``check`` can tell a typo from a
client_data key before deploy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
from pydantic import BaseModel, ConfigDict, ValidationError

from . import ast
from .compiler import compile_template
from .config import skeleton, validate_webhook
from .errors import ConfigError, Diagnostic
from .parse import SourceText, parse_config, parse_mapping
from .plan import WebhookPlan

__all__ = ["SYSTEM_VARIABLES", "Trigger", "compile_trigger", "load_trigger"]

#: Variables the platform sets for every call; nothing else may define or overwrite them.
SYSTEM_VARIABLES = ("session.id", "company.id", "assistant.id")
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")


class _TriggerModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True)
    name: str
    description: str
    parameters: dict[str, Any] = {"type": "object", "properties": {}}
    interpretResponse: bool = True  # noqa: N815 - the seed's field name
    clientData: list[str] = []  # noqa: N815
    retryPost: bool = False  # noqa: N815
    secrets: list[str] = []
    webhook: Any


@dataclass(frozen=True, slots=True)
class Trigger:
    """A named tool with an argument schema and the webhook it fires."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    interpret_response: bool
    client_data_keys: tuple[str, ...]
    retry_post: bool
    secrets: tuple[str, ...]
    plan: WebhookPlan
    source: str

    @property
    def parameter_names(self) -> tuple[str, ...]:
        properties = self.parameters.get("properties") or {}
        return tuple(properties) if isinstance(properties, dict) else ()

    @property
    def secret_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.secrets + self.plan.secrets))

    def argument_errors(self, arguments: Mapping[str, Any]) -> list[str]:
        """Every way the arguments break the schema, in words an LLM can act on (empty if valid)."""
        validator = _validator(self)
        messages = []
        for error in sorted(validator.iter_errors(dict(arguments)), key=lambda e: list(e.path)):
            where = "/".join(str(p) for p in error.path)
            messages.append(f"argument '{where}': {error.message}" if where else error.message)
        return messages

    def tool_definition(self, style: str = "openai") -> dict[str, Any]:
        """The trigger as a function-calling tool: ``openai`` or ``anthropic`` shape."""
        if style == "openai":
            return {
                "type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": dict(self.parameters)},
            }
        if style == "anthropic":
            return {"name": self.name, "description": self.description, "input_schema": dict(self.parameters)}
        raise ValueError(f"unknown tool style {style!r}; use 'openai' or 'anthropic'")

    def undefined_references(self) -> list[Diagnostic]:
        """References no source can define: not system, not a parameter, not declared client_data, not images."""
        known = set(SYSTEM_VARIABLES) | set(self.parameter_names) | set(self.client_data_keys) | {"images"}
        problems = []
        for slot in self.plan.slots():
            if not any(name in known for name in slot.candidates):
                problems.append(
                    Diagnostic(
                        message=f"{slot.written}: no source defines it (not a system variable, not a parameter "
                        f"of the schema, not a declared clientData key)",
                        source=self.source,
                        line=slot.line,
                        column=slot.column,
                        width=len(slot.written),
                        field=slot.field,
                        variable=slot.written,
                    )
                )
        return problems


_VALIDATORS: dict[int, tuple[Trigger, jsonschema.protocols.Validator]] = {}


def _validator(trigger: Trigger) -> jsonschema.protocols.Validator:
    """Building a validator costs more than using it: one per trigger, kept while the trigger lives."""
    cached = _VALIDATORS.get(id(trigger))
    if cached is None or cached[0] is not trigger:
        if len(_VALIDATORS) > 10_000:
            _VALIDATORS.clear()
        cached = (trigger, jsonschema.Draft202012Validator(dict(trigger.parameters)))
        _VALIDATORS[id(trigger)] = cached
    return cached[1]


def _member(node: ast.JsonObject, key: str) -> ast.JsonMember | None:
    return next((m for m in node.members if m.key.literal == key), None)


def compile_trigger(config: str | bytes | Mapping[str, Any], source: str | None = None) -> Trigger:
    """Compile a trigger file (text or mapping); raise ``ConfigError`` listing every problem."""
    if isinstance(config, Mapping):
        name = source or "<mapping>"
        text = json.dumps(config, ensure_ascii=False, indent=2)
        root = parse_mapping(config, name)
    else:
        text = config.decode("utf-8") if isinstance(config, bytes) else config
        name = source or "<trigger>"
        root = parse_config(text, name)
    src = SourceText(text, name)
    problems: list[Diagnostic] = []
    if not isinstance(root, ast.JsonObject):
        raise ConfigError([src.at(root.span, "a trigger must be a JSON object with name, description and webhook")])
    data = {m.key.literal: skeleton(m.value) for m in root.members}
    try:
        model = _TriggerModel.model_validate(data)
    except ValidationError as failure:
        for item in failure.errors():
            loc = item["loc"]
            member = _member(root, str(loc[0])) if loc else None
            span = (
                (member.key.span if item["type"] == "extra_forbidden" else member.value.span)
                if member
                else ast.Span(root.span.line, root.span.column, root.span.start, root.span.start + 1)
            )
            field = ".".join(map(str, loc))
            message = {
                "missing": f"missing required field '{field}'",
                "extra_forbidden": f"unknown field '{field}'; known fields: {', '.join(_TriggerModel.model_fields)}",
            }.get(item["type"], f"'{field}': {item['msg'].lower()}")
            problems.append(src.at(span, message, field=field))
        model = None
    plan = None
    webhook = _member(root, "webhook")
    if webhook is not None:
        try:
            plan = compile_template(validate_webhook(webhook.value, src))
        except ConfigError as error:
            problems.extend(error.diagnostics)
    if model is not None:
        if not _TOOL_NAME.match(model.name):
            member = _member(root, "name")
            assert member is not None
            problems.append(
                src.at(
                    member.value.span,
                    "name must be 1-64 letters, digits, '_' or '-' (what LLM tool-calling APIs accept)",
                    field="name",
                )
            )
        parameters = _member(root, "parameters")
        try:
            jsonschema.Draft202012Validator.check_schema(model.parameters)
            if model.parameters.get("type", "object") != "object":
                raise jsonschema.SchemaError('the parameters schema must describe an object ("type": "object")')
        except jsonschema.SchemaError as error:
            assert parameters is not None
            problems.append(
                src.at(
                    parameters.value.span, f"parameters is not a valid JSON Schema: {error.message}", field="parameters"
                )
            )
        for name_ in (
            model.parameters.get("properties", {}) if isinstance(model.parameters.get("properties"), dict) else ()
        ):
            if name_ in SYSTEM_VARIABLES:
                assert parameters is not None
                problems.append(
                    src.at(
                        parameters.value.span, f"parameter '{name_}' would shadow a system variable", field="parameters"
                    )
                )
    if problems or model is None or plan is None:
        raise ConfigError(sorted(problems, key=lambda d: (d.line, d.column)))
    return Trigger(
        name=model.name,
        description=model.description,
        parameters=model.parameters,
        interpret_response=model.interpretResponse,
        client_data_keys=tuple(model.clientData),
        retry_post=model.retryPost,
        secrets=tuple(model.secrets),
        plan=plan,
        source=name,
    )


def load_trigger(path: str | Path) -> Trigger:
    return compile_trigger(Path(path).read_text(encoding="utf-8"), source=str(path))


def is_trigger_document(text: str) -> bool:
    """Cheap sniff used by the CLI: a trigger has a top-level "webhook" member."""
    return bool(re.search(r'^\s*"webhook"\s*:', text, re.MULTILINE))
