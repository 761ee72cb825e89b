"""Company secrets and the one rule for what a session may hold: the functions in webhook_dsl.storage.sqlite that the
command line, the service and the stores all ask, and the OpenAPI patterns that must say the same."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from tests.service_support import BACKENDS, StoreFactory, make_key, write_triggers
from webhook_dsl.language.names import MIN_SECRET_LENGTH, SECRET_NAME_PATTERN
from webhook_dsl.service.app import TriggerCatalog, create_app
from webhook_dsl.service.middleware import ServiceSettings
from webhook_dsl.service.openapi import openapi_document
from webhook_dsl.storage.base import (
    ID_PATTERN,
    SECRET_VALUE_PATTERN,
    SecretValues,
    client_data_problems,
    secret_problem,
    session_id_problem,
)
from webhook_dsl.storage.sqlite import SQLiteStore

MAX_EXAMPLES = int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "200"))
VALUE = "erp-SECRET-7f3a9c"


@pytest.mark.parametrize("name", ["erp_token", "_x", "A", "x" * 64, "Helpdesk_API_Key_2"])
def test_secret_names_that_a_template_can_write_are_accepted(name: str) -> None:
    assert secret_problem(name) is None and secret_problem(name, VALUE) is None


@pytest.mark.parametrize("name", ["", "1st", "erp-token", "erp.token", "x" * 65, "é", "erp_token\n", "a b"])
def test_other_secret_names_are_refused_saying_what_to_write(name: str) -> None:
    assert secret_problem(name) == secret_problem(name, VALUE)
    assert "a secret name is 1-64 letters, digits and '_', not starting with a digit" in str(secret_problem(name))


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "cannot be empty"),
        ("x" * (MIN_SECRET_LENGTH - 1), f"at least {MIN_SECRET_LENGTH} characters"),
        (VALUE + "\r\nX-Injected: 1", "cannot hold control characters"),
        (VALUE + "\n", "cannot hold control characters"),
        (VALUE + "\t", "cannot hold control characters"),
        (VALUE + "\x00", "cannot hold control characters"),
        (VALUE + "\x7f", "cannot hold control characters"),
        (VALUE + "\x85", "cannot hold control characters"),
        (VALUE + "\ud800", "lone UTF-16 surrogate"),
        (12345678, "must be a string, not a number"),
        (None, "must be a string, not null"),
        ([VALUE], "must be a string, not an array"),
    ],
)
def test_secret_values_are_refused_without_being_quoted(value: object, fragment: str) -> None:
    problem = secret_problem("erp_token", value)
    assert problem is not None and fragment in problem
    assert VALUE not in problem and "12345678" not in problem


def test_the_shortest_secret_is_the_masking_module_s_minimum() -> None:
    assert secret_problem("erp_token", "x" * MIN_SECRET_LENGTH) is None
    assert secret_problem("erp_token", "é" * MIN_SECRET_LENGTH + " with spaces and ünïcode") is None


def test_secret_values_never_show_in_a_repr() -> None:
    values = SecretValues({"erp_token": VALUE})
    assert values == {"erp_token": VALUE} and isinstance(values, dict)
    assert VALUE not in repr(values) and VALUE not in str(values) and VALUE not in f"{values}"
    assert repr(values) == "<secrets ['erp_token']>"


def test_client_data_problems_lists_every_problem() -> None:
    problems = client_data_problems({"session.id": 1, "company.id": 2, "x": [float("nan")], "y": {"\udc00": 1}})
    assert problems == [
        "client_data key 'session.id' is a system variable; the platform sets it",
        "client_data key 'company.id' is a system variable; the platform sets it",
        "client_data['x'][0] is nan, which JSON cannot hold; send a finite number or a string",
        "client_data['y']: a key holds a lone UTF-16 surrogate (\\ud800-\\udfff)",
    ]
    assert len(client_data_problems({f"k{i}": float("inf") for i in range(1000)})) == 10  # enough to act on
    assert client_data_problems({"session": {"id": 1}, "Session.ID": 2, "a.b": [[{}]]}) == []


# -- the OpenAPI document says what the functions do ---------------------------------------------------


def _python(pattern: str) -> re.Pattern[str]:
    """A JSON Schema pattern as Python reads it: ``$`` is the end of the string, not "before a final newline"."""
    assert pattern.startswith("^") and pattern.endswith("$")
    return re.compile(pattern[:-1] + r"\Z")


@settings(max_examples=MAX_EXAMPLES, deadline=None)
@given(st.text(max_size=70) | st.from_regex(_python(SECRET_NAME_PATTERN)))
def test_the_secret_name_pattern_is_the_rule(name: str) -> None:
    assert (secret_problem(name) is None) == bool(_python(SECRET_NAME_PATTERN).match(name))


@settings(max_examples=MAX_EXAMPLES, deadline=None)
@given(st.text(st.characters(codec="utf-8"), max_size=20))
def test_the_secret_value_schema_is_the_rule(value: str) -> None:
    schema = openapi_document()["components"]["schemas"]["SecretValue"]["properties"]["value"]
    valid = len(value) >= schema["minLength"] and bool(_python(schema["pattern"]).match(value))
    assert schema["pattern"] == SECRET_VALUE_PATTERN
    assert (secret_problem("erp_token", value) is None) == valid


@settings(max_examples=MAX_EXAMPLES, deadline=None)
@given(st.text(max_size=130) | st.from_regex(_python(ID_PATTERN)))
def test_the_session_id_pattern_is_the_rule(session_id: str) -> None:
    document = openapi_document()
    parameter = document["paths"]["/session/{session_id}"]["parameters"][0]
    assert parameter["schema"]["pattern"] == ID_PATTERN
    assert (session_id_problem(session_id) is None) == bool(_python(ID_PATTERN).match(session_id))


def test_session_ids_end_where_the_string_ends() -> None:
    """Python's ``$`` also matches before a final newline: an id "S1\\n" used to pass the service's check."""
    assert session_id_problem("S1") is None and session_id_problem("S1\n") is not None


# -- the command line, as a user pipes a secret in -----------------------------------------------------


def test_a_piped_secret_is_stored_and_never_printed(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    command = [sys.executable, "-m", "webhook_dsl", "secrets", "set", "erp_token", "--company-id", "cmp_42"]
    result = subprocess.run([*command, "--database", str(db)], input=VALUE + "\n", capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert VALUE not in result.stdout + result.stderr and "$secrets.erp_token" in result.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "webhook_dsl", "secrets", "list", "--company-id", "cmp_42", "--database", str(db)],
        capture_output=True, text=True, check=False,
    )
    assert listed.returncode == 0 and listed.stdout.startswith("erp_token  ") and VALUE not in listed.stdout
    store = SQLiteStore(db)
    try:
        assert store.company_secrets_sync("cmp_42") == {"erp_token": VALUE}  # the newline was dropped
    finally:
        store.close_sync()
    assert oct(db.stat().st_mode & 0o777) == "0o600"


# -- the service: the runtime reads the calling company's secrets, and no one else's ----------------------


def test_a_call_for_one_company_reads_that_company_s_session_and_secrets_only(tmp_path: Path) -> None:
    """Two companies with the same session id and the same secret name: a call made for company b (the service
    passes its caller's company) sends b's client_data and b's secret, never a's."""
    from tests.http_stub import StubServer, answer
    from webhook_dsl import Runtime, compile_trigger

    backend = SQLiteStore(tmp_path / "s.db")

    async def main() -> bytes:
        for company in ("a", "b"):
            await backend.put_session("S1", company_id=company, client_data={"who": f"user-of-{company}"})
            await backend.set_secret(company, "erp_token", f"{company}-SECRET-12345")
        async with StubServer(answer(200, {})) as server:
            trigger = compile_trigger({
                "name": "t",
                "description": "d",
                "parameters": {"type": "object", "properties": {}},
                "clientData": [],
                "webhook": {
                    "url": server.url("/x"),
                    "method": "POST",
                    "body": {"who": "$who", "token": "$secrets.erp_token"},
                    "responseDirective": "r",
                },
            })
            async with Runtime(backend, allow_networks=["127.0.0.0/8"]) as runtime:
                await runtime.call_trigger(trigger, "S1", {}, company_id="b")
            return server.requests[0].body

    try:
        assert json.loads(asyncio.run(main())) == {"who": "user-of-b", "token": "b-SECRET-12345"}
        assert backend.logs_sync("S1", company_id="a") == []
        assert len(backend.logs_sync("S1", company_id="b")) == 1
    finally:
        backend.close_sync()


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_secret_set_through_the_service_reaches_the_webhook_and_nothing_else(
    kind: str, tmp_path: Path, stand_in: int
) -> None:
    triggers = write_triggers(tmp_path / "triggers", stand_in)
    trigger = {
        "name": "secret_order",
        "description": "Look up an order with the company's ERP token.",
        "parameters": {"type": "object", "properties": {"order_number": {"type": "string"}}},
        "webhook": {
            "url": f"http://127.0.0.1:{stand_in}/erp/api/orders/$order_number?echo=$secrets.erp_token",
            "method": "GET",
            "headers": [{"key": "Authorization", "value": "Bearer $secrets.erp_token"}],
        },
    }
    (triggers / "secret_order.json").write_text(json.dumps(trigger))
    factory = StoreFactory(kind, tmp_path)
    keys = {company: make_key(factory, company) for company in ("cmp_42", "acme")}
    app = create_app(
        factory(),
        TriggerCatalog.load(triggers),
        settings=ServiceSettings(access_log=False),
        allow_networks=["127.0.0.0/8"],
    )
    try:
        with TestClient(app) as client:
            a, b = ({"Authorization": f"Bearer {keys[c]}"} for c in ("cmp_42", "acme"))
            assert client.put("/secrets/erp_token", headers=a, json={"value": VALUE}).status_code == 204
            texts = []
            for headers in (a, b):
                assert client.put("/session/S1", headers=headers, json={"client_data": {}}).status_code == 200
                for name in ("secret_order", "check_order"):  # check_order: the example, Bearer $secrets.erp_token
                    response = client.post(
                        f"/session/S1/triggers/{name}", headers=headers, json={"arguments": {"order_number": "A-1"}}
                    )
                    assert response.status_code == 200, response.text
                    texts.append(response.text)
                texts.append(client.get("/session/S1/logs", headers=headers).text)
                texts.append(client.get("/secrets", headers=headers).text)
            results_a, results_b = ([json.loads(texts[i])["result"] for i in (j, j + 1)] for j in (0, 4))
            for result in results_a:
                assert result["ok"] and result["status"] == 200  # the stand-in wants a Bearer token
            for result in results_b:
                # acme has no erp_token of its own, and cmp_42's is not acme's
                assert not result["ok"] and result["category"] == "render" and "$secrets.erp_token" in result["error"]
            assert all(VALUE not in text for text in texts)
    finally:
        factory.drop()
