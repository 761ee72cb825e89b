"""The service's OpenAPI 3.1 document, written by hand so that it says exactly what the code does.

``tests/test_service.py`` checks every response of the service against it, and CI runs
Schemathesis against it (see ``.ci/run``). Change both together.
"""

from __future__ import annotations

from typing import Any

from .._version import __version__
from ..language.names import MIN_SECRET_LENGTH, SECRET_NAME_PATTERN
from ..runtime.calls import CATEGORIES
from ..runtime.tools import STYLES
from ..storage.base import ID_PATTERN, SECRET_VALUE_PATTERN

__all__ = ["ID_PATTERN", "TRIGGER_NAME_PATTERN", "openapi_document"]

#: Trigger names: what LLM tool-calling APIs accept (see ``webhook_dsl.runtime.trigger``).
TRIGGER_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MAX_IMAGES = 100
MAX_IMAGE_URL = 4096
MAX_ASSISTANT_ID = 128
MAX_LOGS = 1000
#: Tool calls in one POST /session/{id}/tool-calls: one model turn's, with room to spare.
MAX_TOOL_CALLS = 128

_CATEGORIES = list(CATEGORIES)  # the runtime's own list: one source for the enum


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


def _ok(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


_SESSION_ID = {
    "name": "session_id",
    "in": "path",
    "required": True,
    "description": "The session's id, chosen by the caller; each company has its own ids.",
    "schema": {"type": "string", "pattern": ID_PATTERN},
    "examples": {"S1": {"value": "S1"}},
}
_BAD = _error("Bad input: the message says what is wrong.")
_UNAUTHORIZED = _error("No API key, or a key that is not valid.")
_NO_SESSION = _error("No such session for the key's company.")
_SECRET_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "The secret's name, as a trigger writes it: $secrets.NAME.",
    "schema": {"type": "string", "pattern": SECRET_NAME_PATTERN},
    "examples": {"erp_token": {"value": "erp_token"}},
}
_TOO_LARGE = _error("The request body is larger than the service accepts.")
_TOO_MANY = {
    **_error(
        "The key's company already has as many requests being processed as it may (serve "
        "--max-requests-per-company); retry after the Retry-After seconds."
    ),
    "headers": {"Retry-After": {"description": "Seconds to wait: 1.", "schema": {"type": "integer"}}},
}
_RETRY_AFTER = {
    "description": "Whole seconds to wait before retrying (at least 1).",
    "schema": {"type": "integer", "minimum": 1},
}
_STORE_UNAVAILABLE = {
    **_error(
        "store_unavailable: the database is down, restarting, read-only or out of disk. Nothing was sent for a "
        "trigger call refused this way; retry after the Retry-After seconds."
    ),
    "headers": {"Retry-After": _RETRY_AFTER},
}
_NOT_READY = {
    **_error(
        "store_unavailable: the database takes no writes now (the message says why), or not_ready: the "
        "triggers are not loaded yet; retry after the Retry-After seconds."
    ),
    "headers": {"Retry-After": _RETRY_AFTER},
}
_CROSS_SITE = _error(
    "Sent by a web page of another site (an Origin that is not the service's own, or Sec-Fetch-Site cross-site "
    "or same-site): a state-changing request is refused from there."
)
_MISDIRECTED = _error(
    "The service runs with --anonymous-company and answers only requests addressed to this machine "
    "(Host localhost, a name under it, 127.0.0.1 or [::1]); this one named another host."
)

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "additionalProperties": False,
                "properties": {
                    "code": {
                        "type": "string",
                        "description": "bad_request, unauthorized, forbidden, not_found, session_not_found, "
                        "trigger_not_found, secret_not_found, method_not_allowed, payload_too_large, "
                        "client_data_too_large, unsupported_media_type, misdirected_request, too_many_requests, "
                        "strict_unsupported, trigger_conflict, version_not_found, version_deleted, "
                        "store_unavailable, not_ready, internal",
                    },
                    "message": {"type": "string"},
                },
            }
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "store", "version"],
        "additionalProperties": False,
        "properties": {
            "status": {"const": "ok"},
            "store": {"type": "string", "enum": ["sqlite", "postgresql"]},
            "version": {"type": "string"},
        },
    },
    "Readiness": {
        "type": "object",
        "required": ["status", "store", "version"],
        "additionalProperties": False,
        "properties": {
            "status": {"const": "ready"},
            "store": {"type": "string", "enum": ["sqlite", "postgresql"]},
            "version": {"type": "string"},
        },
    },
    "Liveness": {
        "type": "object",
        "required": ["status"],
        "additionalProperties": False,
        "properties": {"status": {"const": "alive"}},
    },
    "Session": {
        "type": "object",
        "required": ["id", "company_id", "assistant_id", "client_data", "created_at", "updated_at"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string"},
            "company_id": {"type": "string", "description": "The company of the API key that created it."},
            "assistant_id": {"type": "string"},
            "client_data": {
                "type": "object",
                "description": "The values of the keys the company's triggers declare secret (their "
                '"secrets") read as ***, and so does every other appearance of those values.',
            },
            "created_at": {"type": "number", "description": "Unix time, seconds."},
            "updated_at": {"type": "number"},
        },
    },
    "SessionUpdate": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "client_data": {
                "type": "object",
                "description": "Merged into the session's client_data: keys replace keys, others stay.",
            },
            "assistant_id": {"type": "string", "maxLength": MAX_ASSISTANT_ID, "pattern": "^[^\\x00]*$"},
        },
    },
    "SessionUpdateForm": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "client_data": {
                "type": "object",
                "description": "A JSON object, sent as the text of the form field (curl -F 'client_data={...}').",
            },
            "assistant_id": {"type": "string", "maxLength": MAX_ASSISTANT_ID, "pattern": "^[^\\x00]*$"},
        },
    },
    "TriggerCall": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "arguments": {
                "anyOf": [{"type": "object"}, {"type": "string"}],
                "description": "The tool call's arguments; checked against the trigger's parameter schema. A string "
                "is JSON text, as the models write arguments: text that is not a JSON object is a result with "
                "category bad_arguments telling the LLM so (nothing sent, nothing logged).",
            },
            "images": {
                "type": "array",
                "maxItems": MAX_IMAGES,
                "items": {"type": "string", "maxLength": MAX_IMAGE_URL},
            },
            "dry_run": {"type": "boolean", "description": "Build and show the request, send nothing, log nothing."},
        },
    },
    "TriggerResult": {
        "type": "object",
        "required": [
            "trigger",
            "session_id",
            "ok",
            "status",
            "category",
            "error",
            "elapsed_ms",
            "attempts",
            "method",
            "url",
            "response",
            "client_data_merged",
            "message_for_llm",
            "warnings",
            "log_seq",
        ],
        "additionalProperties": False,
        "properties": {
            "trigger": {"type": "string"},
            "session_id": {"type": "string"},
            "ok": {"type": "boolean"},
            "status": {"type": ["integer", "null"], "description": "The remote's HTTP status, if it answered."},
            "category": {"enum": [*_CATEGORIES, None], "description": "Why the call failed (null when ok)."},
            "error": {"type": ["string", "null"]},
            "elapsed_ms": {"type": "number"},
            "attempts": {"type": "integer"},
            "method": {"type": "string"},
            "url": {"type": "string"},
            "response": {"description": "The remote's answer: JSON as JSON, anything else as text; null if none."},
            "client_data_merged": {"type": "object"},
            "message_for_llm": {"type": "string"},
            "warnings": {"type": "array", "items": {"type": "string"}},
            "log_seq": {"type": ["integer", "null"]},
            "recorded": {
                "type": "boolean",
                "description": "False when the call was made but its log record is not stored yet: it is kept in "
                "a local journal and written when the database takes writes again.",
            },
            "dry_run": {"type": "object"},
        },
    },
    "TriggerCallResult": {
        "type": "object",
        "required": ["message_for_llm", "result"],
        "additionalProperties": False,
        "properties": {
            "message_for_llm": {"type": "string", "description": "Hand this to the LLM as the tool's result."},
            "result": _ref("TriggerResult"),
        },
    },
    "LogRecord": {
        "type": "object",
        "required": ["seq", "at", "trigger", "method", "url", "status", "elapsed_ms", "ok", "category"],
        "additionalProperties": True,
        "properties": {
            "seq": {"type": "integer"},
            "at": {"type": "number"},
            "session_id": {"type": "string"},
            "trigger": {"type": "string"},
            "method": {"type": "string"},
            "url": {"type": "string"},
            "request_headers": {"type": "array", "items": {"type": "array", "items": {"type": "string"}}},
            "request_body": {"type": ["string", "null"]},
            "status": {"type": ["integer", "null"]},
            "response_body": {"type": ["string", "null"]},
            "elapsed_ms": {"type": "number"},
            "attempts": {"type": "integer"},
            "ok": {"type": "boolean"},
            "category": {"type": ["string", "null"]},
            "error": {"type": ["string", "null"]},
            "state": {
                "type": "string",
                "enum": ["recorded", "in_flight", "unknown_outcome"],
                "description": "recorded: the call's outcome is stored; in_flight: sent, answer not recorded yet; "
                "unknown_outcome: sent, and the process stopped before recording how it went.",
            },
            "expires_at": {
                "type": "number",
                "description": "For an in_flight call: when it counts as unknown_outcome; Unix time, seconds.",
            },
            "recorded_late": {
                "type": "boolean",
                "description": "True when the record was written later, from the local journal, after an outage.",
            },
        },
    },
    "Logs": {
        "type": "object",
        "required": ["session_id", "logs"],
        "additionalProperties": False,
        "properties": {
            "session_id": {"type": "string"},
            "logs": {"type": "array", "items": _ref("LogRecord"), "description": "Oldest first."},
        },
    },
    "SecretValue": {
        "type": "object",
        "required": ["value"],
        "additionalProperties": False,
        "properties": {
            "value": {
                "type": "string",
                "minLength": MIN_SECRET_LENGTH,
                "pattern": SECRET_VALUE_PATTERN,
                "description": "The credential, whole, on one line (no control characters); never shown again.",
            }
        },
    },
    "Secrets": {
        "type": "object",
        "required": ["secrets"],
        "additionalProperties": False,
        "properties": {
            "secrets": {
                "type": "array",
                "description": "By name; never a value.",
                "items": {
                    "type": "object",
                    "required": ["name", "updated_at"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string"},
                        "updated_at": {"type": "number", "description": "When it was last set; Unix time, seconds."},
                    },
                },
            }
        },
    },
    "Tools": {
        "type": "object",
        "required": ["style", "strict", "tools"],
        "additionalProperties": False,
        "properties": {
            "style": {"type": "string", "enum": list(STYLES)},
            "strict": {"type": "boolean"},
            "tools": {
                "type": "array",
                "items": {"type": "object"},
                "description": "openai: Chat Completions tools ({type: function, function: {name, description, "
                "parameters, strict?}}); openai-responses: Responses API function tools ({type: function, name, "
                "description, parameters, strict}); anthropic: Messages tools ({name, description, input_schema}).",
            },
        },
    },
    "ToolCalls": {
        "type": "object",
        "required": ["calls"],
        "additionalProperties": False,
        "properties": {
            "calls": {
                "description": "One model turn's tool calls, as the model's API gave them, all of one format: "
                "OpenAI chat message.tool_calls items, Responses function_call items, or Anthropic tool_use "
                "blocks. Items of any other type (text, reasoning, calls of built-in or custom tools) are passed "
                "over, so response.output or message.content can be sent whole.",
                "maxItems": MAX_TOOL_CALLS,
                "anyOf": [
                    {"type": "array", "maxItems": MAX_TOOL_CALLS, "items": {"anyOf": [_ref(kind), _ref("NotACall")]}}
                    for kind in ("ChatToolCall", "ResponsesFunctionCall", "AnthropicToolUse")
                ],
            },
            "images": {
                "type": "array",
                "maxItems": MAX_IMAGES,
                "items": {"type": "string", "maxLength": MAX_IMAGE_URL},
                "description": "The conversation's images, for triggers that read $images.",
            },
        },
    },
    "ChatToolCall": {
        "type": "object",
        "required": ["id", "function"],
        "properties": {
            "id": {"type": "string"},
            "type": {"enum": ["function", None]},
            "function": {
                "type": "object",
                "required": ["name", "arguments"],
                "properties": {
                    "name": {"type": "string"},
                    "arguments": {"type": ["string", "object"], "description": "JSON text, as the model wrote it."},
                },
            },
        },
    },
    "ResponsesFunctionCall": {
        "type": "object",
        "required": ["type", "call_id", "name", "arguments"],
        "properties": {
            "type": {"const": "function_call"},
            "call_id": {"type": "string"},
            "name": {"type": "string"},
            "arguments": {"type": ["string", "object"], "description": "JSON text, as the model wrote it."},
        },
    },
    "AnthropicToolUse": {
        "type": "object",
        "required": ["type", "id", "name", "input"],
        "properties": {
            "type": {"const": "tool_use"},
            "id": {"type": "string"},
            "name": {"type": "string"},
            "input": {"type": "object"},
        },
    },
    "NotACall": {
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"type": "string", "not": {"enum": ["function", "function_call", "tool_use"]}}},
        "description": "An item that is no call of a trigger: passed over.",
    },
    "ToolReplies": {
        "type": "object",
        "required": ["replies"],
        "additionalProperties": False,
        "properties": {
            "replies": {
                "type": "array",
                "description": "One per call, in the calls' order, in their format: append them to the conversation "
                "(OpenAI chat: as messages; Responses: as input items; Anthropic: as the content of a user message).",
                "items": {
                    "anyOf": [
                        {
                            "type": "object",
                            "required": ["role", "tool_call_id", "content"],
                            "additionalProperties": False,
                            "properties": {
                                "role": {"const": "tool"},
                                "tool_call_id": {"type": "string"},
                                "content": {"type": "string"},
                            },
                        },
                        {
                            "type": "object",
                            "required": ["type", "call_id", "output"],
                            "additionalProperties": False,
                            "properties": {
                                "type": {"const": "function_call_output"},
                                "call_id": {"type": "string"},
                                "output": {"type": "string"},
                            },
                        },
                        {
                            "type": "object",
                            "required": ["type", "tool_use_id", "content", "is_error"],
                            "additionalProperties": False,
                            "properties": {
                                "type": {"const": "tool_result"},
                                "tool_use_id": {"type": "string"},
                                "content": {"type": "string"},
                                "is_error": {"type": "boolean"},
                            },
                        },
                    ]
                },
            }
        },
    },
    "SessionDeleted": {
        "type": "object",
        "required": ["deleted", "logs_deleted"],
        "additionalProperties": False,
        "properties": {
            "deleted": {"type": "string", "description": "The id of the session deleted."},
            "logs_deleted": {"type": "integer", "minimum": 0, "description": "How many call log records went."},
        },
    },
    "TriggerDocument": {
        "type": "object",
        "required": ["name", "description", "webhook"],
        "description": "A trigger, as a file of the trigger folder holds it (README: triggers); its name is the "
        "path's. It is compiled and checked as the folder's files are.",
        "properties": {
            "name": {"type": "string", "pattern": TRIGGER_NAME_PATTERN},
            "description": {"type": "string"},
            "parameters": {"type": "object", "description": "A JSON Schema of the arguments."},
            "webhook": {"type": "object", "description": "The request: url, method, headers, body."},
        },
    },
    "TriggerVersion": {
        "type": "object",
        "required": ["name", "version", "digest", "deleted", "created_at"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "integer", "minimum": 1, "description": "1, 2, 3... per company and name."},
            "digest": {
                "type": "string",
                "description": "The document's content hash: what a call's log record names as trigger_version. "
                "For a deletion, the digest of the version it deleted.",
            },
            "deleted": {"type": "boolean", "description": "True for a version that deleted the trigger."},
            "created_at": {"type": "number", "description": "Unix time, seconds."},
        },
    },
    "TriggerVersions": {
        "type": "object",
        "required": ["name", "versions"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": _ref("TriggerVersion"), "description": "Newest first."},
        },
    },
    "Rollback": {
        "type": "object",
        "required": ["version"],
        "additionalProperties": False,
        "properties": {"version": {"type": "integer", "minimum": 1, "description": "The version to make current."}},
    },
    "TriggerProblems": {
        "type": "object",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "problems"],
                "additionalProperties": False,
                "properties": {
                    "code": {"const": "invalid_trigger"},
                    "message": {"type": "string", "description": "The first problems as SOURCE:LINE:COLUMN: text."},
                    "problems": {
                        "type": "array",
                        "description": "Every problem (at most 100), as webhook-dsl check --format json gives them.",
                        "items": {
                            "type": "object",
                            "required": ["source", "line", "column", "message"],
                            "additionalProperties": False,
                            "properties": {
                                "source": {"type": "string", "description": "upload:NAME"},
                                "line": {"type": "integer"},
                                "column": {"type": "integer"},
                                "message": {"type": "string"},
                                "field": {"type": ["string", "null"]},
                                "variable": {"type": ["string", "null"]},
                            },
                        },
                    },
                    "problems_not_shown": {"type": "integer", "description": "Problems past the first 100."},
                },
            }
        },
    },
}

_UPLOAD_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "The uploaded trigger's name (the key's company's own; other companies never see it).",
    "schema": {"type": "string", "pattern": TRIGGER_NAME_PATTERN},
    "examples": {"order_status": {"value": "order_status"}},
}
#: An upload that compiles, named as ``_UPLOAD_NAME``'s example.
_TRIGGER_EXAMPLE = {
    "name": "order_status",
    "description": "Look up an order's status by its number.",
    "parameters": {
        "type": "object",
        "properties": {"order_number": {"type": "string", "pattern": "^[A-Z]-[0-9]{1,8}$"}},
        "required": ["order_number"],
    },
    "webhook": {"url": "https://erp.example.com/api/orders/$order_number", "method": "GET"},
}
_NO_UPLOAD = _error(
    "trigger_not_found: the key's company never uploaded a trigger of that name (a folder trigger has no versions)."
)


def openapi_document(trigger_names: list[str] | None = None) -> dict[str, Any]:
    """The document served at ``GET /openapi.json``; ``trigger_names`` (the shared triggers) become examples.

    A form sent as ``application/x-www-form-urlencoded`` (``curl -d client_data=...``) is accepted too,
    with client_data as JSON text, but is left out here: OpenAPI would describe an object field of such
    a form as exploded ``key=value`` pairs, which is not what the service reads.
    """
    name_parameter: dict[str, Any] = {
        "name": "name",
        "in": "path",
        "required": True,
        "description": "A trigger of the key's company (see GET /triggers).",
        "schema": {"type": "string", "pattern": TRIGGER_NAME_PATTERN},
    }
    if trigger_names:
        name_parameter["examples"] = {name: {"value": name} for name in trigger_names}
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "webhook-dsl service",
            "version": __version__,
            "description": "Sessions, trigger calls and call logs for an AI assistant's webhooks. Every request "
            "but the probes (/livez, /readyz, /health), /metrics and /openapi.json carries an API key (Authorization: "
            "Bearer KEY, or X-Api-Key: KEY) bound to one company; sessions, logs, triggers and secrets are those "
            "of that company only. Any other Authorization (Basic...) is a 401. A PUT, POST or DELETE sent by a "
            "web page of another site is a 403. A session's client_data holds at most a limit of compact JSON "
            '(256 KiB unless configured). Errors are JSON: {"error": {"code": ..., "message": ...}}; a database '
            "outage is a 503 store_unavailable with Retry-After. Every response carries X-Request-Id: the "
            "request's own when it sent one of 1-128 visible ASCII characters, else a new one; a trigger call's "
            "log record keeps it.",
        },
        "security": [{"bearerAuth": []}, {"apiKeyHeader": []}],
        "paths": {
            "/livez": {
                "get": {
                    "operationId": "livez",
                    "summary": "Liveness: the process answers (no key needed; the database is not asked).",
                    "description": "For an orchestrator's liveness probe: restart the process when this fails. "
                    "A database outage does not fail it, since a restart would not cure that.",
                    "security": [],
                    "responses": {"200": _ok("The process is alive.", "Liveness"), "421": _MISDIRECTED},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "Readiness: the triggers are loaded and the database takes writes (no key needed).",
                    "description": "Commits a one-row write; the outcome is reused for about a second, so any "
                    "number of probes cost the database one write a second. For a load balancer's health check "
                    "and an orchestrator's readiness probe: send no traffic here while it answers 503.",
                    "security": [],
                    "responses": {
                        "200": _ok("The database takes writes.", "Readiness"),
                        "421": _MISDIRECTED,
                        "503": _NOT_READY,
                    },
                }
            },
            "/health": {
                "get": {
                    "operationId": "health",
                    "summary": "The readiness check of /readyz under its old name, answering status ok (no key "
                    "needed).",
                    "security": [],
                    "responses": {
                        "200": _ok("The database takes writes.", "Health"),
                        "421": _MISDIRECTED,
                        "503": _NOT_READY,
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics, as text (no API key; the metrics token when the service has one).",
                    "description": "Requests by route template, method and status; trigger calls by trigger and "
                    "outcome category; the outbound webhook's latency by trigger; the calls in flight. Under "
                    "several worker processes, the sum of all of them. No label names a company, session or key.",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "The Prometheus text format, version 0.0.4.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "401": _error(
                            "The service has a metrics token (WEBHOOK_DSL_METRICS_TOKEN) and the request did not "
                            "send it as Authorization: Bearer TOKEN."
                        ),
                        "421": _MISDIRECTED,
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document (no key needed).",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "The OpenAPI document.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "421": _MISDIRECTED,
                    },
                }
            },
            "/session/{session_id}": {
                "parameters": [_SESSION_ID],
                "put": {
                    "operationId": "putSession",
                    "summary": "Create a session, or update it: client_data is merged, not replaced.",
                    "description": "The session's company is the API key's company; a body cannot choose it.",
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {"schema": _ref("SessionUpdate")},
                            "multipart/form-data": {
                                "schema": _ref("SessionUpdateForm"),
                                "encoding": {"client_data": {"contentType": "application/json"}},
                            },
                        },
                    },
                    "responses": {
                        "200": _ok("The session after the merge (secret-looking values masked).", "Session"),
                        "400": _BAD,
                        "401": _UNAUTHORIZED,
                        "403": _CROSS_SITE,
                        "413": _error(
                            "The request body is larger than the service accepts (payload_too_large; an "
                            "urlencoded form: 64 KiB), or the "
                            "session's client_data would pass its limit, serve --max-client-data-bytes, with "
                            "this update (client_data_too_large; the message gives both sizes); nothing is stored."
                        ),
                        "415": _error("A body that is neither JSON nor a form."),
                        "421": _MISDIRECTED,
                    },
                },
                "get": {
                    "operationId": "getSession",
                    "summary": "Read a session (secret-looking client_data values masked).",
                    "responses": {
                        "200": _ok("The session.", "Session"),
                        "400": _BAD,
                        "401": _UNAUTHORIZED,
                        "404": _NO_SESSION,
                        "421": _MISDIRECTED,
                    },
                },
                "delete": {
                    "operationId": "deleteSession",
                    "summary": "Delete a session and its call logs.",
                    "description": "The session and every log record of it go in one transaction; the same id "
                    "can then be created afresh with a PUT.",
                    "responses": {
                        "200": _ok("Deleted: the session's id and how many log records went.", "SessionDeleted"),
                        "400": _BAD,
                        "401": _UNAUTHORIZED,
                        "403": _CROSS_SITE,
                        "404": _NO_SESSION,
                        "421": _MISDIRECTED,
                    },
                },
            },
            "/session/{session_id}/logs": {
                "parameters": [_SESSION_ID],
                "get": {
                    "operationId": "getSessionLogs",
                    "summary": "The session's most recent trigger calls, oldest first, secrets masked.",
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LOGS, "default": 100},
                        }
                    ],
                    "responses": {
                        "200": _ok("The call log.", "Logs"),
                        "400": _BAD,
                        "401": _UNAUTHORIZED,
                        "404": _NO_SESSION,
                        "421": _MISDIRECTED,
                    },
                },
            },
            "/session/{session_id}/triggers/{name}": {
                "parameters": [_SESSION_ID, name_parameter],
                "post": {
                    "operationId": "callTrigger",
                    "summary": "Fire a trigger for the session: the message for the LLM and the result.",
                    "description": "The HTTP status says whether the service did its job. How the webhook call "
                    "went is in the result: ok, status, category. Arguments that break the trigger's schema are "
                    "such a result too (category bad_arguments, with a message telling the LLM to ask the user), "
                    "not an HTTP error, so the assistant always has something to say.",
                    "requestBody": {
                        "required": False,
                        "content": {"application/json": {"schema": _ref("TriggerCall")}},
                    },
                    "responses": {
                        "200": _ok("The call was made (or refused for bad arguments) and logged.", "TriggerCallResult"),
                        "400": _BAD,
                        "401": _UNAUTHORIZED,
                        "403": _CROSS_SITE,
                        "404": _error("No such session, or no such trigger, for the key's company."),
                        "413": _TOO_LARGE,
                        "415": _error(
                            "A body that is not JSON; with --anonymous-company, any POST without "
                            "Content-Type: application/json, even an empty one."
                        ),
                        "421": _MISDIRECTED,
                    },
                },
            },
            "/session/{session_id}/tool-calls": {
                "parameters": [_SESSION_ID],
                "post": {
                    "operationId": "callTools",
                    "summary": "Run one model turn's tool calls for the session: the replies to hand the model.",
                    "description": "Takes the calls as the model's API gave them (see ToolCalls) and runs them "
                    "concurrently, each as POST /session/{session_id}/triggers/{name} would. Each reply is in its "
                    "call's format and holds the message_for_llm. What the model got wrong is a reply it can act on, "
                    "not an HTTP error: a tool that does not exist, arguments that are not a JSON object, arguments "
                    "that break the schema.",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("ToolCalls")}}},
                    "responses": {
                        "200": _ok("The replies, in the calls' order.", "ToolReplies"),
                        "400": _BAD,
                        "401": _UNAUTHORIZED,
                        "403": _CROSS_SITE,
                        "404": _NO_SESSION,
                        "413": _TOO_LARGE,
                        "415": _error("A body that is not JSON."),
                        "421": _MISDIRECTED,
                    },
                },
            },
            "/secrets": {
                "get": {
                    "operationId": "listSecrets",
                    "summary": "The key's company's secrets: names and when each was set, never the values.",
                    "responses": {
                        "200": _ok("The company's secrets, by name.", "Secrets"),
                        "401": _UNAUTHORIZED,
                        "421": _MISDIRECTED,
                    },
                }
            },
            "/secrets/{name}": {
                "parameters": [_SECRET_NAME],
                "put": {
                    "operationId": "putSecret",
                    "summary": "Set one of the company's secrets (write-only: no request answers its value).",
                    "description": "Triggers use it as $secrets.NAME. Setting it again replaces the value.",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("SecretValue")}},
                    },
                    "responses": {
                        "204": {"description": "Stored."},
                        "400": _BAD,
                        "401": _UNAUTHORIZED,
                        "403": _CROSS_SITE,
                        "413": _TOO_LARGE,
                        "415": _error("A body that is not JSON."),
                        "421": _MISDIRECTED,
                    },
                },
                "delete": {
                    "operationId": "deleteSecret",
                    "summary": "Delete one of the company's secrets.",
                    "responses": {
                        "204": {"description": "Deleted."},
                        "400": _BAD,
                        "401": _UNAUTHORIZED,
                        "403": _CROSS_SITE,
                        "404": _error("The key's company has no secret of that name."),
                        "421": _MISDIRECTED,
                    },
                },
            },
            "/triggers": {
                "get": {
                    "operationId": "listTriggers",
                    "summary": "The key's company's triggers as LLM tool definitions.",
                    "parameters": [
                        {
                            "name": "style",
                            "in": "query",
                            "required": False,
                            "description": "openai: Chat Completions; openai-responses: the Responses API; "
                            "anthropic: Messages.",
                            "schema": {"type": "string", "enum": list(STYLES), "default": "openai"},
                        },
                        {
                            "name": "strict",
                            "in": "query",
                            "required": False,
                            "description": "OpenAI strict schemas (structured outputs): every object closed, every "
                            "property required, optional ones nullable.",
                            "schema": {"type": "boolean", "default": False},
                        },
                    ],
                    "responses": {
                        "200": _ok("Tool definitions, by trigger name.", "Tools"),
                        "400": _BAD,
                        "401": _UNAUTHORIZED,
                        "409": _error(
                            "strict_unsupported: strict=true with the anthropic style, or a trigger whose schema "
                            "strict mode cannot express; the message names each keyword as FILE:LINE:COLUMN."
                        ),
                        "421": _MISDIRECTED,
                    },
                }
            },
            "/triggers/{name}": {
                "parameters": [_UPLOAD_NAME],
                "put": {
                    "operationId": "putTrigger",
                    "summary": "Upload a trigger of the key's company: it becomes the trigger's next version.",
                    "description": "Compiled and checked as the folder's files are; every replica uses it within "
                    "seconds (serve's trigger poll interval). The same document as the current version (same "
                    "digest: layout and key order do not count) makes no new version. A name the service's trigger "
                    "folder has cannot be uploaded: a name has one source.",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": _ref("TriggerDocument"),
                                "examples": {"order_status": {"value": _TRIGGER_EXAMPLE}},
                            }
                        },
                    },
                    "responses": {
                        "200": _ok("The document is the current version already; nothing changed.", "TriggerVersion"),
                        "201": _ok("Stored as a new version, in use.", "TriggerVersion"),
                        "400": _error("An empty body, not UTF-8, or a document whose name is not the path's."),
                        "401": _UNAUTHORIZED,
                        "403": _CROSS_SITE,
                        "409": _error("trigger_conflict: the service's trigger folder has a trigger of that name."),
                        "413": _TOO_LARGE,
                        "415": _error("A body that is not JSON."),
                        "421": _MISDIRECTED,
                        "422": _ok(
                            "invalid_trigger: the document does not compile; every problem with its line and column.",
                            "TriggerProblems",
                        ),
                    },
                },
                "delete": {
                    "operationId": "deleteTrigger",
                    "summary": "Delete an uploaded trigger: a deletion is appended as its next version.",
                    "description": "Calls of it are 404s from then on, on every replica within seconds; its "
                    "versions stay listed, and a rollback brings one back.",
                    "responses": {
                        "200": _ok("The deletion version.", "TriggerVersion"),
                        "400": _BAD,
                        "401": _UNAUTHORIZED,
                        "403": _CROSS_SITE,
                        "404": _error("trigger_not_found: no uploaded trigger of that name is current."),
                        "421": _MISDIRECTED,
                    },
                },
            },
            "/triggers/{name}/versions": {
                "parameters": [_UPLOAD_NAME],
                "get": {
                    "operationId": "listTriggerVersions",
                    "summary": "Every version of an uploaded trigger of the key's company, newest first.",
                    "responses": {
                        "200": _ok("The versions.", "TriggerVersions"),
                        "400": _BAD,
                        "401": _UNAUTHORIZED,
                        "404": _NO_UPLOAD,
                        "421": _MISDIRECTED,
                    },
                },
            },
            "/triggers/{name}/rollback": {
                "parameters": [_UPLOAD_NAME],
                "post": {
                    "operationId": "rollbackTrigger",
                    "summary": "Make an old version current again: its document is appended as a new version.",
                    "description": "History stays append-only. Rolling back to the current version's content "
                    "makes no new version.",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": _ref("Rollback"),
                                "examples": {"1": {"value": {"version": 1}}},
                            }
                        },
                    },
                    "responses": {
                        "200": _ok("That content is current already; nothing changed.", "TriggerVersion"),
                        "201": _ok("The new version, in use.", "TriggerVersion"),
                        "400": _BAD,
                        "401": _UNAUTHORIZED,
                        "403": _CROSS_SITE,
                        "404": _error("trigger_not_found, or version_not_found: no such version of the trigger."),
                        "409": _error(
                            "version_deleted: that version is a deletion; or trigger_conflict: the trigger folder "
                            "now has a trigger of that name."
                        ),
                        "413": _TOO_LARGE,
                        "415": _error("A body that is not JSON."),
                        "421": _MISDIRECTED,
                        "422": _ok(
                            "invalid_trigger: that version's document no longer compiles (a newer release checks "
                            "more); every problem with its line and column.",
                            "TriggerProblems",
                        ),
                    },
                },
            },
        },
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer KEY"},
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
            },
            "schemas": _SCHEMAS,
        },
    }
    for path in document["paths"].values():
        for operation in path.values():
            if isinstance(operation, dict) and operation.get("security") != []:  # every operation with a key
                operation["responses"]["429"] = _TOO_MANY
                operation["responses"]["503"] = _STORE_UNAVAILABLE  # the key is looked up in the store
    return document
