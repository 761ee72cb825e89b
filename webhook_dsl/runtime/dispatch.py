"""Runs the tool calls an LLM made and gives back the replies to send it, in the model's own format.

One model turn may call several tools. ``run_tool_calls`` takes that turn's calls as the SDKs give
them, or as plain dicts, and answers each in kind:

=====================================  ==========================================================
a call                                 its reply
=====================================  ==========================================================
OpenAI chat ``tool_calls`` item        ``{"role": "tool", "tool_call_id", "content"}``
OpenAI Responses ``function_call``     ``{"type": "function_call_output", "call_id", "output"}``
Anthropic ``tool_use`` block           ``{"type": "tool_result", "tool_use_id", "content", "is_error"}``
=====================================  ==========================================================

The calls run concurrently; the replies come back in the calls' order. What the model got wrong is a
reply it can act on, never an exception: a tool that does not exist, arguments that are not a JSON
object, arguments that break the schema (``Runtime.call_trigger`` words those and logs the call).
What the caller got wrong is a ``ToolCallFormatError``: an item of no known format, or calls of
several formats together. Items of any other type are passed over (text, reasoning, the calls of
built-in and custom tools, which are not triggers), so a whole ``response.output`` (Responses) or
``message.content`` (Anthropic) can be handed in as it is.

A strict tool (``tools.tool_definitions(..., strict=True)``) makes the model send null for an optional
argument it does not give; such a null is dropped when the trigger's own schema refuses it and
accepts the arguments without it.

SDK objects are read by attribute, dicts by key: the SDKs are never imported.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import orjson

from ..storage.base import MAX_CLIENT_DATA_DEPTH, Store, describe_json_type
from .calls import CallResult, Runtime, TriggerResult, run
from .catalog import TriggerCatalog
from .masking import Masker
from .trigger import Trigger

if TYPE_CHECKING:
    from typing import TypeAlias

    from anthropic.types import ToolResultBlockParam
    from openai.types.chat import ChatCompletionToolMessageParam
    from openai.types.responses.response_input_param import FunctionCallOutput

    #: One reply, in the format of the call it answers.
    ToolReply: TypeAlias = ChatCompletionToolMessageParam | FunctionCallOutput | ToolResultBlockParam
else:
    ToolReply = dict

__all__ = [
    "CALL_TYPES",
    "FORMATS",
    "ToolCall",
    "ToolCallFormatError",
    "ToolReply",
    "parse_arguments",
    "read_tool_calls",
    "refused_result",
    "run_tool_calls",
    "run_tool_calls_sync",
]

Format = Literal["openai", "openai-responses", "anthropic"]
#: The call formats, named as the tool styles of ``tools.py`` that make them.
FORMATS: tuple[Format, ...] = ("openai", "openai-responses", "anthropic")
_DESCRIBED = {
    "openai": "an OpenAI chat tool call",
    "openai-responses": "an OpenAI Responses function_call",
    "anthropic": "an Anthropic tool_use block",
}
#: The types of the items that are calls of function tools (a chat tool call may leave its type out).
CALL_TYPES = frozenset({"function", "function_call", "tool_use"})
_NAMES_LISTED = 50


class ToolCallFormatError(ValueError):
    """Items that are not one model turn's tool calls: the caller's mistake, not the model's."""


class ToolCall(NamedTuple):
    """One call, whatever its format: what to answer, which tool, and its arguments or why they are unusable.
    A named tuple, being made for every call: cheaper to make than a frozen dataclass."""

    format: Format
    call_id: str
    name: str
    arguments: dict[str, Any] | None
    #: Why ``arguments`` is None: they were not a JSON object (in words for the model).
    problem: str | None = None


def _get(item: Any, name: str) -> Any:
    if type(item) is dict:  # the common case first: isinstance against an ABC costs more than the rest
        return item.get(name)
    return item.get(name) if isinstance(item, Mapping) else getattr(item, name, None)


def read_tool_calls(calls: Iterable[Any]) -> list[ToolCall]:
    """The calls among ``calls`` (SDK objects, dicts or ``ToolCall``), in order, all of one format.

    Raises ``ToolCallFormatError`` for an item of no known format, a call missing its id or name, or
    calls of several formats.
    """
    found: list[ToolCall] = []
    for index, item in enumerate(calls):
        call = item if isinstance(item, ToolCall) else _read(item, index)
        if call is None:
            continue
        if found and call.format != found[0].format:
            raise ToolCallFormatError(
                f"calls of several formats: {_DESCRIBED[found[0].format]} and, at item {index}, "
                f"{_DESCRIBED[call.format]}; send the calls of one model turn"
            )
        found.append(call)
    return found


def _read(item: Any, index: int) -> ToolCall | None:
    get: Callable[[str], Any] = item.get if type(item) is dict else lambda name: _get(item, name)
    kind = get("type")
    if kind == "function_call":
        fmt: Format = "openai-responses"
        call_id, name, arguments = get("call_id"), get("name"), get("arguments")
        needs = "call_id, name and arguments"
    elif kind == "tool_use":
        fmt = "anthropic"
        call_id, name, arguments = get("id"), get("name"), get("input")
        needs = "id, name and input (an object)"
        if type(arguments) is not dict and not isinstance(arguments, Mapping):
            arguments = None
    elif kind in ("function", None) and get("function") is not None:
        fmt = "openai"
        function = get("function")
        call_id, name, arguments = get("id"), _get(function, "name"), _get(function, "arguments")
        needs = "id and function.name and function.arguments"
    elif isinstance(kind, str) and kind not in CALL_TYPES:
        return None  # no call of a trigger: text, reasoning, a built-in or custom tool's call
    else:
        raise ToolCallFormatError(
            f"item {index} is not a tool call: expected an OpenAI chat tool call (id, function), a Responses "
            'function_call (type "function_call") or an Anthropic tool_use block (type "tool_use")'
        )
    if type(call_id) is not str or type(name) is not str:
        raise ToolCallFormatError(f"item {index}: {_DESCRIBED[fmt]} needs {needs}")
    if type(arguments) is str:
        parsed, problem = parse_arguments(arguments)
        return ToolCall(fmt, call_id, name, parsed, problem)
    if type(arguments) is not dict:
        if not isinstance(arguments, Mapping):
            raise ToolCallFormatError(f"item {index}: {_DESCRIBED[fmt]} needs {needs}")
        arguments = dict(arguments)
    if _too_deep(arguments):
        return ToolCall(fmt, call_id, name, None, f"they nest deeper than {MAX_CLIENT_DATA_DEPTH} levels")
    return ToolCall(fmt, call_id, name, arguments)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_arguments(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """Arguments as the OpenAI APIs carry them, a JSON text: ``(object, None)``, or ``(None, why not)``.
    Empty text is no arguments."""
    if not text.strip():
        return {}, None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:  # the stdlib says what is wrong, or reads what orjson does not (1e400)
        try:
            value = json.loads(text, parse_constant=_reject_constant)
        except RecursionError:
            return None, "they are nested too deeply"
        except ValueError as error:
            return None, f"they are not valid JSON ({error})"
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except (UnicodeEncodeError, RecursionError):
            return None, "they hold a lone UTF-16 surrogate (\\ud800-\\udfff)"
    if type(value) is not dict:
        return None, f"they are {describe_json_type(value)}, not a JSON object"
    if _too_deep(value):
        return None, f"they nest deeper than {MAX_CLIENT_DATA_DEPTH} levels"
    return value, None


def _too_deep(value: Any) -> bool:
    """Whether objects and arrays nest deeper than a session's client_data may (what the service allows)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, level = stack.pop()
        if level > MAX_CLIENT_DATA_DEPTH:
            return True
        for item in node.values() if type(node) is dict else node:
            if type(item) is dict or type(item) is list:
                stack.append((item, level + 1))
    return False


def _reply(call: ToolCall, content: str, is_error: bool) -> ToolReply:
    if call.format == "openai":
        return {"role": "tool", "tool_call_id": call.call_id, "content": content}
    if call.format == "openai-responses":
        return {"type": "function_call_output", "call_id": call.call_id, "output": content}
    return {"type": "tool_result", "tool_use_id": call.call_id, "content": content, "is_error": is_error}


def _shown(name: str) -> str:
    return name if len(name) <= 64 else name[:64] + "..."


def _unparsable(name: str, problem: str) -> str:
    return (
        f'The tool "{_shown(name)}" was not called: its arguments are unusable: {problem}. '
        "Call it again with its arguments as one JSON object."
    )


def refused_result(trigger: Trigger, session_id: str, problem: str) -> TriggerResult:
    """The result of a call whose arguments were no JSON object: nothing was sent, and nothing logged."""
    call = CallResult(False, trigger.plan.method, "", category="bad_arguments", error=f"arguments: {problem}")
    return TriggerResult(trigger.name, session_id, call, _unparsable(trigger.name, problem), {}, [], None, Masker())


def _unknown(name: str, names: Sequence[str]) -> str:
    listed = ", ".join(sorted(names)[:_NAMES_LISTED]) or "(none)"
    if len(names) > _NAMES_LISTED:
        listed += f" and {len(names) - _NAMES_LISTED} more"
    return f'There is no tool "{_shown(name)}", so nothing was run. The tools you can call are: {listed}.'


def _has_null(value: Any) -> bool:
    """Whether a null is anywhere in arguments (plain loops: this runs on every call)."""
    for item in value.values() if type(value) is dict else value:
        if item is None or ((type(item) is dict or type(item) is list) and _has_null(item)):
            return True
    return False


def _resolve(schema: Any, root: Mapping[str, Any]) -> Any:
    """A local ``$ref`` (``#`` or ``#/$defs/name``) followed, a few hops at most; anything else as it is."""
    for _ in range(8):
        reference = schema.get("$ref") if isinstance(schema, dict) else None
        if not isinstance(reference, str) or not reference.startswith("#"):
            return schema
        target: Any = root
        for part in filter(None, reference[1:].split("/")):
            part = part.replace("~1", "/").replace("~0", "~")
            target = target.get(part) if isinstance(target, Mapping) else None
        schema = target
    return schema


def _without_unset(value: Any, schema: Any, root: Mapping[str, Any]) -> Any:
    """``value`` without the nulls given for optional properties: how a strict tool says "not given"."""
    schema = _resolve(schema, root)
    if not isinstance(schema, Mapping):
        return value
    branches = schema.get("anyOf")
    if isinstance(branches, list) and "properties" not in schema and "items" not in schema:
        others = [b for b in branches if not (isinstance(b, Mapping) and b.get("type") == "null")]
        if len(others) == 1:
            return _without_unset(value, others[0], root)
        if type(value) is dict:  # the object branch declaring exactly the keys sent: a strict tool sends them all
            for branch in others:
                resolved = _resolve(branch, root)
                declared = resolved.get("properties") if isinstance(resolved, Mapping) else None
                if isinstance(declared, Mapping) and set(declared) == set(value):
                    return _without_unset(value, resolved, root)
        return value
    if type(value) is dict:
        properties = schema.get("properties")
        properties = properties if isinstance(properties, Mapping) else {}
        required = schema.get("required")
        required = set(required) if isinstance(required, list) else set()
        return {
            key: _without_unset(item, properties[key], root) if key in properties else item
            for key, item in value.items()
            if not (item is None and key in properties and key not in required)
        }
    if type(value) is list and isinstance(schema.get("items"), Mapping):
        return [_without_unset(item, schema["items"], root) for item in value]
    return value


def _arguments(trigger: Trigger, arguments: dict[str, Any]) -> dict[str, Any]:
    """The arguments to call with: as sent, or without strict mode's "not given" nulls when only those
    break the trigger's schema (then the errors the model sees are about what it sent)."""
    if not _has_null(arguments) or not trigger.argument_errors(arguments):
        return arguments
    unset = _without_unset(arguments, trigger.parameters, trigger.parameters)
    return arguments if trigger.argument_errors(unset) else unset


async def run_tool_calls(
    runtime: Runtime,
    triggers: TriggerCatalog | Mapping[str, Trigger] | Iterable[Trigger],
    session_id: str,
    calls: Iterable[Any],
    *,
    company_id: str | None = None,
    images: Sequence[str] = (),
    request_id: str | None = None,
) -> list[ToolReply]:
    """Run one model turn's tool calls on a session; return the replies, in order, ready to send back.

    ``triggers``: the tools the model was given, by name (a mapping, any iterable of triggers, or a
    ``TriggerCatalog``, whose company is ``company_id`` or else the session's). ``images``: the
    conversation's images, for triggers that read ``$images``. ``request_id``: written into each call's log
    record (the service passes its ``X-Request-Id``). Raises ``ToolCallFormatError`` (see
    ``read_tool_calls``), and what ``call_trigger`` raises for the session itself (``SessionNotFound``,
    ``StoreUnavailable``); every other failure is a reply.
    """
    parsed = read_tool_calls(calls)
    table: Mapping[str, Trigger]
    protected: frozenset[str]
    if isinstance(triggers, TriggerCatalog):
        if company_id is None:
            company_id = (await _store(runtime).get_session(session_id)).company_id
        table = triggers.for_company(company_id)
        protected = triggers.protected_keys(company_id)
    else:
        table = triggers if type(triggers) is dict or isinstance(triggers, Mapping) else {t.name: t for t in triggers}
        # What no response may set: every trigger's secrets and destinations, as the service passes them.
        protected = frozenset()
        for each in table.values():
            if each.protected_keys:
                protected = protected | each.protected_keys

    # The calls go to call_trigger as they are, gathered as a bare caller would gather them; the rest of the
    # work (reading, the reply) is done around them, not in a coroutine of its own per call.
    replies: list[Any] = []
    running: list[tuple[int, ToolCall]] = []
    pending: list[Coroutine[Any, Any, TriggerResult]] = []
    for call in parsed:
        trigger = table.get(call.name)
        if trigger is None:
            replies.append(_reply(call, _unknown(call.name, list(table)), True))
        elif call.arguments is None:
            replies.append(_reply(call, _unparsable(call.name, call.problem or "they are not a JSON object"), True))
        else:
            running.append((len(replies), call))
            replies.append(None)
            arguments = _arguments(trigger, call.arguments)
            pending.append(
                runtime.call_trigger(
                    trigger,
                    session_id,
                    arguments,
                    images,
                    protected_keys=protected,
                    company_id=company_id,
                    request_id=request_id,
                )
            )
    if not pending:  # nothing reached the session: a session that does not exist is refused all the same
        await _store(runtime).get_session(session_id, company_id=company_id)
        return replies
    if len(pending) == 1:
        results: list[Any] = [await pending[0]]
    else:
        results = await asyncio.gather(*pending, return_exceptions=True)
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:  # raised once every call has finished: none is left running unseen
            raise failure
    for (index, call), result in zip(running, results, strict=True):
        replies[index] = _reply(call, result.message_for_llm, not result.call.ok)
    return replies


def _store(runtime: Runtime) -> Store:
    if runtime.store is None:
        raise RuntimeError("this Runtime has no store; pass one, e.g. Runtime(SQLiteStore('webhooks.db'))")
    return runtime.store


def run_tool_calls_sync(
    triggers: TriggerCatalog | Mapping[str, Trigger] | Iterable[Trigger],
    session_id: str,
    calls: Iterable[Any],
    *,
    store: Store | None = None,
    database: str = "webhooks.db",
    company_id: str | None = None,
    images: Sequence[str] = (),
    event_loop: str = "auto",
    **runtime_options: Any,
) -> list[ToolReply]:
    """``run_tool_calls`` from synchronous code: a Runtime (and a store, unless given) for the duration."""
    from ..storage.sqlite import SQLiteStore

    async def go() -> list[ToolReply]:
        the_store: Store = store if store is not None else SQLiteStore(database)
        try:
            async with Runtime(the_store, **runtime_options) as runtime:
                return await run_tool_calls(runtime, triggers, session_id, calls, company_id=company_id, images=images)
        finally:
            if store is None:
                await the_store.close()

    return run(go(), event_loop=event_loop)
