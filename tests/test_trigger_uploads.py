"""Triggers a company uploads (PUT /triggers/{name}): versions, rollback, deletion, tenancy, and replicas.

In-process (Starlette's TestClient) on both stores, every response checked against the OpenAPI document.
A call's log record names the version that ran (``trigger_version``, the document's digest). Two apps
over one database stand for two replicas: what one accepts, the other uses after its next poll.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from tests.service_support import BACKENDS, StoreFactory, make_key, start_echo, write_triggers
from tests.test_service import check as documented
from webhook_dsl.runtime.catalog import TriggerCatalog
from webhook_dsl.runtime.trigger import compile_trigger
from webhook_dsl.service.app import create_app
from webhook_dsl.service.middleware import ServiceSettings
from webhook_dsl.storage.base import TriggerVersion

A, B = "cmp_42", "acme"
#: How often a replica polls the store in these tests: small, so a test waits little.
POLL_SECONDS = 0.05
#: How long a test waits for a replica to pick a change up before it fails (not a bound it asserts).
PATIENCE_SECONDS = 10.0


@pytest.fixture(scope="module")
def echo() -> Iterator[ThreadingHTTPServer]:
    server = start_echo()
    yield server
    server.shutdown()
    server.server_close()


def lookup(port: int, *, description: str = "Looks a word up.", name: str = "lookup", indent: int = 2) -> str:
    """A trigger document calling the echo server (``GET /echo/NAME``); its description makes its version."""
    document = {
        "name": name,
        "description": description,
        "parameters": {
            "type": "object",
            "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 64}},
            "required": ["name"],
        },
        "webhook": {"url": f"http://127.0.0.1:{port}/echo/$name", "method": "GET"},
    }
    return json.dumps(document, indent=indent)


def digest(document: str) -> str:
    return compile_trigger(document).version


def make_app(factory: StoreFactory, triggers: Path) -> Starlette:
    return create_app(
        factory(),
        TriggerCatalog.load(triggers),
        settings=ServiceSettings(access_log=False, trigger_poll_seconds=POLL_SECONDS),
        allow_networks=["127.0.0.0/8"],
    )


@dataclass
class Replica:
    client: TestClient
    keys: dict[str, str]
    port: int

    def as_(self, company: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[company]}"}

    def upload(self, company: str, name: str, document: str) -> httpx.Response:
        response = self.client.put(
            f"/triggers/{name}", headers={**self.as_(company), "Content-Type": "application/json"}, content=document
        )
        documented(response, "/triggers/{name}", "PUT")
        return response

    def versions(self, company: str, name: str) -> httpx.Response:
        response = self.client.get(f"/triggers/{name}/versions", headers=self.as_(company))
        documented(response, "/triggers/{name}/versions", "GET")
        return response

    def rollback(self, company: str, name: str, body: Any) -> httpx.Response:
        response = self.client.post(f"/triggers/{name}/rollback", headers=self.as_(company), json=body)
        documented(response, "/triggers/{name}/rollback", "POST")
        return response

    def delete(self, company: str, name: str) -> httpx.Response:
        response = self.client.delete(f"/triggers/{name}", headers=self.as_(company))
        documented(response, "/triggers/{name}", "DELETE")
        return response

    def session(self, company: str, session_id: str, client_data: dict[str, Any] | None = None) -> None:
        response = self.client.put(
            f"/session/{session_id}", headers=self.as_(company), json={"client_data": client_data or {}}
        )
        assert response.status_code == 200, response.text

    def call(self, company: str, session_id: str, name: str, word: str) -> httpx.Response:
        response = self.client.post(
            f"/session/{session_id}/triggers/{name}", headers=self.as_(company), json={"arguments": {"name": word}}
        )
        documented(response, "/session/{session_id}/triggers/{name}", "POST")
        return response

    def last_log(self, company: str, session_id: str) -> dict[str, Any]:
        response = self.client.get(f"/session/{session_id}/logs", headers=self.as_(company))
        logs = documented(response, "/session/{session_id}/logs", "GET")["logs"]
        record: dict[str, Any] = logs[-1]
        return record

    def tools(self, company: str) -> list[str]:
        response = self.client.get("/triggers", headers=self.as_(company))
        return sorted(tool["function"]["name"] for tool in documented(response, "/triggers", "GET")["tools"])


@pytest.fixture(params=BACKENDS)
def factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    made = StoreFactory(request.param, tmp_path)
    yield made
    made.drop()


@pytest.fixture
def triggers(tmp_path: Path, stand_in: int, echo: ThreadingHTTPServer) -> Path:
    return write_triggers(tmp_path / "triggers", stand_in, echo.server_address[1])


@pytest.fixture
def keys(factory: StoreFactory) -> dict[str, str]:
    return {company: make_key(factory, company) for company in (A, B)}


@pytest.fixture
def service(
    factory: StoreFactory, triggers: Path, keys: dict[str, str], echo: ThreadingHTTPServer
) -> Iterator[Replica]:
    with TestClient(make_app(factory, triggers)) as client:
        yield Replica(client, keys, echo.server_address[1])


def wait_for(condition: Callable[[], bool], what: str) -> float:
    """Seconds until ``condition()`` held; fails after PATIENCE_SECONDS."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > PATIENCE_SECONDS:
            raise AssertionError(f"not within {PATIENCE_SECONDS} s: {what}")
        time.sleep(0.01)
    return time.monotonic() - started


# -- upload, call, versions -----------------------------------------------------------------------


def test_an_upload_is_callable_and_its_log_names_the_version(service: Replica) -> None:
    document = lookup(service.port)
    response = service.upload(A, "lookup", document)
    assert response.status_code == 201
    version = response.json()
    assert version["name"] == "lookup" and version["version"] == 1 and version["deleted"] is False
    assert version["digest"] == digest(document)

    assert "lookup" in service.tools(A) and "echo" in service.tools(A)
    service.session(A, "S1")
    result = service.call(A, "S1", "lookup", "apple").json()["result"]
    assert result["ok"] and result["url"].endswith("/echo/apple")
    record = service.last_log(A, "S1")
    assert record["trigger"] == "lookup" and record["trigger_version"] == digest(document)


def test_each_upload_is_a_version_and_a_rollback_brings_an_old_one_back(service: Replica) -> None:
    first, second = lookup(service.port), lookup(service.port, description="Looks a word up, better.")
    assert service.upload(A, "lookup", first).json()["version"] == 1
    assert service.upload(A, "lookup", second).json()["version"] == 2
    service.session(A, "S1")
    service.call(A, "S1", "lookup", "pear")
    assert service.last_log(A, "S1")["trigger_version"] == digest(second)

    response = service.rollback(A, "lookup", {"version": 1})
    assert response.status_code == 201
    assert response.json()["version"] == 3 and response.json()["digest"] == digest(first)
    service.call(A, "S1", "lookup", "plum")
    assert service.last_log(A, "S1")["trigger_version"] == digest(first)

    listed = service.versions(A, "lookup").json()
    assert listed["name"] == "lookup"
    assert [(v["version"], v["digest"]) for v in listed["versions"]] == [
        (3, digest(first)),
        (2, digest(second)),
        (1, digest(first)),
    ]
    times = [v["created_at"] for v in listed["versions"]]
    assert times == sorted(times, reverse=True)


def test_the_same_document_again_makes_no_new_version(service: Replica) -> None:
    document = lookup(service.port)
    created = service.upload(A, "lookup", document)
    assert created.status_code == 201
    # Layout and key order do not count: the digest is of the content.
    reformatted = json.dumps(dict(reversed(list(json.loads(document).items()))), indent=None)
    again = service.upload(A, "lookup", reformatted)
    assert again.status_code == 200 and again.json() == created.json()
    assert len(service.versions(A, "lookup").json()["versions"]) == 1
    # A rollback to the current content makes none either.
    same = service.rollback(A, "lookup", {"version": 1})
    assert same.status_code == 200 and same.json()["version"] == 1
    assert len(service.versions(A, "lookup").json()["versions"]) == 1


def test_a_deleted_trigger_is_gone_until_a_rollback(service: Replica) -> None:
    document = lookup(service.port)
    service.upload(A, "lookup", document)
    service.session(A, "S1")
    response = service.delete(A, "lookup")
    assert response.status_code == 200
    assert response.json()["deleted"] is True and response.json()["version"] == 2

    gone = service.call(A, "S1", "lookup", "fig")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "trigger_not_found"
    assert "lookup" not in service.tools(A)
    assert [v["deleted"] for v in service.versions(A, "lookup").json()["versions"]] == [True, False]
    again = service.delete(A, "lookup")
    assert again.status_code == 404 and again.json()["error"]["code"] == "trigger_not_found"
    refused = service.rollback(A, "lookup", {"version": 2})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "version_deleted"

    assert service.rollback(A, "lookup", {"version": 1}).status_code == 201
    assert service.call(A, "S1", "lookup", "fig").json()["result"]["ok"]
    assert service.last_log(A, "S1")["trigger_version"] == digest(document)


def test_unknown_versions_and_names_are_404s(service: Replica) -> None:
    response = service.versions(A, "never")
    assert response.status_code == 404 and response.json()["error"]["code"] == "trigger_not_found"
    response = service.delete(A, "never")
    assert response.status_code == 404
    response = service.rollback(A, "never", {"version": 1})
    assert response.status_code == 404 and response.json()["error"]["code"] == "trigger_not_found"
    folder = service.versions(A, "echo")
    assert folder.status_code == 404 and "trigger folder" in folder.json()["error"]["message"]

    service.upload(A, "lookup", lookup(service.port))
    response = service.rollback(A, "lookup", {"version": 7})
    assert response.status_code == 404 and response.json()["error"]["code"] == "version_not_found"


@pytest.mark.parametrize("body", [{}, {"version": "1"}, {"version": 0}, {"version": True}, [1], {"version": 1, "x": 2}])
def test_a_rollback_wants_a_version_number(service: Replica, body: Any) -> None:
    service.upload(A, "lookup", lookup(service.port))
    response = service.rollback(A, "lookup", body)
    assert response.status_code == 400
    assert '{"version": N}' in response.json()["error"]["message"]


# -- what is refused ----------------------------------------------------------------------------------


BAD_FIELD = """{
  "name": "lookup",
  "descripton": "a typo",
  "webhook": {"url": "http://127.0.0.1:1/x", "method": "GET"}
}"""
BAD_SYNTAX = """{
  "name": "lookup"
  "description": "a comma is missing above"
}"""
UNDEFINED = """{
  "name": "lookup",
  "description": "reads a variable nothing defines",
  "webhook": {"url": "http://127.0.0.1:1/$nowhere", "method": "GET"}
}"""


@pytest.mark.parametrize(
    ("document", "where"),
    [
        (BAD_FIELD, [(1, 1, "missing required field 'description'"), (3, 3, "unknown field 'descripton'")]),
        (BAD_SYNTAX, [(3, 3, "expected ',' or '}'")]),
        (UNDEFINED, [(4, 42, "$nowhere: no source defines it")]),
    ],
)
def test_a_trigger_that_does_not_compile_is_a_422_with_lines_and_columns(
    service: Replica, document: str, where: list[tuple[int, int, str]]
) -> None:
    response = service.upload(A, "lookup", document)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_trigger"
    problems = error["problems"]
    assert [(p["line"], p["column"]) for p in problems] == [(line, column) for line, column, _ in where]
    for problem, (line, column, text) in zip(problems, where, strict=True):
        assert problem["source"] == "upload:lookup" and text in problem["message"]
        assert f"upload:lookup:{line}:{column}: " in error["message"]
    assert service.versions(A, "lookup").status_code == 404  # nothing stored


def test_a_document_named_otherwise_than_its_path_is_refused(service: Replica) -> None:
    response = service.upload(A, "lookup", lookup(service.port, name="other"))
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "'other'" in message and "'lookup'" in message
    assert service.versions(A, "lookup").status_code == 404
    assert service.versions(A, "other").status_code == 404


def test_a_folder_trigger_s_name_cannot_be_uploaded(service: Replica) -> None:
    response = service.upload(A, "echo", lookup(service.port, name="echo"))
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "trigger_conflict" and "one source" in error["message"]
    # acme's folder has acme_inventory: acme cannot upload one; cmp_42, which does not see it, can.
    own = service.upload(B, "acme_inventory", lookup(service.port, name="acme_inventory"))
    assert own.status_code == 409
    assert service.upload(A, "acme_inventory", lookup(service.port, name="acme_inventory")).status_code == 201


@pytest.mark.parametrize(
    ("headers", "content", "status"),
    [
        ({"Content-Type": "text/plain"}, "{}", 415),
        ({"Content-Type": "application/json"}, "", 400),
        ({"Content-Type": "application/json"}, b"\xff\xfe", 400),
        ({"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"}, "{}", 403),
    ],
)
def test_bad_uploads_are_refused(service: Replica, headers: dict[str, str], content: Any, status: int) -> None:
    response = service.client.put("/triggers/lookup", headers={**service.as_(A), **headers}, content=content)
    assert response.status_code == status
    documented(response, "/triggers/{name}", "PUT")
    bad_name = service.client.put("/triggers/a b", headers=service.as_(A), content=lookup(service.port))
    assert bad_name.status_code == 400


def test_uploads_want_a_valid_key(service: Replica) -> None:
    for method, url, path in [
        ("PUT", "/triggers/lookup", "/triggers/{name}"),
        ("DELETE", "/triggers/lookup", "/triggers/{name}"),
        ("GET", "/triggers/lookup/versions", "/triggers/{name}/versions"),
        ("POST", "/triggers/lookup/rollback", "/triggers/{name}/rollback"),
    ]:
        response = service.client.request(method, url, headers={"Authorization": "Bearer wdsl_not-a-key"})
        assert response.status_code == 401 and documented(response, path, method)


# -- tenancy ----------------------------------------------------------------------------------------


def test_a_company_neither_sees_nor_calls_nor_changes_another_s_uploads(service: Replica) -> None:
    a_document = lookup(service.port)
    service.upload(A, "lookup", a_document)
    service.upload(A, "lookup", lookup(service.port, description="second"))
    service.session(A, "S1")
    service.session(B, "S1")

    assert "lookup" in service.tools(A) and "lookup" not in service.tools(B)
    response = service.call(B, "S1", "lookup", "kiwi")
    assert response.status_code == 404 and response.json()["error"]["code"] == "trigger_not_found"
    assert service.versions(B, "lookup").status_code == 404
    assert service.rollback(B, "lookup", {"version": 1}).status_code == 404
    assert service.delete(B, "lookup").status_code == 404
    replies = service.client.post(
        "/session/S1/tool-calls",
        headers=service.as_(B),
        json={"calls": [{"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
    ).json()["replies"]
    assert "no tool" in replies[0]["content"].lower() or "unknown" in replies[0]["content"].lower()

    # B's own upload of the name is B's: its own numbering, A's trigger unchanged.
    b_document = lookup(service.port, description="B's own")
    assert service.upload(B, "lookup", b_document).json()["version"] == 1
    service.call(B, "S1", "lookup", "kiwi")
    assert service.last_log(B, "S1")["trigger_version"] == digest(b_document)
    assert len(service.versions(A, "lookup").json()["versions"]) == 2
    assert service.rollback(A, "lookup", {"version": 1}).status_code == 201
    service.call(A, "S1", "lookup", "kiwi")
    assert service.last_log(A, "S1")["trigger_version"] == digest(a_document)
    service.call(B, "S1", "lookup", "lime")
    assert service.last_log(B, "S1")["trigger_version"] == digest(b_document)


def test_tool_calls_find_the_company_s_uploads(service: Replica) -> None:
    service.upload(A, "lookup", lookup(service.port))
    service.session(A, "S1")
    call = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"name": "grape"}'}}
    response = service.client.post("/session/S1/tool-calls", headers=service.as_(A), json={"calls": [call]})
    reply = documented(response, "/session/{session_id}/tool-calls", "POST")["replies"][0]
    assert reply["tool_call_id"] == "c1"
    assert service.last_log(A, "S1")["url"].endswith("/echo/grape")


def vault(port: int) -> str:
    """An uploaded trigger declaring the secret ``tok`` (sent as a bearer token)."""
    return json.dumps(
        {
            "name": "vault",
            "description": "Carries a token.",
            "clientData": ["tok"],
            "secrets": ["tok"],
            "webhook": {
                "url": f"http://127.0.0.1:{port}/echo/vault",
                "method": "GET",
                "headers": [{"key": "Authorization", "value": "Bearer $tok"}],
            },
        }
    )


def test_an_upload_s_secrets_are_protected_and_masked_for_its_company_only(service: Replica) -> None:
    """Rule M5 (specs/security.md): no response may set a key any trigger of the company declares secret, so
    an uploaded trigger's secret is protected from the company's other triggers' answers, not from another
    company's."""
    service.session(A, "S1")
    service.session(B, "S1")
    before = service.call(A, "S1", "echo", "tok").json()["result"]
    assert before["client_data_merged"] == {"tok": True}

    assert service.upload(A, "vault", vault(service.port)).status_code == 201
    refused = service.call(A, "S1", "echo", "tok").json()["result"]
    assert refused["client_data_merged"] == {}
    assert any("'tok'" in warning for warning in refused["warnings"])
    assert service.call(B, "S1", "echo", "tok").json()["result"]["client_data_merged"] == {"tok": True}

    token = "tok-value-0123456789"
    service.session(A, "S2", {"tok": token})
    service.session(B, "S2", {"tok": token})
    assert token not in service.client.get("/session/S2", headers=service.as_(A)).text
    assert token in service.client.get("/session/S2", headers=service.as_(B)).text

    assert service.delete(A, "vault").status_code == 200
    assert service.call(A, "S1", "echo", "tok").json()["result"]["client_data_merged"] == {"tok": True}


# -- replicas ------------------------------------------------------------------------------------------


def test_a_second_replica_picks_up_uploads_rollbacks_and_deletions(
    factory: StoreFactory, triggers: Path, keys: dict[str, str], echo: ThreadingHTTPServer
) -> None:
    port = echo.server_address[1]
    with TestClient(make_app(factory, triggers)) as one, TestClient(make_app(factory, triggers)) as two:
        a, b = Replica(one, keys, port), Replica(two, keys, port)
        a.session(A, "S1")
        first, second = lookup(port), lookup(port, description="second")

        assert a.upload(A, "lookup", first).status_code == 201
        wait_for(lambda: runs(b, digest(first)), "the upload reaches the second replica")
        assert "lookup" not in b.tools(B)

        assert b.upload(A, "lookup", second).json()["version"] == 2
        wait_for(lambda: runs(a, digest(second)), "the second version reaches the first replica")

        assert a.rollback(A, "lookup", {"version": 1}).status_code == 201
        wait_for(lambda: runs(b, digest(first)), "the rollback reaches the second replica")

        assert a.delete(A, "lookup").status_code == 200
        wait_for(lambda: b.call(A, "S1", "lookup", "d").status_code == 404, "the deletion reaches the second replica")


def runs(replica: Replica, version: str) -> bool:
    """Whether a call of cmp_42's lookup on this replica runs that version (its log record says so)."""
    response = replica.call(A, "S1", "lookup", "v")
    return response.status_code == 200 and replica.last_log(A, "S1")["trigger_version"] == version


async def _store_version(factory: StoreFactory, company: str, name: str, document: str, digest: str) -> TriggerVersion:
    store = factory()
    try:
        return await store.put_trigger_version(company, name, document, digest)
    finally:
        await store.close()


def test_a_stored_document_that_no_longer_compiles_is_skipped_and_logged_once(
    factory: StoreFactory,
    triggers: Path,
    keys: dict[str, str],
    echo: ThreadingHTTPServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What a newer release refuses (here: a document stored behind the service's back) must not take the
    company's other uploads, or the replica, down with it."""
    port = echo.server_address[1]
    asyncio.run(_store_version(factory, A, "broken", UNDEFINED.replace('"lookup"', '"broken"'), "0" * 16))
    asyncio.run(_store_version(factory, A, "lookup", lookup(port), digest(lookup(port))))
    caplog.set_level(logging.WARNING, logger="webhook_dsl.triggers")
    with TestClient(make_app(factory, triggers)) as client:
        replica = Replica(client, keys, port)
        assert "lookup" in replica.tools(A) and "broken" not in replica.tools(A)
        # Another change makes every replica reload; the broken version is not logged again.
        asyncio.run(_store_version(factory, B, "lookup", lookup(port), digest(lookup(port))))
        wait_for(lambda: "lookup" in replica.tools(B), "the reload after another change")
        replica.session(A, "S1")
        assert replica.call(A, "S1", "lookup", "ok").json()["result"]["ok"]
    broken = [r for r in caplog.records if "'broken'" in r.getMessage()]
    assert len(broken) == 1 and "no longer compiles" in broken[0].getMessage()
    assert "upload:broken:4:" in broken[0].getMessage()


def test_an_upload_that_a_folder_trigger_shadows_is_left_out(
    factory: StoreFactory, triggers: Path, keys: dict[str, str], echo: ThreadingHTTPServer
) -> None:
    """One source per name: stored before the folder had the name (the folder changed since), the folder's wins."""
    port = echo.server_address[1]
    shadowed = lookup(port, name="echo", description="an upload named as a folder trigger")
    asyncio.run(_store_version(factory, A, "echo", shadowed, digest(shadowed)))
    with TestClient(make_app(factory, triggers)) as client:
        replica = Replica(client, keys, port)
        replica.session(A, "S1")
        replica.call(A, "S1", "echo", "w")
        assert replica.last_log(A, "S1")["trigger_version"] != digest(shadowed)
        catalog: TriggerCatalog = client.app.state.catalog  # type: ignore[attr-defined]
        assert catalog.get(A, "echo") is catalog.shared["echo"]
