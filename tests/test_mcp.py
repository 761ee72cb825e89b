"""MCP (extra ``[mcp]``): the triggers as tools over stdio (``webhook-dsl mcp``) and streamable HTTP (``/mcp``),
driven by the official SDK's own client, against the examples' stand-in on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

pytest.importorskip("mcp")

import httpx2
import uvicorn
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.service_support import free_port, write_triggers
from webhook_dsl.cli import main
from webhook_dsl.runtime.catalog import TriggerCatalog
from webhook_dsl.service import ServiceSettings, create_app
from webhook_dsl.storage.base import hash_api_key, new_api_key
from webhook_dsl.storage.sqlite import SQLiteStore

T = TypeVar("T")
ERP_TOKEN = "erp-token-5f1d9c"  # a company secret; the leaky trigger sends it and the stand-in echoes it back
MAX_BODY = 64 * 1024

#: Sends the company's secret in its body to the helpdesk stand-in, which echoes the body in its answer.
LEAKY_TRIGGER: dict[str, Any] = {
    "name": "leaky_ticket",
    "description": "Opens a ticket whose answer repeats what was sent.",
    "parameters": {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]},
    "webhook": {
        "url": "http://127.0.0.1:PORT/helpdesk/api/tickets",
        "method": "POST",
        "headers": [{"key": "Authorization", "value": "Bearer $secrets.erp_token"}],
        "body": {"title": "$title", "note": "token $secrets.erp_token"},
    },
}
#: Waits for the test to let the slow stand-in answer.
SLOW_TRIGGER: dict[str, Any] = {
    "name": "slow",
    "description": "A webhook that answers when the test says so.",
    "parameters": {"type": "object", "properties": {}},
    "webhook": {"url": "http://127.0.0.1:PORT/slow", "method": "GET"},
}


class _Slow(BaseHTTPRequestHandler):
    """GET /slow: notes that it arrived, then answers once ``release`` is set (10 s at most)."""

    protocol_version = "HTTP/1.1"
    arrived = threading.Event()
    release = threading.Event()

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        type(self).arrived.set()
        type(self).release.wait(10)
        body = b'{"done": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def slow_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1])
    _Slow.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def triggers(tmp_path_factory: pytest.TempPathFactory, stand_in: int, slow_port: int) -> Path:
    """The examples, ``echo`` and ``acme/acme_inventory`` (``write_triggers``), the leaky one and the slow one."""
    directory = write_triggers(tmp_path_factory.mktemp("mcp") / "triggers", stand_in)
    (directory / "leaky_ticket.json").write_text(json.dumps(LEAKY_TRIGGER).replace("PORT", str(stand_in)))
    (directory / "slow.json").write_text(json.dumps(SLOW_TRIGGER).replace("PORT", str(slow_port)))
    return directory


@dataclass
class Database:
    path: Path
    keys: dict[str, str]

    def logs(self, session_id: str) -> list[dict[str, Any]]:
        store = SQLiteStore(self.path)
        try:
            return store.logs_sync(session_id, 100)
        finally:
            store.close_sync()


def _database(path: Path) -> Database:
    """Sessions S1 (company cmp_42) and S2 (acme), each company's erp_token secret and API key."""
    keys = {company: new_api_key() for company in ("cmp_42", "acme")}

    async def fill() -> None:
        store = SQLiteStore(path)
        try:
            for company, session_id in (("cmp_42", "S1"), ("acme", "S2")):
                await store.put_session(session_id, company_id=company, assistant_id=None, client_data={})
                await store.set_secret(company, "erp_token", ERP_TOKEN)
                await store.add_api_key(company, hash_api_key(keys[company]), keys[company][:11], "test")
        finally:
            await store.close()

    asyncio.run(fill())
    return Database(path, keys)


# -- stdio --------------------------------------------------------------------------------------------------


def _command() -> list[str]:
    script = shutil.which("webhook-dsl", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "webhook_dsl"]


async def _over_stdio(argv: list[str], errlog: Path, work: Callable[[ClientSession], Awaitable[T]]) -> T:
    """``webhook-dsl mcp ARGV`` as a child process, driven by the SDK's stdio client."""
    command = _command()
    parameters = StdioServerParameters(command=command[0], args=[*command[1:], "mcp", *argv], cwd=str(errlog.parent))
    with errlog.open("w") as err:
        async with stdio_client(parameters, errlog=err) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            return await work(session)


def _tools_of(triggers: Path, company: str) -> dict[str, tuple[str, dict[str, Any]]]:
    found = TriggerCatalog.load(triggers).for_company(company)
    return {name: (trigger.description, dict(trigger.parameters)) for name, trigger in found.items()}


@pytest.mark.slow
def test_stdio_serves_the_triggers_as_tools(tmp_path: Path, triggers: Path) -> None:
    database = _database(tmp_path / "stdio.db")
    files = [str(triggers / f"{name}.json") for name in ("check_order", "create_ticket", "leaky_ticket")]
    argv = [*files, "--session", "S1", "--database", str(database.path), "--allow-network", "127.0.0.0/8"]

    async def work(session: ClientSession) -> tuple[Any, ...]:
        listed = await session.list_tools()
        ok = await session.call_tool("check_order", {"order_number": "A-1001"})
        wrong = await session.call_tool("check_order", {"order_number": 17})
        missing = await session.call_tool("create_ticket", {"issue_title": "Jam"})
        leaky = await session.call_tool("leaky_ticket", {"title": "Jam"})
        unknown = await session.call_tool("acme_inventory", {"sku": "X"})
        return listed, ok, wrong, missing, leaky, unknown

    listed, ok, wrong, missing, leaky, unknown = asyncio.run(_over_stdio(argv, tmp_path / "stderr.txt", work))
    expected = {k: v for k, v in _tools_of(triggers, "cmp_42").items() if k in ("check_order", "create_ticket")}
    expected["leaky_ticket"] = (LEAKY_TRIGGER["description"], LEAKY_TRIGGER["parameters"])
    assert {t.name: (t.description, t.input_schema) for t in listed.tools} == expected

    assert ok.is_error is False
    assert ok.content[0].text.startswith('The tool "check_order" succeeded (HTTP 200 OK).')
    assert '"order_number":"A-1001"' in ok.content[0].text
    assert wrong.is_error is True
    assert "argument 'order_number': 17 is not of type 'string'" in wrong.content[0].text
    assert missing.is_error is True and "'issue_description' is a required property" in missing.content[0].text
    assert leaky.is_error is False and ERP_TOKEN not in leaky.content[0].text and "token ***" in leaky.content[0].text
    assert unknown.is_error is True
    assert unknown.content[0].text == (
        'There is no tool "acme_inventory" here; the tools are: check_order, create_ticket, leaky_ticket.'
    )
    records = database.logs("S1")
    assert [(r["trigger"], r["ok"], r["category"]) for r in records] == [
        ("check_order", True, None),
        ("check_order", False, "bad_arguments"),
        ("create_ticket", False, "bad_arguments"),
        ("leaky_ticket", True, None),
    ]
    assert ERP_TOKEN not in json.dumps(records)
    assert ERP_TOKEN not in (tmp_path / "stderr.txt").read_text()


def _rpc(method: str, params: dict[str, Any] | None = None, id_: int | None = None) -> str:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    if id_ is not None:
        message["id"] = id_
    return json.dumps(message) + "\n"


@pytest.mark.slow
def test_stdio_stdout_carries_the_protocol_and_nothing_else(tmp_path: Path, triggers: Path) -> None:
    """Whatever happens (a call, a bad call, debug logging), every line on stdout is a JSON-RPC message."""
    database = _database(tmp_path / "raw.db")
    initialize = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}
    lines = [
        _rpc("initialize", initialize, 1),
        _rpc("notifications/initialized"),
        _rpc("tools/list", {}, 2),
        _rpc("tools/call", {"name": "check_order", "arguments": {"order_number": "A-7"}}, 3),
        _rpc("tools/call", {"name": "check_order", "arguments": {}}, 4),
        "this line is not JSON\n",
        _rpc("tools/call", {"name": "check_order", "arguments": {"order_number": "A-8"}}, 5),
    ]
    argv = [str(triggers), "--session", "S1", "--database", str(database.path), "--allow-network", "127.0.0.0/8"]

    process = subprocess.Popen(
        [*_command(), "mcp", *argv, "--log-level", "debug"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(tmp_path),
    )
    assert process.stdin is not None and process.stdout is not None
    answers: dict[int, Any] = {}
    out_lines: list[str] = []
    for line in lines:  # one at a time: each call is answered before the next is sent
        process.stdin.write(line)
        process.stdin.flush()
        request = json.loads(line) if line.startswith("{") else {}
        if "id" in request:
            while request["id"] not in answers:
                text = process.stdout.readline()
                assert text, "the server closed stdout"
                out_lines.append(text)
                message = json.loads(text)
                if "id" in message:
                    answers[message["id"]] = message
    out, err = process.communicate(timeout=20)
    out_lines += out.splitlines(keepends=True)
    assert process.returncode == 0, err
    for text in out_lines:
        assert json.loads(text)["jsonrpc"] == "2.0", text
    assert {t["name"] for t in answers[2]["result"]["tools"]} == set(_tools_of(triggers, "cmp_42"))
    assert answers[3]["result"]["isError"] is False
    assert answers[4]["result"]["isError"] is True
    assert "'order_number' is a required property" in answers[4]["result"]["content"][0]["text"]
    assert answers[5]["result"]["isError"] is False
    assert "DEBUG" in err  # the logs went to stderr


def test_mcp_without_the_sdk_says_how_to_install_it(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "sys.modules['mcp'] = None  # as if the extra were not installed\n"
        "from webhook_dsl.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    trigger = str(Path(__file__).parent.parent / "examples" / "triggers" / "check_order.json")
    result = subprocess.run(
        [sys.executable, "-c", script, "mcp", trigger, "--session", "S1"],
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "pip install 'webhook-dsl[mcp]'" in result.stderr


def test_mcp_refuses_to_start_on_bad_triggers_or_an_unknown_session(
    tmp_path: Path, triggers: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = _database(tmp_path / "start.db")
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "bad", "description": "x", "webhook": {"url": "https://x.example/a b", "method": "GET"}}')
    assert main(["mcp", str(bad), "--session", "S1", "--database", str(database.path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert f"{bad}:1:" in err and "not started: the triggers have errors" in err

    check_order = str(triggers / "check_order.json")
    assert main(["mcp", check_order, "--session", "S9", "--database", str(database.path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("no session 'S9' in ") and "webhook-dsl session put S9" in err
    argv = ["mcp", check_order, "--session", "S2", "--company-id", "cmp_42", "--database", str(database.path)]
    assert main(argv) == 1
    assert "no session 'S2' of company 'cmp_42'" in capsys.readouterr().err

    store = SQLiteStore(database.path)
    store.put_session_sync("S1", company_id="acme")
    store.close_sync()
    assert main(["mcp", check_order, "--session", "S1", "--database", str(database.path)]) == 1
    assert "session 'S1' exists in acme, cmp_42; name the company" in capsys.readouterr().err


# -- streamable HTTP ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _uvicorn(app: Any) -> Iterator[str]:
    """The app on a real uvicorn server on a free loopback port; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, server_header=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


@dataclass
class Served:
    url: str
    database: Database
    triggers: Path

    def mcp(self, session_id: str = "S1") -> str:
        return f"{self.url}/mcp?session_id={session_id}"

    def auth(self, company: str = "cmp_42") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.database.keys[company]}"}


def _app(database: Database, triggers: Path, **settings: Any) -> Any:
    return create_app(
        SQLiteStore(database.path),
        TriggerCatalog.load(triggers),
        settings=ServiceSettings(max_body_bytes=MAX_BODY, access_log=False, **settings),
        allow_networks=["127.0.0.0/8"],
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, triggers: Path) -> Iterator[Served]:
    database = _database(tmp_path_factory.mktemp("mcp-http") / "service.db")
    with _uvicorn(_app(database, triggers)) as url:
        yield Served(url, database, triggers)


@contextlib.asynccontextmanager
async def _http_session(url: str, headers: dict[str, str], mode: str = "legacy") -> AsyncIterator[Any]:
    """An SDK client on ``url``: ``legacy`` is ``ClientSession`` after the initialize handshake; ``auto`` is the
    SDK's ``Client``, which speaks the 2026-07-28 revision (one self-contained POST per request) when the
    server does."""
    async with httpx2.AsyncClient(headers=headers) as http:
        if mode == "legacy":
            async with streamable_http_client(url, http_client=http) as (read, write), ClientSession(read, write) as s:
                await s.initialize()
                yield s
        else:
            async with Client(streamable_http_client(url, http_client=http), mode="auto") as client:
                yield client


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_http_serves_the_companys_triggers(served: Served, mode: str) -> None:
    async def work() -> tuple[Any, ...]:
        async with _http_session(served.mcp("S1"), served.auth("cmp_42"), mode) as session:
            if mode == "auto":
                assert session.protocol_version == "2026-07-28"
            listed = await session.list_tools()
            ok = await session.call_tool("check_order", {"order_number": f"A-{mode}"})
            wrong = await session.call_tool("check_order", {"order_number": ""})
            leaky = await session.call_tool("leaky_ticket", {"title": "Jam"})
            foreign = await session.call_tool("acme_inventory", {"sku": "X"})
        async with _http_session(served.mcp("S2"), served.auth("acme"), mode) as session:
            acme = await session.list_tools()
        return listed, ok, wrong, leaky, foreign, acme

    listed, ok, wrong, leaky, foreign, acme = asyncio.run(work())
    assert {t.name: (t.description, t.input_schema) for t in listed.tools} == _tools_of(served.triggers, "cmp_42")
    assert {t.name: (t.description, t.input_schema) for t in acme.tools} == _tools_of(served.triggers, "acme")
    assert "acme_inventory" in {t.name for t in acme.tools} - {t.name for t in listed.tools}

    assert ok.is_error is False and ok.content[0].text.startswith('The tool "check_order" succeeded (HTTP 200 OK).')
    assert wrong.is_error is True
    assert "argument 'order_number': '' should be non-empty" in wrong.content[0].text
    assert leaky.is_error is False and ERP_TOKEN not in leaky.content[0].text and "token ***" in leaky.content[0].text
    assert foreign.is_error is True and foreign.content[0].text.startswith('There is no tool "acme_inventory" here')

    # each call is in the session's log, as the API and the dashboard show it
    logs = httpx.get(f"{served.url}/session/S1/logs", headers=served.auth("cmp_42")).json()["logs"]
    mine = [r for r in logs if r["trigger"] in ("check_order", "leaky_ticket")][-3:]
    assert [(r["trigger"], r["ok"], r["category"]) for r in mine] == [
        ("check_order", True, None),
        ("check_order", False, "bad_arguments"),
        ("leaky_ticket", True, None),
    ]
    assert f"/erp/api/orders/A-{mode}" in mine[0]["url"]
    assert ERP_TOKEN not in json.dumps(logs)


def test_http_calls_run_on_the_keys_company_only(served: Served) -> None:
    """A session is the key's company's: acme's S2 is not there for cmp_42, whatever the URL says."""

    async def work() -> Any:
        async with _http_session(served.mcp("S2"), served.auth("cmp_42")) as session:
            return await session.call_tool("check_order", {"order_number": "A-1"})

    result = asyncio.run(work())
    assert result.is_error is True
    assert result.content[0].text.startswith("The tool \"check_order\" failed (no session 'S2' to call it on;")
    assert all(r["trigger"] != "check_order" for r in served.database.logs("S2"))


def test_http_wants_a_valid_key_and_a_session(served: Served) -> None:
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    accept = {"Accept": "application/json, text/event-stream"}
    for headers in (
        {},
        {"Authorization": "Bearer wdsl_not-a-key"},
        {"X-Api-Key": "wdsl_not-a-key"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": f"Bearer {served.database.keys['cmp_42']}x"},
    ):
        response = httpx.post(served.mcp(), json=listing, headers={**accept, **headers})
        assert response.status_code == 401, headers
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")

    async def with_a_wrong_key() -> None:
        async with _http_session(served.mcp(), {"Authorization": "Bearer wdsl_not-a-key"}):
            pass

    with pytest.raises(BaseExceptionGroup) as raised:  # the SDK's client is refused at its first request
        asyncio.run(with_a_wrong_key())
    assert raised.value.subgroup(lambda error: isinstance(error, MCPError)) is not None

    key = {**accept, "X-Api-Key": served.database.keys["cmp_42"]}
    for url in (f"{served.url}/mcp", f"{served.mcp()}&session_id=S2", f"{served.url}/mcp?session_id=a%20b"):
        response = httpx.post(url, json=listing, headers=key)
        assert response.status_code == 400, url
        assert "session" in response.json()["error"]["message"]
    for method in ("GET", "DELETE"):  # stateless: no event stream to open, no MCP session to end
        response = httpx.request(method, served.mcp(), headers=key)
        assert response.status_code == 405 and response.headers["allow"] == "POST"
    response = httpx.post(served.mcp(), json=listing, headers=key)
    assert response.status_code == 200
    assert {t["name"] for t in response.json()["result"]["tools"]} == set(_tools_of(served.triggers, "cmp_42"))


def test_http_goes_through_the_services_own_checks(served: Served) -> None:
    """The body limit and the cross-site refusal hold on /mcp as on every other endpoint."""
    headers = {**served.auth(), "Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    arguments = {"order_number": "x" * MAX_BODY}
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "check_order", "arguments": arguments},
    }
    big = json.dumps(call).encode()
    response = httpx.post(served.mcp(), content=big, headers=headers)
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies as the body is read
        for start in range(0, len(big), 4096):
            yield big[start : start + 4096]

    response = httpx.post(served.mcp(), content=chunks(), headers=headers)
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"

    response = httpx.post(served.mcp(), content=b"{}", headers={**headers, "Origin": "https://evil.example"})
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    response = httpx.post(served.mcp(), content=b"{}", headers={**headers, "Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 403
    assert all(r["trigger"] != "check_order" or "x" * 100 not in r["url"] for r in served.database.logs("S1"))


def test_http_counts_against_the_company_limit_until_the_webhook_call(
    tmp_path: Path, triggers: Path, slow_port: int
) -> None:
    """With one request of a company at a time: an MCP request being read holds the company's place (a second
    one is a 429), and a tool call gives it back when its webhook call starts, as the REST endpoint does."""
    database = _database(tmp_path / "limit.db")
    _Slow.arrived.clear()
    _Slow.release.clear()
    url = ""

    async def work(base: str) -> tuple[int, int, Any, Any]:
        nonlocal url
        url = f"{base}/mcp?session_id=S1"
        headers = {"Authorization": f"Bearer {database.keys['cmp_42']}", "Content-Type": "application/json"}
        headers["Accept"] = "application/json, text/event-stream"
        body_sent = asyncio.Event()
        finish_body = asyncio.Event()

        async def slow_body() -> AsyncIterator[bytes]:
            yield b'{"jsonrpc": "2.0", "id": 1, '
            body_sent.set()
            await finish_body.wait()
            yield b'"method": "tools/list", "params": {}}'

        listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
        async with httpx.AsyncClient(timeout=20) as http:
            reading = asyncio.create_task(http.post(url, content=slow_body(), headers=headers))
            await body_sent.wait()
            await asyncio.sleep(0.2)  # the service has read the head and counted the request
            refused = await http.post(url, json=listing, headers=headers)
            other = await http.post(
                url.replace("S1", "S2"),
                json=listing,
                headers={**headers, "Authorization": f"Bearer {database.keys['acme']}"},
            )
            finish_body.set()
            assert (await reading).status_code == 200

            async with _http_session(url, {"Authorization": headers["Authorization"]}) as session:
                calling = asyncio.create_task(session.call_tool("slow", {}))
                while not _Slow.arrived.is_set():
                    await asyncio.sleep(0.02)
                during = await session.list_tools()  # the webhook is being waited on: the company's place is free
                _Slow.release.set()
                result = await calling
        return refused.status_code, other.status_code, during, result

    with _uvicorn(_app(database, triggers, max_requests_per_company=1)) as base:
        refused, other, during, result = asyncio.run(work(base))
    assert refused == 429
    assert other == 200  # another company is not held back
    assert "slow" in {t.name for t in during.tools}
    assert result.is_error is False and result.content[0].text.startswith('The tool "slow" succeeded (HTTP 200 OK).')


def test_without_the_sdk_the_service_has_no_mcp_endpoint(
    tmp_path: Path, triggers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The extra is optional: without the ``mcp`` package the service starts and serves the rest, /mcp is a 404."""
    from starlette.testclient import TestClient

    for name in [name for name in sys.modules if name == "mcp" or name.startswith("mcp.")]:
        monkeypatch.setitem(sys.modules, name, None)  # importing any of them now fails, as without the package
    monkeypatch.delitem(sys.modules, "webhook_dsl.service.mcp", raising=False)
    database = _database(tmp_path / "plain.db")
    key = {"X-Api-Key": database.keys["cmp_42"]}
    with TestClient(_app(database, triggers)) as client:
        assert client.post("/mcp?session_id=S1", json={}, headers=key).status_code == 404
        assert client.get("/triggers", headers=key).status_code == 200
