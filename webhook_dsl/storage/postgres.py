"""The PostgreSQL backend (extra ``[postgres]``): the same ``Store`` as SQLite, for several service replicas.

Nothing is cached in the process, so replicas share sessions freely; tables are created, and upgraded
step by step (``schema_version``), on first use under an advisory lock. A client_data merge is one
statement (``client_data || $1::jsonb``, under the row's lock), and a call's merge and log record commit
together, so concurrent merges lose nothing. The size limit is part of the same statements (``octet_length``
of the merged text), re-checked by PostgreSQL on the newest row version; a merge jsonb's longer text refuses
is measured again exactly.
``jsonb`` cannot hold U+0000 or a lone surrogate: such a character is stored as U+FFFD.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import asyncpg

from .base import (
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
    compact_json_size,
    log_view,
    merge_refused_warning,
    read_json,
    secret_problem,
)

__all__ = ["PostgresStore"]

log = logging.getLogger("webhook_dsl.storage")

#: The schema this code reads and writes; the ``schema_version`` table holds the database's (see ``_migrate``).
_SCHEMA_VERSION = 6
#: Version 5, as releases before versioned steps ran it on every start (it is idempotent). A database without
#: ``schema_version`` runs it first: a new one is created by it, and one of an earlier release is brought to 5
#: as that release's own start would have; both then take the same steps as any other.
_SCHEMA_5 = """
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
    record text NOT NULL,
    state text NOT NULL DEFAULT 'done'
);
ALTER TABLE call_logs ADD COLUMN IF NOT EXISTS state text NOT NULL DEFAULT 'done';
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
CREATE TABLE IF NOT EXISTS dashboard_sessions (
    token_hash text PRIMARY KEY,
    company_id text NOT NULL,
    key_hash text NOT NULL,
    created_at double precision NOT NULL,
    expires_at double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS dashboard_sessions_by_key ON dashboard_sessions (key_hash);
CREATE TABLE IF NOT EXISTS write_probe (id integer PRIMARY KEY, at double precision NOT NULL);
"""
#: Trigger versions (a company's uploads, numbered per name; ``seq`` orders them across all names and is the
#: revision replicas poll) and the index a purge of old log records walks. IF NOT EXISTS: on a large table an
#: operator may build that index beforehand with CREATE INDEX CONCURRENTLY, which writes can go on beside.
_STEP_6 = """
CREATE TABLE trigger_versions (
    seq bigserial PRIMARY KEY,
    company_id text NOT NULL,
    name text NOT NULL,
    version integer NOT NULL,
    digest text NOT NULL,
    document text,
    created_at double precision NOT NULL,
    UNIQUE (company_id, name, version)
);
CREATE INDEX IF NOT EXISTS call_logs_by_at ON call_logs (at);
"""
#: Each step takes a database of the version before it to its own, in the one transaction of ``_migrate``.
_STEPS = ((5, _SCHEMA_5), (6, _STEP_6))
_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    version integer NOT NULL
)
"""
_SCHEMA_LOCK = 0x77_64_73_6C  # pg_advisory_xact_lock key while creating tables ("wdsl")
#: pg_advisory_xact_lock key (with the schema's hash) while a trigger version is written ("wdst").
_TRIGGERS_LOCK = 0x77_64_73_74
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")
_COLUMNS = "id, company_id, assistant_id, client_data, created_at, updated_at"

#: Appended to a merge's WHERE: the merged client_data's text within the limit (``$LIMIT``, a parameter).
_FITS = " AND octet_length(({merged})::text) <= ${limit}::bigint"
_UPSERT = f"""
INSERT INTO sessions (company_id, id, assistant_id, client_data, created_at, updated_at)
VALUES ($1, $2, COALESCE($3, ''), $4::jsonb, $5, $5)
ON CONFLICT (company_id, id) DO UPDATE SET
    assistant_id = COALESCE($3, sessions.assistant_id),
    client_data = sessions.client_data || EXCLUDED.client_data,
    updated_at = EXCLUDED.updated_at
WHERE EXCLUDED.client_data = '{{}}'::jsonb
    OR octet_length((sessions.client_data || EXCLUDED.client_data)::text) <= $6::bigint
RETURNING {_COLUMNS}
"""
_UPDATE = f"""
UPDATE sessions SET assistant_id = COALESCE($3, assistant_id), client_data = client_data || $4::jsonb,
    updated_at = $5
WHERE company_id = $1 AND id = $2
RETURNING {_COLUMNS}
"""
_MERGE = f"""
UPDATE sessions SET client_data = client_data || $3::jsonb, updated_at = $4
WHERE company_id = $1 AND id = $2{{fits}}
RETURNING {_COLUMNS}
"""
_MERGE_AND_LOG = """
WITH merged AS (
    UPDATE sessions SET client_data = client_data || $3::jsonb, updated_at = $4
    WHERE company_id = $1 AND id = $2{fits}
    RETURNING company_id
)
INSERT INTO call_logs (company_id, session_id, at, record)
SELECT company_id, $2, $5, $6 FROM merged
RETURNING seq
"""
_MERGE_CHECKED = _MERGE.format(fits=_FITS.format(merged="client_data || $3::jsonb", limit=5))
_MERGE_UNCHECKED = _MERGE.format(fits="")
_MERGE_AND_LOG_CHECKED = _MERGE_AND_LOG.format(fits=_FITS.format(merged="client_data || $3::jsonb", limit=7))
_MERGE_AND_LOG_UNCHECKED = _MERGE_AND_LOG.format(fits="")
#: The exact measure, for a merge the statement refused: the stored client_data, under the row's lock.
_LOCKED = "SELECT client_data::text FROM sessions WHERE company_id = $1 AND id = $2 FOR UPDATE"
_LOG = "INSERT INTO call_logs (company_id, session_id, at, record) VALUES ($1, $2, $3, $4) RETURNING seq"
_BEGIN = (
    "INSERT INTO call_logs (company_id, session_id, at, record, state) VALUES ($1, $2, $3, $4, 'started') RETURNING seq"
)
#: Completes a begun call once: no row when it was completed already (a replay from the journal).
_COMPLETE = "UPDATE call_logs SET record = $2, state = 'done' WHERE seq = $1 AND state = 'started' RETURNING seq"
_LOGS = """
SELECT seq, record, state FROM (
    SELECT seq, record, state FROM call_logs WHERE company_id = $1 AND session_id = $2 ORDER BY seq DESC LIMIT $3
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


#: Log records deleted per statement by a purge: PostgreSQL locks only those rows, which no other write wants
#: (they are old), so the batch bounds how long one statement runs.
_PURGE_BATCH = 5000
#: One batch: the oldest records from $1 on (another company's, looked at already, are not read again), and
#: (selected, deleted, where the next batch starts). Another replica purging at once may have deleted some.
_PURGE = """
WITH batch AS (
    SELECT seq, at FROM call_logs WHERE at >= $1 AND at < $2{company} ORDER BY at LIMIT $3
), gone AS (
    DELETE FROM call_logs WHERE seq IN (SELECT seq FROM batch) RETURNING seq
)
SELECT (SELECT count(*) FROM batch), (SELECT count(*) FROM gone), (SELECT max(at) FROM batch)
"""
_VERSION_COLUMNS = "company_id, name, version, digest, document, created_at"
_PUT_VERSION = f"""
INSERT INTO trigger_versions ({_VERSION_COLUMNS})
SELECT $1, $2, COALESCE(max(version), 0) + 1, $3, $4, $5 FROM trigger_versions WHERE company_id = $1 AND name = $2
RETURNING version
"""
_CURRENT = f"""
SELECT {_VERSION_COLUMNS} FROM (
    SELECT DISTINCT ON (company_id, name) {_VERSION_COLUMNS} FROM trigger_versions
    ORDER BY company_id, name, version DESC
) newest
WHERE document IS NOT NULL
ORDER BY company_id COLLATE "C", name COLLATE "C"
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
    return Session(row[0], row[1], row[2], read_json(row[3]), row[4], row[5])


async def _merged_size(
    connection: asyncpg.pool.PoolConnectionProxy[asyncpg.Record], company: str, session_id: str, update: str
) -> int | None:
    """Inside a transaction: lock the session's row and measure its client_data with ``update`` (jsonb
    text) merged, as compact JSON; None if there is no such session."""
    text = await connection.fetchval(_LOCKED, company, session_id)
    if text is None:
        return None
    merged = read_json(text)
    merged.update(read_json(update))
    return compact_json_size(merged)


#: What an outage looks like from asyncpg: the server down, restarting, shutting down, out of disk or
#: connections, read-only (a standby), the connection lost or broken mid-statement.
_OUTAGES: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
)


def _unavailable(error: BaseException) -> StoreUnavailable:
    return StoreUnavailable(f"the PostgreSQL database cannot be used now: {type(error).__name__}: {error}")


async def _migrate(connection: asyncpg.pool.PoolConnectionProxy[asyncpg.Record]) -> int | None:
    """Inside the transaction holding the schema lock: bring the database to ``_SCHEMA_VERSION`` (every step
    and the new version commit together, so a replica that finds the lock taken then finds the work done);
    return the version it had if this call changed it (0: it was empty), else None. ``SchemaTooNew`` for a
    database a newer release has written: nothing here knows what it holds."""
    if await connection.fetchval("SELECT to_regclass('schema_version')") is None:
        found = 0 if await connection.fetchval("SELECT to_regclass('sessions')") is None else 5
        version = 0
    else:
        found = version = int(await connection.fetchval("SELECT version FROM schema_version") or 0)
    if version > _SCHEMA_VERSION:
        raise SchemaTooNew(version, _SCHEMA_VERSION)
    if version == _SCHEMA_VERSION:
        return None
    for number, script in _STEPS:
        if number > version:
            await connection.execute(script)
    await connection.execute(_VERSION_TABLE)
    await connection.execute(
        "INSERT INTO schema_version (version) VALUES ($1) ON CONFLICT (only_row) DO UPDATE SET version = $1",
        _SCHEMA_VERSION,
    )
    return found


class _Pool:
    """The asyncpg pool as the store uses it: an outage raises ``StoreUnavailable``, and returning a connection
    never fails work that is done. asyncpg resets a connection as it takes it back; when the server has just
    gone away that raises (``cannot switch to state 15``) after the statement committed, and the caller would
    report a committed call as failed. The pool drops such a connection itself, so the error is only logged."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.pool.PoolConnectionProxy[asyncpg.Record]]:
        try:
            connection = await self.pool.acquire()
        except _OUTAGES as error:
            raise _unavailable(error) from error
        try:
            yield connection
        except _OUTAGES as error:
            raise _unavailable(error) from error
        finally:
            try:
                await self.pool.release(connection)
            except Exception as error:  # the connection is dropped by the pool; the work stands
                log.warning("PostgreSQL: a connection failed on its way back to the pool and was dropped: %s", error)

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self.acquire() as connection:
            return await connection.fetch(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        async with self.acquire() as connection:
            return await connection.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        async with self.acquire() as connection:
            return await connection.fetchval(query, *args)

    async def execute(self, query: str, *args: Any) -> str:
        async with self.acquire() as connection:
            return await connection.execute(query, *args)

    async def close(self) -> None:
        await self.pool.close()


class PostgresStore:
    """Sessions, logs and API keys in PostgreSQL (asyncpg); safe to share between processes."""

    kind = "postgresql"

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 10,
        max_client_data_bytes: int = DEFAULT_MAX_CLIENT_DATA_BYTES,
    ) -> None:
        if schema is not None and not _SCHEMA_NAME.match(schema):
            raise ValueError(f"schema name {schema!r}: use lower-case letters, digits and '_'")
        self.dsn = dsn
        self.max_client_data_bytes = max_client_data_bytes
        self.schema = schema
        self._min_size = min_size
        self._max_size = max_size
        self._pool: _Pool | None = None
        self._opening: asyncio.Lock | None = None

    async def _connection_pool(self) -> _Pool:
        if self._pool is not None:
            return self._pool
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._pool is None:
                settings = {"search_path": self.schema} if self.schema else {}
                try:
                    created = await asyncpg.create_pool(
                        self.dsn, min_size=self._min_size, max_size=self._max_size, server_settings=settings
                    )
                except _OUTAGES as error:
                    raise _unavailable(error) from error
                pool = _Pool(created)
                try:
                    async with pool.acquire() as connection, connection.transaction():
                        await connection.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
                        if self.schema:
                            await connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                        migrated_from = await _migrate(connection)
                except BaseException:
                    await pool.close()
                    raise
                if migrated_from is not None:
                    what = "created at" if migrated_from == 0 else f"upgraded from version {migrated_from} to"
                    where = f"database, schema {self.schema}" if self.schema else "database"
                    log.info("PostgreSQL %s: schema %s version %d", where, what, _SCHEMA_VERSION)
                self._pool = pool
        return self._pool

    async def _company_of(
        self, pool: _Pool | asyncpg.pool.PoolConnectionProxy[asyncpg.Record], session_id: str, company_id: str | None
    ) -> str | None:
        """The company to use: the one given, or the only company with this session id (None if none)."""
        if company_id is not None:
            return company_id
        rows = await pool.fetch("SELECT company_id FROM sessions WHERE id = $1 LIMIT 50", session_id)
        if len(rows) > 1:
            raise AmbiguousSession(session_id, [str(row[0]) for row in rows])
        return str(rows[0][0]) if rows else None

    async def put_session(
        self,
        session_id: str,
        *,
        company_id: str | None = None,
        assistant_id: str | None = None,
        client_data: Mapping[str, Any] | None = None,
    ) -> Session:
        limit = self._update_fits(session_id, client_data, company_id)
        pool = await self._connection_pool()
        company = await self._company_of(pool, session_id, company_id) or ""
        update = _jsonb(client_data or {})
        row = await pool.fetchrow(_UPSERT, company, session_id, assistant_id, update, time.time(), limit)
        if row is not None:
            return _session(row)
        async with pool.acquire() as connection, connection.transaction():  # refused by jsonb's measure
            size = await _merged_size(connection, company, session_id, update)
            if size is None:  # deleted since: created anew (the update alone fits)
                row = await connection.fetchrow(_UPSERT, company, session_id, assistant_id, update, time.time(), limit)
            elif size > limit:
                raise ClientDataTooLarge(session_id, size, limit, company)
            else:
                row = await connection.fetchrow(_UPDATE, company, session_id, assistant_id, update, time.time())
        assert row is not None  # the row is locked (_merged_size), or was inserted just now
        return _session(row)

    def _update_fits(self, session_id: str, update: Mapping[str, Any] | None, company_id: str | None) -> int:
        """The limit, after refusing an update that alone passes it (the merge can only be larger)."""
        limit = self.max_client_data_bytes
        if update:
            size = compact_json_size(update)
            if size > limit:
                raise ClientDataTooLarge(session_id, size, limit, company_id or "")
        return limit

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
        limit = self._update_fits(session_id, data, company_id)
        pool = await self._connection_pool()
        company = await self._company_of(pool, session_id, company_id) or ""
        update = _jsonb(data)
        row = await pool.fetchrow(_MERGE_CHECKED, company, session_id, update, time.time(), limit)
        if row is not None:
            return _session(row)
        async with pool.acquire() as connection, connection.transaction():  # no session, or over jsonb's measure
            size = await _merged_size(connection, company, session_id, update)
            if size is None:
                raise SessionNotFound(session_id)
            if size > limit:
                raise ClientDataTooLarge(session_id, size, limit, company)
            row = await connection.fetchrow(_MERGE_UNCHECKED, company, session_id, update, time.time())
        assert row is not None
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
        call_seq: int | None = None,
    ) -> int:
        if call_seq is not None:
            return await self._complete_call(session_id, client_data_update, record, company_id, call_seq)
        if not client_data_update:
            return LogSeq(await self.append_log(session_id, record, company_id=company_id))
        limit = self.max_client_data_bytes
        pool = await self._connection_pool()
        company = await self._company_of(pool, session_id, company_id) or ""
        at = float(record.get("at", time.time()))
        update = _jsonb(client_data_update)
        text = json.dumps(dict(record))
        seq = await pool.fetchval(_MERGE_AND_LOG_CHECKED, company, session_id, update, time.time(), at, text, limit)
        if seq is not None:
            return LogSeq(seq)
        async with pool.acquire() as connection, connection.transaction():  # no session, or over jsonb's measure
            size = await _merged_size(connection, company, session_id, update)
            if size is None:
                raise SessionNotFound(session_id)
            if size <= limit:
                seq = await connection.fetchval(
                    _MERGE_AND_LOG_UNCHECKED, company, session_id, update, time.time(), at, text
                )
                return LogSeq(seq)
            warning = merge_refused_warning(ClientDataTooLarge(session_id, size, limit, company))
            refused = {**record, "client_data_merged": {}, "warnings": [*(record.get("warnings") or ()), warning]}
            seq = await connection.fetchval(_LOG, company, session_id, at, json.dumps(refused))
        return LogSeq(seq, warning)

    async def begin_call(self, session_id: str, intent: Mapping[str, Any], *, company_id: str) -> int:
        pool = await self._connection_pool()
        at = float(intent.get("at", time.time()))
        return int(await pool.fetchval(_BEGIN, company_id, session_id, at, json.dumps(dict(intent))))

    async def _complete_call(
        self,
        session_id: str,
        update: Mapping[str, Any],
        record: Mapping[str, Any],
        company_id: str | None,
        seq: int,
    ) -> LogSeq:
        """Complete the begun call ``seq`` and make its merge, in one transaction, at most once."""
        pool = await self._connection_pool()
        async with pool.acquire() as connection, connection.transaction():
            company = await self._company_of(connection, session_id, company_id) or ""
            if await connection.fetchval(_COMPLETE, seq, json.dumps(dict(record))) is None:
                return LogSeq(seq)  # completed already
            if not update:
                return LogSeq(seq)
            text = _jsonb(update)
            row = await connection.fetchrow(
                _MERGE_CHECKED, company, session_id, text, time.time(), self.max_client_data_bytes
            )
            if row is not None:
                return LogSeq(seq)
            size = await _merged_size(connection, company, session_id, text)
            if size is None:
                raise SessionNotFound(session_id)
            if size <= self.max_client_data_bytes:
                await connection.fetchrow(_MERGE_UNCHECKED, company, session_id, text, time.time())
                return LogSeq(seq)
            warning = merge_refused_warning(ClientDataTooLarge(session_id, size, self.max_client_data_bytes, company))
            refused = {**record, "client_data_merged": {}, "warnings": [*(record.get("warnings") or ()), warning]}
            await connection.execute("UPDATE call_logs SET record = $2 WHERE seq = $1", seq, json.dumps(refused))
            return LogSeq(seq, warning)

    async def logs(self, session_id: str, limit: int = 100, *, company_id: str | None = None) -> list[dict[str, Any]]:
        pool = await self._connection_pool()
        if company_id is None:
            rows = await pool.fetch(
                "SELECT seq, record, state FROM (SELECT seq, record, state FROM call_logs WHERE session_id = $1 "
                "ORDER BY seq DESC LIMIT $2) recent ORDER BY seq",
                session_id,
                limit,
            )
        else:
            rows = await pool.fetch(_LOGS, company_id, session_id, limit)
        now = time.time()
        return [log_view(int(row[0]), json.loads(row[1]), row[2], now) for row in rows]

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
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute(
                "DELETE FROM dashboard_sessions WHERE key_hash IN (SELECT key_hash FROM api_keys "
                "WHERE company_id = $1 AND left(prefix, length($2)) = $2)",
                company_id,
                prefix,
            )
            status = await connection.execute(
                "DELETE FROM api_keys WHERE company_id = $1 AND left(prefix, length($2)) = $2", company_id, prefix
            )
        return int(status.rsplit(" ", 1)[-1])

    async def add_dashboard_session(self, token_hash: str, company_id: str, key_hash: str, expires_at: float) -> None:
        pool = await self._connection_pool()
        now = time.time()
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute("DELETE FROM dashboard_sessions WHERE expires_at <= $1", now)
            await connection.execute(
                "INSERT INTO dashboard_sessions (token_hash, company_id, key_hash, created_at, expires_at) "
                "VALUES ($1, $2, $3, $4, $5)",
                token_hash,
                company_id,
                key_hash,
                now,
                expires_at,
            )

    async def dashboard_session(self, token_hash: str) -> DashboardSession | None:
        pool = await self._connection_pool()
        row = await pool.fetchrow(
            "SELECT company_id, key_hash, expires_at FROM dashboard_sessions WHERE token_hash = $1 AND expires_at > $2",
            token_hash,
            time.time(),
        )
        return None if row is None else DashboardSession(row[0], row[1], row[2])

    async def delete_dashboard_session(self, token_hash: str) -> None:
        pool = await self._connection_pool()
        await pool.execute("DELETE FROM dashboard_sessions WHERE token_hash = $1", token_hash)

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

    async def delete_session(self, session_id: str, *, company_id: str) -> int:
        pool = await self._connection_pool()
        async with pool.acquire() as connection, connection.transaction():
            status = await connection.execute(
                "DELETE FROM sessions WHERE company_id = $1 AND id = $2", company_id, session_id
            )
            if status == "DELETE 0":
                raise SessionNotFound(session_id)
            status = await connection.execute(
                "DELETE FROM call_logs WHERE company_id = $1 AND session_id = $2", company_id, session_id
            )
        return int(status.rsplit(" ", 1)[-1])

    async def purge_logs(self, older_than: float, *, company_id: str | None = None) -> int:
        pool = await self._connection_pool()
        deleted, after = 0, -math.inf
        while True:  # each batch its own statement, so its own transaction
            if company_id is None:
                row = await pool.fetchrow(_PURGE.format(company=""), after, older_than, _PURGE_BATCH)
            else:
                query = _PURGE.format(company=" AND company_id = $4")
                row = await pool.fetchrow(query, after, older_than, _PURGE_BATCH, company_id)
            assert row is not None
            selected, gone, last = int(row[0]), int(row[1]), row[2]
            deleted += gone
            if selected < _PURGE_BATCH:
                return deleted
            after = float(last)

    async def put_trigger_version(
        self, company_id: str, name: str, document: str | None, digest: str
    ) -> TriggerVersion:
        """One writer at a time per schema (an advisory lock held to the commit), so that a version's ``seq``
        is also the order of the commits: a replica that read revision N has seen every version before N,
        which sequence numbers handed to concurrent transactions would not promise. Uploads are rare."""
        pool = await self._connection_pool()
        now = time.time()
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))", _TRIGGERS_LOCK)
            version = await connection.fetchval(_PUT_VERSION, company_id, name, digest, document, now)
        return TriggerVersion(company_id, name, int(version), digest, document, now)

    async def trigger_versions(self, company_id: str, name: str) -> list[TriggerVersion]:
        pool = await self._connection_pool()
        rows = await pool.fetch(
            f"SELECT {_VERSION_COLUMNS} FROM trigger_versions WHERE company_id = $1 AND name = $2 "
            "ORDER BY version DESC",
            company_id,
            name,
        )
        return [TriggerVersion(*row) for row in rows]

    async def current_triggers(self) -> list[TriggerVersion]:
        pool = await self._connection_pool()
        return [TriggerVersion(*row) for row in await pool.fetch(_CURRENT)]

    async def triggers_revision(self) -> int:
        # Polled by every replica: max(seq) is read from the end of the primary key's index.
        pool = await self._connection_pool()
        return int(await pool.fetchval("SELECT COALESCE(max(seq), 0) FROM trigger_versions"))

    async def ping(self) -> None:
        pool = await self._connection_pool()
        await pool.fetchval("SELECT 1")

    async def probe_write(self) -> None:
        pool = await self._connection_pool()
        await pool.execute(
            "INSERT INTO write_probe (id, at) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET at = EXCLUDED.at",
            time.time(),
        )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
