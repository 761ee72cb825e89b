"""Throughput of Runtime.execute and of a full trigger call against a loopback server,
next to the bare HTTP clients doing the same requests, in one run.

Runtime sends with pyreqwest (see webhook_dsl/client.py); the bare contenders are aiohttp (the
issue's yardstick), httpx (its own pools) and pyreqwest itself, so the table shows both how the
client choice compares and what the runtime adds on top of the client it uses.

    python benchmarks/runtime_bench.py [--requests N] [--json PATH]
    python benchmarks/runtime_bench.py --hanging 300   # fairness instead: see ``fairness``

The stand-in server runs in its own process (aiohttp.web), so client and server do not share
one event loop; on a 2-core machine they share the two cores. Figures are requests per second,
the median of several rounds; each round runs every contender once (in a rotated order), and a
ratio is the median over rounds of the contender's figure over bare aiohttp's in the same round.

The client side runs twice, on uvloop (what ``webhook-dsl serve`` runs on) and on asyncio's own
loop; in each, every contender, bare aiohttp included, shares that loop.
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
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from pyreqwest.client import ClientBuilder

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from webhook_dsl import Runtime, SQLiteStore, compile_trigger, compile_webhook  # noqa: E402
from webhook_dsl.runtime.calls import run  # noqa: E402

LOOPS = ("uvloop", "asyncio")

BODY = json.dumps({"status": "in_transit", "session": {"client_data": {"last_order": "A-1"}}}).encode()


def _serve(port_queue: Any) -> None:
    from aiohttp import web

    async def order(request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/orders/{number}", order)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        port_queue.put(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        await asyncio.Event().wait()

    asyncio.run(main())


async def _drive(concurrency: int, total: int, one: Callable[[int], Awaitable[None]]) -> float:
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:
            await one(i)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - started)


#: A token of a realistic length: long enough to be searched for in every text a call outputs.
TOKEN = "erp-token-0123456789abcdef"


async def measure(port: int, concurrency: int, total: int, rounds: int) -> dict[str, float]:
    url = f"http://127.0.0.1:{port}/orders/"
    plan = compile_webhook({"url": f"http://127.0.0.1:{port}/orders/$order_number", "method": "GET",
                            "headers": [{"key": "Authorization", "value": "Bearer $erp_token"}]})
    trigger = compile_trigger({
        "name": "check_order", "description": "d",
        "parameters": {"type": "object", "properties": {"order_number": {"type": "string"}}},
        "clientData": ["erp_token"],
        "secrets": ["erp_token"],  # declared, so the call pays for masking it as production does
        "webhook": {"url": f"http://127.0.0.1:{port}/orders/$order_number", "method": "GET",
                    "headers": [{"key": "Authorization", "value": "Bearer $erp_token"}]},
    })
    headers = {"Authorization": f"Bearer {TOKEN}"}
    results: dict[str, list[float]] = {}
    tmp = tempfile.mkdtemp()
    store = SQLiteStore(Path(tmp) / "bench.db")
    await store.put_session("s", company_id="c", assistant_id="a", client_data={"erp_token": TOKEN})
    connector_limit = max(100, concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connector_limit)) as session, \
            httpx.AsyncClient(limits=httpx.Limits(max_connections=connector_limit)) as client, \
            ClientBuilder().max_connections(connector_limit).build() as reqwest, \
            Runtime(allow_networks=["127.0.0.0/8"]) as runtime, \
            Runtime(store, allow_networks=["127.0.0.0/8"]) as trigger_runtime:

        async def bare_aiohttp(i: int) -> None:
            async with session.get(url + f"A-{i}", headers=headers) as response:
                await response.read()

        async def bare_httpx(i: int) -> None:
            response = await client.get(url + f"A-{i}", headers=headers)
            response.read()

        async def bare_pyreqwest(i: int) -> None:
            request = reqwest.request("GET", url + f"A-{i}").headers(headers).timeout(timedelta(seconds=15))
            async with request.build_streamed() as response:
                await response.bytes()

        async def execute(i: int) -> None:
            result = await runtime.execute(plan, {"order_number": f"A-{i}", "erp_token": TOKEN})
            assert result.ok, result.error

        async def call_trigger(i: int) -> None:
            result = await trigger_runtime.call_trigger(trigger, "s", {"order_number": f"A-{i}"})
            assert result.call.ok, result.call.error

        contenders = {"aiohttp (bare)": bare_aiohttp, "httpx (bare)": bare_httpx, "pyreqwest (bare)": bare_pyreqwest,
                      "Runtime.execute": execute, "Runtime.call_trigger (merge + log)": call_trigger}
        for one in contenders.values():
            await _drive(concurrency, max(2 * concurrency, total // 10), one)  # warm up: full pools, code paths
        for round_number in range(rounds):
            # Each round runs every contender once, in an order rotated per round, so that a drift of
            # the machine's speed during a round does not always favour the same contender.
            names = list(contenders)
            names = names[round_number % len(names):] + names[: round_number % len(names)]
            for name in names:
                n = total if "httpx" not in name or concurrency == 1 else max(200, total // 4)
                results.setdefault(name, []).append(await _drive(concurrency, n, contenders[name]))
    await store.close()
    return results


async def fairness(port: int, hanging: int, calls: int = 200) -> dict[str, Any]:
    """Latency of sequential calls to the stand-in, first on an idle runtime, then while *hanging* calls
    hang on another loopback destination (a server that reads each request and never answers), as one
    company's stalled API would. Each destination has its own pool and in-flight cap, so the second
    figure should be the first; with one pool for every address it was the hung calls' deadline."""

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await asyncio.Event().wait()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    stalled = await asyncio.start_server(stall, "127.0.0.1", 0, backlog=4096)
    stalled_port = stalled.sockets[0].getsockname()[1]
    healthy = compile_webhook({"url": f"http://127.0.0.1:{port}/orders/$n", "method": "GET"})
    stuck = compile_webhook({"url": f"http://127.0.0.1:{stalled_port}/orders", "method": "POST", "body": {"n": 1}})

    async with Runtime(allow_networks=["127.0.0.0/8"]) as runtime:  # the default 15 s deadline

        async def timed() -> list[float]:
            latencies = []
            for i in range(calls):
                started = time.perf_counter()
                result = await runtime.execute(healthy, {"n": f"A-{i}"})
                latencies.append((time.perf_counter() - started) * 1000)
                assert result.ok, result.error
            return latencies

        await timed()  # warm up: the healthy destination's client and connection
        idle = await timed()
        tasks = [asyncio.ensure_future(runtime.execute(stuck, {})) for _ in range(hanging)]
        await asyncio.sleep(1.0)  # every hanging call is in flight or queued
        busy = await timed()
        still_hanging = sum(not task.done() for task in tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    stalled.close()
    return {
        "hanging": hanging,
        "still_hanging": still_hanging,
        "idle_ms": {"median": round(statistics.median(idle), 3), "max": round(max(idle), 3)},
        "while_hanging_ms": {"median": round(statistics.median(busy), 3), "max": round(max(busy), 3)},
    }


def summarise(rounds: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Median requests/s per contender, and the median over rounds of its ratio to bare aiohttp in
    the same round (steadier on a noisy machine than a ratio of two medians)."""
    base = rounds["aiohttp (bare)"]
    return {
        name: {
            "requests_per_s": round(statistics.median(values), 1),
            "vs_bare_aiohttp": round(statistics.median(v / b for v, b in zip(values, base, strict=True)), 3),
            "vs_bare_aiohttp_range": [round(min(v / b for v, b in zip(values, base, strict=True)), 3),
                                      round(max(v / b for v, b in zip(values, base, strict=True)), 3)],
        }
        for name, values in rounds.items()
    }


def table_lines(report: dict[str, Any]) -> list[str]:
    """The figures as a table: one line per loop, contender and concurrency."""
    lines = [f"{'loop':8} {'contender':38} {'conc.':>5} {'req/s':>9} {'x aiohttp':>9} {'range':>11}"]
    for loop, measured in report["loops"].items():
        for concurrency, figures in measured["concurrency"].items():
            for name, row in figures.items():
                low, high = row["vs_bare_aiohttp_range"]
                lines.append(f"{loop:8} {name:38} {concurrency:>5} {row['requests_per_s']:>9,.0f}"
                             f" {row['vs_bare_aiohttp']:>9.2f} {low:>5.2f}-{high:<5.2f}")
    return lines


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="requests per round and contender")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--loop", choices=(*LOOPS, "both"), default="both", help="the client's event loop")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--quiet", action="store_true", help="do not print the table (run.py prints it)")
    parser.add_argument("--hanging", type=int, default=0,
                        help="instead of throughput: healthy calls' latency while this many hang elsewhere")
    args = parser.parse_args(argv)
    queue: Any = multiprocessing.Queue()
    server = multiprocessing.Process(target=_serve, args=(queue,), daemon=True)
    server.start()
    port = queue.get(timeout=30)
    report: dict[str, Any] = {"requests_per_round": args.requests, "rounds": args.rounds, "loops": {}}
    try:
        for loop in LOOPS if args.loop == "both" else (args.loop,):
            if args.hanging:
                report["loops"][loop] = {"fairness": run(fairness(port, args.hanging), event_loop=loop)}
                if not args.quiet:
                    print(loop, json.dumps(report["loops"][loop]["fairness"]))
                continue
            measured: dict[str, Any] = report["loops"].setdefault(loop, {"concurrency": {}})
            for concurrency in (1, 64):
                rounds = run(measure(port, concurrency, args.requests, args.rounds), event_loop=loop)
                measured["concurrency"][str(concurrency)] = summarise(rounds)
    finally:
        server.terminate()
    if not args.quiet and not args.hanging:
        print("\n".join(table_lines(report)))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
