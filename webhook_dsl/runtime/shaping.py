"""Response shaping: JMESPath expressions that choose what the LLM reads of a JSON answer (``responseSelect``)
and what of it goes into the session (``clientDataMapping``).

Expressions are compiled when the trigger is, and every error that can be found then is: syntax (at its
column inside the string), unknown functions and wrong argument counts. What only the data can decide (a
function given the wrong type) is worded at call time and never raises. A mapped key obeys the rules of the
``session.client_data`` merge: no system variable, no protected key unless ``clientDataWrites`` lists it,
values the store can hold; where both set a key, the mapping's value is kept, since the trigger names it.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import jmespath
import jmespath.exceptions
import jmespath.functions
import jmespath.parser

from ..errors import Diagnostic
from ..language import syntax
from ..language.names import SYSTEM_VARIABLES
from ..language.parse import SourceText
from ..storage.base import client_data_problems

__all__ = ["compiled", "mapped_client_data", "mapping_key_problems", "select_response", "shaping_problems"]

_FUNCTIONS: Mapping[str, Any] = jmespath.functions.Functions().FUNCTION_TABLE


class _Answer(Protocol):
    """What is read of a ``calls.CallResult`` (a protocol: calls.py imports this module)."""

    @property
    def body(self) -> bytes: ...
    def json(self) -> Any: ...


class _Shaped(Protocol):
    """What is read of a ``trigger.Trigger`` (a protocol: trigger.py imports this module)."""

    @property
    def protected_keys(self) -> frozenset[str]: ...
    @property
    def client_data_writes(self) -> tuple[str, ...]: ...
    @property
    def client_data_mapping(self) -> Mapping[str, str]: ...


@functools.lru_cache(maxsize=4096)
def compiled(expression: str) -> jmespath.parser.ParsedResult:
    """The parsed expression, kept: jmespath's own cache holds 128 and is purged at random."""
    return jmespath.compile(expression)


def _function_problem(node: Any) -> tuple[str, str] | None:
    """The first call of an unknown function or with a wrong argument count: (function name, problem)."""
    stack = [node]
    while stack:
        current = stack.pop()
        if not isinstance(current, dict):
            continue
        if current.get("type") == "function_expression":
            name, given = str(current.get("value")), len(current.get("children", ()))
            entry = _FUNCTIONS.get(name)
            if entry is None:
                return name, f"unknown function {name}(); JMESPath has {', '.join(sorted(_FUNCTIONS))}"
            signature = entry["signature"]
            variadic = bool(signature) and bool(signature[-1].get("variadic"))
            if (given < len(signature)) if variadic else (given != len(signature)):
                wanted = f"at least {len(signature)}" if variadic else str(len(signature))
                return name, f"{name}() takes {wanted} argument(s), not {given}"
        stack.extend(current.get("children", ()))
    return None


def expression_problems(node: syntax.JsonNode, src: SourceText, field: str) -> list[Diagnostic]:
    """Why a JMESPath expression written at ``node`` cannot run, pointing inside the string where it can."""
    if not isinstance(node, syntax.StringTemplate):
        return []  # a wrong type is the model's to report
    expression = node.literal
    if not expression.strip():
        return [src.at(node.span, f"{field}: the JMESPath expression is empty", field=field)]
    try:
        parsed = compiled(expression)
    except jmespath.exceptions.LexerError as error:
        return [_inside(node, src, field, error.lexer_position, error.lexer_value, error.message)]
    except jmespath.exceptions.IncompleteExpressionError as error:
        return [_inside(node, src, field, error.lex_position, None, "the expression ends too early")]
    except jmespath.exceptions.ParseError as error:
        return [_inside(node, src, field, error.lex_position, error.token_value, error.msg)]
    except jmespath.exceptions.JMESPathError as error:
        return [src.at(node.span, f"{field}: not a JMESPath expression ({error})", field=field)]
    found = _function_problem(parsed.parsed)
    if found is None:
        return []
    name, problem = found
    call = re.search(rf"(?<![\w$]){re.escape(name)}\s*\(", expression)
    return [_inside(node, src, field, call.start() if call else None, name, problem)]


def _inside(
    node: syntax.StringTemplate, src: SourceText, field: str, position: int | None, token: str | None, problem: str
) -> Diagnostic:
    """A diagnostic at ``position`` of the expression, when the string is written the way JSON writes it
    (then each character's column is known); else at the whole string."""
    message = f"{field}: invalid JMESPath expression: {problem}"
    literal = node.literal
    raw = src.text[node.span.start + 1 : node.span.end - 1]
    if position is None or "\n" in raw or raw != json.dumps(literal, ensure_ascii=False)[1:-1]:
        return src.at(node.span, message, field=field)
    position = min(position, len(literal))
    offset = len(json.dumps(literal[:position], ensure_ascii=False)) - 2
    width = len(json.dumps(literal[position : position + len(token or " ")], ensure_ascii=False)) - 2
    return src.diagnostic(message, node.span.line, node.span.column + 1 + offset, max(1, width), field=field)


def shaping_problems(root: syntax.JsonObject, src: SourceText) -> list[Diagnostic]:
    """The expressions of ``responseSelect`` and ``clientDataMapping``, and the keys the mapping may not set."""
    problems: list[Diagnostic] = []
    for member in root.members:
        if member.key.literal == "responseSelect":
            problems.extend(expression_problems(member.value, src, "responseSelect"))
        elif member.key.literal == "clientDataMapping" and isinstance(member.value, syntax.JsonObject):
            for entry in member.value.members:
                key, field = entry.key.literal, f"clientDataMapping.{entry.key.literal}"
                if not key:
                    problems.append(src.at(entry.key.span, "clientDataMapping: a key must not be empty", field=field))
                elif key in SYSTEM_VARIABLES:
                    problems.append(
                        src.at(entry.key.span, f"clientDataMapping: '{key}' is a system variable", field=field)
                    )
                problems.extend(expression_problems(entry.value, src, field))
    return problems


def mapping_key_problems(trigger: _Shaped, root: syntax.JsonObject, src: SourceText) -> list[Diagnostic]:
    """Mapped keys the trigger itself protects (a declared secret, a key choosing a destination) and does not
    list under ``clientDataWrites``: the response would choose their value, so each is refused here as the
    merge would refuse it at every call."""
    member = next((m for m in root.members if m.key.literal == "clientDataMapping"), None)
    if member is None or not isinstance(member.value, syntax.JsonObject):
        return []
    return [
        src.at(
            entry.key.span,
            f"clientDataMapping sets '{entry.key.literal}', a declared secret or a key that chooses a webhook's "
            "destination; list it under clientDataWrites to allow it",
            field=f"clientDataMapping.{entry.key.literal}",
        )
        for entry in member.value.members
        if entry.key.literal in trigger.protected_keys
    ]


def _search(expression: str, document: Any) -> tuple[Any, str | None]:
    """The expression's value on ``document``, or None and why it could not be had (never the data: a
    message reaches the LLM and the log, and the data may hold a secret)."""
    try:
        return compiled(expression).search(document), None
    except jmespath.exceptions.JMESPathTypeError as error:
        expected = " or ".join(error.expected_types)
        return None, f"{error.function_name}() was given {error.actual_type}, not {expected}"
    except jmespath.exceptions.JMESPathError as error:
        return None, type(error).__name__


def select_response(expression: str, call: _Answer) -> tuple[Any, str | None]:
    """What ``responseSelect`` chooses of the answer, or None and a plain note for the LLM saying why there
    is nothing to show. An answer that is not JSON is not shown: the selection says what the LLM may read."""
    try:
        document = call.json()
    except ValueError:
        return None, "(the response is not JSON, so the part this tool shows could not be chosen; it is not shown)"
    value, problem = _search(expression, document)
    if problem is not None:
        return None, f"(the part this tool shows could not be chosen from the response: {problem}; it is not shown)"
    if value is None:
        return None, "(the response holds nothing where this tool looks: the selection is null)"
    return value, None


def mapped_client_data(
    call: _Answer, trigger: _Shaped, protected_keys: Iterable[str] = ()
) -> tuple[dict[str, Any], list[str]]:
    """``clientDataMapping`` applied to the answer: keys to merge, and a warning for each key left out."""
    try:
        document = call.json() if call.body.strip() else None
    except ValueError:
        document = None
    if document is None:
        return {}, ["clientDataMapping: the response is not JSON; nothing was mapped"]
    refused = (trigger.protected_keys | set(protected_keys)) - set(trigger.client_data_writes)
    merged: dict[str, Any] = {}
    warnings: list[str] = []
    for key, expression in trigger.client_data_mapping.items():
        if key in SYSTEM_VARIABLES:
            warnings.append(f"clientDataMapping tried to set system variable '{key}'; ignored")
            continue
        if key in refused:
            warnings.append(
                f"clientDataMapping tried to set '{key}', a declared secret or a key that chooses a webhook's "
                "destination; ignored (list it under the trigger's clientDataWrites to allow it)"
            )
            continue
        value, problem = _search(expression, document)
        if problem is not None:
            warnings.append(f"clientDataMapping '{key}': {problem}; not set")
        elif value is None:
            warnings.append(f"clientDataMapping '{key}': the response holds nothing there (null); not set")
        elif problems := client_data_problems({key: value}):
            warnings.append(f"clientDataMapping '{key}': {problems[0]}; not set")
        else:
            merged[key] = value
    return merged, warnings


def with_mapping(
    merged: dict[str, Any], warnings: list[str], call: _Answer, trigger: _Shaped, protected_keys: Iterable[str]
) -> tuple[dict[str, Any], list[str]]:
    """The ``session.client_data`` merge with the mapping's keys added; a key both set takes the mapping's value."""
    mapped, more = mapped_client_data(call, trigger, protected_keys)
    both = [key for key in mapped if key in merged]
    more += [
        f"clientDataMapping and the response's session.client_data both set '{key}'; the mapping's value is kept"
        for key in both
    ]
    return {**merged, **mapped}, [*warnings, *more]
