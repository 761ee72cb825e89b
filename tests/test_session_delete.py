"""DELETE /session/{id}: the company's session and its call logs go together; nothing else does.

Driven in-process (Starlette's TestClient) on both stores, each response checked against the OpenAPI
document as in ``test_service.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from tests.service_support import BACKENDS, StoreFactory, make_key, start_echo, write_triggers
from tests.test_service import check as documented
from webhook_dsl.runtime.catalog import TriggerCatalog
from webhook_dsl.service.app import create_app
from webhook_dsl.service.middleware import ServiceSettings

A, B = "cmp_42", "acme"
PATH = "/session/{session_id}"


@pytest.fixture(scope="module")
def echo() -> Iterator[ThreadingHTTPServer]:
    server = start_echo()
    yield server
    server.shutdown()
    server.server_close()


@dataclass
class Service:
    client: TestClient
    factory: StoreFactory
    keys: dict[str, str]

    def as_(self, company: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[company]}"}

    def put(self, company: str, session_id: str, client_data: dict[str, object] | None = None) -> None:
        response = self.client.put(
            f"/session/{session_id}", headers=self.as_(company), json={"client_data": client_data or {}}
        )
        assert response.status_code == 200, response.text

    def fire(self, company: str, session_id: str, word: str) -> None:
        response = self.client.post(
            f"/session/{session_id}/triggers/echo", headers=self.as_(company), json={"arguments": {"name": word}}
        )
        assert response.status_code == 200 and response.json()["result"]["ok"], response.text

    def delete(self, company: str | None, session_id: str, **headers: str) -> httpx.Response:
        sent = {**(self.as_(company) if company else {}), **headers}
        return self.client.delete(f"/session/{session_id}", headers=sent)

    def logs(self, company: str, session_id: str) -> list[dict[str, object]]:
        async def read() -> list[dict[str, object]]:
            store = self.factory()
            try:
                return await store.logs(session_id, company_id=company)
            finally:
                await store.close()

        return asyncio.run(read())


@pytest.fixture(params=BACKENDS)
def service(
    request: pytest.FixtureRequest, tmp_path: Path, stand_in: int, echo: ThreadingHTTPServer
) -> Iterator[Service]:
    factory = StoreFactory(request.param, tmp_path)
    keys = {company: make_key(factory, company) for company in (A, B)}
    triggers = write_triggers(tmp_path / "triggers", stand_in, echo.server_address[1])
    app = create_app(
        factory(),
        TriggerCatalog.load(triggers),
        settings=ServiceSettings(access_log=False),
        allow_networks=["127.0.0.0/8"],
    )
    with TestClient(app) as client:
        yield Service(client, factory, keys)
    factory.drop()


def test_a_session_and_its_logs_are_deleted(service: Service) -> None:
    service.put(A, "S1", {"plan": "gold"})
    service.fire(A, "S1", "first")
    service.fire(A, "S1", "second")
    assert len(service.logs(A, "S1")) == 2

    response = service.delete(A, "S1")
    assert response.status_code == 200
    assert documented(response, PATH, "DELETE") == {"deleted": "S1", "logs_deleted": 2}

    gone = service.client.get("/session/S1", headers=service.as_(A))
    assert gone.status_code == 404 and documented(gone, PATH, "GET")["error"]["code"] == "session_not_found"
    assert service.client.get("/session/S1/logs", headers=service.as_(A)).status_code == 404

    # The same id made again is a new session: no old client_data, no old log record.
    service.put(A, "S1")
    assert service.client.get("/session/S1", headers=service.as_(A)).json()["client_data"] == {}
    assert service.logs(A, "S1") == []
    assert service.client.get("/session/S1/logs", headers=service.as_(A)).json()["logs"] == []


def test_a_session_without_logs_is_deleted_with_none(service: Service) -> None:
    service.put(A, "S2")
    response = service.delete(A, "S2")
    assert documented(response, PATH, "DELETE") == {"deleted": "S2", "logs_deleted": 0}


def test_deleting_a_session_that_is_not_there_is_a_404(service: Service) -> None:
    response = service.delete(A, "nobody")
    assert response.status_code == 404
    error = documented(response, PATH, "DELETE")["error"]
    assert error["code"] == "session_not_found" and "'nobody'" in error["message"]

    service.put(A, "S1")
    assert service.delete(A, "S1").status_code == 200
    again = service.delete(A, "S1")
    assert again.status_code == 404 and documented(again, PATH, "DELETE")["error"]["code"] == "session_not_found"


def test_a_bad_session_id_is_a_400(service: Service) -> None:
    response = service.delete(A, "-S1")
    assert response.status_code == 400
    assert "a session id is" in documented(response, PATH, "DELETE")["error"]["message"]


def test_another_company_s_session_of_the_same_id_is_untouched(service: Service) -> None:
    service.put(A, "S1", {"owner": "a"})
    service.put(B, "S1", {"owner": "b"})
    service.fire(A, "S1", "a1")
    service.fire(B, "S1", "b1")
    service.fire(B, "S1", "b2")

    # B cannot delete A's session by naming an id it does not have.
    service.put(A, "only_a")
    response = service.delete(B, "only_a")
    assert response.status_code == 404 and documented(response, PATH, "DELETE")
    assert service.client.get("/session/only_a", headers=service.as_(A)).status_code == 200

    assert documented(service.delete(A, "S1"), PATH, "DELETE") == {"deleted": "S1", "logs_deleted": 1}
    kept = service.client.get("/session/S1", headers=service.as_(B))
    assert kept.status_code == 200 and kept.json()["client_data"]["owner"] == "b"
    assert [str(r["url"]).rsplit("/", 1)[1] for r in service.logs(B, "S1")] == ["b1", "b2"]


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "https://evil.example"},
    ],
)
def test_a_delete_from_another_site_is_refused_as_a_put_is(service: Service, headers: dict[str, str]) -> None:
    service.put(A, "S1")
    service.fire(A, "S1", "kept")
    put = service.client.put("/session/S1", headers={**service.as_(A), **headers}, json={"client_data": {}})
    response = service.delete(A, "S1", **headers)
    assert put.status_code == response.status_code == 403
    assert documented(response, PATH, "DELETE")["error"]["code"] == "forbidden"
    assert service.client.get("/session/S1", headers=service.as_(A)).status_code == 200
    assert len(service.logs(A, "S1")) == 1


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wdsl_not-a-key"},
        {"X-Api-Key": "wdsl_not-a-key"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ],
)
def test_a_delete_without_a_valid_key_is_refused(service: Service, headers: dict[str, str]) -> None:
    service.put(A, "S1")
    response = service.delete(None, "S1", **headers)
    assert response.status_code == 401
    assert documented(response, PATH, "DELETE")["error"]["code"] == "unauthorized"
    assert service.client.get("/session/S1", headers=service.as_(A)).status_code == 200
