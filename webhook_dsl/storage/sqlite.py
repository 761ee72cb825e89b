"""The embedded default store: sessions, logs, keys and secrets in one SQLite file, no server.

Every client_data merge is one ``BEGIN IMMEDIATE`` transaction (read, merge, write), so concurrent
merges on one session, from threads or from several processes, lose no update. Writes that arrive
during one turn of the event loop are committed together in one transaction (group commit): each
caller still waits for its own commit, so nothing is acknowledged before it is stored, but 64
concurrent calls cost a few transactions, not 64. In WAL mode with ``synchronous=NORMAL`` a commit
appends to the WAL and does not wait for the disk, so the batch is written on the event loop's own
thread; the one thing that can make it wait, another process holding the write lock, sends that batch
to a worker thread instead, and WAL checkpoints (which do fsync) also run there. A new file, its WAL
and its shared-memory file are readable by their owner only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from .base import (
    _DONE,
    _STARTED,
    DEFAULT_MAX_CLIENT_DATA_BYTES,
    AmbiguousSession,
    ApiKey,
    ClientDataTooLarge,
    DashboardSession,
    LogSeq,
    SchemaTooNew,
    SecretInfo,
    SecretValues,
    Session,
    SessionNotFound,
    SessionSummary,
    StoreUnavailable,
    TriggerVersion,
    _checked_secret,
    _dumps,
    _dumps_sized,
    compact_json_size,
    log_view,
    merge_refused_warning,
    read_json,
)

log = logging.getLogger("webhook_dsl.storage")

__all__ = ["SQLiteStore"]

T = TypeVar("T")
#: A queued write: the work, the caller's future, the caller's event loop.
_PendingWrite = tuple[Callable[["sqlite3.Connection"], Any], "asyncio.Future[Any]", Any]

_SESSION_COLUMNS = "id, company_id, assistant_id, client_data, created_at, updated_at"

#: The schema this code reads and writes; ``PRAGMA user_version`` holds the database's (see ``_migrate``).
_SCHEMA_VERSION = 6

_SESSIONS = """
CREATE TABLE IF NOT EXISTS sessions (
    company_id TEXT NOT NULL DEFAULT '',
    id TEXT NOT NULL,
    assistant_id TEXT NOT NULL DEFAULT '',
    client_data TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (company_id, id)
);
CREATE INDEX IF NOT EXISTS sessions_by_id ON sessions (id);
CREATE INDEX IF NOT EXISTS sessions_by_company_updated ON sessions (company_id, updated_at);
"""
_CALL_LOGS_INDEX = "CREATE INDEX IF NOT EXISTS call_logs_by_company_session ON call_logs (company_id, session_id, seq);"
_API_KEYS = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash TEXT PRIMARY KEY,
    company_id TEXT NOT NULL,
    prefix TEXT NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS api_keys_by_company ON api_keys (company_id);
"""
_SECRETS = """
CREATE TABLE IF NOT EXISTS secrets (
    company_id TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (company_id, name)
) WITHOUT ROWID;
"""
_DASHBOARD_SESSIONS = """
CREATE TABLE IF NOT EXISTS dashboard_sessions (
    token_hash TEXT PRIMARY KEY,
    company_id TEXT NOT NULL,
    key_hash TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dashboard_sessions_by_key ON dashboard_sessions (key_hash);
"""
_WRITE_PROBE = "CREATE TABLE IF NOT EXISTS write_probe (id INTEGER PRIMARY KEY, at REAL NOT NULL);"

#: Version 5 as the release before versioned steps created it. A new database is created as this, then
#: taken forward by the same steps as an upgraded one, so the two cannot end up different.
_SCHEMA_5 = f"""
{_SESSIONS}
CREATE TABLE IF NOT EXISTS call_logs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    company_id TEXT NOT NULL DEFAULT '',
    session_id TEXT NOT NULL,
    at REAL NOT NULL,
    record TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'done'
);
{_CALL_LOGS_INDEX}
{_API_KEYS}
{_SECRETS}
{_DASHBOARD_SESSIONS}
{_WRITE_PROBE}
"""

#: Trigger versions (a company's uploads, numbered per name; ``seq`` orders them across all names and is the
#: revision replicas poll) and the index a purge of old log records walks.
_STEP_6 = """
CREATE TABLE IF NOT EXISTS trigger_versions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    company_id TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    digest TEXT NOT NULL,
    document TEXT,
    created_at REAL NOT NULL,
    UNIQUE (company_id, name, version)
);
CREATE INDEX IF NOT EXISTS call_logs_by_at ON call_logs (at);
"""


def _script(db: sqlite3.Connection, script: str) -> None:
    """Run ``;``-separated statements one by one: ``executescript`` would commit the open transaction."""
    for statement in script.split(";\n"):
        if statement.strip():
            db.execute(statement)


def _add_column(db: sqlite3.Connection, table: str, column: str) -> None:
    """``ALTER TABLE ... ADD COLUMN`` unless the table has that column already (SQLite has no IF NOT EXISTS)."""
    name = column.split()[0]
    if name not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
        db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")


def _tenancy(db: sqlite3.Connection) -> None:
    """Version 1 (``user_version`` 0) keyed sessions by id alone and its logs had no company; version 2 keys
    both by company (a session keeps the company it had) and adds API keys."""
    columns = db.execute("PRAGMA table_info(sessions)").fetchall()
    old = sum(1 for column in columns if column[5]) == 1  # PRIMARY KEY (id) alone
    if old:
        db.execute("ALTER TABLE sessions RENAME TO sessions_v1")
    db.execute("DROP INDEX IF EXISTS call_logs_by_session")
    _add_column(db, "call_logs", "company_id TEXT NOT NULL DEFAULT ''")
    _script(db, _SESSIONS + _CALL_LOGS_INDEX + _API_KEYS)
    if old:
        db.execute(f"INSERT INTO sessions ({_SESSION_COLUMNS}) SELECT {_SESSION_COLUMNS} FROM sessions_v1")
        db.execute(
            "UPDATE call_logs SET company_id = COALESCE((SELECT company_id FROM sessions "
            "WHERE sessions.id = call_logs.session_id), '')"
        )
        db.execute("DROP TABLE sessions_v1")


def _call_states(db: sqlite3.Connection) -> None:
    """Before version 5 every log record was written complete; now a call is begun, then completed."""
    _add_column(db, "call_logs", "state TEXT NOT NULL DEFAULT 'done'")
    _script(db, _WRITE_PROBE)


#: Each step takes a database of the version before it to its own; ``_migrate`` runs those a database lacks,
#: in order, each in one transaction with its version. The steps to 5 recreate what the releases before
#: versioned steps did. Every step is tolerant (a table, index or column already there is left alone).
_STEPS: tuple[tuple[int, Callable[[sqlite3.Connection], None]], ...] = (
    (2, _tenancy),
    (3, lambda db: _script(db, _SECRETS)),
    (4, lambda db: _script(db, _DASHBOARD_SESSIONS)),
    (5, _call_states),
    (6, lambda db: _script(db, _STEP_6)),
)


def _version(db: sqlite3.Connection) -> int:
    """The database's schema version: ``user_version``, except that version 1 never set it (0 with tables)."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version == 0 and db.execute("SELECT 1 FROM sqlite_master WHERE name = 'sessions'").fetchone() is not None:
        return 1
    return version


def _next_step(version: int) -> tuple[int, Callable[[sqlite3.Connection], None]]:
    """The step after ``version``; a new database (version 0) is created as version 5 in one step."""
    if version == 0:
        return 5, lambda db: _script(db, _SCHEMA_5)
    return next(step for step in _STEPS if step[0] > version)


def _migrate(db: sqlite3.Connection) -> int | None:
    """Bring the database to ``_SCHEMA_VERSION``, every missing step in one ``BEGIN IMMEDIATE`` transaction;
    return the version it had if this call changed it, else None. The version is read again under the write
    lock, so of several processes opening one database at once, one runs the steps and the others find them
    done, and nobody ever sees a half-made schema. ``SchemaTooNew`` for a database a newer release has
    written: nothing here knows what it holds."""
    while True:
        version = _version(db)
        if version > _SCHEMA_VERSION:
            raise SchemaTooNew(version, _SCHEMA_VERSION)
        if version == _SCHEMA_VERSION:
            return None
        db.execute("BEGIN IMMEDIATE")
        try:
            found = current = _version(db)
            while current < _SCHEMA_VERSION:
                current, step = _next_step(current)
                step(db)
            if current != found:
                db.execute(f"PRAGMA user_version = {current}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        if current != found:
            return found


class SQLiteStore:
    """Sessions and logs in one SQLite file (``":memory:"`` for a private in-memory store)."""

    kind = "sqlite"

    def __init__(
        self, path: str | Path = "webhooks.db", *, max_client_data_bytes: int = DEFAULT_MAX_CLIENT_DATA_BYTES
    ) -> None:
        self.path = str(path)
        self.max_client_data_bytes = max_client_data_bytes
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="webhook-dsl-sqlite")
        self._reopen_queued = False
        _create_private(self.path)
        self._connection = self._open(_BUSY_TIMEOUT_S)
        _enable_wal(self._connection)
        self._create_schema()
        self._pending: list[_PendingWrite] = []
        self._pending_lock = threading.Lock()
        self._flush_scheduled = False
        # The event loop's writer: never waits for a lock (timeout 0; a busy database sends the batch to the
        # worker thread) and never checkpoints (that fsyncs; the worker does it, see _after_loop_commit).
        # A private in-memory database exists only on its one connection, so there it is shared (under _lock).
        self._loop_writer = self._connection
        self._loop_writer_lock = self._lock
        self._commits_since_checkpoint = 0
        self._checkpoint_queued = False
        if self.path != ":memory:" and not self.path.startswith("file:"):
            self._loop_writer = self._open(0, checkpoints=False)
            self._loop_writer_lock = threading.Lock()
        # Reads of one session by primary key happen on every trigger call. With a file in WAL mode a
        # second, read-only connection serves them on the event loop itself (tens of microseconds,
        # never blocked by the writer), instead of queueing behind group commits on the worker thread.
        self._reader: sqlite3.Connection | None = None
        if self.path != ":memory:" and not self.path.startswith("file:"):
            self._reader = self._open(_BUSY_TIMEOUT_S, read_only=True)
        self._reader_lock = threading.Lock()

    def _open(self, timeout: float, *, checkpoints: bool = True, read_only: bool = False) -> sqlite3.Connection:
        """A connection as this store uses them. ``journal_size_limit`` makes SQLite cut the WAL file back
        after a checkpoint, so the disk space it holds stays near ``_WAL_LIMIT_BYTES``."""
        db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
        if read_only:
            db.execute("PRAGMA query_only=ON")
            return db
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT_BYTES}")
        if not checkpoints:
            db.execute("PRAGMA wal_autocheckpoint=0")
        return db

    def _create_schema(self) -> None:
        try:
            migrated_from = _migrate(self._connection)
        except BaseException:
            self._connection.close()
            self._executor.shutdown(wait=False)
            raise
        if migrated_from is not None:
            what = "created at" if migrated_from == 0 else f"upgraded from version {migrated_from} to"
            log.info("SQLite database %s: schema %s version %d", self.path, what, _SCHEMA_VERSION)

    # -- synchronous core (also used by the CLI) -------------------------------------

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            db = self._connection
            db.execute("BEGIN IMMEDIATE")
            try:
                result = work(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return result

    def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            return work(self._connection)

    def put_session_sync(
        self,
        session_id: str,
        *,
        company_id: str | None = None,
        assistant_id: str | None = None,
        client_data: Mapping[str, Any] | None = None,
    ) -> Session:
        """Create or update a session; client_data is merged (keys replace keys), never replaced."""
        limit = self._update_fits(session_id, client_data, company_id)
        return self._transaction(lambda db: _put(db, session_id, company_id, assistant_id, client_data, limit))

    def get_session_sync(self, session_id: str, *, company_id: str | None = None) -> Session:
        return self._read(lambda db: _find(db, session_id, company_id))

    def merge_client_data_sync(
        self, session_id: str, data: Mapping[str, Any], *, company_id: str | None = None
    ) -> Session:
        limit = self._update_fits(session_id, data, company_id)
        return self._transaction(lambda db: _merge(db, session_id, data, company_id, limit))

    def append_log_sync(self, session_id: str, record: Mapping[str, Any], *, company_id: str | None = None) -> int:
        return self._transaction(lambda db: _append_log(db, session_id, record, company_id))

    def logs_sync(self, session_id: str, limit: int = 100, *, company_id: str | None = None) -> list[dict[str, Any]]:
        return self._read(lambda db: _logs(db, session_id, limit, company_id))

    def list_sessions_sync(self, company_id: str, limit: int = 100, offset: int = 0) -> list[SessionSummary]:
        return self._read(lambda db: _list_sessions(db, company_id, limit, offset))

    def add_api_key_sync(self, company_id: str, key_hash: str, prefix: str, label: str = "") -> None:
        self._transaction(
            lambda db: db.execute(
                "INSERT INTO api_keys (key_hash, company_id, prefix, label, created_at) VALUES (?, ?, ?, ?, ?)",
                (key_hash, company_id, prefix, label, time.time()),
            )
        )

    def company_for_key_sync(self, key_hash: str) -> str | None:
        row = self._read(
            lambda db: db.execute("SELECT company_id FROM api_keys WHERE key_hash = ?", (key_hash,)).fetchone()
        )
        return None if row is None else str(row[0])

    def api_keys_sync(self, company_id: str) -> list[ApiKey]:
        rows = self._read(
            lambda db: db.execute(
                "SELECT company_id, prefix, label, created_at FROM api_keys WHERE company_id = ? ORDER BY created_at",
                (company_id,),
            ).fetchall()
        )
        return [ApiKey(*row) for row in rows]

    def revoke_api_key_sync(self, company_id: str, prefix: str) -> int:
        if not prefix:
            return 0
        return self._transaction(lambda db: _revoke_api_key(db, company_id, prefix))

    def set_secret_sync(self, company_id: str, name: str, value: str) -> None:
        _checked_secret(name, value)
        self._transaction(lambda db: _set_secret(db, company_id, name, value))

    def delete_secret_sync(self, company_id: str, name: str) -> bool:
        return self._transaction(lambda db: _delete_secret(db, company_id, name))

    def secret_names_sync(self, company_id: str) -> list[SecretInfo]:
        rows = self._read(
            lambda db: db.execute(
                "SELECT name, updated_at FROM secrets WHERE company_id = ? ORDER BY name", (company_id,)
            ).fetchall()
        )
        return [SecretInfo(*row) for row in rows]

    def company_secrets_sync(self, company_id: str) -> dict[str, str]:
        return self._read(lambda db: _company_secrets(db, company_id))

    def delete_session_sync(self, session_id: str, *, company_id: str) -> int:
        return self._transaction(lambda db: _delete_session(db, session_id, company_id))

    def purge_logs_sync(self, older_than: float, *, company_id: str | None = None) -> int:
        """Delete log records from before ``older_than``, a batch per transaction (see ``_purge_batch``)."""
        deleted, after = 0, -math.inf
        while True:
            batch = functools.partial(_purge_batch, older_than=older_than, company_id=company_id, after=after)
            gone, after = self._transaction(batch)
            deleted += gone
            if gone < _PURGE_BATCH:
                return deleted

    def close_sync(self) -> None:
        with self._loop_writer_lock:
            if self._loop_writer is not self._connection:
                self._loop_writer.close()
        with self._lock:
            self._connection.close()
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
        self._executor.shutdown(wait=True)

    def _update_fits(self, session_id: str, update: Mapping[str, Any] | None, company_id: str | None) -> int:
        """The limit, after refusing an update that alone passes it (the merge can only be larger): such
        an update is refused without reading the session."""
        limit = self.max_client_data_bytes
        if update:
            size = compact_json_size(update)
            if size > limit:
                raise ClientDataTooLarge(session_id, size, limit, company_id or "")
        return limit

    # -- the async Store interface ----------------------------------------------------

    async def _run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, lambda: function(*args, **kwargs))
        except sqlite3.OperationalError as error:
            raise self._unavailable(error) from error

    def _on_loop(self, read: Callable[[sqlite3.Connection], T]) -> T:
        """A read on the event loop's own read-only connection (tens of microseconds, never behind a write)."""
        assert self._reader is not None
        try:
            with self._reader_lock:
                return read(self._reader)
        except sqlite3.OperationalError as error:
            raise self._unavailable(error) from error

    def _unavailable(self, error: sqlite3.OperationalError) -> StoreUnavailable:
        """The outage an operational error is (disk full, read-only file, I/O error, a lock held too long).
        A read-only refusal also reopens the connections: SQLite opens a file it cannot write read-only
        and keeps it so, and the permission may have come back."""
        if _error_code(error) == sqlite3.SQLITE_READONLY and not self._reopen_queued:
            self._reopen_queued = True
            self._executor.submit(self._reopen)
        return StoreUnavailable(f"the SQLite database {self.path} cannot be used now: {error}")

    def _reopen(self) -> None:
        """Worker thread: open every connection again (after a read-only refusal), each under its lock."""
        try:
            with self._lock:
                if self._loop_writer is self._connection:
                    with self._loop_writer_lock:
                        self._connection.close()
                        self._connection = self._loop_writer = self._open(_BUSY_TIMEOUT_S)
                else:
                    self._connection.close()
                    self._connection = self._open(_BUSY_TIMEOUT_S)
                    with self._loop_writer_lock:
                        self._loop_writer.close()
                        self._loop_writer = self._open(0, checkpoints=False)
            if self._reader is not None:
                with self._reader_lock:
                    self._reader.close()
                    self._reader = self._open(_BUSY_TIMEOUT_S, read_only=True)
        except sqlite3.Error as error:
            log.warning("reopening the SQLite database %s failed: %s", self.path, error)
        finally:
            self._reopen_queued = False

    def _write(self, work: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue a write; it commits with every other write queued in this turn of the loop (group commit).
        A plain function returning the future: one coroutine frame less per write."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._pending_lock:
            self._pending.append((work, future, loop))
            schedule = not self._flush_scheduled
            self._flush_scheduled = True
        if schedule:
            loop.call_soon(self._flush_on_loop)
        return future

    def _flush_on_loop(self) -> None:
        """Event loop: commit the queued writes here unless the database is busy; then the worker waits for it."""
        with self._pending_lock:
            batch, self._pending = self._pending, []
            self._flush_scheduled = False
        if not batch:
            return
        outcomes = None
        if self._loop_writer_lock.acquire(blocking=False):
            try:
                outcomes = _commit_batch(self._loop_writer, batch, wait=False)
            finally:
                self._loop_writer_lock.release()
        if outcomes is None:  # locked by another process or thread: never block the loop on it
            self._executor.submit(self._flush_in_worker, batch)
            return
        for (_work, future, _loop), (ok, value) in zip(batch, outcomes, strict=True):
            _settle(future, ok, self._translated(value))
        self._after_loop_commit()

    def _translated(self, value: Any) -> Any:
        """A write's outcome, an operational error turned into the outage it is (see ``_unavailable``)."""
        if isinstance(value, sqlite3.OperationalError):
            error = self._unavailable(value)
            error.__cause__ = value
            return error
        return value

    def _after_loop_commit(self) -> None:
        """Checkpoint the WAL on the worker thread every so often (the loop's writer never does)."""
        self._commits_since_checkpoint += 1
        if self._loop_writer is self._connection or self._checkpoint_queued:
            return
        if self._commits_since_checkpoint >= _CHECKPOINT_EVERY:
            self._commits_since_checkpoint = 0
            self._checkpoint_queued = True
            self._executor.submit(self._checkpoint)

    def _checkpoint(self) -> None:
        """Copy the WAL into the database, and truncate it once it is long.

        A passive checkpoint never finishes while writes keep coming, and SQLite only starts the WAL
        over after one that did: under steady load the file grew without end. So past
        ``_WAL_TRUNCATE_FRAMES`` a TRUNCATE checkpoint follows. It holds the write lock while it waits
        for readers, so it waits at most ``_TRUNCATE_WAIT_MS`` (writes meanwhile queue on this thread;
        the loop never waits) and is simply tried again next time if a long reader is in the way.
        """
        try:
            with self._lock, contextlib.suppress(sqlite3.Error):
                db = self._connection
                _busy, frames, _done = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if frames >= _WAL_TRUNCATE_FRAMES:
                    db.execute(f"PRAGMA busy_timeout = {_TRUNCATE_WAIT_MS}")
                    try:
                        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                    finally:
                        db.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
        finally:
            self._checkpoint_queued = False

    def _flush_in_worker(self, batch: list[_PendingWrite]) -> None:
        """Worker thread: the same batch, waiting as long as the connection's timeout for the lock."""
        with self._lock:
            outcomes = _commit_batch(self._connection, batch, wait=True)
        assert outcomes is not None
        for (_work, future, loop), (ok, value) in zip(batch, outcomes, strict=True):
            loop.call_soon_threadsafe(_settle, future, ok, self._translated(value))

    async def put_session(
        self,
        session_id: str,
        *,
        company_id: str | None = None,
        assistant_id: str | None = None,
        client_data: Mapping[str, Any] | None = None,
    ) -> Session:
        limit = self._update_fits(session_id, client_data, company_id)
        return await self._write(lambda db: _put(db, session_id, company_id, assistant_id, client_data, limit))

    async def get_session(self, session_id: str, *, company_id: str | None = None) -> Session:
        if self._reader is None:
            return await self._run(self.get_session_sync, session_id, company_id=company_id)
        return self._on_loop(lambda db: _find(db, session_id, company_id))

    async def merge_client_data(
        self, session_id: str, data: Mapping[str, Any], *, company_id: str | None = None
    ) -> Session:
        limit = self._update_fits(session_id, data, company_id)
        return await self._write(lambda db: _merge(db, session_id, data, company_id, limit))

    async def append_log(self, session_id: str, record: Mapping[str, Any], *, company_id: str | None = None) -> int:
        return await self._write(lambda db: _append_log(db, session_id, record, company_id))

    async def begin_call(self, session_id: str, intent: Mapping[str, Any], *, company_id: str) -> int:
        return await self._write(lambda db: _append_log(db, session_id, intent, company_id, _STARTED))

    async def finish_call(
        self,
        session_id: str,
        client_data_update: Mapping[str, Any],
        record: Mapping[str, Any],
        *,
        company_id: str | None = None,
        call_seq: int | None = None,
    ) -> int:
        limit = self.max_client_data_bytes

        def work(db: sqlite3.Connection) -> LogSeq:
            if call_seq is not None and not _complete_begun(db, call_seq, record):
                return LogSeq(call_seq)  # completed already: a completion is applied once
            company = company_id
            kept, warning = record, None
            try:
                merged = company is not None and _merge_in_place(db, session_id, client_data_update, company, limit)
                if client_data_update and not merged:
                    company = _merge(db, session_id, client_data_update, company_id, limit).company_id
            except ClientDataTooLarge as error:  # nothing was merged; the call is logged, saying so
                warning = merge_refused_warning(error)
                kept, company = _refused(record, warning), error.company_id
                if call_seq is not None:
                    _complete(db, call_seq, kept)
            if call_seq is None:
                return LogSeq(_append_log(db, session_id, kept, company), warning)
            return LogSeq(call_seq, warning)

        return await self._write(work)

    async def logs(self, session_id: str, limit: int = 100, *, company_id: str | None = None) -> list[dict[str, Any]]:
        return await self._run(self.logs_sync, session_id, limit, company_id=company_id)

    async def list_sessions(self, company_id: str, limit: int = 100, offset: int = 0) -> list[SessionSummary]:
        return await self._run(self.list_sessions_sync, company_id, limit, offset)

    async def add_api_key(self, company_id: str, key_hash: str, prefix: str, label: str = "") -> None:
        await self._run(self.add_api_key_sync, company_id, key_hash, prefix, label)

    async def company_for_key(self, key_hash: str) -> str | None:
        return await self._run(self.company_for_key_sync, key_hash)

    async def api_keys(self, company_id: str) -> list[ApiKey]:
        return await self._run(self.api_keys_sync, company_id)

    async def revoke_api_key(self, company_id: str, prefix: str) -> int:
        return await self._run(self.revoke_api_key_sync, company_id, prefix)

    async def add_dashboard_session(self, token_hash: str, company_id: str, key_hash: str, expires_at: float) -> None:
        await self._write(lambda db: _add_dashboard_session(db, token_hash, company_id, key_hash, expires_at))

    async def dashboard_session(self, token_hash: str) -> DashboardSession | None:
        if self._reader is None:
            return await self._run(lambda: self._read(lambda db: _dashboard_session(db, token_hash)))
        return self._on_loop(lambda db: _dashboard_session(db, token_hash))

    async def delete_dashboard_session(self, token_hash: str) -> None:
        await self._write(lambda db: db.execute("DELETE FROM dashboard_sessions WHERE token_hash = ?", (token_hash,)))

    async def set_secret(self, company_id: str, name: str, value: str) -> None:
        _checked_secret(name, value)
        await self._write(lambda db: _set_secret(db, company_id, name, value))

    async def delete_secret(self, company_id: str, name: str) -> bool:
        return await self._write(lambda db: _delete_secret(db, company_id, name))

    async def secret_names(self, company_id: str) -> list[SecretInfo]:
        return await self._run(self.secret_names_sync, company_id)

    async def company_secrets(self, company_id: str) -> dict[str, str]:
        # On every call of a trigger that uses $secrets: read on the loop, as get_session does.
        if self._reader is None:
            return await self._run(self.company_secrets_sync, company_id)
        return self._on_loop(lambda db: _company_secrets(db, company_id))

    async def delete_session(self, session_id: str, *, company_id: str) -> int:
        # On the worker thread: a session with many log records is not deleted on the event loop.
        return await self._run(self.delete_session_sync, session_id, company_id=company_id)

    async def purge_logs(self, older_than: float, *, company_id: str | None = None) -> int:
        # Batch by batch on the worker thread; the loop's writes commit between two batches.
        deleted, after = 0, -math.inf
        while True:
            batch = functools.partial(_purge_batch, older_than=older_than, company_id=company_id, after=after)
            done: tuple[int, float] = await self._run(self._transaction, batch)
            gone, after = done
            deleted += gone
            if gone < _PURGE_BATCH:
                return deleted

    async def put_trigger_version(
        self, company_id: str, name: str, document: str | None, digest: str
    ) -> TriggerVersion:
        return await self._write(lambda db: _put_trigger_version(db, company_id, name, document, digest))

    async def trigger_versions(self, company_id: str, name: str) -> list[TriggerVersion]:
        return await self._run(lambda: self._read(lambda db: _trigger_versions(db, company_id, name)))

    async def current_triggers(self) -> list[TriggerVersion]:
        return await self._run(lambda: self._read(_current_triggers))

    async def triggers_revision(self) -> int:
        # Polled by every replica: one read of the largest rowid, on the loop like get_session.
        if self._reader is None:
            return await self._run(lambda: self._read(_triggers_revision))
        return self._on_loop(_triggers_revision)

    async def ping(self) -> None:
        await self._run(lambda: self._read(lambda db: db.execute("SELECT 1").fetchone()))

    async def probe_write(self) -> None:
        await self._write(
            lambda db: db.execute("INSERT OR REPLACE INTO write_probe (id, at) VALUES (1, ?)", (time.time(),))
        )

    async def close(self) -> None:
        await self._run(lambda: None)
        self.close_sync()


def _create_private(path: str) -> None:
    """Create a new database file readable by its owner only, before SQLite opens it.

    It holds every tenant's client_data and secrets. SQLite gives the WAL and shared-memory files it
    creates the database file's permissions, so they are private too. A file that exists is left as it
    is (its owner chose); so is an in-memory or URI database. Creating the file ourselves, instead of
    changing the process-wide umask or chmod-ing afterwards, leaves no moment at which it is readable.
    """
    if path in ("", ":memory:") or path.startswith("file:"):
        return
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError:
        return  # a directory that does not exist, no permission...: sqlite3.connect says so in its own words
    os.close(descriptor)


def _set_secret(db: sqlite3.Connection, company_id: str, name: str, value: str) -> None:
    db.execute(
        "INSERT INTO secrets (company_id, name, value, updated_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (company_id, name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        (company_id, name, value, time.time()),
    )


def _delete_secret(db: sqlite3.Connection, company_id: str, name: str) -> bool:
    cursor = db.execute("DELETE FROM secrets WHERE company_id = ? AND name = ?", (company_id, name))
    return cursor.rowcount > 0


def _company_secrets(db: sqlite3.Connection, company_id: str) -> dict[str, str]:
    rows = db.execute("SELECT name, value FROM secrets WHERE company_id = ?", (company_id,)).fetchall()
    return SecretValues(rows)


#: The loop's writer leaves checkpoints to the worker thread: one every this many group commits.
_CHECKPOINT_EVERY = 50
#: Past this many WAL frames (4 MiB of 4 KiB pages) a checkpoint also truncates the WAL file.
_WAL_TRUNCATE_FRAMES = 1024
#: The WAL file is cut back to this size after each checkpoint (``PRAGMA journal_size_limit``).
_WAL_LIMIT_BYTES = 4 * 1024 * 1024
_TRUNCATE_WAIT_MS = 200
_BUSY_TIMEOUT_S = 30.0  # how long the worker's connection waits for another process's lock


def _error_code(error: sqlite3.Error) -> int | None:
    """SQLite's primary result code of an error (SQLITE_FULL, SQLITE_READONLY...), or None if unknown."""
    code = getattr(error, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def _is_busy(error: sqlite3.OperationalError) -> bool:
    code = _error_code(error)
    if code is not None:
        return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(error) or "busy" in str(error)


def _enable_wal(db: sqlite3.Connection) -> None:
    """Put the database in WAL mode. Switching needs a moment alone with the file, and SQLite answers "database
    is locked" at once, without its busy handler, while another process holds it (several workers opening a
    new database together): so the switch is tried again until the busy timeout has passed."""
    deadline = time.monotonic() + _BUSY_TIMEOUT_S
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if not _is_busy(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _commit_batch(db: sqlite3.Connection, batch: list[_PendingWrite], *, wait: bool) -> list[tuple[bool, Any]] | None:
    """Run every write of the batch in one transaction; one write's failure fails only its caller.

    Returns None, having changed nothing, when the lock is taken and *wait* is false. The writes run
    first without savepoints (two statements fewer each). If one raises, the transaction is rolled
    back and the batch runs again with a savepoint around each write: writes are database work only,
    so running one twice is safe.
    """
    if len(batch) == 1:  # a lone write's failure is its transaction's: nothing else to keep, no savepoint
        return _run_batch(db, batch, wait=wait, savepoints=False)
    outcomes = _run_batch(db, batch, wait=wait, savepoints=False)
    if outcomes is None or all(ok for ok, _ in outcomes):
        return outcomes
    return _run_batch(db, batch, wait=wait, savepoints=True)


def _run_batch(
    db: sqlite3.Connection, batch: list[_PendingWrite], *, wait: bool, savepoints: bool
) -> list[tuple[bool, Any]] | None:
    outcomes: list[tuple[bool, Any]] = []
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as error:
        if not wait and _is_busy(error):
            return None
        return [(False, error)] * len(batch)
    try:
        for work, _future, _loop in batch:
            if not savepoints:
                try:
                    outcomes.append((True, work(db)))
                except Exception as error:
                    if db.in_transaction:  # SQLite rolls back by itself on a full disk or an I/O error
                        db.execute("ROLLBACK")  # and the caller runs the batch again, with savepoints
                    return [(False, error)]
                continue
            db.execute("SAVEPOINT one_write")
            try:
                outcomes.append((True, work(db)))
                db.execute("RELEASE one_write")
            except Exception as error:  # handed to that caller; the others go on
                if not db.in_transaction:  # SQLite rolled the whole transaction back (a full disk, an I/O error)
                    return [(False, error)] * len(batch)
                db.execute("ROLLBACK TO one_write")
                db.execute("RELEASE one_write")
                outcomes.append((False, error))
        db.execute("COMMIT")
    except sqlite3.OperationalError as error:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        if not wait and _is_busy(error):
            return None  # rolled back: the worker runs the whole batch again
        return [(False, error)] * len(batch)
    except Exception as error:  # the whole batch failed to commit
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        return [(False, error)] * len(batch)
    return outcomes


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.cancelled():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _session(row: tuple[Any, ...]) -> Session:
    return Session(row[0], row[1], row[2], read_json(row[3]), row[4], row[5])


def _lookup(db: sqlite3.Connection, session_id: str, company_id: str | None) -> Session | None:
    """The session, or None; without a company, the one session with this id (ambiguous if several)."""
    if company_id is not None:
        row = db.execute(
            f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE company_id = ? AND id = ?", (company_id, session_id)
        ).fetchone()
        return None if row is None else _session(row)
    rows = db.execute(f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = ? LIMIT 50", (session_id,)).fetchall()
    if len(rows) > 1:
        raise AmbiguousSession(session_id, [_session(row).company_id for row in rows])
    return _session(rows[0]) if rows else None


def _find(db: sqlite3.Connection, session_id: str, company_id: str | None) -> Session:
    session = _lookup(db, session_id, company_id)
    if session is None:
        raise SessionNotFound(session_id)
    return session


def _put(
    db: sqlite3.Connection,
    session_id: str,
    company_id: str | None,
    assistant_id: str | None,
    client_data: Mapping[str, Any] | None,
    limit: int,
) -> Session:
    now = time.time()
    session = _lookup(db, session_id, company_id)
    if session is None:
        created = Session(session_id, company_id or "", assistant_id or "", dict(client_data or {}), now, now)
        text, size = _dumps_sized(created.client_data)
        if size > limit:
            raise ClientDataTooLarge(session_id, size, limit, created.company_id)
        db.execute(
            f"INSERT INTO sessions ({_SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            (session_id, created.company_id, created.assistant_id, text, now, now),
        )
        return created
    merged = dict(session.client_data)
    merged.update(client_data or {})
    text, size = _dumps_sized(merged)
    if size > limit and client_data:  # a PUT that changes no client_data may still set assistant_id
        raise ClientDataTooLarge(session_id, size, limit, session.company_id)
    assistant = assistant_id if assistant_id is not None else session.assistant_id
    db.execute(
        "UPDATE sessions SET assistant_id = ?, client_data = ?, updated_at = ? WHERE company_id = ? AND id = ?",
        (assistant, text, now, session.company_id, session_id),
    )
    return Session(session_id, session.company_id, assistant, merged, session.created_at, now)


def _merge(
    db: sqlite3.Connection, session_id: str, data: Mapping[str, Any], company_id: str | None, limit: int
) -> Session:
    session = _find(db, session_id, company_id)
    merged = dict(session.client_data)
    merged.update(data)
    text, size = _dumps_sized(merged)
    if size > limit:
        raise ClientDataTooLarge(session_id, size, limit, session.company_id)
    now = time.time()
    db.execute(
        "UPDATE sessions SET client_data = ?, updated_at = ? WHERE company_id = ? AND id = ?",
        (text, now, session.company_id, session_id),
    )
    return Session(session.id, session.company_id, session.assistant_id, merged, session.created_at, now)


#: Keys SQLite's JSON path can name when quoted (``$."key"``): it has no escape for '"'.
_PATH_KEY = re.compile(r'[^"\\\x00-\x1f]+')


def _merge_in_place(
    db: sqlite3.Connection, session_id: str, data: Mapping[str, Any], company_id: str, limit: int
) -> bool:
    """Merge by one UPDATE with ``json_set`` (no read, no decoding of the session's whole client_data);
    False, having done nothing, when a key cannot be written as a JSON path: then ``_merge`` does it.

    The limit is part of the UPDATE's WHERE, so it holds inside the write's transaction. The common case
    costs one length: the stored text plus every new member (key, value, quotes, colon, comma) is an
    upper bound of the merged text; only a session near the limit has the merged text measured.
    """
    if not data:
        return True
    if not all(_PATH_KEY.fullmatch(key) for key in data):
        return False
    arguments: list[Any] = []
    bound = 0
    for key, value in data.items():
        text, size = _dumps_sized(value)
        arguments += (f'$."{key}"', text)
        bound += len(key.encode("utf-8")) + size + 4
    update, measure = _merge_statements(len(data))
    try:
        cursor = db.execute(update, (*arguments, time.time(), company_id, session_id, limit - bound, limit))
    except sqlite3.OperationalError:  # text SQLite's JSON does not read (NaN, written by the stdlib): Python merges
        return False
    if cursor.rowcount == 0:
        row = db.execute(measure, (*arguments, company_id, session_id)).fetchone()
        if row is None:
            raise SessionNotFound(session_id)
        raise ClientDataTooLarge(session_id, int(row[0]), limit, company_id)
    return True


@functools.lru_cache(maxsize=64)
def _merge_statements(keys: int) -> tuple[str, str]:
    """The in-place merge of ``keys`` keys, and the measure of its result for a refusal's message. Parameters
    are numbered (``?1``...) so that the UPDATE names the merge twice but binds its values once: path and
    value pairs, then time, company, session, the bound's room and the limit."""
    merged = "json_set(client_data" + "".join(f", ?{2 * i + 1}, json(?{2 * i + 2})" for i in range(keys)) + ")"
    n = 2 * keys
    update = (
        f"UPDATE sessions SET client_data = {merged}, updated_at = ?{n + 1} WHERE company_id = ?{n + 2} "
        f"AND id = ?{n + 3} AND (length(CAST(client_data AS BLOB)) <= ?{n + 4} "
        f"OR length(CAST({merged} AS BLOB)) <= ?{n + 5})"
    )
    measure = f"SELECT length(CAST({merged} AS BLOB)) FROM sessions WHERE company_id = ?{n + 1} AND id = ?{n + 2}"
    return update, measure


def _refused(record: Mapping[str, Any], warning: str) -> dict[str, Any]:
    """A call's log record when its merge was refused: nothing merged, and the warning with the others."""
    return {**record, "client_data_merged": {}, "warnings": [*(record.get("warnings") or ()), warning]}


def _revoke_api_key(db: sqlite3.Connection, company_id: str, prefix: str) -> int:
    db.execute(
        "DELETE FROM dashboard_sessions WHERE key_hash IN "
        "(SELECT key_hash FROM api_keys WHERE company_id = ? AND substr(prefix, 1, ?) = ?)",
        (company_id, len(prefix), prefix),
    )
    cursor = db.execute(
        "DELETE FROM api_keys WHERE company_id = ? AND substr(prefix, 1, ?) = ?", (company_id, len(prefix), prefix)
    )
    return int(cursor.rowcount)


def _add_dashboard_session(
    db: sqlite3.Connection, token_hash: str, company_id: str, key_hash: str, expires_at: float
) -> None:
    now = time.time()
    db.execute("DELETE FROM dashboard_sessions WHERE expires_at <= ?", (now,))
    db.execute(
        "INSERT INTO dashboard_sessions (token_hash, company_id, key_hash, created_at, expires_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (token_hash, company_id, key_hash, now, expires_at),
    )


def _dashboard_session(db: sqlite3.Connection, token_hash: str) -> DashboardSession | None:
    row = db.execute(
        "SELECT company_id, key_hash, expires_at FROM dashboard_sessions WHERE token_hash = ? AND expires_at > ?",
        (token_hash, time.time()),
    ).fetchone()
    return None if row is None else DashboardSession(*row)


def _append_log(
    db: sqlite3.Connection,
    session_id: str,
    record: Mapping[str, Any],
    company_id: str | None,
    state: str = _DONE,
) -> int:
    if company_id is None:
        session = _lookup(db, session_id, None)
        company_id = session.company_id if session is not None else ""
    cursor = db.execute(
        "INSERT INTO call_logs (company_id, session_id, at, record, state) VALUES (?, ?, ?, ?, ?)",
        (company_id, session_id, float(record.get("at", time.time())), _dumps(record), state),
    )
    return int(cursor.lastrowid or 0)


def _complete_begun(db: sqlite3.Connection, seq: int, record: Mapping[str, Any]) -> bool:
    """Complete the call ``seq`` with ``record`` if it is begun and not yet completed; False otherwise (a
    completion applied already). One statement: the check is the update's own condition."""
    cursor = db.execute(
        "UPDATE call_logs SET record = ?, state = ? WHERE seq = ? AND state = ?", (_dumps(record), _DONE, seq, _STARTED)
    )
    return cursor.rowcount == 1


def _complete(db: sqlite3.Connection, seq: int, record: Mapping[str, Any]) -> None:
    db.execute("UPDATE call_logs SET record = ?, state = ? WHERE seq = ?", (_dumps(record), _DONE, seq))


def _logs(db: sqlite3.Connection, session_id: str, limit: int, company_id: str | None) -> list[dict[str, Any]]:
    where = "company_id = ? AND session_id = ?" if company_id is not None else "session_id = ?"
    params: tuple[str, ...] = (company_id, session_id) if company_id is not None else (session_id,)
    rows = db.execute(
        f"SELECT seq, record, state FROM (SELECT seq, record, state FROM call_logs WHERE {where} "
        "ORDER BY seq DESC LIMIT ?) ORDER BY seq",
        (*params, limit),
    ).fetchall()
    now = time.time()
    return [log_view(seq, read_json(record), state, now) for seq, record, state in rows]


def _list_sessions(db: sqlite3.Connection, company_id: str, limit: int, offset: int) -> list[SessionSummary]:
    rows = db.execute(
        "SELECT s.id, s.assistant_id, s.created_at, s.updated_at, "
        "(SELECT COUNT(*) FROM call_logs c WHERE c.company_id = s.company_id AND c.session_id = s.id), "
        "(SELECT MAX(c.at) FROM call_logs c WHERE c.company_id = s.company_id AND c.session_id = s.id) "
        "FROM sessions s WHERE s.company_id = ? ORDER BY s.updated_at DESC, s.id LIMIT ? OFFSET ?",
        (company_id, limit, offset),
    ).fetchall()
    return [SessionSummary(*row) for row in rows]


def _delete_session(db: sqlite3.Connection, session_id: str, company_id: str) -> int:
    if db.execute("DELETE FROM sessions WHERE company_id = ? AND id = ?", (company_id, session_id)).rowcount == 0:
        raise SessionNotFound(session_id)
    cursor = db.execute("DELETE FROM call_logs WHERE company_id = ? AND session_id = ?", (company_id, session_id))
    return int(cursor.rowcount)


#: Log records deleted per transaction by a purge. SQLite's write lock is the whole database's, so a batch is
#: kept small: a write that arrives meanwhile waits for one batch, and a commit in WAL mode costs little.
_PURGE_BATCH = 1000
#: A batch is the oldest records from ``after`` on, by the ``at`` index (named: with a company the planner
#: would otherwise take the company's index and sort all its records for every batch).
_PURGE_SELECT = (
    "SELECT seq, at FROM call_logs INDEXED BY call_logs_by_at WHERE at >= ? AND at < ?{company} ORDER BY at LIMIT ?"
)


def _purge_batch(db: sqlite3.Connection, older_than: float, company_id: str | None, after: float) -> tuple[int, float]:
    """Delete one batch of records from before ``older_than``: how many, and where the next batch starts.
    Records before ``after`` were looked at already (another company's stay): starting there, a purge of one
    company reads each record of the others once, not once per batch."""
    if company_id is None:
        rows = db.execute(_PURGE_SELECT.format(company=""), (after, older_than, _PURGE_BATCH)).fetchall()
    else:
        query = _PURGE_SELECT.format(company=" AND company_id = ?")
        rows = db.execute(query, (after, older_than, company_id, _PURGE_BATCH)).fetchall()
    db.executemany("DELETE FROM call_logs WHERE seq = ?", [(seq,) for seq, _at in rows])
    return len(rows), rows[-1][1] if rows else after


def _put_trigger_version(
    db: sqlite3.Connection, company_id: str, name: str, document: str | None, digest: str
) -> TriggerVersion:
    """Inside the write transaction, which no other connection can hold at once: max + 1 is the next number."""
    (version,) = db.execute(
        "SELECT COALESCE(MAX(version), 0) + 1 FROM trigger_versions WHERE company_id = ? AND name = ?",
        (company_id, name),
    ).fetchone()
    now = time.time()
    db.execute(
        "INSERT INTO trigger_versions (company_id, name, version, digest, document, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (company_id, name, version, digest, document, now),
    )
    return TriggerVersion(company_id, name, int(version), digest, document, now)


_VERSION_COLUMNS = "company_id, name, version, digest, document, created_at"


def _trigger_versions(db: sqlite3.Connection, company_id: str, name: str) -> list[TriggerVersion]:
    rows = db.execute(
        f"SELECT {_VERSION_COLUMNS} FROM trigger_versions WHERE company_id = ? AND name = ? ORDER BY version DESC",
        (company_id, name),
    ).fetchall()
    return [TriggerVersion(*row) for row in rows]


def _current_triggers(db: sqlite3.Connection) -> list[TriggerVersion]:
    rows = db.execute(
        f"SELECT {_VERSION_COLUMNS} FROM trigger_versions JOIN (SELECT company_id, name, MAX(version) AS version "
        "FROM trigger_versions GROUP BY company_id, name) USING (company_id, name, version) "
        "WHERE document IS NOT NULL ORDER BY company_id, name"
    ).fetchall()
    return [TriggerVersion(*row) for row in rows]


def _triggers_revision(db: sqlite3.Connection) -> int:
    """The newest version's ``seq``: a rowid, so its maximum is read from the table's b-tree end, not scanned.
    Writers commit one at a time, so a reader that saw seq N has seen every version before it."""
    return int(db.execute("SELECT COALESCE(MAX(seq), 0) FROM trigger_versions").fetchone()[0])
