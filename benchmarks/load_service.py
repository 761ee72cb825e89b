"""Load test of the HTTP service on loopback: many sessions firing triggers at a local stand-in API.

    python benchmarks/load_service.py                      # SQLite, one service process
    python benchmarks/load_service.py --replicas 2 --database postgresql://postgres@127.0.0.1:5432/postgres

It starts the stand-in API (``webhook-dsl stand-in``) and ``--replicas`` service processes
(``webhook-dsl serve``, the example triggers aimed at the stand-in) on free loopback ports, creates
an API key and sets the company's ``erp_token`` secret once (``check_order`` sends it as
``Bearer $secrets.erp_token``; no session carries it), then drives ``--sessions`` sessions at
``--concurrency``, each created with some client_data (a user id and a plan): each session gets ``--puts``
client_data updates (``PUT /session/ID``, a new key each) and ``--calls`` trigger calls
(``POST /session/ID/triggers/check_order``, whose answer merges ``last_order_number`` into the
session), all interleaved and spread round-robin over the replicas. Afterwards it reads every
session back: an update whose key is missing is a lost update, and a successful call without its
log record is a lost log record. Both must be zero (the exit status is 1 otherwise).

Bounded: at most sessions * (puts + calls) requests, and it stops issuing new ones after
``--max-seconds``. Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from webhook_dsl.service import open_store  # noqa: E402
from webhook_dsl.store import hash_api_key, new_api_key  # noqa: E402

_STAND_IN = (
    "import http.server, sys\n"
    "http.server.ThreadingHTTPServer.request_queue_size = 1024\n"
    "from webhook_dsl.standin import serve\n"
    "serve('127.0.0.1', int(sys.argv[1])).serve_forever()\n"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def command() -> list[str]:
    script = shutil.which("webhook-dsl", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "webhook_dsl"]


def wait_for(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url}: the process exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {timeout:g} s")


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


COMPANY = "load_test"
#: The company's ERP token, a company secret as the example trigger check_order reads it ($secrets.erp_token).
ERP_TOKEN = "load-test-erp-token"


async def create_company(database: str) -> str:
    """An API key for the load test's company, and the company's secret erp_token; returns the key."""
    store = open_store(database)
    try:
        key = new_api_key()
        await store.add_api_key(COMPANY, hash_api_key(key), key[:11], "load test")
        await store.set_secret(COMPANY, "erp_token", ERP_TOKEN)
        return key
    finally:
        await store.close()


async def drive(args: argparse.Namespace, urls: list[str], key: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    connector = aiohttp.TCPConnector(limit=args.concurrency, limit_per_host=args.concurrency)
    latencies: dict[str, list[float]] = {"put": [], "call": []}
    errors: list[str] = []
    raised = 0
    succeeded_calls: dict[str, int] = {}
    sent_puts: dict[str, set[str]] = {}
    run = uuid.uuid4().hex[:6]
    sessions = [f"load-{run}-{i}" for i in range(args.sessions)]
    async with aiohttp.ClientSession(headers=headers, connector=connector) as client:
        for i, session in enumerate(sessions):  # create them (not timed)
            client_data = {"user_id": f"usr_{i}", "plan": "enterprise"}
            async with client.put(f"{urls[i % len(urls)]}/session/{session}", json={"client_data": client_data}) as r:
                if r.status != 200:
                    raise SystemExit(f"PUT {session}: {r.status} {await r.text()}")
            succeeded_calls[session], sent_puts[session] = 0, set(client_data)
        # Interleave: for each round, every session gets its puts and calls in turn.
        work: list[tuple[str, str, int]] = []
        for step in range(max(args.puts, args.calls)):
            for session in sessions:
                if step < args.puts:
                    work.append(("put", session, step))
                if step < args.calls:
                    work.append(("call", session, step))
        queue: asyncio.Queue[tuple[str, str, int]] = asyncio.Queue()
        for item in work:
            queue.put_nowait(item)
        stop_at = time.perf_counter() + args.max_seconds
        counter = 0

        async def worker() -> None:
            nonlocal counter, raised
            while not queue.empty() and time.perf_counter() < stop_at:
                kind, session, step = queue.get_nowait()
                counter += 1
                base = urls[counter % len(urls)]
                started = time.perf_counter()
                try:
                    if kind == "put":
                        name = f"put{step}"
                        form = aiohttp.FormData()
                        form.add_field("client_data", json.dumps({name: step}))
                        async with client.put(f"{base}/session/{session}", data=form) as response:
                            await response.read()
                            ok = response.status == 200
                        if ok:
                            sent_puts[session].add(name)
                    else:
                        payload = {"arguments": {"order_number": f"A-{step}"}, "images": []}
                        async with client.post(
                            f"{base}/session/{session}/triggers/check_order", json=payload
                        ) as response:
                            body = await response.json()
                            ok = response.status == 200 and body["result"]["ok"]
                        if ok:
                            succeeded_calls[session] += 1
                except (TimeoutError, aiohttp.ClientError, ValueError, KeyError) as error:
                    errors.append(f"{kind} {session}: {error!r}")
                    raised += 1
                    continue
                latencies[kind].append((time.perf_counter() - started) * 1000)
                if not ok:
                    errors.append(f"{kind} {session}: HTTP {response.status}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - started

        lost_updates = lost_logs = 0
        for i, session in enumerate(sessions):
            base = urls[(i + 1) % len(urls)]
            async with client.get(f"{base}/session/{session}") as response:
                data = (await response.json())["client_data"]
            lost_updates += len(sent_puts[session] - set(data))
            async with client.get(f"{base}/session/{session}/logs", params={"limit": "1000"}) as response:
                logs = (await response.json())["logs"]
            lost_logs += max(0, succeeded_calls[session] - sum(1 for r in logs if r["ok"]))
    done = len(latencies["put"]) + len(latencies["call"])
    return {
        "requests": done,
        "unfinished": len(work) - done - raised,
        "elapsed_s": round(elapsed, 3),
        "throughput_rps": round(done / elapsed, 1),
        "trigger_calls_per_s": round(len(latencies["call"]) / elapsed, 1),
        "call_p50_ms": round(percentile(latencies["call"], 0.50), 2),
        "call_p99_ms": round(percentile(latencies["call"], 0.99), 2),
        "put_p50_ms": round(percentile(latencies["put"], 0.50), 2),
        "put_p99_ms": round(percentile(latencies["put"], 0.99), 2),
        "all_mean_ms": round(statistics.fmean(latencies["put"] + latencies["call"]), 2) if done else None,
        "errors": len(errors),
        "first_errors": errors[:5],
        "lost_updates": lost_updates,
        "lost_log_records": lost_logs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=200, help="sessions (default 200)")
    parser.add_argument("--puts", type=int, default=5, help="client_data updates per session (default 5)")
    parser.add_argument("--calls", type=int, default=10, help="trigger calls per session (default 10)")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight (default 64)")
    parser.add_argument("--replicas", type=int, default=1, help="service processes on one database (default 1)")
    parser.add_argument(
        "--database", help="postgresql://... or sqlite:///FILE (default: a fresh SQLite file in a temp folder)"
    )
    parser.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto",
                        help="the service's event loop (serve --loop; default auto: uvloop when installed)")
    parser.add_argument("--max-seconds", type=float, default=120, help="stop issuing requests after this long")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="webhook-dsl-load-"))
    database = args.database or f"sqlite:///{workdir / 'load.db'}"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        stand_in_port = free_port()
        # The stand-in of `webhook-dsl stand-in`, with a listen backlog for 64 concurrent connections: the
        # default of 5 makes connection attempts wait for SYN retransmits (1 s, 3 s), which would be
        # measured as the service's latency.
        stand_in = subprocess.Popen(
            [sys.executable, "-c", _STAND_IN, str(stand_in_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        processes.append(stand_in)
        triggers = workdir / "triggers"
        triggers.mkdir()
        for trigger in (ROOT / "examples" / "triggers").glob("*.json"):
            (triggers / trigger.name).write_text(
                trigger.read_text().replace("127.0.0.1:8765", f"127.0.0.1:{stand_in_port}")
            )
        key = asyncio.run(create_company(database))  # also creates the tables before the replicas start
        urls = []
        for _ in range(args.replicas):
            port = free_port()
            service = subprocess.Popen(
                [
                    *command(),
                    *("serve", "--triggers", str(triggers), "--database", database, "--port", str(port)),
                    *("--allow-network", "127.0.0.0/8", "--no-access-log", "--log-level", "warning"),
                    *("--loop", args.loop),
                ],
                stdout=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            processes.append(service)
            urls.append(f"http://127.0.0.1:{port}")
            wait_for(urls[-1] + "/health", service)
        wait_for(f"http://127.0.0.1:{stand_in_port}/nothing", stand_in)
        kind = "postgresql" if database.startswith(("postgres://", "postgresql://")) else "sqlite"
        print(
            f"load test: {args.sessions} sessions x ({args.puts} PUT + {args.calls} trigger calls), "
            f"concurrency {args.concurrency}, {args.replicas} replica(s), {kind}",
            file=sys.stderr,
        )
        figures = asyncio.run(drive(args, urls, key))
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    figures = {
        "database": kind,
        "replicas": args.replicas,
        "loop": args.loop,
        "sessions": args.sessions,
        "concurrency": args.concurrency,
        "cpus": os.cpu_count(),
        **figures,
    }
    width = max(map(len, figures))
    for name, value in figures.items():
        print(f"{name:<{width}}  {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if figures["lost_updates"] == 0 and figures["lost_log_records"] == 0 and figures["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
