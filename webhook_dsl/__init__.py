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

from .compiler import compile_file, compile_webhook
from .errors import (
    ConfigError,
    ConfigSyntaxError,
    Diagnostic,
    DiagnosticsError,
    PlanFormatError,
    RenderError,
    WebhookDslError,
)
from .plan import RenderedRequest, WebhookPlan, dump_plans, load_plans

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "ConfigSyntaxError",
    "Diagnostic",
    "DiagnosticsError",
    "PlanFormatError",
    "RenderError",
    "RenderedRequest",
    "WebhookDslError",
    "WebhookPlan",
    "__version__",
    "compile_file",
    "compile_webhook",
    "dump_plans",
    "load_plans",
]
