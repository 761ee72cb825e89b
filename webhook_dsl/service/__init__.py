"""Stage 3, the service (extra ``[service]``): the HTTP API over the runtime and storage, for many companies.

``app`` builds the Starlette app (auth, limits, routes, the trigger catalog), ``openapi`` documents it,
``dashboard`` serves the call-log pages. ``settings`` reads the ``WEBHOOK_DSL_*`` environment that
``create_app()`` serves from (``uvicorn --factory webhook_dsl.service:create_app``); ``metrics`` and
``logformat`` are ``/metrics`` and the log lines.
"""

from .app import TriggerCatalog, TriggerLoadError, create_app
from .middleware import ServiceSettings
from .settings import ServiceConfig

__all__ = ["ServiceConfig", "ServiceSettings", "TriggerCatalog", "TriggerLoadError", "create_app"]
