"""webhook-dsl: compile webhook configs with ``$variables`` into fast, safe request plans.

>>> import webhook_dsl
>>> plan = webhook_dsl.compile_webhook({
...     "url": "https://erp.example.com/api/orders/$order_number",
...     "method": "GET",
...     "headers": [{"key": "Authorization", "value": "Bearer $erp_token"}],
... })
>>> request = plan.render({"order_number": "A 1/2", "erp_token": "t0k"})
>>> request.url
'https://erp.example.com/api/orders/A%201%2F2'

The stages are subpackages, each importing only the ones before it: ``language`` (text to plan),
``runtime`` (plan to request on the wire, answer back to the LLM), ``storage`` (sessions and logs,
beside the runtime) and ``service`` (the HTTP API, extra ``[service]``). The names below are loaded on
first use, so compiling a config imports no HTTP client and no service stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    ConfigError,
    ConfigSyntaxError,
    Diagnostic,
    DiagnosticsError,
    PlanFormatError,
    RenderError,
    WebhookDslError,
)

if TYPE_CHECKING:
    from .language.compiler import compile_file, compile_webhook
    from .language.plan import RenderedRequest, WebhookPlan, dump_plans, load_plans
    from .runtime.calls import CallResult, Runtime, RuntimeSettings, TriggerResult, call_trigger_sync
    from .runtime.dispatch import run_tool_calls
    from .runtime.tools import tool_definitions
    from .runtime.trigger import Trigger, compile_trigger, load_trigger
    from .storage.base import Session, SessionNotFound, Store
    from .storage.sqlite import SQLiteStore

#: Where each lazily loaded public name lives.
_LAZY = {
    "compile_file": ".language.compiler",
    "compile_webhook": ".language.compiler",
    "RenderedRequest": ".language.plan",
    "WebhookPlan": ".language.plan",
    "dump_plans": ".language.plan",
    "load_plans": ".language.plan",
    "CallResult": ".runtime.calls",
    "Runtime": ".runtime.calls",
    "RuntimeSettings": ".runtime.calls",
    "TriggerResult": ".runtime.calls",
    "call_trigger_sync": ".runtime.calls",
    "run_tool_calls": ".runtime.dispatch",
    "tool_definitions": ".runtime.tools",
    "Trigger": ".runtime.trigger",
    "compile_trigger": ".runtime.trigger",
    "load_trigger": ".runtime.trigger",
    "Session": ".storage.base",
    "SessionNotFound": ".storage.base",
    "Store": ".storage.base",
    "SQLiteStore": ".storage.sqlite",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'webhook_dsl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # the next lookup finds it directly
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "CallResult",
    "ConfigError",
    "ConfigSyntaxError",
    "Diagnostic",
    "DiagnosticsError",
    "PlanFormatError",
    "RenderError",
    "RenderedRequest",
    "Runtime",
    "RuntimeSettings",
    "SQLiteStore",
    "Session",
    "SessionNotFound",
    "Store",
    "Trigger",
    "TriggerResult",
    "WebhookDslError",
    "WebhookPlan",
    "__version__",
    "call_trigger_sync",
    "compile_file",
    "compile_trigger",
    "compile_webhook",
    "dump_plans",
    "load_plans",
    "load_trigger",
    "run_tool_calls",
    "tool_definitions",
]
