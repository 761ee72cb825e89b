"""What metrics and JSON access logs cost a trigger call: the service with them on against the same service
with them off, interleaved, on loopback.

    python benchmarks/ops_overhead.py                  # writes benchmarks/results/ops_overhead.json
    python benchmarks/ops_overhead.py --quick          # a short run, written to a temporary file
    python benchmarks/ops_overhead.py --calls 3000 --rounds 9 --json /tmp/o.json

It starts the examples' stand-in API (its own process) and one ``webhook-dsl serve`` process per variant,
each on its own SQLite database, all at once, idle between bursts:

- ``off``: ``--no-metrics --no-access-log``;
- ``metrics``: ``/metrics`` counting, no access log;
- ``text_log``: the text access log, no metrics (what ``serve`` did before metrics existed);
- ``metrics_json``: metrics and ``--log-format json`` (the access line of every call, with its trigger fields).

Each round sends a burst of ``--calls`` ``check_order`` calls (``POST /session/ID/triggers/check_order``, a
secret in its Authorization header, a merge into the session) to each variant in turn, the order rotated
from round to round, at ``--concurrency`` keep-alive connections. For each burst it records the service
process's CPU time (user + system, from /proc) per call and the calls per second. Ratios are taken within a
round (each variant against ``off`` of the same round) and their median reported, so that a machine that
is busier in one round than another moves both sides of a ratio. Log lines go to a file, as a collector
would read them. The exit status is 1 if any call failed.

Before that it times, in this process, the work each request adds (best of several repeats, which a busy
machine disturbs least): counting a trigger call's metrics, making a request id, and writing one access
line as JSON and as text to a file. Set against the CPU a call costs with everything off, that is the
overhead the end-to-end bursts measure less precisely on a small shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "benchmarks"))

from load_service import _STAND_IN, free_port, wait_for  # noqa: E402

from webhook_dsl.storage.base import hash_api_key, new_api_key  # noqa: E402
from webhook_dsl.storage.sqlite import SQLiteStore  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "ops_overhead.json"
VARIANTS: dict[str, list[str]] = {
    "off": ["--no-metrics", "--no-access-log"],
    "metrics": ["--no-access-log"],
    "text_log": ["--no-metrics"],
    "metrics_json": ["--log-format", "json"],
}
def cpu_seconds(pid: int) -> float:
    """CPU seconds of a live process's threads (Linux /proc/PID/task/*/schedstat, in nanoseconds: /proc/PID/stat
    counts in clock ticks, too coarse for a burst). The service's threads (event loop, database, HTTP client)
    live as long as it does."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return total / 1e9


async def make_company(database: Path) -> str:
    """An API key of company cmp_42 and its erp_token secret (check_order sends it as a Bearer token)."""
    store = SQLiteStore(database)
    try:
        key = new_api_key()
        await store.add_api_key("cmp_42", hash_api_key(key), key[:11], "ops_overhead")
        await store.set_secret("cmp_42", "erp_token", "erp-bench-token-0123456789")
        return key
    finally:
        await store.close()


class Variant:
    """One ``serve`` process of the comparison."""

    def __init__(self, name: str, flags: list[str], folder: Path, triggers: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        database = folder / f"{name}.db"
        self.key = asyncio.run(make_company(database))
        self.log = folder / f"{name}.log"
        command = [sys.executable, "-m", "webhook_dsl", "serve", "--triggers", str(triggers), "--port", str(self.port)]
        command += ["--database", str(database), "--allow-network", "127.0.0.0/8", "--min-free-disk-mb", "0", *flags]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, cwd=str(ROOT))
        wait_for(self.url + "/livez", self.process)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def burst(variant: Variant, calls: int, concurrency: int, sessions: int) -> dict[str, float]:
    """``calls`` trigger calls at ``concurrency`` connections: the service's CPU per call and calls per second."""
    headers = {"Authorization": f"Bearer {variant.key}"}
    body = {"arguments": {"order_number": "A-1001"}}
    failures = 0
    issued = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal failures, issued
        while issued < calls:
            n = issued
            issued += 1
            url = f"{variant.url}/session/S{n % sessions}/triggers/check_order"
            async with session.post(url, json=body, headers=headers) as answer:
                result = await answer.json()
                if answer.status != 200 or not result["result"]["ok"]:
                    failures += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        cpu = cpu_seconds(variant.process.pid)
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        wall = time.perf_counter() - started
        cpu = cpu_seconds(variant.process.pid) - cpu
    return {"cpu_us_per_call": cpu / calls * 1e6, "calls_per_s": calls / wall, "failures": failures}


async def create_sessions(variant: Variant, sessions: int) -> None:
    headers = {"Authorization": f"Bearer {variant.key}"}
    async with aiohttp.ClientSession() as session:
        for n in range(sessions):
            body = {"client_data": {"user_id": f"usr_{n}", "plan": "enterprise"}}
            async with session.put(f"{variant.url}/session/S{n}", json=body, headers=headers) as answer:
                if answer.status != 200:
                    raise SystemExit(f"{variant.name}: PUT /session/S{n} answered {answer.status}")


def component_costs(folder: Path) -> dict[str, float]:
    """Microseconds of the work a trigger call's request adds, each part alone, best of 15 repeats."""
    import logging
    import timeit

    from webhook_dsl.service.logformat import JsonFormatter, TextFormatter
    from webhook_dsl.service.metrics import ServiceMetrics
    from webhook_dsl.service.middleware import RequestNote, _log_access, request_id_of

    metrics = ServiceMetrics()
    scope: dict[str, Any] = {
        "method": "POST",
        "path": "/session/S1/triggers/check_order",
        "headers": [(b"host", b"127.0.0.1:8080"), (b"content-type", b"application/json")],
    }
    note = RequestNote(request_id_of(scope))
    note.add_call("cmp_42", "check_order", "ok")

    def best(work: Any, number: int = 5000) -> float:
        return round(min(timeit.repeat(work, number=number, repeat=15)) / number * 1e6, 3)

    def count() -> None:
        metrics.request("/session/{session_id}/triggers/{name}", "POST", 200)
        metrics.in_flight.inc()
        metrics.in_flight.dec()
        metrics.call("check_order", "ok", 0.012)

    costs = {"metrics_us": best(count), "request_id_us": best(lambda: request_id_of(scope))}
    access = logging.getLogger("webhook_dsl.access")
    saved = (access.handlers[:], access.level, access.propagate)
    access.setLevel(logging.INFO)
    access.propagate = False
    try:
        with (folder / "component.log").open("w") as log:
            for name, formatter in (("json", JsonFormatter()), ("text", TextFormatter())):
                handler = logging.StreamHandler(log)
                handler.setFormatter(formatter)
                access.handlers = [handler]
                costs[f"access_line_{name}_us"] = best(lambda: _log_access(scope, 200, 12.3, note))
    finally:
        access.handlers, access.level, access.propagate = saved
    return costs


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="calls per burst (default 2000)")
    parser.add_argument("--rounds", type=int, default=7, help="bursts per variant, interleaved (default 7)")
    parser.add_argument("--concurrency", type=int, default=32, help="connections at once (default 32)")
    parser.add_argument("--sessions", type=int, default=64, help="sessions the calls are spread over (default 64)")
    parser.add_argument("--quick", action="store_true", help="300 calls, 3 rounds, results to a temporary file")
    parser.add_argument("--json", metavar="PATH", help=f"where the results go (default {RESULTS.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.rounds = 300, 3
    output = Path(args.json) if args.json else (None if args.quick else RESULTS)

    folder = Path(tempfile.mkdtemp(prefix="ops-overhead-"))
    components = component_costs(folder)
    print("per request, in process: " + ", ".join(f"{k} {v}" for k, v in components.items()), file=sys.stderr)
    stand_in_port = free_port()
    stand_in = subprocess.Popen([sys.executable, "-c", _STAND_IN, str(stand_in_port)], cwd=str(ROOT))
    variants: list[Variant] = []
    try:
        wait_for(f"http://127.0.0.1:{stand_in_port}/", stand_in)
        triggers = folder / "triggers"
        triggers.mkdir()
        for trigger in (ROOT / "examples" / "triggers").glob("*.json"):
            text = trigger.read_text().replace("127.0.0.1:8765", f"127.0.0.1:{stand_in_port}")
            (triggers / trigger.name).write_text(text)
        variants = [Variant(name, flags, folder, triggers) for name, flags in VARIANTS.items()]
        for variant in variants:
            asyncio.run(create_sessions(variant, args.sessions))
            asyncio.run(burst(variant, min(args.calls, 500), args.concurrency, args.sessions))  # warm-up
        runs: dict[str, list[dict[str, float]]] = {v.name: [] for v in variants}
        for round_ in range(args.rounds):
            order = variants[round_ % len(variants) :] + variants[: round_ % len(variants)]
            for variant in order:
                runs[variant.name].append(asyncio.run(burst(variant, args.calls, args.concurrency, args.sessions)))
            shown = ", ".join(
                f"{n} {r[-1]['cpu_us_per_call']:.0f} us/call {r[-1]['calls_per_s']:.0f}/s" for n, r in runs.items()
            )
            print(f"round {round_ + 1}/{args.rounds}: {shown}", file=sys.stderr)
        log_lines = {v.name: sum(1 for _ in v.log.open("rb")) for v in variants}
    finally:
        for variant in variants:
            variant.stop()
        stand_in.terminate()
        stand_in.wait()
        shutil.rmtree(folder, ignore_errors=True)

    failures = sum(int(r["failures"]) for bursts in runs.values() for r in bursts)
    summary: dict[str, Any] = {}
    for name, bursts in runs.items():
        summary[name] = {
            "cpu_us_per_call": _median([r["cpu_us_per_call"] for r in bursts]),
            "calls_per_s": _median([r["calls_per_s"] for r in bursts]),
            "cpu_ratio_to_off": _median(
                [r["cpu_us_per_call"] / off["cpu_us_per_call"] for r, off in zip(bursts, runs["off"], strict=True)]
            ),
            "throughput_ratio_to_off": _median(
                [r["calls_per_s"] / off["calls_per_s"] for r, off in zip(bursts, runs["off"], strict=True)]
            ),
            "log_lines": log_lines[name],
        }
    off = summary["off"]["cpu_us_per_call"]
    added = components["metrics_us"] + components["request_id_us"] + components["access_line_json_us"]
    components["metrics_and_json_line_share_of_off_call"] = round(added / off, 4)
    result = {
        "benchmark": "ops_overhead",
        "what": "CPU of the service process per trigger call and calls per second, each variant against off "
        "(median of per-round ratios)",
        "calls_per_burst": args.calls,
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "sessions": args.sessions,
        "failures": failures,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "system": platform.platform()},
        "components": components,
        "variants": summary,
        "runs": runs,
    }
    for name, figures in summary.items():
        print(
            f"{name:>13}: {figures['cpu_us_per_call']:7.0f} us CPU/call  {figures['calls_per_s']:7.0f} calls/s  "
            f"CPU x{figures['cpu_ratio_to_off']:.3f}  throughput x{figures['throughput_ratio_to_off']:.3f}"
        )
    print(
        f"metrics + request id + a JSON access line: {added:.1f} us in process, "
        f"{components['metrics_and_json_line_share_of_off_call']:.1%} of an 'off' call's {off:.0f} us"
    )
    if output is None:
        output = Path(tempfile.mkdtemp(prefix="ops-overhead-results-")) / "ops_overhead.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {output}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
