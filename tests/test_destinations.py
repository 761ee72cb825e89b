"""Secrets travel only to hosts written in the config, and a response cannot move a destination or swap a
credential: a prompt injection or a hostile API must not redirect where secrets go."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.http_stub import Request, StubServer, response
from webhook_dsl.errors import ConfigError
from webhook_dsl.runtime.calls import Runtime, TriggerResult
from webhook_dsl.runtime.trigger import Trigger, compile_trigger
from webhook_dsl.storage.sqlite import SQLiteStore

PARAMETERS = {"type": "object", "properties": {"target": {"type": "string"}, "q": {"type": "string"}}}


def trigger(webhook: dict[str, Any], **extra: Any) -> Trigger:
    return compile_trigger({
        "name": "t",
        "description": "d",
        "parameters": PARAMETERS,
        "clientData": ["token", "api_host"],
        **extra,
        "webhook": {"method": "GET", **webhook},
    })


@pytest.mark.parametrize(
    ("webhook", "extra", "carrier"),
    [
        ({"url": "$target", "headers": [{"key": "Authorization", "value": "Bearer $token"}]}, {}, "$token"),
        ({"url": "https://$target.example.com/x?k=$token"}, {"secrets": ["token"]}, "$token"),
        ({"url": "https://api.example.com:$target/x", "headers": [{"key": "X-K", "value": "$secrets.k"}]}, {},
         "$secrets.k"),
        ({"url": "$target", "headers": [{"key": "cookie", "value": "s=$q"}]}, {}, "$q"),
    ],
)
def test_a_secret_to_a_destination_an_argument_chooses_is_a_compile_error(
    webhook: dict[str, Any], extra: dict[str, Any], carrier: str
) -> None:
    with pytest.raises(ConfigError) as error:
        trigger(webhook, **extra)
    message = str(error.value)
    assert f"{carrier} sends" in message and "chooses ($target" in message and " at line " in message


@pytest.mark.parametrize(
    ("webhook", "extra"),
    [
        ({"url": "$target"}, {}),  # the LLM picks the host, but nothing secret goes there
        ({"url": "https://$api_host/x", "headers": [{"key": "Authorization", "value": "Bearer $token"}]},
         {"secrets": ["token"]}),  # the session picks the host: written by the platform, not the LLM
        ({"url": "https://api.example.com/$target", "headers": [{"key": "Authorization", "value": "Bearer $token"}]},
         {"secrets": ["token"]}),  # an argument in the path does not move the request
    ],
)
def test_what_stays_allowed(webhook: dict[str, Any], extra: dict[str, Any]) -> None:
    trigger(webhook, **extra)


def fire(tmp_path: Path, answer: dict[str, Any], protected: tuple[str, ...] = (), **extra: Any) -> TriggerResult:
    async def handler(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(response(200, answer))

    async def main() -> TriggerResult:
        store = SQLiteStore(tmp_path / "w.db")
        await store.put_session("s1", company_id="c", client_data={"token": "original-token-01", "api_host": "x"})
        async with StubServer(handler) as server, Runtime(store, allow_networks=["127.0.0.0/8"]) as runtime:
            await store.merge_client_data("s1", {"api_host": "127.0.0.1"})
            the_trigger = trigger(
                {
                    "url": f"http://$api_host:{server.port}/x",
                    "headers": [{"key": "Authorization", "value": "Bearer $token"}],
                },
                secrets=["token"],
                **extra,
            )
            result = await runtime.call_trigger(the_trigger, "s1", {}, protected_keys=protected)
        await store.close()
        return result

    return asyncio.run(main())


def test_a_response_cannot_swap_a_declared_secret_or_move_a_destination(tmp_path: Path) -> None:
    answer = {"session": {"client_data": {"token": "attacker", "api_host": "evil.example", "note": "kept"}}}
    result = fire(tmp_path, answer)
    assert result.call.ok
    assert result.client_data_merged == {"note": "kept"}
    assert sum("clientDataWrites" in warning for warning in result.warnings) == 2


def test_client_data_writes_allows_a_refresh(tmp_path: Path) -> None:
    answer = {"session": {"client_data": {"token": "refreshed-token-02"}}}
    result = fire(tmp_path, answer, clientDataWrites=["token"])
    assert result.client_data_merged == {"token": "refreshed-token-02"}
    assert "refreshed-token-02" not in result.message_for_llm + json.dumps(result.to_dict())


def test_keys_other_triggers_protect_are_refused_too(tmp_path: Path) -> None:
    """The service passes every protected key of the company: one trigger's answer cannot poison another's."""
    answer = {"session": {"client_data": {"billing_host": "evil.example", "note": "kept"}}}
    result = fire(tmp_path, answer, protected=("billing_host",))
    assert result.client_data_merged == {"note": "kept"}


def test_the_service_protects_every_trigger_s_keys_for_its_company(tmp_path: Path) -> None:
    """The catalog gathers, per company, the keys any of its triggers protects: the service passes them to
    every call, so the billing trigger's host cannot be set by the answer of the lookup trigger."""
    from webhook_dsl.service.app import TriggerCatalog

    def write(path: Path, name: str, webhook: dict[str, Any], **extra: Any) -> None:
        path.mkdir(parents=True, exist_ok=True)
        document = {"name": name, "description": "d", "clientData": ["billing_host", "tok"], **extra,
                    "webhook": {"method": "GET", **webhook}}
        (path / f"{name}.json").write_text(json.dumps(document), encoding="utf-8")

    write(tmp_path, "lookup", {"url": "https://api.example.com/x"})
    write(tmp_path / "acme", "bill", {"url": "https://$billing_host/pay"}, secrets=["tok"])
    catalog = TriggerCatalog.load(tmp_path)
    assert catalog.protected_keys("acme") >= {"billing_host", "tok"}
    assert catalog.protected_keys("other") == frozenset()
