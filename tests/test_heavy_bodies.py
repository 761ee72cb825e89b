"""Bodies that are cheap to send and dear to read, and one company's share of the event loop.

One event loop serves every company, so a request that holds it holds up everyone. The cheapest refusal
comes first (a client_data past its size limit before any walk over its keys; an urlencoded form past its
own small limit before its percent-escapes are decoded), a body is walked once, an error message quotes a
few of 60,000 offending keys rather than all of them, and a company can have only so many requests being
processed at once (429, ``Retry-After: 1``), while a trigger call waiting on its remote does not count.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from tests.service_support import StoreFactory, make_key
from tests.test_service import check as documented
from webhook_dsl.runtime.trigger import compile_trigger
from webhook_dsl.service import app as service
from webhook_dsl.service import errors as service_errors
from webhook_dsl.service import middleware as service_middleware
from webhook_dsl.service.app import TriggerCatalog, create_app
from webhook_dsl.service.middleware import MAX_URLENCODED_BYTES, ServiceSettings
from webhook_dsl.storage.base import DEFAULT_MAX_CLIENT_DATA_BYTES

WIDE = {f"k{i}": i for i in range(60_000)}
JSON = {"content-type": "application/json"}
URLENCODED = {"content-type": "application/x-www-form-urlencoded"}


# -- a remote that answers when the test lets it ---------------------------------------------------------


class _Gate(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    opened = threading.Event()
    arrived = threading.Event()

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        type(self).arrived.set()
        type(self).opened.wait(30)
        body = b'{"done": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def gate() -> Iterator[tuple[int, type[_Gate]]]:
    handler: type[_Gate] = type("Gate", (_Gate,), {"opened": threading.Event(), "arrived": threading.Event()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], handler
    handler.opened.set()
    server.shutdown()
    server.server_close()


def _trigger(name: str, port: int, parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "description": "A test trigger.",
        "parameters": parameters,
        "clientData": [],
        "webhook": {"url": f"http://127.0.0.1:{port}/wait", "method": "GET", "responseDirective": "Say it."},
    }


STRICT = {
    "type": "object",
    "properties": {"text": {"type": "string", "maxLength": 100}},
    "required": ["text"],
    "additionalProperties": False,
}


class Served:
    """The app over a fresh SQLite store, two companies' keys, and an async client for each."""

    def __init__(self, tmp_path: Path, port: int, **settings: Any) -> None:
        triggers = tmp_path / "triggers"
        triggers.mkdir()
        (triggers / "strict.json").write_text(json.dumps(_trigger("strict", port, STRICT)))
        (triggers / "wait.json").write_text(json.dumps(_trigger("wait", port, {"type": "object", "properties": {}})))
        self.factory = StoreFactory("sqlite", tmp_path / uuid.uuid4().hex[:8])
        self.factory.path.parent.mkdir(parents=True)
        self.keys = {company: make_key(self.factory, company) for company in ("cmp_a", "cmp_b")}
        self.store = self.factory()
        self.app: Starlette = create_app(
            self.store,
            TriggerCatalog.load(triggers),
            settings=ServiceSettings(access_log=False, **settings),
            allow_networks=["127.0.0.0/8"],
        )

    def client(self, company: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://localhost",
            headers={"Authorization": f"Bearer {self.keys[company]}"},
        )

    def run(self, test: Callable[[Served], Any]) -> None:
        async def main() -> None:
            try:
                await test(self)
            finally:
                await self.app.state.runtime.aclose()
                await self.store.close()

        asyncio.run(main())


@pytest.fixture
def served(tmp_path: Path, gate: tuple[int, type[_Gate]]) -> Callable[..., Served]:
    return lambda **settings: Served(tmp_path, gate[0], **settings)


# -- 60,000 extra keys: a short message ------------------------------------------------------------------


def test_sixty_thousand_extra_arguments_get_a_short_message(served: Callable[..., Served]) -> None:
    """The LLM reads the message: it names a few keys and counts the rest, instead of quoting all 60,000."""

    async def test(app: Served) -> None:
        async with app.client("cmp_a") as client:
            assert (await client.put("/session/S1", json={"client_data": {}})).status_code == 200
            response = await client.post("/session/S1/triggers/strict", json={"arguments": {"text": "x", **WIDE}})
        body = documented(response, "/session/{session_id}/triggers/{name}", "POST")
        assert body["result"]["category"] == "bad_arguments"
        error = body["result"]["error"]
        assert "Additional properties are not allowed ('k0', 'k1', 'k10', 'k100', 'k1000' and 59,995 more" in error
        assert len(error) < 300
        assert len(body["message_for_llm"]) < 2000

    served().run(test)


SCHEMAS: dict[str, dict[str, Any]] = {
    "additionalProperties": {"type": "object", "properties": {"text": {}}, "additionalProperties": False},
    "patternProperties": {"type": "object", "patternProperties": {"^te?xt$": {}}, "additionalProperties": False},
    "unevaluatedProperties": {"type": "object", "properties": {"text": {}}, "unevaluatedProperties": False},
    "unevaluated and invalid": {"type": "object", "unevaluatedProperties": {"type": "string"}},
}


@pytest.mark.parametrize("keyword", list(SCHEMAS))
def test_every_message_about_extra_keys_names_a_few(keyword: str) -> None:
    trigger = compile_trigger(json.dumps(_trigger("t", 9, SCHEMAS[keyword])))
    [message] = trigger.argument_errors({"text": "x", **WIDE})
    assert "'k0', 'k1', 'k10', 'k100', 'k1000' and 59,995 more" in message
    assert len(message) < 300


def test_a_few_extra_keys_are_all_named_in_order() -> None:
    trigger = compile_trigger(json.dumps(_trigger("t", 9, SCHEMAS["additionalProperties"])))
    assert trigger.argument_errors({"b": 1, "a": 2, "text": 3}) == [
        "Additional properties are not allowed ('a', 'b' were unexpected)"
    ]
    [message] = trigger.argument_errors({"x" * 5000: 1})
    assert message == f"Additional properties are not allowed ({'x' * 100!r}... (5,000 characters) was unexpected)"


# -- client_data: the size first, one walk -----------------------------------------------------------------


def test_client_data_past_the_limit_is_refused_before_its_keys_are_walked(
    served: Callable[..., Served], monkeypatch: pytest.MonkeyPatch
) -> None:
    walked: list[Any] = []

    def problems(value: Any) -> list[str]:
        walked.append(value)
        return []

    monkeypatch.setattr(service, "client_data_problems", problems)

    async def test(app: Served) -> None:
        async with app.client("cmp_a") as client:
            response = await client.put("/session/S1", json={"client_data": WIDE})
            assert (await client.get("/session/S1")).status_code == 404  # nothing was stored
        body = documented(response, "/session/{session_id}", "PUT")
        assert response.status_code == 413
        assert body["error"]["code"] == "client_data_too_large"
        assert f"over the limit of {DEFAULT_MAX_CLIENT_DATA_BYTES} bytes" in body["error"]["message"]
        assert "set keys the session no longer needs to null" in body["error"]["message"]

    served().run(test)
    assert walked == []


def test_a_session_body_is_walked_once(served: Callable[..., Served], monkeypatch: pytest.MonkeyPatch) -> None:
    """client_data's own walk bounds its nesting; no separate depth walk of the body before it."""
    depth_walks: list[Any] = []

    def walk(value: Any, *rest: Any) -> int:
        depth_walks.append(value)
        return 0

    for name in ("_depth", "_too_deep"):
        monkeypatch.setattr(service, name, walk, raising=False)
    nested: dict[str, Any] = {"leaf": 1}
    for _ in range(20):
        nested = {"n": nested, "list": [1, 2.5, "x"]}

    async def test(app: Served) -> None:
        async with app.client("cmp_a") as client:
            response = await client.put("/session/S1", json={"client_data": {"deep": nested}})
        assert response.status_code == 200, response.text

    served().run(test)
    assert depth_walks == []


@pytest.mark.parametrize("form", [False, True])
def test_client_data_too_deep_is_still_refused(served: Callable[..., Served], form: bool) -> None:
    deep = b"[" * 40 + b"]" * 40

    async def test(app: Served) -> None:
        async with app.client("cmp_a") as client:
            if form:
                response = await client.put("/session/S1", files={"client_data": (None, b'{"a": %s}' % deep)})
            else:
                response = await client.put("/session/S1", content=b'{"client_data": {"a": %s}}' % deep, headers=JSON)
        assert response.status_code == 400
        error = documented(response, "/session/{session_id}", "PUT")["error"]
        assert "nested deeper than 32 levels" in error["message"]

    served().run(test)


# -- urlencoded forms: a small limit of their own -------------------------------------------------------------


def test_a_large_urlencoded_form_is_refused_with_a_413_that_says_to_send_json(served: Callable[..., Served]) -> None:
    """Percent-escapes are decoded in Python; past MAX_URLENCODED_BYTES the form is refused before that."""
    client_data = json.dumps({"notes": "x" * 100_000})
    big = b"client_data=" + client_data.encode().replace(b"{", b"%7B").replace(b'"', b"%22")
    assert MAX_URLENCODED_BYTES < len(big) < 1024 * 1024  # well within the JSON limit

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 16384):
            yield big[start : start + 16384]

    async def test(app: Served) -> None:
        async with app.client("cmp_a") as client:
            declared = await client.put("/session/S1", content=big, headers=URLENCODED)
            chunked = await client.put("/session/S1", content=chunks(), headers=URLENCODED)
            as_json = await client.put(
                "/session/S1", content=json.dumps({"client_data": json.loads(client_data)}), headers=JSON
            )
            small = await client.put("/session/S2", data={"client_data": '{"a": "%41"}'})
        for response in (declared, chunked):
            assert response.status_code == 413, response.text
            error = documented(response, "/session/{session_id}", "PUT")["error"]
            assert error["code"] == "payload_too_large"
            assert (
                f"an urlencoded form (application/x-www-form-urlencoded) is at most {MAX_URLENCODED_BYTES}"
                in (error["message"])
            )
            assert "send client_data as JSON (Content-Type: application/json)" in error["message"]
        assert as_json.status_code == 200
        assert small.status_code == 200 and small.json()["client_data"] == {"a": "%41"}

    served().run(test)


# -- one company's share: requests being processed at once ----------------------------------------------


def test_a_company_past_its_limit_gets_429_while_another_is_served(served: Callable[..., Served]) -> None:
    release = asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield b'{"client_data": '
        await release.wait()  # the request is being processed: its body is being read
        yield b'{"a": 1}}'

    async def test(app: Served) -> None:
        async with app.client("cmp_a") as a, app.client("cmp_b") as b:
            held = [asyncio.create_task(a.put(f"/session/S{i}", content=stalled(), headers=JSON)) for i in range(2)]
            while sum(app.app.state.company_limit.active.values()) < 2:
                await asyncio.sleep(0.001)
            refused = await a.put("/session/S9", json={"client_data": {"a": 1}})
            refused_call = await a.post("/session/S9/triggers/wait", json={})
            other = await b.put("/session/S1", json={"client_data": {"b": 1}})
            release.set()
            assert [(await task).status_code for task in held] == [200, 200]
            again = await a.put("/session/S9", json={"client_data": {"a": 1}})
        for response, path, method in (
            (refused, "/session/{session_id}", "PUT"),
            (refused_call, "/session/{session_id}/triggers/{name}", "POST"),
        ):
            assert response.status_code == 429
            assert response.headers["retry-after"] == "1"
            error = documented(response, path, method)["error"]
            assert error["code"] == "too_many_requests"
            assert "already has 2 requests being processed; retry after a second" in error["message"]
        assert other.status_code == 200
        assert again.status_code == 200
        assert app.app.state.company_limit.active == {}

    served(max_requests_per_company=2).run(test)


def test_a_trigger_call_waiting_on_its_remote_does_not_count(
    served: Callable[..., Served], gate: tuple[int, type[_Gate]]
) -> None:
    """A company with many slow webhooks has them all in flight; waiting costs the loop nothing."""
    handler = gate[1]

    async def test(app: Served) -> None:
        async with app.client("cmp_a") as client:
            assert (await client.put("/session/S1", json={"client_data": {}})).status_code == 200
            calls = [asyncio.create_task(client.post("/session/S1/triggers/wait", json={})) for _ in range(3)]
            while not handler.arrived.is_set():
                await asyncio.sleep(0.001)
            meanwhile = await client.put("/session/S1", json={"client_data": {"a": 1}})
            handler.opened.set()
            results = [await call for call in calls]
        assert meanwhile.status_code == 200
        assert [r.json()["result"]["ok"] for r in results] == [True, True, True]
        assert app.app.state.company_limit.active == {}

    served(max_requests_per_company=1).run(test)


def test_the_limit_is_a_setting() -> None:
    assert ServiceSettings().max_requests_per_company == 64
    assert ServiceSettings(max_requests_per_company=None).max_requests_per_company is None
    with pytest.raises(ValueError, match="at least 1"):
        ServiceSettings(max_requests_per_company=0)


def test_a_company_past_its_share_of_large_bodies_gets_429_while_others_are_served(
    served: Callable[..., Served],
) -> None:
    """Large bodies are charged to their company's share of the loop; small ones, and other companies', pass."""
    wide = json.dumps({"client_data": WIDE}).encode()
    assert len(wide) > service_middleware.LARGE_BODY_BYTES

    async def test(app: Served) -> None:
        async with app.client("cmp_a") as a, app.client("cmp_b") as b:
            statuses = []
            for _ in range(40):  # each parse of 60,000 keys takes milliseconds; the burst allowed is 50 ms
                response = await a.put("/session/S1", content=wide, headers=JSON)
                statuses.append(response.status_code)
                if response.status_code == 429:
                    break
            refused = response
            small = await a.put("/session/S1", json={"client_data": {"a": 1}})
            other = await b.put("/session/S1", content=wide, headers=JSON)
            call = await a.post(
                "/session/S1/triggers/wait", content=b'{"arguments": %s}' % json.dumps(WIDE).encode(), headers=JSON
            )
        assert statuses[-1] == 429 and set(statuses[:-1]) == {413}, statuses  # over the client_data limit until then
        assert int(refused.headers["retry-after"]) >= 1
        error = documented(refused, "/session/{session_id}", "PUT")["error"]
        assert error["code"] == "too_many_requests"
        assert "more large bodies (over 65536 bytes)" in error["message"]
        assert small.status_code == 200
        assert other.status_code == 413  # parsed (and refused for its size): the share is per company
        assert call.status_code == 429  # a trigger call's large body counts against the same share

    served(large_body_share=0.001).run(test)


def test_the_large_body_share_drains_with_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A leaky bucket: the debt drains at ``share`` seconds per second, and the refusal says how long to wait."""
    now = [100.0]
    monkeypatch.setattr(service.time, "monotonic", lambda: now[0])
    limit = service_middleware._CompanyLimit(None, share=0.1)
    limit.admit_large("c")
    limit.charge("c", 0.25)  # 0.2 s past the 0.05 s burst: 2 s at a tenth
    with pytest.raises(service_errors.ApiError) as refused:
        limit.admit_large("c")
    assert refused.value.headers == {"Retry-After": "2"}
    limit.admit_large("other")
    now[0] += 1.0
    with pytest.raises(service_errors.ApiError):
        limit.admit_large("c")
    now[0] += 1.0
    limit.admit_large("c")  # 0.05 s left: within the burst
    unlimited = service_middleware._CompanyLimit(None, share=None)
    unlimited.charge("c", 100.0)
    unlimited.admit_large("c")
    with pytest.raises(ValueError, match="large_body_share"):
        ServiceSettings(large_body_share=0)
