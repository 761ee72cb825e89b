"""The service under faults: error responses that keep the connection, store outages, health, disk headroom.

A client pools its connections, so an error answer that silently closes one makes the client's next request
fail too; these tests run a real uvicorn server and check every kind of error on one kept-alive connection.
A store outage (``StoreUnavailable``) is a 503 with ``Retry-After``, never a 500; readiness commits a write,
so a database that answers reads but refuses writes is not ready; ``serve`` refuses to start on a nearly
full disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import inspect
import io
import json
import logging
import shutil
import sqlite3
import threading
import time
import uuid
from collections import Counter, namedtuple
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from tests.service_support import StoreFactory, free_port, make_key
from tests.test_service import check as documented
from webhook_dsl import cli
from webhook_dsl.cli import main
from webhook_dsl.service import views as service_views
from webhook_dsl.service.app import TriggerCatalog, create_app
from webhook_dsl.service.middleware import ServiceSettings
from webhook_dsl.service.openapi import openapi_document
from webhook_dsl.storage.base import Store, StoreUnavailable
from webhook_dsl.storage.sqlite import SQLiteStore

WRITES = frozenset(
    {"put_session", "merge_client_data", "append_log", "begin_call", "finish_call", "set_secret", "delete_secret"}
)


class FaultyStore:
    """A real ``SQLiteStore`` whose coroutine methods can be switched to fail as an outage does (the backend's
    error as the cause), or held until the test lets them go; counts every call."""

    def __init__(self, backend: SQLiteStore) -> None:
        self.backend = backend
        self.failing: set[str] = set()
        self.retry_after = 1.0
        self.calls: Counter[str] = Counter()
        self.held: dict[str, threading.Event] = {}

    def fail(self, *names: str) -> None:
        self.failing = set(names)

    def heal(self) -> None:
        self.failing = set()

    def hold(self, name: str) -> threading.Event:
        """Hold calls of ``name`` until the returned event is set (on a thread: the event loop keeps going)."""
        self.held[name] = threading.Event()
        return self.held[name]

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.backend, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute

        async def delegate(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            gate = self.held.get(name)
            if gate is not None:
                await asyncio.to_thread(gate.wait, 30)
            if name in self.failing:
                try:
                    raise sqlite3.OperationalError("database or disk is full")
                except sqlite3.OperationalError as error:
                    raise StoreUnavailable(
                        f"the SQLite database cannot be used now: {error}", retry_after=self.retry_after
                    ) from error
            return await attribute(*args, **kwargs)

        return delegate


class _Remote(BaseHTTPRequestHandler):
    """Any GET: 200 ``{"done": true}``; counts the requests it was sent."""

    protocol_version = "HTTP/1.1"
    received = 0

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        type(self).received += 1
        body = b'{"done": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def remote() -> Iterator[tuple[int, type[_Remote]]]:
    handler: type[_Remote] = type("Remote", (_Remote,), {"received": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], handler
    server.shutdown()
    server.server_close()


class Faulty:
    """The app over a ``FaultyStore``, a session ``S1`` of company ``cmp_a``, and the company's key."""

    def __init__(self, tmp_path: Path, remote_port: int, **settings: Any) -> None:
        triggers = tmp_path / "triggers"
        triggers.mkdir()
        trigger = {
            "name": "ping",
            "description": "Calls the test's remote.",
            "parameters": {"type": "object", "properties": {}},
            "webhook": {"url": f"http://127.0.0.1:{remote_port}/ping", "method": "GET"},
        }
        (triggers / "ping.json").write_text(json.dumps(trigger))
        factory = StoreFactory("sqlite", tmp_path / uuid.uuid4().hex[:8])
        factory.path.parent.mkdir(parents=True)
        self.key = make_key(factory, "cmp_a")
        self.headers = {"Authorization": f"Bearer {self.key}"}
        backend = factory()
        assert isinstance(backend, SQLiteStore)
        asyncio.run(backend.put_session("S1", company_id="cmp_a", client_data={"plan": "pro"}))
        self.store = FaultyStore(backend)
        self.app: Starlette = create_app(
            cast(Store, self.store),
            TriggerCatalog.load(triggers),
            settings=ServiceSettings(access_log=False, **settings),
            allow_networks=["127.0.0.0/8"],
        )

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://127.0.0.1")


def run(work: Callable[[httpx.AsyncClient], Awaitable[Any]], served: Faulty) -> Any:
    async def go() -> Any:
        async with served.client() as client:
            return await work(client)

    return asyncio.run(go())


@contextlib.contextmanager
def uvicorn_serving(app: Starlette, http: str = "auto") -> Iterator[int]:
    """The app on a real uvicorn server on loopback, configured as ``serve`` configures it (``http``: uvicorn's
    HTTP parser, httptools when installed); yields the port."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, server_header=False, loop="auto", http=http
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(20)


# -- 1. no error answer drops the kept-alive connection --------------------------------------------------


def _chunks(size: int) -> Iterator[bytes]:
    for _ in range(size // 1024):
        yield b"x" * 1024


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_every_error_answer_keeps_the_connection_alive(
    tmp_path: Path,
    remote: tuple[int, type[_Remote]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    parser: str,
) -> None:
    """After each kind of error, the next request on the same connection gets its answer: a server that closes
    the connection without saying ``Connection: close`` makes a pooled client's next request fail."""
    served = Faulty(tmp_path, remote[0], max_body_bytes=4096, max_requests_per_company=1)
    auth = served.headers
    with uvicorn_serving(served.app, parser) as port:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        busy = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:

            def ask(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
                connection.request(method, path, body=body, headers={**auth, **(headers or {})})
                response = connection.getresponse()
                return response, response.read()

            ask("GET", "/session/S1")
            socket = connection.sock
            assert socket is not None

            def unexpected(*args: Any, **kwargs: Any) -> Any:
                raise RuntimeError("a bug in masking")

            def store_down() -> None:
                served.store.fail("get_session")

            def request_a_second_one() -> None:
                """The company's one slot is taken by a request held in the store, on another connection."""
                gate = served.store.hold("logs")
                busy.request("GET", "/session/S1/logs", headers=auth)
                deadline = time.monotonic() + 10
                while served.store.calls["logs"] == 0:
                    assert time.monotonic() < deadline
                    time.sleep(0.01)
                cleanups.append(gate.set)

            cleanups: list[Callable[[], None]] = []
            cases: list[tuple[int, str, str, Any, dict[str, str], Callable[[], None] | None]] = [
                (400, "PUT", "/session/S1", b"{", {"Content-Type": "application/json"}, None),
                (404, "GET", "/no/such/endpoint", None, {}, None),
                (405, "PATCH", "/session/S1", None, {}, None),
                (413, "PUT", "/session/S1", b"x" * 10_000, {"Content-Type": "application/json"}, None),
                (413, "PUT", "/session/S1", _chunks(10_240), {"Content-Type": "application/json"}, None),
                (429, "GET", "/session/S1", None, {}, request_a_second_one),
                (
                    500,
                    "GET",
                    "/session/S1",
                    None,
                    {},
                    lambda: monkeypatch.setattr(service_views, "masked_session", unexpected),
                ),
                (503, "GET", "/session/S1", None, {}, store_down),
            ]
            for status, method, path, body, headers, before in cases:
                if before is not None:
                    before()
                if inspect.isgenerator(body):
                    connection.request(method, path, body=body, headers={**auth, **headers}, encode_chunked=True)
                    response = connection.getresponse()
                    answer = response, response.read()
                else:
                    answer = ask(method, path, body, headers)
                assert answer[0].status == status, (status, answer[1])
                assert json.loads(answer[1])["error"]["code"], answer[1]
                served.store.heal()
                monkeypatch.undo()
                while cleanups:
                    cleanups.pop()()
                if status == 429:
                    held = busy.getresponse()
                    assert held.status == 200, held.read()
                    held.read()
                response, text = ask("GET", "/session/S1")
                assert response.status == 200, (status, text)
                assert connection.sock is socket, f"the connection was not kept after the {status}"
        finally:
            connection.close()
            busy.close()
    failures = [r for r in caplog.records if r.exc_info is not None]
    assert len(failures) == 1, [r.getMessage() for r in failures]  # the 500, logged once, with its traceback
    assert failures[0].exc_info is not None and "a bug in masking" in str(failures[0].exc_info[1])


# -- 2. a store outage is a 503 with Retry-After --------------------------------------------------------

KEYED = [
    ("PUT", "/session/S1", "/session/{session_id}", {"json": {"client_data": {"a": 1}}}),
    ("GET", "/session/S1", "/session/{session_id}", {}),
    ("GET", "/session/S1/logs", "/session/{session_id}/logs", {}),
    ("POST", "/session/S1/triggers/ping", "/session/{session_id}/triggers/{name}", {"json": {"arguments": {}}}),
    ("GET", "/triggers", "/triggers", {}),
    ("GET", "/secrets", "/secrets", {}),
    ("PUT", "/secrets/erp_token", "/secrets/{name}", {"json": {"value": "a-long-enough-secret"}}),
    ("DELETE", "/secrets/erp_token", "/secrets/{name}", {}),
]


@pytest.mark.parametrize(("method", "url", "path", "options"), KEYED)
def test_a_store_outage_on_any_keyed_endpoint_is_a_documented_503(
    tmp_path: Path,
    remote: tuple[int, type[_Remote]],
    caplog: pytest.LogCaptureFixture,
    method: str,
    url: str,
    path: str,
    options: dict[str, Any],
) -> None:
    """Every store method fails (the key lookup first: nothing is remembered here), as in a full outage."""
    served = Faulty(tmp_path, remote[0], key_cache_seconds=0)
    served.store.fail(*{"company_for_key", "ping", "probe_write", *WRITES})
    served.store.retry_after = 2.5

    async def ask(client: httpx.AsyncClient) -> httpx.Response:
        return await client.request(method, url, headers=served.headers, **options)

    with caplog.at_level(logging.WARNING, logger="webhook_dsl.service"):
        response = run(ask, served)
    assert response.status_code == 503, response.text
    error = documented(response, path, method)["error"]
    assert error["code"] == "store_unavailable"
    assert response.headers["retry-after"] == "3"  # whole seconds, rounded up
    assert "database is unavailable" in error["message"] and "retry after 3 s" in error["message"]
    assert "disk is full" not in error["message"]  # the backend's words are for the log, not for tenants
    assert remote[1].received == 0
    warnings = [r for r in caplog.records if r.name == "webhook_dsl.service"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING and warnings[0].exc_info is None
    assert "disk is full" in warnings[0].getMessage() and "\n" not in warnings[0].getMessage()


@pytest.mark.parametrize("failing", ["get_session", "begin_call"])
def test_a_trigger_call_refused_for_a_store_outage_says_nothing_was_sent(
    tmp_path: Path, remote: tuple[int, type[_Remote]], failing: str
) -> None:
    served = Faulty(tmp_path, remote[0])
    served.store.fail(failing)

    async def ask(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post("/session/S1/triggers/ping", headers=served.headers, json={"arguments": {}})

    response = run(ask, served)
    if served.store.calls[failing] == 0:
        pytest.skip(f"this runtime does not call {failing}")
    assert response.status_code == 503, response.text
    error = documented(response, "/session/{session_id}/triggers/{name}", "POST")["error"]
    assert error["code"] == "store_unavailable" and "nothing was sent" in error["message"]
    assert int(response.headers["retry-after"]) >= 1
    assert remote[1].received == 0


def test_a_retry_after_below_a_second_is_one_second(tmp_path: Path, remote: tuple[int, type[_Remote]]) -> None:
    served = Faulty(tmp_path, remote[0])
    served.store.fail("get_session")
    served.store.retry_after = 0.01

    async def ask(client: httpx.AsyncClient) -> httpx.Response:
        return await client.get("/session/S1", headers=served.headers)

    response = run(ask, served)
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert "retry after 1 s" in response.json()["error"]["message"]


def test_an_unexpected_exception_is_still_a_500_internal_logged_with_its_traceback(
    tmp_path: Path, remote: tuple[int, type[_Remote]], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    served = Faulty(tmp_path, remote[0])

    def unexpected(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("a bug")

    monkeypatch.setattr(service_views, "masked_session", unexpected)

    async def ask(client: httpx.AsyncClient) -> httpx.Response:
        return await client.get("/session/S1", headers=served.headers)

    response = run(ask, served)
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal"
    logged = [r for r in caplog.records if r.exc_info is not None]
    assert len(logged) == 1 and logged[0].levelno == logging.ERROR and "GET /session/S1" in logged[0].getMessage()


# -- 3. health that tells the truth ------------------------------------------------------------------


def test_readiness_follows_writes_while_liveness_needs_no_store(
    tmp_path: Path, remote: tuple[int, type[_Remote]]
) -> None:
    served = Faulty(tmp_path, remote[0])

    async def scenario(client: httpx.AsyncClient) -> None:
        ready = await client.get("/readyz")
        assert documented(ready, "/readyz", "GET") == {
            "status": "ready",
            "store": "sqlite",
            "version": ready.json()["version"],
        }
        assert documented(await client.get("/health"), "/health", "GET")["status"] == "ok"

        served.store.fail(*WRITES, "probe_write")  # reads still work: the old SELECT 1 said all was well
        served.store.retry_after = 1.5
        await asyncio.sleep(1.1)  # past the cached success
        for path in ("/readyz", "/health"):
            response = await client.get(path)
            assert response.status_code == 503, response.text
            error = documented(response, path, "GET")["error"]
            assert error["code"] == "store_unavailable" and "disk is full" in error["message"]
            assert response.headers["retry-after"] == "2"
        assert (await client.get("/session/S1", headers=served.headers)).status_code == 200  # reads work

        calls = dict(served.store.calls)
        alive = await client.get("/livez")
        assert documented(alive, "/livez", "GET") == {"status": "alive"}
        assert served.store.calls == calls  # liveness does not touch the store

        served.store.heal()
        healed = time.monotonic()
        while (await client.get("/readyz")).status_code != 200:
            assert time.monotonic() - healed < 10, "still not ready after the database took writes again"
            await asyncio.sleep(0.05)
        assert (await client.get("/health")).status_code == 200

    run(scenario, served)


def test_a_probe_storm_costs_one_write_per_second(tmp_path: Path, remote: tuple[int, type[_Remote]]) -> None:
    served = Faulty(tmp_path, remote[0])

    async def scenario(client: httpx.AsyncClient) -> None:
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        assert served.store.calls["probe_write"] == 1
        await asyncio.sleep(1.1)
        answers = await asyncio.gather(*(client.get(p) for p in ["/readyz", "/health"] * 10))
        assert [a.status_code for a in answers] == [200] * 20
        assert served.store.calls["probe_write"] == 2

        served.store.fail("probe_write")  # a failure is remembered as long
        await asyncio.sleep(1.1)
        answers = await asyncio.gather(*(client.get("/readyz") for _ in range(10)))
        assert [a.status_code for a in answers] == [503] * 10
        assert served.store.calls["probe_write"] == 3

    run(scenario, served)


def test_health_endpoints_need_no_key(tmp_path: Path, remote: tuple[int, type[_Remote]]) -> None:
    served = Faulty(tmp_path, remote[0])

    async def scenario(client: httpx.AsyncClient) -> list[int]:
        return [(await client.get(path)).status_code for path in ("/livez", "/readyz", "/health")]

    assert run(scenario, served) == [200, 200, 200]
    document = served.app.state.openapi
    for path in ("/livez", "/readyz", "/health"):
        assert document["paths"][path]["get"]["security"] == []


# -- 4. disk headroom at start-up -----------------------------------------------------------------------

_Usage = namedtuple("_Usage", "total used free")
_MB = 1024 * 1024


class _NoServer:
    """Stands in for ``uvicorn.Server``: start-up gets this far, and no port is opened."""

    started = True
    made = 0

    def __init__(self, config: uvicorn.Config) -> None:
        type(self).made += 1

    def run(self) -> None:
        pass


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> type[_NoServer]:
    recorder: type[_NoServer] = type("NoServer", (_NoServer,), {"made": 0})
    monkeypatch.setattr(uvicorn, "Server", recorder)
    return recorder


@pytest.mark.parametrize("form", ["plain", "url"])
def test_serve_refuses_to_start_on_a_nearly_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_server: type[_NoServer], form: str
) -> None:
    asked: list[str] = []

    def nearly_full(path: str | Path) -> _Usage:
        asked.append(str(path))
        return _Usage(100_000 * _MB, 99_990 * _MB, 10 * _MB)

    monkeypatch.setattr(shutil, "disk_usage", nearly_full)
    (tmp_path / "triggers").mkdir()
    database = tmp_path / "data" / "w.db"
    database.parent.mkdir()
    given = str(database) if form == "plain" else f"sqlite:///{database}"
    err = io.StringIO()
    status = main(["serve", "--triggers", str(tmp_path / "triggers"), "--database", given], io.StringIO(), err)
    assert status == 2
    lines = err.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    for part in ("10 MB free", "64 MB", str(database.parent), "--min-free-disk-mb"):
        assert part in lines[0], (part, lines[0])
    assert asked == [str(database.parent)]
    assert no_server.made == 0 and not database.exists()  # refused before the database was opened

    err = io.StringIO()
    base = ["serve", "--triggers", str(tmp_path / "triggers"), "--database", given]
    assert main([*base, "--min-free-disk-mb", "8"], io.StringIO(), err) == 0, err.getvalue()
    assert no_server.made == 1


def test_serve_checks_no_disk_with_the_check_off_or_for_postgresql(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_server: type[_NoServer]
) -> None:
    def not_asked(path: str | Path) -> _Usage:
        raise AssertionError(f"disk_usage({path}) was called")

    monkeypatch.setattr(shutil, "disk_usage", not_asked)
    monkeypatch.setattr(cli, "_database_answers", lambda store, err: True)  # no PostgreSQL at db.invalid
    (tmp_path / "triggers").mkdir()
    base = ["serve", "--triggers", str(tmp_path / "triggers")]
    err = io.StringIO()
    assert main([*base, "--database", str(tmp_path / "w.db"), "--min-free-disk-mb", "0"], io.StringIO(), err) == 0
    pytest.importorskip("asyncpg")
    assert main([*base, "--database", "postgresql://u@db.invalid/w"], io.StringIO(), err) == 0, err.getvalue()
    assert no_server.made == 2


def test_serve_help_explains_the_disk_headroom(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--min-free-disk-mb N with a SQLite database, refuse to start" in text
    assert "0: no check" in text and "--min-free-disk-mb 1024" in text  # an example


def test_serve_refuses_a_negative_minimum(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--triggers", str(tmp_path), "--min-free-disk-mb", "-1"])
    assert exit_.value.code == 2
    assert "negative" in capsys.readouterr().err


# -- 5. the document knows the new fields ----------------------------------------------------------------


def test_the_document_describes_recorded_and_log_states() -> None:
    schemas = openapi_document()["components"]["schemas"]
    result = schemas["TriggerResult"]["properties"]
    assert result["recorded"]["type"] == "boolean" and "recorded" not in schemas["TriggerResult"]["required"]
    record = schemas["LogRecord"]["properties"]
    assert record["state"]["enum"] == ["recorded", "in_flight", "unknown_outcome"]
    assert record["expires_at"]["type"] == "number" and record["recorded_late"]["type"] == "boolean"
    assert {"state", "expires_at", "recorded_late"}.isdisjoint(schemas["LogRecord"]["required"])
    for name in ("TriggerResult", "LogRecord"):
        for field in ("recorded",) if name == "TriggerResult" else ("state", "expires_at", "recorded_late"):
            assert schemas[name]["properties"][field]["description"]
