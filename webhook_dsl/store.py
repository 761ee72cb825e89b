"""Keeps sessions (their client_data) and their call logs; SQLite by default.

``Store`` is the small interface a backend implements. ``SQLiteStore`` is the
embedded default: one file, no server. Every client_data merge is one
``BEGIN IMMEDIATE`` transaction (read, merge, write), so concurrent merges on one
session, from threads or from several processes, lose no update. Blocking
SQLite calls run on one worker thread so the event loop never waits on disk, and
writes that arrive while one is in progress are committed together (group
commit): each caller still waits for its own commit, so nothing is acknowledged
before it is stored, but 64 concurrent calls cost a few transactions, not 64.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

__all__ = ["Session", "SQLiteStore", "Store", "SessionNotFound"]

T = TypeVar("T")


class SessionNotFound(LookupError):
    """No session with that id."""


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    company_id: str
    assistant_id: str
    client_data: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "company_id": self.company_id,
            "assistant_id": self.assistant_id,
            "client_data": self.client_data,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


class Store(Protocol):
    """What the runtime needs from storage. All methods are coroutines."""

    async def put_session(
        self,
        session_id: str,
        *,
        company_id: str | None = None,
        assistant_id: str | None = None,
        client_data: Mapping[str, Any] | None = None,
    ) -> Session: ...

    async def get_session(self, session_id: str) -> Session: ...

    async def merge_client_data(self, session_id: str, data: Mapping[str, Any]) -> Session: ...

    async def append_log(self, session_id: str, record: Mapping[str, Any]) -> int: ...

    async def finish_call(
        self, session_id: str, client_data_update: Mapping[str, Any], record: Mapping[str, Any]
    ) -> int:
        """Merge a response's client_data and append the call's log record, atomically; return the log seq."""
        ...

    async def logs(self, session_id: str, limit: int = 100) -> list[dict[str, Any]]: ...

    async def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    company_id TEXT NOT NULL DEFAULT '',
    assistant_id TEXT NOT NULL DEFAULT '',
    client_data TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS call_logs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    at REAL NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS call_logs_by_session ON call_logs (session_id, seq);
"""


class SQLiteStore:
    """Sessions and logs in one SQLite file (``":memory:"`` for a private in-memory store)."""

    def __init__(self, path: str | Path = "webhooks.db") -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="webhook-dsl-sqlite")
        self._connection = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=NORMAL")
        self._connection.executescript(_SCHEMA)
        self._pending: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any], Any]] = []
        self._pending_lock = threading.Lock()
        self._flushing = False

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

    def put_session_sync(
        self,
        session_id: str,
        *,
        company_id: str | None = None,
        assistant_id: str | None = None,
        client_data: Mapping[str, Any] | None = None,
    ) -> Session:
        """Create or update a session; client_data is merged (keys replace keys), never replaced."""
        return self._transaction(lambda db: _put(db, session_id, company_id, assistant_id, client_data))

    def get_session_sync(self, session_id: str) -> Session:
        with self._lock:
            row = self._connection.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return _row(row, session_id)

    def merge_client_data_sync(self, session_id: str, data: Mapping[str, Any]) -> Session:
        return self._transaction(lambda db: _merge(db, session_id, data))

    def append_log_sync(self, session_id: str, record: Mapping[str, Any]) -> int:
        return self._transaction(lambda db: _append_log(db, session_id, record))

    def logs_sync(self, session_id: str, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._connection.execute(
                "SELECT seq, record FROM (SELECT seq, record FROM call_logs WHERE session_id = ? "
                "ORDER BY seq DESC LIMIT ?) ORDER BY seq",
                (session_id, limit),
            ).fetchall()
        return [{"seq": seq, **json.loads(record)} for seq, record in rows]

    def close_sync(self) -> None:
        with self._lock:
            self._connection.close()
        self._executor.shutdown(wait=True)

    # -- the async Store interface ----------------------------------------------------

    async def _run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: function(*args, **kwargs))

    async def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Queue a write; it commits with whatever other writes are waiting (group commit)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._pending_lock:
            self._pending.append((work, future, loop))
            start = not self._flushing
            self._flushing = True
        if start:
            self._executor.submit(self._flush)
        return await future

    def _flush(self) -> None:
        """Worker thread: commit every queued write in one transaction, each in its own savepoint."""
        while True:
            with self._pending_lock:
                batch, self._pending = self._pending, []
                if not batch:
                    self._flushing = False
                    return
            outcomes: list[tuple[bool, Any]] = []
            try:
                with self._lock:
                    db = self._connection
                    db.execute("BEGIN IMMEDIATE")
                    for work, _future, _loop in batch:
                        db.execute("SAVEPOINT one_write")
                        try:
                            outcomes.append((True, work(db)))
                            db.execute("RELEASE one_write")
                        except Exception as error:  # handed to that caller; the others go on
                            db.execute("ROLLBACK TO one_write")
                            db.execute("RELEASE one_write")
                            outcomes.append((False, error))
                    db.execute("COMMIT")
            except Exception as error:  # the whole batch failed to commit
                with contextlib.suppress(sqlite3.Error):
                    self._connection.execute("ROLLBACK")
                outcomes = [(False, error)] * len(batch)
            for (_work, future, loop), (ok, value) in zip(batch, outcomes, strict=True):
                loop.call_soon_threadsafe(_settle, future, ok, value)

    async def put_session(
        self,
        session_id: str,
        *,
        company_id: str | None = None,
        assistant_id: str | None = None,
        client_data: Mapping[str, Any] | None = None,
    ) -> Session:
        return await self._write(lambda db: _put(db, session_id, company_id, assistant_id, client_data))

    async def get_session(self, session_id: str) -> Session:
        return await self._run(self.get_session_sync, session_id)

    async def merge_client_data(self, session_id: str, data: Mapping[str, Any]) -> Session:
        return await self._write(lambda db: _merge(db, session_id, data))

    async def append_log(self, session_id: str, record: Mapping[str, Any]) -> int:
        return await self._write(lambda db: _append_log(db, session_id, record))

    async def finish_call(
        self, session_id: str, client_data_update: Mapping[str, Any], record: Mapping[str, Any]
    ) -> int:
        def work(db: sqlite3.Connection) -> int:
            if client_data_update:
                _merge(db, session_id, client_data_update)
            return _append_log(db, session_id, record)

        return await self._write(work)

    async def logs(self, session_id: str, limit: int = 100) -> list[dict[str, Any]]:
        return await self._run(self.logs_sync, session_id, limit)

    async def close(self) -> None:
        await self._run(lambda: None)
        self.close_sync()


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.cancelled():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _row(row: tuple[Any, ...] | None, session_id: str) -> Session:
    if row is None:
        raise SessionNotFound(session_id)
    return Session(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5])


def _put(
    db: sqlite3.Connection,
    session_id: str,
    company_id: str | None,
    assistant_id: str | None,
    client_data: Mapping[str, Any] | None,
) -> Session:
    now = time.time()
    row = db.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
    if row is None:
        db.execute(
            "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?)",
            (session_id, company_id or "", assistant_id or "", json.dumps(dict(client_data or {})), now, now),
        )
    else:
        merged = json.loads(row[3])
        merged.update(client_data or {})
        db.execute(
            "UPDATE sessions SET company_id = ?, assistant_id = ?, client_data = ?, updated_at = ? WHERE id = ?",
            (
                company_id if company_id is not None else row[1],
                assistant_id if assistant_id is not None else row[2],
                json.dumps(merged),
                now,
                session_id,
            ),
        )
    return _row(db.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone(), session_id)


def _merge(db: sqlite3.Connection, session_id: str, data: Mapping[str, Any]) -> Session:
    session = _row(db.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone(), session_id)
    merged = dict(session.client_data)
    merged.update(data)
    now = time.time()
    db.execute(
        "UPDATE sessions SET client_data = ?, updated_at = ? WHERE id = ?", (json.dumps(merged), now, session_id)
    )
    return Session(session.id, session.company_id, session.assistant_id, merged, session.created_at, now)


def _append_log(db: sqlite3.Connection, session_id: str, record: Mapping[str, Any]) -> int:
    cursor = db.execute(
        "INSERT INTO call_logs (session_id, at, record) VALUES (?, ?, ?)",
        (session_id, float(record.get("at", time.time())), json.dumps(dict(record))),
    )
    return int(cursor.lastrowid or 0)
