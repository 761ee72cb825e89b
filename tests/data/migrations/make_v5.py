"""Writes sqlite_v5.sql and postgres_v5.sql beside this file: databases as the release before versioned
migrations (commit c5037f3, schema version 5) wrote them, through that release's own Store, for
tests/test_migrations.py. Run it with that release's code first on the path:

    git worktree add /tmp/prev c5037f3
    PYTHONPATH=/tmp/prev .venv/bin/python tests/data/migrations/make_v5.py postgresql://postgres@127.0.0.1:55432/postgres
    git worktree remove /tmp/prev

The PostgreSQL dump is ``pg_dump --inserts`` of one schema, ``wdsl_v5_fixture``, which a test renames.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCHEMA = "wdsl_v5_fixture"
AT = 1_700_000_000.0
#: Far in the future, so that the sign-in is still valid when the test reads it.
SIGN_IN_EXPIRES = 4_102_444_800.0


def record(at: float, trigger: str, **extra: Any) -> dict[str, Any]:
    return {
        "at": at,
        "trigger": trigger,
        "method": "GET",
        "url": f"https://erp.example/api/{trigger}",
        "status": 200,
        "ok": True,
        "duration_ms": 12.5,
        "client_data_merged": {},
        "warnings": [],
        **extra,
    }


async def fill(store: Any) -> None:
    """Two companies, the same session id in both, logs of every state, keys, secrets, a sign-in."""
    from webhook_dsl.storage.base import hash_api_key

    await store.put_session(
        "S1",
        company_id="acme",
        assistant_id="asst_1",
        client_data={"customer": "Ana Lima", "nested": {"list": [1, 2.5, None, True]}, "text": "é😀", "big": 2**70},
    )
    await store.put_session("S2", company_id="acme", assistant_id="asst_2")
    await store.put_session("S1", company_id="globex", client_data={"plan": "gold"})
    for i in range(4):
        await store.append_log("S1", record(AT + 60 * i, f"check_order_{i}"), company_id="acme")
    merged = record(AT + 240, "place_order", client_data_merged={"last_order": "O-1"})
    await store.finish_call("S1", {"last_order": "O-1"}, merged, company_id="acme")
    begun = await store.begin_call("S1", record(AT + 300, "refund", expires_at=AT + 330), company_id="acme")
    await store.finish_call("S1", {}, record(AT + 301, "refund"), company_id="acme", call_seq=begun)
    await store.begin_call("S1", record(AT + 360, "cancel", expires_at=AT + 390), company_id="acme")  # never finished
    await store.append_log("S2", record(AT + 30, "check_order_s2"), company_id="acme")
    for i in range(3):
        await store.append_log("S1", record(AT + 90 * i, f"ticket_{i}"), company_id="globex")
    await store.add_api_key("acme", hash_api_key("wdsl_fixture-key-acme"), "wdsl_fixtur", "ci")
    await store.add_api_key("globex", hash_api_key("wdsl_fixture-key-globex"), "wdsl_fixtur", "")
    await store.set_secret("acme", "erp_token", "fixture-erp-token-0001")
    await store.set_secret("acme", "acme_pin", "fixture-pin-00002")
    await store.set_secret("globex", "helpdesk_api_key", "fixture-helpdesk-0003")
    await store.add_dashboard_session("t" * 64, "acme", hash_api_key("wdsl_fixture-key-acme"), SIGN_IN_EXPIRES)
    await store.probe_write()


def write_sqlite() -> None:
    from webhook_dsl.storage.sqlite import _SCHEMA_VERSION, SQLiteStore

    assert _SCHEMA_VERSION == 5, "run with the previous release's code first on the path (see the docstring)"
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "v5.db"

        async def main() -> None:
            store = SQLiteStore(path)
            try:
                await fill(store)
            finally:
                await store.close()

        asyncio.run(main())
        db = sqlite3.connect(path)
        version = db.execute("PRAGMA user_version").fetchone()[0]
        lines = [
            f"-- A SQLite database as webhook-dsl c5037f3 (schema version {version}) wrote it; see make_v5.py.",
            *db.iterdump(),
            f"PRAGMA user_version = {version};",  # iterdump leaves it out
        ]
        db.close()
    (HERE / "sqlite_v5.sql").write_text("\n".join(lines) + "\n")


def write_postgres(url: str) -> None:
    import asyncpg

    from webhook_dsl.storage.postgres import PostgresStore

    async def main() -> None:
        connection = await asyncpg.connect(url)
        await connection.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        store = PostgresStore(url, schema=SCHEMA)
        try:
            await fill(store)
        finally:
            await store.close()
        try:
            dump = subprocess.run(
                ["pg_dump", "--schema", SCHEMA, "--inserts", "--no-owner", "--no-privileges", url],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        finally:
            await connection.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
            await connection.close()
        header = f"-- PostgreSQL schema {SCHEMA} as webhook-dsl c5037f3 (no schema_version) wrote it; see make_v5.py.\n"
        # \restrict and \unrestrict are psql commands (newer pg_dump writes them), not SQL: a driver cannot run them.
        kept = [line for line in dump.splitlines() if not line.startswith(("\\restrict", "\\unrestrict"))]
        (HERE / "postgres_v5.sql").write_text(header + "\n".join(kept) + "\n")

    asyncio.run(main())


if __name__ == "__main__":
    write_sqlite()
    if len(sys.argv) > 1:
        write_postgres(sys.argv[1])
