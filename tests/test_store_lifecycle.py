"""What a store forgets and what it keeps versions of, run against every backend (SQLite always, PostgreSQL
when WEBHOOK_DSL_TEST_POSTGRES is set): deleting a session, purging old log records, trigger versions."""

from __future__ import annotations

import asyncio
import importlib
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.service_support import BACKENDS, StoreFactory
from webhook_dsl.storage import sqlite as sqlite_module
from webhook_dsl.storage.base import SessionNotFound, Store, TriggerVersion
from webhook_dsl.storage.sqlite import SQLiteStore

AT = 1_700_000_000.0


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


def backend_module(factory: StoreFactory) -> str:
    return "webhook_dsl.storage." + ("sqlite" if factory.kind == "sqlite" else "postgres")


def record(at: float, trigger: str = "t", **extra: Any) -> dict[str, Any]:
    return {"at": at, "trigger": trigger, "method": "GET", "url": "u", "ok": True, **extra}


async def triggers_of(store: Store, company: str, session_id: str) -> list[str]:
    return [r["trigger"] for r in await store.logs(session_id, 1000, company_id=company)]


# -- delete_session -----------------------------------------------------------------------------------------------


def test_deleting_a_session_takes_its_logs_and_leaves_another_companys_session_of_the_same_id(
    backend: StoreFactory,
) -> None:
    async def test(store: Store) -> None:
        await store.put_session("S1", company_id="a", client_data={"k": "a"})
        await store.put_session("S1", company_id="b", client_data={"k": "b"})
        await store.put_session("S2", company_id="a")
        for i in range(3):
            await store.append_log("S1", record(AT + i, f"a{i}"), company_id="a")
        await store.finish_call("S1", {"merged": True}, record(AT + 3, "a3"), company_id="a")
        await store.begin_call("S1", record(AT + 4, "a4", expires_at=AT + 60), company_id="a")
        await store.append_log("S1", record(AT, "b0"), company_id="b")
        await store.append_log("S2", record(AT, "s2"), company_id="a")

        assert await store.delete_session("S1", company_id="a") == 5  # done and begun records alike
        with pytest.raises(SessionNotFound):
            await store.get_session("S1", company_id="a")
        assert await store.logs("S1", 1000, company_id="a") == []
        assert [s.id for s in await store.list_sessions("a")] == ["S2"]
        assert await triggers_of(store, "a", "S2") == ["s2"]
        other = await store.get_session("S1", company_id="b")
        assert other.client_data == {"k": "b"}
        assert await triggers_of(store, "b", "S1") == ["b0"]
        assert await store.get_session("S1") == other  # the id is no longer ambiguous

        with pytest.raises(SessionNotFound):
            await store.delete_session("S1", company_id="a")  # gone already
        with pytest.raises(SessionNotFound):
            await store.delete_session("S1", company_id="c")  # another company's S1 is not this company's
        assert await store.get_session("S1", company_id="b") == other

        recreated = await store.put_session("S1", company_id="a")
        assert recreated.client_data == {} and await store.logs("S1", 1000, company_id="a") == []

    run(backend, test)


def test_deleting_a_session_without_logs_deletes_none(backend: StoreFactory) -> None:
    async def test(store: Store) -> None:
        await store.put_session("S1", company_id="a")
        assert await store.delete_session("S1", company_id="a") == 0
        with pytest.raises(SessionNotFound):
            await store.get_session("S1", company_id="a")

    run(backend, test)


def test_a_call_begun_before_its_session_was_deleted_completes_without_bringing_anything_back(
    backend: StoreFactory,
) -> None:
    async def test(store: Store) -> None:
        await store.put_session("S1", company_id="a")
        seq = await store.begin_call("S1", record(AT, expires_at=AT + 60), company_id="a")
        await store.delete_session("S1", company_id="a")
        assert await store.finish_call("S1", {"k": 1}, record(AT), company_id="a", call_seq=seq) == seq
        assert await store.logs("S1", 1000, company_id="a") == []
        with pytest.raises(SessionNotFound):
            await store.get_session("S1", company_id="a")

    run(backend, test)


# -- purge_logs ---------------------------------------------------------------------------------------------------


def test_purge_deletes_records_before_the_cutoff_and_keeps_the_one_exactly_at_it(backend: StoreFactory) -> None:
    async def test(store: Store) -> None:
        await store.put_session("S1", company_id="a")
        ats = [AT - 100, AT - 0.5, AT, AT + 0.5, AT + 100]
        for at in ats:
            await store.append_log("S1", record(at, f"t{at}"), company_id="a")
        assert await store.purge_logs(AT) == 2
        assert [r["at"] for r in await store.logs("S1", 1000, company_id="a")] == [AT, AT + 0.5, AT + 100]
        assert await store.purge_logs(AT) == 0  # nothing left before the cutoff
        assert await store.get_session("S1", company_id="a")  # the session stays

    run(backend, test)


def test_purge_of_one_company_leaves_the_others_records(backend: StoreFactory) -> None:
    async def test(store: Store) -> None:
        for company in ("a", "b"):
            await store.put_session("S1", company_id=company)
            for i in range(4):
                await store.append_log("S1", record(AT + i, f"{company}{i}"), company_id=company)
        assert await store.purge_logs(AT + 2, company_id="a") == 2
        assert await triggers_of(store, "a", "S1") == ["a2", "a3"]
        assert await triggers_of(store, "b", "S1") == ["b0", "b1", "b2", "b3"]
        assert await store.purge_logs(AT + 2, company_id="nobody") == 0
        assert await store.purge_logs(AT + 2) == 2  # every company: b's two old ones are left
        assert await triggers_of(store, "b", "S1") == ["b2", "b3"]

    run(backend, test)


def test_purge_goes_through_many_batches_and_past_records_of_other_companies_with_the_same_time(
    backend: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of 3: records of two companies written at the same instants, in runs longer than a batch,
    so that a batch ends in the middle of records with one ``at`` and the next must still find the rest."""
    monkeypatch.setattr(f"{backend_module(backend)}._PURGE_BATCH", 3)

    async def test(store: Store) -> None:
        await store.put_session("S1", company_id="a")
        await store.put_session("S1", company_id="b")
        written: dict[str, list[str]] = {"a": [], "b": []}
        for i in range(40):
            company = "a" if i % 3 else "b"
            at = AT + i // 7  # seven records per instant
            name = f"{company}{i}"
            written[company].append(name)
            await store.append_log("S1", record(at, name), company_id=company)
        assert await store.purge_logs(AT + 4, company_id="a") == sum(1 for i in range(28) if i % 3)
        assert await triggers_of(store, "a", "S1") == [f"a{i}" for i in range(28, 40) if i % 3]
        assert await triggers_of(store, "b", "S1") == written["b"]
        assert await store.purge_logs(AT + 10) == len(written["b"]) + len(written["a"]) - 18
        assert await store.logs("S1", 1000, company_id="a") == []
        assert await store.logs("S1", 1000, company_id="b") == []

    run(backend, test)


def test_purge_of_more_records_than_one_batch_deletes_them_all(backend: StoreFactory) -> None:
    """The backend's real batch size, passed twice over."""
    batch = importlib.import_module(backend_module(backend))._PURGE_BATCH

    async def test(store: Store) -> None:
        await store.put_session("S1", company_id="a")
        old = 2 * batch + 7
        for start in range(0, old + 5, 500):  # group commits of 500 (SQLite), 8 connections (PostgreSQL)
            await asyncio.gather(
                *(
                    store.append_log("S1", record(AT + (i if i < old else 10 * old), f"t{i}"), company_id="a")
                    for i in range(start, min(start + 500, old + 5))
                )
            )
        assert await store.purge_logs(AT + old) == old
        assert sorted(await triggers_of(store, "a", "S1")) == sorted(f"t{i}" for i in range(old, old + 5))

    run(backend, test)


def test_sqlite_purge_walks_the_index_on_the_time_of_the_records(tmp_path: Path) -> None:
    """With a company named too, the planner would rather take the company's index and sort its records."""
    store = SQLiteStore(tmp_path / "s.db")
    try:
        for company in ("", " AND company_id = ?"):
            query = sqlite_module._PURGE_SELECT.format(company=company)
            arguments = (0.0, 1.0, "a", 3) if company else (0.0, 1.0, 3)
            plan = store._connection.execute(f"EXPLAIN QUERY PLAN {query}", arguments).fetchall()
            assert len(plan) == 1, plan  # no sort (a "USE TEMP B-TREE" step)
            assert plan[0][-1].endswith("INDEX call_logs_by_at (at>? AND at<?)"), plan
    finally:
        store.close_sync()


# -- trigger versions ---------------------------------------------------------------------------------------------


def test_trigger_versions_are_numbered_per_company_and_name_newest_first(backend: StoreFactory) -> None:
    async def test(store: Store) -> None:
        assert await store.trigger_versions("a", "orders") == []
        first = await store.put_trigger_version("a", "orders", '{"v": 1}', "d1")
        assert (first.company_id, first.name, first.version, first.digest, first.document) == (
            "a",
            "orders",
            1,
            "d1",
            '{"v": 1}',
        )
        await store.put_trigger_version("a", "orders", '{"v": 2}', "d2")
        await store.put_trigger_version("a", "tickets", '{"t": 1}', "t1")
        await store.put_trigger_version("b", "orders", '{"b": 1}', "b1")
        deleted = await store.put_trigger_version("a", "orders", None, "d2")
        assert deleted.version == 3 and deleted.to_dict()["deleted"] is True
        versions = await store.trigger_versions("a", "orders")
        assert [(v.version, v.digest, v.document) for v in versions] == [
            (3, "d2", None),
            (2, "d2", '{"v": 2}'),
            (1, "d1", '{"v": 1}'),
        ]
        assert versions[-1] == first  # as returned when written, created_at included
        assert [v.version for v in await store.trigger_versions("b", "orders")] == [1]
        assert await store.trigger_versions("a", "nothing") == []

    run(backend, test)


def test_current_triggers_are_the_newest_versions_that_are_not_deletions(backend: StoreFactory) -> None:
    async def test(store: Store) -> None:
        assert await store.current_triggers() == []
        await store.put_trigger_version("a", "orders", '{"v": 1}', "d1")
        await store.put_trigger_version("a", "orders", '{"v": 2}', "d2")
        tickets = await store.put_trigger_version("a", "tickets", '{"t": 1}', "t1")
        await store.put_trigger_version("b", "orders", '{"b": 1}', "b1")
        await store.put_trigger_version("b", "orders", None, "b1")

        def named(current: list[TriggerVersion]) -> dict[tuple[str, str], tuple[int, str | None]]:
            return {(v.company_id, v.name): (v.version, v.document) for v in current}

        current = await store.current_triggers()
        assert named(current) == {("a", "orders"): (2, '{"v": 2}'), ("a", "tickets"): (1, '{"t": 1}')}
        assert tickets in current
        await store.put_trigger_version("b", "orders", '{"b": 1}', "b1")  # a rollback: the old text, a new version
        await store.put_trigger_version("a", "tickets", None, "t1")
        assert named(await store.current_triggers()) == {
            ("a", "orders"): (2, '{"v": 2}'),
            ("b", "orders"): (3, '{"b": 1}'),
        }

    run(backend, test)


def test_the_triggers_revision_grows_with_every_version_of_any_company(backend: StoreFactory) -> None:
    async def test(store: Store) -> None:
        seen = [await store.triggers_revision()]
        assert seen == [0]
        for company, name, document in [("a", "x", "{}"), ("b", "x", "{}"), ("a", "x", None), ("a", "y", "{}")]:
            await store.put_trigger_version(company, name, document, "d")
            seen.append(await store.triggers_revision())
            assert seen[-1] == await store.triggers_revision()  # reading it changes nothing
        assert seen == sorted(set(seen)), seen

    run(backend, test)
    revision = run(backend, lambda store: store.triggers_revision())
    assert revision > 0  # kept in the database, not in the process


def test_concurrent_versions_of_one_trigger_from_several_stores_get_distinct_consecutive_numbers(
    backend: StoreFactory,
) -> None:
    """Four stores (own connections, own event loops, as four replicas have) write ten versions each of one
    trigger at once: forty versions numbered 1-40, each number once, and the revision counts them all."""
    stores, per_store = 4, 10
    start = threading.Barrier(stores)
    numbers: list[int] = []
    failures: list[BaseException] = []
    backend.create_schema()

    def replica(index: int) -> None:
        async def main() -> None:
            store = backend()
            try:
                await store.triggers_revision()  # connected (and the schema made) before the race
                start.wait(timeout=30)
                written = await asyncio.gather(
                    *(store.put_trigger_version("a", "orders", f'{{"n": {index}}}', f"d{i}") for i in range(per_store))
                )
                numbers.extend(v.version for v in written)
            finally:
                await store.close()

        try:
            asyncio.run(main())
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=replica, args=(i,)) for i in range(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures
    assert sorted(numbers) == list(range(1, stores * per_store + 1))

    async def check(store: Store) -> None:
        versions = await store.trigger_versions("a", "orders")
        assert [v.version for v in versions] == list(range(stores * per_store, 0, -1))
        assert await store.triggers_revision() >= stores * per_store

    run(backend, check)
