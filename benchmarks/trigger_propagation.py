"""How long a trigger uploaded on one replica takes to be used by another, on SQLite and PostgreSQL.

Two services (``create_app`` over two store objects on one database, each on its own uvicorn server, thread
and event loop, on loopback) stand for two replicas. Each round uploads a new version on replica A
(``PUT /triggers/probe``), then asks replica B (``GET /triggers``) every 5 ms until it lists the new
description; the time from A's answer to B's first listing is the propagation time. B polls the store's
trigger revision every ``--poll`` seconds (the service's ``trigger_poll_seconds``), so the times spread
over one interval. Also timed: one reload of every stored trigger (``TriggerSync.reload``) with
``--stored`` other uploaded triggers in the store, which is what each replica does after any change (the
versions it compiled before are reused), and the same reload compiling every one (a replica's start-up).

    python benchmarks/trigger_propagation.py                 # SQLite, and PostgreSQL if configured
    python benchmarks/trigger_propagation.py --rounds 5 --poll 2 0.25
    WEBHOOK_DSL_TEST_POSTGRES=postgresql://postgres@127.0.0.1:55432/postgres python benchmarks/trigger_propagation.py

Writes ``benchmarks/results/trigger_propagation.json`` (``--json`` for elsewhere). Measured, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from webhook_dsl.runtime.catalog import TriggerCatalog  # noqa: E402
from webhook_dsl.runtime.trigger import compile_trigger  # noqa: E402
from webhook_dsl.service.app import create_app  # noqa: E402
from webhook_dsl.service.middleware import ServiceSettings  # noqa: E402
from webhook_dsl.storage.base import Store, hash_api_key, new_api_key  # noqa: E402

COMPANY = "bench"


def document(description: str, name: str = "probe") -> str:
    return json.dumps(
        {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            "webhook": {"url": "http://127.0.0.1:9/probe/$q", "method": "GET"},
        }
    )


class Backend:
    """Makes store objects over one fresh database (a SQLite file, or a PostgreSQL schema)."""

    def __init__(self, kind: str, directory: Path, postgres: str | None) -> None:
        self.kind = kind
        self.path = directory / f"{kind}.db"
        self.postgres = postgres
        self.schema = f"bench_{uuid.uuid4().hex[:12]}"

    def __call__(self) -> Store:
        if self.kind == "sqlite":
            from webhook_dsl.storage.sqlite import SQLiteStore

            return SQLiteStore(self.path)
        from webhook_dsl.storage.postgres import PostgresStore

        assert self.postgres is not None
        return PostgresStore(self.postgres, schema=self.schema, min_size=1, max_size=4)

    def drop(self) -> None:
        if self.kind != "postgresql":
            return
        import asyncpg

        async def drop() -> None:
            connection = await asyncpg.connect(self.postgres)
            try:
                await connection.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            finally:
                await connection.close()

        asyncio.run(drop())


async def _prepare(backend: Backend, key: str, stored: int) -> None:
    """The API key, and ``stored`` uploaded triggers of other companies (what every reload reads)."""
    store = backend()
    try:
        await store.add_api_key(COMPANY, hash_api_key(key), key[:11], "bench")
        for i in range(stored):
            text = document(f"stored trigger {i}", name=f"t{i}")
            await store.put_trigger_version(f"other{i % 50}", f"t{i}", text, compile_trigger(text).version)
    finally:
        await store.close()


@contextlib.contextmanager
def replica(backend: Backend, triggers: Path, poll: float) -> Iterator[tuple[str, Any, asyncio.AbstractEventLoop]]:
    """One service on a free loopback port, in its own thread and event loop; yields its URL, app and loop."""
    settings = ServiceSettings(access_log=False, trigger_poll_seconds=poll)
    app = create_app(backend(), TriggerCatalog.load(triggers), settings=settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("a replica did not start")
        time.sleep(0.01)
    listening = server.servers[0]
    port = listening.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", app, listening.get_loop()
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _listed(client: httpx.Client, description: str) -> bool:
    tools = client.get("/triggers").json()["tools"]
    return any(t["function"]["name"] == "probe" and t["function"]["description"] == description for t in tools)


def measure(backend: Backend, poll: float, rounds: int, stored: int, key: str, triggers: Path) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    times: list[float] = []
    with replica(backend, triggers, poll) as (url_a, _, _), replica(backend, triggers, poll) as (url_b, app_b, loop_b):
        with httpx.Client(base_url=url_a, headers=headers) as a, httpx.Client(base_url=url_b, headers=headers) as b:
            for i in range(rounds):
                description = f"round {i} {uuid.uuid4().hex}"
                response = a.put(
                    "/triggers/probe", content=document(description), headers={"Content-Type": "application/json"}
                )
                if response.status_code != 201:
                    raise RuntimeError(f"upload refused: {response.status_code} {response.text}")
                accepted = time.perf_counter()
                while not _listed(b, description):
                    if time.perf_counter() - accepted > 10 * poll + 10:
                        raise RuntimeError("the second replica never listed the upload")
                    time.sleep(0.005)
                times.append(time.perf_counter() - accepted)
                time.sleep(poll * (0.37 + 0.29 * (i % 3)))  # uploads land at different points of B's interval
        sync = app_b.state.trigger_sync
        reloads: list[float] = []

        async def reload_once(cold: bool = False) -> float:
            if cold:  # forget what was compiled: a replica's start-up
                sync.catalog.replace_uploads({})
            started = time.perf_counter()
            await sync.reload()
            return time.perf_counter() - started

        for _ in range(5):  # on B's own loop: a store's connections belong to it
            reloads.append(asyncio.run_coroutine_threadsafe(reload_once(), loop_b).result(timeout=60))
        cold = [asyncio.run_coroutine_threadsafe(reload_once(True), loop_b).result(timeout=600) for _ in range(3)]
    return {
        "poll_seconds": poll,
        "rounds": rounds,
        "propagation_s": {
            "median": statistics.median(times),
            "mean": statistics.fmean(times),
            "min": min(times),
            "max": max(times),
            "all": times,
        },
        "stored_triggers": stored + 1,
        "reload_s_median": statistics.median(reloads),
        "cold_reload_s_median": statistics.median(cold),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="uploads per backend and interval (default 10)")
    parser.add_argument(
        "--poll", type=float, nargs="+", default=[2.0, 0.25], help="poll intervals to try, seconds (default 2 0.25)"
    )
    parser.add_argument("--stored", type=int, default=200, help="other uploaded triggers in the store (default 200)")
    parser.add_argument("--postgres", default=os.environ.get("WEBHOOK_DSL_TEST_POSTGRES"), help="a postgresql:// URL")
    parser.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks" / "results" / "trigger_propagation.json", help="output file"
    )
    args = parser.parse_args(argv)
    kinds = ["sqlite"] + (["postgresql"] if args.postgres else [])
    results: dict[str, Any] = {
        "meta": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "method": "two create_app replicas (uvicorn, own thread and loop each) on one database; upload on A, "
            "GET /triggers on B every 5 ms until listed",
        },
        "backends": {},
    }
    if not args.postgres:
        print("PostgreSQL skipped: give --postgres URL or set WEBHOOK_DSL_TEST_POSTGRES")
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        triggers = directory / "triggers"
        triggers.mkdir()
        for kind in kinds:
            runs = []
            for poll in args.poll:
                backend = Backend(kind, directory / f"{kind}-{poll}", args.postgres)
                backend.path.parent.mkdir(parents=True, exist_ok=True)
                key = new_api_key()
                asyncio.run(_prepare(backend, key, args.stored))
                try:
                    run = measure(backend, poll, args.rounds, args.stored, key, triggers)
                finally:
                    backend.drop()
                runs.append(run)
                p = run["propagation_s"]
                print(
                    f"{kind:10} poll {poll:5.2f} s: to the second replica median {p['median']:.3f} s, "
                    f"min {p['min']:.3f}, max {p['max']:.3f} ({args.rounds} uploads); one reload of "
                    f"{run['stored_triggers']} stored triggers {run['reload_s_median'] * 1000:.1f} ms "
                    f"(each compiled already), {run['cold_reload_s_median'] * 1000:.1f} ms compiling all"
                )
            results["backends"][kind] = runs
    args.json.parent.mkdir(parents=True, exist_ok=True)
    temporary_json = args.json.with_suffix(".tmp")
    temporary_json.write_text(json.dumps(results, indent=2) + "\n")
    temporary_json.replace(args.json)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
