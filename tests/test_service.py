"""The HTTP service: the seed's flow, tenancy on every endpoint, errors, secrets, and the OpenAPI document.

Most tests drive the ASGI app in-process (Starlette's TestClient) against a stand-in API on loopback;
the last ones start real ``webhook-dsl serve`` processes, two of them on one database.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from tests.service_support import (
    ACCEPTED_CLIENT_DATA,
    ACCEPTED_SESSION_IDS,
    BACKENDS,
    EXAMPLE_SECRET_NAMES,
    REFUSED_CLIENT_DATA,
    REFUSED_SESSION_IDS,
    StoreFactory,
    make_key,
    put_secrets,
    services,
    start_echo,
    write_triggers,
)
from webhook_dsl.cli import main
from webhook_dsl.service.app import TriggerCatalog, TriggerLoadError, create_app
from webhook_dsl.service.middleware import ServiceSettings
from webhook_dsl.service.openapi import openapi_document
from webhook_dsl.storage.base import secret_problem, session_id_problem

_MAX_EXAMPLES = int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "200"))

SECRET = "erp-SECRET-41d2c9"
DOCUMENT = openapi_document()


@pytest.fixture
def triggers(tmp_path: Path, stand_in: int) -> Path:
    return write_triggers(tmp_path / "triggers", stand_in)


@dataclass
class Service:
    client: TestClient
    factory: StoreFactory
    keys: dict[str, str]

    def as_(self, company: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[company]}"}


@pytest.fixture(params=BACKENDS)
def service(request: pytest.FixtureRequest, tmp_path: Path, triggers: Path) -> Iterator[Service]:
    factory = StoreFactory(request.param, tmp_path)
    keys = {company: make_key(factory, company) for company in ("cmp_42", "acme")}
    app = create_app(
        factory(),
        TriggerCatalog.load(triggers),
        settings=ServiceSettings(max_body_bytes=64 * 1024, access_log=False),
        allow_networks=["127.0.0.0/8"],
    )
    with TestClient(app) as client:
        yield Service(client, factory, keys)
    factory.drop()


# -- checking responses against the OpenAPI document ------------------------------------------


def check(response: httpx.Response, path: str, method: str) -> Any:
    """Assert the response is one the document describes (status, JSON, schema); return its JSON."""
    operation = DOCUMENT["paths"][path][method.lower()]
    described = operation["responses"].get(str(response.status_code))
    assert described is not None, f"{method} {path}: status {response.status_code} is not documented"
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    schema = {**described["content"]["application/json"]["schema"], "components": DOCUMENT["components"]}
    jsonschema.Draft202012Validator(schema).validate(body)
    return body


def put(service: Service, company: str, session_id: str, **kwargs: Any) -> Any:
    response = service.client.put(f"/session/{session_id}", headers=service.as_(company), **kwargs)
    body = check(response, "/session/{session_id}", "PUT")
    assert response.status_code == 200, body
    return body


def fire(service: Service, company: str, session_id: str, name: str, payload: Any) -> httpx.Response:
    response = service.client.post(f"/session/{session_id}/triggers/{name}", headers=service.as_(company), json=payload)
    check(response, "/session/{session_id}/triggers/{name}", "POST")
    return response


# -- the seed's flow ------------------------------------------------------------------------------


def test_the_seed_flow_multipart_client_data_then_a_trigger(service: Service) -> None:
    # curl -X PUT .../secrets/erp_token -d '{"value": "..."}'  (once per company: the ERP token is the company's)
    check_empty(set_secret(service, "cmp_42", "erp_token", SECRET), "/secrets/{name}", "PUT")
    client_data = {"user_id": "usr_999", "plan": "enterprise"}
    # curl -X PUT .../session/$ID -F 'client_data={...}'  (multipart, as in the seed)
    session = put(service, "cmp_42", "S1", files={"client_data": (None, json.dumps(client_data))})
    assert session["company_id"] == "cmp_42" and session["client_data"] == client_data

    response = fire(service, "cmp_42", "S1", "check_order", {"arguments": {"order_number": "A-1001"}, "images": []})
    assert response.status_code == 200
    assert SECRET not in response.text
    body = response.json()
    assert body["message_for_llm"].startswith('The tool "check_order" succeeded (HTTP 200 OK).')
    assert "Instruction: Inform the customer" in body["message_for_llm"]
    result = body["result"]
    assert result["ok"] and result["status"] == 200 and result["response"]["order_number"] == "A-1001"
    assert result["client_data_merged"] == {"last_order_number": "A-1001"} and result["log_seq"]

    response = service.client.get("/session/S1", headers=service.as_("cmp_42"))
    session = check(response, "/session/{session_id}", "GET")
    assert session["client_data"] == {**client_data, "last_order_number": "A-1001"}
    assert SECRET not in response.text

    response = service.client.get("/session/S1/logs", headers=service.as_("cmp_42"))
    logs = check(response, "/session/{session_id}/logs", "GET")["logs"]
    assert [(r["trigger"], r["status"], r["ok"]) for r in logs] == [("check_order", 200, True)]
    assert ["Authorization", "***"] in logs[0]["request_headers"]
    assert SECRET not in response.text


def test_put_accepts_json_and_forms_and_merges(service: Service) -> None:
    put(service, "cmp_42", "S2", json={"client_data": {"a": 1, "b": {"c": [1, 2]}}, "assistant_id": "asst_7"})
    put(service, "cmp_42", "S2", data={"client_data": '{"b": 2, "d": null}'})  # urlencoded form
    put(service, "cmp_42", "S2", files={"client_data": ("cd.json", b'{"e": "from a file"}', "application/json")})
    session = put(service, "cmp_42", "S2")  # no body: the session as it is
    assert session["client_data"] == {"a": 1, "b": 2, "d": None, "e": "from a file"}
    assert session["assistant_id"] == "asst_7"
    assert put(service, "cmp_42", "S2", json={"assistant_id": "asst_8"})["client_data"]["a"] == 1


def test_triggers_are_listed_as_tools_of_the_key_s_company(service: Service) -> None:
    for style, name_of in (("openai", lambda t: t["function"]["name"]), ("anthropic", lambda t: t["name"])):
        response = service.client.get("/triggers", params={"style": style}, headers=service.as_("cmp_42"))
        tools = check(response, "/triggers", "GET")["tools"]
        assert [name_of(t) for t in tools] == ["analyze_image", "check_order", "create_ticket", "echo"]
        response = service.client.get("/triggers", params={"style": style}, headers=service.as_("acme"))
        assert "acme_inventory" in [name_of(t) for t in check(response, "/triggers", "GET")["tools"]]
    response = service.client.get("/triggers", headers=service.as_("cmp_42"))
    assert check(response, "/triggers", "GET")["style"] == "openai"
    response = service.client.get("/triggers", params={"style": "gemini"}, headers=service.as_("cmp_42"))
    assert response.status_code == 400 and check(response, "/triggers", "GET")["error"]["code"] == "bad_request"


def test_bad_arguments_are_a_result_for_the_llm_not_an_http_error(service: Service) -> None:
    assert set_secret(service, "cmp_42", "erp_token", SECRET).status_code == 204
    put(service, "cmp_42", "S3")
    response = fire(service, "cmp_42", "S3", "check_order", {"arguments": {"order_number": 7}})
    assert response.status_code == 200
    result = response.json()["result"]
    assert not result["ok"] and result["category"] == "bad_arguments"
    assert "Ask the user" in response.json()["message_for_llm"]
    logs = service.client.get("/session/S3/logs", headers=service.as_("cmp_42")).json()["logs"]
    assert logs[-1]["category"] == "bad_arguments"


def test_a_failing_remote_is_a_result_with_its_category(service: Service, tmp_path: Path) -> None:
    assert set_secret(service, "cmp_42", "erp_token", SECRET).status_code == 204
    put(service, "cmp_42", "S4", json={"client_data": {"vision_api_key": SECRET}})
    # The webhook call failed, the service did its job: a 200 whose result says how.
    response = fire(service, "cmp_42", "S4", "analyze_image", {"images": ["https://cdn.example.com/1.jpg"]})
    assert response.status_code == 200
    result = response.json()["result"]
    # no company secret vision_api_key; a client_data key of that name is not $secrets.vision_api_key
    assert result["ok"] is False and result["category"] == "render"
    assert "$secrets.vision_api_key" in result["error"]
    assert "failed" in response.json()["message_for_llm"]


def test_dry_run_sends_nothing_and_logs_nothing(service: Service) -> None:
    assert set_secret(service, "cmp_42", "erp_token", SECRET).status_code == 204
    put(service, "cmp_42", "S5")
    response = fire(service, "cmp_42", "S5", "check_order", {"arguments": {"order_number": "A-1"}, "dry_run": True})
    result = response.json()["result"]
    assert result["ok"] and result["dry_run"]["sent"] is False and result["log_seq"] is None
    assert ["Authorization", "***"] in result["dry_run"]["request"]["headers"]
    assert result["dry_run"]["variables"]["$secrets.erp_token"]["source"] == "company_secret"
    assert SECRET not in response.text
    assert service.client.get("/session/S5/logs", headers=service.as_("cmp_42")).json()["logs"] == []


# -- tenancy: every endpoint, across the line ----------------------------------------------------


def test_no_endpoint_crosses_from_one_company_to_another(service: Service) -> None:
    a, b = "cmp_42", "acme"
    assert set_secret(service, a, "erp_token", SECRET).status_code == 204
    put(service, a, "S1", json={"client_data": {"owner": "a"}, "assistant_id": "asst_a"})
    response = fire(service, a, "S1", "check_order", {"arguments": {"order_number": "A-1"}})
    assert response.status_code == 200 and response.json()["result"]["ok"]

    # B cannot read A's session, its logs, or fire a trigger on it.
    response = service.client.get("/session/S1", headers=service.as_(b))
    assert response.status_code == 404
    assert check(response, "/session/{session_id}", "GET")["error"]["code"] == "session_not_found"
    response = service.client.get("/session/S1/logs", headers=service.as_(b))
    assert response.status_code == 404 and check(response, "/session/{session_id}/logs", "GET")
    response = fire(service, b, "S1", "check_order", {"arguments": {"order_number": "B-1"}})
    assert response.status_code == 404 and response.json()["error"]["code"] == "session_not_found"

    # B's PUT on the same id makes B's own session; A's is untouched.
    session = put(service, b, "S1", json={"client_data": {"owner": "b"}})
    assert session["company_id"] == b and session["client_data"] == {"owner": "b"}
    assert session["assistant_id"] == ""
    a_session = service.client.get("/session/S1", headers=service.as_(a)).json()
    assert a_session["client_data"]["owner"] == "a" and a_session["assistant_id"] == "asst_a"

    # A trigger B fires on its S1 merges into B's session and logs into B's log only, with B's own secret.
    assert set_secret(service, b, "erp_token", "b-token-123").status_code == 204
    response = fire(service, b, "S1", "check_order", {"arguments": {"order_number": "B-7"}})
    assert response.status_code == 200 and response.json()["result"]["ok"]
    a_logs = service.client.get("/session/S1/logs", headers=service.as_(a)).json()["logs"]
    b_logs = service.client.get("/session/S1/logs", headers=service.as_(b)).json()["logs"]
    assert [r["url"].rsplit("/", 1)[1] for r in a_logs] == ["A-1"]
    assert [r["url"].rsplit("/", 1)[1] for r in b_logs] == ["B-7"]
    assert service.client.get("/session/S1", headers=service.as_(a)).json()["client_data"]["last_order_number"] == "A-1"

    # A body cannot choose the company.
    response = service.client.put("/session/S9", headers=service.as_(b), json={"client_data": {}, "company_id": a})
    assert response.status_code == 400 and "company_id" in response.json()["error"]["message"]
    response = service.client.put("/session/S9", headers=service.as_(b), data={"company_id": a})
    assert response.status_code == 400
    assert service.client.get("/session/S9", headers=service.as_(a)).status_code == 404

    # Company triggers: acme's own trigger is invisible and unusable for cmp_42.
    put(service, a, "S2")
    response = fire(service, a, "S2", "acme_inventory", {"arguments": {"sku": "X"}})
    assert response.status_code == 404 and response.json()["error"]["code"] == "trigger_not_found"
    put(service, b, "S2", json={"client_data": {"erp_token": "b-token-123"}})
    assert fire(service, b, "S2", "acme_inventory", {"arguments": {"sku": "X"}}).status_code == 200


ENDPOINTS = [
    ("PUT", "/session/S1", "/session/{session_id}"),
    ("GET", "/session/S1", "/session/{session_id}"),
    ("GET", "/session/S1/logs", "/session/{session_id}/logs"),
    ("POST", "/session/S1/triggers/check_order", "/session/{session_id}/triggers/{name}"),
    ("GET", "/triggers", "/triggers"),
]


@pytest.mark.parametrize(("method", "url", "path"), ENDPOINTS)
def test_every_endpoint_wants_a_valid_key(service: Service, method: str, url: str, path: str) -> None:
    put(service, "cmp_42", "S1")
    for headers in (
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer wdsl_not-a-key"},
        {"X-Api-Key": "wdsl_not-a-key"},
        {"Authorization": f"Bearer {service.keys['cmp_42']}x"},
    ):
        response = service.client.request(method, url, headers=headers)
        assert response.status_code == 401, headers
        assert check(response, path, method)["error"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")
    ok = service.client.request(method, url, headers={"X-Api-Key": service.keys["cmp_42"]})
    assert ok.status_code == 200, ok.text


def test_a_revoked_key_stops_working(service: Service, tmp_path: Path) -> None:
    assert service.client.get("/triggers", headers=service.as_("acme")).status_code == 200
    status = main(
        ["keys", "revoke", service.keys["acme"][:11], "--company-id", "acme", "--database", service.factory.url],
        io.StringIO(),
        io.StringIO(),
    )
    assert status == 0
    service.client.app.state.keys._known.clear()  # the service remembers a key's company for 10 s
    assert service.client.get("/triggers", headers=service.as_("acme")).status_code == 401


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "status", "fragment"),
    [
        ({"content": b"{", "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
        ({"json": {"client_data": [1]}}, 400, "must be a JSON object"),
        ({"json": [1]}, 400, "must be a JSON object"),
        ({"json": {"client_data": {"session.id": "x"}}}, 400, "system variable"),
        ({"json": {"client_data": {}, "extra": 1}}, 400, "unknown field"),
        ({"json": {"assistant_id": 5}}, 400, "assistant_id"),
        ({"json": {"assistant_id": "x" * 129}}, 400, "assistant_id"),
        ({"content": b'{"client_data": {"x": NaN}}', "headers": {"content-type": "application/json"}}, 400, "JSON"),
        (
            {
                "content": b'{"client_data": ' + b"[" * 40 + b"]" * 40 + b"}",
                "headers": {"content-type": "application/json"},
            },
            400,
            "nested",
        ),
        ({"content": b"[" * 100_00 + b"]" * 100_00, "headers": {"content-type": "application/json"}}, 400, "nested"),
        (
            {"content": b'{"client_data": {"x": "\\ud800"}}', "headers": {"content-type": "application/json"}},
            400,
            "surrogate",
        ),
        ({"json": {"assistant_id": None}}, 400, "assistant_id"),
        ({"json": {"assistant_id": "a\x00b"}}, 400, "assistant_id"),
        ({"data": {"client_data": "not json"}}, 400, "not valid JSON"),
        ({"files": {"client_data": (None, "[]")}}, 400, "must be a JSON object"),
        ({"content": b"client_data=x", "headers": {"content-type": "text/plain"}}, 415, "as JSON"),
        ({"json": {"client_data": {"x": "y" * 70_000}}}, 413, "larger than"),
    ],
)
def test_bad_session_updates_are_400s_with_a_message(
    service: Service, kwargs: dict[str, Any], status: int, fragment: str
) -> None:
    kwargs = dict(kwargs)
    headers = {**service.as_("cmp_42"), **kwargs.pop("headers", {})}
    response = service.client.put("/session/S1", headers=headers, **kwargs)
    assert response.status_code == status, response.text
    assert fragment in check(response, "/session/{session_id}", "PUT")["error"]["message"]


def test_a_body_without_length_is_cut_off_at_the_limit(service: Service) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"client_data": {"x": "'
        for _ in range(100):
            yield b"y" * 1024
        yield b'"}}'

    headers = {**service.as_("cmp_42"), "content-type": "application/json"}
    response = service.client.put("/session/S1", headers=headers, content=chunks())
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"arguments": []}, "arguments must be a JSON object"),
        ({"images": "x"}, "images must be"),
        ({"images": [1]}, "images must be"),
        ({"images": ["u"] * 101}, "images must be"),
        ({"dry_run": "yes"}, "dry_run"),
        ({"arguments": {}, "session": {}}, "unknown field"),
        ("text", "must be a JSON object"),
    ],
)
def test_bad_trigger_calls_are_400s(service: Service, payload: Any, fragment: str) -> None:
    put(service, "cmp_42", "S1")
    response = fire(service, "cmp_42", "S1", "check_order", payload)
    assert response.status_code == 400 and fragment in response.json()["error"]["message"]


def test_unknown_things_are_json_errors(service: Service) -> None:
    key = service.as_("cmp_42")
    response = service.client.get("/session/nope", headers=key)
    assert response.status_code == 404 and check(response, "/session/{session_id}", "GET")
    response = service.client.get("/session/nope/logs", headers=key)
    assert response.status_code == 404 and check(response, "/session/{session_id}/logs", "GET")
    put(service, "cmp_42", "S1")
    response = fire(service, "cmp_42", "S1", "no_such_trigger", {})
    assert response.status_code == 404 and response.json()["error"]["code"] == "trigger_not_found"
    response = service.client.get("/session/bad%20id", headers=key)
    assert (
        response.status_code == 400
        and "session id" in check(response, "/session/{session_id}", "GET")["error"]["message"]
    )
    for limit in ("0", "1001", "x"):
        response = service.client.get("/session/S1/logs", params={"limit": limit}, headers=key)
        assert response.status_code == 400 and check(response, "/session/{session_id}/logs", "GET")
    response = service.client.get("/no/such/endpoint", headers=key)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    response = service.client.patch("/session/S1", headers=key)
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"
    assert set(response.headers["allow"].split(", ")) == {"DELETE", "GET", "HEAD", "PUT"}


def test_responses_survive_a_lone_surrogate_from_a_remote() -> None:
    from webhook_dsl.service.errors import JSONResponse

    assert JSONResponse({"x": "\ud800", "y": "é"}).body == b'{"x": "\\ud800", "y": "\\u00e9"}'.replace(b" ", b"")
    assert JSONResponse({"y": "é"}).body == '{"y":"é"}'.encode()


def test_health_and_openapi_need_no_key(service: Service) -> None:
    response = service.client.get("/health")
    assert check(response, "/health", "GET") == {
        "status": "ok",
        "store": service.factory.kind,
        "version": DOCUMENT["info"]["version"],
    }
    document = service.client.get("/openapi.json").json()
    assert document["components"] == DOCUMENT["components"]
    name = document["paths"]["/session/{session_id}/triggers/{name}"]["parameters"][1]
    assert sorted(name["examples"]) == ["analyze_image", "check_order", "create_ticket", "echo"]  # not acme's
    assert {path for path in document["paths"]} == {p for _, _, p in ENDPOINTS} | {
        "/health",
        "/livez",
        "/readyz",
        "/openapi.json",
        "/secrets",
        "/secrets/{name}",
        "/session/{session_id}/tool-calls",  # tests/test_dispatch.py
        "/metrics",  # tests/test_service_ops.py
        "/triggers/{name}",  # tests/test_trigger_uploads.py
        "/triggers/{name}/versions",
        "/triggers/{name}/rollback",
    }


def test_secrets_in_client_data_never_come_back(service: Service) -> None:
    """erp_token is declared secret by acme's own trigger (acme_inventory's "secrets"), which reads it from
    client_data: its value never comes back, wherever it stands."""
    client_data = {"erp_token": SECRET, "note": f"the token is {SECRET}"}
    session = put(service, "acme", "S1", json={"client_data": client_data})
    texts = [json.dumps(session)]
    response = fire(service, "acme", "S1", "acme_inventory", {"arguments": {"sku": SECRET}})
    assert response.json()["result"]["ok"]  # the stand-in had its Bearer token
    texts.append(response.text)
    texts.append(service.client.get("/session/S1", headers=service.as_("acme")).text)
    texts.append(service.client.get("/session/S1/logs", headers=service.as_("acme")).text)
    for text in texts:
        assert SECRET not in text
    assert session["client_data"] == {"erp_token": "***", "note": "the token is ***"}


def test_company_secrets_never_come_back(service: Service) -> None:
    """The example triggers' tokens are company secrets: set once, never in a session, and never in a result,
    the LLM's message, a session view or the logs, even when the LLM passes the token as an argument and the
    remote echoes it into client_data."""
    tokens = {"erp_token": SECRET, "helpdesk_api_key": SECRET + "-hd", "vision_api_key": SECRET + "-vis"}
    put_secrets(service.client, service.keys["cmp_42"], tokens)
    put(service, "cmp_42", "S1", json={"client_data": {"note": "no tokens here"}})
    ticket = {"issue_title": SECRET, "issue_description": f"key {tokens['helpdesk_api_key']}", "priority": "high",
              "customer_name": "Ana", "customer_email": "ana@example.com"}
    calls = [
        ("check_order", {"arguments": {"order_number": "A-1001"}}),
        ("create_ticket", {"arguments": ticket}),
        ("analyze_image", {"images": [f"https://cdn.example.com/{tokens['vision_api_key']}.jpg"]}),
        ("check_order", {"arguments": {"order_number": SECRET}, "dry_run": True}),
    ]
    texts = []
    for name, payload in calls:
        response = fire(service, "cmp_42", "S1", name, payload)
        assert response.status_code == 200 and response.json()["result"]["ok"], response.text
        texts += [response.text, response.json()["message_for_llm"]]
    texts.append(service.client.get("/session/S1", headers=service.as_("cmp_42")).text)
    logs = service.client.get("/session/S1/logs", headers=service.as_("cmp_42"))
    assert len(logs.json()["logs"]) == 3 and all(r["ok"] for r in logs.json()["logs"])
    texts += [logs.text, service.client.get("/secrets", headers=service.as_("cmp_42")).text]
    for text in texts:
        for token in tokens.values():
            assert token not in text
    assert "***" in texts[2] and "***" in texts[3]  # masked where the ticket's echo put it, not dropped


def test_a_company_secret_merged_into_client_data_is_masked_in_the_session_view(service: Service) -> None:
    """The stand-in merges the order number it was sent into client_data (last_order_number). When that is
    the company's token, the call's own outputs mask it; the session view, which a declared client_data secret
    would mask wherever it appears, should too."""
    assert set_secret(service, "cmp_42", "erp_token", SECRET).status_code == 204
    put(service, "cmp_42", "S1")
    response = fire(service, "cmp_42", "S1", "check_order", {"arguments": {"order_number": SECRET}})
    assert response.json()["result"]["ok"] and SECRET not in response.text
    assert SECRET not in service.client.get("/session/S1/logs", headers=service.as_("cmp_42")).text
    assert SECRET not in service.client.get("/session/S1", headers=service.as_("cmp_42")).text


def test_a_session_is_masked_by_declaration_not_by_key_names(service: Service) -> None:
    """Only keys a trigger of the company declares in "secrets" are masked; a key that merely looks like a
    credential is data the caller sent, shown as sent. acme's own trigger declares erp_token and acme_pin:
    masked for acme, not for cmp_42, whose triggers declare nothing (the examples read company secrets)."""
    client_data = {"password_hint": "hunter22", "acme_pin": "pin-90125", "erp_token": SECRET}
    for company in ("cmp_42", "acme"):
        put(service, company, "S1", json={"client_data": client_data})
    shown = {c: check(service.client.get("/session/S1", headers=service.as_(c)), "/session/{session_id}", "GET")
             for c in ("cmp_42", "acme")}
    assert shown["cmp_42"]["client_data"] == client_data
    assert shown["acme"]["client_data"] == {"password_hint": "hunter22", "acme_pin": "***", "erp_token": "***"}
    catalog = service.client.app.state.catalog
    assert catalog.secret_names("acme") == {"erp_token", "acme_pin"}
    assert catalog.secret_names("cmp_42") == frozenset()


# -- one rule for sessions: the same cases as tests/test_cli.py ---------------------------------------


@pytest.mark.parametrize("session_id", ACCEPTED_SESSION_IDS)
def test_session_ids_the_rule_accepts_are_accepted(service: Service, session_id: str) -> None:
    path = f"/session/{quote(session_id, safe='')}"
    assert put(service, "cmp_42", quote(session_id, safe=""))["id"] == session_id
    assert service.client.get(path, headers=service.as_("cmp_42")).json()["id"] == session_id


@pytest.mark.parametrize("session_id", REFUSED_SESSION_IDS)
def test_session_ids_the_rule_refuses_are_400s_in_its_words(service: Service, session_id: str) -> None:
    path = f"/session/{quote(session_id, safe='')}"
    for method in ("PUT", "GET"):
        response = service.client.request(method, path, headers=service.as_("cmp_42"))
        assert response.status_code == 400, (method, response.text)
        assert check(response, "/session/{session_id}", method)["error"]["message"] == session_id_problem(session_id)


@pytest.mark.parametrize("encoding", ["json", "multipart"])
@pytest.mark.parametrize("text", ACCEPTED_CLIENT_DATA)
def test_client_data_the_rule_accepts_is_stored(service: Service, text: str, encoding: str) -> None:
    response = _put_client_data(service, text, encoding)
    assert response.status_code == 200, response.text
    check(response, "/session/{session_id}", "PUT")
    stored = service.client.get("/session/S1", headers=service.as_("cmp_42")).json()["client_data"]
    assert stored == json.loads(text)


@pytest.mark.parametrize("encoding", ["json", "multipart"])
@pytest.mark.parametrize(("text", "message"), REFUSED_CLIENT_DATA)
def test_client_data_the_rule_refuses_is_a_400_in_its_words(
    service: Service, text: str, message: str, encoding: str
) -> None:
    response = _put_client_data(service, text, encoding)
    assert response.status_code == 400, response.text
    assert message in check(response, "/session/{session_id}", "PUT")["error"]["message"]
    assert service.client.get("/session/S1", headers=service.as_("cmp_42")).status_code == 404  # nothing stored


def _put_client_data(service: Service, text: str, encoding: str) -> httpx.Response:
    """client_data as the text of a JSON body, or of a multipart form field (as the seed's curl -F sends it)."""
    headers = service.as_("cmp_42")
    if encoding == "json":
        body = ('{"client_data": ' + text + "}").encode()
        return service.client.put("/session/S1", headers={**headers, "content-type": "application/json"}, content=body)
    return service.client.put("/session/S1", headers=headers, files={"client_data": (None, text)})


# -- company secrets ------------------------------------------------------------------------------


def check_empty(response: httpx.Response, path: str, method: str) -> None:
    """A documented response without a body (204)."""
    operation = DOCUMENT["paths"][path][method.lower()]
    described = operation["responses"].get(str(response.status_code))
    assert described is not None, f"{method} {path}: status {response.status_code} is not documented"
    assert "content" not in described and response.content == b""


def set_secret(service: Service, company: str, name: str, value: str) -> httpx.Response:
    return service.client.put(f"/secrets/{name}", headers=service.as_(company), json={"value": value})


def test_secrets_are_set_listed_and_deleted_and_never_shown(service: Service) -> None:
    response = set_secret(service, "cmp_42", "erp_token", SECRET)
    assert response.status_code == 204 and response.headers["cache-control"] == "no-store"
    check_empty(response, "/secrets/{name}", "PUT")
    check_empty(set_secret(service, "cmp_42", "helpdesk_api_key", SECRET + "-2"), "/secrets/{name}", "PUT")
    listing = service.client.get("/secrets", headers=service.as_("cmp_42"))
    secrets = check(listing, "/secrets", "GET")["secrets"]
    assert [s["name"] for s in secrets] == ["erp_token", "helpdesk_api_key"]
    assert all(s["updated_at"] > 1_700_000_000 for s in secrets)

    replaced = set_secret(service, "cmp_42", "erp_token", "replaced-SECRET-0a1b")
    assert replaced.status_code == 204
    stored = asyncio.run(_company_secrets(service.factory, "cmp_42"))
    assert stored == {"erp_token": "replaced-SECRET-0a1b", "helpdesk_api_key": SECRET + "-2"}

    response = service.client.delete("/secrets/erp_token", headers=service.as_("cmp_42"))
    assert response.status_code == 204 and check_empty(response, "/secrets/{name}", "DELETE") is None
    response = service.client.delete("/secrets/erp_token", headers=service.as_("cmp_42"))
    assert response.status_code == 404
    assert check(response, "/secrets/{name}", "DELETE")["error"]["code"] == "secret_not_found"
    listing = service.client.get("/secrets", headers=service.as_("cmp_42"))
    assert [s["name"] for s in check(listing, "/secrets", "GET")["secrets"]] == ["helpdesk_api_key"]
    assert SECRET not in listing.text


async def _company_secrets(factory: StoreFactory, company: str) -> dict[str, str]:
    store = factory()
    try:
        return await store.company_secrets(company)
    finally:
        await store.close()


def test_a_company_neither_sees_nor_deletes_another_company_s_secrets(service: Service) -> None:
    assert set_secret(service, "cmp_42", "erp_token", SECRET).status_code == 204
    listing = service.client.get("/secrets", headers=service.as_("acme"))
    assert check(listing, "/secrets", "GET") == {"secrets": []}
    response = service.client.delete("/secrets/erp_token", headers=service.as_("acme"))
    assert response.status_code == 404 and response.json()["error"]["code"] == "secret_not_found"
    assert set_secret(service, "acme", "erp_token", "acme-SECRET-77aa").status_code == 204  # acme's own
    assert asyncio.run(_company_secrets(service.factory, "cmp_42")) == {"erp_token": SECRET}
    assert asyncio.run(_company_secrets(service.factory, "acme")) == {"erp_token": "acme-SECRET-77aa"}
    response = service.client.put(
        "/secrets/erp_token", headers=service.as_("acme"), json={"value": "x" * 10, "company_id": "cmp_42"}
    )
    assert response.status_code == 400 and "company_id cannot be sent" in response.json()["error"]["message"]
    assert asyncio.run(_company_secrets(service.factory, "cmp_42")) == {"erp_token": SECRET}


@pytest.mark.parametrize(
    ("name", "body", "fragment"),
    [
        ("1st", {"value": SECRET}, "a secret name is 1-64 letters, digits and '_'"),
        ("erp-token", {"value": SECRET}, "a secret name is"),
        ("x" * 65, {"value": SECRET}, "a secret name is"),
        ("erp_token", {"value": "short"}, "a secret value is at least"),
        ("erp_token", {"value": ""}, "a secret value cannot be empty"),
        ("erp_token", {"value": SECRET + "\r\nX-Injected: 1"}, "cannot hold control characters"),
        ("erp_token", {"value": SECRET + "\x00"}, "cannot hold control characters"),
        ("erp_token", {"value": SECRET + "\u0085"}, "cannot hold control characters"),
        ("erp_token", {"value": 123456789}, "a secret value must be a string, not a number"),
        ("erp_token", {"value": None}, "a secret value must be a string, not null"),
        ("erp_token", {"secret": SECRET}, 'send the secret as JSON: {"value": "..."}'),
        ("erp_token", {"value": SECRET, "label": "x"}, "unknown field 'label' in the body; known: value"),
        ("erp_token", [SECRET], 'send the secret as JSON: {"value": "..."}'),
        ("erp_token", f'{{"value": "{SECRET}\xff', "the body is not JSON this service reads"),
        ("erp_token", f'{{"value": "{SECRET}\\ud800"}}', "the body is not JSON this service reads"),
        ("erp_token", None, 'send the secret as JSON: {"value": "..."}'),
    ],
)
def test_bad_secrets_are_400s_that_never_quote_the_value(service: Service, name: str, body: Any, fragment: str) -> None:
    if isinstance(body, str):
        kwargs: dict[str, Any] = {"content": body.encode("latin-1"), "headers": {"content-type": "application/json"}}
    elif body is None:
        kwargs = {"content": b"", "headers": {"content-type": "application/json"}}
    else:
        kwargs = {"json": body}
    headers = {**service.as_("cmp_42"), **kwargs.pop("headers", {})}
    response = service.client.put(f"/secrets/{name}", headers=headers, **kwargs)
    assert response.status_code == 400, response.text
    message = check(response, "/secrets/{name}", "PUT")["error"]["message"]
    assert fragment in message
    if isinstance(body, dict) and set(body) == {"value"}:
        assert message == secret_problem(name, body["value"])  # the one rule, in its words
    assert SECRET not in response.text and "0xff" not in message
    assert asyncio.run(_company_secrets(service.factory, "cmp_42")) == {}


def test_a_secret_must_be_sent_as_json(service: Service) -> None:
    response = service.client.put("/secrets/erp_token", headers=service.as_("cmp_42"), data={"value": SECRET})
    assert response.status_code == 415 and SECRET not in response.text
    assert check(response, "/secrets/{name}", "PUT")["error"]["code"] == "unsupported_media_type"
    response = service.client.delete("/secrets/1st", headers=service.as_("cmp_42"))
    assert response.status_code == 400 and check(response, "/secrets/{name}", "DELETE")
    response = service.client.post("/secrets/erp_token", headers=service.as_("cmp_42"))
    assert response.status_code == 405 and set(response.headers["allow"].split(", ")) == {"PUT", "DELETE"}


@pytest.mark.parametrize(
    ("method", "url", "path"),
    [("GET", "/secrets", "/secrets"), ("PUT", "/secrets/erp_token", "/secrets/{name}"),
     ("DELETE", "/secrets/erp_token", "/secrets/{name}")],
)
def test_secret_endpoints_want_a_valid_key(service: Service, method: str, url: str, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wdsl_not-a-key"}, {"X-Api-Key": "wdsl_not-a-key"}):
        response = service.client.request(method, url, headers=headers, json={"value": SECRET})
        assert response.status_code == 401, headers
        assert check(response, path, method)["error"]["code"] == "unauthorized"
    assert asyncio.run(_company_secrets(service.factory, "cmp_42")) == {}


def test_no_secret_value_reaches_a_log_line(tmp_path: Path, triggers: Path, caplog: pytest.LogCaptureFixture) -> None:
    """With the access log on and every logger at DEBUG: set, replace, list and delete, a refused value too."""
    factory = StoreFactory("sqlite", tmp_path)
    key = make_key(factory, "cmp_42")
    app = create_app(factory(), TriggerCatalog.load(triggers), settings=ServiceSettings(access_log=True))
    caplog.set_level(logging.DEBUG)
    with TestClient(app) as client:
        headers = {"Authorization": f"Bearer {key}"}
        assert client.put("/secrets/erp_token", headers=headers, json={"value": SECRET}).status_code == 204
        assert client.put("/secrets/erp_token", headers=headers, json={"value": SECRET + "\n"}).status_code == 400
        assert client.get("/secrets", headers=headers).status_code == 200
        assert client.delete("/secrets/erp_token", headers=headers).status_code == 204
    assert "PUT /secrets/erp_token 204" in caplog.text  # the access log did run
    assert SECRET not in caplog.text


def test_the_anonymous_company_option_serves_the_seed_s_bare_curl(tmp_path: Path, triggers: Path) -> None:
    factory = StoreFactory("sqlite", tmp_path)
    key = make_key(factory, "cmp_42")
    app = create_app(
        factory(), TriggerCatalog.load(triggers), settings=ServiceSettings(anonymous_company="demo", access_log=False)
    )
    with TestClient(app, base_url="http://localhost") as client:
        response = client.put("/session/S1", files={"client_data": (None, '{"user_id":"usr_999","plan":"enterprise"}')})
        assert response.status_code == 200 and response.json()["company_id"] == "demo"
        assert client.get("/session/S1", headers={"X-Api-Key": key}).status_code == 404  # another company
        assert client.get("/session/S1", headers={"X-Api-Key": "wdsl_wrong"}).status_code == 401


# -- start-up --------------------------------------------------------------------------------------


def test_a_bad_trigger_file_stops_start_up_with_file_line_column(tmp_path: Path, triggers: Path) -> None:
    bad = triggers / "acme" / "broken.json"
    bad.write_text(
        '{\n  "name": "broken",\n  "description": "x",\n'
        '  "webhook": {"url": "https://x.example/a b", "method": "FETCH"}\n}\n'
    )
    out, err = io.StringIO(), io.StringIO()
    status = main(["serve", "--triggers", str(triggers), "--database", str(tmp_path / "w.db")], out, err)
    assert status == 1
    assert f"{bad}:4:42: the URL path holds a space" in err.getvalue()
    assert f"{bad}:4:57: method must be one of" in err.getvalue()
    checked = io.StringIO()
    assert main(["check", str(bad)], io.StringIO(), checked) == 1
    assert checked.getvalue() in err.getvalue()  # the same errors as 'check', word for word
    assert "not started" in err.getvalue()


def test_trigger_folders_are_checked(tmp_path: Path, triggers: Path) -> None:
    (triggers / "bad name").mkdir()
    duplicate = json.loads((triggers / "echo.json").read_text())
    (triggers / "echo2.json").write_text(json.dumps(duplicate))
    undefined = {**duplicate, "name": "u", "webhook": {"url": "https://x.example/$nothing", "method": "GET"}}
    (triggers / "undefined.json").write_text(json.dumps(undefined, indent=2))
    with pytest.raises(TriggerLoadError) as caught:
        TriggerCatalog.load(triggers)
    message = str(caught.value)
    assert "bad name: a folder of triggers is named after a company id" in message
    assert "trigger name 'echo' is also used by" in message
    assert "undefined.json:18:31:" in message and "$nothing: no source defines it" in message
    catalog = TriggerCatalog.load(triggers / "check_order.json")
    assert list(catalog.for_company("anyone")) == ["check_order"]


def test_keys_command_prints_a_key_once_and_stores_its_hash(tmp_path: Path) -> None:
    database = str(tmp_path / "keys.db")
    out, err = io.StringIO(), io.StringIO()
    assert (
        main(["keys", "create", "--company-id", "cmp_42", "--label", "backend", "--database", database], out, err) == 0
    )
    key = out.getvalue().strip()
    assert key.startswith("wdsl_") and "shown once" in err.getvalue()
    assert key.encode() not in Path(database).read_bytes()
    out = io.StringIO()
    assert main(["keys", "list", "--company-id", "cmp_42", "--database", database], out, io.StringIO()) == 0
    assert key[:11] in out.getvalue() and key not in out.getvalue() and "backend" in out.getvalue()
    assert main(["keys", "create", "--company-id", "../x", "--database", database], io.StringIO(), err) == 1


# -- real processes ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", BACKENDS)
def test_two_service_processes_on_one_database_lose_nothing(kind: str, tmp_path: Path, stand_in: int) -> None:
    """Two ``serve`` processes, one database: concurrent client_data PUTs and trigger calls on shared
    sessions, spread over both processes. Every PUT key and every key merged from a trigger response
    is in the session afterwards, and every call has its log record."""
    echo = start_echo()
    try:
        triggers = write_triggers(tmp_path / "triggers", stand_in, echo.server_address[1])
        factory = StoreFactory(kind, tmp_path)
        factory.create_schema()
        key = make_key(factory, "cmp_42")
        sessions, puts_per_session, calls_per_session = 4, 40, 40
        with services(triggers, factory.url, 2) as processes:
            urls = [p.url for p in processes]

            async def hammer() -> None:
                headers = {"Authorization": f"Bearer {key}"}
                limits = httpx.Limits(max_connections=32)
                async with httpx.AsyncClient(headers=headers, limits=limits, timeout=30) as client:
                    for s in range(sessions):
                        response = await client.put(f"{urls[s % 2]}/session/shared-{s}", json={"client_data": {}})
                        assert response.status_code == 200
                    semaphore = asyncio.Semaphore(32)

                    async def one(i: int, s: int) -> None:
                        base = urls[(i + s) % 2]
                        async with semaphore:
                            if i < puts_per_session:
                                response = await client.put(
                                    f"{base}/session/shared-{s}",
                                    files={"client_data": (None, json.dumps({f"put{i}": i}))},
                                )
                                assert response.status_code == 200, response.text
                            else:
                                response = await client.post(
                                    f"{base}/session/shared-{s}/triggers/echo",
                                    json={"arguments": {"name": f"call{i}"}},
                                )
                                assert response.status_code == 200 and response.json()["result"]["ok"], response.text

                    await asyncio.gather(
                        *(one(i, s) for s in range(sessions) for i in range(puts_per_session + calls_per_session))
                    )
                    for s in range(sessions):
                        data = (await client.get(f"{urls[s % 2]}/session/shared-{s}")).json()["client_data"]
                        expected = {f"put{i}" for i in range(puts_per_session)}
                        expected |= {f"call{i}" for i in range(puts_per_session, puts_per_session + calls_per_session)}
                        assert set(data) == expected, f"lost updates: {sorted(expected - set(data))}"
                        logs = (await client.get(f"{urls[1 - s % 2]}/session/shared-{s}/logs?limit=1000")).json()
                        assert len(logs["logs"]) == calls_per_session, "lost log records"
                        assert len({r["seq"] for r in logs["logs"]}) == calls_per_session

            asyncio.run(hammer())
        factory.drop()
    finally:
        echo.shutdown()
        echo.server_close()


SCHEMATHESIS = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")


@pytest.mark.slow
@pytest.mark.skipif(SCHEMATHESIS is None, reason="schemathesis is not installed (pip install -e '.[test]')")
@pytest.mark.parametrize("kind", BACKENDS)
def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(kind: str, tmp_path: Path, stand_in: int) -> None:
    """Schemathesis against a running service and its own /openapi.json, every check on, bounded in size:
    no 500, every response as documented, invalid input refused, valid input accepted, auth enforced."""
    assert SCHEMATHESIS is not None
    factory = StoreFactory(kind, tmp_path)
    factory.create_schema()
    key = make_key(factory, "cmp_42")
    triggers = write_triggers(tmp_path / "triggers", stand_in)
    examples = os.environ.get("WEBHOOK_DSL_SCHEMATHESIS_EXAMPLES", "25")
    with services(triggers, factory.url, 1) as (process,):
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=process.url) as client:
            put_secrets(client, key, {name: f"{name}-0001" for name in EXAMPLE_SECRET_NAMES})
            client_data = {"user_id": "usr_999", "plan": "enterprise"}
            assert client.put("/session/S1", headers=headers, json={"client_data": client_data}).status_code == 200
        command = [SCHEMATHESIS, "run", f"{process.url}/openapi.json", "-H", f"Authorization: Bearer {key}"]
        command += ["--checks", "all", "--max-examples", examples, "--workers", "1", "--no-color"]
        command += ["--generation-database", "none", "--request-timeout", "20"]
        # No JSON Schema can say which trigger documents compile, or that the body's name must be the path's: a
        # well-formed upload may be refused (400, 422) by design, so for that operation those statuses are kept.
        (tmp_path / "schemathesis.toml").write_text(
            '[[operations]]\ninclude-operation-id = "putTrigger"\nwarnings = false\n'
            "checks.positive_data_acceptance.expected-statuses = "
            '["2xx", "400", "401", "403", "404", "409", "422", "429"]\n'
        )
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
        assert "No issues found" in result.stdout
        assert "Runtime Error" not in result.stdout
        errors = process.stop()
    assert "Traceback" not in errors, errors[-3000:]


# -- request JSON: the orjson fast path reads exactly what the stdlib reads ----------------------------


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same types all the way down (1 and 1.0, or 0.0 and -0.0, differ)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return repr(a) == repr(b)
    return bool(a == b)


def _reference_parse(data: bytes) -> Any:
    """The stdlib's reading, with the service's rules: no NaN/Infinity, depth 33 (client_data's 32 and the body
    around it), no lone surrogates."""
    from webhook_dsl.service.app import _depth

    def refuse(name: str) -> Any:
        raise ValueError(name)

    value = json.loads(data, parse_constant=refuse)
    if _depth(value) > 33:
        raise ValueError("too deep")
    json.dumps(value, ensure_ascii=False).encode("utf-8")  # UnicodeEncodeError on a lone surrogate
    return value


_json_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**63 - 2, max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(),
)
_json_values = st.recursive(
    _json_leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=_MAX_EXAMPLES, deadline=None)
@given(_json_values, st.booleans(), st.sampled_from(["", "truncate", "NaN", "1e400", "surrogate", "nest"]))
def test_request_json_is_read_as_the_stdlib_reads_it(value: Any, ascii_only: bool, damage: str) -> None:
    from webhook_dsl.service.app import _parse_json
    from webhook_dsl.service.errors import ApiError

    text = json.dumps(value, ensure_ascii=ascii_only)
    if damage == "truncate":
        text = text[: len(text) // 2]
    elif damage in ("NaN", "1e400"):
        text = f"[{text}, {damage}]"
    elif damage == "surrogate":
        text = f'[{text}, "\\udc00"]'
    elif damage == "nest":
        text = "[" * 34 + text + "]" * 34
    data = text.encode("utf-8", "surrogatepass")
    try:
        want = _reference_parse(data)
    except (ValueError, UnicodeEncodeError, RecursionError):
        with pytest.raises(ApiError):
            _parse_json(data, "the body")
        return
    assert _same(_parse_json(data, "the body"), want)
