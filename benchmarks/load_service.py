"""Load test of the HTTP service on loopback: many sessions firing triggers at a local stand-in API.

    python benchmarks/load_service.py                      # SQLite, one service process
    python benchmarks/load_service.py --replicas 2 --database postgresql://postgres@127.0.0.1:5432/postgres
    python benchmarks/load_service.py --hostile --sessions 200 --json h.json   # alone, then among hostile tenants
    python benchmarks/load_service.py --compare-workers    # serve with one worker, then --workers 2, side by side

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

``--workers N`` runs each replica as ``webhook-dsl serve --workers N``: the service's CPU time and peak RSS
are then summed over its worker processes. ``--compare-workers`` runs the same load twice, on fresh
processes and a fresh database each time, with one worker and with ``--workers`` (2 unless given), and
prints the two side by side with their ratio; the exit status is 1 if either run loses anything.

Bounded: at most sessions * (puts + calls) requests, and it stops issuing new ones after
``--max-seconds``. Everything runs on 127.0.0.1 and stops by itself.

``--hostile`` runs that same load twice, each time with fresh processes and (unless ``--database``) a
fresh SQLite database: once alone and once while three hostile tenants
(``benchmarks/hostile_tenants.py``, in a process of their own, each with its own company, API key and
triggers in ``triggers/<company_id>/``) hit the same service: one whose webhooks drip 100 MB bodies
(``benchmarks/hostile_standin.py``: chunked, by Content-Length, to the end of the connection, a gzip
bomb, slowly, and with ``Content-Length`` next to ``Transfer-Encoding``), one whose schema holds
catastrophic patterns (``^(a+)+$`` against ``"a"*40 + "!"``), one sending bad bodies (malformed JSON,
nesting 200,000 deep, wrong content types, bodies past the limit). They aim at the first replica, at
``--hostile-concurrency`` requests in flight each, for as long as the measured load runs. Before it,
each of their cases is sent alone to the idle service (``--hostile-probe``), to show what one costs it.
It reports the well-behaved tenant's figures with and without them, the ratios, the service's peak RSS
(VmHWM) and CPU time in each run, and what each hostile tenant got back. The exit status is 1 on any
loss (an update or a log record, the hostile tenants' log records included), any error of the
well-behaved tenant, or any 5xx answered to a hostile tenant; never on a latency (the issue's target, p99
within 2x, is reported as met or not).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import hostile_tenants  # noqa: E402

from webhook_dsl.storage.base import hash_api_key, new_api_key  # noqa: E402
from webhook_dsl.storage.database_url import open_store  # noqa: E402

_STAND_IN = (
    "import http.server, sys\n"
    "http.server.ThreadingHTTPServer.request_queue_size = 1024\n"
    "from webhook_dsl.demo import serve\n"
    "serve('127.0.0.1', int(sys.argv[1])).serve_forever()\n"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def command() -> list[str]:
    script = shutil.which("webhook-dsl", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "webhook_dsl"]


def stop_all(processes: list[subprocess.Popen[Any]]) -> None:
    """Stop the processes, the last started first: SIGTERM, then SIGKILL for one still there after 10 s."""
    for process in reversed(processes):
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


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


async def create_company(database: str, others: tuple[str, ...] = ()) -> dict[str, str]:
    """An API key for the load test's company, and the company's secret erp_token; an API key for each of
    ``others`` too (the hostile tenants). Returns company -> key."""
    store = open_store(database)
    try:
        keys = {}
        for company in (COMPANY, *others):
            key = new_api_key()
            await store.add_api_key(company, hash_api_key(key), key[:11], "load test")
            keys[company] = key
        await store.set_secret(COMPANY, "erp_token", ERP_TOKEN)
        return keys
    finally:
        await store.close()


Hook = Callable[[], Awaitable[Any]]


async def drive(
    args: argparse.Namespace, urls: list[str], key: str, before: Hook | None = None, after: Hook | None = None
) -> dict[str, Any]:
    """The well-behaved load; ``before`` is awaited once the sessions exist, just before the timed load,
    and ``after`` just after it (before the read-back); what ``after`` returns is under ``"after"``."""
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

        if before is not None:
            await before()
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - started
        after_load = await after() if after is not None else None

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
        **({"after": after_load} if after is not None else {}),
    }


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024


def proc_memory_mib(pid: int) -> dict[str, float]:
    """VmHWM (the peak resident set) and VmRSS of a live process, in MiB (Linux /proc)."""
    out: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmHWM", "VmRSS"):
                out[name] = round(int(value.split()[0]) / 1024, 1)
    except OSError:
        pass
    return out


def proc_cpu_s(pid: int) -> float:
    """User plus system CPU seconds a live process has used (Linux /proc), 0.0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def tree_pids(pid: int) -> list[int]:
    """A process and its live descendants (``serve --workers N`` runs its workers as child processes)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, ()))
    return found


def tree_cpu_s(pid: int) -> float:
    """User plus system CPU seconds of a process and its live descendants."""
    return sum(proc_cpu_s(p) for p in tree_pids(pid))


def tree_memory_mib(pid: int) -> dict[str, float]:
    """VmHWM and VmRSS summed over a process and its live descendants: with ``--workers`` the workers' sum
    (their peaks need not coincide, so the summed VmHWM is an upper bound of the peak)."""
    out = {"VmHWM": 0.0, "VmRSS": 0.0}
    for p in tree_pids(pid):
        for name, value in proc_memory_mib(p).items():
            out[name] = round(out[name] + value, 1)
    return out


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def scan_log(path: Path) -> dict[str, Any]:
    """What a service wrote on stderr at --log-level warning: counts, and the first error lines."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    errors = [line for line in lines if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback")]
    warnings = [line for line in lines if " WARNING " in line]
    return {
        "errors": len(errors),
        "warnings": len(warnings),
        "first_errors": [line[:300] for line in errors[:5]],
        "first_warnings": [line[:300] for line in warnings[:3]],
    }


def http_json(url: str) -> Any:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def run_phase(args: argparse.Namespace, *, with_hostile: bool) -> dict[str, Any]:
    """One run of the well-behaved load on fresh processes (and, unless --database, a fresh database): the
    stand-in, with --hostile the hostile stand-in and the hostile companies' triggers (so that the service is
    configured alike in both runs), the service replicas; with ``with_hostile`` the hostile tenants too."""
    workdir = Path(tempfile.mkdtemp(prefix="webhook-dsl-load-"))
    database = args.database or f"sqlite:///{workdir / 'load.db'}"
    extra: dict[str, Any] = {"load_average_1m_at_start": round(os.getloadavg()[0], 2)}
    processes: list[subprocess.Popen[bytes]] = []
    services: list[subprocess.Popen[bytes]] = []
    log_paths: list[Path] = []
    tenants: asyncio.subprocess.Process | None = None
    hostile_standin: subprocess.Popen[bytes] | None = None
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
        hostile_port = 0
        if args.hostile:
            hostile_port = free_port()
            hostile_standin = subprocess.Popen(
                [
                    sys.executable,
                    str(HERE / "hostile_standin.py"),
                    *("--port", str(hostile_port), "--chunk-bytes", str(args.drip_chunk_bytes)),
                    *("--interval-ms", str(args.drip_interval_ms), "--total-bytes", str(args.drip_total_bytes)),
                    *("--max-seconds", str(args.max_seconds + 600)),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            processes.append(hostile_standin)
            hostile_tenants.write_triggers(triggers, hostile_port)
        others = hostile_tenants.COMPANIES if args.hostile else ()
        keys = asyncio.run(create_company(database, others))  # also creates the tables before the replicas start
        urls = []
        for i in range(args.replicas):
            port = free_port()
            log_paths.append(workdir / f"service-{i}.log")
            with log_paths[-1].open("wb") as log_file:
                service = subprocess.Popen(
                    [
                        *command(),
                        *("serve", "--triggers", str(triggers), "--database", database, "--port", str(port)),
                        *("--allow-network", "127.0.0.0/8", "--no-access-log", "--log-level", "warning"),
                        *("--loop", args.loop),
                        *(("--workers", str(args.workers)) if args.workers != 1 else ()),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=log_file,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            processes.append(service)
            services.append(service)
            urls.append(f"http://127.0.0.1:{port}")
            wait_for(urls[-1] + "/health", service)
        wait_for(f"http://127.0.0.1:{stand_in_port}/nothing", stand_in)
        if hostile_standin is not None:
            wait_for(f"http://127.0.0.1:{hostile_port}/stats", hostile_standin)

        def cpu_now() -> dict[str, float]:
            now = {
                "service": sum(tree_cpu_s(s.pid) for s in services),
                "stand_in": proc_cpu_s(stand_in.pid),
                "load_generator": own_cpu_s(),
            }
            if hostile_standin is not None:
                now["hostile_stand_in"] = proc_cpu_s(hostile_standin.pid)
            if tenants is not None:
                now["hostile_tenants"] = proc_cpu_s(tenants.pid)
            return now

        cpu_start: dict[str, float] = {}
        profilers: list[subprocess.Popen[bytes]] = []
        memory_start: list[dict[str, float]] = []

        async def before() -> None:
            nonlocal tenants
            if with_hostile:
                config = {
                    "url": urls[0],  # the hostile tenants aim at the first replica
                    "keys": {name: keys[name] for name in hostile_tenants.COMPANIES},
                    "tenants": args.hostile_tenants,
                    "json_max_bytes": args.hostile_json_max_bytes,
                    "probe_reps": args.hostile_probe,
                    "service_pid": services[0].pid if args.workers == 1 else None,  # its workers: not one pid
                    "concurrency": args.hostile_concurrency,
                    "rate": args.hostile_rate,
                    "max_requests": args.hostile_requests,
                    "sessions": max(10, -(-args.hostile_requests // 500)),  # < 1000 calls each: logs read back whole
                    "max_body_bytes": 1024 * 1024,  # serve's default --max-body-bytes
                    "request_timeout": args.hostile_request_timeout,
                    "max_seconds": args.max_seconds + args.hostile_warmup,
                }
                config_path = workdir / "hostile.json"
                config_path.write_text(json.dumps(config))
                tenants = await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(HERE / "hostile_tenants.py"),
                    str(config_path),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                )
                assert tenants.stdout is not None
                line = await asyncio.wait_for(tenants.stdout.readline(), 120)
                if line.strip() != b"ready":
                    raise SystemExit(f"the hostile tenants did not start (they said {line[:200]!r})")
                await asyncio.sleep(args.hostile_warmup)  # they are at full pace when the measured load starts
            memory_start.extend(tree_memory_mib(s.pid) for s in services)
            if args.py_spy:
                spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
                output = f"{args.py_spy}-{'with' if with_hostile else 'without'}.txt"
                profilers.append(
                    subprocess.Popen(
                        [
                            *(spy, "record", "--pid", str(services[0].pid), "--format", "raw", "--rate", "250"),
                            *(("--subprocesses",) if args.workers != 1 else ()),
                            *("--output", output, "--nonblocking", "--threads"),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
                await asyncio.sleep(0.5)  # attached before the load starts
            cpu_start.update(cpu_now())

        async def after() -> dict[str, Any]:
            end = cpu_now()
            for profiler in profilers:
                profiler.send_signal(signal.SIGINT)  # py-spy writes its file and exits
            cpu = {name: round(end[name] - cpu_start.get(name, 0.0), 2) for name in end}
            report = None
            if tenants is not None:
                assert tenants.stdin is not None and tenants.stdout is not None
                tenants.stdin.write(b"stop\n")
                await tenants.stdin.drain()
                tenants.stdin.close()
                line = await asyncio.wait_for(tenants.stdout.readline(), args.hostile_request_timeout + 120)
                await tenants.wait()
                report = json.loads(line) if line.strip() else {"failed": f"exit status {tenants.returncode}"}
            return {"cpu": cpu, "hostile": report}

        kind = "postgresql" if database.startswith(("postgres://", "postgresql://")) else "sqlite"
        print(
            f"load test: {args.sessions} sessions x ({args.puts} PUT + {args.calls} trigger calls), "
            f"concurrency {args.concurrency}, {args.replicas} replica(s), {kind}"
            + (", with the hostile tenants" if with_hostile else (", hostile tenants idle" if args.hostile else "")),
            file=sys.stderr,
        )
        figures = asyncio.run(drive(args, urls, keys[COMPANY], before, after))
        after_load = figures.pop("after")
        memory = [tree_memory_mib(s.pid) for s in services]
        extra["service_peak_rss_mib"] = max((m.get("VmHWM", 0.0) for m in memory), default=0.0)
        extra["service_rss_before_load_mib"] = max((m.get("VmRSS", 0.0) for m in memory_start), default=0.0)
        extra["service_rss_end_mib"] = max((m.get("VmRSS", 0.0) for m in memory), default=0.0)
        extra["cpu_s_during_load"] = after_load["cpu"]
        if args.hostile and hostile_standin is not None:
            extra["hostile_stand_in"] = http_json(f"http://127.0.0.1:{hostile_port}/stats")
        if after_load["hostile"] is not None:
            extra["hostile"] = after_load["hostile"]
        for process in services:
            if process.poll() is not None:
                extra.setdefault("service_exited", []).append(process.returncode)
        for profiler in profilers:
            try:
                profiler.wait(timeout=30)
            except subprocess.TimeoutExpired:
                profiler.kill()
    finally:
        if tenants is not None and tenants.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(tenants.pid, signal.SIGTERM)
        stop_all(processes)
        logs = [scan_log(path) for path in log_paths]
        extra["service_log"] = {
            "errors": sum(log.get("errors", 0) for log in logs),
            "warnings": sum(log.get("warnings", 0) for log in logs),
            "first_errors": [line for log in logs for line in log.get("first_errors", [])][:5],
            "first_warnings": [line for log in logs for line in log.get("first_warnings", [])][:3],
        }
        shutil.rmtree(workdir, ignore_errors=True)
    return {"database": kind, **figures, **extra}


#: The well-behaved tenant's figures compared with and without the hostile tenants.
_COMPARED = (
    ("throughput_rps", "requests/s"),
    ("trigger_calls_per_s", "trigger calls/s"),
    ("call_p50_ms", "trigger call p50 (ms)"),
    ("call_p99_ms", "trigger call p99 (ms)"),
    ("put_p50_ms", "PUT p50 (ms)"),
    ("put_p99_ms", "PUT p99 (ms)"),
    ("all_mean_ms", "mean, all requests (ms)"),
)
_SUMMED = (
    ("requests", "requests done"),
    ("errors", "errors"),
    ("unfinished", "unfinished"),
    ("lost_updates", "lost updates"),
    ("lost_log_records", "lost log records"),
)


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 2) if values else float("nan")


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One phase's figures over its rounds: medians of the timings, sums of the counts, the highest peak RSS."""
    out: dict[str, Any] = {name: _median([r[name] for r in runs]) for name, _ in _COMPARED}
    out.update({name: sum(r[name] for r in runs) for name, _ in _SUMMED})
    out["service_peak_rss_mib"] = max(r["service_peak_rss_mib"] for r in runs)
    out["service_cpu_s_during_load"] = _median([r["cpu_s_during_load"]["service"] for r in runs])
    out["service_log_errors"] = sum(r["service_log"]["errors"] for r in runs)
    out["service_log_warnings"] = sum(r["service_log"]["warnings"] for r in runs)
    out["load_average_1m_at_start"] = _median([r["load_average_1m_at_start"] for r in runs])
    return out


def _hostile_totals(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """What the hostile tenants got back, over every round: 5xx, lost log records, and per tenant the count of
    each outcome (``STATUS CODE``, or ``200 CATEGORY`` for a trigger call)."""
    totals: dict[str, Any] = {"server_errors_5xx": 0, "lost_log_records": 0, "requests": {}, "by_outcome": {}}
    for run in runs:
        for name, tenant in (run.get("hostile") or {}).get("tenants", {}).items():
            totals["server_errors_5xx"] += tenant["server_errors_5xx"]
            totals["lost_log_records"] += tenant["lost_log_records"] or 0
            totals["requests"][name] = totals["requests"].get(name, 0) + tenant["requests"]
            outcomes = totals["by_outcome"].setdefault(name, {})
            for outcome, count in tenant["by_outcome"].items():
                outcomes[outcome] = outcomes.get(outcome, 0) + count
        if "failed" in (run.get("hostile") or {}):
            totals["failed"] = True
    return totals


def report_hostile(args: argparse.Namespace, runs: list[dict[str, Any]]) -> dict[str, Any]:
    without = [r for r in runs if not r["with_hostile"]]
    with_ = [r for r in runs if r["with_hostile"]]
    ratios: dict[str, float] = {}
    for name in ("call_p99_ms", "put_p99_ms", "call_p50_ms", "put_p50_ms", "throughput_rps", "service_peak_rss_mib"):
        per_round = [w[name] / o[name] for w, o in zip(with_, without, strict=True) if o[name] and o[name] == o[name]]
        ratios[name] = round(statistics.median(per_round), 2) if per_round else float("nan")
    summary = {"without": _summary(without), "with": _summary(with_)}
    hostile = _hostile_totals(with_)
    lost = (
        sum(summary[p]["lost_updates"] + summary[p]["lost_log_records"] for p in summary) + hostile["lost_log_records"]
    )
    targets = [
        {
            "name": "trigger call p99, with / without",
            "value": ratios["call_p99_ms"],
            "target": "<= 2",
            "met": ratios["call_p99_ms"] <= 2,
        },
        {
            "name": "PUT p99, with / without",
            "value": ratios["put_p99_ms"],
            "target": "<= 2",
            "met": ratios["put_p99_ms"] <= 2,
        },
        {
            "name": "lost updates and log records (all tenants, both runs)",
            "value": lost,
            "target": "0",
            "met": lost == 0,
        },
        {
            "name": "5xx answered to the hostile tenants",
            "value": hostile["server_errors_5xx"],
            "target": "0",
            "met": hostile["server_errors_5xx"] == 0,
        },
    ]
    return {
        "meta": {
            "database": runs[0]["database"],
            "replicas": args.replicas,
            "loop": args.loop,
            "sessions": args.sessions,
            "puts": args.puts,
            "calls": args.calls,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "cpus": os.cpu_count(),
            "hostile_tenants": args.hostile_tenants,
            "hostile_json_max_bytes": args.hostile_json_max_bytes,
            "hostile_probe_repeats": args.hostile_probe,
            "hostile_concurrency": args.hostile_concurrency,
            "hostile_rate": args.hostile_rate,
            "hostile_requests": args.hostile_requests,
            "hostile_warmup_s": args.hostile_warmup,
            "drip": {
                "chunk_bytes": args.drip_chunk_bytes,
                "interval_ms": args.drip_interval_ms,
                "total_bytes": args.drip_total_bytes,
            },
        },
        **summary,
        "ratio_with_over_without": ratios,
        "hostile_totals": hostile,
        "targets": targets,
        "runs": runs,
    }


def args_probe(result: dict[str, Any]) -> int:
    return int(result["meta"]["hostile_probe_repeats"])


def print_hostile(result: dict[str, Any]) -> None:
    without, with_ = result["without"], result["with"]
    ratios = result["ratio_with_over_without"]
    rows = [("well-behaved tenant", "without", "with", "with/without")]
    for name, label in _COMPARED:
        ratio = ratios.get(name)
        rows.append((label, f"{without[name]:g}", f"{with_[name]:g}", f"{ratio:g}x" if ratio is not None else ""))
    for name, label in _SUMMED:
        rows.append((label, str(without[name]), str(with_[name]), ""))
    rows.append(
        (
            "service peak RSS, VmHWM (MiB)",
            f"{without['service_peak_rss_mib']:g}",
            f"{with_['service_peak_rss_mib']:g}",
            f"{ratios['service_peak_rss_mib']:g}x",
        )
    )
    rows.append(
        (
            "service CPU during the load (s)",
            f"{without['service_cpu_s_during_load']:g}",
            f"{with_['service_cpu_s_during_load']:g}",
            "",
        )
    )
    rows.append(("service log: errors", str(without["service_log_errors"]), str(with_["service_log_errors"]), ""))
    rows.append(("service log: warnings", str(without["service_log_warnings"]), str(with_["service_log_warnings"]), ""))
    rows.append(
        (
            "machine's 1-min load average at start",
            f"{without['load_average_1m_at_start']:g}",
            f"{with_['load_average_1m_at_start']:g}",
            "",
        )
    )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print(f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]:>{widths[3]}}")
    for run in result["runs"]:
        if not run["with_hostile"]:
            continue
        report = run.get("hostile") or {}
        print(
            f"\nhostile tenants, round {run['round']} ({report.get('seconds', '?')} s, drained in "
            f"{report.get('drain_seconds', '?')} s; CPU s during the load: {run['cpu_s_during_load']})"
        )
        for name, tenant in report.get("tenants", {}).items():
            print(
                f"  {name}: {tenant['requests']} requests, {tenant['requests_per_s']}/s, p50 {tenant['p50_ms']} ms, "
                f"p99 {tenant['p99_ms']} ms, max {tenant['max_ms']} ms, 5xx {tenant['server_errors_5xx']}, "
                f"lost log records {tenant['lost_log_records']}"
            )
            print("    " + ", ".join(f"{outcome}: {n}" for outcome, n in tenant["by_outcome"].items()))
        probe = report.get("probe") or []
        if probe:
            print(
                f"  costliest hostile requests alone (of {len(probe)} cases, each sent {args_probe(result)} times "
                "to the idle service):"
            )
            for row in probe[:8]:
                print(
                    f"    {row['service_cpu_ms']:>6} ms service CPU, {row['wall_ms']:>7} ms wall: "
                    f"{row['tenant']} {row['case']} -> {row['outcome']}"
                )
        if run.get("hostile_stand_in"):
            print("  the hostile stand-in's answers (the probe's included):")
        for path, stats in run.get("hostile_stand_in", {}).items():
            print(
                f"    {path}: {stats['started']} answers begun, {stats['cut_by_client']} cut by the service, "
                f"{stats['read_to_end']} read to the end, body written per answer: median "
                f"{stats['body_bytes_written_median'] / MIB:.2f} MiB, "
                f"max {stats['body_bytes_written_max'] / MIB:.2f} MiB"
            )
        if report.get("failed"):
            print(f"  the hostile tenants failed: {report['failed']}")
    for run in result["runs"]:
        if run["service_log"]["first_errors"]:
            print(
                f"\nservice log, round {run['round']} {'with' if run['with_hostile'] else 'without'}: "
                f"{run['service_log']['errors']} error line(s), first: {run['service_log']['first_errors'][0]}"
            )
    print()
    for target in result["targets"]:
        print(
            f"target {target['name']}: {target['value']} ({target['target']}): {'met' if target['met'] else 'NOT met'}"
        )


def plain_figures(args: argparse.Namespace, phase: dict[str, Any]) -> dict[str, Any]:
    """One run of the plain load (no hostile tenants), as printed and written to JSON."""
    return {
        "database": phase["database"],
        "replicas": args.replicas,
        "workers": args.workers,
        "loop": args.loop,
        "sessions": args.sessions,
        "concurrency": args.concurrency,
        "cpus": os.cpu_count(),
        "load_average_1m_at_start": phase["load_average_1m_at_start"],
        **{
            k: v
            for k, v in phase.items()
            if k not in ("database", "cpu_s_during_load", "service_log", "load_average_1m_at_start")
        },
        "service_cpu_s_during_load": phase["cpu_s_during_load"]["service"],
        "service_log_errors": phase["service_log"]["errors"],
    }


def _sound(figures: dict[str, Any]) -> bool:
    """No lost update, no lost log record, no error, and the service still running at the end."""
    return (
        figures["lost_updates"] == 0
        and figures["lost_log_records"] == 0
        and figures["errors"] == 0
        and "service_exited" not in figures
    )


#: What ``--compare-workers`` sets side by side, and whether a larger figure is better.
_WORKER_FIGURES = (
    ("throughput_rps", "requests/s"),
    ("trigger_calls_per_s", "trigger calls/s"),
    ("call_p50_ms", "trigger call p50 (ms)"),
    ("call_p99_ms", "trigger call p99 (ms)"),
    ("put_p50_ms", "PUT p50 (ms)"),
    ("put_p99_ms", "PUT p99 (ms)"),
    ("service_cpu_s_during_load", "service CPU during the load (s)"),
    ("service_peak_rss_mib", "service peak RSS, summed over workers (MiB)"),
    ("errors", "errors"),
    ("lost_updates", "lost updates"),
    ("lost_log_records", "lost log records"),
    ("load_average_1m_at_start", "machine's 1-min load average at start"),
)


def compare_workers(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Two runs of the plain load, one worker and N, with N's figures over one worker's."""
    one, many = runs.values()
    ratios = {}
    for name, _ in _WORKER_FIGURES[:8]:
        a, b = one.get(name), many.get(name)
        if a and b is not None and math.isfinite(a) and math.isfinite(b):
            ratios[name] = round(b / a, 2)
    return {"workers": runs, "ratio_n_over_one": ratios}


def print_compared(result: dict[str, Any]) -> None:
    (n_one, one), (n_many, many) = result["workers"].items()
    ratios = result["ratio_n_over_one"]
    rows = [("", f"--workers {n_one}", f"--workers {n_many}", f"{n_many} / {n_one}")]
    for name, label in _WORKER_FIGURES:
        ratio = ratios.get(name)
        rows.append((label, f"{one.get(name)}", f"{many.get(name)}", f"{ratio:g}x" if ratio is not None else ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print(f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]:>{widths[3]}}")


def _tenants(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(hostile_tenants.COMPANIES))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"known tenants: {', '.join(hostile_tenants.COMPANIES)}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=200, help="sessions (default 200)")
    parser.add_argument("--puts", type=int, default=5, help="client_data updates per session (default 5)")
    parser.add_argument("--calls", type=int, default=10, help="trigger calls per session (default 10)")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight (default 64)")
    parser.add_argument("--replicas", type=int, default=1, help="service processes on one database (default 1)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes per replica (serve --workers N; default 1). Example: --workers 2",
    )
    parser.add_argument(
        "--compare-workers",
        action="store_true",
        help="run the load with one worker, then again (fresh processes and database) with --workers "
        "(2 unless given), and print them side by side",
    )
    parser.add_argument(
        "--database", help="postgresql://... or sqlite:///FILE (default: a fresh SQLite file in a temp folder)"
    )
    parser.add_argument(
        "--loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="the service's event loop (serve --loop; default auto: uvloop when installed)",
    )
    parser.add_argument("--max-seconds", type=float, default=120, help="stop issuing requests after this long")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument(
        "--py-spy",
        metavar="PREFIX",
        help="profile the (first) service process during the measured load with py-spy (pip install py-spy), "
        "written as collapsed stacks to PREFIX-without.txt / PREFIX-with.txt",
    )
    hostile = parser.add_argument_group("hostile tenants (--hostile)")
    hostile.add_argument(
        "--hostile",
        action="store_true",
        help="run the load without, then with three hostile tenants (fresh processes and database "
        "each time) and compare",
    )
    hostile.add_argument(
        "--rounds",
        type=int,
        default=1,
        metavar="N",
        help="pairs of runs; the order alternates (without-with, with-without, ...) and each figure "
        "is the median over rounds (default 1)",
    )
    hostile.add_argument(
        "--hostile-tenants",
        type=_tenants,
        default=list(hostile_tenants.COMPANIES),
        metavar="LIST",
        help="which hostile tenants run, comma-separated (default all: " + ",".join(hostile_tenants.COMPANIES) + ")",
    )
    hostile.add_argument(
        "--hostile-json-max-bytes",
        type=int,
        metavar="N",
        help="hostile_json leaves out its bodies larger than N bytes (default: sends them all, up to past the "
        "1 MiB limit), to tell what malformation costs from what size costs",
    )
    hostile.add_argument(
        "--hostile-probe",
        type=int,
        default=3,
        metavar="N",
        help="before the load, send each hostile case N times in a row to the idle service and report what one "
        "costs it (wall time, service CPU); 0 skips this (default 3)",
    )
    hostile.add_argument(
        "--hostile-concurrency",
        type=int,
        default=4,
        metavar="N",
        help="requests in flight per hostile tenant (default 4)",
    )
    hostile.add_argument(
        "--hostile-rate",
        type=float,
        default=0,
        metavar="RPS",
        help="at most this many requests/s per hostile tenant (default 0: as fast as they go)",
    )
    hostile.add_argument(
        "--hostile-requests",
        type=int,
        default=20000,
        metavar="N",
        help="at most this many requests per hostile tenant (default 20000)",
    )
    hostile.add_argument(
        "--hostile-warmup",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="seconds the hostile tenants run before the measured load starts (default 1)",
    )
    hostile.add_argument(
        "--hostile-request-timeout",
        type=float,
        default=60,
        metavar="SECONDS",
        help="a hostile tenant's request gives up after this long (default 60)",
    )
    hostile.add_argument(
        "--drip-chunk-bytes", type=int, default=64 * 1024, metavar="BYTES", help="drip piece (default 65536)"
    )
    hostile.add_argument(
        "--drip-interval-ms", type=float, default=5, metavar="MS", help="pause between pieces (default 5)"
    )
    hostile.add_argument(
        "--drip-total-bytes",
        type=int,
        default=100 * 1024 * 1024,
        metavar="BYTES",
        help="body each drip offers (default 104857600)",
    )
    args = parser.parse_args(argv)

    if args.workers < 1:
        parser.error("--workers must be 1 or more")
    if args.compare_workers and args.hostile:
        parser.error("--compare-workers runs the plain load; leave out --hostile (or run each --workers N with it)")
    if args.compare_workers:
        counts = [1, args.workers if args.workers > 1 else 2]
        by_workers: dict[str, dict[str, Any]] = {}
        for workers in counts:
            args.workers = workers
            by_workers[str(workers)] = plain_figures(args, run_phase(args, with_hostile=False))
        result = compare_workers(by_workers)
        print_compared(result)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        return 0 if all(_sound(figures) for figures in by_workers.values()) else 1
    if not args.hostile:
        figures = plain_figures(args, run_phase(args, with_hostile=False))
        width = max(map(len, figures))
        for name, value in figures.items():
            print(f"{name:<{width}}  {value}")
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
        return 0 if _sound(figures) else 1

    runs: list[dict[str, Any]] = []
    for round_ in range(args.rounds):
        for with_hostile in (False, True) if round_ % 2 == 0 else (True, False):
            runs.append(
                {"round": round_ + 1, "with_hostile": with_hostile, **run_phase(args, with_hostile=with_hostile)}
            )
    result = report_hostile(args, runs)
    print_hostile(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    lost = result["targets"][2]["value"]
    failed = result["hostile_totals"].get("failed") or any("service_exited" in run for run in runs)
    errors = result["without"]["errors"] + result["with"]["errors"]
    return 1 if lost or errors or failed or result["hostile_totals"]["server_errors_5xx"] else 0


if __name__ == "__main__":
    sys.exit(main())
