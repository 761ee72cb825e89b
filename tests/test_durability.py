"""No webhook call goes unrecorded: the intent is stored before the request leaves, a completion the store
refuses is journaled on local disk and replayed, and a call cut off between sending and recording shows
as an unknown outcome. Stores are made to fail by a wrapper (or by PostgreSQL itself, restarted); the
remote is a loopback stub that counts what it received."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.http_stub import Request, StubServer, answer
from tests.service_support import BACKENDS, POSTGRES, StoreFactory
from webhook_dsl import Runtime, SQLiteStore, compile_trigger
from webhook_dsl.storage import journal as journal_module
from webhook_dsl.storage.base import Store, StoreUnavailable
from webhook_dsl.storage.journal import CallJournal, journal_base

LOOPBACK = ["127.0.0.0/8"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    factory = StoreFactory(request.param, tmp_path)
    yield factory
    factory.drop()


def order_trigger(url: str) -> Any:
    return compile_trigger(
        {
            "name": "place_order",
            "description": "Places an order.",
            "parameters": {"type": "object", "properties": {"item": {"type": "string"}}, "required": ["item"]},
            "clientData": [],
            "webhook": {
                "url": url,
                "method": "POST",
                "body": {"item": "$item"},
                "responseDirective": "Confirm the order.",
            },
        }
    )


ORDERED = {"order": "O-1", "session": {"client_data": {"last_order": "O-1"}}}


class FailingStore:
    """A real store whose chosen methods raise ``StoreUnavailable`` while ``failing`` holds their names."""

    def __init__(self, backend: Store) -> None:
        self.backend = backend
        self.failing: set[str] = set()
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.backend, name)
        if not callable(attribute):
            return attribute

        async def method(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            if name in self.failing:
                raise StoreUnavailable(f"injected: {name} fails")
            return await attribute(*args, **kwargs)

        return method


def run(factory: StoreFactory, test: Callable[[Store], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        store = factory()
        try:
            return await test(store)
        finally:
            await store.close()

    return asyncio.run(main())


def test_no_intent_record_nothing_sent(backend: StoreFactory) -> None:
    """The intent cannot be stored: StoreUnavailable, and the remote received nothing."""

    async def test(store: Store) -> None:
        await store.put_session("S1", company_id="c", client_data={})
        failing = FailingStore(store)
        failing.failing.add("begin_call")
        async with StubServer(answer(200, ORDERED)) as server, Runtime(failing, allow_networks=LOOPBACK) as runtime:  # type: ignore[arg-type]
            with pytest.raises(StoreUnavailable):
                await runtime.call_trigger(order_trigger(server.url("/orders")), "S1", {"item": "tea"}, company_id="c")
            assert server.requests == []
        assert await store.logs("S1", company_id="c") == []

    run(backend, test)


def test_the_intent_is_stored_before_the_request_leaves(backend: StoreFactory) -> None:
    async def test(store: Store) -> None:
        await store.put_session("S1", company_id="c", client_data={})
        seen: list[list[dict[str, Any]]] = []

        async def handler(request: Request, writer: asyncio.StreamWriter) -> None:
            seen.append(await store.logs("S1", company_id="c"))  # what the log holds while the remote works
            await answer(200, ORDERED)(request, writer)

        async with StubServer(handler) as server, Runtime(store, allow_networks=LOOPBACK) as runtime:
            result = await runtime.call_trigger(order_trigger(server.url("/o")), "S1", {"item": "tea"}, company_id="c")
        [during] = seen[0]
        assert during["state"] == "in_flight" and during["status"] is None and during["url"].endswith("/o")
        [after] = await store.logs("S1", company_id="c")
        assert after["seq"] == during["seq"] == result.log_seq
        assert (after["state"], after["status"], after["ok"]) == ("recorded", 200, True)
        assert result.recorded

    run(backend, test)


def test_a_completion_the_store_refuses_is_journaled_then_replayed_once(
    backend: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The call happened: the caller gets its real result, flagged unrecorded; the record and the merge reach
    the store once it takes writes again, exactly once."""
    monkeypatch.setattr("webhook_dsl.runtime.calls._REPLAY_PAUSE_S", 0.05)

    async def test(store: Store) -> None:
        await store.put_session("S1", company_id="c", client_data={"n": 1})
        failing = FailingStore(store)
        async with StubServer(answer(200, ORDERED)) as server, Runtime(failing, allow_networks=LOOPBACK) as runtime:  # type: ignore[arg-type]
            failing.failing.add("finish_call")
            result = await runtime.call_trigger(order_trigger(server.url("/o")), "S1", {"item": "tea"}, company_id="c")
            assert len(server.requests) == 1
            assert result.call.ok and not result.recorded
            assert "succeeded" in result.message_for_llm and "O-1" in result.message_for_llm
            assert any("kept in a local journal" in w for w in result.warnings)
            assert result.to_dict()["recorded"] is False
            [pending] = await store.logs("S1", company_id="c")
            assert pending["state"] == "in_flight"
            assert runtime._journal is not None and len(runtime._journal) == 1
            await asyncio.sleep(0.2)  # still failing: replays keep failing, nothing is lost
            assert len(runtime._journal) == 1
            failing.failing.clear()
            for _ in range(100):
                if not len(runtime._journal):
                    break
                await asyncio.sleep(0.02)
            assert not len(runtime._journal)
            [stored] = await store.logs("S1", company_id="c")
            assert stored["seq"] == result.log_seq
            assert (stored["state"], stored["status"], stored["recorded_late"]) == ("recorded", 200, True)
            assert (await store.get_session("S1", company_id="c")).client_data == {"n": 1, "last_order": "O-1"}
            # the same completion again (a second replay) changes nothing
            await store.put_session("S1", company_id="c", client_data={"last_order": "changed"})
            again = await store.finish_call(
                "S1", {"last_order": "O-1"}, {"at": 1.0, "trigger": "x"}, company_id="c", call_seq=result.log_seq
            )
            assert again == result.log_seq
            assert (await store.get_session("S1", company_id="c")).client_data["last_order"] == "changed"
            assert (await store.logs("S1", company_id="c"))[0]["trigger"] == "place_order"

    run(backend, test)


def test_a_call_cut_off_between_sending_and_recording_is_an_unknown_outcome(backend: StoreFactory) -> None:
    async def test(store: Store) -> None:
        await store.put_session("S1", company_id="c", client_data={})
        now = time.time()
        seq = await store.begin_call("S1", {"at": now, "trigger": "t", "expires_at": now + 60}, company_id="c")
        old = await store.begin_call("S1", {"at": now - 90, "trigger": "t", "expires_at": now - 30}, company_id="c")
        states = {r["seq"]: r["state"] for r in await store.logs("S1", company_id="c")}
        assert states == {seq: "in_flight", old: "unknown_outcome"}

    run(backend, test)


def test_a_journal_left_by_a_dead_process_is_replayed_by_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "s.db"

    async def main() -> None:
        store = SQLiteStore(database)
        await store.put_session("S1", company_id="c", client_data={})
        seq = await store.begin_call("S1", {"at": 1.0, "trigger": "t", "expires_at": 2.0}, company_id="c")
        monkeypatch.setattr(journal_module.os, "getpid", lambda: 999_999_999)
        dead = CallJournal(journal_base(store))
        record = {"at": 3.0, "trigger": "t", "status": 201, "recorded_late": True}
        assert dead.append(
            {"session_id": "S1", "company_id": "c", "call_seq": seq, "update": {"k": 1}, "record": record}
        )
        dead._close()  # the process died: its file stays, unlocked
        monkeypatch.undo()
        async with Runtime(store) as runtime:
            assert await runtime.recover() == 1
            for _ in range(100):
                if runtime._journal is not None and not len(runtime._journal):
                    break
                await asyncio.sleep(0.02)
        [stored] = await store.logs("S1", company_id="c")
        assert (stored["state"], stored["status"]) == ("recorded", 201)
        assert (await store.get_session("S1", company_id="c")).client_data == {"k": 1}
        assert list(tmp_path.glob("*.journal")) == []
        await store.close()

    asyncio.run(main())


def test_the_journal_writes_into_space_it_allocated_when_the_disk_is_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = CallJournal(str(tmp_path / "j"), size=64 * 1024)
    assert journal.path is not None and journal.path.stat().st_size == 64 * 1024

    def full(*args: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal_module.os, "posix_fallocate", full)
    entry = {"record": {"x": "y" * 1000}}
    written = [journal.append(entry) for _ in range(80)]  # 80 KB: past the 64 KiB allocated
    assert written[:50] == [True] * 50 and written[-1] is False  # on disk while the space lasts
    assert len(journal) == 80  # and every entry in memory, for the replay
    with open(journal.path, "rb") as file:
        assert len(journal_module._read(file.fileno())) == sum(written)
    journal.forget(80)
    with open(journal.path, "rb") as file:
        assert journal_module._read(file.fileno()) == []


def test_a_torn_entry_ends_the_journal(tmp_path: Path) -> None:
    journal = CallJournal(str(tmp_path / "j"))
    for n in range(3):
        journal.append({"n": n})
    assert journal.path is not None
    data = bytearray(journal.path.read_bytes())
    last = data.rfind(b'{"n":2}')
    data[last + 3] = ord("9")  # the CRC no longer matches
    journal.path.write_bytes(bytes(data))
    with open(journal.path, "rb") as file:
        assert journal_module._read(file.fileno()) == [{"n": 0}, {"n": 1}]


def test_a_sqlite_store_opened_read_only_recovers_without_a_restart(tmp_path: Path) -> None:
    """SQLite opens a file it cannot write read-only and keeps it so; a read-only refusal reopens."""
    path = tmp_path / "s.db"
    SQLiteStore(path).close_sync()
    read_only = {"on": True}
    original = sqlite3.connect

    def connect(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        if read_only["on"] and str(database) == str(path):
            return original(f"file:{path}?mode=ro", *args, uri=True, **kwargs)
        return original(database, *args, **kwargs)

    async def main() -> None:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(sqlite3, "connect", connect)
            store = SQLiteStore(path)
            with pytest.raises(StoreUnavailable, match="readonly"):
                await store.put_session("S1", company_id="c", client_data={})
            read_only["on"] = False  # the permission is back
            for _ in range(100):
                try:
                    await store.put_session("S1", company_id="c", client_data={"a": 1})
                    break
                except StoreUnavailable:
                    await asyncio.sleep(0.02)
            assert (await store.get_session("S1", company_id="c")).client_data == {"a": 1}
            await store.probe_write()
            await store.close()

    asyncio.run(main())


def test_store_outages_are_store_unavailable(tmp_path: Path) -> None:
    """A full disk, in SQLite's words, is an outage (StoreUnavailable) with the backend's error as its cause."""

    async def main() -> None:
        store = SQLiteStore(tmp_path / "s.db")
        await store.put_session("S1", company_id="c", client_data={})
        store._loop_writer.execute("PRAGMA max_page_count = 1")  # every write that needs a page: SQLITE_FULL
        store._connection.execute("PRAGMA max_page_count = 1")
        with pytest.raises(StoreUnavailable) as raised:
            await store.put_session("S2", company_id="c", client_data={"big": "x" * 100_000})
        assert isinstance(raised.value.__cause__, sqlite3.OperationalError)
        assert "full" in str(raised.value)
        await store.close()

    asyncio.run(main())


@pytest.mark.skipif(POSTGRES is None, reason="WEBHOOK_DSL_TEST_POSTGRES is not set")
def test_a_postgres_connection_that_fails_on_release_does_not_fail_committed_work(
    backend: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """asyncpg resets a connection as the pool takes it back; when that raises after the commit, the caller
    still gets the committed result."""
    if backend.kind != "postgresql":
        pytest.skip("PostgreSQL only")
    import asyncpg

    async def test(store: Store) -> None:
        await store.put_session("S1", company_id="c", client_data={})
        seq = await store.begin_call("S1", {"at": 1.0, "trigger": "t", "expires_at": 2.0}, company_id="c")
        original = asyncpg.Pool.release

        async def release(self: Any, connection: Any, **kwargs: Any) -> None:
            await original(self, connection, **kwargs)
            raise asyncpg.exceptions.InternalClientError("cannot switch to state 15; another operation is in progress")

        monkeypatch.setattr(asyncpg.Pool, "release", release)
        done = await store.finish_call("S1", {"k": 1}, {"at": 3.0, "trigger": "t"}, company_id="c", call_seq=seq)
        monkeypatch.undo()
        assert done == seq
        assert (await store.get_session("S1", company_id="c")).client_data == {"k": 1}

    run(backend, test)


#: A pg_ctl for the test server (``.ci/run`` writes one): ``CTL stop -m fast`` and ``CTL start -w``.
PG_CTL = os.environ.get("WEBHOOK_DSL_TEST_POSTGRES_CTL")


@pytest.mark.skipif(POSTGRES is None or not PG_CTL, reason="needs WEBHOOK_DSL_TEST_POSTGRES(_CTL), as .ci/run sets")
def test_postgres_stopped_mid_call_loses_no_delivered_call(
    backend: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL stops while eight calls wait on their remote: they are delivered, their records journaled and
    stored once it is back; calls made while it is down are refused before sending; the store works again
    without being reopened."""
    if backend.kind != "postgresql":
        pytest.skip("PostgreSQL only")
    monkeypatch.setattr("webhook_dsl.runtime.calls._REPLAY_PAUSE_S", 0.1)
    assert PG_CTL is not None
    gate = asyncio.Event()

    async def gated(request: Request, writer: asyncio.StreamWriter) -> None:
        await gate.wait()
        await answer(200, ORDERED)(request, writer)

    def pg_ctl(*args: str) -> None:
        subprocess.run([PG_CTL, *args], check=True, capture_output=True, timeout=60)

    async def test(store: Store) -> None:
        await store.put_session("S1", company_id="c", client_data={})
        loop = asyncio.get_running_loop()
        async with StubServer(gated) as server, Runtime(store, allow_networks=LOOPBACK) as runtime:
            trigger = order_trigger(server.url("/o"))
            calls = [
                asyncio.create_task(runtime.call_trigger(trigger, "S1", {"item": f"i{n}"}, company_id="c"))
                for n in range(8)
            ]
            while len(server.requests) < 8:  # all eight begun and sent
                await asyncio.sleep(0.01)
            await loop.run_in_executor(None, pg_ctl, "stop", "-m", "fast")
            try:
                gate.set()
                results = await asyncio.gather(*calls)
                with pytest.raises(StoreUnavailable):  # down: refused before sending
                    await runtime.call_trigger(trigger, "S1", {"item": "refused"}, company_id="c")
                assert runtime._journal is not None and len(runtime._journal) == 8
            finally:
                await loop.run_in_executor(None, pg_ctl, "start", "-w")
            assert [r.call.ok for r in results] == [True] * 8 and not any(r.recorded for r in results)
            after = await runtime.call_trigger(trigger, "S1", {"item": "after"}, company_id="c")
            assert after.recorded
            for _ in range(200):
                if not len(runtime._journal):
                    break
                await asyncio.sleep(0.05)
            delivered = sorted(json.loads(r.body)["item"] for r in server.requests)
        logs = await store.logs("S1", limit=100, company_id="c")
        recorded = sorted(json.loads(r["request_body"])["item"] for r in logs if r["state"] == "recorded")
        assert delivered == recorded == sorted([f"i{n}" for n in range(8)] + ["after"])
        assert sum(1 for r in logs if r.get("recorded_late")) == 8
        assert (await store.get_session("S1", company_id="c")).client_data == {"last_order": "O-1"}

    run(backend, test)


def test_a_journaled_record_is_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A journaled record is the masked one: no declared secret reaches the journal file."""
    secret = "s3cr3t-token-value"
    monkeypatch.setattr("webhook_dsl.runtime.calls._REPLAY_PAUSE_S", 60)

    async def main() -> None:
        store = SQLiteStore(tmp_path / "s.db")
        await store.put_session("S1", company_id="c", client_data={"token": secret})
        failing = FailingStore(store)
        async with StubServer(answer(200, {"echo": secret})) as server:
            trigger = compile_trigger(
                {
                    "name": "t",
                    "description": "d",
                    "parameters": {"type": "object", "properties": {}},
                    "clientData": [],
                    "secrets": ["token"],
                    "webhook": {
                        "url": server.url("/x"),
                        "method": "POST",
                        "body": {"t": "$token"},
                        "responseDirective": "r",
                    },
                }
            )
            async with Runtime(failing, allow_networks=LOOPBACK) as runtime:  # type: ignore[arg-type]
                failing.failing.add("finish_call")
                result = await runtime.call_trigger(trigger, "S1", {}, company_id="c")
                assert not result.recorded and secret.encode() in server.requests[0].body
                files = list(tmp_path.glob("*.journal"))
                assert files and all(secret.encode() not in f.read_bytes() for f in files)
                assert any(b"***" in f.read_bytes() for f in files)
        await store.close()

    asyncio.run(main())


def test_a_version_4_database_gains_call_states_and_keeps_its_records(tmp_path: Path) -> None:
    """Before version 5 every record was written complete: after the upgrade they read as recorded."""
    path = tmp_path / "v4.db"
    SQLiteStore(path).close_sync()
    db = sqlite3.connect(path)
    db.executescript(
        "DROP TABLE call_logs; CREATE TABLE call_logs (seq INTEGER PRIMARY KEY AUTOINCREMENT, company_id TEXT NOT "
        "NULL DEFAULT '', session_id TEXT NOT NULL, at REAL NOT NULL, record TEXT NOT NULL); PRAGMA user_version = 4;"
    )
    db.execute(
        "INSERT INTO call_logs (company_id, session_id, at, record) VALUES ('c', 'S1', 1.0, '{\"trigger\": \"t\"}')"
    )
    db.commit()
    db.close()
    store = SQLiteStore(path)
    try:
        assert store.logs_sync("S1", company_id="c") == [{"seq": 1, "trigger": "t", "state": "recorded"}]
    finally:
        store.close_sync()


def test_the_wal_stays_within_a_few_mib_under_steady_writes(tmp_path: Path) -> None:
    """The WAL is truncated once past 4 MiB and cut back after checkpoints, so the disk headroom it needs is
    small and stated (specs/durability.md): 24 MiB of log records never make it pass 8 MiB."""
    path = tmp_path / "s.db"

    async def main() -> int:
        store = SQLiteStore(path)
        await store.put_session("S1", company_id="c", client_data={})
        largest = 0
        for n in range(3000):
            await store.append_log("S1", {"at": 1.0, "trigger": "t", "body": f"{n}" + "x" * 8000}, company_id="c")
            if n % 50 == 0:
                await asyncio.sleep(0.01)  # the worker thread checkpoints meanwhile
                while store._checkpoint_queued:  # however busy the machine: the checkpoint asked for has run
                    await asyncio.sleep(0.005)
                largest = max(largest, (tmp_path / "s.db-wal").stat().st_size)
        await store.close()
        return largest

    largest = asyncio.run(main())
    assert 0 < largest < 8 * 1024 * 1024, largest
