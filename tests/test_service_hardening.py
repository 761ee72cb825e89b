"""Hostile remotes and tenants (issue 13): anonymous mode stays local, and a session's client_data is bounded.

M6: with ``--anonymous-company`` only requests addressed to this machine are answered (DNS rebinding), a
state-changing request from a page of another site is refused in every mode, a POST must be JSON when no
key is needed, and credentials that are there must be valid. L7: a session's client_data has a total size
limit, on PUT and on merges from webhook responses, held by the store's own write so concurrent merges
cannot pass it together, on both backends.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import pytest
from starlette.testclient import TestClient

from tests.service_support import BACKENDS, ServiceProcess, StoreFactory, make_key, start_echo, write_triggers
from tests.test_service import check as documented
from webhook_dsl.cli import main
from webhook_dsl.service.app import TriggerCatalog, create_app
from webhook_dsl.service.middleware import ServiceSettings, names_loopback
from webhook_dsl.storage.base import DEFAULT_MAX_CLIENT_DATA_BYTES, ClientDataTooLarge, LogSeq, Store, compact_json_size
from webhook_dsl.storage.sqlite import _SCHEMA_VERSION, SQLiteStore

SECRET = "erp-SECRET-41d2c9"


def compact(value: Any) -> int:
    """The limit's measure, computed here with the stdlib: compact JSON, UTF-8, in bytes."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


# -- a remote whose answer grows a session: GET /fill/NAME/N merges {NAME: "x" * N} -------------------


class _Filler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        _, _, name, size = unquote(urlsplit(self.path).path).split("/")
        body = json.dumps({"filled": name, "session": {"client_data": {name: "x" * int(size)}}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


FILL_TRIGGER = {
    "name": "fill",
    "description": "Merges a key of the given size into client_data.",
    "parameters": {
        "type": "object",
        "properties": {"key": {"type": "string", "pattern": "^[a-z0-9_]{1,20}$"}, "size": {"type": "integer"}},
        "required": ["key", "size"],
    },
    "webhook": {"url": "http://127.0.0.1:PORT/fill/$key/$size", "method": "GET"},
}


#: A trigger with no arguments: an empty POST fires it, which is what an HTML form of any site can send.
PING_TRIGGER = {
    "name": "ping",
    "description": "Tells the echo remote that someone is there.",
    "parameters": {"type": "object", "properties": {}},
    "webhook": {"url": "http://127.0.0.1:PORT/echo/ping", "method": "GET"},
}


@pytest.fixture(scope="module")
def remotes() -> Iterator[tuple[int, int]]:
    """(echo port, filler port), both on loopback."""
    echo = start_echo()
    filler = ThreadingHTTPServer(("127.0.0.1", 0), _Filler)
    filler.daemon_threads = True
    threading.Thread(target=filler.serve_forever, daemon=True).start()
    yield echo.server_address[1], filler.server_address[1]
    for server in (echo, filler):
        server.shutdown()
        server.server_close()


@pytest.fixture
def triggers(tmp_path: Path, stand_in: int, remotes: tuple[int, int]) -> Path:
    directory = write_triggers(tmp_path / "triggers", stand_in, remotes[0])
    (directory / "fill.json").write_text(json.dumps(FILL_TRIGGER).replace("PORT", str(remotes[1])))
    (directory / "ping.json").write_text(json.dumps(PING_TRIGGER).replace("PORT", str(remotes[0])))
    return directory


@dataclass
class App:
    client: TestClient
    factory: StoreFactory
    key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@contextmanager
def serving(
    tmp_path: Path, triggers: Path, kind: str = "sqlite", base_url: str = "http://localhost", **settings: Any
) -> Iterator[App]:
    factory = StoreFactory(kind, tmp_path / uuid.uuid4().hex[:8])
    factory.path.parent.mkdir(parents=True, exist_ok=True)
    key = make_key(factory, "cmp_42")
    options = {"access_log": False, **settings}
    app = create_app(
        factory(), TriggerCatalog.load(triggers), settings=ServiceSettings(**options), allow_networks=["127.0.0.0/8"]
    )
    try:
        with TestClient(app, base_url=base_url, follow_redirects=False) as client:
            yield App(client, factory, key)
    finally:
        factory.drop()


# == M6: anonymous mode stays local ===============================================================

LOOPBACK_HOSTS = [
    "localhost",
    "localhost:8080",
    "LOCALHOST:1",
    "localhost.",
    "app.localhost",
    "a.b.localhost:3000",
    "127.0.0.1",
    "127.0.0.1:8080",
    "127.9.8.7:80",
    "[::1]",
    "[::1]:8080",
    "[0:0:0:0:0:0:0:1]:8080",
]
FOREIGN_HOSTS = [
    "evil.example",
    "evil.example:8080",
    "localhost.evil.example",
    "127.0.0.1.nip.io",
    "localhostx",
    "10.0.0.1",
    "192.168.1.20:8080",
    "0.0.0.0:8080",
    "[::2]",
    "[fe80::1]",
    "[::]",
    "2130706433",
    "127.1",
    "0x7f000001",
    "localhost:99999",
    "localhost:0",
    "user@localhost",
    "localhost/x",
    "localhost evil",
    "",
]


@pytest.mark.parametrize("host", LOOPBACK_HOSTS)
def test_hosts_that_name_this_machine(host: str) -> None:
    assert names_loopback(host)


@pytest.mark.parametrize("host", FOREIGN_HOSTS)
def test_hosts_that_do_not(host: str) -> None:
    assert not names_loopback(host)


@pytest.mark.parametrize("host", ["localhost:8080", "127.0.0.1:8080", "[::1]:8080", "app.localhost:8080"])
def test_anonymous_mode_serves_requests_addressed_to_this_machine(tmp_path: Path, triggers: Path, host: str) -> None:
    with serving(tmp_path, triggers, anonymous_company="demo") as app:
        headers = {"Host": host}
        response = app.client.put("/session/S1", headers=headers, files={"client_data": (None, '{"plan": "pro"}')})
        assert response.status_code == 200 and response.json()["company_id"] == "demo"  # the seed's curl -F
        assert app.client.get("/session/S1", headers=headers).json()["client_data"] == {"plan": "pro"}
        assert app.client.get("/health", headers=headers).status_code == 200
        assert app.client.get("/dashboard/", headers=headers).status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "rebind.attacker.example:8080", "192.168.1.20:8080", "127.1:80"])
def test_anonymous_mode_answers_any_other_host_with_421_and_why(tmp_path: Path, triggers: Path, host: str) -> None:
    """DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1 sends Host evil.example."""
    with serving(tmp_path, triggers, anonymous_company="demo") as app:
        app.client.put("/session/S1", json={"client_data": {"plan": "pro"}})
        headers = {"Host": host}
        for method, url, path in [
            ("GET", "/session/S1", "/session/{session_id}"),
            ("PUT", "/session/S1", "/session/{session_id}"),
            ("POST", "/session/S1/triggers/echo", "/session/{session_id}/triggers/{name}"),
            ("GET", "/session/S1/logs", "/session/{session_id}/logs"),
            ("GET", "/triggers", "/triggers"),
            ("GET", "/secrets", "/secrets"),
            ("GET", "/health", "/health"),
            ("GET", "/openapi.json", "/openapi.json"),
        ]:
            response = app.client.request(method, url, headers=headers, json={"arguments": {"name": "x"}})
            assert response.status_code == 421, (method, url, response.text)
            error = documented(response, path, method)["error"]
            assert error["code"] == "misdirected_request"
            assert "--anonymous-company" in error["message"] and repr(host) in error["message"]
        dashboard = app.client.get("/dashboard/", headers=headers)
        assert dashboard.status_code == 421 and "demo" not in dashboard.text
        assert app.client.get("/session/S1/logs").json()["logs"] == []  # nothing was fired


def test_anonymous_mode_refuses_a_request_without_a_host(tmp_path: Path, triggers: Path) -> None:
    """An HTTP/1.0 request may carry no Host: it is not addressed to this machine by name either."""
    with serving(tmp_path, triggers, anonymous_company="demo") as app:
        for headers in ([], [(b"host", b"localhost"), (b"host", b"evil.example")]):
            status = asyncio.run(_status_of(app.client.app, "GET", "/triggers", headers))
            assert status == 421


async def _status_of(app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]]) -> int:
    """Call the ASGI app with exactly these headers (an HTTP client always adds a Host)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.0",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return int(sent[0]["status"])


def test_keyed_mode_answers_any_host(tmp_path: Path, triggers: Path) -> None:
    """Behind a load balancer the Host is the public name; a key is needed there, so no rule on the Host."""
    with serving(tmp_path, triggers) as app:
        response = app.client.get("/triggers", headers={**app.auth, "Host": "api.example.com"})
        assert response.status_code == 200


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.20", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_which_listening_addresses_are_loopback(host: str, loopback: bool) -> None:
    from webhook_dsl.cli import _is_loopback_address

    assert _is_loopback_address(host) is loopback


@pytest.mark.parametrize("host", ["192.0.2.1", "2001:db8::1"])  # addresses no machine here has: nothing is bound
def test_anonymous_mode_listens_on_loopback_only(tmp_path: Path, triggers: Path, host: str) -> None:
    command = [
        *_webhook_dsl(),
        "serve",
        "--triggers",
        str(triggers),
        "--database",
        str(tmp_path / "w.db"),
        "--anonymous-company",
        "demo",
        "--host",
        host,
        "--port",
        "0",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"listens on loopback only (--host 127.0.0.1, ::1 or localhost), not on {host}" in result.stderr


def _webhook_dsl() -> list[str]:
    script = shutil.which("webhook-dsl", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "webhook_dsl"]


# -- cross-site state changes, every mode ------------------------------------------------------------------

STATE_CHANGES = [
    ("PUT", "/session/S1", "/session/{session_id}", {"json": {"client_data": {"plan": "hijacked"}}}),
    (
        "POST",
        "/session/S1/triggers/echo",
        "/session/{session_id}/triggers/{name}",
        {"json": {"arguments": {"name": "x"}}},
    ),
    ("PUT", "/secrets/erp_token", "/secrets/{name}", {"json": {"value": "attacker-chosen-1"}}),
    ("DELETE", "/secrets/erp_token", "/secrets/{name}", {}),
]
CROSS_SITE = [
    [("Origin", "https://evil.example")],
    [("Origin", "null")],  # a sandboxed frame, a data: URL, a redirect
    [("Origin", "null"), ("Sec-Fetch-Site", "cross-site")],
    [("Origin", "https://evil.example"), ("Sec-Fetch-Site", "same-origin")],
    [("Origin", "http://localhost:1234")],  # another port is another origin
    [("Origin", "http://localhost.evil.example")],
    [("Origin", "http://localhost"), ("Origin", "https://evil.example")],
    [("Sec-Fetch-Site", "cross-site")],
    [("Sec-Fetch-Site", "same-site")],
    [("Sec-Fetch-Site", "cross-site"), ("Origin", "http://localhost")],
]
SAME_ORIGIN = [
    [],
    [("Origin", "http://localhost")],
    [("Origin", "HTTP://LOCALHOST")],
    [("Origin", "http://localhost:80")],
    [("Sec-Fetch-Site", "same-origin"), ("Origin", "http://localhost")],
    [("Sec-Fetch-Site", "none")],
    [("Sec-Fetch-Site", "same-origin"), ("Origin", "null")],
]  # a page whose referrer policy is no-referrer


@pytest.mark.parametrize("anonymous", [False, True], ids=["keyed", "anonymous"])
def test_a_state_change_from_another_site_is_refused_in_every_mode(
    tmp_path: Path, triggers: Path, anonymous: bool
) -> None:
    settings = {"anonymous_company": "cmp_42"} if anonymous else {}
    with serving(tmp_path, triggers, **settings) as app:
        assert app.client.put("/session/S1", headers=app.auth, json={"client_data": {"plan": "pro"}}).status_code == 200
        credentials = [] if anonymous else list(app.auth.items())
        for method, url, path, kwargs in STATE_CHANGES:
            for headers in CROSS_SITE:
                response = app.client.request(method, url, headers=[*credentials, *headers], **kwargs)
                assert response.status_code == 403, (method, url, headers, response.text)
                error = documented(response, path, method)["error"]
                assert error["code"] == "forbidden" and "another" in error["message"]
        assert app.client.get("/session/S1", headers=app.auth).json()["client_data"] == {"plan": "pro"}
        assert app.client.get("/session/S1/logs", headers=app.auth).json()["logs"] == []
        assert app.client.get("/secrets", headers=app.auth).json()["secrets"] == []
        for headers in CROSS_SITE:  # the dashboard's forms too
            assert app.client.post("/dashboard/login", headers=headers, data={"key": app.key}).status_code == 403
            assert app.client.post("/dashboard/logout", headers=headers).status_code == 403


@pytest.mark.parametrize("anonymous", [False, True], ids=["keyed", "anonymous"])
def test_same_origin_and_non_browser_requests_pass(tmp_path: Path, triggers: Path, anonymous: bool) -> None:
    settings = {"anonymous_company": "cmp_42"} if anonymous else {}
    with serving(tmp_path, triggers, **settings) as app:
        credentials = [] if anonymous else list(app.auth.items())
        for i, headers in enumerate(SAME_ORIGIN):
            response = app.client.put(f"/session/S{i}", headers=[*credentials, *headers], json={"client_data": {}})
            assert response.status_code == 200, (headers, response.text)
            response = app.client.post(
                f"/session/S{i}/triggers/echo", headers=[*credentials, *headers], json={"arguments": {"name": "n"}}
            )
            assert response.status_code == 200 and response.json()["result"]["ok"], (headers, response.text)
        # Reads are not refused: a page of another site cannot read the answer (no CORS header is ever sent).
        response = app.client.get("/session/S0", headers=[*credentials, ("Origin", "https://evil.example")])
        assert response.status_code == 200 and "access-control-allow-origin" not in response.headers


def test_behind_a_tls_proxy_the_origin_s_scheme_is_not_compared(tmp_path: Path, triggers: Path) -> None:
    """The service sees http from a proxy that ended TLS; the browser's Origin says https, same host and port."""
    with serving(tmp_path, triggers, base_url="http://api.example.com") as app:
        headers = {**app.auth, "Origin": "https://api.example.com"}
        assert app.client.put("/session/S1", headers=headers, json={"client_data": {}}).status_code == 200
        headers = {**app.auth, "Origin": "https://api.example.com:8443"}
        assert app.client.put("/session/S1", headers=headers, json={"client_data": {}}).status_code == 403


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"content": b'{"arguments": {"name": "x"}}', "headers": {"Content-Type": "text/plain"}}, "must be JSON"),
        ({"data": {"arguments": "x"}}, "must be JSON"),
        ({"files": {"arguments": (None, "{}")}}, "must be JSON"),
        ({"content": b""}, "even an empty one"),
    ],
)
def test_anonymous_mode_wants_a_json_post(
    tmp_path: Path, triggers: Path, kwargs: dict[str, Any], fragment: str
) -> None:
    """The forms an HTML page can send to another site (no preflight) cannot fire a trigger."""
    with serving(tmp_path, triggers, anonymous_company="demo") as app:
        app.client.put("/session/S1", data={"client_data": "{}"})  # a PUT form is fine: no page can send a PUT
        response = app.client.post("/session/S1/triggers/ping", **kwargs)
        assert response.status_code == 415, response.text
        error = documented(response, "/session/{session_id}/triggers/{name}", "POST")["error"]
        assert error["code"] == "unsupported_media_type" and fragment in error["message"]
        assert app.client.get("/session/S1/logs").json()["logs"] == []
        for kind in ("application/json", "application/json; charset=utf-8", "application/vnd.call+json"):
            response = app.client.post(
                "/session/S1/triggers/echo", content=b'{"arguments": {"name": "x"}}', headers={"Content-Type": kind}
            )
            assert response.status_code == 200 and response.json()["result"]["ok"], response.text


def test_keyed_mode_still_takes_a_post_without_a_body(tmp_path: Path, triggers: Path) -> None:
    """With a key (which no page can attach) ``curl -X POST`` without a body still works."""
    with serving(tmp_path, triggers) as app:
        app.client.put("/session/S1", headers=app.auth)
        response = app.client.post("/session/S1/triggers/echo", headers=app.auth)
        assert response.status_code == 200 and response.json()["result"]["category"] == "bad_arguments"


# -- credentials that are there must be valid ---------------------------------------------------------------


def _bad_credentials(key: str) -> list[list[tuple[str, str]]]:
    return [
        [("Authorization", "Basic dXNlcjpwYXNz")],  # a browser replays Basic credentials by itself
        [("Authorization", "Basic junk")],
        [("Authorization", "Bearer")],
        [("Authorization", "Bearer ")],
        [("Authorization", "")],
        [("Authorization", f"Token {key}")],
        [("Authorization", f"Bearer {key} extra")],
        [("Authorization", "Bearer wdsl_not-a-key")],
        [("X-Api-Key", "")],
        [("X-Api-Key", "wdsl_not-a-key")],
        [("Authorization", f"Bearer {key}"), ("Authorization", f"Bearer {key}")],
        [("X-Api-Key", key), ("X-Api-Key", key)],
        [("Authorization", f"Bearer {key}"), ("X-Api-Key", "wdsl_another-key")],
        [("Authorization", "Basic junk"), ("X-Api-Key", key)],
    ]


API_ENDPOINTS = [
    ("PUT", "/session/S1", "/session/{session_id}"),
    ("GET", "/session/S1", "/session/{session_id}"),
    ("GET", "/session/S1/logs", "/session/{session_id}/logs"),
    ("POST", "/session/S1/triggers/echo", "/session/{session_id}/triggers/{name}"),
    ("GET", "/triggers", "/triggers"),
    ("GET", "/secrets", "/secrets"),
    ("PUT", "/secrets/erp_token", "/secrets/{name}"),
    ("DELETE", "/secrets/erp_token", "/secrets/{name}"),
]


@pytest.mark.parametrize("anonymous", [False, True], ids=["keyed", "anonymous"])
def test_malformed_or_unknown_credentials_are_a_401_in_every_mode(
    tmp_path: Path, triggers: Path, anonymous: bool
) -> None:
    settings = {"anonymous_company": "demo"} if anonymous else {}
    with serving(tmp_path, triggers, **settings) as app:
        for headers in _bad_credentials(app.key):
            for method, url, path in API_ENDPOINTS:
                body = {"value": "a-long-secret-value"} if "secrets" in url else {"arguments": {"name": "x"}}
                response = app.client.request(method, url, headers=headers, json=body)
                assert response.status_code == 401, (headers, method, url, response.text)
                assert documented(response, path, method)["error"]["code"] == "unauthorized"
                assert response.headers["www-authenticate"].startswith("Bearer")
            page = app.client.get("/dashboard/", headers=headers)
            assert page.status_code == 401 and "Sign in" in page.text, headers
        # Nothing reached either company: no session, for the key's company or the anonymous one.
        assert app.client.get("/session/S1", headers=app.auth).status_code == 404
        if anonymous:
            assert app.client.get("/session/S1").status_code == 404


def test_well_formed_credentials_still_work(tmp_path: Path, triggers: Path) -> None:
    with serving(tmp_path, triggers, anonymous_company="demo") as app:
        for headers in (
            [("Authorization", f"bearer {app.key}")],
            [("Authorization", f"Bearer   {app.key} ")],
            [("X-Api-Key", f" {app.key}")],
            [("Authorization", f"Bearer {app.key}"), ("X-Api-Key", app.key)],
        ):
            response = app.client.put("/session/S1", headers=headers, json={"client_data": {}})
            assert response.status_code == 200 and response.json()["company_id"] == "cmp_42", headers


# == L7: bounded sessions ===========================================================================


@pytest.mark.parametrize("kind", BACKENDS)
def test_the_default_limit_stops_a_session_growing_past_256_kib(tmp_path: Path, triggers: Path, kind: str) -> None:
    """Eight 0.9 MB PUTs made a 6 MB session; now each is a 413 that gives the size and the limit."""
    assert DEFAULT_MAX_CLIENT_DATA_BYTES == 256 * 1024
    with serving(tmp_path, triggers, kind) as app:
        for i in range(8):
            client_data = {f"part{i}": "x" * 900_000}
            response = app.client.put("/session/S1", headers=app.auth, json={"client_data": client_data})
            assert response.status_code == 413, response.text
            error = documented(response, "/session/{session_id}", "PUT")["error"]
            assert error["code"] == "client_data_too_large"
            assert f"{compact(client_data)} bytes" in error["message"] and "262144 bytes" in error["message"]
        assert app.client.get("/session/S1", headers=app.auth).status_code == 404  # nothing was stored
        half = {"a": "x" * 135_000}
        assert app.client.put("/session/S1", headers=app.auth, json={"client_data": half}).status_code == 200
        more = {"b": "y" * 135_000}
        response = app.client.put("/session/S1", headers=app.auth, files={"client_data": (None, json.dumps(more))})
        assert response.status_code == 413
        assert f"{compact({**half, **more})} bytes" in response.json()["error"]["message"]
        session = app.client.get("/session/S1", headers=app.auth).json()
        assert session["client_data"] == half


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_session_may_fill_its_limit_exactly(tmp_path: Path, triggers: Path, kind: str) -> None:
    """The measure is compact JSON in UTF-8 bytes, on both backends (PostgreSQL's jsonb text is longer: a
    merge it would refuse is measured again, exactly)."""
    limit = 4000
    with serving(tmp_path, triggers, kind, max_client_data_bytes=limit) as app:
        first = {
            "user": "usr_999",
            "plan": "enterprise",
            "tags": ["a", "b", {"deep": [1, 2.5, None, True]}],
            "name": "Ana Müller 😀",
        }
        assert app.client.put("/session/S1", headers=app.auth, json={"client_data": first}).status_code == 200
        room = limit - compact(first) - len(',"fill":""')
        fill = {"fill": "é" * (room // 2) + "x" * (room % 2)}
        assert compact({**first, **fill}) == limit
        response = app.client.put("/session/S1", headers=app.auth, json={"client_data": fill})
        assert response.status_code == 200, response.text
        assert compact(app.client.get("/session/S1", headers=app.auth).json()["client_data"]) == limit
        response = app.client.put("/session/S1", headers=app.auth, json={"client_data": {"z": 1}})
        assert response.status_code == 413
        one_more = limit + len(',"z":1')
        assert f"{one_more} bytes" in response.json()["error"]["message"]
        # Smaller values for keys it has make room again; a PUT with no client_data still sets assistant_id.
        assert app.client.put("/session/S1", headers=app.auth, json={"client_data": {"fill": None}}).status_code == 200
        assert app.client.put("/session/S1", headers=app.auth, json={"client_data": {"z": 1}}).status_code == 200
        assert app.client.put("/session/S1", headers=app.auth, json={"assistant_id": "a2"}).status_code == 200


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_response_merge_past_the_limit_is_refused_and_the_call_stands(
    tmp_path: Path, triggers: Path, kind: str
) -> None:
    limit = 5000
    with serving(tmp_path, triggers, kind, max_client_data_bytes=limit) as app:
        app.client.put("/session/S1", headers=app.auth, json={"client_data": {"erp_token": SECRET}})
        fire = "/session/S1/triggers/fill"
        response = app.client.post(fire, headers=app.auth, json={"arguments": {"key": "small", "size": 1000}})
        result = documented(response, "/session/{session_id}/triggers/{name}", "POST")["result"]
        assert result["ok"] and result["client_data_merged"] == {"small": "x" * 1000} and result["warnings"] == []
        before = app.client.get("/session/S1", headers=app.auth).json()["client_data"]

        response = app.client.post(fire, headers=app.auth, json={"arguments": {"key": "big", "size": 4500}})
        assert response.status_code == 200
        result = documented(response, "/session/{session_id}/triggers/{name}", "POST")["result"]
        assert result["ok"] and result["status"] == 200 and result["response"]["filled"] == "big"
        assert result["client_data_merged"] == {}
        would_be = compact({"erp_token": SECRET, "small": "x" * 1000, "big": "x" * 4500})
        (warning,) = result["warnings"]
        assert f"{would_be} bytes" in warning and f"limit of {limit} bytes" in warning and "not merged" in warning
        assert "tool" in response.json()["message_for_llm"]  # the LLM still gets the answer

        logs = app.client.get("/session/S1/logs", headers=app.auth).json()["logs"]
        assert [r["client_data_merged"] for r in logs] == [{"small": "x" * 1000}, {}]
        assert logs[-1]["warnings"] == [warning] and logs[-1]["ok"]
        assert app.client.get("/session/S1", headers=app.auth).json()["client_data"] == before
        assert SECRET not in json.dumps(logs)


# -- the store: the limit holds under concurrency, on both backends -------------------------------------------


def _stores(factory: StoreFactory, count: int, limit: int) -> list[Store]:
    """``count`` stores on one database (separate connections, as separate replicas have)."""
    stores = [factory() for _ in range(count)]
    for store in stores:
        store.max_client_data_bytes = limit
    return stores


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize("how", ["put", "merge", "finish_call"])
def test_concurrent_merges_cannot_pass_the_limit_together(tmp_path: Path, kind: str, how: str) -> None:
    """Forty merges from two stores on one database, each of which fits alone: the session ends within
    the limit, holds exactly the merges that were acknowledged, and every refusal says so."""
    factory = StoreFactory(kind, tmp_path)
    limit, member = 20_000, 1000

    def worker(store: Store, first: int, outcomes: dict[int, bool]) -> None:
        async def one(i: int) -> None:
            update = {f"k{i:02}": "v" * member}
            try:
                if how == "put":
                    await store.put_session("S1", company_id="c", client_data=update)
                elif how == "merge":
                    await store.merge_client_data("S1", update, company_id="c")
                else:
                    seq = await store.finish_call("S1", update, {"at": 1.0, "warnings": []}, company_id="c")
                    assert isinstance(seq, LogSeq)
                    if seq.merge_refused is not None:
                        assert f"limit of {limit} bytes" in seq.merge_refused
                        outcomes[i] = False
                        return
            except ClientDataTooLarge as error:
                assert error.limit == limit and error.size > limit
                outcomes[i] = False
                return
            outcomes[i] = True

        async def run() -> None:
            try:
                await asyncio.gather(*(one(i) for i in range(first, first + 20)))
            finally:
                await store.close()

        asyncio.run(run())

    try:
        setup, a, b = _stores(factory, 3, limit)

        async def create() -> None:
            await setup.put_session("S1", company_id="c", client_data={})
            await setup.close()

        asyncio.run(create())
        outcomes: dict[int, bool] = {}
        threads = [threading.Thread(target=worker, args=(store, first, outcomes)) for store, first in ((a, 0), (b, 20))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert len(outcomes) == 40

        async def read() -> tuple[dict[str, Any], list[dict[str, Any]]]:
            store = factory()
            try:
                return (await store.get_session("S1", company_id="c")).client_data, await store.logs(
                    "S1", 100, company_id="c"
                )
            finally:
                await store.close()

        data, logs = asyncio.run(read())
        assert compact(data) <= limit
        assert set(data) == {f"k{i:02}" for i, ok in outcomes.items() if ok}
        assert len(data) == (limit - 2 + 1) // (member + len('"k00":""') + 1)  # as many as fit, and no more
        if how == "finish_call":
            assert len(logs) == 40
            refused = [r for r in logs if r["warnings"]]
            assert len(refused) == 40 - len(data) and all(r["client_data_merged"] == {} for r in refused)
    finally:
        factory.drop()


@pytest.mark.parametrize("kind", BACKENDS)
def test_the_store_limit_is_configurable(tmp_path: Path, kind: str) -> None:
    factory = StoreFactory(kind, tmp_path)

    async def test() -> None:
        store = factory()
        try:
            assert store.max_client_data_bytes == DEFAULT_MAX_CLIENT_DATA_BYTES
            store.max_client_data_bytes = 100
            with pytest.raises(ClientDataTooLarge) as caught:
                await store.put_session("S1", company_id="c", client_data={"x": "y" * 100})
            assert (caught.value.size, caught.value.limit) == (compact({"x": "y" * 100}), 100)
            assert "over the limit of 100 bytes" in str(caught.value)
            await store.put_session("S1", company_id="c", client_data={"x": "y" * 80})
            with pytest.raises(ClientDataTooLarge):
                await store.merge_client_data("S1", {"z": "y" * 20}, company_id="c")
            assert compact_json_size((await store.get_session("S1", company_id="c")).client_data) == 88
        finally:
            await store.close()

    try:
        asyncio.run(test())
    finally:
        factory.drop()
    store = SQLiteStore(tmp_path / "own.db", max_client_data_bytes=50)
    try:
        with pytest.raises(ClientDataTooLarge):
            store.put_session_sync("S1", company_id="c", client_data={"x": "y" * 50})
    finally:
        store.close_sync()


def test_the_service_setting_sets_the_store_s_limit(tmp_path: Path, triggers: Path) -> None:
    with serving(tmp_path, triggers, max_client_data_bytes=1234) as app:
        assert app.client.app.state.store.max_client_data_bytes == 1234
    store = SQLiteStore(tmp_path / "own.db", max_client_data_bytes=777)
    own = create_app(store, TriggerCatalog.load(triggers), settings=ServiceSettings(access_log=False))
    assert store.max_client_data_bytes == 777  # settings without a limit leave the store's own
    assert own.state.settings.max_client_data_bytes is None
    store.close_sync()


def test_session_put_on_the_command_line_keeps_the_limit(tmp_path: Path) -> None:
    database = str(tmp_path / "w.db")
    err = io.StringIO()
    command = ["session", "put", "S1", "--company-id", "c", "--database", database]
    assert main([*command, "--client-data", json.dumps({"x": "y" * 300_000})], io.StringIO(), err) == 1
    assert f"would be {compact({'x': 'y' * 300_000})} bytes of compact JSON, over the limit of 262144" in err.getvalue()
    assert main([*command, "--client-data", '{"x": "yyyy"}', "--max-client-data-bytes", "10"], io.StringIO(), err) == 1
    assert "over the limit of 10 bytes" in err.getvalue()
    assert main([*command, "--client-data", '{"x": "yyyy"}'], io.StringIO(), io.StringIO()) == 0


# -- a full session does not hold up other requests ----------------------------------------------------------


def test_a_session_at_the_limit_does_not_hold_up_other_requests(tmp_path: Path, triggers: Path) -> None:
    """Parsing JSON cannot leave the event loop (a thread would hold the GIL throughout), so the limit is what
    bounds a request's time on the loop: with a session at the default limit, reads, PUTs and trigger calls
    interleave with a ticker on the same loop, and every one of them is served. How long the loop stalls is
    timing, not behaviour: benchmarks/faults.py does not assert it and neither does this test."""
    factory = StoreFactory("sqlite", tmp_path)
    key = make_key(factory, "cmp_42")
    store = factory()
    app = create_app(
        store, TriggerCatalog.load(triggers), settings=ServiceSettings(access_log=False), allow_networks=["127.0.0.0/8"]
    )
    member = compact({"k0000": f"value {0:04} " + "x" * 180}) - 1  # with its comma, without the braces
    values = {f"k{i:04}": f"value {i:04} " + "x" * 180 for i in range((DEFAULT_MAX_CLIENT_DATA_BYTES - 4096) // member)}
    assert DEFAULT_MAX_CLIENT_DATA_BYTES - 8192 < compact(values) <= DEFAULT_MAX_CLIENT_DATA_BYTES - 4096

    async def run() -> tuple[list[str], dict[str, Any]]:
        events: list[str] = []
        done = asyncio.Event()

        async def ticker() -> None:
            while not done.is_set():
                await asyncio.sleep(0.001)
                events.append("tick")

        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {key}"}
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://localhost", headers=headers) as client,
        ):
            await store.put_session("S1", company_id="cmp_42", client_data=values)
            tick = asyncio.create_task(ticker())

            async def one(i: int) -> None:
                if i % 3 == 0:
                    response = await client.get("/session/S1")
                elif i % 3 == 1:
                    response = await client.put("/session/S1", json={"client_data": {f"k{i % 50:04}": "short"}})
                else:
                    response = await client.post("/session/S1/triggers/echo", json={"arguments": {"name": f"n{i}"}})
                assert response.status_code == 200, response.text
                events.append("served")

            await asyncio.gather(*(one(i) for i in range(60)))
            done.set()
            await tick
            final = (await client.get("/session/S1")).json()
        return events, final

    events, final = asyncio.run(run())
    assert events.count("served") == 60
    first, last = events.index("served"), len(events) - 1 - events[::-1].index("served")
    assert "tick" in events[first:last]  # the loop turned between requests, not only before and after them
    client_data = final["client_data"]
    assert set(values) <= set(client_data) and all(client_data[f"k{i % 50:04}"] == "short" for i in range(1, 60, 3))


# -- the serve command --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_serve_takes_the_limit_and_anonymous_mode_stays_local(tmp_path: Path, triggers: Path) -> None:
    factory = StoreFactory("sqlite", tmp_path)
    process = ServiceProcess(triggers, factory.url, "--max-client-data-bytes", "1000", "--anonymous-company", "demo")
    try:
        process.wait_ready()
        response = httpx.put(f"{process.url}/session/S1", files={"client_data": (None, json.dumps({"x": "y" * 995}))})
        assert response.status_code == 413 and "over the limit of 1000 bytes" in response.json()["error"]["message"]
        response = httpx.put(f"{process.url}/session/S1", files={"client_data": (None, '{"x": "y"}')})
        assert response.status_code == 200 and response.json()["company_id"] == "demo"
        response = httpx.get(f"{process.url}/session/S1", headers={"Host": f"rebound.example:{process.port}"})
        assert response.status_code == 421
    finally:
        process.stop()


# -- a real browser: a page of another site, and a rebound name -----------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class _Attacker(BaseHTTPRequestHandler):
    """A page that, once loaded, posts an empty form to the service (a "simple" request: no preflight)."""

    target = ""

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        body = (
            f'<html><body><form id="f" method="post" enctype="text/plain" action="{self.target}"></form>'
            '<script>document.getElementById("f").submit()</script></body></html>'
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (apt-get install chromium; .ci/run does)")
def test_a_browser_cannot_fire_a_trigger_of_an_anonymous_service(tmp_path: Path, triggers: Path) -> None:
    factory = StoreFactory("sqlite", tmp_path)
    process = ServiceProcess(triggers, factory.url, "--anonymous-company", "demo")
    attacker = ThreadingHTTPServer(("127.0.0.1", 0), _Attacker)
    attacker.daemon_threads = True
    threading.Thread(target=attacker.serve_forever, daemon=True).start()
    try:
        process.wait_ready()
        assert httpx.put(f"{process.url}/session/S1", json={"client_data": {}}).status_code == 200
        flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--host-resolver-rules=MAP rebound.example 127.0.0.1",
        ]
        # A page of another site (another port is another origin: localhost is another site than 127.0.0.1).
        _Attacker.target = f"{process.url}/session/S1/triggers/ping"
        page = f"http://localhost:{attacker.server_address[1]}/"
        shown = subprocess.run(
            [str(CHROMIUM), *flags, "--virtual-time-budget=5000", "--dump-dom", page],
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert shown.returncode == 0, shown.stderr[-2000:]
        assert "forbidden" in shown.stdout and "ping" not in shown.stdout, shown.stdout[-2000:]
        # DNS rebinding: a name of the attacker's that now resolves to 127.0.0.1.
        rebound = subprocess.run(
            [str(CHROMIUM), *flags, "--dump-dom", f"http://rebound.example:{process.port}/session/S1"],
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert "misdirected_request" in rebound.stdout and "client_data" not in rebound.stdout, rebound.stdout
        assert httpx.get(f"{process.url}/session/S1/logs").json()["logs"] == []  # nothing was fired
    finally:
        attacker.shutdown()
        attacker.server_close()
        process.stop()


# -- no leftovers: a database of this version has the sign-in table and keeps its files private ---------------


def test_a_database_of_version_3_gains_the_dashboard_sign_in_table(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    store = SQLiteStore(path)
    store.close_sync()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE dashboard_sessions")
    db.execute("PRAGMA user_version = 3")
    db.commit()
    db.close()
    store = SQLiteStore(path)
    try:
        assert store._connection.execute("PRAGMA user_version").fetchone()[0] == _SCHEMA_VERSION
        asyncio.run(store.add_dashboard_session("h" * 64, "c", "k" * 64, time.time() + 60))
        assert asyncio.run(store.dashboard_session("h" * 64)) is not None
    finally:
        store.close_sync()
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
