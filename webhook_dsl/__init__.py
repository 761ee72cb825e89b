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
"""

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
from .language.compiler import compile_file, compile_webhook
from .language.plan import RenderedRequest, WebhookPlan, dump_plans, load_plans
from .runtime.calls import CallResult, Runtime, RuntimeSettings, TriggerResult, call_trigger_sync
from .runtime.trigger import Trigger, compile_trigger, load_trigger
from .storage.base import Session, SessionNotFound, Store
from .storage.sqlite import SQLiteStore

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
]
