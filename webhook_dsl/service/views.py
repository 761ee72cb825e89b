"""A session as the API and the dashboard show it: declared secrets and company secrets masked."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from ..runtime.masking import masked_session
from ..storage.base import (
    Session,
    Store,
)

if TYPE_CHECKING:
    from ..runtime.catalog import TriggerCatalog


async def session_view(request: Request, company: str, session: Session) -> dict[str, Any]:
    """The session as the API and the dashboard show it (one read of the company's secrets)."""
    catalog: TriggerCatalog = request.app.state.catalog
    store: Store = request.app.state.store
    secrets = await store.company_secrets(company)
    return masked_session(session, catalog.secret_names(company), secrets.values())
