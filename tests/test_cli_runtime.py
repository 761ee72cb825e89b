"""The seed's three examples end to end through the CLI, against the stand-in API on loopback."""

from __future__ import annotations

import asyncio
import io
import json
import re
import sys
from pathlib import Path

import pytest

from tests.service_support import write_example_triggers
from webhook_dsl import compile_trigger, compile_webhook
from webhook_dsl.cli import main
from webhook_dsl.runtime.calls import event_loop_factory
from webhook_dsl.runtime.calls import run as run_coroutine

ROOT = Path(__file__).resolve().parent.parent
TRIGGERS = ROOT / "examples" / "triggers"
WEBHOOKS = ROOT / "examples" / "webhooks"
#: The examples' API tokens: company secrets, set with `webhook-dsl secrets set NAME` and never in a session.
SECRETS = {"erp_token": "erp-SECRET-41d2", "helpdesk_api_key": "hd-SECRET-99ab", "vision_api_key": "vis-SECRET-7c"}
#: Credentials a deployment keeps in client_data and declares in a trigger's "secrets" (see declaring_triggers).
CLIENT_SECRETS = {"crm_token": "crm-SECRET-5e8f", "crm_pin": "pin-SECRET-31c0"}


def run(*argv: str, stdin: str | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        if stdin is not None:
            patch.setattr(sys, "stdin", io.StringIO(stdin))
        status = main(list(argv), out, err)
    return status, out.getvalue(), err.getvalue()


def set_secrets(db: str, company_id: str) -> str:
    """``printf '%s' "$TOKEN" | webhook-dsl secrets set NAME --company-id C`` for each example token; what the
    commands printed."""
    printed = ""
    for name, value in SECRETS.items():
        status, out, err = run("secrets", "set", name, "--company-id", company_id, "--database", db, stdin=value)
        assert status == 0, err
        assert f"$secrets.{name}" in err
        printed += out + err
    return printed


def put_session(db: str, session_id: str) -> None:
    set_secrets(db, "c")
    status, _, err = run("session", "put", session_id, "--company-id", "c", "--assistant-id", "a",
                         "--client-data", '{"user_id": "usr_999"}', "--database", db)
    assert status == 0, err


@pytest.fixture
def stand_in_triggers(tmp_path: Path, stand_in: int) -> Path:
    """The example triggers, pointed at the stand-in on its ephemeral port."""
    return write_example_triggers(tmp_path / "examples", stand_in)


@pytest.fixture
def declaring_triggers(tmp_path: Path, stand_in: int) -> Path:
    """Two small triggers that read a credential from client_data and declare it in "secrets", one each."""
    folder = tmp_path / "declaring"
    folder.mkdir()
    for name, key in (("crm_order", "crm_token"), ("crm_pin", "crm_pin")):
        trigger = {
            "name": name,
            "description": f"Reads {key} from the session's client_data, declared secret.",
            "clientData": [key],
            "secrets": [key],
            "webhook": {
                "url": f"http://127.0.0.1:{stand_in}/erp/api/orders/{name}",
                "method": "GET",
                "headers": [{"key": "Authorization", "value": f"Bearer ${key}"}],
            },
        }
        (folder / f"{name}.json").write_text(json.dumps(trigger, indent=2))
    return folder


def test_the_examples_read_their_tokens_from_company_secrets() -> None:
    """The example triggers take their tokens from the company's secrets, so 'check' has nothing to warn
    about; the seed's webhooks keep $erp_token and the others, declared in their "secrets"."""
    files = sorted(map(str, [*TRIGGERS.glob("*.json"), *WEBHOOKS.glob("*.json")]))
    status, out, err = run("check", *files)
    assert (status, err) == (0, "") and out.count(": ok (") == len(files) == 7
    tokens = {"check_order": "erp_token", "create_ticket": "helpdesk_api_key", "analyze_image": "vision_api_key"}
    for name, token in tokens.items():
        trigger = compile_trigger((TRIGGERS / f"{name}.json").read_text(), source=name)
        assert f"$secrets.{token}" in trigger.plan.references and f"${token}" not in trigger.plan.references
        assert trigger.client_data_keys == () and trigger.uses_company_secrets
        webhook = compile_webhook((WEBHOOKS / f"{name}.json").read_text(), source=name)
        assert webhook.secrets == (token,) and f"${token}" in webhook.references


def test_seed_examples_end_to_end(stand_in_triggers: Path, tmp_path: Path) -> None:
    db = str(tmp_path / "sessions.db")
    printed = set_secrets(db, "cmp_42")
    status, out, err = run("secrets", "list", "--company-id", "cmp_42", "--database", db)
    assert status == 0 and [line.split()[0] for line in out.splitlines()] == sorted(SECRETS)
    printed += out + err
    client_data = {"user_id": "usr_999", "plan": "enterprise"}
    status, out, err = run(
        "session",
        "put",
        "S1",
        "--company-id",
        "cmp_42",
        "--assistant-id",
        "asst_7",
        "--client-data",
        json.dumps(client_data),
        "--triggers",
        str(stand_in_triggers),
        "--database",
        db,
    )
    assert status == 0, err
    assert json.loads(out)["client_data"] == client_data  # no token in the session
    printed += out + err
    allow = ("--allow-network", "127.0.0.0/8", "--database", db)

    status, out, err = run(
        "call", str(stand_in_triggers / "check_order.json"), "--session", "S1", "--arg", "order_number=A-1001/2", *allow
    )
    printed += out + err
    order = json.loads(out)
    assert status == 0, err
    assert order["status"] == 200 and order["response"]["order_number"] == "A-1001/2"  # the stand-in wants a token
    assert order["url"].endswith("/erp/api/orders/A-1001%2F2")
    assert order["client_data_merged"] == {"last_order_number": "A-1001/2"}
    assert "Instruction: Inform the customer" in order["message_for_llm"]

    status, out, err = run(
        "call",
        str(stand_in_triggers / "create_ticket.json"),
        "--session",
        "S1",
        "--args-json",
        json.dumps(
            {
                "issue_title": 'Jam "A4"',
                "issue_description": f"line1\nline2 {SECRETS['helpdesk_api_key']}",
                "priority": "high",
                "customer_name": "Ana",
                "customer_email": "a@b.co",
            }
        ),
        *allow,
    )
    printed += out + err
    ticket = json.loads(out)
    assert status == 0, err
    assert ticket["status"] == 201 and ticket["response"]["received"]["title"] == 'Jam "A4"'
    assert ticket["response"]["received"]["description"] == "line1\nline2 ***"  # the echoed secret, masked
    assert ticket["response"]["received"]["origin"] == {"channel": "whatsapp", "session": "S1", "company": "cmp_42"}
    assert ticket["response"]["session_header"] == "S1"

    status, out, err = run(
        "call",
        str(stand_in_triggers / "analyze_image.json"),
        "--session",
        "S1",
        "--image",
        "https://cdn.example.com/1.jpg",
        "--image",
        "https://cdn.example.com/2.jpg",
        *allow,
    )
    printed += out + err
    vision = json.loads(out)
    assert status == 0, err
    assert vision["response"]["images_seen"] == 2 and vision["response"]["session"] == "S1"

    status, out, err = run("session", "get", "S1", "--database", db)
    printed += out + err
    data = json.loads(out)["client_data"]
    assert data["last_order_number"] == "A-1001/2" and data["last_ticket"].startswith("TCK-")
    assert set(data) == {"user_id", "plan", "last_order_number", "last_ticket"}

    status, out, err = run("logs", "S1", "--database", db)
    printed += out + err
    lines = out.splitlines()
    assert status == 0 and len(lines) == 3
    assert re.match(
        r"#1 \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ check_order GET http://127\.0\.0\.1:\d+/erp/api/orders/"
        r"A-1001%2F2 -> 200 \(\d+\.\d ms, 1 attempt\(s\)\) ok",
        lines[0],
    )
    status, out, err = run("logs", "S1", "--format", "json", "--database", db)
    records = json.loads(out)
    assert [r["status"] for r in records] == [200, 201, 200]
    assert all(["Authorization", "***"] in r["request_headers"] for r in records)
    printed += out + err
    for secret in SECRETS.values():
        assert secret not in printed


def test_session_views_mask_what_the_triggers_declare(
    declaring_triggers: Path, stand_in_triggers: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Masking is by declaration: with --triggers (or $WEBHOOK_DSL_TRIGGERS) the client_data keys those triggers
    declare in "secrets" read ***; without, nothing is masked, since these are the values the operator typed."""
    db = str(tmp_path / "views.db")
    monkeypatch.delenv("WEBHOOK_DSL_TRIGGERS", raising=False)
    status, _, err = run("session", "put", "S1", "--company-id", "c", "--client-data", json.dumps(CLIENT_SECRETS),
                         "--database", db)
    assert status == 0, err
    status, out, _ = run("session", "get", "S1", "--database", db)
    assert status == 0 and json.loads(out)["client_data"] == CLIENT_SECRETS
    masked = {name: "***" for name in CLIENT_SECRETS}
    status, out, _ = run("session", "get", "S1", "--database", db, "--triggers", str(declaring_triggers))
    assert status == 0 and json.loads(out)["client_data"] == masked
    status, out, _ = run("session", "get", "S1", "--database", db,
                         "--triggers", str(declaring_triggers / "crm_order.json"))
    assert json.loads(out)["client_data"] == {**CLIENT_SECRETS, "crm_token": "***"}  # only what that trigger declares
    status, out, _ = run("session", "get", "S1", "--database", db, "--triggers", str(stand_in_triggers))
    assert status == 0 and json.loads(out)["client_data"] == CLIENT_SECRETS  # the examples declare nothing
    monkeypatch.setenv("WEBHOOK_DSL_TRIGGERS", str(declaring_triggers))
    status, out, _ = run("session", "put", "S1", "--client-data", '{"note": "crm-SECRET-5e8f again"}',
                         "--database", db)
    assert status == 0 and json.loads(out)["client_data"] == {**masked, "note": "*** again"}
    assert all(secret not in out for secret in CLIENT_SECRETS.values())

    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.json").write_text("{")
    status, out, err = run("session", "get", "S1", "--database", db, "--triggers", str(tmp_path / "broken"))
    assert (status, out) == (1, "") and f"--triggers {tmp_path / 'broken'}: fix these errors first" in err


def test_call_refuses_loopback_without_allow_and_bad_arguments(stand_in_triggers: Path, tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    put_session(db, "S2")
    status, out, _ = run(
        "call",
        str(stand_in_triggers / "check_order.json"),
        "--session",
        "S2",
        "--arg",
        "order_number=A-1",
        "--database",
        db,
    )
    assert status == 1 and json.loads(out)["category"] == "blocked"
    status, out, _ = run(
        "call",
        str(stand_in_triggers / "create_ticket.json"),
        "--session",
        "S2",
        "--args-json",
        '{"priority": "urgent"}',
        "--allow-network",
        "127.0.0.0/8",
        "--database",
        db,
    )
    result = json.loads(out)
    assert status == 1 and result["category"] == "bad_arguments"
    assert "'urgent' is not one of" in result["error"] and "issue_title" in result["error"]


def test_dry_run_shows_the_request_and_sources_and_sends_nothing(stand_in_triggers: Path, tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    put_session(db, "S3")
    status, out, err = run(
        "call",
        str(stand_in_triggers / "check_order.json"),
        "--session",
        "S3",
        "--arg",
        "order_number=A-9",
        "--dry-run",
        "--database",
        db,
    )
    assert status == 0, err
    preview = json.loads(out)["dry_run"]
    assert preview["sent"] is False
    assert ["Authorization", "***"] in preview["request"]["headers"]
    assert preview["variables"]["$secrets.erp_token"] == {"variable": "secrets.erp_token", "source": "company_secret"}
    assert preview["variables"]["$order_number"] == {"variable": "order_number", "source": "argument"}
    assert all(secret not in out + err for secret in SECRETS.values())
    _, logs, _ = run("logs", "S3", "--format", "json", "--database", db)
    assert json.loads(logs) == []


def test_unknown_session_is_a_clear_error(tmp_path: Path) -> None:
    status, _, err = run(
        "call",
        str(TRIGGERS / "check_order.json"),
        "--session",
        "nope",
        "--arg",
        "order_number=1",
        "--database",
        str(tmp_path / "x.db"),
    )
    assert status == 1 and "no session 'nope'" in err and "session put nope" in err


def test_check_reports_references_no_source_defines(tmp_path: Path) -> None:
    trigger = json.loads((TRIGGERS / "check_order.json").read_text())
    trigger["webhook"]["headers"].append({"key": "X-Plan", "value": "$plna"})
    path = tmp_path / "t.json"
    path.write_text(json.dumps(trigger, indent=2))
    status, _, err = run("check", str(path))
    assert status == 1
    assert re.search(rf"{re.escape(str(path))}:\d+:\d+: \$plna: no source defines it", err)


def test_tools_export_both_shapes() -> None:
    status, out, _ = run("tools", *map(str, sorted(TRIGGERS.glob("*.json"))))
    tools = json.loads(out)
    assert status == 0 and [t["function"]["name"] for t in tools] == ["analyze_image", "check_order", "create_ticket"]
    status, out, _ = run("tools", "--style", "anthropic", str(TRIGGERS / "check_order.json"))
    (tool,) = json.loads(out)
    assert tool["input_schema"]["required"] == ["order_number"] and set(tool) == {"name", "description", "input_schema"}


# -- the event loop ---------------------------------------------------------------------------------


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_run_picks_uvloop_when_installed_and_asyncio_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("uvloop")
    assert run_coroutine(_loop_module()).startswith("uvloop")
    assert run_coroutine(_loop_module(), event_loop="uvloop").startswith("uvloop")
    assert run_coroutine(_loop_module(), event_loop="asyncio").startswith("asyncio")
    with pytest.raises(ValueError, match="expected one of auto, uvloop, asyncio"):
        event_loop_factory("trio")
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as on Windows, where there is no uvloop
    assert run_coroutine(_loop_module()).startswith("asyncio")
    with pytest.raises(RuntimeError, match="uvloop is not installed"):
        event_loop_factory("uvloop")


def test_serve_hands_the_chosen_loop_to_uvicorn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    seen: list[str] = []

    class Recorder:
        started = True

        def __init__(self, config: uvicorn.Config) -> None:
            seen.append(str(config.loop))

        def run(self) -> None:
            pass

    monkeypatch.setattr(uvicorn, "Server", Recorder)
    triggers = tmp_path / "triggers"
    triggers.mkdir()
    base = ["serve", "--triggers", str(triggers), "--database", str(tmp_path / "w.db")]
    for extra, want in (([], "auto"), (["--loop", "asyncio"], "asyncio")):
        assert main([*base, *extra], io.StringIO(), io.StringIO()) == 0
        assert seen.pop() == want
    err = io.StringIO()
    with pytest.raises(SystemExit):
        main([*base, "--loop", "trio"], io.StringIO(), err)
