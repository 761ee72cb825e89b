"""Fault injection for ``webhook-dsl serve``: is every webhook call the outbound API received also in the log?

    python benchmarks/faults.py                                  # kill9, pg-restart, full-disk (about a minute)
    python benchmarks/faults.py --scenarios kill9 --sessions 100 --seconds 8

Each scenario drives trigger calls (a POST webhook to a stand-in API in this process, one unique call id
each) while a fault hits the service: ``kill9`` kills ``serve`` (SQLite) and restarts it, ``pg-restart``
restarts and stops PostgreSQL under two replicas, ``full-disk`` fills the SQLite database's filesystem
(a tmpfs; root only). A scenario that cannot run here (no PostgreSQL binaries, no mount) is skipped.
After the fault and a pause for the service to store what it could not (polled until the logs stop
changing), every session's log is read back and compared with what the stand-in received.

How to read it: ``delivered`` is what the API received, ``recorded`` the call ids with a log record
(whatever its ``state``); ``deliv-unrec`` (delivered, no record at all) must be 0, else a call happened
and nobody can tell. ``unknown`` and ``in-flight`` records are calls begun and never completed (the
request may have arrived): honest records, not losses. ``ack`` counts 200 answers; 503, other 5xx,
connection errors and timeouts are what clients saw during the fault.
``recover s`` runs from the fault's end until every replica answers a trigger call successfully again.
The exit status is 1 when any scenario has a delivered call without a log record (their ids are printed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
SCENARIOS = ("kill9", "pg-restart", "full-disk")
COMPANY = "faults"
SECRET = "faults-api-token-0123456789"
CALL_ID = re.compile(r"/deliver/([A-Za-z0-9-]+)")

EXAMPLE = """examples:
  python benchmarks/faults.py                                   # all three scenarios, about a minute
  python benchmarks/faults.py --scenarios kill9,full-disk --sessions 200 --seconds 10 --json /tmp/f.json
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def command() -> list[str]:
    script = shutil.which("webhook-dsl", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "webhook_dsl"]


# -- the outbound API: records every call id it receives -------------------------------------------------


class StandIn:
    """A tiny HTTP/1.1 server (keep-alive, one write per answer, TCP_NODELAY) on 127.0.0.1. ``POST
    /deliver/ID`` answers 200 with ``{"session": {"client_data": {"last": ID}}}`` (a merge per call) and
    records ID the moment the whole request has arrived."""

    def __init__(self) -> None:
        self.received: dict[str, list[float]] = {}
        self.requests = 0
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.get_running_loop().create_server(
            lambda: _StandInProtocol(self), "127.0.0.1", 0, backlog=1024
        )
        self.port = self.server.sockets[0].getsockname()[1]

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    def answer(self, method: str, target: str) -> bytes:
        self.requests += 1
        found = CALL_ID.search(target)
        if method == "POST" and found:
            call_id = found.group(1)
            self.received.setdefault(call_id, []).append(time.monotonic())
            body = json.dumps({"received": call_id, "session": {"client_data": {"last": call_id}}}).encode()
            status = b"200 OK"
        else:
            body, status = b'{"error": "not found"}', b"404 Not Found"
        return (
            b"HTTP/1.1 "
            + status
            + b"\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )


class _StandInProtocol(asyncio.Protocol):
    def __init__(self, owner: StandIn) -> None:
        self.owner = owner
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            try:
                method, target, _ = lines[0].split(" ", 2)
            except ValueError:
                self.transport.close()
                return
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            start = end + 4
            if "chunked" in headers.get("transfer-encoding", "").lower():
                consumed = _chunked_length(self.buffer, start)
                if consumed is None:
                    return
                size = consumed
            else:
                size = int(headers.get("content-length", "0") or 0)
                if len(self.buffer) < start + size:
                    return
            del self.buffer[: start + size]
            self.transport.write(self.owner.answer(method, target))


def _chunked_length(buffer: bytearray, start: int) -> int | None:
    """The length of a complete chunked body starting at ``start`` (trailers included), or None."""
    at = start
    while True:
        line_end = buffer.find(b"\r\n", at)
        if line_end < 0:
            return None
        size = int(bytes(buffer[at:line_end]).split(b";")[0] or b"0", 16)
        at = line_end + 2
        if size == 0:
            trailer_end = buffer.find(b"\r\n\r\n", at - 2)
            return None if trailer_end < 0 else trailer_end + 4 - start
        at += size + 2
        if at > len(buffer):
            return None


# -- processes, databases, mounts: everything a scenario starts, cleaned up whatever happens ----------------


def as_postgres(script: str) -> list[str]:
    """A shell command run as the postgres user when we are root (the server refuses to run as root)."""
    if os.geteuid() == 0:
        return ["su", "postgres", "-s", "/bin/sh", "-c", script]
    return ["sh", "-c", script]


def postgres_bin() -> Path | None:
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: [int(x) if x.isdigit() else 0 for x in p.parent.parent.name.split(".")],
    )
    return found[-1].parent if found else None


class Resources:
    """What a scenario started: service processes, a PostgreSQL cluster, a tmpfs mount, temp dirs."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []
        self.pg: tuple[Path, Path] | None = None  # (bin, data dir)
        self.mounts: list[Path] = []
        self.dirs: list[Path] = []

    def cleanup(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=8)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                process.wait()
        if self.pg is not None:
            pg_bin, data = self.pg
            subprocess.run(
                as_postgres(f"{pg_bin}/pg_ctl -D {shlex.quote(str(data))} -m immediate -w stop >/dev/null 2>&1"),
                check=False,
                timeout=60,
            )
            self.pg = None
        for mount in self.mounts:
            if subprocess.run(["umount", str(mount)], check=False, capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)
        self.mounts.clear()
        for directory in self.dirs:
            shutil.rmtree(directory, ignore_errors=True)
        self.dirs.clear()


class Service:
    """One ``webhook-dsl serve`` on a fixed loopback port; ``restart`` starts it again on the same port."""

    def __init__(self, resources: Resources, triggers: Path, database: str, log_path: Path, cwd: Path) -> None:
        self.resources = resources
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.cwd = cwd
        self.argv = [
            *command(),
            *("serve", "--triggers", str(triggers), "--database", database, "--port", str(self.port)),
            *("--allow-network", "127.0.0.0/8", "--no-access-log", "--log-level", "warning", "--timeout", "5"),
        ]
        self.process = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log_file:
            process = subprocess.Popen(
                self.argv,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                cwd=str(self.cwd),
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,  # a Ctrl-C reaches us alone; we stop it
            )
        self.resources.processes.append(process)
        return process

    def kill9(self) -> int:
        self.process.kill()
        return self.process.wait()

    def restart(self) -> None:
        self.process = self._spawn()

    async def wait_healthy(self, client: aiohttp.ClientSession, timeout: float = 30.0) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.url}: serve exited with status {self.process.returncode}; see its log")
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with client.get(self.url + "/health", timeout=aiohttp.ClientTimeout(total=1)) as r:
                    if r.status == 200:
                        return time.monotonic() - started
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.url} was not healthy within {timeout:g} s")


def scan_log(path: Path) -> dict[str, Any]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {"errors": 0, "warnings": 0, "first": []}
    errors = [line for line in lines if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback")]
    warnings = [line for line in lines if " WARNING " in line]
    return {"errors": len(errors), "warnings": len(warnings), "first": [line[:240] for line in (errors + warnings)[:6]]}


# -- the load -------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    call_id: str
    replica: int
    started: float
    ended: float = 0.0
    kind: str = ""  # "200", "503", "5xx", "4xx", "connection", "timeout"
    status: int = 0
    ok: bool | None = None  # result.ok of a 200
    recorded: bool | None = None  # result.recorded of a 200, when the service says it
    retry_after: float | None = None
    detail: str = ""

    @property
    def success(self) -> bool:
        return self.kind == "200" and self.ok is True and self.recorded is not False


@dataclass
class Load:
    urls: list[str]
    key: str
    sessions: list[str]
    concurrency: int
    timeout: float
    tag: str
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    counter: itertools.count[int] = field(default_factory=itertools.count)
    client: aiohttp.ClientSession | None = None

    async def call(self, replica: int | None = None, timeout: float | None = None) -> Outcome:
        assert self.client is not None
        n = next(self.counter)
        call_id = f"{self.tag}-{n:06d}"
        replica = n % len(self.urls) if replica is None else replica
        session = self.sessions[n % len(self.sessions)]
        outcome = Outcome(call_id, replica, time.monotonic())
        self.outcomes[call_id] = outcome
        url = f"{self.urls[replica]}/session/{session}/triggers/deliver"
        try:
            async with self.client.post(
                url,
                json={"arguments": {"call_id": call_id}, "images": []},
                timeout=aiohttp.ClientTimeout(total=timeout or self.timeout),
            ) as response:
                body = await response.read()
                outcome.status = response.status
                with contextlib.suppress(ValueError):
                    outcome.retry_after = float(response.headers.get("Retry-After", ""))
        except TimeoutError:
            outcome.kind, outcome.detail = "timeout", "client timeout"
        except aiohttp.ClientError as error:
            outcome.kind, outcome.detail = "connection", f"{type(error).__name__}: {error}"[:160]
        else:
            status = outcome.status
            document: Any = None
            with contextlib.suppress(ValueError):
                document = json.loads(body)
            if status == 200:
                outcome.kind = "200"
                result = document.get("result", {}) if isinstance(document, dict) else {}
                outcome.ok = bool(result.get("ok"))
                if "recorded" in result:
                    outcome.recorded = bool(result["recorded"])
                if not outcome.ok:
                    outcome.detail = f"{result.get('category')}: {result.get('error')}"[:160]
                elif outcome.recorded is False:
                    outcome.detail = "result.recorded false (sent; its record is stored later)"
            else:
                outcome.kind = "503" if status == 503 else "5xx" if status >= 500 else "4xx"
                problem = document.get("error") if isinstance(document, dict) else None
                if isinstance(problem, dict):
                    words = f"{problem.get('code', '')}: {problem.get('message', '')}"
                else:
                    words = body[:120].decode("utf-8", "replace")
                retry_after = "" if outcome.retry_after is None else f" [Retry-After {outcome.retry_after:g}]"
                outcome.detail = f"{words[:140]}{retry_after}"
        outcome.ended = time.monotonic()
        return outcome

    async def worker(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            outcome = await self.call()
            if not outcome.success:  # as a client would: no tight loop against a service that is down
                await asyncio.sleep(0.1 if outcome.retry_after is None else min(1.0, outcome.retry_after))

    async def recovery(self, since: float, limit: float = 30.0) -> list[float | None]:
        """Seconds from ``since`` until each replica answered a trigger call (begun after ``since``)
        successfully: a call every 0.1 s per replica, each with a 3 s timeout, until one succeeds."""

        async def one(replica: int) -> float | None:
            pending: set[asyncio.Task[Outcome]] = set()
            found: float | None = None
            try:
                while found is None and time.monotonic() - since < limit:
                    tick = time.monotonic()
                    if len(pending) < 30:
                        pending.add(asyncio.create_task(self.call(replica, timeout=3.0)))
                    done, pending = await asyncio.wait(pending, timeout=0.1, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        outcome = task.result()
                        if outcome.success:
                            moment = outcome.ended - since
                            found = moment if found is None else min(found, moment)
                    await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))
            finally:
                if pending:
                    await asyncio.wait(pending)
                    for task in pending:
                        outcome = task.result()
                        if outcome.success and (found is None or outcome.ended - since < found):
                            found = outcome.ended - since
            return None if found is None else round(found, 2)

        return list(await asyncio.gather(*(one(r) for r in range(len(self.urls)))))


async def read_records(load: Load) -> tuple[dict[str, str], int, list[str]]:
    """Every session's log: call id -> state (absent counts as recorded), the number of sessions whose log
    could not be read, and the first reasons."""
    assert load.client is not None
    records: dict[str, str] = {}
    failures: list[str] = []
    rank = {"recorded": 3, "unknown_outcome": 2, "in_flight": 1}
    gate = asyncio.Semaphore(16)

    async def one(i: int, session: str) -> None:
        assert load.client is not None
        url = f"{load.urls[i % len(load.urls)]}/session/{session}/logs"
        async with gate:
            try:
                async with load.client.get(
                    url, params={"limit": "1000"}, timeout=aiohttp.ClientTimeout(total=10)
                ) as response:
                    if response.status != 200:
                        failures.append(f"HTTP {response.status} {(await response.text())[:120]}")
                        return
                    logs = (await response.json())["logs"]
            except (TimeoutError, aiohttp.ClientError, ValueError, KeyError) as error:
                failures.append(f"{type(error).__name__}: {error}"[:160])
                return
        if len(logs) >= 1000:
            failures.append(f"{session}: 1000 records, the most one read returns; use more --sessions")
        for record in logs:
            found = CALL_ID.search(str(record.get("url") or ""))
            if not found:
                continue
            state = record.get("state") or "recorded"
            if rank.get(state, 0) >= rank.get(records.get(found.group(1), ""), 0):
                records[found.group(1)] = state

    await asyncio.gather(*(one(i, s) for i, s in enumerate(load.sessions)))
    return records, len(failures), failures[:5]


async def settled_records(load: Load, minimum: float = 3.0, maximum: float = 30.0) -> dict[str, Any]:
    """Read the logs every 2 s until two reads in a row agree (and at least ``minimum`` seconds have passed),
    at most ``maximum`` seconds: the service may still be storing completions it kept aside."""
    started = time.monotonic()
    previous: tuple[Any, ...] | None = None
    reads = 0
    while True:
        records, failed, reasons = await read_records(load)
        reads += 1
        fingerprint = (len(records), tuple(sorted(Counter(records.values()).items())), failed)
        elapsed = time.monotonic() - started
        if (fingerprint == previous and failed == 0 and elapsed >= minimum) or elapsed >= maximum:
            return {
                "records": records,
                "read_failures": failed,
                "read_failure_reasons": reasons,
                "settled": fingerprint == previous and failed == 0,
                "settled_after_s": round(elapsed, 1),
                "reads": reads,
            }
        previous = fingerprint
        await asyncio.sleep(2.0)


# -- scenarios ------------------------------------------------------------------------------------------

TRIGGER = {
    "name": "deliver",
    "description": "Deliver one numbered item to the fault-injection stand-in API.",
    "parameters": {
        "type": "object",
        "properties": {"call_id": {"type": "string", "pattern": "^[A-Za-z0-9-]{1,64}$"}},
        "required": ["call_id"],
        "additionalProperties": False,
    },
    "webhook": {
        "url": "http://127.0.0.1:PORT/deliver/$call_id",
        "method": "POST",
        "headers": [{"key": "Authorization", "value": "Bearer $secrets.api_token"}],
        "body": {"call_id": "$call_id", "session": "$session.id"},
        "responseDirective": "Confirm the delivery to the user.",
    },
}


class Skip(Exception):
    """The scenario cannot run here (no PostgreSQL binaries, mount refused): reported, not a failure."""


@dataclass
class Context:
    args: argparse.Namespace
    name: str
    resources: Resources
    workdir: Path
    events: list[dict[str, Any]] = field(default_factory=list)
    t0: float = 0.0

    def event(self, what: str, **extra: Any) -> None:
        at = round(time.monotonic() - self.t0, 2) if self.t0 else None
        self.events.append({"at_s": at, "event": what, **extra})
        log(
            f"  [{self.name}] {'' if at is None else f'{at:6.2f} s  '}{what}"
            + (f"  {json.dumps(extra)}" if extra else "")
        )


def create_key(database: str) -> str:
    done = subprocess.run(
        [*command(), "keys", "create", "--company-id", COMPANY, "--label", "faults", "--database", database],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(ROOT),
    )
    if done.returncode != 0:
        raise RuntimeError(f"webhook-dsl keys create failed: {done.stderr.strip()[:400]}")
    return done.stdout.strip().splitlines()[-1].strip()


Injector = Callable[[Context, Load, list[Service], asyncio.Event], Any]


async def run_scenario(
    ctx: Context, database: str, replicas: int, inject: Injector, service_cwd: Path | None = None
) -> dict[str, Any]:
    args = ctx.args
    stand_in = StandIn()
    await stand_in.start()
    try:
        triggers = ctx.workdir / "triggers"
        triggers.mkdir()
        (triggers / "deliver.json").write_text(json.dumps(TRIGGER).replace("PORT", str(stand_in.port)))
        key = await asyncio.to_thread(create_key, database)  # also creates the tables before the replicas start
        services = [
            Service(ctx.resources, triggers, database, ctx.workdir / f"serve-{i}.log", service_cwd or ctx.workdir)
            for i in range(replicas)
        ]
        connector = aiohttp.TCPConnector(limit=args.concurrency + 64 * replicas, force_close=False)
        headers = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession(headers=headers, connector=connector) as client:
            for service in services:
                await service.wait_healthy(client)
            async with client.put(f"{services[0].url}/secrets/api_token", json={"value": SECRET}) as r:
                if r.status != 204:
                    raise RuntimeError(f"PUT /secrets/api_token: {r.status} {await r.text()}")
            sessions = [f"f-{ctx.name}-{i}" for i in range(args.sessions)]
            gate = asyncio.Semaphore(32)

            async def put(i: int, session: str) -> None:
                async with (
                    gate,
                    client.put(
                        f"{services[i % replicas].url}/session/{session}", json={"client_data": {"user": f"u{i}"}}
                    ) as r,
                ):
                    if r.status != 200:
                        raise RuntimeError(f"PUT /session/{session}: {r.status} {await r.text()}")

            await asyncio.gather(*(put(i, s) for i, s in enumerate(sessions)))
            tag = {"kill9": "k9", "pg-restart": "pg", "full-disk": "fd"}[ctx.name]
            load = Load([s.url for s in services], key, sessions, args.concurrency, args.timeout, tag, client=client)

            stop = asyncio.Event()
            ctx.t0 = time.monotonic()
            ctx.event(f"load starts: {args.sessions} sessions, concurrency {args.concurrency}, {replicas} replica(s)")
            workers = [asyncio.create_task(load.worker(stop)) for _ in range(args.concurrency)]
            try:
                recoveries = await inject(ctx, load, services, stop)
            finally:
                stop.set()
                await asyncio.gather(*workers, return_exceptions=True)
            ctx.event("load stopped, calls in flight drained")
            load_seconds = time.monotonic() - ctx.t0
            settled = await settled_records(load, maximum=args.settle_max)
            ctx.event(
                f"logs read back: {len(settled['records'])} call ids recorded, settled={settled['settled']} "
                f"after {settled['settled_after_s']} s"
            )
            alive = [s.process.poll() is None for s in services]
        await asyncio.sleep(0)  # let the connector close
    finally:
        stand_in.close()
    return tally(ctx, load, stand_in, settled, recoveries, services, alive, load_seconds)


def tally(
    ctx: Context,
    load: Load,
    stand_in: StandIn,
    settled: dict[str, Any],
    recoveries: list[dict[str, Any]],
    services: list[Service],
    alive: list[bool],
    load_seconds: float,
) -> dict[str, Any]:
    outcomes = load.outcomes.values()
    records: dict[str, str] = settled["records"]
    delivered = set(stand_in.received)
    acknowledged = {o.call_id for o in outcomes if o.kind == "200"}
    kinds = Counter(o.kind for o in outcomes)
    states = Counter(records.values())
    unrecorded = sorted(delivered - set(records))
    errors_seen = Counter(f"{o.kind} {o.status or ''} {o.detail}".replace("  ", " ") for o in outcomes if not o.success)
    service_logs = [scan_log(s.log_path) for s in services]
    times = [r["time_to_recover_s"] for r in recoveries]
    return {
        "scenario": ctx.name,
        "load_seconds": round(load_seconds, 1),
        "calls_attempted": len(load.outcomes),
        "acknowledged": len(acknowledged),
        "acknowledged_not_recorded_flag": sum(1 for o in outcomes if o.kind == "200" and o.recorded is False),
        "acknowledged_webhook_failed": sum(1 for o in outcomes if o.kind == "200" and not o.ok),
        "delivered": len(delivered),
        "delivered_twice_or_more": sum(1 for times_ in stand_in.received.values() if len(times_) > 1),
        "recorded": len(records),
        "record_states": dict(states),
        "unknown_outcome": states.get("unknown_outcome", 0),
        "in_flight": states.get("in_flight", 0),
        "delivered_unrecorded": len(unrecorded),
        "delivered_unrecorded_ids": unrecorded[:200],
        "acknowledged_unrecorded": len(acknowledged - set(records)),
        "acknowledged_undelivered": len(acknowledged - delivered),
        "recorded_undelivered": len(set(records) - delivered),
        "answers_503": kinds.get("503", 0),
        "answers_other_5xx": kinds.get("5xx", 0),
        "answers_4xx": kinds.get("4xx", 0),
        "connection_errors": kinds.get("connection", 0),
        "timeouts": kinds.get("timeout", 0),
        "time_to_recover_s": None if any(t is None for t in times) else max(times, default=None),
        "faults": recoveries,
        "errors_seen": dict(errors_seen.most_common(10)),
        "logs": {k: v for k, v in settled.items() if k != "records"},
        "services_alive_at_end": alive,
        "service_log": {
            "errors": sum(s["errors"] for s in service_logs),
            "warnings": sum(s["warnings"] for s in service_logs),
            "first": [line for s in service_logs for line in s["first"]][:6],
        },
        "events": ctx.events,
    }


async def sleep_until(ctx: Context, at: float) -> None:
    await asyncio.sleep(max(0.0, ctx.t0 + at - time.monotonic()))


async def finish(ctx: Context, load: Load, stop: asyncio.Event, last_fault_end: float) -> None:
    """The load runs until --seconds, and at least 3 s past the last fault's end."""
    await sleep_until(ctx, max(ctx.args.seconds, last_fault_end - ctx.t0 + 3.0))
    stop.set()


async def inject_kill9(ctx: Context, load: Load, services: list[Service], stop: asyncio.Event) -> list[dict[str, Any]]:
    service = services[0]
    await sleep_until(ctx, 0.4 * ctx.args.seconds)
    in_flight = sum(1 for o in load.outcomes.values() if not o.ended)
    pid = service.process.pid
    status = await asyncio.to_thread(service.kill9)
    ctx.event(f"kill -9 of serve pid {pid}: exit status {status}, {in_flight} trigger calls in flight")
    service.restart()
    fault_end = time.monotonic()
    ctx.event(f"serve restarted on the same port and database (pid {service.process.pid})")
    assert load.client is not None
    healthy, recovered = await asyncio.gather(service.wait_healthy(load.client), load.recovery(fault_end))
    ctx.event(f"restarted serve healthy after {healthy:.2f} s; trigger calls succeed after {recovered[0]} s")
    await finish(ctx, load, stop, fault_end)
    return [
        {
            "fault": "kill -9 serve, restart",
            "at_s": round(fault_end - ctx.t0, 2),
            "exit_status": status,
            "calls_in_flight": in_flight,
            "health_after_s": round(healthy, 2),
            "time_to_recover_s": recovered[0],
            "per_replica_s": recovered,
        }
    ]


async def inject_pg(
    ctx: Context, load: Load, services: list[Service], stop: asyncio.Event, pg: tuple[Path, Path, Path, str]
) -> list[dict[str, Any]]:
    pg_bin, data, pg_dir, options = pg
    control = f"{pg_bin}/pg_ctl -D {shlex.quote(str(data))} -l {shlex.quote(str(pg_dir / 'server.log'))}"
    results = []

    async def pg_ctl(action: str) -> float:
        started = time.monotonic()
        done = await asyncio.to_thread(
            subprocess.run,
            as_postgres(f"{control} {action} >>{shlex.quote(str(pg_dir / 'pg_ctl.log'))} 2>&1"),
            check=False,
            timeout=120,
            start_new_session=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl {action.split()[-1]} failed; see {pg_dir / 'pg_ctl.log'}")
        return time.monotonic() - started

    await sleep_until(ctx, 0.25 * ctx.args.seconds)
    took = await pg_ctl("-m fast -w restart")
    fault_end = time.monotonic()
    ctx.event(f"PostgreSQL restarted (pg_ctl restart -m fast) in {took:.2f} s")
    recovered = await load.recovery(fault_end)
    ctx.event(f"trigger calls succeed again on each replica after {recovered} s")
    results.append(
        {
            "fault": "pg_ctl restart -m fast",
            "at_s": round(fault_end - ctx.t0, 2),
            "took_s": round(took, 2),
            "time_to_recover_s": None if None in recovered else max(r for r in recovered if r is not None),
            "per_replica_s": recovered,
        }
    )
    await sleep_until(ctx, max(0.55 * ctx.args.seconds, fault_end - ctx.t0 + 1.0))
    took = await pg_ctl("-m fast -w stop")
    stopped = time.monotonic()
    ctx.event(f"PostgreSQL stopped (pg_ctl stop -m fast, {took:.2f} s)")
    await asyncio.sleep(ctx.args.pg_down)
    took = await pg_ctl(f"-w -o {shlex.quote(options)} start")
    fault_end = time.monotonic()
    ctx.event(f"PostgreSQL started again after {fault_end - stopped:.2f} s down")
    recovered = await load.recovery(fault_end)
    ctx.event(f"trigger calls succeed again on each replica after {recovered} s")
    results.append(
        {
            "fault": f"pg_ctl stop, {ctx.args.pg_down:g} s down, start",
            "at_s": round(fault_end - ctx.t0, 2),
            "down_s": round(fault_end - stopped, 2),
            "time_to_recover_s": None if None in recovered else max(r for r in recovered if r is not None),
            "per_replica_s": recovered,
        }
    )
    await finish(ctx, load, stop, fault_end)
    return results


def fill(path: Path) -> int:
    """Write to ``path`` until the filesystem answers ENOSPC, in ever smaller pieces; returns bytes written."""
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9):
            data = b"\xa5" * size
            while True:
                try:
                    n = os.write(fd, data)
                except OSError as error:
                    if error.errno in (errno.ENOSPC, errno.EDQUOT):
                        break
                    raise
                written += n
                if n < size:
                    break
    finally:
        os.close(fd)
    return written


async def inject_full_disk(
    ctx: Context, load: Load, services: list[Service], stop: asyncio.Event, mount: Path
) -> list[dict[str, Any]]:
    filler = mount / "filler.bin"
    await sleep_until(ctx, 0.3 * ctx.args.seconds)
    failures_before = sum(1 for o in load.outcomes.values() if o.ended and not o.success)
    written = await asyncio.to_thread(fill, filler)
    full_at = time.monotonic()
    free = os.statvfs(mount)
    ctx.event(f"filesystem full: filler {written / 2**20:.1f} MiB, {free.f_bavail * free.f_frsize} bytes left (ENOSPC)")
    topped_up = 0
    while time.monotonic() - full_at < ctx.args.full_hold:  # keep it full: the service may free space (WAL reset)
        await asyncio.sleep(0.2)
        topped_up += await asyncio.to_thread(fill, filler)
    filler.unlink()
    fault_end = time.monotonic()
    failed = sum(1 for o in load.outcomes.values() if o.ended and not o.success) - failures_before
    ctx.event(
        f"filler deleted after {fault_end - full_at:.1f} s full ({topped_up} bytes topped up meanwhile); "
        f"{failed} trigger calls failed while full"
    )
    recovered = await load.recovery(fault_end)
    ctx.event(f"trigger calls succeed again after {recovered[0]} s")
    await finish(ctx, load, stop, fault_end)
    usage = os.statvfs(mount)
    ctx.event(f"load ends; the tmpfs holds {(usage.f_blocks - usage.f_bfree) * usage.f_frsize / 2**20:.1f} MiB")
    return [
        {
            "fault": f"tmpfs of {ctx.args.tmpfs_mib} MiB full for {ctx.args.full_hold:g} s",
            "at_s": round(fault_end - ctx.t0, 2),
            "filler_bytes": written,
            "topped_up_bytes": topped_up,
            "calls_failed_while_full": failed,
            "time_to_recover_s": recovered[0],
            "per_replica_s": recovered,
        }
    ]


async def scenario_kill9(ctx: Context) -> dict[str, Any]:
    database = f"sqlite:///{ctx.workdir / 'faults.db'}"
    return {"database": "sqlite", "replicas": 1, **await run_scenario(ctx, database, 1, inject_kill9)}


async def scenario_pg(ctx: Context) -> dict[str, Any]:
    pg_bin = postgres_bin()
    if pg_bin is None:
        raise Skip("no PostgreSQL binaries under /usr/lib/postgresql/*/bin (apt-get install postgresql)")
    if os.geteuid() == 0 and subprocess.run(["id", "postgres"], capture_output=True).returncode != 0:
        raise Skip("running as root and there is no postgres user to run the server as")
    pg_dir = Path(tempfile.mkdtemp(prefix="webhook-dsl-faults-pg-"))
    ctx.resources.dirs.append(pg_dir)
    if os.geteuid() == 0:
        shutil.chown(pg_dir, "postgres")
    data = pg_dir / "data"
    port = free_port()
    options = f"-p {port} -k {pg_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
    done = await asyncio.to_thread(
        subprocess.run,
        as_postgres(f"{pg_bin}/initdb -D {shlex.quote(str(data))} -A trust -U postgres >{pg_dir}/initdb.log 2>&1"),
        check=False,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"initdb failed: {(pg_dir / 'initdb.log').read_text(errors='replace')[-400:]}")
    ctx.resources.pg = (pg_bin, data)
    done = await asyncio.to_thread(
        subprocess.run,
        as_postgres(
            f"{pg_bin}/pg_ctl -D {shlex.quote(str(data))} -l {pg_dir}/server.log -w "
            f"-o {shlex.quote(options)} start >{pg_dir}/pg_ctl.log 2>&1"
        ),
        check=False,
        timeout=120,
        start_new_session=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"pg_ctl start failed: {(pg_dir / 'server.log').read_text(errors='replace')[-400:]}")
    version = subprocess.run([f"{pg_bin}/postgres", "--version"], capture_output=True, text=True).stdout.strip()
    ctx.event(f"{version} on 127.0.0.1:{port} (fsync=off), data in {data}")
    database = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    async def inject(c: Context, load: Load, services: list[Service], stop: asyncio.Event) -> Any:
        return await inject_pg(c, load, services, stop, (pg_bin, data, pg_dir, options))

    return {"database": "postgresql", "replicas": 2, **await run_scenario(ctx, database, 2, inject)}


async def scenario_full_disk(ctx: Context) -> dict[str, Any]:
    mount = ctx.workdir / "tmpfs"
    mount.mkdir()
    done = await asyncio.to_thread(
        subprocess.run,
        ["mount", "-t", "tmpfs", "-o", f"size={ctx.args.tmpfs_mib}m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise Skip(f"mount -t tmpfs failed ({(done.stderr or done.stdout).strip()[:200]}); run as root")
    ctx.resources.mounts.append(mount)
    ctx.event(f"tmpfs of {ctx.args.tmpfs_mib} MiB at {mount}: the database, its journal files and serve's cwd")
    database = f"sqlite:///{mount / 'faults.db'}"

    async def inject(c: Context, load: Load, services: list[Service], stop: asyncio.Event) -> Any:
        return await inject_full_disk(c, load, services, stop, mount)

    return {"database": "sqlite", "replicas": 1, **await run_scenario(ctx, database, 1, inject, service_cwd=mount)}


RUNNERS = {"kill9": scenario_kill9, "pg-restart": scenario_pg, "full-disk": scenario_full_disk}


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def run_one(args: argparse.Namespace, name: str) -> dict[str, Any]:
    resources = Resources()
    workdir = Path(tempfile.mkdtemp(prefix=f"webhook-dsl-faults-{name}-"))
    if args.keep:
        log(f"  [{name}] work directory kept: {workdir}")
    else:
        resources.dirs.append(workdir)
    ctx = Context(args, name, resources, workdir)
    log(f"{name}:")
    started = time.monotonic()
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            result = runner.run(RUNNERS[name](ctx))
    except Skip as why:
        log(f"  [{name}] skipped: {why}")
        return {"scenario": name, "skipped": str(why)}
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
        log(f"  [{name}] failed: {error}")
        return {"scenario": name, "failed": str(error)[:600], "events": ctx.events}
    finally:
        resources.cleanup()
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    return result


COLUMNS = (
    ("scenario", "scenario"),
    ("calls_attempted", "calls"),
    ("acknowledged", "ack"),
    ("delivered", "delivered"),
    ("recorded", "recorded"),
    ("unknown_outcome", "unknown"),
    ("in_flight", "in-flight"),
    ("delivered_unrecorded", "deliv-unrec"),
    ("acknowledged_unrecorded", "ack-unrec"),
    ("answers_503", "503"),
    ("answers_other_5xx", "other 5xx"),
    ("connection_errors", "conn err"),
    ("timeouts", "timeouts"),
    ("time_to_recover_s", "recover s"),
)


def print_table(results: list[dict[str, Any]]) -> None:
    rows = [[label for _, label in COLUMNS]]
    notes = []
    for result in results:
        if "skipped" in result or "failed" in result:
            notes.append(
                f"{result['scenario']}: {'skipped' if 'skipped' in result else 'FAILED'}: "
                f"{result.get('skipped') or result.get('failed')}"
            )
            continue
        rows.append(["-" if result.get(key) is None else str(result[key]) for key, _ in COLUMNS])
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    for n, row in enumerate(rows):
        print(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            print("  ".join("-" * w for w in widths))
    for note in notes:
        print(note)
    for result in results:
        if "errors_seen" not in result:
            continue
        print(f"\n{result['scenario']}: faults {json.dumps(result['faults'])}")
        print(
            f"  record states {json.dumps(result['record_states'])}, "
            f"delivered twice {result['delivered_twice_or_more']}, "
            f"recorded but never delivered {result['recorded_undelivered']}, "
            f"answered 200 but never delivered {result['acknowledged_undelivered']}, 4xx {result['answers_4xx']}, "
            f"200 with result.recorded false {result['acknowledged_not_recorded_flag']}"
        )
        print(
            f"  logs settled={result['logs']['settled']} after {result['logs']['settled_after_s']} s, "
            f"unreadable sessions {result['logs']['read_failures']}; service log: {result['service_log']['errors']} "
            f"errors, {result['service_log']['warnings']} warnings"
        )
        for what, count in result["errors_seen"].items():
            print(f"  {count:6d} x {what}")
        for line in result["service_log"]["first"][:3]:
            print(f"         log: {line}")
        if result["delivered_unrecorded"]:
            ids = result["delivered_unrecorded_ids"]
            more = result["delivered_unrecorded"] - len(ids)
            print(f"  DELIVERED BUT UNRECORDED: {' '.join(ids)}" + (f" (and {more} more)" if more > 0 else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"comma-separated (default {','.join(SCENARIOS)})"
    )
    parser.add_argument("--sessions", type=int, default=300, help="sessions the calls are spread over (default 300)")
    parser.add_argument(
        "--seconds", type=float, default=12.0, help="load per scenario, at least 3 s past the last fault (default 12)"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="trigger calls in flight (default 32)")
    parser.add_argument("--timeout", type=float, default=10.0, help="client timeout per trigger call, s (default 10)")
    parser.add_argument(
        "--pg-down", type=float, default=2.0, help="pg-restart: seconds PostgreSQL stays stopped (default 2)"
    )
    parser.add_argument(
        "--tmpfs-mib",
        type=int,
        default=96,
        help="full-disk: size of the tmpfs; serve wants 64 MiB free to start (default 96)",
    )
    parser.add_argument(
        "--full-hold", type=float, default=3.0, help="full-disk: seconds the filesystem stays full (default 3)"
    )
    parser.add_argument(
        "--settle-max",
        type=float,
        default=30.0,
        help="read the logs until they stop changing, at most this long (default 30)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep each scenario's work directory (service logs) and print its path"
    )
    parser.add_argument(
        "--json",
        default=str(HERE / "results" / "faults.json"),
        help="output (default benchmarks/results/faults.json; '' for none)",
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in RUNNERS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")

    def terminated(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminated)
    started = time.monotonic()
    try:
        results = [run_one(args, name) for name in names]
    except KeyboardInterrupt:
        log("interrupted: every process, cluster and mount of the scenario under way was stopped and removed")
        return 130
    print_table(results)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "sessions": args.sessions,
            "seconds": args.seconds,
            "concurrency": args.concurrency,
            "timeout_s": args.timeout,
            "elapsed_s": round(time.monotonic() - started, 1),
        }
        Path(args.json).write_text(json.dumps({"meta": meta, "scenarios": results}, indent=2) + "\n")
    lost = [r for r in results if r.get("delivered_unrecorded")]
    failed = [r for r in results if "failed" in r]
    if lost:
        print(f"\nFAIL: delivered but unrecorded in {', '.join(r['scenario'] for r in lost)}")
    if failed:
        print(f"\nFAIL: could not run {', '.join(r['scenario'] for r in failed)}")
    return 1 if lost or failed else 0


if __name__ == "__main__":
    sys.exit(main())
