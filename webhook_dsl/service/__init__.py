"""Stage 3, the service (extra ``[service]``): the HTTP API over the runtime and storage, for many companies.

``app`` builds the Starlette app (auth, limits, routes, the trigger catalog), ``openapi`` documents it,
``dashboard`` serves the call-log pages.
"""

from .app import TriggerCatalog, TriggerLoadError, create_app
from .middleware import ServiceSettings

__all__ = ["ServiceSettings", "TriggerCatalog", "TriggerLoadError", "create_app"]
