"""The PostgreSQL backend: the same ``Store`` as ``SQLiteStore``, for several service replicas.

``PostgresStore("postgresql://user@host/db")`` keeps sessions, call logs, API keys and
company secrets in four tables, created on first use (under an advisory lock, so replicas starting
together do not race). Nothing is cached in the process: every replica reads and
writes the database, so they can share sessions freely.

Concurrent client_data merges lose nothing: each merge is one statement,
``UPDATE sessions SET client_data = client_data || $1::jsonb`` (``||`` merges the
top-level keys, as ``dict.update`` does), which PostgreSQL runs under the row's
lock. A call's merge and its log record are one statement too (a data-modifying
``WITH``), so they commit together or not at all, in one round trip.

client_data is ``jsonb``, which cannot hold the character U+0000 or a lone UTF-16
surrogate; such a character in a client_data string is stored as U+FFFD (the
replacement character). Log records
are kept as JSON text, exactly as written.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Mapping
from typing import Any

import asyncpg

from .store import (
    AmbiguousSession,
    ApiKey,
    SecretInfo,
    SecretValues,
    Session,
    SessionNotFound,
    SessionSummary,
    secret_problem,
)

__all__ = ["PostgresStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    company_id text NOT NULL DEFAULT '',
    id text NOT NULL,
    assistant_id text NOT NULL DEFAULT '',
    client_data jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    PRIMARY KEY (company_id, id)
);
CREATE INDEX IF NOT EXISTS sessions_by_id ON sessions (id);
CREATE INDEX IF NOT EXISTS sessions_by_company_updated ON sessions (company_id, updated_at);
CREATE TABLE IF NOT EXISTS call_logs (
    seq bigserial PRIMARY KEY,
    company_id text NOT NULL DEFAULT '',
    session_id text NOT NULL,
    at double precision NOT NULL,
    record text NOT NULL
);
CREATE INDEX IF NOT EXISTS call_logs_by_company_session ON call_logs (company_id, session_id, seq);
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash text PRIMARY KEY,
    company_id text NOT NULL,
    prefix text NOT NULL,
    label text NOT NULL DEFAULT '',
    created_at double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS api_keys_by_company ON api_keys (company_id);
CREATE TABLE IF NOT EXISTS secrets (
    company_id text NOT NULL,
    name text NOT NULL,
    value text NOT NULL,
    updated_at double precision NOT NULL,
    PRIMARY KEY (company_id, name)
);
"""
_SCHEMA_LOCK = 0x77_64_73_6C  # pg_advisory_xact_lock key while creating tables ("wdsl")
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")
_COLUMNS = "id, company_id, assistant_id, client_data, created_at, updated_at"

_UPSERT = f"""
INSERT INTO sessions (company_id, id, assistant_id, client_data, created_at, updated_at)
VALUES ($1, $2, COALESCE($3, ''), $4::jsonb, $5, $5)
ON CONFLICT (company_id, id) DO UPDATE SET
    assistant_id = COALESCE($3, sessions.assistant_id),
    client_data = sessions.client_data || EXCLUDED.client_data,
    updated_at = EXCLUDED.updated_at
RETURNING {_COLUMNS}
"""
_MERGE = f"""
UPDATE sessions SET client_data = client_data || $3::jsonb, updated_at = $4
WHERE company_id = $1 AND id = $2
RETURNING {_COLUMNS}
"""
_MERGE_AND_LOG = """
WITH merged AS (
    UPDATE sessions SET client_data = client_data || $3::jsonb, updated_at = $4
    WHERE company_id = $1 AND id = $2
    RETURNING company_id
)
INSERT INTO call_logs (company_id, session_id, at, record)
SELECT company_id, $2, $5, $6 FROM merged
RETURNING seq
"""
_LOG = "INSERT INTO call_logs (company_id, session_id, at, record) VALUES ($1, $2, $3, $4) RETURNING seq"
_LOGS = """
SELECT seq, record FROM (
    SELECT seq, record FROM call_logs WHERE company_id = $1 AND session_id = $2 ORDER BY seq DESC LIMIT $3
) recent ORDER BY seq
"""
_LIST = """
SELECT s.id, s.assistant_id, s.created_at, s.updated_at, COALESCE(c.calls, 0), c.last_call_at
FROM sessions s
LEFT JOIN LATERAL (
    SELECT count(*) AS calls, max(at) AS last_call_at FROM call_logs
    WHERE call_logs.company_id = s.company_id AND call_logs.session_id = s.id
) c ON true
WHERE s.company_id = $1
ORDER BY s.updated_at DESC, s.id
LIMIT $2 OFFSET $3
"""


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    if isinstance(value, dict):
        return {_without_nul(str(k)): _without_nul(v) for k, v in value.items()}
    return value


def _jsonb(value: Mapping[str, Any]) -> str:
    """client_data as jsonb text (jsonb refuses \\u0000, so a NUL becomes U+FFFD)."""
    text = json.dumps(dict(value), ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: jsonb takes none
        return json.dumps(_without_nul(dict(value)), ensure_ascii=False)
    if "\\u0000" in text:
        return json.dumps(_without_nul(dict(value)), ensure_ascii=False)
    return text


def _session(row: asyncpg.Record) -> Session:
    return Session(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5])


class PostgresStore:
    """Sessions, logs and API keys in PostgreSQL (asyncpg); safe to share between processes."""

    kind = "postgresql"

    def __init__(self, dsn: str, *, schema: str | None = None, min_size: int = 1, max_size: int = 10) -> None:
        if schema is not None and not _SCHEMA_NAME.match(schema):
            raise ValueError(f"schema name {schema!r}: use lower-case letters, digits and '_'")
        self.dsn = dsn
        self.schema = schema
        self._min_size = min_size
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._opening: asyncio.Lock | None = None

    async def _connection_pool(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._pool is None:
                settings = {"search_path": self.schema} if self.schema else {}
                pool = await asyncpg.create_pool(
                    self.dsn, min_size=self._min_size, max_size=self._max_size, server_settings=settings
                )
                try:
                    async with pool.acquire() as connection, connection.transaction():
                        await connection.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
                        if self.schema:
                            await connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                        await connection.execute(_SCHEMA)
                except BaseException:
                    await pool.close()
                    raise
                self._pool = pool
        return self._pool

    async def _company_of(self, pool: asyncpg.Pool, session_id: str, company_id: str | None) -> str | None:
        """The company to use: the one given, or the only company with this session id (None if none)."""
        if company_id is not None:
            return company_id
        rows = await pool.fetch("SELECT company_id FROM sessions WHERE id = $1 LIMIT 2", session_id)
        if len(rows) > 1:
            raise AmbiguousSession(f"session {session_id!r} exists for several companies; name the company")
        return str(rows[0][0]) if rows else None

    async def put_session(
        self,
        session_id: str,
        *,
        company_id: str | None = None,
        assistant_id: str | None = None,
        client_data: Mapping[str, Any] | None = None,
    ) -> Session:
        pool = await self._connection_pool()
        company = await self._company_of(pool, session_id, company_id)
        row = await pool.fetchrow(
            _UPSERT, company or "", session_id, assistant_id, _jsonb(client_data or {}), time.time()
        )
        assert row is not None
        return _session(row)

    async def get_session(self, session_id: str, *, company_id: str | None = None) -> Session:
        pool = await self._connection_pool()
        company = await self._company_of(pool, session_id, company_id)
        row = await pool.fetchrow(
            f"SELECT {_COLUMNS} FROM sessions WHERE company_id = $1 AND id = $2", company or "", session_id
        )
        if row is None:
            raise SessionNotFound(session_id)
        return _session(row)

    async def merge_client_data(
        self, session_id: str, data: Mapping[str, Any], *, company_id: str | None = None
    ) -> Session:
        pool = await self._connection_pool()
        company = await self._company_of(pool, session_id, company_id)
        row = await pool.fetchrow(_MERGE, company or "", session_id, _jsonb(data), time.time())
        if row is None:
            raise SessionNotFound(session_id)
        return _session(row)

    async def append_log(self, session_id: str, record: Mapping[str, Any], *, company_id: str | None = None) -> int:
        pool = await self._connection_pool()
        company = await self._company_of(pool, session_id, company_id)
        at = float(record.get("at", time.time()))
        return int(await pool.fetchval(_LOG, company or "", session_id, at, json.dumps(dict(record))))

    async def finish_call(
        self,
        session_id: str,
        client_data_update: Mapping[str, Any],
        record: Mapping[str, Any],
        *,
        company_id: str | None = None,
    ) -> int:
        if not client_data_update:
            return await self.append_log(session_id, record, company_id=company_id)
        pool = await self._connection_pool()
        company = await self._company_of(pool, session_id, company_id)
        at = float(record.get("at", time.time()))
        seq = await pool.fetchval(
            _MERGE_AND_LOG,
            company or "",
            session_id,
            _jsonb(client_data_update),
            time.time(),
            at,
            json.dumps(dict(record)),
        )
        if seq is None:
            raise SessionNotFound(session_id)
        return int(seq)

    async def logs(self, session_id: str, limit: int = 100, *, company_id: str | None = None) -> list[dict[str, Any]]:
        pool = await self._connection_pool()
        if company_id is None:
            rows = await pool.fetch(
                "SELECT seq, record FROM (SELECT seq, record FROM call_logs WHERE session_id = $1 "
                "ORDER BY seq DESC LIMIT $2) recent ORDER BY seq",
                session_id,
                limit,
            )
        else:
            rows = await pool.fetch(_LOGS, company_id, session_id, limit)
        return [{"seq": int(row[0]), **json.loads(row[1])} for row in rows]

    async def list_sessions(self, company_id: str, limit: int = 100, offset: int = 0) -> list[SessionSummary]:
        pool = await self._connection_pool()
        rows = await pool.fetch(_LIST, company_id, limit, offset)
        return [SessionSummary(row[0], row[1], row[2], row[3], int(row[4]), row[5]) for row in rows]

    async def add_api_key(self, company_id: str, key_hash: str, prefix: str, label: str = "") -> None:
        pool = await self._connection_pool()
        await pool.execute(
            "INSERT INTO api_keys (key_hash, company_id, prefix, label, created_at) VALUES ($1, $2, $3, $4, $5)",
            key_hash,
            company_id,
            prefix,
            label,
            time.time(),
        )

    async def company_for_key(self, key_hash: str) -> str | None:
        pool = await self._connection_pool()
        company = await pool.fetchval("SELECT company_id FROM api_keys WHERE key_hash = $1", key_hash)
        return None if company is None else str(company)

    async def api_keys(self, company_id: str) -> list[ApiKey]:
        pool = await self._connection_pool()
        rows = await pool.fetch(
            "SELECT company_id, prefix, label, created_at FROM api_keys WHERE company_id = $1 ORDER BY created_at",
            company_id,
        )
        return [ApiKey(row[0], row[1], row[2], row[3]) for row in rows]

    async def revoke_api_key(self, company_id: str, prefix: str) -> int:
        if not prefix:
            return 0
        pool = await self._connection_pool()
        status = await pool.execute(
            "DELETE FROM api_keys WHERE company_id = $1 AND left(prefix, length($2)) = $2", company_id, prefix
        )
        return int(status.rsplit(" ", 1)[-1])

    async def set_secret(self, company_id: str, name: str, value: str) -> None:
        problem = secret_problem(name, value)
        if problem is not None:
            raise ValueError(problem)
        pool = await self._connection_pool()
        await pool.execute(
            "INSERT INTO secrets (company_id, name, value, updated_at) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (company_id, name) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at",
            company_id,
            name,
            value,
            time.time(),
        )

    async def delete_secret(self, company_id: str, name: str) -> bool:
        pool = await self._connection_pool()
        status = await pool.execute("DELETE FROM secrets WHERE company_id = $1 AND name = $2", company_id, name)
        return int(status.rsplit(" ", 1)[-1]) > 0

    async def secret_names(self, company_id: str) -> list[SecretInfo]:
        pool = await self._connection_pool()
        rows = await pool.fetch(  # byte order (COLLATE "C"), as SQLite sorts
            'SELECT name, updated_at FROM secrets WHERE company_id = $1 ORDER BY name COLLATE "C"', company_id
        )
        return [SecretInfo(row[0], row[1]) for row in rows]

    async def company_secrets(self, company_id: str) -> dict[str, str]:
        pool = await self._connection_pool()
        rows = await pool.fetch("SELECT name, value FROM secrets WHERE company_id = $1", company_id)
        return SecretValues((row[0], row[1]) for row in rows)

    async def ping(self) -> None:
        pool = await self._connection_pool()
        await pool.fetchval("SELECT 1")

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
