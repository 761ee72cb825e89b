"""One CLI contract for storage: every command takes ``--database`` as a SQLite path, a ``sqlite:///`` URL or a
PostgreSQL URL (else $WEBHOOK_DSL_DATABASE), every session command ``--company-id``; an id several companies
have is an error listing them; sessions are deleted and logs purged; failures are one line. Also the rest of
the contract: ``render`` writes JSON Lines, ``--arg`` follows the schema's types, a failed ``call`` says why on
stderr, and ``blocked`` and ``dns`` are told apart and say what would allow a call."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.service_support import POSTGRES, StoreFactory, free_port, write_example_triggers
from tests.test_cli_runtime import run
from webhook_dsl.runtime import guard
from webhook_dsl.storage.database_url import open_store

ROOT = Path(__file__).resolve().parent.parent
WEBHOOKS = ROOT / "examples" / "webhooks"
TOKEN = "erp-SECRET-41d2"
AMBIGUOUS = "session 'S1' exists in acme, cmp_42; name the company (--company-id)\n"


@pytest.fixture(
    params=[
        "sqlite-path",
        "sqlite-url",
        pytest.param("postgresql", marks=pytest.mark.skipif(not POSTGRES, reason="WEBHOOK_DSL_TEST_POSTGRES is unset")),
    ]
)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A ``--database`` value of each kind, naming a database of this test's own (a file, or a fresh schema)."""
    if request.param == "sqlite-path":
        yield str(tmp_path / "cli.db")
        return
    factory = StoreFactory("sqlite" if request.param == "sqlite-url" else "postgresql", tmp_path)
    factory.create_schema()
    try:
        yield factory.url
    finally:
        factory.drop()


def ok(*argv: str, stdin: str | None = None) -> tuple[str, str]:
    status, out, err = run(*argv, stdin=stdin)
    assert status == 0, (argv, out, err)
    return out, err


def two_companies(database: str) -> None:
    """Session S1 in acme and in cmp_42, each with its own client_data and ERP token."""
    for company in ("acme", "cmp_42"):
        ok("session", "put", "S1", "--company-id", company, "--client-data", json.dumps({"who": company}),
           "--database", database)
        ok("secrets", "set", "erp_token", "--company-id", company, "--database", database, stdin=TOKEN)


def test_sessions_by_company_on_every_kind_of_database(database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    two_companies(database)
    status, out, err = run("session", "get", "S1", "--database", database)
    assert (status, out, err) == (1, "", AMBIGUOUS)
    out, _ = ok("session", "get", "S1", "--company-id", "acme", "--database", database)
    assert json.loads(out)["client_data"] == {"who": "acme"}
    monkeypatch.setenv("WEBHOOK_DSL_DATABASE", database)  # the default for --database
    out, _ = ok("session", "get", "S1", "--company-id", "cmp_42")
    assert json.loads(out)["company_id"] == "cmp_42"
    out, _ = ok("session", "list", "--company-id", "acme", "--format", "json")
    assert [s["id"] for s in json.loads(out)] == ["S1"]

    _, err = ok("session", "delete", "S1", "--company-id", "acme")
    assert err == "deleted session 'S1' of company 'acme' and its 0 log record(s)\n"
    status, _, err = run("session", "get", "S1", "--company-id", "acme")
    assert status == 1 and err.startswith("no session 'S1' of company 'acme' in ")
    out, _ = ok("session", "get", "S1")  # one company left: no --company-id needed
    assert json.loads(out)["client_data"] == {"who": "cmp_42"}
    _, err = ok("session", "delete", "S1")
    assert "of company 'cmp_42'" in err
    status, out, err = run("session", "delete", "S1")
    assert (status, out) == (1, "") and err.startswith("no session 'S1' in ") and err.count("\n") == 1


def test_call_and_logs_by_company(database: str, tmp_path: Path, stand_in: int) -> None:
    two_companies(database)
    trigger = str(write_example_triggers(tmp_path / "triggers", stand_in) / "check_order.json")
    allow = ("--allow-network", "127.0.0.0/8", "--database", database)
    status, out, err = run("call", trigger, "--session", "S1", "--arg", "order_number=A-1", *allow)
    assert (status, out, err) == (1, "", AMBIGUOUS)
    for company, order in (("acme", "A-1"), ("cmp_42", "B-1"), ("cmp_42", "B-2")):
        out, _ = ok("call", trigger, "--session", "S1", "--company-id", company, "--arg", f"order_number={order}",
                    *allow)
        assert json.loads(out)["response"]["order_number"] == order

    status, out, err = run("logs", "S1", "--database", database)
    assert (status, out, err) == (1, "", AMBIGUOUS)
    out, _ = ok("logs", "S1", "--company-id", "acme", "--format", "json", "--database", database)
    assert [r["url"].rsplit("/", 1)[1] for r in json.loads(out)] == ["A-1"]
    out, _ = ok("logs", "--database", database, "--company-id", "cmp_42", "--format", "json", "S1")  # options first
    assert [r["url"].rsplit("/", 1)[1] for r in json.loads(out)] == ["B-1", "B-2"]
    out, _ = ok("logs", "show", "S1", "--company-id", "cmp_42", "--database", database)
    assert len(out.splitlines()) == 2 and "B-2 -> 200" in out

    _, err = ok("session", "delete", "S1", "--company-id", "cmp_42", "--database", database)
    assert err == "deleted session 'S1' of company 'cmp_42' and its 2 log record(s)\n"
    out, _ = ok("logs", "S1", "--company-id", "cmp_42", "--format", "json", "--database", database)
    assert json.loads(out) == []
    out, _ = ok("logs", "S1", "--format", "json", "--database", database)  # acme's, the one company left
    assert len(json.loads(out)) == 1


def _log(database: str, rows: list[tuple[str, float]]) -> None:
    """Log records of session S1 for (company, written at) pairs, as the store keeps them."""

    async def write() -> None:
        store = open_store(database)
        try:
            for company, at in rows:
                await store.append_log("S1", {"at": at, "trigger": "t", "ok": True}, company_id=company)
        finally:
            await store.close()

    asyncio.run(write())


def test_logs_purge_deletes_what_is_older_of_one_company_or_all(database: str) -> None:
    two_companies(database)
    now = time.time()
    month = 30 * 86400
    _log(database, [("acme", now - 2 * month), ("acme", now - 3600), ("cmp_42", now - 2 * month), ("cmp_42", now)])
    _, err = ok("logs", "purge", "--older-than", "30d", "--company-id", "acme", "--database", database)
    assert err.startswith("purged 1 log record(s) of company 'acme' written before ")
    out, _ = ok("logs", "S1", "--company-id", "cmp_42", "--format", "json", "--database", database)
    assert len(json.loads(out)) == 2  # another company's records are not touched
    _, err = ok("logs", "purge", "--older-than", "4w", "--database", database)
    assert err.startswith("purged 1 log record(s) written before ")
    for company in ("acme", "cmp_42"):
        out, _ = ok("logs", "S1", "--company-id", company, "--format", "json", "--database", database)
        assert len(json.loads(out)) == 1
    _, err = ok("logs", "--database", database, "purge", "--older-than", "30m")  # --database before 'purge'
    assert err.startswith("purged 1 log record(s) written before ")  # acme's of an hour ago


@pytest.mark.parametrize(("duration", "message"), [
    ("30", "is not a duration: write a number and a unit (s, m, h, d or w), such as 90s, 15m, 12h, 30d or 2w"),
    ("30x", "is not a duration"),
    ("-1d", "is not a duration"),
    ("d", "is not a duration"),
    ("0d", "0d: a duration must be more than 0"),
])
def test_a_bad_duration_says_what_to_write(tmp_path: Path, duration: str, message: str) -> None:
    from tests.test_cli_secrets import run_capturing_exit

    argv = ["logs", "purge", f"--older-than={duration}", "--database", str(tmp_path / "x")]
    status, out, err = run_capturing_exit(*argv)
    assert (status, out) == (2, "") and message in err and "Traceback" not in err
    assert err.splitlines()[-1].startswith("webhook-dsl logs purge: error: argument --older-than: ")


def test_commands_that_need_a_database_never_create_one(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    trigger = str(ROOT / "examples" / "triggers" / "check_order.json")
    for argv in (
        ["session", "delete", "S1"],
        ["session", "list", "--company-id", "c"],
        ["logs", "purge", "--older-than", "1d"],
        ["keys", "list", "--company-id", "c"],
        ["secrets", "list", "--company-id", "c"],
    ):
        status, out, err = run(*argv, "--database", f"sqlite:///{missing}")
        assert (status, out) == (1, "") and "no such file" in err and err.count("\n") == 1, argv
    status, _, err = run("call", trigger, "--session", "S1", "--arg", "order_number=1", "--database", str(missing))
    assert status == 1 and err == f"no session 'S1' in {missing} (no such file); create it with " \
        "'webhook-dsl session put S1 ...'\n"
    assert not missing.exists()


def test_an_unreachable_postgresql_is_one_line_with_the_password_masked(tmp_path: Path) -> None:
    pytest.importorskip("asyncpg")
    url = f"postgresql://postgres:s3cret-pw@127.0.0.1:{free_port()}/x"  # a port nothing listens on
    shown = url.replace("s3cret-pw", "***")
    trigger = str(ROOT / "examples" / "triggers" / "check_order.json")
    for argv in (
        ["session", "put", "S1", "--company-id", "c"],
        ["session", "get", "S1"],
        ["session", "delete", "S1", "--company-id", "c"],
        ["logs", "S1"],
        ["logs", "purge", "--older-than", "30d"],
        ["call", trigger, "--session", "S1", "--arg", "order_number=1"],
        ["keys", "list", "--company-id", "c"],
    ):
        status, out, err = run(*argv, "--database", url)
        assert (status, out, err) == (1, "", f"cannot reach the database {shown}: connection refused\n"), argv


def test_render_writes_one_json_object_per_line_for_any_number_of_files() -> None:
    files = sorted(str(p) for p in WEBHOOKS.glob("*.json"))
    variables = ("--vars", str(ROOT / "examples" / "variables.json"))
    one, _ = ok("render", files[0], *variables)
    many, _ = ok("render", *files, *variables)
    rows = [json.loads(line) for line in many.splitlines()]
    assert [row["source"] for row in rows] == files
    assert json.loads(one) == rows[0] and one.count("\n") == 1  # the same shape for 1 file as for N
    pretty, _ = ok("render", *files, *variables, "--pretty")
    decoder, objects, at = json.JSONDecoder(), [], 0
    while at < len(pretty):
        value, end = decoder.raw_decode(pretty, at)
        objects.append(value)
        at = end + 1  # the newline after each object
    assert objects == rows and pretty.count("\n") > len(rows) * 4


TYPED: dict[str, Any] = {
    "name": "order_items",
    "description": "Order some items.",
    "parameters": {
        "type": "object",
        "properties": {
            "qty": {"type": "integer"},
            "price": {"type": "number"},
            "gift": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "meta": {"type": "object"},
            "size": {"enum": [1, 2, 3]},
            "maybe": {"type": ["integer", "null"]},
            "code": {"type": "string"},
            "either": {"type": ["string", "integer"]},
        },
    },
    "webhook": {
        "url": "https://orders.example.com/items",
        "method": "POST",
        "body": {"qty": "$qty", "price": "$price", "gift": "$gift", "tags": "$tags", "meta": "$meta",
                 "size": "$size", "maybe": "$maybe", "code": "$code", "either": "$either"},
    },
}


def _typed_trigger(tmp_path: Path) -> str:
    text = json.dumps(TYPED)
    for name in TYPED["webhook"]["body"]:  # bare values: "$qty" -> $qty
        text = text.replace(f'"${name}"', f"${name}")
    (tmp_path / "order_items.json").write_text(text)
    return str(tmp_path / "order_items.json")


def test_arg_values_follow_the_declared_types(tmp_path: Path) -> None:
    trigger, db = _typed_trigger(tmp_path), str(tmp_path / "s.db")
    ok("session", "put", "S1", "--company-id", "c", "--database", db)
    args = ["qty=3", "price=2.5", "gift=true", 'tags=["a","b"]', 'meta={"k":1}', "size=2", "maybe=null",
            "code=007", "either=12"]
    out, _ = ok("call", trigger, "--session", "S1", *(f"--arg={a}" for a in args), "--dry-run", "--database", db)
    body = json.loads(json.loads(out)["dry_run"]["request"]["body"])
    assert body == {"qty": 3, "price": 2.5, "gift": True, "tags": ["a", "b"], "meta": {"k": 1}, "size": 2,
                    "maybe": None, "code": "007", "either": "12"}  # a string stays as typed where one is allowed


@pytest.mark.parametrize(("arg", "hint"), [
    ("qty=three", "--arg qty=3, or give the arguments as JSON: --args-json '{\"qty\": 3}'"),
    ("qty=2.5", "--args-json '{\"qty\": 3}'"),
    ("gift=yes", "--args-json '{\"gift\": true}'"),
    ("tags=a,b", "--args-json '{\"tags\": [\"a\", \"b\"]}'"),
    ("price=NaN", "--args-json '{\"price\": 2.5}'"),
])
def test_an_arg_that_does_not_convert_suggests_args_json(tmp_path: Path, arg: str, hint: str) -> None:
    trigger, db = _typed_trigger(tmp_path), str(tmp_path / "s.db")
    ok("session", "put", "S1", "--company-id", "c", "--database", db)
    status, out, err = run("call", trigger, "--session", "S1", "--arg", arg, "--dry-run", "--database", db)
    name = arg.split("=")[0]
    assert (status, out) == (1, "") and err.count("\n") == 1
    assert err.startswith(f"--arg {arg}: the trigger declares {name} as ") and hint in err


def _blocked_trigger(tmp_path: Path, url: str) -> str:
    trigger = {"name": "ping", "description": "Ping.", "webhook": {"url": url, "method": "GET"}}
    path = tmp_path / "ping.json"
    path.write_text(json.dumps(trigger))
    return str(path)


def _failed_call(tmp_path: Path, url: str, *extra: str) -> tuple[dict[str, Any], str]:
    """Call a one-URL trigger on a fresh session; the result printed on stdout and what stderr said."""
    db = str(tmp_path / "s.db")
    ok("session", "put", "S1", "--company-id", "c", "--database", db)
    status, out, err = run("call", _blocked_trigger(tmp_path, url), "--session", "S1", "--database", db, *extra)
    result = json.loads(out)
    assert status == 1 and result["ok"] is False
    assert err == f"call failed ({result['category']}): {result['error']}\n"  # one line, as in the result
    return result, err


def test_a_failed_call_says_its_category_and_error_on_stderr(tmp_path: Path) -> None:
    result, err = _failed_call(tmp_path, "http://127.0.0.1:9/")
    assert result["category"] == "blocked"
    assert err == (
        "call failed (blocked): 127.0.0.1: loopback; not a public address "
        "(allow it with --allow-network 127.0.0.1/32 or WEBHOOK_DSL_ALLOW_NETWORKS)\n"
    )


def test_a_failed_call_of_another_category_too(tmp_path: Path) -> None:
    port = free_port()  # nothing listens: the connection is refused
    result, err = _failed_call(tmp_path, f"http://127.0.0.1:{port}/", "--allow-network", "127.0.0.0/8")
    assert result["category"] == "connection" and err.startswith("call failed (connection): not sent: ")


@pytest.fixture
def stub_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """The system resolver replaced: one name of this machine (not public), every other name unknown. Never real
    DNS, and nothing but loopback is ever dialled."""

    async def resolve(host: str, port: int) -> list[str]:
        if host == "db.corp.test":
            return ["127.0.0.1"]
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(guard, "system_resolver", resolve)


def test_a_name_that_does_not_resolve_is_dns_not_blocked(tmp_path: Path, stub_dns: None) -> None:
    result, err = _failed_call(tmp_path, "https://no-such-host.test/")
    assert result["category"] == "dns"
    assert err == "call failed (dns): no-such-host.test: the name does not resolve\n"
    assert "Name or service not known" not in json.dumps(result)  # the resolver's words are the operator's


def test_a_blocked_name_names_the_option_but_never_its_address(tmp_path: Path, stub_dns: None) -> None:
    port = free_port()  # nothing listens
    result, err = _failed_call(tmp_path, f"http://db.corp.test:{port}/")
    assert result["category"] == "blocked" and "127.0.0.1" not in json.dumps(result) + err
    assert err == (
        "call failed (blocked): db.corp.test: its address is not public "
        "(allow it with --allow-host db.corp.test or WEBHOOK_DSL_ALLOW_HOSTS)\n"
    )
    # the LLM reads one wording for a name that is refused and one that does not resolve: no map of names
    (tmp_path / "unknown").mkdir()
    unknown, _ = _failed_call(tmp_path / "unknown", "http://no-such-host.test/")
    assert result["message_for_llm"].replace("db.corp.test", "H") == unknown["message_for_llm"].replace(
        "no-such-host.test", "H"
    )
    assert "allow" in result["message_for_llm"] and "--allow-host" not in result["message_for_llm"]
    db, trigger = str(tmp_path / "s.db"), str(tmp_path / "ping.json")
    status, out, err = run("call", trigger, "--session", "S1", "--database", db, "--allow-host", "db.corp.test")
    assert status == 1 and json.loads(out)["category"] == "connection"  # allowed as the message said: dialled


def test_localhost_names_the_host_option(tmp_path: Path) -> None:
    result, _ = _failed_call(tmp_path, "http://localhost:9/")
    assert result["error"] == (
        "localhost names this machine or an internal service (allow it with --allow-host localhost or "
        "WEBHOOK_DSL_ALLOW_HOSTS)"
    )
