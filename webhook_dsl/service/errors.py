"""Errors as the service answers them: one JSON shape, ``{"error": {"code", "message"}}``, with the right
status for each kind, a store outage as 503 with ``Retry-After``, and a bug as a logged 500."""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse as _StarletteJSONResponse
from starlette.responses import Response
from starlette.types import Scope

from ..storage.base import (
    StoreUnavailable,
)

log = logging.getLogger("webhook_dsl.service")


class ApiError(Exception):
    """An error answered as ``{"error": {"code", "message"}}`` with its status."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


class _PayloadTooLarge(Exception):
    """A body that passed its limit while it was read; str() is the message to answer with."""


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    421: "misdirected_request",
    429: "too_many_requests",
    500: "internal",
    503: "unavailable",
}


class JSONResponse(_StarletteJSONResponse):
    """JSON as UTF-8; a lone surrogate (a remote can send one as ``\\ud800``) goes out escaped, not as a 500."""

    def render(self, content: Any) -> bytes:
        try:  # orjson: a tenth of the stdlib's time; it refuses integers beyond 64 bits and lone surrogates
            return orjson.dumps(content)
        except TypeError:
            pass
        try:
            return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        except UnicodeEncodeError:
            return json.dumps(content, separators=(",", ":")).encode("ascii")


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}},
        status_code=status,
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


async def _api_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ApiError)
    return error_response(error.status, error.code, error.message, error.headers)


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    status = error.status_code
    message = error.detail
    if status == 404:
        message = f"no such endpoint: {request.method} {request.url.path}"
    elif status == 405:
        message = f"{request.method} is not allowed here; use {(error.headers or {}).get('Allow', 'another method')}"
    return error_response(status, _STATUS_CODES.get(status, "error"), message, error.headers)


async def _too_large(request: Request, error: Exception) -> Response:
    limit = request.app.state.settings.max_body_bytes
    return error_response(413, "payload_too_large", str(error) or f"the request body is larger than {limit} bytes")


def _internal(scope: Scope, error: Exception) -> Response:
    """The answer to an exception nothing else handled (a bug), logged here once with its traceback."""
    log.error("internal error on %s %s", scope.get("method"), scope.get("path"), exc_info=error)
    return error_response(500, "internal", "internal error; the service log has the details")


#: The longest ``Retry-After`` the service asks for, in seconds, whatever a store suggests.
_MAX_RETRY_AFTER = 3600


def retry_seconds(retry_after: float) -> int:
    """``StoreUnavailable.retry_after`` as a ``Retry-After`` header takes it: whole seconds, rounded up, at
    least 1 (``0`` would invite an immediate retry storm against a database that is down)."""
    if not isinstance(retry_after, int | float) or not math.isfinite(retry_after):
        return 1
    return min(_MAX_RETRY_AFTER, max(1, math.ceil(retry_after)))


def _one_line(error: BaseException, limit: int = 500) -> str:
    """An error's text on one line (a backend's message can span several), cut at ``limit`` characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


_TRIGGER_CALL = re.compile(r"/session/[^/]+/triggers/[^/]+\Z")


async def _store_unavailable(request: Request, error: Exception) -> Response:
    """A store outage: 503 with ``Retry-After``, a warning without a traceback (an outage is not a bug, and
    a traceback per request would bury the one line that says what happened). The answer keeps the
    backend's words out: they name files and hosts, and they are in the log."""
    assert isinstance(error, StoreUnavailable)
    seconds = retry_seconds(error.retry_after)
    log.warning(
        "the database is unavailable (%s %s answered 503, Retry-After %d): %s",
        request.method,
        request.url.path,
        seconds,
        _one_line(error),
    )
    if request.method == "POST" and _TRIGGER_CALL.match(request.url.path):
        refused = "this trigger call was refused and nothing was sent"
    else:
        refused = "this request was refused"
    return error_response(
        503,
        "store_unavailable",
        f"the database is unavailable (the service log has the reason), so {refused}; retry after {seconds} s",
        {"Retry-After": str(seconds)},
    )
