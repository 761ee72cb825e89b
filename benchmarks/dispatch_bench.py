"""What ``run_tool_calls`` adds to a bare ``Runtime.call_trigger``: same trigger, same session, same loopback
server, both in one run.

    python benchmarks/dispatch_bench.py [--rounds 41] [--calls 100] [--json PATH]

Each round makes ``--calls`` calls with every contender, one call of each in turn (in an order rotated
from round to round), so that a slow moment of the machine hits them alike: the bare
``call_trigger`` (arguments already a dict), and ``run_tool_calls`` given one call in each format as the
model sends it (an OpenAI chat tool call and a Responses function_call with JSON text arguments, an
Anthropic tool_use block; the SDKs' own objects when they are installed, else dicts). Then the same
for a turn of 4 calls against ``asyncio.gather`` of 4 bare calls. A figure is the median latency of a
call (of a turn) over every call made, which a periodic cost (a WAL checkpoint, another process on the
machine) moves little; a ratio is that median over the bare call's. ``bare again`` is the bare call
measured a second time as a contender: its ratio is the run's noise floor.

A few µs on a call of a few hundred µs is below that floor, so the dispatch's own work is also timed
exactly: ``run_tool_calls`` on a stand-in whose ``call_trigger`` answers at once, less that stand-in
called bare (best of 7 loops of 20,000), and given as a share of the bare call's median latency.

The server is a minimal HTTP/1.1 keep-alive responder in its own process; each call still writes its log
record to SQLite (a temporary file) and reads the session, as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from webhook_dsl import Runtime, SQLiteStore, compile_trigger  # noqa: E402
from webhook_dsl.runtime.calls import run  # noqa: E402
from webhook_dsl.runtime.dispatch import run_tool_calls  # noqa: E402

BODY = json.dumps({"order_number": "A-1001", "status": "in_transit", "eta": "2025-01-02"}).encode()
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)


def _serve(port_queue: Any) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")  # GET: no body
                writer.write(ANSWER)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        port_queue.put(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


def _calls(n: int) -> dict[str, list[Any]]:
    """One call per format, as the model sends it (``n`` of them, distinct ids)."""
    arguments = '{"order_number": "A-1001"}'
    calls: dict[str, list[Any]] = {
        "openai chat": [
            {"id": f"call_{i}", "type": "function", "function": {"name": "check_order", "arguments": arguments}}
            for i in range(n)
        ],
        "openai responses": [
            {"type": "function_call", "call_id": f"call_{i}", "name": "check_order", "arguments": arguments}
            for i in range(n)
        ],
        "anthropic": [
            {"type": "tool_use", "id": f"toolu_{i}", "name": "check_order", "input": {"order_number": "A-1001"}}
            for i in range(n)
        ],
    }
    try:  # the SDKs' own objects, read by attribute, when the SDKs are installed
        import anthropic.types
        import openai.types.chat
        import openai.types.responses
    except ImportError:
        return calls
    calls["openai chat"] = [
        openai.types.chat.ChatCompletionMessageToolCall.model_validate(c) for c in calls["openai chat"]
    ]
    calls["openai responses"] = [
        openai.types.responses.ResponseFunctionToolCall.model_validate(c) for c in calls["openai responses"]
    ]
    calls["anthropic"] = [anthropic.types.ToolUseBlock.model_validate(c) for c in calls["anthropic"]]
    return calls


class _Instant:
    """A Runtime stand-in whose ``call_trigger`` answers at once with a real result: timing ``run_tool_calls``
    on it leaves exactly the dispatch's own work (reading, parsing, lookup, the reply, one more coroutine)."""

    store = None

    def __init__(self, result: Any) -> None:
        self.result = result

    async def call_trigger(self, *arguments: Any, **options: Any) -> Any:
        return self.result


async def _bench(port: int, rounds: int, per_round: int) -> dict[str, Any]:
    trigger = compile_trigger(
        {
            "name": "check_order",
            "description": "Look up an order.",
            "parameters": {
                "type": "object",
                "properties": {"order_number": {"type": "string", "pattern": "^[A-Z]-[0-9]+$"}},
                "required": ["order_number"],
            },
            "webhook": {"url": f"http://127.0.0.1:{port}/orders/$order_number", "method": "GET"},
        }
    )
    triggers = {trigger.name: trigger}
    single, turn = _calls(1), _calls(4)
    with tempfile.TemporaryDirectory() as folder:
        store = SQLiteStore(Path(folder) / "bench.db")
        await store.put_session("S1", company_id="cmp_1", assistant_id="a", client_data={})
        async with Runtime(store, allow_networks=["127.0.0.0/8"]) as runtime:

            async def bare() -> Any:
                result = await runtime.call_trigger(trigger, "S1", {"order_number": "A-1001"}, company_id="cmp_1")
                assert result.call.ok
                return result

            async def bare_turn() -> None:
                results = await asyncio.gather(
                    *(
                        runtime.call_trigger(trigger, "S1", {"order_number": "A-1001"}, company_id="cmp_1")
                        for _ in range(4)
                    )
                )
                assert all(r.call.ok for r in results)

            def dispatched(calls: list[Any], on: Any = runtime) -> Callable[[], Awaitable[None]]:
                async def one() -> None:
                    replies = await run_tool_calls(on, triggers, "S1", calls, company_id="cmp_1")
                    assert len(replies) == len(calls)

                return one

            groups: dict[str, dict[str, Callable[[], Awaitable[Any]]]] = {
                "one call": {
                    "bare call_trigger": bare,
                    "bare again (A/A)": bare,  # the noise floor: the same code, measured as a contender
                    **{k: dispatched(v) for k, v in single.items()},
                },
                "a turn of 4 calls": {"bare gather of 4": bare_turn, **{k: dispatched(v) for k, v in turn.items()}},
            }
            for contenders in groups.values():  # warm up: pins, pool, SQLite pages
                for contender in contenders.values():
                    for _ in range(20):
                        await contender()
            results: dict[str, Any] = {}
            for group, contenders in groups.items():
                names = list(contenders)
                each: dict[str, list[float]] = {name: [] for name in names}
                for index in range(rounds):
                    order = names[index % len(names) :] + names[: index % len(names)]
                    for _ in range(per_round):  # call by call, in turn: a slow moment hits every contender alike
                        for name in order:
                            started = time.perf_counter()
                            await contenders[name]()
                            each[name].append(time.perf_counter() - started)
                base = statistics.median(each[names[0]])
                results[group] = {
                    name: {
                        "median_us": statistics.median(each[name]) * 1e6,
                        "ratio": statistics.median(each[name]) / base,
                        "mean_us": statistics.fmean(each[name]) * 1e6,
                    }
                    for name in names
                }
            instant = _Instant(await bare())
            work: dict[str, float] = {}
            for name, calls in single.items():
                bare_instant = instant.call_trigger
                with_dispatch = dispatched(calls, on=instant)
                best: dict[str, float] = {}
                for label, contender in (("bare", bare_instant), ("dispatch", with_dispatch)):
                    laps = []
                    for _ in range(7):
                        started = time.perf_counter()
                        for _ in range(20_000):
                            await contender()
                        laps.append((time.perf_counter() - started) / 20_000)
                    best[label] = min(laps)
                work[name] = (best["dispatch"] - best["bare"]) * 1e6
            results["dispatch work"] = work
        await store.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--calls", type=int, default=100, help="calls per contender per round")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    ports: Any = multiprocessing.Queue()
    server = multiprocessing.Process(target=_serve, args=(ports,), daemon=True)
    server.start()
    try:
        port = ports.get(timeout=10)
        results = run(_bench(port, args.rounds, args.calls))
    finally:
        server.terminate()
        server.join()
    work = results.pop("dispatch work")
    bare = results["one call"]["bare call_trigger"]["median_us"]
    print(f"{args.rounds} rounds x {args.calls} calls per contender, one of each in turn")
    print("median latency per call (mean in brackets), ratio of medians to the bare call's")
    for group, figures in results.items():
        print(f"\n{group}:")
        for name, figure in figures.items():
            added = (figure["ratio"] - 1) * 100
            print(
                f"  {name:<20} {figure['median_us']:8.1f} µs ({figure['mean_us']:7.1f})"
                f"   x{figure['ratio']:.3f} ({added:+.1f}%)"
            )
    print("\ndispatch's own work (run_tool_calls on an instant call_trigger, less that call), per call:")
    for name, micro in work.items():
        print(f"  {name:<20} {micro:6.2f} µs = {micro / bare * 100:.2f}% of the bare call's median")
    if args.json:
        document = {"results": results, "dispatch_work_us": work, "rounds": args.rounds, "calls": args.calls}
        args.json.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
