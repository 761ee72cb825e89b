"""Triggers as the tools of an MCP server (extra ``[mcp]``, the official ``mcp`` SDK).

``build_server`` makes a low-level ``mcp`` server whose tools are triggers: each tool is a trigger's name,
description and ``parameters`` schema, and a call runs through the ``Runtime`` on one session, so it is
validated, logged and masked as every other call. Its result is the trigger's ``message_for_llm`` as text,
``isError`` when the call did not succeed. ``webhook-dsl mcp`` serves it over stdio (``serve_stdio``);
the service mounts it at ``/mcp`` over streamable HTTP (``webhook_dsl.service.mcp``).

This module needs the ``mcp`` package but not the service extra, so ``pip install 'webhook-dsl[mcp]'``
is enough for the stdio server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp_types import (
    CallToolRequestParams,
    CallToolResult,
    ListToolsResult,
    PaginatedRequestParams,
    TextContent,
    Tool,
)

from ._version import __version__
from .runtime.calls import Runtime
from .runtime.trigger import Trigger
from .storage.base import SessionNotFound, Store, StoreUnavailable

__all__ = ["ToolCaller", "build_server", "serve_stdio", "tool_of"]

log = logging.getLogger("webhook_dsl.mcp")

#: At most this many tool names are listed to an LLM that called one that does not exist.
_NAMES_SHOWN = 20


@dataclass(frozen=True)
class ToolCaller:
    """Who is calling: the session a call runs on, its company, and the triggers it may call.

    ``before_call`` runs once a call's arguments are read and its trigger found, just before the runtime
    takes over: the service gives back the request's place in its company's count there, as its REST
    endpoint does, so slow webhooks do not hold the company's share of the service."""

    session_id: str
    company_id: str | None
    triggers: Mapping[str, Trigger]
    protected_keys: frozenset[str] = frozenset()
    before_call: Callable[[], None] | None = None


def tool_of(trigger: Trigger) -> Tool:
    """A trigger as an MCP tool: its name, description and parameters schema, as the LLM APIs get them."""
    return Tool(name=trigger.name, description=trigger.description, input_schema=dict(trigger.parameters))


def _failed(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


def _not_called(name: str, why: str) -> CallToolResult:
    """Worded as the runtime words a call that could not be made: the LLM must not invent a result."""
    return _failed(
        f'The tool "{name}" failed ({why}; nothing was sent). Tell the user the action could not be completed '
        "right now; do not invent a result."
    )


def build_server(runtime: Runtime, caller_of: Callable[[Any], ToolCaller]) -> Server[Any]:
    """The MCP server over ``runtime``. ``caller_of(ctx)`` says, per request, who is calling (the SDK's
    ``ServerRequestContext``: over HTTP its ``request`` carries what the service authenticated)."""

    async def list_tools(ctx: Any, params: PaginatedRequestParams | None) -> ListToolsResult:
        triggers = caller_of(ctx).triggers
        return ListToolsResult(tools=[tool_of(triggers[name]) for name in sorted(triggers)])

    async def call_tool(ctx: Any, params: CallToolRequestParams) -> CallToolResult:
        caller = caller_of(ctx)
        trigger = caller.triggers.get(params.name)
        if trigger is None:
            names = sorted(caller.triggers)
            shown = ", ".join(names[:_NAMES_SHOWN]) + (
                f" and {len(names) - _NAMES_SHOWN} more" if len(names) > _NAMES_SHOWN else ""
            )
            return _failed(f'There is no tool "{params.name}" here; the tools are: {shown or "none"}.')
        if caller.before_call is not None:
            caller.before_call()
        try:
            result = await runtime.call_trigger(
                trigger,
                caller.session_id,
                params.arguments or {},
                (),
                protected_keys=caller.protected_keys,
                company_id=caller.company_id,
            )
        except SessionNotFound:
            log.warning(
                "MCP call of %r: no session %r (company %r)", trigger.name, caller.session_id, caller.company_id
            )
            return _not_called(trigger.name, f"no session {caller.session_id!r} to call it on")
        except StoreUnavailable as error:  # raised before anything was sent; its words are the operator's
            log.warning("MCP call of %r: the database is unavailable: %s", trigger.name, error)
            return _not_called(trigger.name, "the database is unavailable")
        except Exception:  # a bug: logged once; the client gets no internals (they could hold anything)
            log.exception("MCP call of %r failed", trigger.name)
            return _failed(
                f'The tool "{trigger.name}" failed (internal error; the service log has the details). Tell the user '
                "the action could not be completed right now; do not invent a result."
            )
        # message_for_llm is masked by the runtime; nothing else of the result is returned
        return CallToolResult(
            content=[TextContent(type="text", text=result.message_for_llm)], is_error=not result.call.ok
        )

    return Server("webhook-dsl", version=__version__, on_list_tools=list_tools, on_call_tool=call_tool)


async def serve_stdio(
    triggers: Mapping[str, Trigger],
    session_id: str,
    store: Store,
    *,
    company_id: str | None = None,
    **runtime_options: Any,
) -> None:
    """Serve ``triggers`` over stdin and stdout until stdin closes, every call on ``session_id``.

    Raises ``SessionNotFound`` before serving when there is no such session: a typo is one clear line
    at start-up rather than a failure at every call. ``runtime_options`` go to ``Runtime``. While this
    runs the SDK points file descriptor 1 at stderr, so stray output cannot corrupt the protocol."""
    await store.get_session(session_id, company_id=company_id)
    caller = ToolCaller(
        session_id,
        company_id,
        dict(triggers),
        frozenset(key for trigger in triggers.values() for key in trigger.protected_keys),
    )
    async with Runtime(store, **runtime_options) as runtime:
        server = build_server(runtime, lambda ctx: caller)
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())
