"""Schema versions: a database written by the previous release is upgraded in place, every row still readable;
opening an upgraded database again changes nothing; one newer than this code is refused in one line; several
processes opening one database at once upgrade it once. Run against every backend (SQLite always, PostgreSQL
when WEBHOOK_DSL_TEST_POSTGRES is set).

The fixtures in tests/data/migrations were written by the previous release's own code (make_v5.py there).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.service_support import BACKENDS, EXAMPLE_TRIGGERS, POSTGRES, ROOT, StoreFactory
from webhook_dsl.storage import sqlite as sqlite_module
from webhook_dsl.storage.base import AmbiguousSession, DashboardSession, SchemaTooNew, Store

FIXTURES = Path(__file__).resolve().parent / "data" / "migrations"
#: The schema name the PostgreSQL fixture was dumped from; each test loads it under its own.
FIXTURE_SCHEMA = "wdsl_v5_fixture"
LATEST = sqlite_module._SCHEMA_VERSION
TABLES = ("sessions", "call_logs", "api_keys", "secrets", "dashboard_sessions", "write_probe")


class Database:
    """One test's database, read and changed beside the store, with the backend's own driver."""

    def __init__(self, factory: StoreFactory) -> None:
        self.factory = factory
        self.kind = factory.kind

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        if self.kind == "sqlite":
            db = sqlite3.connect(self.factory.path)
            try:
                return [tuple(row) for row in db.execute(query).fetchall()]
            finally:
                db.close()
        return asyncio.run(self._postgres(lambda connection: connection.fetch(query)))

    def execute(self, script: str) -> None:
        if self.kind == "sqlite":
            db = sqlite3.connect(self.factory.path)
            try:
                db.executescript(script)
            finally:
                db.close()
        else:
            asyncio.run(self._postgres(lambda connection: connection.execute(script)))

    async def _postgres(self, work: Any) -> Any:
        import asyncpg

        connection = await asyncpg.connect(POSTGRES, server_settings={"search_path": self.factory.schema})
        try:
            result = await work(connection)
            return [tuple(row) for row in result] if isinstance(result, list) else result
        finally:
            await connection.close()

    def load_previous_release(self) -> None:
        """The fixture: the previous release's tables and rows (for PostgreSQL, in this test's schema)."""
        if self.kind == "sqlite":
            self.execute((FIXTURES / "sqlite_v5.sql").read_text())
        else:
            self.execute((FIXTURES / "postgres_v5.sql").read_text().replace(FIXTURE_SCHEMA, self.factory.schema))

    def version(self) -> int | None:
        """The version the database says it has; None for PostgreSQL without ``schema_version``."""
        if self.kind == "sqlite":
            return int(self.rows("PRAGMA user_version")[0][0])
        if not self.rows("SELECT to_regclass('schema_version')")[0][0]:
            return None
        return int(self.rows("SELECT version FROM schema_version")[0][0])

    def set_version(self, version: int) -> None:
        if self.kind == "sqlite":
            self.execute(f"PRAGMA user_version = {version}")
        else:
            self.execute(f"UPDATE schema_version SET version = {version}")

    def schema(self) -> list[tuple[Any, ...]]:
        """Tables, columns, indexes and constraints, in a form that does not depend on the file or schema name."""
        if self.kind == "sqlite":
            return [
                (kind, name, table, " ".join((sql or "").split()))
                for kind, name, table, sql in self.rows(
                    "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name"
                )
            ]
        schema = self.factory.schema
        columns = self.rows(
            "SELECT table_name, column_name, ordinal_position, data_type, is_nullable, column_default "
            f"FROM information_schema.columns WHERE table_schema = '{schema}' ORDER BY 1, 3"
        )
        indexes = self.rows(
            f"SELECT indexname, replace(indexdef, '{schema}.', '') FROM pg_indexes WHERE schemaname = '{schema}' "
            "ORDER BY 1"
        )
        constraints = self.rows(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
            f"WHERE connamespace = '{schema}'::regnamespace ORDER BY 1, 2"
        )
        return [*columns, *indexes, *constraints]

    def contents(self) -> dict[str, list[tuple[Any, ...]]]:
        return {table: sorted(self.rows(f"SELECT * FROM {table}"), key=repr) for table in TABLES}


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    factory = StoreFactory(request.param, tmp_path)
    yield factory
    factory.drop()


@pytest.fixture
def fresh(backend: StoreFactory, tmp_path: Path) -> Iterator[StoreFactory]:
    """A second, empty database of the same kind."""
    (tmp_path / "fresh").mkdir()
    factory = StoreFactory(backend.kind, tmp_path / "fresh")
    yield factory
    factory.drop()


def opened(factory: StoreFactory) -> None:
    """Open a store on the database (which upgrades it) and close it."""

    async def main() -> None:
        store = factory()
        try:
            await store.ping()
        finally:
            await store.close()

    asyncio.run(main())


def upgrade_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "webhook_dsl.storage" and "schema" in r.getMessage()]


def raw_rows(database: Database) -> dict[str, list[tuple[Any, ...]]]:
    """The rows the checks compare with, read with the backend's own driver."""
    return {
        "sessions": database.rows(
            "SELECT company_id, id, assistant_id, client_data, created_at, updated_at FROM sessions"
        ),
        "logs": database.rows("SELECT seq, company_id, session_id, at, record, state FROM call_logs ORDER BY seq"),
        "keys": database.rows("SELECT key_hash, company_id, prefix, label, created_at FROM api_keys"),
        "secrets": database.rows("SELECT company_id, name, value, updated_at FROM secrets"),
        "sign_ins": database.rows("SELECT token_hash, company_id, key_hash, expires_at FROM dashboard_sessions"),
    }


async def check_every_row_reads(store: Store, raw: dict[str, list[tuple[Any, ...]]]) -> None:
    """Every row of the previous release's tables, read directly, against what the Store API gives."""
    sessions, logs = raw["sessions"], raw["logs"]
    assert len(sessions) == 3 and len(logs) == 11  # the fixture is what make_v5.py writes
    for company, session_id, assistant_id, client_data, created_at, updated_at in sessions:
        session = await store.get_session(session_id, company_id=company)
        assert (session.assistant_id, session.created_at, session.updated_at) == (assistant_id, created_at, updated_at)
        assert session.client_data == json.loads(client_data)
        expected = [
            ({"seq": seq, **json.loads(text)}, "recorded" if state == "done" else "unknown_outcome")
            for seq, c, s, _at, text, state in logs
            if (c, s) == (company, session_id)
        ]
        views = await store.logs(session_id, 1000, company_id=company)
        assert [({k: v for k, v in view.items() if k != "state"}, view["state"]) for view in views] == expected
    for company in {row[0] for row in sessions}:
        listed = {s.id: (s.assistant_id, s.calls, s.last_call_at) for s in await store.list_sessions(company)}
        assert listed == {
            s: (a, sum(1 for row in logs if row[1:3] == (c, s)), max(row[3] for row in logs if row[1:3] == (c, s)))
            for c, s, a, *_ in sessions
            if c == company
        }
    with pytest.raises(AmbiguousSession) as ambiguous:
        await store.get_session("S1")
    assert ambiguous.value.companies == ["acme", "globex"]

    keys = raw["keys"]
    assert len(keys) == 2
    for key_hash, company, prefix, label, created_at in keys:
        assert await store.company_for_key(key_hash) == company
        assert [(k.prefix, k.label, k.created_at) for k in await store.api_keys(company)] == [
            (prefix, label, created_at)
        ]
    secrets = raw["secrets"]
    assert len(secrets) == 3
    for company in {row[0] for row in secrets}:
        assert await store.company_secrets(company) == {n: v for c, n, v, _ in secrets if c == company}
        assert [(s.name, s.updated_at) for s in await store.secret_names(company)] == sorted(
            (n, u) for c, n, _, u in secrets if c == company
        )
    ((token_hash, company, key_hash, expires_at),) = raw["sign_ins"]
    assert await store.dashboard_session(token_hash) == DashboardSession(company, key_hash, expires_at)


async def check_the_new_methods(store: Store, logs: list[tuple[Any, ...]]) -> int:
    """Each new method once on the upgraded database; returns how many log records should be left."""
    new_seq = await store.append_log("S2", {"at": time.time(), "trigger": "new"}, company_id="acme")
    assert new_seq > max(row[0] for row in logs)  # the sequence goes on from the old records
    assert await store.triggers_revision() == 0 and await store.current_triggers() == []
    written = await store.put_trigger_version("acme", "check_order", '{"name": "check_order"}', "sha256:1")
    assert written.version == 1 and await store.current_triggers() == [written]
    assert await store.triggers_revision() > 0
    globex = sum(1 for row in logs if row[1:3] == ("globex", "S1"))
    assert await store.delete_session("S1", company_id="globex") == globex
    cutoff = sorted(row[3] for row in logs)[len(logs) // 2]
    old = sum(1 for row in logs if row[3] < cutoff and row[1] != "globex")
    assert old > 0
    assert await store.purge_logs(cutoff) == old
    return len(logs) - globex - old + 1


def test_a_database_of_the_previous_release_is_upgraded_and_every_row_still_reads(
    backend: StoreFactory, fresh: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    database = Database(backend)
    database.load_previous_release()
    assert database.version() == (5 if backend.kind == "sqlite" else None)
    before = database.contents()
    raw = raw_rows(database)

    async def main() -> None:
        store = backend()
        try:
            await check_every_row_reads(store, raw)
        finally:
            await store.close()

    with caplog.at_level(logging.INFO, logger="webhook_dsl.storage"):
        asyncio.run(main())
    messages = upgrade_messages(caplog)
    assert len(messages) == 1 and messages[0].endswith(f"schema upgraded from version 5 to version {LATEST}"), messages
    assert database.version() == LATEST
    assert database.contents() == before  # the upgrade changed no row
    opened(fresh)
    assert database.schema() == Database(fresh).schema()  # as if created by this release

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="webhook_dsl.storage"):
        opened(backend)  # opening again: nothing to do
    assert upgrade_messages(caplog) == []
    assert database.contents() == before and database.version() == LATEST

    async def new_methods() -> int:
        store = backend()
        try:
            return await check_the_new_methods(store, raw["logs"])
        finally:
            await store.close()

    left = asyncio.run(new_methods())
    assert len(database.rows("SELECT seq FROM call_logs")) == left


def test_a_new_database_is_created_at_the_latest_version(
    backend: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="webhook_dsl.storage"):
        opened(backend)
    assert [m.split(": ", 1)[1] for m in upgrade_messages(caplog)] == [f"schema created at version {LATEST}"]
    database = Database(backend)
    assert database.version() == LATEST
    assert {row[0] for row in database.rows("SELECT count(*) FROM trigger_versions")} == {0}


def test_a_database_newer_than_this_code_is_refused_in_one_line(backend: StoreFactory) -> None:
    opened(backend)
    database = Database(backend)
    database.set_version(LATEST + 3)
    schema = database.schema()
    message = f"database schema version {LATEST + 3} is newer than this webhook-dsl ({LATEST}); upgrade webhook-dsl"

    async def main() -> None:
        store = backend()
        try:
            for _ in range(2):  # and again: a refused open leaves nothing half open
                with pytest.raises(SchemaTooNew) as refused:
                    await store.ping()
                assert str(refused.value) == message
                assert (refused.value.found, refused.value.known) == (LATEST + 3, LATEST)
        finally:
            await store.close()

    if backend.kind == "sqlite":  # SQLite opens the file as the store is made
        with pytest.raises(SchemaTooNew) as refused:
            backend()
        assert str(refused.value) == message
    else:
        asyncio.run(main())
    assert database.version() == LATEST + 3 and database.schema() == schema  # untouched


@pytest.mark.slow
def test_the_service_refuses_a_database_newer_than_this_code_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    sqlite_module.SQLiteStore(path).close_sync()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {LATEST + 1}")
    db.commit()
    db.close()
    command = ["serve", "--triggers", str(EXAMPLE_TRIGGERS), "--database", f"sqlite:///{path}", "--port", "0"]
    result = subprocess.run(
        [sys.executable, "-m", "webhook_dsl", *command],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"--database: database schema version {LATEST + 1} is newer than this webhook-dsl ({LATEST}); "
        "upgrade webhook-dsl"
    ]


def test_postgres_database_of_an_earlier_release_without_every_table_gains_them(backend: StoreFactory) -> None:
    """Before schema_version a PostgreSQL database was brought up to date by every start of the release that
    used it: one an older release left without the secrets and probe tables is brought to 5 the same way."""
    if backend.kind != "postgresql":
        pytest.skip("PostgreSQL only: SQLite has recorded its versions from the start")
    database = Database(backend)
    database.load_previous_release()
    database.execute("DROP TABLE secrets; DROP TABLE write_probe; ALTER TABLE call_logs DROP COLUMN state;")

    async def main() -> None:
        store = backend()
        try:
            await store.set_secret("acme", "erp_token", "a-new-token-123")
            assert await store.company_secrets("acme") == {"erp_token": "a-new-token-123"}
            await store.probe_write()
            assert {log["state"] for log in await store.logs("S1", 1000, company_id="acme")} == {"recorded"}
        finally:
            await store.close()

    asyncio.run(main())
    assert database.version() == LATEST


# -- several processes at once ------------------------------------------------------------------------------------

_OPEN_WHEN_TOLD = """
import logging, pathlib, sys, time
from webhook_dsl.storage.sqlite import SQLiteStore
logging.basicConfig(level=logging.INFO, format="%(message)s")
ready, go = pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
ready.touch()
while not go.exists():
    time.sleep(0.001)
SQLiteStore(sys.argv[1]).close_sync()
"""


def _open_at_once(factory: StoreFactory, tmp_path: Path, count: int = 4) -> list[str]:
    """Open the database from ``count`` stores at the same moment and return what they logged about it:
    SQLite in as many processes (released together once all have started), PostgreSQL from as many stores
    with their own connection pools."""
    if factory.kind == "postgresql":
        handler = _Collect()
        logger = logging.getLogger("webhook_dsl.storage")
        logger.addHandler(handler)
        previous = logger.level
        logger.setLevel(logging.INFO)

        async def main() -> None:
            stores = [factory() for _ in range(count)]
            try:
                await asyncio.gather(*(store.ping() for store in stores))
            finally:
                await asyncio.gather(*(store.close() for store in stores))

        try:
            asyncio.run(main())
        finally:
            logger.removeHandler(handler)
            logger.setLevel(previous)
        return [m for m in handler.messages if "schema" in m]
    go = tmp_path / "go"
    ready = [tmp_path / f"ready{i}" for i in range(count)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _OPEN_WHEN_TOLD, str(factory.path), str(r), str(go)],
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for r in ready
    ]
    try:
        deadline = time.monotonic() + 60
        while not all(r.exists() for r in ready) and time.monotonic() < deadline:
            time.sleep(0.01)
        go.touch()
        errors = [process.communicate(timeout=60)[1] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert [process.returncode for process in processes] == [0] * count, errors
    return [line for error in errors for line in error.splitlines() if "schema" in line]


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.slow
def test_stores_opening_a_new_database_at_once_create_it_once(backend: StoreFactory, tmp_path: Path) -> None:
    messages = _open_at_once(backend, tmp_path)
    assert len(messages) == 1 and messages[0].endswith(f"schema created at version {LATEST}"), messages
    assert Database(backend).version() == LATEST


@pytest.mark.slow
def test_stores_opening_a_database_of_the_previous_release_at_once_upgrade_it_once(
    backend: StoreFactory, tmp_path: Path
) -> None:
    database = Database(backend)
    database.load_previous_release()
    before = database.contents()
    messages = _open_at_once(backend, tmp_path)
    assert len(messages) == 1 and messages[0].endswith(f"upgraded from version 5 to version {LATEST}"), messages
    assert database.version() == LATEST and database.contents() == before


def test_both_backends_know_the_same_latest_version() -> None:
    pytest.importorskip("asyncpg")
    from webhook_dsl.storage import postgres

    assert postgres._SCHEMA_VERSION == sqlite_module._SCHEMA_VERSION == LATEST
