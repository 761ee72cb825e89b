"""Which company a request speaks for: its API key (``Authorization: Bearer KEY`` or ``X-Api-Key``),
looked up by hash and remembered briefly, or the anonymous company of a local trial."""

from __future__ import annotations

import logging
import re
import time

from starlette.requests import Request

from ..storage.base import (
    Store,
    hash_api_key,
)
from .errors import (
    ApiError,
)
from .middleware import (
    _slot,
)

log = logging.getLogger("webhook_dsl.service")


class _KeyCache:
    """key hash -> company, remembered ``ttl`` seconds; unknown keys are never remembered."""

    def __init__(self, store: Store, ttl: float) -> None:
        self.store = store
        self.ttl = ttl
        self._known: dict[str, tuple[str, float]] = {}

    async def company(self, key: str) -> str | None:
        return await self.company_for_hash(hash_api_key(key))

    async def company_for_hash(self, digest: str) -> str | None:
        """The company of the key with this hash (a dashboard sign-in keeps only the hash)."""
        now = time.monotonic()
        hit = self._known.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        company = await self.store.company_for_key(digest)
        if company is not None and self.ttl > 0:
            if len(self._known) > 10_000:
                self._known.clear()
            self._known[digest] = (company, now + self.ttl)
        return company


_SPACE = re.compile(r"\s")

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="webhook-dsl"'}


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, _CHALLENGE)


def request_key(request: Request) -> str | None:
    """The API key of a request: ``Authorization: Bearer KEY`` or ``X-Api-Key: KEY``; None if it carries none.

    Credentials that are there must be well formed (``ApiError`` 401 otherwise): a request with ``Basic``
    credentials, a bare ``Bearer``, an empty ``X-Api-Key``, two of a header or two different keys is
    refused, never read as a request without a key (which ``anonymous_company`` would serve).
    """
    authorizations = request.headers.getlist("authorization")
    api_keys = request.headers.getlist("x-api-key")
    if len(authorizations) > 1 or len(api_keys) > 1:
        raise _unauthorized("send one Authorization header or one X-Api-Key header, not several")
    keys: set[str] = set()
    if authorizations:
        scheme, _, value = authorizations[0].strip().partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer" or not value or _SPACE.search(value):
            raise _unauthorized("the Authorization header must be 'Bearer KEY'; no other scheme is accepted")
        keys.add(value)
    if api_keys:
        value = api_keys[0].strip()
        if not value:
            raise _unauthorized("the X-Api-Key header is empty")
        keys.add(value)
    if len(keys) > 1:
        raise _unauthorized("Authorization and X-Api-Key hold different keys; send one key")
    return keys.pop() if keys else None


async def company_of(request: Request) -> str:
    """The company of the request's API key; 401 without one. The request then counts as one of the
    company's requests being processed, or is a 429 if it already has as many as it may (``_CompanyLimit``)."""
    key = request_key(request)
    anonymous = request.app.state.settings.anonymous_company
    if key is None and anonymous is not None:
        company = str(anonymous)
    elif key is None:
        raise _unauthorized("send an API key: 'Authorization: Bearer KEY' or 'X-Api-Key: KEY'")
    else:
        found = await request.app.state.keys.company(key)
        if found is None:
            raise _unauthorized("the API key is not valid")
        company = str(found)
    slot = _slot.get()
    if slot is not None:
        slot.take(company)
    return company
