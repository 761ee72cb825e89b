"""A minimal hand-written service doing what ``webhook-dsl serve`` does for one trigger, and nothing more.

    python benchmarks/minimal_service.py --database FILE --target http://127.0.0.1:PORT --port 8081
    python benchmarks/minimal_service.py --hello --port 8082        # only POST /hello: the HTTP layer's ceiling

It is the yardstick of ``service_bench.py``: what the trigger endpoint would cost written by hand on the
same stack (Starlette on uvicorn, httptools, uvloop, pyreqwest, SQLite). ``POST /session/ID/triggers/
check_order`` takes a bearer API key, looks its SHA-256 up in a dict loaded from the database's
``api_keys`` at start, reads the session's client_data from SQLite, checks the arguments with
``jsonschema_rs``, sends ``GET TARGET/erp/api/orders/NUMBER`` with ``Authorization: Bearer <erp_token>``
through one shared pyreqwest client, masks the token (a declared secret of client_data) in the answer,
merges the answer's ``session.client_data`` and appends a log record in one transaction of a writer
thread that commits every write waiting for it together, and answers ``{"message": ...}``, the LLM's
message. It reads and writes webhook-dsl's own tables (``sessions``, ``call_logs``), so it runs on a
database that webhook-dsl created, and webhook-dsl reads what it wrote.

Left out on purpose, since they are what webhook-dsl adds: the response cap and framing checks, the
outbound guard, retries, the intent record written before sending, masking in forms other than the raw
value, per-company limits, every other route.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import queue
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import jsonschema_rs
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

TRIGGER = "check_order"
SCHEMA = {
    "type": "object",
    "properties": {"order_number": {"type": "string", "minLength": 1, "maxLength": 64}},
    "required": ["order_number"],
    "additionalProperties": False,
}
DIRECTIVE = (
    "Inform the customer of the order status clearly. If the status is 'delivered', congratulate them. "
    "If 'in_transit', provide the estimated delivery."
)
SECRET_KEY = "erp_token"
MASK = "***"
_PHRASES = {status.value: status.phrase for status in HTTPStatus}


def _json(status: int, payload: Any) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


class GroupWriter:
    """One thread owns the write connection; every write queued while it commits goes into its next
    transaction, so concurrent calls share commits and each caller still waits for its own."""

    def __init__(self, path: str) -> None:
        self._queue: queue.SimpleQueue[tuple[str, str, str, str, float, asyncio.Future[None]]] = queue.SimpleQueue()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._loop = asyncio.get_running_loop()
        threading.Thread(target=self._run, name="minimal-writer", daemon=True).start()

    def write(self, company: str, session: str, merge: str, record: str, at: float) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self._loop.create_future()
        self._queue.put((company, session, merge, record, at, future))
        return future

    def _run(self) -> None:
        db = self._db
        while True:
            batch = [self._queue.get()]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            error: BaseException | None = None
            try:
                db.execute("BEGIN IMMEDIATE")
                for company, session, merge, record, at, _ in batch:
                    db.execute(
                        "UPDATE sessions SET client_data = json_patch(client_data, ?), updated_at = ? "
                        "WHERE company_id = ? AND id = ?",
                        (merge, at, company, session),
                    )
                    db.execute(
                        "INSERT INTO call_logs (company_id, session_id, at, record, state) VALUES (?, ?, ?, ?, 'done')",
                        (company, session, at, record),
                    )
                db.execute("COMMIT")
            except sqlite3.Error as failure:
                error = failure
                if db.in_transaction:
                    db.execute("ROLLBACK")
            self._loop.call_soon_threadsafe(_settle, [item[5] for item in batch], error)


def _settle(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        if not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)


def create_app(database: str | None, target: str | None) -> Starlette:
    """The trigger route on ``database`` calling ``target``, and ``/hello``; ``/hello`` only without them."""
    state: dict[str, Any] = {}

    async def hello(request: Request) -> Response:
        await request.body()
        return _json(200, {"message": "hello"})

    async def call_trigger(request: Request) -> Response:
        authorization = request.headers.get("authorization", "")
        company = state["keys"].get(hashlib.sha256(authorization[7:].encode()).hexdigest())
        if not authorization.startswith("Bearer ") or company is None:
            return _json(401, {"error": "unauthorized"})
        if request.path_params["name"] != TRIGGER:
            return _json(404, {"error": "trigger_not_found"})
        session_id = request.path_params["session_id"]
        try:
            arguments = orjson.loads(await request.body()).get("arguments")
        except (orjson.JSONDecodeError, AttributeError):
            return _json(400, {"error": "the body must be a JSON object"})
        row = (
            state["reader"]
            .execute("SELECT client_data FROM sessions WHERE company_id = ? AND id = ?", (company, session_id))
            .fetchone()
        )
        if row is None:
            return _json(404, {"error": "session_not_found"})
        if not state["validator"].is_valid(arguments):
            return _json(200, {"message": f'The tool "{TRIGGER}" was called with invalid arguments; ask the user.'})
        client_data = orjson.loads(row[0])
        token = client_data[SECRET_KEY]
        url = f"{target}/erp/api/orders/{quote(arguments['order_number'], safe='')}"
        started = time.time()
        response = await (
            state["client"]
            .get(url)
            .header("Authorization", f"Bearer {token}")
            .timeout(timedelta(seconds=15))
            .build()
            .send()
        )
        text = await response.text()
        try:
            answer = orjson.loads(text)
            shown = orjson.dumps(answer).decode()
        except orjson.JSONDecodeError:
            answer, shown = None, text
        shown = shown.replace(token, MASK)
        merged = {}
        if 200 <= response.status < 300 and isinstance(answer, dict):
            session = answer.get("session")
            if isinstance(session, dict) and isinstance(session.get("client_data"), dict):
                merged = session["client_data"]
        ok = 200 <= response.status < 300
        record = {
            "at": started,
            "trigger": TRIGGER,
            "method": "GET",
            "url": url,
            "request_headers": {"Authorization": f"Bearer {MASK}"},
            "status": response.status,
            "response_body": shown,
            "elapsed_ms": round((time.time() - started) * 1000, 3),
            "ok": ok,
            "client_data_merged": merged,
        }
        await state["writer"].write(
            company, session_id, orjson.dumps(merged).decode(), orjson.dumps(record).decode(), started
        )
        outcome = "succeeded" if ok else "answered with an error status"
        status = f"{response.status} {_PHRASES.get(response.status, '')}".rstrip()
        message = f'The tool "{TRIGGER}" {outcome} (HTTP {status}).\nResponse:\n{shown}\nInstruction: {DIRECTIVE}'
        return _json(200, {"message": message})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        from pyreqwest.client import ClientBuilder

        if database is None:
            yield
            return
        db = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
        state["keys"] = dict(db.execute("SELECT key_hash, company_id FROM api_keys").fetchall())
        state["reader"] = db
        state["validator"] = jsonschema_rs.validator_for(SCHEMA)
        state["writer"] = GroupWriter(database)
        async with ClientBuilder().max_connections(256).build() as client:
            state["client"] = client
            yield

    routes = [Route("/hello", hello, methods=["GET", "POST"])]
    if database is not None:
        routes.insert(0, Route("/session/{session_id}/triggers/{name}", call_trigger, methods=["POST"]))
    return Starlette(routes=routes, lifespan=lifespan)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", metavar="FILE", help="a SQLite file that webhook-dsl created")
    parser.add_argument("--target", metavar="URL", help="the ERP stand-in, e.g. http://127.0.0.1:8765")
    parser.add_argument("--hello", action="store_true", help="serve only POST /hello (no database, no target)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8081, help="port to listen on (default 8081)")
    args = parser.parse_args(argv)
    if not args.hello and not (args.database and args.target):
        parser.error("give --database FILE and --target URL, or --hello")
    import uvicorn

    app = create_app(None if args.hello else args.database, None if args.hello else args.target.rstrip("/"))
    uvicorn.run(
        app, host=args.host, port=args.port, loop="uvloop", http="httptools", access_log=False, log_level="warning"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
