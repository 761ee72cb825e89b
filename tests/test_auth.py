"""A trigger's ``auth`` and ``signing`` against loopback stubs: what each sends, OAuth2 tokens (one fetch for many
calls, expiry, a refresh after a 401), the outbound guard on the token URL, Standard Webhooks signatures checked
by the ``standardwebhooks`` package, and no credential in any output."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.http_stub import Request, StubServer, response
from webhook_dsl.errors import ConfigError
from webhook_dsl.runtime import auth as auth_module
from webhook_dsl.runtime.calls import Runtime, TriggerResult, _Failure
from webhook_dsl.runtime.trigger import Trigger, compile_trigger
from webhook_dsl.storage.sqlite import SQLiteStore

LOOPBACK = ["127.0.0.0/8"]
HOOK_KEY = b"standard-webhooks-key-0123456789ab"
SECRETS = {
    "api_token": "tok-SECRET-b3a7c1d9",
    "api_pass": "pass-SECRET-5e6f7a8b",
    "client_secret": "cs-SECRET-0a1b2c3d",
    "hook_secret": "whsec_" + base64.b64encode(HOOK_KEY).decode(),
    "raw_hook": "raw-hook-SECRET-9c8d7e",
}

pytestmark = pytest.mark.usefixtures("each_event_loop")


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def token_value(n: int) -> str:
    return f"access-{n}-9f8e7d6c5b4a3210"


class Api:
    """One stub for both ends: ``/token`` is the OAuth2 token endpoint, anything else the API, which echoes what it
    received (headers, target, body) so that masking is tested against an API that sends credentials back."""

    def __init__(
        self, expires_in: Any = 3600, token_delay: float = 0.0, reject: Iterable[str] = (), token_status: int = 200
    ) -> None:
        self.expires_in = expires_in
        self.token_delay = token_delay
        self.rejected = set(reject)  # tokens the API answers 401 to ("*": every one)
        self.token_status = token_status
        self.token_requests: list[Request] = []
        self.api_requests: list[Request] = []

    async def __call__(self, request: Request, writer: asyncio.StreamWriter) -> None:
        if request.target.startswith("/token"):
            self.token_requests.append(request)
            n = len(self.token_requests)
            await asyncio.sleep(self.token_delay)
            if self.token_status != 200:
                writer.write(response(self.token_status, {"error": "invalid_client"}))
                return
            answer = {"access_token": token_value(n), "token_type": "Bearer"}
            if self.expires_in is not None:
                answer["expires_in"] = self.expires_in
            writer.write(response(200, answer))
            return
        self.api_requests.append(request)
        echo = {"headers": dict(request.headers), "target": request.target, "body": request.body.decode()}
        bearer = (request.header("Authorization") or "").removeprefix("Bearer ")
        status = 401 if "*" in self.rejected or bearer in self.rejected else 200
        writer.write(response(status, echo))


def trigger_for(
    url: str, auth: dict[str, Any] | None = None, signing: dict[str, Any] | None = None, method: str = "GET"
) -> Trigger:
    webhook: dict[str, Any] = {"url": url, "method": method, "responseDirective": "Tell the user."}
    if method != "GET":
        webhook["body"] = {"order": "A-1", "session": "$session.id"}
    config: dict[str, Any] = {"name": "t", "description": "d", "webhook": webhook}
    if auth is not None:
        config["auth"] = auth
    if signing is not None:
        config["signing"] = signing
    return compile_trigger(config)


def oauth(server: StubServer, **extra: Any) -> dict[str, Any]:
    return {
        "type": "oauth2ClientCredentials",
        "tokenUrl": server.url("/token"),
        "clientId": "client-7",
        "secret": "client_secret",
        **extra,
    }


async def store_in(tmp_path: Path, secrets: dict[str, str] = SECRETS) -> SQLiteStore:
    store = SQLiteStore(tmp_path / "a.db")
    await store.put_session("s1", company_id="cmp_1", assistant_id="asst_1", client_data={})
    for name, value in secrets.items():
        await store.set_secret("cmp_1", name, value)
    return store


# -- what each type sends -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        ({"type": "bearer", "secret": "api_token"}, ("Authorization", f"Bearer {SECRETS['api_token']}")),
        (
            {"type": "basic", "user": "ana", "secret": "api_pass"},
            ("Authorization", "Basic " + base64.b64encode(f"ana:{SECRETS['api_pass']}".encode()).decode()),
        ),
        ({"type": "apiKey", "in": "header", "name": "X-Api-Key", "secret": "api_token"}, ("X-Api-Key", None)),
        ({"type": "apiKey", "in": "query", "name": "api key", "secret": "api_token"}, ("?", None)),
    ],
)
def test_each_auth_type_sends_its_credential(tmp_path: Path, auth: dict[str, Any], expected: tuple[str, Any]) -> None:
    api = Api()

    async def main() -> TriggerResult:
        store = await store_in(tmp_path)
        async with StubServer(api) as server, Runtime(store, allow_networks=LOOPBACK) as runtime:
            result = await runtime.call_trigger(trigger_for(server.url("/orders?page=2"), auth), "s1", {})
        await store.close()
        return result

    result = run(main())
    assert result.call.ok, result.call.error
    sent = api.api_requests[0]
    name, value = expected
    if name == "?":  # in the query, percent-encoded, after the URL's own parameters
        assert sent.target == f"/orders?page=2&api%20key={quote(SECRETS['api_token'], safe='')}"
        assert parse_qs(urlsplit(sent.target).query)["api key"] == [SECRETS["api_token"]]
        assert sent.header("Authorization") is None
    else:
        assert sent.header(name) == (value or SECRETS["api_token"])
    assert api.token_requests == []


@pytest.mark.parametrize("client_auth", ["basic", "body"])
def test_the_client_credentials_grant_is_sent_as_rfc_6749_says(tmp_path: Path, client_auth: str) -> None:
    api = Api()

    async def main() -> TriggerResult:
        store = await store_in(tmp_path)
        async with StubServer(api) as server, Runtime(store, allow_networks=LOOPBACK) as runtime:
            trigger = trigger_for(server.url("/orders"), oauth(server, scope="orders:read", clientAuth=client_auth))
            result = await runtime.call_trigger(trigger, "s1", {})
        await store.close()
        return result

    result = run(main())
    assert result.call.ok
    [token_request] = api.token_requests
    assert token_request.method == "POST"
    assert token_request.header("Content-Type") == "application/x-www-form-urlencoded"
    form = parse_qs(token_request.body.decode())
    assert form["grant_type"] == ["client_credentials"] and form["scope"] == ["orders:read"]
    if client_auth == "basic":
        basic = base64.b64encode(f"client-7:{SECRETS['client_secret']}".encode()).decode()
        assert token_request.header("Authorization") == f"Basic {basic}"
        assert "client_secret" not in form
    else:
        assert form["client_id"] == ["client-7"] and form["client_secret"] == [SECRETS["client_secret"]]
        assert token_request.header("Authorization") is None
    assert api.api_requests[0].header("Authorization") == f"Bearer {token_value(1)}"


# -- OAuth2 tokens: one fetch, expiry, 401 ------------------------------------------------------------


def test_64_concurrent_calls_fetch_one_token(tmp_path: Path) -> None:
    api = Api(token_delay=0.2)  # every call is waiting before the token arrives

    async def main() -> list[TriggerResult]:
        store = await store_in(tmp_path)
        async with StubServer(api) as server, Runtime(store, allow_networks=LOOPBACK) as runtime:
            trigger = trigger_for(server.url("/orders"), oauth(server))
            results = await asyncio.gather(*(runtime.call_trigger(trigger, "s1", {}) for _ in range(64)))
            again = await runtime.call_trigger(trigger, "s1", {})  # the cached token, no fetch
        await store.close()
        return [*results, again]

    results = run(main())
    assert all(r.call.ok for r in results)
    assert len(api.token_requests) == 1
    assert len(api.api_requests) == 65
    assert {r.header("Authorization") for r in api.api_requests} == {f"Bearer {token_value(1)}"}


def test_a_token_is_fetched_again_shortly_before_it_expires(tmp_path: Path) -> None:
    api = Api(expires_in=3600)
    now = [1000.0]

    async def main() -> None:
        store = await store_in(tmp_path)
        async with StubServer(api) as server, Runtime(store, allow_networks=LOOPBACK) as runtime:
            runtime._authorizer.clock = lambda: now[0]
            trigger = trigger_for(server.url("/orders"), oauth(server))
            await runtime.call_trigger(trigger, "s1", {})
            now[0] += 3600 - auth_module.TOKEN_EXPIRY_MARGIN_S - 1  # still valid
            await runtime.call_trigger(trigger, "s1", {})
            assert len(api.token_requests) == 1
            now[0] += 2  # within the margin: fetched again
            await runtime.call_trigger(trigger, "s1", {})
            assert len(api.token_requests) == 2
            await runtime.call_trigger(trigger, "s1", {})
            assert len(api.token_requests) == 2
        await store.close()

    run(main())
    tokens = [r.header("Authorization") for r in api.api_requests]
    assert tokens == [f"Bearer {token_value(n)}" for n in (1, 1, 2, 2)]


def test_a_token_that_expires_within_the_margin_is_not_reused(tmp_path: Path) -> None:
    api = Api(expires_in=10)

    async def main() -> None:
        store = await store_in(tmp_path)
        async with StubServer(api) as server, Runtime(store, allow_networks=LOOPBACK) as runtime:
            trigger = trigger_for(server.url("/orders"), oauth(server))
            for _ in range(3):
                assert (await runtime.call_trigger(trigger, "s1", {})).call.ok
        await store.close()

    run(main())
    assert len(api.token_requests) == 3


def test_a_401_refreshes_the_token_once_and_sends_once_more(tmp_path: Path) -> None:
    api = Api(reject=[token_value(1)])

    async def main() -> tuple[TriggerResult, list[dict[str, Any]]]:
        store = await store_in(tmp_path)
        async with StubServer(api) as server, Runtime(store, allow_networks=LOOPBACK) as runtime:
            # POST: a 401 means the request was refused before anything was done, so it is sent again all the same
            result = await runtime.call_trigger(
                trigger_for(server.url("/orders"), oauth(server), method="POST"), "s1", {}
            )
        logs = await store.logs("s1")
        await store.close()
        return result, logs

    result, logs = run(main())
    assert result.call.ok and result.call.status == 200 and result.call.attempts == 2
    assert len(api.token_requests) == 2
    assert [r.header("Authorization") for r in api.api_requests] == [f"Bearer {token_value(n)}" for n in (1, 2)]
    assert logs[-1]["status"] == 200 and logs[-1]["attempts"] == 2


def test_a_second_401_stands(tmp_path: Path) -> None:
    api = Api(reject=["*"])

    async def main() -> TriggerResult:
        store = await store_in(tmp_path)
        async with StubServer(api) as server, Runtime(store, allow_networks=LOOPBACK) as runtime:
            result = await runtime.call_trigger(trigger_for(server.url("/orders"), oauth(server)), "s1", {})
        await store.close()
        return result

    result = run(main())
    assert (result.call.category, result.call.status, result.call.attempts) == ("http_status", 401, 2)
    assert len(api.token_requests) == 2 and len(api.api_requests) == 2
    assert "answered with an error status (HTTP 401 Unauthorized)" in result.message_for_llm


def test_calls_refused_with_the_same_token_refresh_it_once(tmp_path: Path) -> None:
    api = Api(reject=[token_value(1)], token_delay=0.05)

    async def main() -> list[TriggerResult]:
        store = await store_in(tmp_path)
        async with StubServer(api) as server, Runtime(store, allow_networks=LOOPBACK) as runtime:
            trigger = trigger_for(server.url("/orders"), oauth(server))
            results = await asyncio.gather(*(runtime.call_trigger(trigger, "s1", {}) for _ in range(16)))
        await store.close()
        return list(results)

    results = run(main())
    assert all(r.call.ok for r in results)
    assert len(api.token_requests) == 2


def test_a_bearer_401_is_not_retried(tmp_path: Path) -> None:
    """Only a fetched token can be refreshed: a static secret would be refused again."""
    api = Api(reject=["*"])

    async def main() -> TriggerResult:
        store = await store_in(tmp_path)
        async with StubServer(api) as server, Runtime(store, allow_networks=LOOPBACK) as runtime:
            trigger = trigger_for(server.url("/orders"), {"type": "bearer", "secret": "api_token"})
            result = await runtime.call_trigger(trigger, "s1", {})
        await store.close()
        return result

    result = run(main())
    assert (result.call.status, result.call.attempts, len(api.api_requests)) == (401, 1, 1)


# -- the token request: guard, deadline, failures -------------------------------------------------------


@pytest.mark.parametrize("token_url", ["http://10.1.2.3/token", "http://169.254.169.254/latest/token"])
def test_a_token_url_to_a_private_address_is_blocked(tmp_path: Path, token_url: str) -> None:
    api = Api()

    async def main() -> tuple[TriggerResult, list[dict[str, Any]]]:
        store = await store_in(tmp_path)
        async with StubServer(api) as server, Runtime(store, allow_networks=LOOPBACK) as runtime:
            auth = {**oauth(server), "tokenUrl": token_url}
            result = await runtime.call_trigger(trigger_for(server.url("/orders"), auth), "s1", {})
        logs = await store.logs("s1")
        await store.close()
        return result, logs

    result, logs = run(main())
    assert result.call.category == "blocked" and "OAuth2 token request" in (result.call.error or "")
    assert api.api_requests == [] and api.token_requests == []  # nothing dialled, the webhook not sent
    assert logs[-1]["category"] == "blocked"
    assert "could not be completed" in result.message_for_llm


def test_a_token_url_on_loopback_is_blocked_unless_allowed(tmp_path: Path) -> None:
    """Loopback is allowed for the API only (127.0.0.1/32); the token endpoint on 127.0.0.2 is refused."""
    api = Api()

    async def main() -> TriggerResult:
        store = await store_in(tmp_path)
        async with StubServer(api) as server, Runtime(store, allow_networks=["127.0.0.1/32"]) as runtime:
            auth = {**oauth(server), "tokenUrl": f"http://127.0.0.2:{server.port}/token"}
            result = await runtime.call_trigger(trigger_for(server.url("/orders"), auth), "s1", {})
        await store.close()
        return result

    result = run(main())
    assert result.call.category == "blocked" and api.token_requests == [] and api.api_requests == []


def test_a_stalled_token_endpoint_is_a_timeout_within_the_call_s_deadline(tmp_path: Path) -> None:
    api = Api(token_delay=3.0)

    async def main() -> TriggerResult:
        store = await store_in(tmp_path)
        async with StubServer(api) as server, Runtime(store, allow_networks=LOOPBACK, deadline=0.4) as runtime:
            result = await runtime.call_trigger(trigger_for(server.url("/orders"), oauth(server)), "s1", {})
        await store.close()
        return result

    result = run(main())
    assert result.call.category == "timeout" and result.call.error is not None
    assert result.call.error.startswith(_Failure.NOT_SENT) and result.call.elapsed_ms < 1500
    assert "Nothing was sent, so the action did not happen" in result.message_for_llm
    assert api.api_requests == []


def test_a_trigger_s_own_timeout_bounds_the_wait_for_a_token(tmp_path: Path) -> None:
    api = Api(token_delay=3.0)

    async def main() -> TriggerResult:
        store = await store_in(tmp_path)
        async with StubServer(api) as server, Runtime(store, allow_networks=LOOPBACK) as runtime:
            trigger = compile_trigger(
                {
                    "name": "t",
                    "description": "d",
                    "timeout": 0.3,
                    "auth": oauth(server),
                    "webhook": {"url": server.url("/orders"), "method": "GET"},
                }
            )
            result = await runtime.call_trigger(trigger, "s1", {})
        await store.close()
        return result

    result = run(main())
    assert result.call.category == "timeout" and result.call.elapsed_ms < 1500
    assert (result.call.error or "").startswith(_Failure.NOT_SENT) and api.api_requests == []


def test_a_token_endpoint_refusal_sends_nothing(tmp_path: Path) -> None:
    api = Api(token_status=400)

    async def main() -> TriggerResult:
        store = await store_in(tmp_path)
        async with StubServer(api) as server, Runtime(store, allow_networks=LOOPBACK) as runtime:
            result = await runtime.call_trigger(trigger_for(server.url("/orders"), oauth(server)), "s1", {})
        await store.close()
        return result

    result = run(main())
    assert result.call.category == "invalid_response" and result.call.status is None
    assert "HTTP 400 (invalid_client)" in (result.call.error or "") and api.api_requests == []
    assert SECRETS["client_secret"] not in json.dumps(result.to_dict())


def test_a_company_secret_not_set_is_named_and_nothing_is_sent(tmp_path: Path) -> None:
    api = Api()

    async def main() -> TriggerResult:
        store = await store_in(tmp_path, {})
        async with StubServer(api) as server, Runtime(store, allow_networks=LOOPBACK) as runtime:
            trigger = trigger_for(server.url("/orders"), {"type": "bearer", "secret": "api_token"})
            result = await runtime.call_trigger(trigger, "s1", {})
        await store.close()
        return result

    result = run(main())
    assert result.call.category == "render" and "$secrets.api_token" in (result.call.error or "")
    assert api.api_requests == []


def test_the_not_sent_prefix_is_the_runtime_s() -> None:
    assert auth_module.NOT_SENT == _Failure.NOT_SENT


# -- Standard Webhooks signing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("secret", "verifier"),
    [("hook_secret", SECRETS["hook_secret"]), ("raw_hook", SECRETS["raw_hook"].encode())],
)
def test_a_signed_request_verifies_with_standardwebhooks(tmp_path: Path, secret: str, verifier: str | bytes) -> None:
    api = Api()

    async def main() -> None:
        store = await store_in(tmp_path)
        async with StubServer(api) as server, Runtime(store, allow_networks=LOOPBACK) as runtime:
            trigger = trigger_for(
                server.url("/orders"), {"type": "bearer", "secret": "api_token"}, {"secret": secret}, method="POST"
            )
            for _ in range(2):
                assert (await runtime.call_trigger(trigger, "s1", {})).call.ok
        await store.close()

    run(main())
    first, second = api.api_requests
    for sent in (first, second):
        headers = dict(sent.headers)
        assert Webhook(verifier).verify(sent.body, headers) == {"order": "A-1", "session": "s1"}
        assert sent.header("Authorization") == f"Bearer {SECRETS['api_token']}"
        with pytest.raises(WebhookVerificationError):
            Webhook(verifier).verify(sent.body.replace(b"A-1", b"A-2"), headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(b"another key entirely").verify(sent.body, headers)
    assert first.header("webhook-id") != second.header("webhook-id")


def test_a_signed_get_signs_the_empty_body(tmp_path: Path) -> None:
    api = Api()

    async def main() -> None:
        store = await store_in(tmp_path)
        async with StubServer(api) as server, Runtime(store, allow_networks=LOOPBACK) as runtime:
            trigger = trigger_for(server.url("/orders"), signing={"secret": "hook_secret"})
            assert (await runtime.call_trigger(trigger, "s1", {})).call.ok
        await store.close()

    run(main())
    [sent] = api.api_requests
    Webhook(SECRETS["hook_secret"]).verify(b"", dict(sent.headers), json_parse=False)


# -- no credential in any output ----------------------------------------------------------------------


def forms(value: str) -> set[str]:
    """What an output could hold of a value: itself, percent-encoded, base64 and base64url."""
    data = value.encode()
    return {value, quote(value, safe=""), base64.b64encode(data).decode(), base64.urlsafe_b64encode(data).decode()}


@pytest.mark.parametrize(
    ("auth", "signing"),
    [
        ({"type": "bearer", "secret": "api_token"}, None),
        ({"type": "basic", "user": "ana", "secret": "api_pass"}, None),
        ({"type": "apiKey", "in": "query", "name": "key", "secret": "api_token"}, None),
        ({"type": "apiKey", "in": "header", "name": "X-Api-Key", "secret": "api_token"}, {"secret": "hook_secret"}),
        ("oauth", {"secret": "raw_hook"}),
    ],
)
def test_no_credential_appears_in_the_log_the_result_or_the_llm_message(
    tmp_path: Path, auth: Any, signing: dict[str, str] | None
) -> None:
    """The API echoes every header and the whole target back (an OAuth2 token refused once, so two tokens are
    revealed): the stored log, the result and the LLM message hold no form of any of them."""
    api = Api(reject=[token_value(1)])

    async def main() -> tuple[TriggerResult, list[dict[str, Any]]]:
        store = await store_in(tmp_path)
        async with StubServer(api) as server, Runtime(store, allow_networks=LOOPBACK) as runtime:
            spec = oauth(server) if auth == "oauth" else auth
            result = await runtime.call_trigger(trigger_for(server.url("/orders"), spec, signing, "POST"), "s1", {})
        logs = await store.logs("s1")
        await store.close()
        return result, logs

    result, logs = run(main())
    assert result.call.ok, result.call.error
    echoed = result.call.text
    credentials = [*SECRETS.values(), SECRETS["hook_secret"].removeprefix("whsec_"), token_value(1), token_value(2)]
    credentials += [f"ana:{SECRETS['api_pass']}", f"client-7:{SECRETS['client_secret']}"]
    assert any(form in echoed for value in credentials for form in forms(value))  # the API did send them back
    outputs = {
        "log": json.dumps(logs, ensure_ascii=False),
        "result": json.dumps(result.to_dict(), ensure_ascii=False),
        "message": result.message_for_llm,
        "repr": repr(result),
    }
    for where, text in outputs.items():
        for value in credentials:
            for form in forms(value):
                assert form not in text, (where, value, form)
    assert "***" in outputs["message"] and "***" in outputs["log"]
    if signing is not None:  # the signature itself is no secret: shown, and checkable by whoever reads the log
        assert "webhook-signature" in outputs["log"]


# -- compile-time checks, at their positions -------------------------------------------------------


def compile_error(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        compile_trigger(text, "t.json")
    return str(caught.value)


def config(auth: str, headers: str = "[]", url: str = "https://api.example.com/orders", extra: str = "") -> str:
    return (
        '{\n  "name": "t", "description": "d",' + extra + "\n"
        f'  "auth": {auth},\n'
        f'  "webhook": {{"url": "{url}", "method": "GET",\n'
        f'    "headers": {headers}}}\n'
        "}"
    )


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        ('{"type": "digest", "secret": "api_token"}', "t.json:3:20: auth type must be one of bearer, basic"),
        ('{"secret": "api_token"}', "t.json:3:11: auth needs a 'type'"),
        ('{"type": "basic", "secret": "api_pass"}', "t.json:3:11: auth of type 'basic' needs 'user'"),
        ('{"type": "bearer", "secret": "api_token", "user": "x"}', "t.json:3:53: unknown field 'user' in auth"),
        ('{"type": "bearer", "secret": "$secrets.api_token"}', 'write the name alone: "api_token"'),
        ('{"type": "bearer", "secret": "api-token"}', "t.json:3:40: 'auth.secret' must name a company secret"),
        ('{"type": "bearer", "secret": 7}', "t.json:3:40: 'auth.secret' must be a string"),
        ('{"type": "basic", "user": "a:b", "secret": "api_pass"}', "'auth.user' cannot hold ':'"),
        ('{"type": "apiKey", "in": "cookie", "name": "k", "secret": "s"}', '\'auth.in\' must be "header" or "query"'),
        ('{"type": "apiKey", "in": "header", "name": "Host", "secret": "s"}', "only the HTTP client may set 'Host'"),
        ('{"type": "apiKey", "in": "header", "name": "X Key", "secret": "s"}', "must be a header name"),
        (
            '{"type": "oauth2ClientCredentials", "tokenUrl": "ftp://id.example.com/t", "clientId": "c", "secret": "s"}',
            "t.json:3:59: 'auth.tokenUrl' must be an absolute http or https URL",
        ),
        (
            '{"type": "oauth2ClientCredentials", "tokenUrl": "https://u:p@id.example.com/t", "clientId": "c", '
            '"secret": "s"}',
            "'auth.tokenUrl' cannot carry credentials",
        ),
        (
            '{"type": "oauth2ClientCredentials", "tokenUrl": "https://$host/t", "clientId": "c", "secret": "s"}',
            "cannot hold $references",
        ),
        (
            '{"type": "oauth2ClientCredentials", "tokenUrl": "/token", "clientId": "c", "secret": "s"}',
            "must be an absolute http or https URL",
        ),
        (
            '{"type": "oauth2ClientCredentials", "tokenUrl": "https://id.example.com/t", "clientId": "c", '
            '"secret": "s", "clientAuth": "jwt"}',
            '\'auth.clientAuth\' must be "basic" or "body"',
        ),
        ('"api_token"', "t.json:3:11: 'auth': input should be a valid dictionary"),
    ],
)
def test_a_bad_auth_is_refused_at_its_position(auth: str, expected: str) -> None:
    assert expected in compile_error(config(auth))


def test_a_header_that_collides_with_the_auth_header_is_refused() -> None:
    message = compile_error(
        config('{"type": "bearer", "secret": "api_token"}', '[{"key": "authorization", "value": "Bearer x"}]')
    )
    assert "t.json:5:25: the header 'authorization' collides with the one the trigger's auth (type bearer) sets" in (
        message
    )
    message = compile_error(
        config('{"type": "apiKey", "in": "header", "name": "X-Key", "secret": "k"}', '[{"key": "x-key", "value": "1"}]')
    )
    assert "the header 'x-key' collides" in message
    message = compile_error(
        config('{"type": "apiKey", "in": "query", "name": "key", "secret": "k"}', url="https://a.example/o?key=1")
    )
    assert "t.json:4:22: the URL's query parameter 'key' collides" in message


def test_a_signing_header_in_the_webhook_is_refused() -> None:
    text = config('{"type": "bearer", "secret": "api_token"}', '[{"key": "Webhook-Signature", "value": "v1,x"}]')
    text = text.replace('"auth"', '"signing": {"secret": "hook_secret"},\n  "auth"')
    assert "the header 'Webhook-Signature' collides with the one the trigger's signing sets" in compile_error(text)
    assert "unknown field 'id' in signing" in compile_error(text.replace('{"secret": "hook_secret"}', '{"id": 1}'))


def test_auth_to_a_destination_an_argument_chooses_is_refused() -> None:
    extra = ' "parameters": {"type": "object", "properties": {"host": {"type": "string"}}},'
    message = compile_error(
        config('{"type": "bearer", "secret": "api_token"}', url="https://$host/orders", extra=extra)
    )
    assert "t.json:3:3: auth sends a company credential to a destination a trigger argument chooses ($host" in message


def test_a_trigger_with_auth_loads_the_company_secrets() -> None:
    trigger = compile_trigger(config('{"type": "basic", "user": "", "secret": "api_pass"}'), "t.json")
    assert trigger.auth == auth_module.BasicAuth("", "api_pass") and trigger.uses_company_secrets
    assert not compile_trigger(config("null"), "t.json").uses_company_secrets
