"""The HTTP service: sessions, trigger calls, call logs and secrets, for many companies.

``create_app(store, catalog)`` builds the Starlette app; ``webhook-dsl serve`` runs it on uvicorn. Every
request but the probes and ``/openapi.json`` carries an API key bound to one company, and sees that
company's sessions, logs, triggers and secrets only (``auth``). What a request may cost and who may send
it is decided before it reaches an endpoint (``middleware``); errors share one shape (``errors``).
Secrets are written, listed by name and deleted, never read back: only the runtime reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

import orjson
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from .._version import __version__
from ..errors import DiagnosticsError
from ..runtime.calls import Runtime
from ..runtime.catalog import TriggerCatalog, TriggerLoadError
from ..runtime.dispatch import ToolCallFormatError, parse_arguments, read_tool_calls, refused_result, run_tool_calls
from ..runtime.tools import STYLES, tool_definitions
from ..storage.base import (
    MAX_CLIENT_DATA_DEPTH,
    ClientDataTooLarge,
    Session,
    SessionNotFound,
    Store,
    StoreUnavailable,
    client_data_problems,
    describe_json_type,
    long_digit_run,
    secret_problem,
    session_id_problem,
)
from .auth import (
    _KeyCache,
    company_of,
)
from .dashboard import routes as dashboard_routes
from .errors import (
    ApiError,
    JSONResponse,
    _api_error,
    _http_error,
    _one_line,
    _PayloadTooLarge,
    _store_unavailable,
    _too_large,
    error_response,
    retry_seconds,
)
from .metrics import ObservedRuntime, ServiceMetrics, metrics_endpoint
from .middleware import (
    ServiceSettings,
    _CompanyLimit,
    _content_length,
    _Guard,
    _LargeBody,
    _slot,
    current_request_id,
    expect_json,
    media_type,
)
from .openapi import (
    MAX_ASSISTANT_ID,
    MAX_IMAGE_URL,
    MAX_IMAGES,
    MAX_LOGS,
    MAX_TOOL_CALLS,
    TRIGGER_NAME_PATTERN,
    openapi_document,
)
from .settings import ServiceConfig, app_inputs, purge_old_logs
from .triggers import TriggerSync
from .triggers import routes as trigger_routes
from .views import session_view

if TYPE_CHECKING:
    from .mcp import McpEndpoint

__all__ = ["TriggerCatalog", "TriggerLoadError", "create_app"]

log = logging.getLogger("webhook_dsl.service")

_TRIGGER_NAME = re.compile(TRIGGER_NAME_PATTERN)
#: Nesting of a request's JSON: client_data (and arguments) at most MAX_CLIENT_DATA_DEPTH deep, plus the body
#: object around them; deeper is refused, not a stack overflow. client_data_problems applies the exact rule.
_MAX_DEPTH = MAX_CLIENT_DATA_DEPTH + 1


# -- request parsing --------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_json(data: bytes | str, what: str, *, nesting: bool = True) -> Any:
    """A request's JSON: orjson when it reads the text exactly (a tenth of the time), else the stdlib,
    which also words every refusal. orjson refuses NaN, lone surrogates and out-of-range numbers itself.

    ``nesting=False``: the caller checks the nesting itself, in the walk it makes anyway (client_data's,
    ``client_data_problems``), so a PUT is walked once; orjson's own limit (1,024 levels) still holds, and
    the stdlib's result is always checked here, as its encoding check below recurses."""
    if isinstance(data, bytes) and not long_digit_run(data):
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # the stdlib below says what is wrong, or accepts what orjson does not (1e400)
        else:
            if nesting and _too_deep(value):
                raise ApiError(400, "bad_request", f"{what}: nested deeper than {MAX_CLIENT_DATA_DEPTH} levels")
            return value
    try:
        value = json.loads(data, parse_constant=_reject_constant)
    except RecursionError:
        raise ApiError(400, "bad_request", f"{what}: nested too deeply") from None
    except ValueError as error:  # JSONDecodeError, bad UTF-8, NaN, an integer too long
        raise ApiError(400, "bad_request", f"{what}: not valid JSON ({error})") from None
    if _too_deep(value):
        raise ApiError(400, "bad_request", f"{what}: nested deeper than {MAX_CLIENT_DATA_DEPTH} levels")
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, "bad_request", f"{what}: holds a lone UTF-16 surrogate (\\ud800-\\udfff)") from None
    return value


_CONTAINERS = frozenset({dict, list})


def _too_deep(value: Any) -> bool:
    """Whether more than ``_MAX_DEPTH`` objects and arrays nest in a parsed document. Iterative, and a
    container with nothing nested in it is passed over in C (``map(type, ...)``): a 60,000-key object
    costs no Python loop over its keys."""
    if type(value) not in _CONTAINERS:
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, level = stack.pop()
        if level > _MAX_DEPTH:
            return True
        items = node.values() if type(node) is dict else node
        if _CONTAINERS.isdisjoint(map(type, items)):
            continue
        stack.extend((item, level + 1) for item in items if type(item) in _CONTAINERS)
    return False


def _depth(value: Any, level: int = 0) -> int:
    """How many objects and arrays nest in a document, counted up to just past ``_MAX_DEPTH``: the rule
    ``_too_deep`` applies, written plainly (recursive, item by item) for the tests to hold it to."""
    if level > _MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def _session_id(request: Request) -> str:
    session_id = str(request.path_params["session_id"])
    problem = session_id_problem(session_id)
    if problem is not None:
        raise ApiError(400, "bad_request", problem)
    return session_id


def _check_client_data(value: Any, limit: int) -> dict[str, Any]:
    """client_data as a PUT gives it, checked cheapest first: an object; then its size, which orjson
    measures in C, so an update past the limit is refused before any walk over its keys (the store
    measures it the same way and would refuse it anyway); then the one walk over it, which also bounds its
    nesting (``_parse_json`` left that to this walk)."""
    if not isinstance(value, dict):
        if _too_deep(value):  # the first thing wrong with it, as a body's nesting is checked before its shape
            raise ApiError(400, "bad_request", f"client_data: nested deeper than {MAX_CLIENT_DATA_DEPTH} levels")
        raise ApiError(400, "bad_request", f"client_data must be a JSON object, not {describe_json_type(value)}")
    try:
        size = len(orjson.dumps(value))
    except orjson.JSONEncodeError:  # nested past orjson's limit, a lone surrogate: the walk says which
        size = 0
    if size > limit:
        raise _client_data_too_large(size, limit)
    problems = client_data_problems(value)
    if problems:
        raise ApiError(400, "bad_request", "; ".join(problems))
    return value


def _client_data_too_large(size: int, limit: int) -> ApiError:
    return ApiError(
        413,
        "client_data_too_large",
        f"client_data would be {size} bytes of compact JSON after this update, over the limit of "
        f"{limit} bytes per session; nothing was stored (set keys the session no longer needs to null "
        "to make room; serve --max-client-data-bytes sets the limit)",
    )


def _only(fields: Iterable[str], allowed: tuple[str, ...], where: str, owned: str = "a session") -> None:
    for name in fields:
        if name == "company_id":
            raise ApiError(
                400, "bad_request", f"company_id cannot be sent: {owned} belongs to the company of the API key"
            )
        if name not in allowed:
            raise ApiError(400, "bad_request", f"unknown field {name!r} in {where}; known: {', '.join(allowed)}")


async def _session_update(request: Request) -> tuple[dict[str, Any] | None, str | None]:
    """client_data and assistant_id from a JSON body or a form (multipart or urlencoded)."""
    kind = media_type(request.headers.get("content-type", ""))
    if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        try:
            declared = _content_length(request.scope) or 0
        except ValueError:
            declared = 0
        with _LargeBody(declared):
            return _checked_update(await _form_fields(request), request)
    body = await request.body()
    if not body.strip():
        return None, None
    expect_json(request, "send client_data as JSON (Content-Type: application/json) or as a form field (curl -F)")
    with _LargeBody(len(body)):
        # only client_data can nest (_only, and assistant_id is a string), and _check_client_data bounds it
        document = _parse_json(body, "the body", nesting=False)
        if not isinstance(document, dict):
            raise ApiError(400, "bad_request", f"the body must be a JSON object, not {describe_json_type(document)}")
        _only(document, ("client_data", "assistant_id"), "the body")
        return _checked_update(document, request)


async def _form_fields(request: Request) -> dict[str, Any]:
    """A PUT's form fields, client_data parsed as JSON."""
    limit = request.app.state.settings.max_body_bytes
    body_fields: dict[str, Any] = {}
    async with request.form(max_files=2, max_fields=20, max_part_size=limit) as form:  # closes uploads
        for name, value in form.multi_items():
            if name in body_fields:
                raise ApiError(400, "bad_request", f"form field {name!r} is given more than once")
            body_fields[name] = await value.read() if isinstance(value, UploadFile) else value
    _only(body_fields, ("client_data", "assistant_id"), "the form")
    if "client_data" in body_fields:
        body_fields["client_data"] = _parse_json(body_fields["client_data"], "the client_data field", nesting=False)
    if isinstance(body_fields.get("assistant_id"), bytes):
        try:
            body_fields["assistant_id"] = body_fields["assistant_id"].decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "bad_request", "assistant_id is not UTF-8 text") from None
    return body_fields


def _checked_update(body_fields: dict[str, Any], request: Request) -> tuple[dict[str, Any] | None, str | None]:
    """client_data and assistant_id of a PUT, each checked."""
    assistant_id = body_fields.get("assistant_id")
    if "assistant_id" in body_fields:
        if not isinstance(assistant_id, str):
            raise ApiError(400, "bad_request", "assistant_id must be a string")
        if len(assistant_id) > MAX_ASSISTANT_ID or "\x00" in assistant_id:
            raise ApiError(400, "bad_request", f"assistant_id: at most {MAX_ASSISTANT_ID} characters, no NUL character")
    limit = request.app.state.store.max_client_data_bytes
    client_data = _check_client_data(body_fields["client_data"], limit) if "client_data" in body_fields else None
    return client_data, assistant_id


# -- endpoints ----------------------------------------------------------------------------------


#: How long the outcome of a readiness probe (a committed write) is reused, success or failure: however many
#: load balancers and orchestrators ask, the database sees at most about one probe write a second.
READINESS_CACHE_SECONDS = 1.0


class _Readiness:
    """Whether the store takes writes now, found by committing one (``Store.probe_write``). A database can
    answer reads (the old ``SELECT 1``) while refusing every write: disk full, read-only, a standby.

    The outcome is reused for ``READINESS_CACHE_SECONDS``, and probes that arrive while one is being made
    wait for it rather than making their own. A change of state is logged once, not every probe."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.failure: StoreUnavailable | None = None
        self.checked_at = -math.inf
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    def _fresh(self) -> bool:
        return time.monotonic() - self.checked_at < READINESS_CACHE_SECONDS

    async def failure_now(self) -> StoreUnavailable | None:
        """None when the store takes writes, else why not (cached, see the class)."""
        if self._fresh():
            return self.failure
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:  # a lock serves one event loop
            self._lock, self._lock_loop = asyncio.Lock(), loop
        async with self._lock:
            if self._fresh():
                return self.failure
            failure: StoreUnavailable | None = None
            try:
                await self.store.probe_write()
            except StoreUnavailable as error:
                failure = error
            except Exception as error:  # whatever the backend raised, a store that cannot write is not ready
                failure = StoreUnavailable(f"the write probe failed: {type(error).__name__}: {error}")
                failure.__cause__ = error
            if failure is not None and self.failure is None:
                log.warning("not ready: the database takes no writes: %s", _one_line(failure))
            elif failure is None and self.failure is not None:
                log.info("ready again: the database takes writes")
            self.failure = failure
            self.checked_at = time.monotonic()
            return failure


async def _probe(request: Request, status: str) -> Response:
    """The readiness answer, with ``status`` as the word for ready: the triggers are loaded and the store
    takes writes."""
    if getattr(request.app.state, "catalog", None) is None:
        return error_response(
            503, "not_ready", "not ready: the triggers are not loaded yet; retry after 1 s", {"Retry-After": "1"}
        )
    failure = await request.app.state.readiness.failure_now()
    if failure is not None:
        seconds = retry_seconds(failure.retry_after)
        return error_response(
            503,
            "store_unavailable",
            f"not ready: the database is unavailable for writes ({_one_line(failure, 300)}); retry after {seconds} s",
            {"Retry-After": str(seconds)},
        )
    store: Store = request.app.state.store
    return JSONResponse(
        {"status": status, "store": getattr(store, "kind", "sqlite"), "version": __version__},
        headers={"Cache-Control": "no-store"},
    )


async def readyz(request: Request) -> Response:
    """Readiness: 200 while the database takes writes, else 503 ``store_unavailable`` with ``Retry-After``.
    What a load balancer should route by."""
    return await _probe(request, "ready")


async def health(request: Request) -> Response:
    """``/readyz`` under its old name, answering ``"ok"`` as it always did, so existing monitors keep
    working and now learn when writes fail."""
    return await _probe(request, "ok")


async def livez(request: Request) -> Response:
    """Liveness: the process answers. Never touches the store, so an orchestrator does not restart a healthy
    process for a database outage, which a restart would not cure."""
    return JSONResponse({"status": "alive"}, headers={"Cache-Control": "no-store"})


async def openapi(request: Request) -> Response:
    return JSONResponse(request.app.state.openapi)


async def put_session(request: Request) -> Response:
    company = await company_of(request)
    session_id = _session_id(request)
    client_data, assistant_id = await _session_update(request)
    store: Store = request.app.state.store
    try:
        session = await store.put_session(
            session_id, company_id=company, assistant_id=assistant_id, client_data=client_data
        )
    except ClientDataTooLarge as error:
        raise _client_data_too_large(error.size, error.limit) from None
    return JSONResponse(await session_view(request, company, session))


async def _existing_session(request: Request, company: str, session_id: str) -> Session:
    store: Store = request.app.state.store
    try:
        return await store.get_session(session_id, company_id=company)
    except SessionNotFound:
        raise ApiError(
            404, "session_not_found", f"no session {session_id!r} for this API key's company; PUT it first"
        ) from None


async def get_session(request: Request) -> Response:
    company = await company_of(request)
    session_id = _session_id(request)
    return JSONResponse(await session_view(request, company, await _existing_session(request, company, session_id)))


async def delete_session(request: Request) -> Response:
    """Delete the company's session and its call logs, in one transaction."""
    company = await company_of(request)
    session_id = _session_id(request)
    store: Store = request.app.state.store
    try:
        logs_deleted = await store.delete_session(session_id, company_id=company)
    except SessionNotFound:
        raise ApiError(404, "session_not_found", f"no session {session_id!r} for this API key's company") from None
    return JSONResponse({"deleted": session_id, "logs_deleted": logs_deleted}, headers={"Cache-Control": "no-store"})


def _int_query(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, "bad_request", f"{name} must be an integer from {low} to {high}") from None
    if not low <= value <= high:
        raise ApiError(400, "bad_request", f"{name} must be an integer from {low} to {high}")
    return value


async def get_logs(request: Request) -> Response:
    company = await company_of(request)
    session_id = _session_id(request)
    limit = _int_query(request, "limit", 100, 1, MAX_LOGS)
    await _existing_session(request, company, session_id)
    store: Store = request.app.state.store
    records = await store.logs(session_id, limit, company_id=company)
    return JSONResponse({"session_id": session_id, "logs": records})


def _images(document: Mapping[str, Any]) -> list[str]:
    """A request's ``images``: at most ``MAX_IMAGES`` URLs of at most ``MAX_IMAGE_URL`` characters."""
    images = document.get("images", [])
    if (
        not isinstance(images, list)
        or len(images) > MAX_IMAGES
        or not all(isinstance(i, str) and len(i) <= MAX_IMAGE_URL for i in images)
    ):
        raise ApiError(
            400,
            "bad_request",
            f"images must be an array of at most {MAX_IMAGES} strings (URLs of at most {MAX_IMAGE_URL} characters)",
        )
    return images


def _call_document(body: bytes) -> tuple[dict[str, Any] | str, list[str], bool]:
    """A trigger call's arguments, images and dry_run flag, from its JSON body."""
    with _LargeBody(len(body)):
        document = _parse_json(body, "the body")
    if not isinstance(document, dict):
        raise ApiError(400, "bad_request", f"the body must be a JSON object, not {describe_json_type(document)}")
    _only(document, ("arguments", "images", "dry_run"), "the body")
    arguments = document.get("arguments", {})
    if not isinstance(arguments, dict | str):  # a string is JSON text, as the models write it (call_trigger)
        raise ApiError(
            400,
            "bad_request",
            f"arguments must be a JSON object, or a string holding one, not {describe_json_type(arguments)}",
        )
    images = _images(document)
    dry_run = document.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise ApiError(400, "bad_request", "dry_run must be true or false")
    return arguments, images, dry_run


async def call_trigger(request: Request) -> Response:
    company = await company_of(request)
    session_id = _session_id(request)
    name = str(request.path_params["name"])
    catalog: TriggerCatalog = request.app.state.catalog
    trigger = catalog.get(company, name) if _TRIGGER_NAME.match(name) else None
    body = await request.body()
    arguments: dict[str, Any] | str = {}
    images: list[str] = []
    dry_run = False
    if body.strip():
        expect_json(request, "send the call as JSON (Content-Type: application/json)")
        arguments, images, dry_run = _call_document(body)
    if trigger is None:
        raise ApiError(404, "trigger_not_found", f"no trigger {name!r} for this API key's company; see GET /triggers")
    if isinstance(arguments, str):  # JSON text, as a model writes it; text that is no object is the model's to fix
        parsed, problem = parse_arguments(arguments)
        if parsed is None:
            await _existing_session(request, company, session_id)
            result = refused_result(trigger, session_id, problem or "they are not a JSON object")
            return JSONResponse({"message_for_llm": result.message_for_llm, "result": result.to_dict()})
        arguments = parsed
    slot = _slot.get()
    if slot is not None:  # what is left is the runtime's: mostly waiting on the remote, bounded by its own caps
        slot.release()
    runtime: Runtime = request.app.state.runtime
    try:
        result = await runtime.call_trigger(
            trigger,
            session_id,
            arguments,
            images,
            dry_run=dry_run,
            protected_keys=catalog.protected_keys(company),
            company_id=company,
            request_id=current_request_id(),
        )
    except SessionNotFound:
        raise ApiError(
            404, "session_not_found", f"no session {session_id!r} for this API key's company; PUT it first"
        ) from None
    return JSONResponse({"message_for_llm": result.message_for_llm, "result": result.to_dict()})


def _secret_name(request: Request) -> str:
    name = str(request.path_params["name"])
    problem = secret_problem(name)
    if problem is not None:
        raise ApiError(400, "bad_request", problem)
    return name


#: Said whenever a secret's body cannot be read: the parser's own words could quote part of the value.
_SECRET_BODY = 'send the secret as JSON: {"value": "..."} (Content-Type: application/json)'


async def put_secret(request: Request) -> Response:
    """Store one of the company's secrets. Nothing of the value is ever answered, logged or quoted in an error."""
    company = await company_of(request)
    name = _secret_name(request)
    expect_json(request, _SECRET_BODY)
    body = await request.body()
    try:
        document = _parse_json(body, "the body") if body.strip() else None
    except ApiError:
        raise ApiError(400, "bad_request", f"the body is not JSON this service reads; {_SECRET_BODY}") from None
    if not isinstance(document, dict) or "value" not in document:
        raise ApiError(400, "bad_request", _SECRET_BODY)
    _only(document, ("value",), "the body", owned="a secret")
    problem = secret_problem(name, document["value"])
    if problem is not None:
        raise ApiError(400, "bad_request", problem)
    store: Store = request.app.state.store
    await store.set_secret(company, name, document["value"])
    return Response(status_code=204, headers={"Cache-Control": "no-store"})


async def list_secrets(request: Request) -> Response:
    company = await company_of(request)
    store: Store = request.app.state.store
    return JSONResponse({"secrets": [info.to_dict() for info in await store.secret_names(company)]})


async def delete_secret(request: Request) -> Response:
    company = await company_of(request)
    name = _secret_name(request)
    store: Store = request.app.state.store
    if not await store.delete_secret(company, name):
        raise ApiError(404, "secret_not_found", f"no secret {name!r} for this API key's company; see GET /secrets")
    return Response(status_code=204, headers={"Cache-Control": "no-store"})


async def list_triggers(request: Request) -> Response:
    company = await company_of(request)
    style = request.query_params.get("style", "openai")
    if style not in STYLES:
        raise ApiError(400, "bad_request", f"style must be one of {', '.join(STYLES)}")
    strict_text = request.query_params.get("strict", "false")
    if strict_text not in ("true", "false"):
        raise ApiError(400, "bad_request", "strict must be true or false")
    strict = strict_text == "true"
    if strict and style == "anthropic":
        raise ApiError(
            409, "strict_unsupported", "strict tool definitions are OpenAI's: style openai or openai-responses"
        )
    catalog: TriggerCatalog = request.app.state.catalog
    triggers = catalog.for_company(company)
    try:
        tools = tool_definitions([triggers[name] for name in sorted(triggers)], style, strict=strict)
    except DiagnosticsError as error:  # file names only: the service's folders are none of the caller's business
        where = "; ".join(f"{PurePath(d.source).name}:{d.line}:{d.column}: {d.message}" for d in error.diagnostics)
        raise ApiError(409, "strict_unsupported", f"these triggers cannot be strict: {where}") from None
    return JSONResponse({"style": style, "strict": strict, "tools": tools})


async def call_tools(request: Request) -> Response:
    """One model turn's tool calls, run on the session; the replies to hand the model, in order."""
    company = await company_of(request)
    session_id = _session_id(request)
    expect_json(request, 'send {"calls": [...]} as JSON (Content-Type: application/json)')
    body = await request.body()
    with _LargeBody(len(body)):
        document = _parse_json(body, "the body")
    if not isinstance(document, dict) or not isinstance(document.get("calls"), list):
        raise ApiError(400, "bad_request", 'the body must be a JSON object {"calls": [...]}, the model\'s tool calls')
    _only(document, ("calls", "images"), "the body")
    if len(document["calls"]) > MAX_TOOL_CALLS:
        raise ApiError(400, "bad_request", f"at most {MAX_TOOL_CALLS} calls at once")
    images = _images(document)
    try:
        calls = read_tool_calls(document["calls"])
    except ToolCallFormatError as error:
        raise ApiError(400, "bad_request", str(error)) from None
    slot = _slot.get()
    if slot is not None:  # as for a trigger call: the rest is the runtime's
        slot.release()
    catalog: TriggerCatalog = request.app.state.catalog
    try:
        replies = await run_tool_calls(
            request.app.state.runtime,
            catalog,
            session_id,
            calls,
            company_id=company,
            images=images,
            request_id=current_request_id(),
        )
    except SessionNotFound:
        raise ApiError(
            404, "session_not_found", f"no session {session_id!r} for this API key's company; PUT it first"
        ) from None
    return JSONResponse({"replies": replies})


# -- the app ------------------------------------------------------------------------------------


def create_app(
    store: Store | None = None,
    catalog: TriggerCatalog | None = None,
    *,
    settings: ServiceSettings | None = None,
    config: ServiceConfig | None = None,
    close_store: bool = True,
    **runtime_options: Any,
) -> Starlette:
    """The ASGI app. ``runtime_options`` go to ``Runtime`` (``allow_networks=[...]``, ``deadline=...``).

    With no arguments it is configured from ``WEBHOOK_DSL_*`` environment variables (``settings.ServiceConfig``):
    ``uvicorn --factory webhook_dsl.service:create_app``. Whatever is given (a store, a catalog, settings,
    runtime options) wins over ``config``, which is by default the environment's.

    The store is closed when the app shuts down unless ``close_store=False``. A
    ``settings.max_client_data_bytes`` becomes the store's limit (the store enforces it, in its writes).
    """
    store, catalog, settings, runtime_options = app_inputs(store, catalog, settings, config, runtime_options)
    if settings.max_client_data_bytes is not None:
        store.max_client_data_bytes = settings.max_client_data_bytes
    metrics = ServiceMetrics() if settings.metrics else None
    the_runtime = ObservedRuntime(store, metrics, **runtime_options)
    mcp_endpoint = _mcp_endpoint(the_runtime, catalog, settings)  # None without the [mcp] extra

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.ping()  # a database that cannot be reached stops start-up, with its error
        pending = await the_runtime.recover()  # calls journaled by a process that died: stored now
        if pending:
            log.warning("%d call records left in the journal by an earlier process are being stored", pending)
        await app.state.trigger_sync.start()  # the uploaded triggers loaded, then polled (service/triggers.py)
        retention = None
        if settings.log_retention_days is not None:
            retention = asyncio.create_task(purge_old_logs(store, settings.log_retention_days), name="log retention")
        try:
            if mcp_endpoint is None:
                yield
            else:
                async with mcp_endpoint.running():  # the MCP session manager's task group lives as long as the app
                    yield
        finally:
            if retention is not None:
                retention.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await retention
            if metrics is not None:
                metrics.process_ended()
            await app.state.trigger_sync.stop()
            await the_runtime.aclose()
            if close_store:
                await store.close()

    routes: list[Route | Mount] = [
        Route("/health", health, methods=["GET"]),
        Route("/livez", livez, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/session/{session_id}", put_session, methods=["PUT"]),
        Route("/session/{session_id}", get_session, methods=["GET"]),
        Route("/session/{session_id}", delete_session, methods=["DELETE"]),
        Route("/session/{session_id}/logs", get_logs, methods=["GET"]),
        Route("/session/{session_id}/triggers/{name}", call_trigger, methods=["POST"]),
        Route("/session/{session_id}/tool-calls", call_tools, methods=["POST"]),
        Route("/triggers", list_triggers, methods=["GET"]),
        *trigger_routes(),
        Route("/secrets", list_secrets, methods=["GET"]),
        Route("/secrets/{name}", put_secret, methods=["PUT"]),
        Route("/secrets/{name}", delete_secret, methods=["DELETE"]),
    ]
    if settings.metrics:
        routes.append(Route("/metrics", metrics_endpoint, methods=["GET"]))
    if settings.dashboard:
        routes.extend(dashboard_routes())
    if mcp_endpoint is not None:
        routes.append(Route("/mcp", mcp_endpoint))  # any method: the MCP SDK answers each (service/mcp.py)
    # No handler for Exception: _Guard answers those (see its docstring for why not Starlette).
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        ApiError: _api_error,
        HTTPException: _http_error,
        _PayloadTooLarge: _too_large,
        StoreUnavailable: _store_unavailable,
    }
    app = Starlette(routes=_merge_methods(routes), lifespan=lifespan, exception_handlers=handlers)
    app.state.store = store
    app.state.catalog = catalog
    app.state.trigger_sync = TriggerSync(store, catalog, settings.trigger_poll_seconds)
    app.state.runtime = the_runtime
    app.state.metrics = metrics
    app.state.settings = settings
    app.state.keys = _KeyCache(store, settings.key_cache_seconds)
    app.state.readiness = _Readiness(store)
    app.state.openapi = openapi_document(sorted(catalog.shared))
    app.state.company_limit = _CompanyLimit(settings.max_requests_per_company, settings.large_body_share)
    app.add_middleware(_Guard, settings=settings, limit=app.state.company_limit, meter=metrics)
    return app


def _mcp_endpoint(runtime: Runtime, catalog: TriggerCatalog, settings: ServiceSettings) -> McpEndpoint | None:
    """The ``/mcp`` endpoint, or None when the ``mcp`` package (extra ``[mcp]``) is not installed: the rest of
    the service does not need it."""
    try:
        from .mcp import McpEndpoint
    except ModuleNotFoundError as error:
        if error.name is None or error.name.split(".")[0] != "mcp":
            raise
        return None
    return McpEndpoint(runtime, catalog, settings)


def _merge_methods(routes: list[Route | Mount]) -> list[Route | Mount]:
    """One Route per path, dispatching on the method, so a wrong method is a 405 with every allowed one."""
    merged: dict[str, dict[str, Callable[[Request], Awaitable[Response]]]] = {}
    others: list[Route | Mount] = []
    for route in routes:
        if isinstance(route, Route) and route.methods:
            for method in route.methods - {"HEAD"}:
                merged.setdefault(route.path, {})[method] = route.endpoint
        else:
            others.append(route)
    result: list[Route | Mount] = []
    for path, endpoints in merged.items():

        async def dispatch(
            request: Request, endpoints: dict[str, Callable[[Request], Awaitable[Response]]] = endpoints
        ) -> Response:
            method = "GET" if request.method == "HEAD" else request.method
            return await endpoints[method](request)

        methods = sorted(endpoints) + (["HEAD"] if "GET" in endpoints else [])
        result.append(Route(path, dispatch, methods=methods))
    return result + others
