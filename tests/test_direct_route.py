"""The trigger endpoint is served by ``_Guard`` before Starlette's router (``_DirectTriggerRoute``): every kind of
request to it gets the same answer as through the router, and other endpoints still go through the router."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service_support import StoreFactory, make_key, write_triggers
from webhook_dsl.runtime.catalog import TriggerCatalog
from webhook_dsl.service import app as service_app
from webhook_dsl.service.app import create_app
from webhook_dsl.service.middleware import ServiceSettings

#: (method, path, headers, body): every answer of the trigger endpoint, and its neighbours
CASES: list[tuple[str, str, dict[str, str], bytes | None]] = [
    ("POST", "/session/S1/triggers/check_order", {}, b'{"arguments": {"order_number": "A-1001"}}'),
    ("POST", "/session/S1/triggers/check_order", {}, b'{"arguments": "{\\"order_number\\": \\"A-7\\"}"}'),
    ("POST", "/session/S1/triggers/check_order", {}, b'{"arguments": {"order_number": 5}}'),  # bad arguments
    ("POST", "/session/S1/triggers/check_order", {}, b'{"arguments": "not json"}'),
    ("POST", "/session/S1/triggers/check_order", {}, b"{"),  # 400
    ("POST", "/session/S1/triggers/check_order", {"content-type": "text/plain"}, b"x"),  # 415
    ("POST", "/session/S1/triggers/nope", {}, b"{}"),  # 404 trigger
    ("POST", "/session/S9/triggers/check_order", {}, b'{"arguments": {"order_number": "A-1"}}'),  # 404 session
    ("POST", "/session/S1/triggers/acme_inventory", {}, b'{"arguments": {"sku": "1"}}'),  # another company's
    ("POST", "/session/S1/triggers/check_order", {"authorization": "Bearer wdsl_nope"}, b"{}"),  # 401
    ("POST", "/session/S1/triggers/check_order", {"authorization": "Basic eDp5"}, b"{}"),  # 401
    ("POST", "/session/S1/triggers/check_order", {"sec-fetch-site": "cross-site"}, b"{}"),  # 403
    ("POST", "/session/a%2Fb/triggers/check_order", {}, b"{}"),  # an encoded slash: not this route
    ("POST", "/session/S1/triggers/check_order/", {}, b"{}"),  # a trailing slash: the router redirects
    ("GET", "/session/S1/triggers/check_order", {}, None),  # 405, from the router
    ("POST", "/session/S1/triggers/check_order", {}, b'{"arguments": {"order_number": "A-1"}, "dry_run": true}'),
]


def _answers(app: Any, key: str) -> list[tuple[int, Any, str]]:
    async def run() -> list[tuple[int, Any, str]]:
        transport = httpx.ASGITransport(app=app)
        answers = []
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://localhost") as client,
        ):
            put = await client.put("/session/S1", json={"client_data": {"user_id": "u1"}}, headers=_auth(key))
            assert put.status_code == 200, put.text
            for method, path, headers, body in CASES:
                sent = {**_auth(key), "content-type": "application/json", **headers}
                response = await client.request(method, path, headers=sent, content=body)
                document = response.json() if response.content else None
                if isinstance(document, dict) and "result" in document:  # times and sequence numbers vary
                    for varying in ("elapsed_ms", "log_seq"):
                        document["result"].pop(varying, None)
                answers.append((response.status_code, document, response.headers.get("allow", "")))
        return answers

    return asyncio.run(run())


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_the_direct_route_answers_as_the_router_does(
    tmp_path: Path, stand_in: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    triggers = write_triggers(tmp_path / "triggers", stand_in)
    results = []
    claimed: list[str] = []
    original = service_app._DirectTriggerRoute.claims

    def counting(self: Any, scope: Any) -> bool:
        taken = original(self, scope)
        if taken:
            claimed.append(scope["path"])
        return taken

    monkeypatch.setattr(service_app._DirectTriggerRoute, "claims", counting)
    for direct in (True, False):
        if not direct:
            monkeypatch.setattr(service_app._DirectTriggerRoute, "claims", lambda self, scope: False)
        folder = tmp_path / ("direct" if direct else "router")
        folder.mkdir()
        factory = StoreFactory("sqlite", folder)
        key = make_key(factory, "cmp_42")
        app = create_app(
            factory(),
            TriggerCatalog.load(triggers),
            settings=ServiceSettings(access_log=False),
            allow_networks=["127.0.0.0/8"],
        )
        results.append(_answers(app, key))
    direct_answers, router_answers = results
    for case, a, b in zip(CASES, direct_answers, router_answers, strict=True):
        assert a == b, case
    statuses = [status for status, _, _ in direct_answers]
    assert statuses == [200, 200, 200, 200, 400, 415, 404, 404, 404, 401, 401, 403, 404, 307, 405, 200]
    # the direct route took the well-formed trigger paths, and nothing else (a cross-site POST is refused first)
    ours = [
        path
        for method, path, headers, _ in CASES
        if method == "POST" and path.count("/") == 4 and "%" not in path and "sec-fetch-site" not in headers
    ]
    assert claimed == ours
