"""Shared by the store, service and dashboard tests: stores of both kinds, trigger folders, servers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import pytest

from webhook_dsl.storage.base import Store, hash_api_key, new_api_key
from webhook_dsl.storage.sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_TRIGGERS = ROOT / "examples" / "triggers"
#: A PostgreSQL server for the tests (``.ci/run`` starts one); without it those tests are skipped.
POSTGRES = os.environ.get("WEBHOOK_DSL_TEST_POSTGRES")
NO_POSTGRES = "WEBHOOK_DSL_TEST_POSTGRES is not set (a postgresql:// URL of a server the tests may use)"
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.skipif(not POSTGRES, reason=NO_POSTGRES))]


class StoreFactory:
    """Makes stores of one kind over one database; each test gets its own database (file or schema)."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.path = tmp_path / "store.db"
        self.schema = f"t_{uuid.uuid4().hex[:16]}"

    @property
    def url(self) -> str:
        """What ``--database`` takes (for PostgreSQL, the schema rides in the search_path setting)."""
        if self.kind == "sqlite":
            return f"sqlite:///{self.path}"
        assert POSTGRES is not None
        separator = "&" if "?" in POSTGRES else "?"
        return f"{POSTGRES}{separator}search_path={self.schema}"

    def __call__(self) -> Store:
        if self.kind == "sqlite":
            return SQLiteStore(self.path)
        from webhook_dsl.storage.postgres import PostgresStore

        assert POSTGRES is not None
        return PostgresStore(POSTGRES, schema=self.schema, min_size=1, max_size=8)

    def create_schema(self) -> None:
        """For PostgreSQL processes started with ``url``: the schema must exist before they start."""
        if self.kind != "postgresql":
            return

        async def create() -> None:
            store = self()
            await store.ping()
            await store.close()

        asyncio.run(create())

    def drop(self) -> None:
        if self.kind != "postgresql":
            return
        import asyncpg

        async def drop() -> None:
            connection = await asyncpg.connect(POSTGRES)
            try:
                await connection.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            finally:
                await connection.close()

        asyncio.run(drop())


def make_key(store_factory: StoreFactory, company: str) -> str:
    key = new_api_key()

    async def add() -> None:
        store = store_factory()
        try:
            await store.add_api_key(company, hash_api_key(key), key[:11], "test")
        finally:
            await store.close()

    asyncio.run(add())
    return key


class _Echo(BaseHTTPRequestHandler):
    """GET /echo/NAME answers {"name": NAME, "session": {"client_data": {NAME: true}}}: a merge per call."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        name = unquote(urlsplit(self.path).path.rsplit("/", 1)[-1])
        body = json.dumps({"name": name, "session": {"client_data": {name: True}}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default 5 makes concurrent connects wait for SYN retransmits (1 s)


def start_echo() -> ThreadingHTTPServer:
    server = _Server(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


ECHO_TRIGGER = {
    "name": "echo",
    "description": "Answers with a client_data key named after the argument.",
    "parameters": {
        "type": "object",
        "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 64}},
        "required": ["name"],
    },
    "webhook": {"url": "http://127.0.0.1:PORT/echo/$name", "method": "GET"},
}

ACME_TRIGGER = {
    "name": "acme_inventory",
    "description": "Only company acme has this one.",
    "parameters": {"type": "object", "properties": {"sku": {"type": "string"}}, "required": ["sku"]},
    "clientData": ["erp_token", "acme_pin"],
    "secrets": ["erp_token", "acme_pin"],
    "webhook": {
        "url": "http://127.0.0.1:PORT/erp/api/orders/$sku",
        "method": "GET",
        "headers": [{"key": "Authorization", "value": "Bearer $erp_token"}],
    },
}


#: The company secrets the example triggers read (``$secrets.erp_token`` and the others): a company sets them
#: once (``PUT /secrets/NAME``, ``webhook-dsl secrets set NAME``), and no session carries them.
EXAMPLE_SECRET_NAMES = ("erp_token", "helpdesk_api_key", "vision_api_key")


def write_example_triggers(directory: Path, stand_in_port: int) -> Path:
    """The example triggers as they are, aimed at a stand-in on ``stand_in_port``."""
    directory.mkdir(parents=True, exist_ok=True)
    for trigger in EXAMPLE_TRIGGERS.glob("*.json"):
        text = trigger.read_text().replace("127.0.0.1:8765", f"127.0.0.1:{stand_in_port}")
        (directory / trigger.name).write_text(text)
    return directory


def put_secrets(client: httpx.Client, key: str, values: dict[str, str]) -> None:
    """Set company secrets as a deployment does, through ``PUT /secrets/NAME`` with the company's API key."""
    for name, value in values.items():
        response = client.put(f"/secrets/{name}", headers={"Authorization": f"Bearer {key}"}, json={"value": value})
        assert response.status_code == 204, response.text


def write_triggers(directory: Path, stand_in_port: int, echo_port: int | None = None) -> Path:
    """The example triggers aimed at a stand-in, plus ``echo`` (shared) and ``acme/acme_inventory``."""
    write_example_triggers(directory, stand_in_port)
    echo = json.dumps(ECHO_TRIGGER).replace("PORT", str(echo_port or stand_in_port))
    (directory / "echo.json").write_text(echo)
    (directory / "acme").mkdir(exist_ok=True)
    (directory / "acme" / "acme_inventory.json").write_text(
        json.dumps(ACME_TRIGGER).replace("PORT", str(stand_in_port))
    )
    return directory


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _command() -> list[str]:
    script = shutil.which("webhook-dsl", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "webhook_dsl"]


class ServiceProcess:
    """``webhook-dsl serve`` in a child process on a free loopback port."""

    def __init__(self, triggers: Path, database: str, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [*_command(), "serve", "--triggers", str(triggers), "--database", database]
        command += ["--port", str(self.port), "--allow-network", "127.0.0.0/8", "--no-access-log", *extra]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=str(ROOT)
        )

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the service exited: {self.process.stderr.read() if self.process.stderr else ''}")
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("the service did not start in time")

    def stop(self) -> str:
        self.process.terminate()
        try:
            _, err = self.process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        return err or ""


@contextlib.contextmanager
def services(triggers: Path, database: str, count: int, *extra: str) -> Iterator[list[ServiceProcess]]:
    started = [ServiceProcess(triggers, database, *extra) for _ in range(count)]
    try:
        for service in started:
            service.wait_ready()
        yield started
    finally:
        for service in started:
            service.stop()


# -- the one rule for sessions (webhook_dsl.storage.sqlite): the service and the command line are tested with these ----

ACCEPTED_SESSION_IDS = ["S1", "7", "x" * 128, "ana@example.com", "a.b_c:d~e-f"]
REFUSED_SESSION_IDS = ["a b", "-S1", ".S1", "_S1", "x" * 129, "é", "S1\n", "a%b", "a+b", "a#b"]
_DEEP_32 = '{"x": ' + "[" * 31 + "]" * 31 + "}"  # the object and 31 arrays: 32 levels
_DEEP_33 = '{"x": ' + "[" * 32 + "]" * 32 + "}"
ACCEPTED_CLIENT_DATA = [
    "{}",
    '{"a.b": 1, "session": {"id": 2}, "Session.Id": 3, "company_id": "", "": null}',
    _DEEP_32,
    '{"n": 2.5, "big": 123456789012345678901234567890, "t": "\\u00e9\\ud83d\\ude00"}',
]
#: client_data text, and what the message says (the same words on both sides)
REFUSED_CLIENT_DATA = [
    ("[1]", "client_data must be a JSON object, not an array"),
    ('"text"', "client_data must be a JSON object, not a string"),
    ("null", "client_data must be a JSON object, not null"),
    ('{"session.id": "x"}', "client_data key 'session.id' is a system variable; the platform sets it"),
    ('{"ok": 1, "company.id": "x"}', "client_data key 'company.id' is a system variable; the platform sets it"),
    ('{"assistant.id": "x"}', "client_data key 'assistant.id' is a system variable; the platform sets it"),
    (_DEEP_33, "nested deeper than 32 levels"),
    ('{"x": 1e400}', "client_data['x'] is inf, which JSON cannot hold"),
    ('{"x": NaN}', "NaN is not JSON"),
    ('{"x": ["\\ud800"]}', "lone UTF-16 surrogate"),
]
