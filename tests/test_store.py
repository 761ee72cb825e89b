"""The Store contract, run against every backend: SQLite always, PostgreSQL when WEBHOOK_DSL_TEST_POSTGRES is set."""

from __future__ import annotations

import asyncio
import json
import math
import os
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.service_support import BACKENDS, StoreFactory
from webhook_dsl.storage.base import (
    AmbiguousSession,
    SecretInfo,
    SessionNotFound,
    Store,
    hash_api_key,
    new_api_key,
    secret_problem,
)
from webhook_dsl.storage.sqlite import SQLiteStore

MAX_EXAMPLES = int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "200"))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    factory = StoreFactory(request.param, tmp_path)
    yield factory
    factory.drop()


def run(factory: StoreFactory, test: Callable[[Store], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        store = factory()
        try:
            return await test(store)
        finally:
            await store.close()

    return asyncio.run(main())


def record(trigger: str = "t", **extra: Any) -> dict[str, Any]:
    return {"at": 1_700_000_000.5, "trigger": trigger, "method": "GET", "url": "u", "ok": True, **extra}


def test_put_creates_then_merges_never_replaces(backend: StoreFactory) -> None:
    async def test(store: Store) -> None:
        created = await store.put_session("S1", company_id="c1", assistant_id="a1", client_data={"a": 1, "b": 2})
        assert (created.id, created.company_id, created.assistant_id, created.client_data) == (
            "S1",
            "c1",
            "a1",
            {"a": 1, "b": 2},
        )
        updated = await store.put_session("S1", company_id="c1", client_data={"b": 3, "c": {"x": [1, None]}})
        assert updated.client_data == {"a": 1, "b": 3, "c": {"x": [1, None]}}
        assert updated.assistant_id == "a1"  # not given: kept
        assert updated.created_at == created.created_at and updated.updated_at >= created.updated_at
        again = await store.get_session("S1", company_id="c1")
        assert again.client_data == updated.client_data
        merged = await store.merge_client_data("S1", {"a": "one"}, company_id="c1")
        assert merged.client_data["a"] == "one" and merged.client_data["b"] == 3
        with pytest.raises(SessionNotFound):
            await store.get_session("nope", company_id="c1")
        with pytest.raises(SessionNotFound):
            await store.merge_client_data("nope", {"a": 1}, company_id="c1")

    run(backend, test)


def test_json_values_round_trip(backend: StoreFactory) -> None:
    data = {"big": 2**62, "float": 1.5, "text": 'ünï "q" \\ \n', "list": [True, False, None], "empty": {}}

    async def test(store: Store) -> None:
        await store.put_session("S", company_id="c", client_data=data)
        assert (await store.get_session("S", company_id="c")).client_data == data
        await store.put_session("S", company_id="c", client_data={"nul": "a\x00b"})
        nul = (await store.get_session("S", company_id="c")).client_data["nul"]
        # jsonb holds no U+0000 and no lone surrogate: PostgreSQL keeps U+FFFD instead (documented).
        assert nul == ("a\x00b" if backend.kind == "sqlite" else "a\ufffdb")
        await store.merge_client_data("S", {"lone": "x\ud800y", "pair": "\U0001f600"}, company_id="c")
        stored = (await store.get_session("S", company_id="c")).client_data
        assert stored["lone"] == ("x\ud800y" if backend.kind == "sqlite" else "x\ufffdy")  # noqa: RUF034
        assert stored["pair"] == "\U0001f600"
        seq = await store.append_log("S", record(body="x\x00y"), company_id="c")
        assert (await store.logs("S", company_id="c"))[-1] == {"seq": seq, **record(body="x\x00y"), "state": "recorded"}

    run(backend, test)


def test_companies_never_see_each_others_sessions_or_logs(backend: StoreFactory) -> None:
    async def test(store: Store) -> None:
        await store.put_session("S1", company_id="a", assistant_id="x", client_data={"owner": "a"})
        await store.put_session("S1", company_id="b", client_data={"owner": "b"})
        await store.put_session("only-a", company_id="a")
        assert (await store.get_session("S1", company_id="a")).client_data == {"owner": "a"}
        assert (await store.get_session("S1", company_id="b")).client_data == {"owner": "b"}
        assert (await store.get_session("S1", company_id="b")).assistant_id == ""
        with pytest.raises(SessionNotFound):
            await store.get_session("only-a", company_id="b")
        await store.finish_call("S1", {"merged": "a"}, record("ta"), company_id="a")
        await store.finish_call("S1", {}, record("tb"), company_id="b")
        assert [r["trigger"] for r in await store.logs("S1", company_id="a")] == ["ta"]
        assert [r["trigger"] for r in await store.logs("S1", company_id="b")] == ["tb"]
        assert "merged" not in (await store.get_session("S1", company_id="b")).client_data
        with pytest.raises(SessionNotFound):  # a call can only finish on a session of its company
            await store.finish_call("only-a", {"x": 1}, record(), company_id="b")
        assert await store.logs("only-a", company_id="b") == []
        assert {s.id for s in await store.list_sessions("a")} == {"S1", "only-a"}
        assert [s.id for s in await store.list_sessions("b")] == ["S1"]
        assert await store.list_sessions("nobody") == []
        # Without a company (the single-tenant command line), an id two companies use is ambiguous.
        with pytest.raises(AmbiguousSession):
            await store.get_session("S1")
        assert (await store.get_session("only-a")).company_id == "a"

    run(backend, test)


def test_finish_call_merges_and_logs_together(backend: StoreFactory) -> None:
    async def test(store: Store) -> None:
        await store.put_session("S", company_id="c", client_data={"keep": 1})
        seq1 = await store.finish_call("S", {"last": "A-1"}, record("one"), company_id="c")
        seq2 = await store.finish_call("S", {}, record("two"), company_id="c")
        assert seq2 > seq1
        assert (await store.get_session("S", company_id="c")).client_data == {"keep": 1, "last": "A-1"}
        logs = await store.logs("S", company_id="c")
        assert [(r["seq"], r["trigger"]) for r in logs] == [(seq1, "one"), (seq2, "two")]
        with pytest.raises(SessionNotFound):  # nothing logged when the merge has no session
            await store.finish_call("missing", {"x": 1}, record("three"), company_id="c")
        assert await store.logs("missing", company_id="c") == []

    run(backend, test)


def test_logs_are_the_most_recent_oldest_first(backend: StoreFactory) -> None:
    async def test(store: Store) -> None:
        await store.put_session("S", company_id="c")
        for i in range(12):
            await store.append_log("S", record(f"t{i}"), company_id="c")
        recent = await store.logs("S", 5, company_id="c")
        assert [r["trigger"] for r in recent] == [f"t{i}" for i in range(7, 12)]
        assert len(await store.logs("S", 100, company_id="c")) == 12

    run(backend, test)


def test_list_sessions_counts_calls_newest_first(backend: StoreFactory) -> None:
    async def test(store: Store) -> None:
        for name in ("old", "mid", "new"):
            await store.put_session(name, company_id="c", assistant_id="asst")
            await asyncio.sleep(0.01)
        await store.finish_call("old", {"x": 1}, record(), company_id="c")  # updated: now the newest
        await store.append_log("old", record(), company_id="c")
        rows = await store.list_sessions("c")
        assert [r.id for r in rows] == ["old", "new", "mid"]
        assert [r.calls for r in rows] == [2, 0, 0]
        assert rows[0].last_call_at == record()["at"] and rows[1].last_call_at is None
        assert [r.id for r in await store.list_sessions("c", limit=1, offset=1)] == ["new"]
        assert rows[0].to_dict()["assistant_id"] == "asst"

    run(backend, test)


def test_concurrent_merges_lose_nothing(backend: StoreFactory) -> None:
    """60 writers at once on one session, through merges, puts and call finishes: every key survives."""

    async def test(store: Store) -> None:
        await store.put_session("S", company_id="c")

        async def writer(i: int) -> None:
            if i % 3 == 0:
                await store.merge_client_data("S", {f"m{i}": i}, company_id="c")
            elif i % 3 == 1:
                await store.put_session("S", company_id="c", client_data={f"p{i}": i})
            else:
                await store.finish_call("S", {f"f{i}": i}, record(f"t{i}"), company_id="c")

        await asyncio.gather(*(writer(i) for i in range(60)))
        data = (await store.get_session("S", company_id="c")).client_data
        assert len(data) == 60
        assert len(await store.logs("S", 1000, company_id="c")) == 20

    run(backend, test)


def test_concurrent_merges_from_three_processes_lose_nothing(backend: StoreFactory) -> None:
    """Two other processes merge into the session while this one does: 300 keys, none lost (SQLite's file
    lock, PostgreSQL's row lock). All three start merging together, once each has its store open."""
    backend.create_schema()
    script = (
        "import asyncio, sys\n"
        "from webhook_dsl.storage.database_url import open_store\n"
        "async def main():\n"
        "    store = open_store(sys.argv[1])\n"
        "    try:\n"
        "        await store.get_session('S', company_id='c')\n"
        "        print('ready', flush=True)\n"
        "        sys.stdin.readline()\n"
        "        for i in range(100):\n"
        "            await store.merge_client_data('S', {f'{sys.argv[2]}{i}': i}, company_id='c')\n"
        "    finally:\n"
        "        await store.close()\n"
        "asyncio.run(main())\n"
    )

    async def test(store: Store) -> None:
        await store.put_session("S", company_id="c", assistant_id="a")
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", script, backend.url, p], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
            for p in "ab"
        ]
        try:
            for process in processes:
                assert process.stdout and await asyncio.to_thread(process.stdout.readline) == "ready\n"
            for process in processes:
                assert process.stdin
                process.stdin.write("go\n")
                process.stdin.close()
            for i in range(100):
                await store.merge_client_data("S", {f"c{i}": i}, company_id="c")
        finally:
            for process in processes:
                if process.stdin and not process.stdin.closed:
                    process.stdin.close()
            codes = [await asyncio.to_thread(process.wait, 60) for process in processes]
            for process in processes:
                if process.stdout:
                    process.stdout.close()
        assert codes == [0, 0]
        data = (await store.get_session("S", company_id="c")).client_data
        assert data == {f"{p}{i}": i for p in "abc" for i in range(100)}

    run(backend, test)


def test_api_keys_are_stored_hashed_and_scoped(backend: StoreFactory) -> None:
    key_a, key_b = new_api_key(), new_api_key()
    assert key_a.startswith("wdsl_") and len(key_a) > 40 and key_a != key_b

    async def test(store: Store) -> None:
        await store.add_api_key("a", hash_api_key(key_a), key_a[:11], "backend")
        await store.add_api_key("b", hash_api_key(key_b), key_b[:11])
        assert await store.company_for_key(hash_api_key(key_a)) == "a"
        assert await store.company_for_key(hash_api_key(key_b)) == "b"
        assert await store.company_for_key(hash_api_key("wdsl_guess")) is None
        assert await store.company_for_key(key_a) is None  # the key itself is not what is stored
        listed = await store.api_keys("a")
        assert [(k.company_id, k.prefix, k.label) for k in listed] == [("a", key_a[:11], "backend")]
        assert await store.revoke_api_key("b", key_a[:11]) == 0  # not b's key
        assert await store.revoke_api_key("a", "") == 0
        assert await store.revoke_api_key("a", key_a[:11]) == 1
        assert await store.company_for_key(hash_api_key(key_a)) is None
        assert await store.company_for_key(hash_api_key(key_b)) == "b"
        await store.ping()

    run(backend, test)


def test_api_key_hashes_are_sha256_hex() -> None:
    assert hash_api_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_sqlite_database_of_the_first_version_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE sessions (id TEXT PRIMARY KEY, company_id TEXT NOT NULL DEFAULT '',
            assistant_id TEXT NOT NULL DEFAULT '', client_data TEXT NOT NULL DEFAULT '{}',
            created_at REAL NOT NULL, updated_at REAL NOT NULL);
        CREATE TABLE call_logs (seq INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT NOT NULL,
            at REAL NOT NULL, record TEXT NOT NULL);
        CREATE INDEX call_logs_by_session ON call_logs (session_id, seq);
        """
    )
    db.execute("INSERT INTO sessions VALUES ('S1', 'cmp_42', 'asst', ?, 1.0, 2.0)", (json.dumps({"k": "v"}),))
    db.execute("INSERT INTO call_logs (session_id, at, record) VALUES ('S1', 3.0, ?)", (json.dumps(record()),))
    db.commit()
    db.close()
    store = SQLiteStore(path)
    try:
        session = store.get_session_sync("S1", company_id="cmp_42")
        assert (session.assistant_id, session.client_data, session.created_at) == ("asst", {"k": "v"}, 1.0)
        assert [r["trigger"] for r in store.logs_sync("S1", company_id="cmp_42")] == ["t"]
        store.put_session_sync("S1", company_id="other")  # now possible: a second company's S1
        assert store.get_session_sync("S1", company_id="other").client_data == {}
    finally:
        store.close_sync()
    SQLiteStore(path).close_sync()  # opening a migrated database again changes nothing


def test_sqlite_keeps_integers_beyond_64_bits_exact(tmp_path: Path) -> None:
    """Regression: orjson reads integers beyond 64 bits as floats; stored client_data must stay exact."""
    from webhook_dsl.storage.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "big.db")
    big = 123456789012345678901234567890
    store.put_session_sync("s", company_id="c", assistant_id="a", client_data={"id": big, "n": 2**63 - 1})
    assert store.get_session_sync("s", company_id="c").client_data == {"id": big, "n": 2**63 - 1}
    store.close_sync()


def test_sqlite_a_busy_database_never_blocks_the_event_loop(tmp_path: Path) -> None:
    """Another process holding the write lock: the batch waits on the worker thread, the loop keeps
    running, and once the lock is released every write lands."""
    path = tmp_path / "busy.db"
    other = sqlite3.connect(path, isolation_level=None)

    async def main() -> tuple[int, dict[str, Any]]:
        store = SQLiteStore(path)
        try:
            await store.put_session("s", company_id="c", client_data={})
            other.execute("BEGIN IMMEDIATE")  # the other "process" takes the write lock
            writes = asyncio.gather(*(store.merge_client_data("s", {f"k{i}": i}) for i in range(20)))
            ticks = 0
            for _ in range(20):  # the loop is free while the writes wait
                await asyncio.sleep(0.005)
                ticks += 1
            assert not writes.done()
            other.execute("COMMIT")
            await asyncio.wait_for(writes, timeout=10)
            return ticks, (await store.get_session("s")).client_data
        finally:
            await store.close()

    ticks, data = asyncio.run(main())
    other.close()
    assert ticks == 20
    assert data == {f"k{i}": i for i in range(20)}


def test_sqlite_wal_is_checkpointed_off_the_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop's writer never checkpoints (that fsyncs); every _CHECKPOINT_EVERY group commits the
    worker thread does, so the WAL is kept short without the event loop waiting on the disk."""
    import threading

    import webhook_dsl.storage.sqlite as store_module

    monkeypatch.setattr(store_module, "_CHECKPOINT_EVERY", 10)
    ran_on: list[str] = []
    original = SQLiteStore._checkpoint

    def spy(self: SQLiteStore) -> None:
        ran_on.append(threading.current_thread().name)
        original(self)

    monkeypatch.setattr(SQLiteStore, "_checkpoint", spy)

    async def main() -> int:
        store = SQLiteStore(tmp_path / "wal.db")
        try:
            autocheckpoint = store._loop_writer.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
            await store.put_session("s", company_id="c", client_data={})
            for i in range(35):  # one write per group commit: 36 commits
                await store.append_log("s", {"n": i})
                for _ in range(1000):  # the loop goes on; here we wait so that none is skipped
                    if not store._checkpoint_queued:
                        break
                    await asyncio.sleep(0.005)
            return int(autocheckpoint)
        finally:
            await store.close()

    assert asyncio.run(main()) == 0
    assert len(ran_on) == 3, ran_on
    assert all(name.startswith("webhook-dsl-sqlite") for name in ran_on)


def test_sqlite_a_failing_write_fails_only_its_caller(tmp_path: Path) -> None:
    """One group commit, one write that cannot succeed: it gets its error, every other write lands.
    A batch without failures runs without savepoints; the failing batch is run again with them."""
    statements: list[str] = []

    async def main() -> tuple[list[Any], dict[str, Any], list[dict[str, Any]]]:
        store = SQLiteStore(tmp_path / "fail.db")
        try:
            await store.put_session("s", company_id="c", client_data={"keep": 0})
            store._loop_writer.set_trace_callback(statements.append)
            await asyncio.gather(*(store.finish_call("s", {f"k{i}": i}, record(f"t{i}"), company_id="c")
                                   for i in range(5)))
            clean = list(statements)
            statements.clear()
            outcomes = await asyncio.gather(
                store.finish_call("s", {"a": 1}, record("a"), company_id="c"),
                store.finish_call("missing", {"x": 1}, record("lost"), company_id="c"),
                store.finish_call("s", {"b": 2}, record("b"), company_id="c"),
                return_exceptions=True,
            )
            assert not any("SAVEPOINT" in s for s in clean), clean
            assert sum(s.startswith("COMMIT") for s in clean) == 1
            assert sum("SAVEPOINT" in s for s in statements) == 3  # the second run, one per write
            session = await store.get_session("s", company_id="c")
            return outcomes, session.client_data, await store.logs("s", company_id="c")
        finally:
            await store.close()

    outcomes, data, logs = asyncio.run(main())
    assert isinstance(outcomes[0], int) and isinstance(outcomes[2], int)
    assert isinstance(outcomes[1], SessionNotFound)
    assert data == {"keep": 0, **{f"k{i}": i for i in range(5)}, "a": 1, "b": 2}
    assert [r["trigger"] for r in logs] == [*(f"t{i}" for i in range(5)), "a", "b"]
    assert [r["seq"] for r in logs] == sorted({outcomes[0], outcomes[2], *(r["seq"] for r in logs)})


json_leaves = (st.none() | st.booleans() | st.integers(-(2**80), 2**80)
               | st.floats(allow_nan=False, allow_infinity=False) | st.text())
json_data = st.recursive(json_leaves, lambda inner: st.lists(inner, max_size=3)
                         | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=6)
client_keys = st.text(max_size=6) | st.sampled_from(['a"b', "a\\b", "a.b", "$", "[0]", "tab\t", "é😀", "", " "])


@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(client_keys, json_data, max_size=4), st.lists(st.dictionaries(client_keys, json_data,
                                                                                        max_size=4), max_size=4))
def test_sqlite_call_merges_equal_dict_update(initial: dict[str, Any], updates: list[dict[str, Any]]) -> None:
    """Merging a response's client_data (json_set in SQL, or read-modify-write for keys a JSON path
    cannot name) does exactly what dict.update does, value for value, keys in order."""
    expected = dict(initial)
    for update in updates:
        expected.update(update)

    async def main() -> dict[str, Any]:
        store = _MERGE_STORE.setdefault("store", SQLiteStore(":memory:"))
        session = f"s{len(_MERGE_STORE)}"
        _MERGE_STORE[session] = True
        await store.put_session(session, company_id="c", client_data=initial)
        for update in updates:
            await store.finish_call(session, update, record(), company_id="c")
        return (await store.get_session(session, company_id="c")).client_data

    stored = _MERGE_LOOP.run_until_complete(main())
    assert stored == expected
    assert list(stored) == list(expected)


def test_sqlite_merge_into_client_data_sqlite_json_cannot_read(tmp_path: Path) -> None:
    """client_data the stdlib wrote with NaN (not JSON, so SQLite's json_set refuses it) still merges."""
    store = SQLiteStore(tmp_path / "nan.db")
    store.put_session_sync("s", company_id="c", client_data={"big": 2**70, "nan": math.nan})
    text = store._connection.execute("SELECT client_data FROM sessions").fetchone()[0]
    assert "NaN" in text
    asyncio.run(store.finish_call("s", {"k": "v"}, record(), company_id="c"))
    data = store.get_session_sync("s", company_id="c").client_data
    assert data["big"] == 2**70 and math.isnan(data["nan"]) and data["k"] == "v"
    assert len(store.logs_sync("s", company_id="c")) == 1
    store.close_sync()


_MERGE_STORE: dict[str, Any] = {}
_MERGE_LOOP = asyncio.new_event_loop()


def test_sqlite_wal_is_truncated_once_long(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A passive checkpoint leaves the WAL file as long as it was (under steady load it grew without
    end); past the threshold the checkpoint truncates it, unless a reader is in the way, and then it
    gives up quickly, leaves the connection's lock timeout as it was, and the next one tries again."""
    import webhook_dsl.storage.sqlite as store_module

    path = tmp_path / "long.db"
    wal = Path(f"{path}-wal")
    store = SQLiteStore(path)

    async def commits(n: int) -> None:
        await store.put_session("s", company_id="c", client_data={})
        for i in range(n):
            await store.finish_call("s", {"k": i}, record(), company_id="c")

    asyncio.run(commits(30))
    monkeypatch.setattr(store_module, "_WAL_TRUNCATE_FRAMES", 10**9)
    store._checkpoint()  # below the threshold: passive only
    assert wal.stat().st_size > 0

    monkeypatch.setattr(store_module, "_WAL_TRUNCATE_FRAMES", 10)
    monkeypatch.setattr(store_module, "_TRUNCATE_WAIT_MS", 20)
    asyncio.run(commits(5))
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM call_logs").fetchone()  # holds its snapshot
    store._checkpoint()
    assert wal.stat().st_size > 0  # not truncated under a reader
    assert store._connection.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
    reader.execute("COMMIT")
    reader.close()

    store._checkpoint()
    assert wal.stat().st_size == 0
    assert len(store.logs_sync("s", 100, company_id="c")) == 35
    assert store.get_session_sync("s", company_id="c").client_data == {"k": 4}
    store.close_sync()


_FINISH_KEYS = st.sampled_from(["k", "x", 'q"uote', "back\\slash", "n"])


@settings(max_examples=max(20, MAX_EXAMPLES // 4), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["s1", "s2", "gone"]),
                          st.dictionaries(_FINISH_KEYS, json_leaves, max_size=3)),
                min_size=1, max_size=12))
def test_sqlite_call_finishes_in_one_group_commit_equal_one_by_one(calls: list[tuple[str, dict[str, Any]]]) -> None:
    """Finishes queued in one turn of the loop share one group commit; the outcome must be what writing
    them one at a time, in order, gives: each caller gets its own log's seq or its own error (a merge
    into a missing session fails alone), client_data equals dict.update in order, logs keep their order."""
    expected: dict[str, dict[str, Any]] = {"s1": {"keep": 1}, "s2": {}}
    logged: dict[str, list[str]] = {"s1": [], "s2": []}
    for i, (session, update) in enumerate(calls):
        if session in expected:  # a merge into a missing session fails, and nothing of that call is kept
            expected[session].update(update)
            logged[session].append(f"t{i}")
        elif not update:  # nothing to merge: the log is written (the company is known, no lookup)
            logged.setdefault(session, []).append(f"t{i}")

    async def main() -> tuple[list[Any], dict[str, Any], dict[str, list[dict[str, Any]]]]:
        store = SQLiteStore(":memory:")
        try:
            await store.put_session("s1", company_id="c", client_data={"keep": 1})
            await store.put_session("s2", company_id="c")
            outcomes = await asyncio.gather(
                *(store.finish_call(s, u, record(f"t{i}"), company_id="c") for i, (s, u) in enumerate(calls)),
                return_exceptions=True,
            )
            data = {s: (await store.get_session(s, company_id="c")).client_data for s in ("s1", "s2")}
            logs = {s: await store.logs(s, 100, company_id="c") for s in logged}
            return outcomes, data, logs
        finally:
            await store.close()

    outcomes, data, logs = _MERGE_LOOP.run_until_complete(main())
    assert data == expected
    assert {s: [r["trigger"] for r in rows] for s, rows in logs.items()} == logged
    seq_of = {r["trigger"]: r["seq"] for rows in logs.values() for r in rows}
    for i, ((session, update), outcome) in enumerate(zip(calls, outcomes, strict=True)):
        if session == "gone" and update:
            assert isinstance(outcome, SessionNotFound)
        else:
            assert outcome == seq_of[f"t{i}"]


# -- company secrets -------------------------------------------------------------------------------

VALUE_A = "erp-SECRET-a-5f1c"
VALUE_B = "erp-SECRET-b-77d0"


def test_secrets_are_written_listed_by_name_and_scoped_by_company(backend: StoreFactory) -> None:
    async def test(store: Store) -> None:
        assert await store.secret_names("a") == [] and await store.company_secrets("a") == {}
        await store.set_secret("a", "erp_token", VALUE_A)
        await store.set_secret("a", "Zeta", "zeta-value-1234")
        await store.set_secret("b", "erp_token", VALUE_B)
        listed = await store.secret_names("a")
        assert [s.name for s in listed] == ["Zeta", "erp_token"]  # byte order on both backends
        assert all(isinstance(s, SecretInfo) and s.updated_at > 1_700_000_000 for s in listed)
        assert listed[1].to_dict() == {"name": "erp_token", "updated_at": listed[1].updated_at}
        assert VALUE_A not in repr(listed) and VALUE_A not in json.dumps([s.to_dict() for s in listed])
        assert await store.company_secrets("a") == {"erp_token": VALUE_A, "Zeta": "zeta-value-1234"}
        assert await store.company_secrets("b") == {"erp_token": VALUE_B}
        secrets = await store.company_secrets("a")
        assert VALUE_A not in repr(secrets) and VALUE_A not in str(secrets) and "erp_token" in repr(secrets)

        await asyncio.sleep(0.01)
        await store.set_secret("a", "erp_token", "replaced-value-9")  # insert or replace
        again = {s.name: s.updated_at for s in await store.secret_names("a")}
        assert again["erp_token"] > listed[1].updated_at and len(again) == 2
        assert (await store.company_secrets("a"))["erp_token"] == "replaced-value-9"

        assert await store.delete_secret("b", "Zeta") is False  # a's, not b's
        assert await store.delete_secret("a", "erp_token") is True
        assert await store.delete_secret("a", "erp_token") is False
        assert await store.company_secrets("a") == {"Zeta": "zeta-value-1234"}
        assert await store.company_secrets("b") == {"erp_token": VALUE_B}
        assert await store.company_secrets("nobody") == {}

    run(backend, test)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("1st", VALUE_A),
        ("erp-token", VALUE_A),
        ("x" * 65, VALUE_A),
        ("", VALUE_A),
        ("erp_token", "short"),
        ("erp_token", ""),
        ("erp_token", VALUE_A + "\r\nX-Injected: 1"),
        ("erp_token", VALUE_A + "\x00"),
        ("erp_token", VALUE_A + "\t"),
        ("erp_token", VALUE_A + "\ud800"),
    ],
)
def test_stores_refuse_what_secret_problem_refuses(backend: StoreFactory, name: str, value: str) -> None:
    async def test(store: Store) -> None:
        with pytest.raises(ValueError) as caught:
            await store.set_secret("a", name, value)
        assert str(caught.value) == secret_problem(name, value)
        assert VALUE_A not in str(caught.value)
        assert await store.company_secrets("a") == {}

    run(backend, test)


def test_sqlite_secrets_have_sync_twins(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    try:
        store.set_secret_sync("a", "erp_token", VALUE_A)
        assert [s.name for s in store.secret_names_sync("a")] == ["erp_token"]
        assert store.company_secrets_sync("a") == {"erp_token": VALUE_A}
        assert store.delete_secret_sync("a", "erp_token") and not store.delete_secret_sync("a", "erp_token")
        with pytest.raises(ValueError, match="at least"):
            store.set_secret_sync("a", "erp_token", "x")
    finally:
        store.close_sync()


def test_sqlite_secrets_are_read_with_one_indexed_query(tmp_path: Path) -> None:
    """company_secrets runs on every call of a trigger that uses $secrets: one statement, by primary key."""
    store = SQLiteStore(tmp_path / "s.db")
    statements: list[str] = []

    async def main() -> dict[str, str]:
        await store.set_secret("a", "erp_token", VALUE_A)
        assert store._reader is not None
        store._reader.set_trace_callback(statements.append)
        return await store.company_secrets("a")

    try:
        assert asyncio.run(main()) == {"erp_token": VALUE_A}
        assert len(statements) == 1, statements
        (statement,) = statements  # as traced, with the company filled in
        plan = store._connection.execute(f"EXPLAIN QUERY PLAN {statement}").fetchall()
        assert [row[-1] for row in plan] == ["SEARCH secrets USING PRIMARY KEY (company_id=?)"], plan
    finally:
        store.close_sync()


def test_sqlite_database_of_version_2_gains_the_secrets_table(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE sessions (company_id TEXT NOT NULL DEFAULT '', id TEXT NOT NULL,
            assistant_id TEXT NOT NULL DEFAULT '', client_data TEXT NOT NULL DEFAULT '{}',
            created_at REAL NOT NULL, updated_at REAL NOT NULL, PRIMARY KEY (company_id, id));
        CREATE TABLE call_logs (seq INTEGER PRIMARY KEY AUTOINCREMENT, company_id TEXT NOT NULL DEFAULT '',
            session_id TEXT NOT NULL, at REAL NOT NULL, record TEXT NOT NULL);
        CREATE TABLE api_keys (key_hash TEXT PRIMARY KEY, company_id TEXT NOT NULL, prefix TEXT NOT NULL,
            label TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL);
        PRAGMA user_version = 2;
        """
    )
    db.execute("INSERT INTO sessions VALUES ('c', 'S1', '', '{\"k\": 1}', 1.0, 2.0)")
    db.commit()
    db.close()
    store = SQLiteStore(path)
    try:
        store.set_secret_sync("c", "erp_token", VALUE_A)
        assert store.company_secrets_sync("c") == {"erp_token": VALUE_A}
        assert store.get_session_sync("S1", company_id="c").client_data == {"k": 1}
    finally:
        store.close_sync()


def test_sqlite_a_new_database_and_its_wal_and_shm_are_private(tmp_path: Path) -> None:
    """Every tenant's client_data and secrets are in the file: only its owner may read it, and its WAL and
    shared-memory files, which hold the same pages, likewise."""
    path = tmp_path / "private.db"
    store = SQLiteStore(path)
    try:
        store.put_session_sync("S1", company_id="c", client_data={"k": "v"})
        store.set_secret_sync("c", "erp_token", VALUE_A)
        files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
        assert all(f.exists() for f in files)
        assert {f.name: oct(f.stat().st_mode & 0o777) for f in files} == {f.name: "0o600" for f in files}
    finally:
        store.close_sync()
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_sqlite_an_existing_database_keeps_the_permissions_its_owner_gave_it(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    SQLiteStore(path).close_sync()
    path.chmod(0o640)
    store = SQLiteStore(path)
    try:
        store.put_session_sync("S1", company_id="c")
    finally:
        store.close_sync()
    assert oct(path.stat().st_mode & 0o777) == "0o640"
