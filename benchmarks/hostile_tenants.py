"""The hostile tenants of ``load_service.py --hostile``, in a process of their own.

Three companies, each with its own API key and its own triggers (``triggers/<company_id>/``, written by
``write_triggers``), hit the service while a well-behaved company runs its normal load:

* ``hostile_drip``: its triggers call ``hostile_standin.py``, which answers 200 and drips a 100 MB body
  (chunked, by Content-Length, framed by the end of the connection, as a gzip bomb, slowly, and
  with ``Content-Length: 10`` next to ``Transfer-Encoding: chunked``). The service must cut each at its
  response cap (``too_large``) or refuse the framing (``invalid_response``), and go on.
* ``hostile_regex``: its trigger's schema holds catastrophic patterns (``^(a+)+$`` and others, in
  ``pattern`` and ``patternProperties``), and its calls send ``"a"*40 + "!"`` and the like, so that a
  backtracking engine would run for minutes; one call in six is valid and reaches the webhook.
* ``hostile_json``: bad bodies on ``PUT /session/ID`` and ``POST .../triggers/NAME``: malformed JSON,
  nesting 200,000 deep, numbers of 100,000 digits, bad UTF-8, lone surrogates, wrong content types,
  broken multipart, bodies past the size limit (declared and chunked), very wide objects.

Run by ``load_service.py`` (``python benchmarks/hostile_tenants.py CONFIG.json``): it creates its sessions,
prints ``ready``, fires until a line ``stop`` arrives on stdin (or ``max_seconds`` pass, or each tenant
has sent ``max_requests``), lets the requests in flight finish, reads back the call logs of its
sessions (every trigger call answered 200 must have its log record), and prints one line of JSON: per
tenant, what came back (``STATUS CODE``: the error code, or for a trigger call answered 200 the
result's category, ``ok`` when it succeeded), latencies, and lost log records.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp

DRIP = "hostile_drip"
REGEX = "hostile_regex"
BAD_JSON = "hostile_json"
COMPANIES = (DRIP, REGEX, BAD_JSON)
DRIP_VARIANTS = ("chunked", "length", "lying", "eof", "gzip", "slow")


# -- the tenants' triggers ------------------------------------------------------------------------------


def write_triggers(folder: Path, hostile_port: int) -> None:
    """Each hostile company's own triggers, in ``folder/<company_id>/``."""
    base = f"http://127.0.0.1:{hostile_port}"
    drip = folder / DRIP
    drip.mkdir()
    for variant in DRIP_VARIANTS:
        trigger = {
            "name": f"drip_{variant}",
            "description": f"An API that answers 200 and drips 100 MB ({variant}).",
            "parameters": {"type": "object", "properties": {}},
            "clientData": [],
            "webhook": {
                "url": f"{base}/drip/{variant}?session=$session.id",
                "method": "GET",
                "headers": [{"key": "X-Session-ID", "value": "$session.id"}],
                "responseDirective": "Tell the user what the API said.",
            },
        }
        (drip / f"drip_{variant}.json").write_text(json.dumps(trigger, indent=2))
    regex = folder / REGEX
    regex.mkdir()
    match_code = {
        "name": "match_code",
        "description": "Check a code; the schema's patterns are catastrophic for a backtracking engine.",
        "parameters": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "pattern": "^(a+)+$"},
                "word": {"type": "string", "pattern": "^(\\w+\\s?)*$"},
                "alt": {"type": "string", "pattern": "^(a|aa)+$"},
            },
            "patternProperties": {"^(x+x+)+y$": {"type": "string"}},
            "required": ["code"],
            "additionalProperties": False,
        },
        "clientData": [],
        "webhook": {
            "url": f"{base}/ok?session=$session.id",
            "method": "POST",
            "headers": [{"key": "X-Session-ID", "value": "$session.id"}],
            "body": {"code": "$code"},
            "responseDirective": "Say whether the code was accepted.",
        },
    }
    (regex / "match_code.json").write_text(json.dumps(match_code, indent=2))
    bad = folder / BAD_JSON
    bad.mkdir()
    echo = {
        "name": "echo",
        "description": "Send a short text to an API.",
        "parameters": {
            "type": "object",
            "properties": {"text": {"type": "string", "maxLength": 100}},
            "required": ["text"],
            "additionalProperties": False,
        },
        "clientData": [],
        "webhook": {
            "url": f"{base}/ok?session=$session.id",
            "method": "POST",
            "headers": [],
            "body": {"text": "$text"},
            "responseDirective": "Say what the API answered.",
        },
    }
    (bad / "echo.json").write_text(json.dumps(echo, indent=2))


# -- what the tenants send -----------------------------------------------------------------------------

JSON = "application/json"

REGEX_CASES: list[tuple[str, dict[str, Any]]] = [
    ("code a*40+!", {"code": "a" * 40 + "!"}),
    ("code a*100000+!", {"code": "a" * 100_000 + "!"}),
    ("word a*40+!", {"code": "a", "word": "a" * 40 + "!"}),
    ("alt a*40+!", {"code": "a", "alt": "a" * 40 + "!"}),
    ("key x*40 (patternProperties)", {"code": "a", "x" * 40: "v"}),
    ("valid code a*40", {"code": "a" * 40}),
]


def _multipart(boundary: str, fields: list[tuple[str, bytes]]) -> bytes:
    parts = [
        b'--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % (boundary.encode(), n.encode(), v)
        for n, v in fields
    ]
    return b"".join(parts) + b"--%s--\r\n" % boundary.encode()


def _deep_array(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _deep_object(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def _bad_bodies(max_body: int) -> list[tuple[str, str, str | None, bytes | Callable[[], AsyncIterator[bytes]]]]:
    """(name, target "put" or "call", Content-Type or None, body or a generator of a chunked body)."""
    wide = b"{" + b",".join(b'"k%d":%d' % (i, i) for i in range(60_000)) + b"}"
    cases: list[tuple[str, str, str | None, Any]] = []

    def both(name: str, kind: str | None, put: bytes, call: bytes) -> None:
        cases.append((name, "put", kind, put))
        cases.append((name, "call", kind, call))

    both("malformed", JSON, b'{"client_data": {"a": 1,}}', b'{"arguments": {"text": "x",}}')
    both("truncated", JSON, b'{"client_data": {"a": ', b'{"arguments": {"text": ')
    both("single quotes", JSON, b"{'client_data': {'a': 1}}", b"{'arguments': {'text': 'x'}}")
    both("trailing garbage", JSON, b'{"client_data": {}} }}}', b'{"arguments": {}} ]]]')
    both("bad UTF-8", JSON, b'{"client_data": {"a": "\xff\xfe\xc0"}}', b'{"arguments": {"text": "\xed\xa0\x80"}}')
    both("lone surrogate", JSON, b'{"client_data": {"a": "\\ud800"}}', b'{"arguments": {"text": "\\udfff"}}')
    both("NaN", JSON, b'{"client_data": {"a": NaN}}', b'{"arguments": {"text": Infinity}}')
    digits = b"1" * 100_000
    both("100,000-digit number", JSON, b'{"client_data": {"a": %s}}' % digits, b'{"arguments": {"text": %s}}' % digits)
    both("1e400", JSON, b'{"client_data": {"a": 1e400}}', b'{"arguments": {"text": -1e400}}')
    deep_a, deep_o = _deep_array(200_000), _deep_object(150_000)
    both("arrays 200,000 deep", JSON, b'{"client_data": {"a": %s}}' % deep_a, b'{"arguments": {"text": %s}}' % deep_a)
    both("objects 150,000 deep", JSON, b'{"client_data": %s}' % deep_o, b'{"arguments": %s}' % deep_o)
    both("objects 40 deep", JSON, b'{"client_data": %s}' % _deep_object(40), b'{"arguments": %s}' % _deep_object(40))
    both("not an object", JSON, b"[1, 2, 3]", b'"arguments"')
    both("wrong member types", JSON, b'{"client_data": "x", "assistant_id": 7}', b'{"arguments": [], "images": {}}')
    both("company_id", JSON, b'{"company_id": "load_test", "client_data": {}}', b'{"company_id": "load_test"}')
    both("60,000 keys", JSON, b'{"client_data": %s}' % wide, b'{"arguments": %s}' % wide)
    images = json.dumps(["http://x.example/"] * 1000).encode()
    cases.append(("1,000 images", "call", JSON, b'{"arguments": {"text": "x"}, "images": %s}' % images))
    cases.append(("unknown field", "call", JSON, b'{"arguments": {"text": "x"}, "dry_run": "yes", "extra": 1}'))
    cases.append(("argument 900,000 characters", "call", JSON, b'{"arguments": {"text": "%s"}}' % (b"x" * 900_000)))
    both("text/plain", "text/plain", b'{"client_data": {"a": 1}}', b'{"arguments": {"text": "x"}}')
    both("application/xml", "application/xml", b"<client_data><a>1</a></client_data>", b"<arguments/>")
    both("no Content-Type", None, b'{"client_data": {"a": 1}}', b'{"arguments": {"text": "x"}}')
    utf16 = '{"client_data": {"a": 1}}'.encode("utf-16")
    both("UTF-16 as JSON", "application/json; charset=utf-16", utf16, '{"arguments": {"text": "x"}}'.encode("utf-16"))
    both("gzip as JSON", JSON, b"\x1f\x8b\x08\x00" + b"\x00" * 64, b"\x1f\x8b\x08\x00" + b"\x00" * 64)
    over = b'{"client_data": {"a": "' + b"x" * max_body + b'"}}'
    both("past the size limit", JSON, over, over)
    multipart = "multipart/form-data; boundary=b0und"
    both(
        "multipart, client_data not JSON",
        multipart,
        _multipart("b0und", [("client_data", b"{nope")]),
        _multipart("b0und", [("arguments", b"{}")]),
    )
    both(
        "multipart without boundary",
        "multipart/form-data",
        _multipart("b0und", [("client_data", b"{}")]),
        _multipart("b0und", [("arguments", b"{}")]),
    )
    both("multipart garbage", multipart, b"\x00garbage--b0und\r\n\r\n--" * 1000, b"--b0und--garbage")
    both(
        "multipart 100 fields",
        multipart,
        _multipart("b0und", [(f"f{i}", b"1") for i in range(100)]),
        _multipart("b0und", [(f"f{i}", b"1") for i in range(100)]),
    )
    both(
        "multipart deep client_data",
        multipart,
        _multipart("b0und", [("client_data", deep_a)]),
        _multipart("b0und", [("arguments", deep_a)]),
    )
    form = "application/x-www-form-urlencoded"
    both("urlencoded bad JSON", form, b"client_data=%7Bnope&client_data=%7B%7D", b"arguments=%7B%7D")
    both("urlencoded deep", form, b"client_data=" + b"%5B" * 100_000 + b"%5D" * 100_000, b"a=" + b"%5B" * 1000)

    async def chunked_past_limit() -> AsyncIterator[bytes]:
        yield b'{"client_data": {"a": "'
        for _ in range(max_body // 65536 + 2):
            yield b"x" * 65536
        yield b'"}}'

    cases.append(("chunked past the size limit", "put", JSON, chunked_past_limit))
    cases.append(("chunked past the size limit", "call", JSON, chunked_past_limit))
    return cases


# -- driving them -------------------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 2)


def outcome(status: int, body: bytes) -> str:
    """``STATUS CODE``: the error's code, for a trigger call answered 200 its result's category (``ok`` when it
    succeeded), for a PUT answered 200 ``session stored``."""
    try:
        document = json.loads(body)
    except ValueError:
        return f"{status} (not JSON)"
    if isinstance(document, dict) and isinstance(document.get("result"), dict):
        return f"{status} {document['result'].get('category') or 'ok'}"
    if isinstance(document, dict) and isinstance(document.get("error"), dict):
        return f"{status} {document['error'].get('code')}"
    if isinstance(document, dict) and "client_data" in document:
        return f"{status} session stored"
    return str(status)


def _cpu_s(pid: int | None) -> float:
    """User plus system CPU seconds of a process (Linux /proc); 0.0 when unknown."""
    if not pid:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Pacer:
    """At most ``rate`` requests per second over all of a tenant's workers (0: no limit)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next = time.perf_counter()

    async def wait(self) -> None:
        if not self.interval:
            return
        now = time.perf_counter()
        slot = max(self.next, now)
        self.next = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


class Tenant:
    def __init__(self, name: str, key: str, url: str, sessions: int, prefix: str = "") -> None:
        self.name = name
        self.url = url
        self.headers = {"Authorization": f"Bearer {key}"}
        self.sessions = [f"{name}-{prefix}{i}" for i in range(sessions)]
        self.outcomes: dict[str, Counter[str]] = {}
        self.latencies: list[float] = []
        self.case_latencies: dict[str, list[float]] = {}
        self.answered_calls: Counter[str] = Counter()  # session -> trigger calls answered 200
        self.sent = 0
        self.server_errors = 0

    def note(self, case: str, result: str, elapsed_ms: float) -> None:
        self.outcomes.setdefault(case, Counter())[result] += 1
        self.latencies.append(elapsed_ms)
        self.case_latencies.setdefault(case, []).append(elapsed_ms)
        if result.startswith("5"):
            self.server_errors += 1

    def report(self, elapsed: float, lost_logs: int | None) -> dict[str, Any]:
        totals: Counter[str] = Counter()
        for counts in self.outcomes.values():
            totals.update(counts)
        return {
            "requests": self.sent,
            "requests_per_s": round(self.sent / elapsed, 1) if elapsed else None,
            "p50_ms": percentile(self.latencies, 0.50),
            "p99_ms": percentile(self.latencies, 0.99),
            "max_ms": round(max(self.latencies), 1) if self.latencies else None,
            "by_outcome": dict(totals.most_common()),
            "server_errors_5xx": self.server_errors,
            "trigger_calls_answered_200": sum(self.answered_calls.values()),
            "lost_log_records": lost_logs,
            "by_case": {case: dict(counts.most_common()) for case, counts in self.outcomes.items()},
            "by_case_ms": {
                case: {"p50": percentile(times, 0.5), "max": round(max(times), 1)}
                for case, times in sorted(self.case_latencies.items(), key=lambda item: -statistics.median(item[1]))
            },
        }


async def _send(
    client: aiohttp.ClientSession,
    tenant: Tenant,
    case: str,
    method: str,
    path: str,
    *,
    is_call: bool,
    session: str | None = None,
    **request: Any,
) -> None:
    started = time.perf_counter()
    tenant.sent += 1
    try:
        async with client.request(method, tenant.url + path, headers=tenant.headers, **request) as response:
            body = await response.read()
            result = outcome(response.status, body)
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        result = f"client side: {type(error).__name__}"
    tenant.note(case, result, (time.perf_counter() - started) * 1000)
    if is_call and session is not None and result.startswith("200 "):
        tenant.answered_calls[session] += 1


async def run(config: dict[str, Any]) -> dict[str, Any]:
    url = config["url"]
    keys = config["keys"]
    concurrency = config["concurrency"]
    max_requests = config["max_requests"]
    stop = asyncio.Event()
    active = tuple(config.get("tenants") or COMPANIES)
    tenants = {name: Tenant(name, keys[name], url, config["sessions"]) for name in active}
    bad_bodies = [
        case
        for case in _bad_bodies(config["max_body_bytes"])
        if (callable(case[3]) and config.get("json_max_bytes") is None)
        or (not callable(case[3]) and len(case[3]) <= (config.get("json_max_bytes") or len(case[3])))
    ]
    timeout = aiohttp.ClientTimeout(total=config["request_timeout"])
    connector = aiohttp.TCPConnector(limit=3 * concurrency + 8)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:
        probers = {name: Tenant(name, keys[name], url, 1, prefix="probe-") for name in active}
        for tenant in (*tenants.values(), *probers.values()):  # their sessions, well formed (not counted)
            for session in tenant.sessions:
                async with client.put(
                    f"{url}/session/{session}", headers=tenant.headers, json={"client_data": {"tenant": tenant.name}}
                ) as response:
                    if response.status != 200:
                        raise SystemExit(f"hostile tenant {tenant.name}: PUT {session}: {response.status}")

        async def drip(tenant: Tenant, n: int) -> None:
            variant = DRIP_VARIANTS[n % len(DRIP_VARIANTS)]
            session = tenant.sessions[n % len(tenant.sessions)]
            await _send(
                client,
                tenant,
                f"drip_{variant}",
                "POST",
                f"/session/{session}/triggers/drip_{variant}",
                is_call=True,
                session=session,
                json={"arguments": {}, "images": []},
            )

        async def regex(tenant: Tenant, n: int) -> None:
            case, arguments = REGEX_CASES[n % len(REGEX_CASES)]
            session = tenant.sessions[n % len(tenant.sessions)]
            await _send(
                client,
                tenant,
                case,
                "POST",
                f"/session/{session}/triggers/match_code",
                is_call=True,
                session=session,
                json={"arguments": arguments, "images": []},
            )

        async def bad_json(tenant: Tenant, n: int) -> None:
            case, target, kind, body = bad_bodies[n % len(bad_bodies)]
            headers = dict(tenant.headers)
            if kind is not None:
                headers["Content-Type"] = kind
            data = body() if callable(body) else body
            session = tenant.sessions[n % len(tenant.sessions)]
            if target == "put":
                method, path = "PUT", f"/session/{tenant.name}-put-{n % 50}"
            else:
                method, path = "POST", f"/session/{session}/triggers/echo"
            started = time.perf_counter()
            tenant.sent += 1
            try:
                async with client.request(
                    method, url + path, data=data, headers=headers, skip_auto_headers=("Content-Type",)
                ) as response:
                    result = outcome(response.status, await response.read())
            except (aiohttp.ClientError, TimeoutError, OSError) as error:
                result = f"client side: {type(error).__name__}"
            tenant.note(f"{target}: {case}", result, (time.perf_counter() - started) * 1000)
            if target == "call" and result.startswith("200 "):
                tenant.answered_calls[session] += 1

        actions = {DRIP: drip, REGEX: regex, BAD_JSON: bad_json}
        counters = dict.fromkeys(active, 0)
        pacers = {name: Pacer(config["rate"]) for name in active}

        async def worker(name: str) -> None:
            tenant = tenants[name]
            while not stop.is_set() and counters[name] < max_requests:
                await pacers[name].wait()
                if stop.is_set():
                    return
                n = counters[name]
                counters[name] += 1
                await actions[name](tenant, n)

        loop = asyncio.get_running_loop()

        def listen() -> None:  # a daemon thread: a blocked read never holds up the exit
            for line in sys.stdin:
                if line.strip() == "stop":
                    break
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=listen, daemon=True).start()
        probe: list[dict[str, Any]] = []
        if config.get("probe_reps"):
            # Each case alone, on the idle service, a few times in a row: what one such request costs it (the
            # service's CPU time from /proc, in clock ticks of 10 ms, so averaged over the repeats).
            sizes = {DRIP: len(DRIP_VARIANTS), REGEX: len(REGEX_CASES), BAD_JSON: len(bad_bodies)}
            for name in active:
                prober = probers[name]
                for n in range(sizes[name]):
                    walls, cpu_start = [], _cpu_s(config.get("service_pid"))
                    for _ in range(config["probe_reps"]):
                        started = time.perf_counter()
                        await actions[name](prober, n)
                        walls.append((time.perf_counter() - started) * 1000)
                    cpu = (_cpu_s(config.get("service_pid")) - cpu_start) * 1000 / config["probe_reps"]
                    case = next(reversed(prober.outcomes))
                    probe.append(
                        {
                            "tenant": name,
                            "case": case,
                            "outcome": ", ".join(prober.outcomes[case]),
                            "wall_ms": round(statistics.median(walls), 1),
                            "service_cpu_ms": round(cpu, 1) if config.get("service_pid") else None,
                        }
                    )
            probe.sort(key=lambda row: (-(row["service_cpu_ms"] or 0), -row["wall_ms"]))
        print("ready", flush=True)
        started = time.perf_counter()
        workers = [asyncio.ensure_future(worker(name)) for name in active for _ in range(concurrency)]
        try:
            await asyncio.wait_for(stop.wait(), config["max_seconds"])
        except TimeoutError:
            stop.set()
        stopped = time.perf_counter()
        await asyncio.gather(*workers)  # the requests in flight finish (each bounded by request_timeout)
        elapsed = stopped - started
        drained_s = time.perf_counter() - stopped
        report: dict[str, Any] = {
            "seconds": round(elapsed, 2),
            "drain_seconds": round(drained_s, 2),
            "probe": probe,
            "tenants": {},
        }
        for tenant in tenants.values():
            lost = 0
            for session, answered in tenant.answered_calls.items():
                async with client.get(
                    f"{url}/session/{session}/logs", params={"limit": "1000"}, headers=tenant.headers
                ) as response:
                    records = (await response.json())["logs"] if response.status == 200 else []
                lost += max(0, answered - len(records))
            report["tenants"][tenant.name] = tenant.report(elapsed, lost)
    return report


def main() -> int:
    config = json.loads(Path(sys.argv[1]).read_text())
    try:
        import uvloop

        report = uvloop.run(run(config))
    except ImportError:
        report = asyncio.run(run(config))
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
