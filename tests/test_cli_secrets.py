"""What the command line prints never shows a declared secret unless asked to: `render`, `call --dry-run`."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from tests.test_cli import run
from webhook_dsl.storage.sqlite import SQLiteStore

TOKEN = "erp-SECRET-2f9a-long"
PIN = "1234"


def write(tmp_path: Path, name: str, document: dict[str, object]) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(document), encoding="utf-8")
    return str(path)


WEBHOOK = {
    "url": "https://erp.example.com/u/x$pin/orders/$order?k=$secrets.erp",
    "method": "POST",
    "headers": [{"key": "X-Token", "value": "$token"}, {"key": "X-Basic", "value": "Basic $basic"}],
    "body": {"token": "$token", "note": "order $order"},
    "secrets": ["token", "pin", "basic"],
}
VARIABLES = {
    "token": TOKEN,
    "pin": PIN,
    "basic": base64.b64encode(f"user:{TOKEN}".encode()).decode(),
    "order": "A-1",
    "secrets.erp": "company-SECRET-77",
}


def test_render_masks_declared_and_company_secrets_unless_asked(tmp_path: Path) -> None:
    webhook = write(tmp_path, "w.json", WEBHOOK)
    variables = write(tmp_path, "v.json", VARIABLES)
    status, out, err = run("render", webhook, "--vars", variables)
    assert status == 0, err
    shown = json.loads(out)
    assert shown["url"] == "https://erp.example.com/u/x***/orders/A-1?k=***"
    assert shown["headers"][:2] == [["X-Token", "***"], ["X-Basic", "Basic ***"]]
    assert json.loads(shown["body"]) == {"token": "***", "note": "order A-1"}
    for value in (TOKEN, PIN, VARIABLES["basic"], "company-SECRET-77"):
        assert value not in out
    status, out, err = run("render", webhook, "--vars", variables, "--show-secrets")
    assert status == 0 and TOKEN in out and "x1234" in out and "company-SECRET-77" in out


def test_dry_run_masks_unless_asked(tmp_path: Path, stand_in: int) -> None:
    trigger = write(tmp_path, "t.json", {
        "name": "t",
        "description": "d",
        "clientData": ["token"],
        "secrets": ["token"],
        "webhook": {
            "url": f"http://127.0.0.1:{stand_in}/erp/api/orders/A-1?t=$token",
            "method": "GET",
            "headers": [{"key": "Authorization", "value": "Bearer $token"}],
        },
    })
    db = str(tmp_path / "s.db")
    SQLiteStore(db).put_session_sync("S1", company_id="c", client_data={"token": TOKEN})
    status, out, err = run("call", trigger, "--session", "S1", "--dry-run", "--database", db)
    assert status == 0, err
    assert TOKEN not in out and json.loads(out)["dry_run"]["request"]["url"].endswith("?t=***")
    status, out, err = run("call", trigger, "--session", "S1", "--dry-run", "--show-secrets", "--database", db)
    assert status == 0 and json.loads(out)["dry_run"]["request"]["url"].endswith(f"?t={TOKEN}")


def test_a_network_written_wrong_is_one_line_saying_what_was_meant(tmp_path: Path) -> None:
    for command in (["call", "t.json", "--session", "S1"], ["serve", "--triggers", str(tmp_path)]):
        status, _, err = run_capturing_exit(*command, "--allow-network", "127.0.0.1/0")
        assert status == 2 and "Traceback" not in err
        assert "127.0.0.1/0 has host bits set; did you mean 127.0.0.1/32 or 0.0.0.0/0?" in err


def test_the_large_body_share_is_a_fraction(tmp_path: Path) -> None:
    for given, said in (("2", "2 is not a fraction from 0 to 1"), ("lots", "'lots' is not a number")):
        status, _, err = run_capturing_exit("serve", "--triggers", str(tmp_path), "--large-body-share", given)
        assert status == 2 and said in err and "Traceback" not in err


def run_capturing_exit(*argv: str) -> tuple[int, str, str]:
    """argparse reports a bad option value by exiting with status 2."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            status, out, more = run(*argv)
        except SystemExit as exit_:
            return int(exit_.code or 0), "", err.getvalue()
    return status, out, more + err.getvalue()
