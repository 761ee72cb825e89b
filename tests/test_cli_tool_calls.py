"""``webhook-dsl tool-calls``: a model's tool calls, as JSON, run on a session; the replies printed in order."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.http_stub import StubServer, answer
from tests.test_cli import run
from webhook_dsl.storage.sqlite import SQLiteStore


@pytest.fixture
def stub() -> Iterator[int]:
    """An order API on loopback, in a thread of its own (the command runs its own event loop)."""
    ready = threading.Event()
    state: dict[str, object] = {}

    def serve() -> None:
        async def main() -> None:
            async with StubServer(answer(200, {"status": "shipped"})) as server:
                state["port"] = server.port
                state["stop"] = stop = asyncio.Event()
                state["loop"] = asyncio.get_running_loop()
                ready.set()
                await stop.wait()

        asyncio.run(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)
    yield int(state["port"])  # type: ignore[call-overload]
    loop: asyncio.AbstractEventLoop = state["loop"]  # type: ignore[assignment]
    loop.call_soon_threadsafe(state["stop"].set)  # type: ignore[attr-defined]
    thread.join(10)


def test_openai_chat_tool_calls_run_and_reply_in_order(tmp_path: Path, stub: int) -> None:
    triggers = tmp_path / "triggers"
    triggers.mkdir()
    (triggers / "check_order.json").write_text(
        json.dumps(
            {
                "name": "check_order",
                "description": "Look up an order.",
                "parameters": {
                    "type": "object",
                    "properties": {"order_number": {"type": "string"}},
                    "required": ["order_number"],
                },
                "webhook": {
                    "url": f"http://127.0.0.1:{stub}/orders/$order_number",
                    "method": "GET",
                    "responseDirective": "Say it.",
                },
            }
        )
    )
    database = tmp_path / "s.db"
    SQLiteStore(database).put_session_sync("S1", company_id="c")
    calls = tmp_path / "calls.json"
    calls.write_text(
        json.dumps(
            [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "check_order", "arguments": '{"order_number": "A-1"}'},
                },
                {"id": "call_2", "type": "function", "function": {"name": "check_order", "arguments": "{not json"}},
                {"id": "call_3", "type": "function", "function": {"name": "no_such_tool", "arguments": "{}"}},
            ]
        )
    )
    status, out, err = run(
        "tool-calls",
        str(calls),
        "--triggers",
        str(triggers),
        "--session",
        "S1",
        "--database",
        str(database),
        "--allow-network",
        "127.0.0.0/8",
    )
    assert status == 0, err
    replies = json.loads(out)
    assert [r["tool_call_id"] for r in replies] == ["call_1", "call_2", "call_3"]
    assert all(r["role"] == "tool" for r in replies)
    assert "shipped" in replies[0]["content"]
    assert "JSON" in replies[1]["content"] and "no_such_tool" in replies[2]["content"]
    assert len(SQLiteStore(database).logs_sync("S1", company_id="c")) >= 1


def test_calls_that_are_not_json_are_one_line(tmp_path: Path) -> None:
    calls = tmp_path / "calls.json"
    calls.write_text("[{")
    status, _, err = run("tool-calls", str(calls), "--triggers", str(tmp_path), "--session", "S1")
    assert status == 1 and "invalid JSON at line 1" in err and "Traceback" not in err
