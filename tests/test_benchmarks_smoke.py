"""The service benchmark's parts behave: the minimal service does its trigger job on a database webhook-dsl made,
the harness answers with figures and stored records that agree, ratios are taken per round, and a quick run of
benchmarks/run.py leaves the committed results alone. No figure is asserted: only what each piece does."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from webhook_dsl.storage.base import hash_api_key, new_api_key
from webhook_dsl.storage.database_url import open_store

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
TOKEN = "tok-SECRET-0123456789"


def _load(name: str) -> ModuleType:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


class _Echo(BaseHTTPRequestHandler):
    """An ERP stand-in that echoes the Authorization header it received, so masking has something to mask."""

    protocol_version = "HTTP/1.1"
    calls = 0

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        type(self).calls += 1
        number = self.path.rsplit("/", 1)[1]
        body = json.dumps(
            {
                "order_number": number,
                "echo": self.headers.get("Authorization"),
                "session": {"client_data": {"last_order_number": number}},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


async def _database(path: Path) -> str:
    store = open_store(f"sqlite:///{path}")
    try:
        key = new_api_key()
        await store.add_api_key("cmp_1", hash_api_key(key), key[:11], "test")
        await store.put_session("S1", company_id="cmp_1", client_data={"erp_token": TOKEN, "plan": "pro"})
        return key
    finally:
        await store.close()


def _post(url: str, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _wait(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{url} did not answer")


@pytest.mark.slow
def test_minimal_service_does_the_trigger_job_on_a_webhook_dsl_database(tmp_path: Path) -> None:
    database = tmp_path / "w.db"
    key = asyncio.run(_database(database))
    erp = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=erp.serve_forever, daemon=True).start()
    port = _load("load_service").free_port()
    log = tmp_path / "minimal.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [
                *(sys.executable, str(BENCHMARKS / "minimal_service.py"), "--database", str(database)),
                *("--target", f"http://127.0.0.1:{erp.server_address[1]}", "--port", str(port)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait(f"{base}/hello", process, log)
        status, answer = _post(f"{base}/session/S1/triggers/check_order", key, {"arguments": {"order_number": "A-7"}})
        assert status == 200
        message = answer["message"]
        assert message.startswith('The tool "check_order" succeeded (HTTP 200 OK).')
        assert '"order_number":"A-7"' in message and '"echo":"Bearer ***"' in message
        assert TOKEN not in message

        assert _post(f"{base}/session/S1/triggers/check_order", "wrong", {"arguments": {}})[0] == 401
        assert _post(f"{base}/session/nope/triggers/check_order", key, {"arguments": {"order_number": "A"}})[0] == 404
        calls = _Echo.calls
        status, answer = _post(f"{base}/session/S1/triggers/check_order", key, {"arguments": {"order_number": 7}})
        assert status == 200 and "invalid arguments" in answer["message"]
        assert _Echo.calls == calls  # refused before anything was sent
    finally:
        process.terminate()
        process.wait(timeout=10)
        erp.shutdown()
        erp.server_close()

    async def read_back() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        store = open_store(f"sqlite:///{database}")
        try:
            session = await store.get_session("S1", company_id="cmp_1")
            return session.client_data, await store.logs("S1", company_id="cmp_1")
        finally:
            await store.close()

    client_data, logs = asyncio.run(read_back())
    assert client_data == {"erp_token": TOKEN, "plan": "pro", "last_order_number": "A-7"}
    assert len(logs) == 1 and logs[0]["ok"] is True and logs[0]["status"] == 200
    assert TOKEN not in json.dumps(logs)


def test_ratios_are_taken_per_round_and_shown() -> None:
    bench = _load("service_bench")
    cells = []
    # Per round: 800 against 1000 (0.8x), 900 against 1000 (0.9x), 1400 against 2000 (0.7x).
    for round_, (dsl, minimal) in enumerate(((800, 1000), (900, 1000), (1400, 2000)), start=1):
        for server, rps in (("hello", 5000), ("minimal", minimal), ("webhook-dsl", dsl)):
            cells.append(
                {
                    "round": round_,
                    "server": server,
                    "concurrency": 64,
                    "requests_per_s": rps,
                    "p50_ms": 1.0,
                    "p99_ms": 2.0 if server == "webhook-dsl" else 1.0,
                    "server_cpu_us_per_call": 100.0,
                    "stand_in_cpu_us_per_call": 50.0,
                    "client_cpu_us_per_call": 20.0,
                }
            )
    summary = bench.summarize(cells, [64])
    ratio = summary["webhook_dsl_over_minimal"]["64"]["requests_per_s"]
    assert ratio == {"median": 0.8, "low": 0.7, "high": 0.9}  # per-round ratios, not a ratio of medians (0.9)
    assert summary["servers"]["webhook-dsl"]["64"]["requests_per_s"] == 900
    report = {"meta": {"concurrency": [64]}, **summary}
    table = bench.markdown(report)
    assert "900 (0.80x)" in table and "(2.00x)" in table
    targets = {t["name"]: t["met"] for t in bench._targets(summary["webhook_dsl_over_minimal"])}
    assert targets == {
        "req/s at c=64 >= 0.9x": False,
        "server CPU per call at c=64 <= 1.2x": True,
        "p99 at c=64 <= 1.2x": False,
    }


@pytest.mark.slow
def test_service_bench_runs_and_its_stored_records_match_the_answers(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [
            *(sys.executable, str(BENCHMARKS / "service_bench.py"), "--rounds", "1", "--seconds", "0.3"),
            *("--warmup", "0.1", "--concurrency", "1,4", "--json", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["problems"] == []
    assert {cell["server"] for cell in report["cells"]} == {"hello", "minimal", "webhook-dsl"}
    assert all(cell["calls"] > 0 and cell["failed"] == 0 for cell in report["cells"])
    for name in ("minimal", "webhook-dsl"):
        stored = report["stored"][name]
        assert stored["done_and_ok"] == stored["answered"] == stored["records"]
        assert stored["token_in_records"] == 0
    assert report["stored"]["minimal"]["read_by_webhook_dsl"]["logs_ok"] == [True, True, True]
    assert report["webhook_dsl_over_minimal"]["4"]["requests_per_s"]["median"] > 0
    assert "| **webhook-dsl serve**, SQLite |" in done.stdout


def test_a_quick_run_of_the_suite_leaves_the_committed_results_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _load("run")
    committed = tmp_path / "results" / "latest.json"
    monkeypatch.setattr(run, "DEFAULT_JSON", committed)
    monkeypatch.setattr(run, "tempfile", _TempIn(tmp_path / "temp"))
    for name in ("bench_render", "bench_compile", "bench_scale", "bench_memory", "bench_runtime", "bench_validation"):
        monkeypatch.setattr(run, name, lambda settings, report: None)
    monkeypatch.setattr(run, "evaluate_targets", lambda report: [])
    monkeypatch.setattr(run, "second_mechanisms", lambda report: {})
    monkeypatch.setattr(run, "print_report", lambda report: None)
    monkeypatch.setattr(run, "write_chart", lambda report, path: False)
    monkeypatch.setattr(run, "write_runtime_chart", lambda report, path: False)

    assert run.main(["--quick"]) == 0
    assert not committed.exists()
    written = list((tmp_path / "temp").rglob("quick.json"))
    assert len(written) == 1 and json.loads(written[0].read_text())["meta"]["mode"] == "quick"

    assert run.main(["--quick", "--json", str(tmp_path / "chosen.json")]) == 0
    assert (tmp_path / "chosen.json").exists() and not committed.exists()
    assert run.main([]) == 0  # a full run (every section stubbed here) writes the committed file
    assert json.loads(committed.read_text())["meta"]["mode"] == "full"
    capsys.readouterr()


class _TempIn:
    """``tempfile`` with ``mkdtemp`` under one folder, so the test can find what was written."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def mkdtemp(self, prefix: str = "") -> str:
        import tempfile

        self.root.mkdir(parents=True, exist_ok=True)
        return tempfile.mkdtemp(prefix=prefix, dir=self.root)
