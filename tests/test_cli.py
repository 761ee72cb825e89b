"""The webhook-dsl command, run as a user runs it (in-process for speed, once as a subprocess)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from webhook_dsl.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(str(p) for p in (ROOT / "examples" / "webhooks").glob("*.json"))
VARS = str(ROOT / "examples" / "variables.json")


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), out, err)
    return status, out.getvalue(), err.getvalue()


def test_check_accepts_the_examples() -> None:
    status, out, err = run("check", *EXAMPLES)
    assert (status, err) == (0, "")
    assert out.count(": ok (") == len(EXAMPLES) == 4


def test_check_reports_every_error_with_position_line_and_caret(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "url": "https://x.example/a b",\n  "method": "FETCH",\n  "body": {"a": "$ x"}\n}\n')
    status, out, err = run("check", str(bad))
    assert status == 1 and out == ""
    lines = err.splitlines()
    assert (
        lines[0] == f"{bad}:2:30: the URL path holds a space, which a URL cannot carry as is; "
        "percent-encode it (%XX) in the template"
    )
    assert lines[1] == '      "url": "https://x.example/a b",'
    assert lines[2] == " " * 33 + "^"
    assert f"{bad}:3:13: method must be one of" in err
    assert f"{bad}:4:18: '$' must be followed by a name" in err


def test_check_json_format_and_unreadable_files(tmp_path: Path) -> None:
    status, out, _ = run("check", "--format", "json", str(tmp_path / "missing.json"), EXAMPLES[0])
    assert status == 1
    report = json.loads(out)
    assert report["ok"] is False
    assert "cannot read" in report["errors"][0]["message"]
    (tmp_path / "latin1.json").write_bytes(b'{"url": "\xff"}')
    status, _, err = run("check", str(tmp_path / "latin1.json"))
    assert status == 1 and "not UTF-8" in err


def test_render_prints_the_request_as_json() -> None:
    ticket = str(ROOT / "examples" / "webhooks" / "create_ticket.json")
    status, out, err = run("render", ticket, "--vars", VARS, "--var", "priority=low")
    assert status == 0, err
    request = json.loads(out)
    assert set(request) == {"method", "url", "headers", "body"}
    assert request["headers"][0] == ["Authorization", "Bearer hd-secret-key"]
    assert json.loads(request["body"])["priority"] == "low"


def test_render_typed_variables_and_several_files() -> None:
    image = str(ROOT / "examples" / "webhooks" / "analyze_image.json")
    status, out, err = run("render", image, image, "--vars", VARS, "--var-json", 'images=["u1"]')
    assert status == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 2 and rows[0]["source"] == image
    assert json.loads(rows[0]["body"])["all_images"] == ["u1"]


def test_render_failure_names_each_variable_and_position() -> None:
    image = str(ROOT / "examples" / "webhooks" / "analyze_image.json")
    status, out, err = run("render", image, "--var-json", "images=[]")
    assert status == 1 and out == ""
    assert f"{image}:3:58: $session.id is not defined" in err
    assert f"{image}:6:48: $vision_api_key is not defined" in err
    assert f"{image}:9:19: $images[0] is past the end of images" in err


def test_render_rejects_bad_variable_input(tmp_path: Path) -> None:
    (tmp_path / "v.json").write_text('{"a": 1,}')
    status, _, err = run("render", EXAMPLES[0], "--vars", str(tmp_path / "v.json"))
    assert status == 1 and f"{tmp_path / 'v.json'}:1:9: invalid JSON" in err
    status, _, err = run("render", EXAMPLES[0], "--var", "novalue")
    assert status == 1 and "expected NAME=VALUE" in err


def test_compile_writes_plans_that_render_identically(tmp_path: Path) -> None:
    out_file = tmp_path / "plans.json"
    status, _, err = run("compile", *EXAMPLES, "-o", str(out_file))
    assert status == 0, err
    document = json.loads(out_file.read_text())
    assert document["format"] == "webhook-dsl/plan" and len(document["plans"]) == 4
    for example in EXAMPLES:
        _, direct, _ = run("render", example, "--vars", VARS)
        status, from_plan, err = run("render", str(out_file), "--source", example, "--vars", VARS)
        assert status == 0, err
        assert json.loads(from_plan) == json.loads(direct)


def test_compile_writes_nothing_when_a_config_is_wrong(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    out_file = tmp_path / "plans.json"
    status, _, err = run("compile", EXAMPLES[0], str(bad), "-o", str(out_file))
    assert status == 1 and "nothing written" in err
    assert not out_file.exists()


def test_help_teaches_by_example() -> None:
    with pytest.raises(SystemExit) as exit_info:
        run("--help")
    assert exit_info.value.code == 0


def test_installed_command_runs_as_a_process() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "webhook_dsl", "render", EXAMPLES[1], "--vars", VARS],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["method"] == "POST"
    usage = subprocess.run([sys.executable, "-m", "webhook_dsl", "check"], capture_output=True, text=True, check=False)
    assert usage.returncode == 2 and "FILE" in usage.stderr
