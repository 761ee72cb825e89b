"""The trigger endpoint of ``webhook-dsl serve`` beside a minimal hand-written service doing the same job,
and a "hello" endpoint on the same stack, under one load client, in one run.

    python benchmarks/service_bench.py                 # 5 rounds x 3 concurrencies x 3 servers, about 4.5 minutes
    python benchmarks/service_bench.py --quick         # CI smoke run, under a minute; JSON to a temp file
    python benchmarks/service_bench.py --rounds 3 --seconds 3 --json out.json

Everything runs on 127.0.0.1, each in its own process: the example stand-in API (``webhook_dsl.demo``, one
write per answer, Nagle off, as ``load_service.py`` starts it), ``webhook-dsl serve`` on SQLite with one
trigger, ``check_order``, whose bearer token is a declared secret of the session's client_data,
``minimal_service.py`` (Starlette, uvicorn with httptools and uvloop, pyreqwest, SQLite with a group-
committing writer thread: the same job written by hand, and nothing more), and ``minimal_service.py
--hello``, which answers ``POST /hello`` with a constant after reading the body: the HTTP layer's ceiling.
The database, the API key and the sessions are made with webhook-dsl's own store, then each service runs on
its own copy of that file.

One closed-loop load client, in a process of its own (pyreqwest on uvloop, keep-alive connections), keeps
``c`` requests in flight against one server at a time (each of its ``c`` workers sends the next request
when the last one is answered), for ``--warmup`` seconds, then ``--seconds`` measured. Cells run
interleaved: every server at c=1, then every server at c=16, then at c=64, and that ``--rounds`` times,
with the servers' order rotated each round so a drift of this machine's speed favours none of them. For
each cell: requests/s, p50 and p99 latency, and the server's CPU per call, its user plus system time from
``/proc/PID/stat`` (with any child processes) over the measured seconds divided by the calls answered in
them; the stand-in's and the load client's CPU per call beside it, since all of them share the cores.

A figure is the median over rounds; a ratio (webhook-dsl / minimal) is the median of the per-round ratios,
with their range. Figures are measured, never asserted: the exit status is 1 only when a server does not
answer correctly (a preflight call per server, every answer of the load checked for its status, the
success message and the absence of the token, and afterwards the call log of each database counted
against the calls answered), never because of a ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from load_service import _STAND_IN, command, free_port, stop_all, tree_cpu_s, wait_for  # noqa: E402

DEFAULT_JSON = HERE / "results" / "service_bench.json"
SERVERS = ("hello", "minimal", "webhook-dsl")
LABELS = {
    "hello": '"hello" on the same stack (the HTTP layer\'s ceiling)',
    "minimal": "minimal hand-written service, SQLite",
    "webhook-dsl": "**webhook-dsl serve**, SQLite",
}
COMPANY = "bench"
#: The declared secret each session carries; it must never appear in an answer.
TOKEN = "erp-token-0123456789abcdef"
#: What a trigger call's answer must say (both services word the LLM's message alike), as JSON text holds it.
SUCCESS = json.dumps('The tool "check_order" succeeded (HTTP 200 OK)')[1:-1]
SESSIONS = 64

TRIGGER = {
    "name": "check_order",
    "description": "Look up the status of a customer's order by its number.",
    "parameters": {
        "type": "object",
        "properties": {
            "order_number": {
                "type": "string",
                "description": "The order number, e.g. A-1001",
                "minLength": 1,
                "maxLength": 64,
            }
        },
        "required": ["order_number"],
        "additionalProperties": False,
    },
    "interpretResponse": True,
    "clientData": ["erp_token"],
    "secrets": ["erp_token"],
    "webhook": {
        "url": "http://127.0.0.1:PORT/erp/api/orders/$order_number",
        "method": "GET",
        "headers": [{"key": "Authorization", "value": "Bearer $erp_token"}],
        "responseDirective": "Inform the customer of the order status clearly. If the status is 'delivered', "
        "congratulate them. If 'in_transit', provide the estimated delivery.",
    },
}


# -- the load client (a process of its own) ------------------------------------------------------------------


def _percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


async def _cell(client: Any, job: dict[str, Any]) -> dict[str, Any]:
    """One server at one concurrency: warm up, then measure requests, latencies and CPU per call."""
    concurrency, warmup, seconds = job["concurrency"], job["warmup"], job["seconds"]
    check = job["check"].encode()
    token = TOKEN.encode()
    headers = {"Authorization": f"Bearer {job['key']}", "Content-Type": "application/json"}
    latencies: list[float] = []
    counts = {"answered": 0, "failed": 0}
    failures: list[str] = []
    measuring = False
    stop = False

    async def worker(index: int) -> None:
        url = job["url"].replace("SESSION", f"s{index % SESSIONS}")
        n = 0
        while not stop:
            n += 1
            body = b'{"arguments":{"order_number":"A-%d-%d"},"images":[]}' % (index, n)
            started = time.perf_counter()
            try:
                request = client.post(url).headers(headers).body_bytes(body).build()
                response = await request.send()
                data = bytes(await response.bytes())
                status = response.status
            except Exception as error:  # a server that fails is reported, not raised
                status, data = 0, repr(error).encode()
            elapsed = time.perf_counter() - started
            if status == 200 and check in data and token not in data:
                counts["answered"] += 1
                if measuring:
                    latencies.append(elapsed)
            else:
                counts["failed"] += 1
                if len(failures) < 3:
                    failures.append(f"{status}: {data[:300].decode(errors='replace')}")
                await asyncio.sleep(0.01)

    tasks = [asyncio.create_task(worker(i)) for i in range(concurrency)]
    await asyncio.sleep(warmup)
    pids = job["pids"]
    cpu_start = {name: tree_cpu_s(pid) for name, pid in pids.items()}
    own_start = time.process_time()
    measuring = True
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    measuring = False
    elapsed = time.perf_counter() - started
    cpu = {name: tree_cpu_s(pid) - cpu_start[name] for name, pid in pids.items()}
    cpu["client"] = time.process_time() - own_start
    calls = len(latencies)
    stop = True
    await asyncio.gather(*tasks)
    latencies.sort()
    per_call = {
        f"{name}_cpu_us_per_call": round(1e6 * value / calls, 1) if calls else None for name, value in cpu.items()
    }
    return {
        "requests_per_s": round(calls / elapsed, 1),
        "calls": calls,
        "p50_ms": round(1000 * _percentile(latencies, 0.50), 3),
        "p99_ms": round(1000 * _percentile(latencies, 0.99), 3),
        **per_call,
        "answered": counts["answered"],
        "failed": counts["failed"],
        "first_failures": failures,
    }


async def _load_client() -> None:
    """Reads one JSON job per line on stdin, answers one JSON result per line on stdout, until EOF."""
    from pyreqwest.client import ClientBuilder

    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with ClientBuilder().max_connections(1024).build() as client:
        while line := await reader.readline():
            result = await _cell(client, json.loads(line))
            sys.stdout.write(json.dumps(result) + "\n")
            sys.stdout.flush()


# -- the harness -------------------------------------------------------------------------------------------


def _source() -> dict[str, Any]:
    """The commit measured, and whether the working tree differed from it (read-only git commands)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if commit.returncode != 0:
        return {}
    return {"commit": commit.stdout.strip(), "uncommitted_changes": bool(status.stdout.strip())}


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


async def _create_database(path: Path) -> str:
    """The database as webhook-dsl makes it (its own store): an API key and the sessions; returns the key."""
    from webhook_dsl.storage.base import hash_api_key, new_api_key
    from webhook_dsl.storage.database_url import open_store

    store = open_store(f"sqlite:///{path}")
    try:
        key = new_api_key()
        await store.add_api_key(COMPANY, hash_api_key(key), key[:11], "service bench")
        for i in range(SESSIONS):
            await store.put_session(
                f"s{i}",
                company_id=COMPANY,
                assistant_id="asst_1",
                client_data={"erp_token": TOKEN, "user_id": f"usr_{i}", "plan": "enterprise"},
            )
        return key
    finally:
        await store.close()


def _copy_database(source: Path, target: Path) -> None:
    """A consistent copy (SQLite's backup API), in WAL mode as webhook-dsl keeps its files."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=WAL")
    os.chmod(target, 0o600)


def _post(url: str, key: str, body: bytes) -> tuple[int, str]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def _preflight(name: str, url: str, key: str, check: str) -> str | None:
    """One call before the load; what is wrong with its answer, or None."""
    status, text = _post(url.replace("SESSION", "s0"), key, b'{"arguments": {"order_number": "A-0"}}')
    if status != 200 or check not in text:
        return f"{name}: HTTP {status}, expected 200 with {check!r}: {text[:300]}"
    if TOKEN in text:
        return f"{name}: the token is in the answer"
    return None


def _count_logs(database: Path) -> dict[str, Any]:
    """What the service stored: call records, how many say ok, and the sessions the answers merged into."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT state, record FROM call_logs").fetchall()
        merged = db.execute(
            "SELECT COUNT(*) FROM sessions WHERE company_id = ? AND json_extract(client_data, '$.last_order_number') "
            "IS NOT NULL AND json_extract(client_data, '$.erp_token') = ?",
            (COMPANY, TOKEN),
        ).fetchone()[0]
    records = [json.loads(record) for _, record in rows]
    return {
        "records": len(rows),
        "done_and_ok": sum(1 for (state, _), r in zip(rows, records, strict=True) if state == "done" and r.get("ok")),
        "token_in_records": sum(1 for _, record in rows if TOKEN in record),
        "sessions_merged": merged,
    }


async def _read_back(database: Path) -> dict[str, Any]:
    """The minimal service's records read through webhook-dsl's own store: the two share one schema."""
    from webhook_dsl.storage.database_url import open_store

    store = open_store(f"sqlite:///{database}")
    try:
        session = await store.get_session("s0", company_id=COMPANY)
        logs = await store.logs("s0", limit=3, company_id=COMPANY)
        return {"last_order_number": session.client_data.get("last_order_number"), "logs_ok": [r["ok"] for r in logs]}
    finally:
        await store.close()


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and v == v]
    return round(statistics.median(values), 1) if values else None


def summarize(cells: list[dict[str, Any]], concurrencies: list[int]) -> dict[str, Any]:
    """Medians over rounds per server and concurrency, and webhook-dsl / minimal as the median of the
    per-round ratios with their range."""
    servers: dict[str, Any] = {}
    for name in SERVERS:
        servers[name] = {}
        for c in concurrencies:
            mine = [cell for cell in cells if cell["server"] == name and cell["concurrency"] == c]
            figures = {
                field: _median([cell[field] for cell in mine])
                for field in (
                    "requests_per_s",
                    "p50_ms",
                    "p99_ms",
                    "server_cpu_us_per_call",
                    "stand_in_cpu_us_per_call",
                    "client_cpu_us_per_call",
                )
            }
            if figures["p50_ms"] is not None:
                figures["p50_ms"] = round(statistics.median(cell["p50_ms"] for cell in mine), 3)
                figures["p99_ms"] = round(statistics.median(cell["p99_ms"] for cell in mine), 3)
            servers[name][str(c)] = {**figures, "rounds": len(mine)}
    ratios: dict[str, Any] = {}
    for c in concurrencies:
        ratios[str(c)] = {}
        for field in ("requests_per_s", "server_cpu_us_per_call", "p50_ms", "p99_ms"):
            per_round = []
            for cell in cells:
                if cell["server"] != "webhook-dsl" or cell["concurrency"] != c:
                    continue
                other = next(
                    x
                    for x in cells
                    if x["server"] == "minimal" and x["concurrency"] == c and x["round"] == cell["round"]
                )
                if cell[field] and other[field]:
                    per_round.append(cell[field] / other[field])
            ratios[str(c)][field] = (
                {
                    "median": round(statistics.median(per_round), 3),
                    "low": round(min(per_round), 3),
                    "high": round(max(per_round), 3),
                }
                if per_round
                else None
            )
    return {"servers": servers, "webhook_dsl_over_minimal": ratios}


def _targets(ratios: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 18's targets, reported as met or not (never asserted)."""
    out = []
    for c, field, bound, label in (
        ("1", "requests_per_s", 0.85, "req/s at c=1 >= 0.85x the minimal service"),
        ("16", "requests_per_s", 0.9, "req/s at c=16 >= 0.9x"),
        ("64", "requests_per_s", 0.9, "req/s at c=64 >= 0.9x"),
        ("64", "server_cpu_us_per_call", 1.2, "server CPU per call at c=64 <= 1.2x"),
        ("64", "p99_ms", 1.2, "p99 at c=64 <= 1.2x"),
    ):
        ratio = (ratios.get(c) or {}).get(field)
        if ratio is None:
            continue
        value = ratio["median"]
        met = value >= bound if field == "requests_per_s" else value <= bound
        out.append(
            {
                "name": label,
                "value": value,
                "target": ("≥ " if field == "requests_per_s" else "≤ ") + f"{bound}",
                "met": met,
            }
        )
    return out


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def markdown(report: dict[str, Any]) -> str:
    """The issue's table (req/s per concurrency, p50 / p99 and server CPU at the highest), then every cell."""
    concurrencies = report["meta"]["concurrency"]
    top = str(concurrencies[-1])
    servers, ratios = report["servers"], report["webhook_dsl_over_minimal"]
    head = (
        "| server | "
        + " | ".join(f"c={c} req/s" for c in concurrencies)
        + f" | p50 / p99 at c={top} | server CPU per call (c={top}) |"
    )
    lines = [head, "|" + "---|" * (len(concurrencies) + 3)]
    for name in SERVERS:
        row = servers[name]
        cells = []
        for c in concurrencies:
            text = _fmt(row[str(c)]["requests_per_s"])
            if name == "webhook-dsl" and ratios[str(c)]["requests_per_s"]:
                text += f" ({ratios[str(c)]['requests_per_s']['median']:.2f}x)"
            cells.append(text)
        latency = f"{_fmt(row[top]['p50_ms'], 2)} / {_fmt(row[top]['p99_ms'], 1)} ms"
        cpu = f"{_fmt(row[top]['server_cpu_us_per_call'])} µs"
        if name == "webhook-dsl":
            if ratios[top]["p99_ms"]:
                latency += f" ({ratios[top]['p99_ms']['median']:.2f}x)"
            if ratios[top]["server_cpu_us_per_call"]:
                cpu += f" ({ratios[top]['server_cpu_us_per_call']['median']:.2f}x)"
        lines.append(f"| {LABELS[name]} | " + " | ".join(cells) + f" | {latency} | {cpu} |")
    lines += [
        "",
        "| server | c | req/s | p50 ms | p99 ms | server CPU µs/call | stand-in CPU µs/call | client CPU µs/call "
        "| webhook-dsl / minimal req/s (range over rounds) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in concurrencies:
        for name in SERVERS:
            f = servers[name][str(c)]
            ratio = ""
            if name == "webhook-dsl" and ratios[str(c)]["requests_per_s"]:
                r = ratios[str(c)]["requests_per_s"]
                ratio = f"{r['median']:.2f}x ({r['low']:.2f}-{r['high']:.2f})"
            lines.append(
                f"| {name} | {c} | {_fmt(f['requests_per_s'])} | {_fmt(f['p50_ms'], 2)} | {_fmt(f['p99_ms'], 2)} | "
                f"{_fmt(f['server_cpu_us_per_call'])} | {_fmt(f['stand_in_cpu_us_per_call'])} | "
                f"{_fmt(f['client_cpu_us_per_call'])} | {ratio} |"
            )
    return "\n".join(lines)


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=out, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )


def run(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """Start everything, run the interleaved cells, check the databases; the report and the problems found."""
    workdir = Path(tempfile.mkdtemp(prefix="webhook-dsl-service-bench-"))
    processes: list[subprocess.Popen[Any]] = []
    problems: list[str] = []
    try:
        stand_in_port = free_port()
        stand_in = subprocess.Popen(
            [sys.executable, "-c", _STAND_IN, str(stand_in_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        processes.append(stand_in)
        target = f"http://127.0.0.1:{stand_in_port}"
        triggers = workdir / "triggers"
        triggers.mkdir()
        (triggers / "check_order.json").write_text(json.dumps(TRIGGER, indent=2).replace("PORT", str(stand_in_port)))
        base = workdir / "base.db"
        key = asyncio.run(_create_database(base))
        databases = {"webhook-dsl": workdir / "webhook-dsl.db", "minimal": workdir / "minimal.db"}
        for path in databases.values():
            _copy_database(base, path)

        ports = {name: free_port() for name in SERVERS}
        minimal = [sys.executable, str(HERE / "minimal_service.py")]
        commands = {
            "webhook-dsl": [
                *command(),
                *("serve", "--triggers", str(triggers), "--database", f"sqlite:///{databases['webhook-dsl']}"),
                *("--port", str(ports["webhook-dsl"]), "--allow-network", "127.0.0.0/8"),
                *("--no-access-log", "--log-level", "warning"),
            ],
            "minimal": [
                *minimal,
                *("--database", str(databases["minimal"]), "--target", target, "--port", str(ports["minimal"])),
            ],
            "hello": [*minimal, "--hello", "--port", str(ports["hello"])],
        }
        servers = {}
        for name in SERVERS:
            servers[name] = _start(commands[name], workdir / f"{name}.log")
            processes.append(servers[name])
        wait_for(f"{target}/nothing", stand_in)
        urls = {
            "webhook-dsl": f"http://127.0.0.1:{ports['webhook-dsl']}/session/SESSION/triggers/check_order",
            "minimal": f"http://127.0.0.1:{ports['minimal']}/session/SESSION/triggers/check_order",
            "hello": f"http://127.0.0.1:{ports['hello']}/hello",
        }
        checks = {"webhook-dsl": SUCCESS, "minimal": SUCCESS, "hello": '"hello"'}
        for name in SERVERS:
            probe = "/health" if name == "webhook-dsl" else "/hello"
            try:
                wait_for(f"http://127.0.0.1:{ports[name]}{probe}", servers[name])
            except SystemExit as failure:
                tail = (workdir / f"{name}.log").read_text(errors="replace").strip().splitlines()[-15:]
                raise SystemExit(f"{name} did not start: {failure}\n" + "\n".join(tail)) from None
        for name in SERVERS:
            problem = _preflight(name, urls[name], key, checks[name])
            if problem:
                problems.append(f"preflight {problem}")
        if problems:
            return {}, problems

        load = subprocess.Popen(
            [sys.executable, __file__, "--load-client"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        processes.append(load)
        assert load.stdin is not None and load.stdout is not None
        cells: list[dict[str, Any]] = []
        order = list(SERVERS)
        load_at_start = round(os.getloadavg()[0], 2)
        started = time.perf_counter()
        for round_ in range(args.rounds):
            rotated = order[round_ % len(order) :] + order[: round_ % len(order)]
            for c in args.concurrency:
                for name in rotated:
                    job = {
                        "url": urls[name],
                        "key": key,
                        "check": checks[name],
                        "concurrency": c,
                        "warmup": args.warmup,
                        "seconds": args.seconds,
                        "pids": {"server": servers[name].pid, "stand_in": stand_in.pid},
                    }
                    load.stdin.write(json.dumps(job) + "\n")
                    load.stdin.flush()
                    line = load.stdout.readline()
                    if not line:
                        raise SystemExit(f"the load client exited (status {load.wait()})")
                    cell = {
                        "round": round_ + 1,
                        "server": name,
                        "concurrency": c,
                        **json.loads(line),
                        "load_average_1m": round(os.getloadavg()[0], 2),
                    }
                    cells.append(cell)
                    print(
                        f"  round {round_ + 1} c={c:<3} {name:<12} {cell['requests_per_s']:>9,.0f} req/s  "
                        f"p50 {cell['p50_ms']:.2f} ms  p99 {cell['p99_ms']:.2f} ms  "
                        f"server {_fmt(cell['server_cpu_us_per_call'])} µs/call"
                        + (f"  FAILED {cell['failed']}: {cell['first_failures'][:1]}" if cell["failed"] else ""),
                        file=sys.stderr,
                        flush=True,
                    )
                    for server in servers.values():
                        if server.poll() is not None:
                            raise SystemExit(f"a server exited (status {server.returncode}); logs in {workdir}")
        load.stdin.close()
        load.wait(timeout=30)
        elapsed = time.perf_counter() - started

        for name in SERVERS:
            failed = sum(cell["failed"] for cell in cells if cell["server"] == name)
            if failed:
                first = next(cell["first_failures"] for cell in cells if cell["server"] == name and cell["failed"])
                problems.append(f"{name}: {failed} wrong or failed answers, e.g. {first[:1]}")
        for process in servers.values():
            process.terminate()
        for process in servers.values():
            process.wait(timeout=15)
        stored = {}
        for name, path in databases.items():
            answered = sum(cell["answered"] for cell in cells if cell["server"] == name) + 1  # + the preflight call
            stored[name] = {"answered": answered, **_count_logs(path)}
            if stored[name]["done_and_ok"] < answered:
                problems.append(f"{name}: {answered} calls answered, {stored[name]['done_and_ok']} ok records stored")
            if stored[name]["token_in_records"]:
                problems.append(f"{name}: the token is in {stored[name]['token_in_records']} stored records")
            if stored[name]["sessions_merged"] < 1:
                problems.append(f"{name}: no session has the merged last_order_number")
        stored["minimal"]["read_by_webhook_dsl"] = read_back = asyncio.run(_read_back(databases["minimal"]))
        if not read_back["last_order_number"] or not read_back["logs_ok"] or not all(read_back["logs_ok"]):
            problems.append(f"webhook-dsl's store does not read the minimal service's writes: {read_back}")

        report = {
            "meta": {
                "mode": "quick" if args.quick else "full",
                "rounds": args.rounds,
                "seconds": args.seconds,
                "warmup": args.warmup,
                "concurrency": args.concurrency,
                "sessions": SESSIONS,
                "cpus": os.cpu_count(),
                "machine": platform.machine(),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "versions": {
                    name: _version(name)
                    for name in ("webhook-dsl", "starlette", "uvicorn", "uvloop", "httptools", "pyreqwest", "orjson")
                },
                "sqlite": sqlite3.sqlite_version,
                "source": _source(),
                "load_average_1m_at_start": load_at_start,
                "load_average_1m_highest": max(cell["load_average_1m"] for cell in cells),
                "elapsed_s": round(elapsed, 1),
                "load_client": "one process, pyreqwest on uvloop, closed loop, keep-alive",
                "stand_in": "webhook_dsl.demo (ThreadingHTTPServer, one write per answer, TCP_NODELAY)",
            },
            **summarize(cells, args.concurrency),
            "stored": stored,
            "problems": problems,
            "cells": cells,
        }
        report["targets"] = _targets(report["webhook_dsl_over_minimal"])
        return report, problems
    finally:
        stop_all(processes)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"work directory kept: {workdir}", file=sys.stderr)


def _concurrency(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("write positive integers separated by commas, e.g. 1,16,64")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI smoke run: 2 rounds of 1 s cells (under a minute)")
    parser.add_argument("--rounds", type=int, help="rounds of every cell (default 5; 2 with --quick)")
    parser.add_argument("--seconds", type=float, help="measured seconds per cell (default 4; 1 with --quick)")
    parser.add_argument("--warmup", type=float, help="seconds before each measurement (default 1; 0.3 with --quick)")
    parser.add_argument(
        "--concurrency", type=_concurrency, default=[1, 16, 64], help="requests in flight, e.g. 1,16,64 (the default)"
    )
    parser.add_argument(
        "--json",
        type=Path,
        help=f"results file (default {DEFAULT_JSON.relative_to(ROOT)}; with --quick, a new temporary file)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (databases, server logs)")
    parser.add_argument("--load-client", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load_client:
        import uvloop

        uvloop.run(_load_client())
        return 0
    args.rounds = args.rounds or (2 if args.quick else 5)
    args.seconds = args.seconds or (1.0 if args.quick else 4.0)
    args.warmup = args.warmup if args.warmup is not None else (0.3 if args.quick else 1.0)
    if args.rounds < 1 or args.seconds <= 0 or args.warmup < 0:
        parser.error("--rounds must be at least 1, --seconds above 0 and --warmup 0 or more")
    path: Path = args.json or (
        Path(tempfile.mkdtemp(prefix="webhook-dsl-service-bench-")) / "service_bench.json"
        if args.quick
        else DEFAULT_JSON
    )
    print(
        f"service bench: {args.rounds} round(s) x c={','.join(map(str, args.concurrency))} x {len(SERVERS)} servers, "
        f"{args.warmup:g} s warm-up + {args.seconds:g} s each",
        file=sys.stderr,
    )
    report, problems = run(args)
    if report:
        print(markdown(report))
        print()
        for target in report["targets"]:
            print(
                f"target {target['name']}: {target['value']} ({target['target']}): "
                + ("met" if target["met"] else "not met")
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        os.replace(temporary, path)
        print(f"results written to {path}")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
