"""``/mcp``: the company's triggers as MCP tools over streamable HTTP (extra ``[mcp]``).

A request carries the company's API key like every other (``Authorization: Bearer KEY`` or ``X-Api-Key``;
401 otherwise) and names the session its tool calls run on in the URL, ``/mcp?session_id=S1``: the URL and
a bearer token are all that some MCP clients let one configure. The tools are the key's company's
triggers (``TriggerCatalog.for_company``); a call is the runtime's, logged on that session.

The SDK's session manager runs stateless, with JSON answers: each request is authenticated and served on
its own, so any replica behind a load balancer can serve any request, and the app's middleware sees
ordinary requests (body limit, cross-site refusal, per-company count). As on ``POST
/session/{id}/triggers/{name}``, a tool call counts against its company only until its webhook call
starts, and the time a large body's checks take is charged to its company.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from ..mcp_server import ToolCaller, build_server
from ..runtime.calls import Runtime
from ..runtime.catalog import TriggerCatalog
from ..storage.base import session_id_problem
from .auth import company_of
from .errors import ApiError, _PayloadTooLarge, error_response
from .middleware import LARGE_BODY_BYTES, ServiceSettings, _Slot, _slot

__all__ = ["McpEndpoint"]

#: Where an authenticated request's ``_McpRequest`` rides in the ASGI scope, for the tool handlers.
_SCOPE_KEY = "webhook_dsl.mcp"


class _McpRequest:
    """An authenticated ``/mcp`` request: its company, its session, and its place in the company's count."""

    def __init__(self, company: str, session_id: str, slot: _Slot | None, body_bytes: int) -> None:
        self.company = company
        self.session_id = session_id
        self.slot = slot
        self.large = body_bytes > LARGE_BODY_BYTES
        self.started = time.perf_counter()

    def done(self) -> None:
        """This request's own work is over (its webhook call starts, or its answer goes out): a large body's
        parse and checks are charged to its company, and its place in the company's count is given back."""
        slot = self.slot
        if slot is None or slot.company is None:
            return
        if self.large:
            slot.limit.charge(slot.company, time.perf_counter() - self.started)
        slot.release()


def _session_id(request: Request) -> str:
    values = request.query_params.getlist("session_id")
    if len(values) != 1:
        raise ApiError(
            400,
            "bad_request",
            "name the session the tool calls run on, once, in the MCP URL: /mcp?session_id=ID",
        )
    problem = session_id_problem(values[0])
    if problem is not None:
        raise ApiError(400, "bad_request", f"session_id: {problem}")
    return values[0]


async def _body(receive: Receive) -> bytes | None:
    """The whole request body (the service's limit applies as it is read), or None if the client left."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


class McpEndpoint:
    """The ASGI app at ``/mcp``. ``running()`` must wrap the app's life (its lifespan): the SDK's session
    manager serves requests from a task group that lives that long."""

    def __init__(self, runtime: Runtime, catalog: TriggerCatalog, settings: ServiceSettings) -> None:
        self.catalog = catalog
        self.settings = settings
        self.server = build_server(runtime, self._caller)
        self._manager: StreamableHTTPSessionManager | None = None
        quiet = logging.getLogger("mcp.server.streamable_http")
        if quiet.level == logging.NOTSET:  # stateless, it ends a transport per request and says so at INFO each time
            quiet.setLevel(logging.WARNING)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """A fresh session manager for each start of the app: the SDK's can run only once."""
        manager = StreamableHTTPSessionManager(
            self.server,
            json_response=True,
            stateless=True,
            max_request_body_size=self.settings.max_body_bytes,
        )
        async with manager.run():
            self._manager = manager
            try:
                yield
            finally:
                self._manager = None

    def _caller(self, ctx: Any) -> ToolCaller:
        request = getattr(ctx, "request", None)
        found = request.scope.get(_SCOPE_KEY) if isinstance(request, Request) else None
        if not isinstance(found, _McpRequest):
            raise RuntimeError("an MCP request reached the tools without passing McpEndpoint")
        company = found.company
        return ToolCaller(
            found.session_id,
            company,
            self.catalog.for_company(company),
            self.catalog.protected_keys(company),
            before_call=found.done,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        manager = self._manager
        if manager is None:
            raise RuntimeError("/mcp needs the app's lifespan to have started (McpEndpoint.running)")
        request = Request(scope, receive)
        try:
            company = await company_of(request)
            session_id = _session_id(request)
            if scope["method"] != "POST":
                raise ApiError(
                    405,
                    "method_not_allowed",
                    "MCP requests are POSTs here: this server keeps no MCP session, so it has no event stream to "
                    "open (GET) and no session to end (DELETE)",
                    {"Allow": "POST"},
                )
            body = await _body(receive)
            if body is None:
                return
            slot = _slot.get()
            if len(body) > LARGE_BODY_BYTES and slot is not None:
                slot.limit.admit_large(company)
        except ApiError as error:
            await error_response(error.status, error.code, error.message, error.headers)(scope, receive, send)
            return
        except _PayloadTooLarge as error:
            await error_response(413, "payload_too_large", str(error))(scope, receive, send)
            return
        admitted = _McpRequest(company, session_id, slot, len(body))
        pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

        async def replay() -> Message:
            return pending.pop() if pending else await receive()

        async def send_and_finish(message: Message) -> None:
            if message["type"] == "http.response.start":
                admitted.done()
            await send(message)

        await manager.handle_request({**scope, _SCOPE_KEY: admitted}, replay, send_and_finish)
