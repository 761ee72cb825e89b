"""The command line tells a trigger from a webhook, and a compiled plan file from a config, by what the
file holds once parsed, never by a pattern over its text."""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_cli import run
from webhook_dsl.runtime.trigger import is_trigger_document

WEBHOOK_WITH_A_WEBHOOK_KEY = """{
  "url": "https://hooks.example.com/relay",
  "method": "POST",
  "body": {
    "webhook": "https://other.example.com/$target"
  }
}"""

MINIFIED_TRIGGER = json.dumps(
    {
        "name": "t",
        "description": "d",
        "parameters": {"type": "object", "properties": {"target": {"type": "string"}}},
        "webhook": {"url": "https://api.example.com/x/$target", "method": "GET"},
    },
    separators=(",", ":"),
)


def test_a_webhook_whose_body_has_a_webhook_key_is_a_webhook(tmp_path: Path) -> None:
    assert not is_trigger_document(WEBHOOK_WITH_A_WEBHOOK_KEY)
    path = tmp_path / "relay.json"
    path.write_text(WEBHOOK_WITH_A_WEBHOOK_KEY)
    status, out, err = run("check", str(path))
    assert status == 0, err
    assert "ok (POST; $target)" in out


def test_a_trigger_on_one_line_is_a_trigger(tmp_path: Path) -> None:
    assert is_trigger_document(MINIFIED_TRIGGER)
    path = tmp_path / "t.json"
    path.write_text(MINIFIED_TRIGGER)
    status, out, err = run("check", str(path))
    assert status == 0, err
    assert "ok (GET; $target)" in out


def test_text_that_does_not_parse_is_reported_with_its_position(tmp_path: Path) -> None:
    assert not is_trigger_document('{"webhook": {')
    path = tmp_path / "broken.json"
    path.write_text('{\n  "webhook": {\n')
    status, _, err = run("check", str(path))
    assert status == 1 and f"{path}:3:1" in err


def test_a_plan_file_is_known_by_its_format_member_wherever_it_stands(tmp_path: Path) -> None:
    config = tmp_path / "w.json"
    config.write_text(
        json.dumps({"url": "https://api.example.com/$id", "method": "POST", "body": {"note": "x" * 3000}})
    )
    plans = tmp_path / "plans.json"
    status, out, err = run("compile", str(config), "-o", str(plans))
    assert status == 0, err
    document = json.loads(plans.read_text())
    reordered = {"plans": document.pop("plans"), **document}  # the format member 3,000 characters in
    plans.write_text(json.dumps(reordered))
    status, out, err = run("render", str(plans), "--var", "id=7")
    assert status == 0, err
    assert json.loads(out)["url"] == "https://api.example.com/7"
