"""Running the service for real: ``create_app()`` configured from ``WEBHOOK_DSL_*`` variables, under
``uvicorn --factory`` and ``serve --workers``; ``/metrics``; JSON log lines with no key or secret in them;
``X-Request-Id``; readiness; log retention.

In-process tests drive the app with Starlette's TestClient; the ``slow`` ones start real servers on free
loopback ports, against the examples' stand-in API (loopback too).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import json
import logging
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.testclient import TestClient

from tests.service_support import (
    BACKENDS,
    ROOT,
    StoreFactory,
    free_port,
    make_key,
    put_secrets,
    start_echo,
    write_triggers,
)
from webhook_dsl.cli import main
from webhook_dsl.runtime.catalog import TriggerCatalog
from webhook_dsl.service import create_app
from webhook_dsl.service.logformat import JsonFormatter, StderrHandler, TextFormatter, configure_logging
from webhook_dsl.service.middleware import MAX_REQUEST_ID, ServiceSettings
from webhook_dsl.service.settings import STARTUP_FAILURE, ServiceConfig, ServiceConfigError, purge_old_logs

SECRET = "erp-SECRET-" + uuid.uuid4().hex[:12]
LOOPBACK = "127.0.0.0/8"
HEX_ID = re.compile(r"[0-9a-f]{32}\Z")


# -- fixtures -----------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No WEBHOOK_DSL_* setting of the developer's leaks in, and the loggers are put back as they were (an app
    that configures itself from the environment sets up the process's logging)."""
    for name in list(os.environ):
        if name.startswith("WEBHOOK_DSL_") and name != "WEBHOOK_DSL_TEST_POSTGRES":
            monkeypatch.delenv(name)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    loggers = [logging.getLogger(name) for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access")]
    saved = [(logger, logger.handlers[:], logger.level, logger.propagate) for logger in loggers]
    yield
    for logger, handlers, level, propagate in saved:
        logger.handlers, logger.propagate = handlers, propagate
        logger.setLevel(level)


@pytest.fixture(scope="module")
def echo_port() -> Iterator[int]:
    server = start_echo()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


@pytest.fixture
def triggers(tmp_path: Path, stand_in: int, echo_port: int) -> Path:
    return write_triggers(tmp_path / "triggers", stand_in, echo_port)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample of the Prometheus text, or None when there is no such sample."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def call_echo(client: httpx.Client | TestClient, key: str, name: str = "a", **headers: str) -> httpx.Response:
    return client.post(
        "/session/S1/triggers/echo", headers={**auth(key), **headers}, json={"arguments": {"name": name}}
    )


# -- create_app() from the environment ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", BACKENDS)
def test_create_app_with_no_arguments_serves_from_the_environment(
    kind: str, tmp_path: Path, triggers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    factory = StoreFactory(kind, tmp_path)
    factory.create_schema()
    key = make_key(factory, "cmp_42")
    monkeypatch.setenv("WEBHOOK_DSL_DATABASE", factory.url)
    monkeypatch.setenv("WEBHOOK_DSL_TRIGGERS", str(triggers))
    monkeypatch.setenv("WEBHOOK_DSL_ALLOW_NETWORKS", LOOPBACK)
    try:
        with TestClient(create_app()) as client:
            assert client.get("/readyz").json()["store"] == kind
            assert client.put("/session/S1", headers=auth(key), json={"client_data": {}}).status_code == 200
            answer = call_echo(client, key, "from_env")
            assert answer.status_code == 200 and answer.json()["result"]["ok"], answer.text
            assert answer.json()["result"]["client_data_merged"] == {"from_env": True}
            text = client.get("/metrics").text
            assert metric(text, "webhook_dsl_trigger_calls_total", trigger="echo", category="ok") == 1
    finally:
        factory.drop()


def test_explicit_pieces_win_and_the_missing_ones_come_from_the_environment(
    tmp_path: Path, triggers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    factory = StoreFactory("sqlite", tmp_path)
    key = make_key(factory, "cmp_42")
    monkeypatch.setenv("WEBHOOK_DSL_TIMEOUT", "not a number")  # read only when something is missing
    app = create_app(factory(), TriggerCatalog.load(triggers), settings=ServiceSettings(access_log=False))
    assert isinstance(app, Starlette) and app.state.settings.metrics
    monkeypatch.setenv("WEBHOOK_DSL_TIMEOUT", "7.5")
    monkeypatch.setenv("WEBHOOK_DSL_TRIGGERS", str(triggers))
    monkeypatch.setenv("WEBHOOK_DSL_ALLOW_NETWORKS", f'["{LOOPBACK}"]')  # a JSON array works as well
    monkeypatch.setenv("WEBHOOK_DSL_MAX_BODY_BYTES", "5000")
    app = create_app(store=factory(), catalog=None, settings=ServiceSettings(access_log=False, max_body_bytes=9000))
    assert app.state.runtime.settings.deadline == 7.5  # from the environment
    assert app.state.settings.max_body_bytes == 9000  # given: wins over WEBHOOK_DSL_MAX_BODY_BYTES
    with TestClient(app) as client:
        assert client.put("/session/S1", headers=auth(key), json={"client_data": {}}).status_code == 200
        assert call_echo(client, key).json()["result"]["ok"]  # the loopback allowed by the environment


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("WEBHOOK_DSL_TIMEOUT", "0", "WEBHOOK_DSL_TIMEOUT=0: Input should be greater than 0"),
        ("WEBHOOK_DSL_ALLOW_NETWORKS", "10.0.0.0/8,127.0.0.1/8", "127.0.0.1/8 has host bits set"),
        ("WEBHOOK_DSL_ALLOW_NETWORKS", "[1, 2]", "a JSON array of strings"),
        ("WEBHOOK_DSL_LOG_FORMAT", "xml", "WEBHOOK_DSL_LOG_FORMAT=xml: Input should be 'text' or 'json'"),
        ("WEBHOOK_DSL_MAX_REQUESTS_PER_COMPANY", "-1", "WEBHOOK_DSL_MAX_REQUESTS_PER_COMPANY=-1"),
        ("WEBHOOK_DSL_DATABASE", "mysql://db/x", "the database is sqlite:///FILE or postgresql://USER@HOST/DB"),
        ("WEBHOOK_DSL_ANONYMOUS_COMPANY", "a b", "WEBHOOK_DSL_ANONYMOUS_COMPANY=a b: a company id is"),
        ("WEBHOOK_DSL_DASHBOARD", "maybe", "WEBHOOK_DSL_DASHBOARD=maybe: Input should be a valid boolean"),
    ],
)
def test_a_bad_environment_value_is_one_line_naming_the_variable(
    variable: str, value: str, said: str, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ServiceConfigError) as caught:
        ServiceConfig.load()
    assert said in str(caught.value) and "\n" not in str(caught.value)
    monkeypatch.setenv("WEBHOOK_DSL_TRIGGERS", "/nonexistent")
    with pytest.raises(SystemExit) as exited:
        create_app()
    assert exited.value.code == STARTUP_FAILURE  # uvicorn's: its worker supervisor stops, not restarts
    lines = capfd.readouterr().err.splitlines()
    assert len(lines) == 1 and said in lines[0] and "not started" in lines[0], lines


def test_a_password_in_a_bad_database_url_is_not_repeated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_DSL_DATABASE", "mysql://bob:hunter2@db.internal/webhooks")
    with pytest.raises(ServiceConfigError) as caught:
        ServiceConfig.load()
    assert "mysql://bob:***@db.internal/webhooks" in str(caught.value) and "hunter2" not in str(caught.value)


def test_a_missing_metrics_folder_stops_start_up(
    tmp_path: Path, triggers: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WEBHOOK_DSL_TRIGGERS", str(triggers))
    monkeypatch.setenv("WEBHOOK_DSL_DATABASE", str(tmp_path / "w.db"))
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "gone"))
    with pytest.raises(SystemExit) as exited:
        create_app()
    assert exited.value.code == STARTUP_FAILURE
    (line,) = capfd.readouterr().err.splitlines()
    assert f"PROMETHEUS_MULTIPROC_DIR={tmp_path / 'gone'}: no such folder" in line


def test_a_flag_error_names_the_flag_and_flags_win_over_the_environment(
    tmp_path: Path, triggers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    apps: list[Any] = []

    class Recorder:
        started = True

        def __init__(self, config: uvicorn.Config) -> None:
            apps.append(config.app)

        def run(self) -> None:
            pass

    monkeypatch.setattr(uvicorn, "Server", Recorder)
    monkeypatch.setenv("WEBHOOK_DSL_TRIGGERS", str(triggers))  # --triggers may come from the environment now
    monkeypatch.setenv("WEBHOOK_DSL_MAX_BODY_BYTES", "1000")
    monkeypatch.setenv("WEBHOOK_DSL_ALLOW_NETWORKS", "10.0.0.0/8")
    base = ["serve", "--database", str(tmp_path / "w.db")]
    assert main(base, io.StringIO(), io.StringIO()) == 0
    assert apps[-1].state.settings.max_body_bytes == 1000
    assert main([*base, "--max-body-bytes", "2000", "--no-metrics"], io.StringIO(), io.StringIO()) == 0
    assert apps[-1].state.settings.max_body_bytes == 2000 and apps[-1].state.metrics is None
    assert [str(n) for n in apps[-1].state.runtime.guard.allow_networks] == ["10.0.0.0/8"]
    err = io.StringIO()
    assert main([*base, "--max-client-data-bytes", "1"], io.StringIO(), err) == 1
    assert err.getvalue() == "--max-client-data-bytes=1: Input should be greater than or equal to 2\n"
    monkeypatch.setenv("WEBHOOK_DSL_LOG_RETENTION_DAYS", "-3")
    err = io.StringIO()
    assert main(base, io.StringIO(), err) == 1
    assert err.getvalue() == "WEBHOOK_DSL_LOG_RETENTION_DAYS=-3: Input should be greater than 0\n"
    assert len(apps) == 2  # neither wrong setting got as far as an app


def test_the_config_goes_to_workers_and_comes_back_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    given = {
        "triggers": "/srv/triggers",
        "allow_networks": ["127.0.0.0/8", "10.0.0.0/8"],
        "allow_hosts": ["erp.internal"],
        "timeout": 4.5,
        "dashboard": False,
        "log_format": "json",
        "log_retention_days": 30,
        "metrics_token": "t0ken",
    }
    config = ServiceConfig.load(given)
    for name, value in config.to_env().items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert ServiceConfig.load() == config
    assert "t0ken" not in repr(config)


# -- metrics ----------------------------------------------------------------------------------------------------


@pytest.fixture
def service(tmp_path: Path, triggers: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    factory = StoreFactory("sqlite", tmp_path)
    keys = {company: make_key(factory, company) for company in ("cmp_42", "acme")}
    app = create_app(
        factory(), TriggerCatalog.load(triggers), settings=ServiceSettings(access_log=True), allow_networks=[LOOPBACK]
    )
    with TestClient(app) as client:
        yield client, keys


def test_metrics_count_requests_by_route_and_calls_by_trigger_and_outcome(
    service: tuple[TestClient, dict[str, str]],
) -> None:
    client, keys = service
    for company in ("cmp_42", "acme"):
        assert client.put("/session/S1", headers=auth(keys[company]), json={"client_data": {}}).status_code == 200
    session_ids = ["S1", f"S-{uuid.uuid4().hex}"]
    assert client.put(f"/session/{session_ids[1]}", headers=auth(keys["acme"])).status_code == 200
    for company in ("cmp_42", "acme", "acme"):
        assert call_echo(client, keys[company]).json()["result"]["ok"]
    failed = client.post("/session/S1/triggers/echo", headers=auth(keys["acme"]), json={"arguments": {}})
    assert failed.json()["result"]["category"] == "bad_arguments"
    assert client.post("/session/NOPE/triggers/echo", headers=auth(keys["acme"]), json={}).status_code == 404
    assert client.request("BREW", "/livez").status_code == 405
    text = client.get("/metrics").text
    assert metric(text, "webhook_dsl_trigger_calls_total", trigger="echo", category="ok") == 3
    assert metric(text, "webhook_dsl_trigger_calls_total", trigger="echo", category="bad_arguments") == 1
    assert metric(text, "webhook_dsl_trigger_calls_total", trigger="echo", category="session_not_found") == 1
    assert metric(text, "webhook_dsl_webhook_seconds_count", trigger="echo") == 3  # only calls that were sent
    assert metric(text, "webhook_dsl_trigger_calls_in_flight") == 0
    route = "/session/{session_id}/triggers/{name}"
    assert metric(text, "webhook_dsl_http_requests_total", route=route, method="POST", status="200") == 4
    assert metric(text, "webhook_dsl_http_requests_total", route=route, method="POST", status="404") == 1
    assert metric(text, "webhook_dsl_http_requests_total", route="/livez", method="other", status="405") == 1
    for private in ("cmp_42", "acme", *session_ids, *keys.values()):
        assert private not in text  # no company, session or key: as many as there are tenants


def test_metrics_count_each_call_of_a_tool_calls_turn(service: tuple[TestClient, dict[str, str]]) -> None:
    client, keys = service
    assert client.put("/session/S1", headers=auth(keys["acme"]), json={"client_data": {}}).status_code == 200
    calls = [
        {"id": f"c{n}", "type": "function", "function": {"name": "echo", "arguments": json.dumps({"name": f"n{n}"})}}
        for n in range(3)
    ]
    assert client.post("/session/S1/tool-calls", headers=auth(keys["acme"]), json={"calls": calls}).status_code == 200
    text = client.get("/metrics").text
    assert metric(text, "webhook_dsl_trigger_calls_total", trigger="echo", category="ok") == 3


def test_a_metrics_token_guards_metrics_and_metrics_can_be_off(tmp_path: Path, triggers: Path) -> None:
    factory = StoreFactory("sqlite", tmp_path)
    key = make_key(factory, "cmp_42")
    settings = ServiceSettings(access_log=False, metrics_token="scrape-me")
    with TestClient(create_app(factory(), TriggerCatalog.load(triggers), settings=settings)) as client:
        for headers in ({}, auth(key), {"Authorization": "Bearer scrape-mE"}, {"Authorization": "Basic scrape-me"}):
            answer = client.get("/metrics", headers=headers)
            assert answer.status_code == 401 and "scrape-me" not in answer.text, headers
        answer = client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert "webhook_dsl_http_requests_total" in answer.text
    settings = ServiceSettings(access_log=False, metrics=False)
    app = create_app(factory(), TriggerCatalog.load(triggers), settings=settings)
    with TestClient(app) as client:
        assert client.get("/metrics").status_code == 404 and app.state.metrics is None


# -- request ids and access lines ------------------------------------------------------------------------------


def test_a_request_id_is_echoed_or_made_and_kept_in_the_call_s_log_record(
    service: tuple[TestClient, dict[str, str]],
) -> None:
    client, keys = service
    key = keys["cmp_42"]
    assert client.put("/session/S1", headers=auth(key), json={"client_data": {}}).status_code == 200
    given = "req-" + uuid.uuid4().hex
    answer = call_echo(client, key, "one", **{"X-Request-Id": given})
    assert answer.headers["x-request-id"] == given
    calls = [{"id": "c1", "type": "function", "function": {"name": "echo", "arguments": '{"name": "two"}'}}]
    turn = client.post("/session/S1/tool-calls", headers={**auth(key), "X-Request-Id": "turn-7"}, json={"calls": calls})
    assert turn.status_code == 200 and turn.headers["x-request-id"] == "turn-7"
    anonymous = call_echo(client, key, "three")
    made = anonymous.headers["x-request-id"]
    assert HEX_ID.match(made)
    records = client.get("/session/S1/logs", headers=auth(key)).json()["logs"]
    assert sorted(r["request_id"] for r in records) == sorted([given, "turn-7", made])
    for refused in ("x" * (MAX_REQUEST_ID + 1), "has space", "tab\tin", ""):
        answer = client.get("/livez", headers={"X-Request-Id": refused})
        assert HEX_ID.match(answer.headers["x-request-id"]), refused
    assert client.get("/livez", headers={"X-Request-Id": "y" * MAX_REQUEST_ID}).headers["x-request-id"] == "y" * 128
    ids = set()
    for answer in (
        client.get("/session/S1"),  # 401
        client.get("/no/such/path"),  # 404
        client.post("/session/S1/triggers/echo", content=b"x" * (2 * 1024 * 1024), headers=auth(key)),  # 413
    ):
        ids.add(answer.headers["x-request-id"])
    assert len(ids) == 3 and all(HEX_ID.match(i) for i in ids)


class _Lines(logging.Handler):
    """Collects what a formatter makes of each record."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_text_and_json_access_lines_hold_the_same_fields(service: tuple[TestClient, dict[str, str]]) -> None:
    client, keys = service
    key = keys["acme"]
    handlers = [_Lines(JsonFormatter()), _Lines(TextFormatter())]
    access = logging.getLogger("webhook_dsl.access")
    level = access.level
    access.setLevel(logging.INFO)
    for handler in handlers:
        access.addHandler(handler)
    try:
        assert client.put("/session/S1", headers=auth(key), json={"client_data": {}}).status_code == 200
        call_echo(client, key, **{"X-Request-Id": "rid-1"})
        calls = [
            {"id": f"c{n}", "type": "function", "function": {"name": name, "arguments": '{"name": "x"}'}}
            for n, name in enumerate(("echo", "acme_inventory"))
        ]
        client.post("/session/S1/tool-calls", headers={**auth(key), "X-Request-Id": "rid-2"}, json={"calls": calls})
    finally:
        access.setLevel(level)
        for handler in handlers:
            access.removeHandler(handler)
    entries = [json.loads(line) for line in handlers[0].lines]
    texts = handlers[1].lines
    assert [e["path"] for e in entries] == ["/session/S1", "/session/S1/triggers/echo", "/session/S1/tool-calls"]
    call = entries[1]
    assert call["request_id"] == "rid-1" and call["method"] == "POST" and call["status"] == 200
    assert (call["company"], call["trigger"], call["category"]) == ("acme", "echo", "ok")
    assert isinstance(call["duration_ms"], float) and call["logger"] == "webhook_dsl.access"
    assert {"time", "level", "pid", "message"} <= set(call)
    assert "company" not in entries[0] and "trigger" not in entries[0]
    turn = entries[2]
    assert sorted(zip(turn["trigger"].split(","), turn["category"].split(","), strict=True)) == [
        ("acme_inventory", "bad_arguments"),
        ("echo", "ok"),
    ]
    assert texts[1].endswith("request_id=rid-1 company=acme trigger=echo category=ok")
    assert " POST /session/S1/triggers/echo 200 " in texts[1]


def test_the_stderr_handler_writes_to_the_stderr_of_the_moment(capsys: pytest.CaptureFixture[str]) -> None:
    restore = configure_logging("json", "info")
    try:
        handler = logging.getLogger().handlers[0]
        assert isinstance(handler, StderrHandler)
        logging.getLogger("webhook_dsl.test").info("one %s", "line", extra={"request_id": "r1"})
        logging.getLogger("uvicorn.error").info("from uvicorn")
        logging.getLogger("uvicorn.access").info('127.0.0.1 - "GET /dashboard/?key=wdsl_x HTTP/1.1" 200')
    finally:
        restore()
    lines = capsys.readouterr().err.splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["one line", "from uvicorn"]  # no uvicorn access
    assert json.loads(lines[0])["request_id"] == "r1"


# -- readiness and retention -----------------------------------------------------------------------------------


def test_readyz_needs_the_triggers_loaded(service: tuple[TestClient, dict[str, str]]) -> None:
    client, _ = service
    assert client.get("/readyz").status_code == 200
    app: Any = client.app
    catalog, app.state.catalog = app.state.catalog, None
    try:
        answer = client.get("/readyz")
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "not_ready"
        assert answer.headers["retry-after"] == "1"
        assert client.get("/livez").status_code == 200
    finally:
        app.state.catalog = catalog


def test_the_retention_task_purges_now_and_then_and_survives_a_failure() -> None:
    class Store:
        def __init__(self) -> None:
            self.cutoffs: list[float] = []

        async def purge_logs(self, older_than: float, *, company_id: str | None = None) -> int:
            self.cutoffs.append(older_than)
            if len(self.cutoffs) == 1:
                raise OSError("disk I/O error")
            return 2

    async def go() -> list[float]:
        store = Store()
        task = asyncio.create_task(purge_old_logs(store, 30, interval=0.001, clock=lambda: 10_000_000.0))
        while len(store.cutoffs) < 3:
            await asyncio.sleep(0.001)
        task.cancel()
        return store.cutoffs

    assert set(asyncio.run(go())) == {10_000_000.0 - 30 * 86400}


@pytest.mark.parametrize("kind", BACKENDS)
def test_log_retention_purges_old_records_at_start_up(kind: str, tmp_path: Path, triggers: Path) -> None:
    factory = StoreFactory(kind, tmp_path)
    key = make_key(factory, "cmp_42")
    catalog = TriggerCatalog.load(triggers)
    try:
        for count, days in enumerate((None, 1.0), 1):  # a record of a second ago is kept by either
            settings = ServiceSettings(access_log=False, log_retention_days=days)
            with TestClient(create_app(factory(), catalog, settings=settings, allow_networks=[LOOPBACK])) as client:
                client.put("/session/S1", headers=auth(key), json={"client_data": {}})
                assert call_echo(client, key).json()["result"]["ok"]
                assert len(client.get("/session/S1/logs", headers=auth(key)).json()["logs"]) == count
        time.sleep(0.05)
        settings = ServiceSettings(access_log=False, log_retention_days=0.01 / 86400)  # 10 ms
        with TestClient(create_app(factory(), catalog, settings=settings)) as client:
            deadline = time.monotonic() + 10
            while client.get("/session/S1/logs", headers=auth(key)).json()["logs"]:
                assert time.monotonic() < deadline, "the records older than 10 ms were not purged"
                time.sleep(0.02)
    finally:
        factory.drop()


# -- real servers ---------------------------------------------------------------------------------------------


def _environment(**settings: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("WEBHOOK_DSL_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    return {**keep, **settings}


class Server:
    """A server process on a free loopback port, its stdout and stderr in files."""

    def __init__(self, command: list[str], env: dict[str, str], folder: Path) -> None:
        self.folder = folder
        self.out, self.err = folder / "stdout.log", folder / "stderr.log"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.process = subprocess.Popen(command, env=env, stdout=out, stderr=err, cwd=str(ROOT))

    def wait_live(self, url: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the server exited: {self.err.read_text()}"
            try:
                if httpx.get(url + "/livez", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the server did not start: {self.err.read_text()}")

    def stop(self) -> str:
        """Everything it wrote, stdout and stderr."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.out.read_text() + self.err.read_text()


def _json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of the output as a JSON object (a line that is not one fails the test)."""
    entries = []
    for line in text.splitlines():
        entry = json.loads(line)
        assert isinstance(entry, dict) and {"time", "level", "logger", "message"} <= set(entry), line
        entries.append(entry)
    return entries


@pytest.mark.slow
@pytest.mark.parametrize("kind", BACKENDS)
def test_uvicorn_factory_configured_only_by_the_environment(
    kind: str, tmp_path: Path, triggers: Path, stand_in: int
) -> None:
    factory = StoreFactory(kind, tmp_path)
    factory.create_schema()
    key = make_key(factory, "cmp_42")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = _environment(
        WEBHOOK_DSL_DATABASE=factory.url,
        WEBHOOK_DSL_TRIGGERS=str(triggers),
        WEBHOOK_DSL_ALLOW_NETWORKS=LOOPBACK,  # the stand-in is on loopback
    )
    command = [sys.executable, "-m", "uvicorn", "--factory", "webhook_dsl.service:create_app", "--port", str(port)]
    server = Server(command, env, tmp_path)
    try:
        server.wait_live(url)
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.get("/livez").json() == {"status": "alive"}
            assert client.get("/readyz").json()["status"] == "ready"
            put_secrets(client, key, {"erp_token": SECRET})
            assert client.put("/session/S1", headers=auth(key), json={"client_data": {}}).status_code == 200
            answer = client.post(
                "/session/S1/triggers/check_order",
                headers={**auth(key), "X-Request-Id": "uv-1"},
                json={"arguments": {"order_number": "A-1001"}},
            )
            assert answer.status_code == 200 and answer.json()["result"]["ok"], answer.text
            assert answer.headers["x-request-id"] == "uv-1"
            records = client.get("/session/S1/logs", headers=auth(key)).json()["logs"]
            assert [r["request_id"] for r in records] == ["uv-1"]
            text = client.get("/metrics").text
            assert metric(text, "webhook_dsl_trigger_calls_total", trigger="check_order", category="ok") == 1
            route = "/session/{session_id}/triggers/{name}"
            assert metric(text, "webhook_dsl_http_requests_total", route=route, method="POST", status="200") == 1
            assert metric(text, "webhook_dsl_webhook_seconds_count", trigger="check_order") == 1
            client.get("/dashboard/", params={"key": key})  # a key in a query string
        output = server.stop()
    finally:
        server.stop()
        factory.drop()
    assert "GET /session/S1/logs 200" in output  # the access log ran (text: WEBHOOK_DSL_LOG_FORMAT is unset)
    assert "request_id=uv-1 company=cmp_42 trigger=check_order category=ok" in output
    assert key not in output and SECRET not in output and "Traceback" not in output


@pytest.mark.slow
def test_serve_workers_answer_and_metrics_sum_every_worker(tmp_path: Path, triggers: Path) -> None:
    factory = StoreFactory("sqlite", tmp_path)
    key = make_key(factory, "cmp_42")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "webhook_dsl", "serve", "--triggers", str(triggers), "--port", str(port)]
    command += ["--database", factory.url, "--allow-network", LOOPBACK, "--workers", "2", "--log-format", "json"]
    server = Server(command, _environment(), tmp_path)
    try:
        server.wait_live(url)
        with httpx.Client(base_url=url, timeout=30) as client:
            put_secrets(client, key, {"erp_token": SECRET})
            assert client.put("/session/S1", headers=auth(key), json={"client_data": {}}).status_code == 200

        def one_call(n: int) -> None:  # a connection of its own: either worker may accept it
            with httpx.Client(base_url=url, timeout=30) as own:
                answer = call_echo(own, key, f"n{n}")
            assert answer.status_code == 200 and answer.json()["result"]["ok"], answer.text

        calls = 0
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            while calls < 640:
                list(pool.map(one_call, range(calls, calls + 32)))
                calls += 32
                serving = {e["pid"] for e in _json_lines(server.err.read_text()) if e.get("trigger") == "echo"}
                if len(serving) == 2:
                    break
        assert len(serving) == 2, "every call went to one worker"
        for _ in range(8):  # fresh connections: the answers come from both workers
            text = httpx.get(url + "/metrics", timeout=30).text
            assert metric(text, "webhook_dsl_trigger_calls_total", trigger="echo", category="ok") == calls
        output = server.stop()
    finally:
        server.stop()
    entries = _json_lines(output)  # every line JSON, uvicorn's too
    assert any(e["logger"] == "uvicorn.error" and "Started parent process" in e["message"] for e in entries)
    assert len({e["pid"] for e in entries if e.get("trigger")}) == 2
    assert key not in output and SECRET not in output


@pytest.mark.slow
def test_json_logs_hold_no_key_and_no_secret(tmp_path: Path, triggers: Path) -> None:
    """Under serve --log-format json: a secret declared and used, keys in every place a client may put one."""
    factory = StoreFactory("sqlite", tmp_path)
    key = make_key(factory, "cmp_42")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "webhook_dsl", "serve", "--triggers", str(triggers), "--port", str(port)]
    command += ["--database", factory.url, "--allow-network", LOOPBACK, "--log-format", "json", "--log-level", "debug"]
    server = Server(command, _environment(), tmp_path)
    try:
        server.wait_live(url)
        with httpx.Client(base_url=url, timeout=30) as client:
            put_secrets(client, key, {"erp_token": SECRET})
            assert client.put("/session/S1", headers={"X-Api-Key": key}, json={"client_data": {}}).status_code == 200
            answer = client.post(
                "/session/S1/triggers/check_order", headers=auth(key), json={"arguments": {"order_number": SECRET}}
            )
            assert answer.json()["result"]["ok"]
            client.get("/dashboard/", params={"key": key})
            client.post("/dashboard/login", data={"key": key})
            client.get(f"/session/S1?key={key}", headers={"Authorization": f"Bearer {key}x"})
            client.put("/secrets/erp_token", headers=auth(key), json={"value": SECRET + "\n"})  # refused
        output = server.stop()
    finally:
        server.stop()
    entries = _json_lines(output)
    access = [e for e in entries if e["logger"] == "webhook_dsl.access"]
    assert len(access) >= 6 and all({"request_id", "method", "path", "status", "duration_ms"} <= set(e) for e in access)
    call = next(e for e in access if e["path"] == "/session/S1/triggers/check_order")
    assert (call["company"], call["trigger"], call["category"]) == ("cmp_42", "check_order", "ok")
    assert any(e["logger"] == "uvicorn.error" for e in entries)
    assert key not in output and key[:20] not in output and SECRET not in output


@pytest.mark.slow
def test_a_bad_variable_stops_uvicorn_with_one_line(tmp_path: Path, triggers: Path) -> None:
    env = _environment(
        WEBHOOK_DSL_TRIGGERS=str(triggers),
        WEBHOOK_DSL_DATABASE=str(tmp_path / "w.db"),
        WEBHOOK_DSL_TIMEOUT="soon",
        WEBHOOK_DSL_LOG_FORMAT="json",
    )
    command = [sys.executable, "-m", "uvicorn", "--factory", "webhook_dsl.service:create_app", "--port", "0"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, cwd=str(ROOT), check=False)
    assert done.returncode == STARTUP_FAILURE
    (entry,) = _json_lines(done.stderr)
    assert entry["level"] == "ERROR" and entry["message"].startswith("not started: WEBHOOK_DSL_TIMEOUT=soon: ")
