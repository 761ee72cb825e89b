"""The webhook-dsl command, run as a user runs it (in-process for speed, once as a subprocess)."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service_support import (
    ACCEPTED_CLIENT_DATA,
    ACCEPTED_SESSION_IDS,
    BACKENDS,
    REFUSED_CLIENT_DATA,
    REFUSED_SESSION_IDS,
    StoreFactory,
)
from webhook_dsl.cli import build_parser, main
from webhook_dsl.storage.base import company_id_problem, session_id_problem
from webhook_dsl.storage.sqlite import SQLiteStore

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
    bad.write_text('{\n  "url": "https://x.example/a b",\n  "method": "FETCH",\n  "body": {"a": "${x"}\n}\n')
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
    assert f"{bad}:4:18: '${{' has no closing '}}' in this string" in err


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
    status, out, err = run("render", ticket, "--vars", VARS, "--var", "priority=low", "--show-secrets")
    assert status == 0, err
    request = json.loads(out)
    assert set(request) == {"source", "method", "url", "headers", "body"} and request["source"] == ticket
    assert request["headers"][0] == ["Authorization", "Bearer hd-secret-key"]
    assert json.loads(request["body"])["priority"] == "low"
    status, out, err = run("render", ticket, "--vars", VARS, "--var", "priority=low")
    assert status == 0 and json.loads(out)["headers"][0] == ["Authorization", "***"] and "hd-secret-key" not in out


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


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The path of every command and subcommand (``()`` for webhook-dsl itself), walking argparse's tree."""
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


def _parser(path: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in path:
        subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = subparsers.choices[name]
    return parser


COMMANDS = list(_commands(build_parser()))


def _examples(text: str) -> list[list[str]]:
    """The invocations of webhook-dsl after 'example:' or 'examples:' in a help text, as argument lists (what
    follows 'webhook-dsl', to the end of its line or its shell command: '... | webhook-dsl ...',
    'KEY=$(webhook-dsl ...)')."""
    found = []
    start = re.search(r"\bexamples?:", text)
    for line in text[start.end() if start else len(text) :].splitlines():
        for match in re.finditer(r"(?<![\w'-])webhook-dsl ([^|;`]*)", line):
            command = match.group(1).strip()
            if "$(" in line[: match.start()]:
                command = command.removesuffix(")")
            found.append(shlex.split(command))
    return found


def test_every_command_is_walked() -> None:
    assert len(COMMANDS) >= 20
    assert {(), ("check",), ("serve",), ("session", "put"), ("keys", "revoke"), ("secrets", "set")} <= set(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(("webhook-dsl", *path)))
def test_help_teaches_by_example(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every command's --help ends with an example of that command, every option says what it is for, and
    every example is one the command accepts."""
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as exit_info:
        run(*path, "--help")
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    prog = " ".join(("webhook-dsl", *path))
    assert text.startswith(f"usage: {prog}")
    problems = []

    after_usage = " ".join(text.split("\n\n", 1)[1].split())  # wrapped lines joined
    example = re.search(r"\bexamples?:", after_usage)
    if not example:
        problems.append("--help shows no example")
    elif not re.search(rf"(?<![\w'-]){re.escape(prog)}(?=[ )]|$)", after_usage[example.end() :]):
        problems.append(f"--help has no example of '{prog}'")

    parser = _parser(path)
    problems += [
        f"option {'/'.join(action.option_strings)} has no help text"
        for action in parser._actions
        if action.option_strings and action.help != argparse.SUPPRESS and not (action.help or "").strip()
    ]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            described = {choice.dest for choice in action._choices_actions if (choice.help or "").strip()}
            problems += [f"subcommand {name} has no help text" for name in action.choices if name not in described]

    examples = _examples(f"{parser.description}\n{parser.epilog}")
    for argv in (argv for argv in examples if tuple(argv[: len(path)]) == path):
        try:
            build_parser().parse_args(argv)
        except SystemExit:
            problems.append(f"the example 'webhook-dsl {shlex.join(argv)}' is refused: {capsys.readouterr().err}")
    assert problems == [], f"{prog}: " + "; ".join(problems)


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


# -- one rule for sessions: the same cases as tests/test_service.py ------------------------------------


@pytest.mark.parametrize("session_id", ACCEPTED_SESSION_IDS)
def test_session_ids_the_rule_accepts_are_accepted(tmp_path: Path, session_id: str) -> None:
    db = str(tmp_path / "s.db")
    status, out, err = run("session", "put", session_id, "--company-id", "cmp_42", "--database", db)
    assert status == 0 and json.loads(out)["id"] == session_id, err
    assert json.loads(run("session", "get", session_id, "--database", db)[1])["id"] == session_id


@pytest.mark.parametrize("session_id", REFUSED_SESSION_IDS)
def test_session_ids_the_rule_refuses_are_refused_in_its_words(tmp_path: Path, session_id: str) -> None:
    db = tmp_path / "s.db"
    for command in ("put", "get"):
        status, out, err = run("session", command, "--database", str(db), "--", session_id)  # "-S1" too
        assert (status, out) == (1, ""), command
        assert err == f"session id {session_id!r}: {session_id_problem(session_id)}\n"
    assert not db.exists()  # refused before the database is opened


@pytest.mark.parametrize("text", ACCEPTED_CLIENT_DATA)
def test_client_data_the_rule_accepts_is_stored(tmp_path: Path, text: str) -> None:
    db = str(tmp_path / "s.db")
    status, _, err = run("session", "put", "S1", "--company-id", "c", "--client-data", text, "--database", db)
    assert status == 0, err
    assert json.loads(run("session", "get", "S1", "--database", db)[1])["client_data"] == json.loads(text)


@pytest.mark.parametrize(("text", "message"), REFUSED_CLIENT_DATA)
def test_client_data_the_rule_refuses_is_refused_in_its_words(tmp_path: Path, text: str, message: str) -> None:
    db = tmp_path / "s.db"
    status, out, err = run("session", "put", "S1", "--client-data", text, "--database", str(db))
    assert (status, out) == (1, "") and err.startswith("--client-data: ")
    assert message in err
    assert not db.exists()


def test_session_company_ids_follow_the_rule_too(tmp_path: Path) -> None:
    status, _, err = run("session", "put", "S1", "--company-id", "../x", "--database", str(tmp_path / "s.db"))
    assert status == 1 and err == f"--company-id '../x': {company_id_problem('../x')}\n"


# -- check: credentials that are not declared secret ----------------------------------------------------


def _trigger_file(tmp_path: Path, **extra: object) -> Path:
    trigger = {
        "name": "lookup",
        "description": "Look something up.",
        "clientData": ["erp_token", "user_id", "api_key_v2"],
        "webhook": {
            "url": "https://erp.example.com/$user_id",
            "method": "GET",
            "headers": [{"key": "Authorization", "value": "Bearer $erp_token"}, {"key": "X-K", "value": "$api_key_v2"}],
        },
        **extra,
    }
    path = tmp_path / "lookup.json"
    path.write_text(json.dumps(trigger, indent=2))
    return path


def test_check_warns_of_credential_keys_not_declared_secret(tmp_path: Path) -> None:
    path = _trigger_file(tmp_path)
    status, out, err = run("check", str(path))
    assert status == 0 and out.startswith(f"{path}: ok (")
    assert err.splitlines() == [
        f"{path}: warning: clientData key 'erp_token' looks like a credential; declare it in \"secrets\" "
        "(or use a company secret, $secrets.erp_token) so it is masked in logs and LLM messages",
        f"{path}: warning: clientData key 'api_key_v2' looks like a credential; declare it in \"secrets\" "
        "(or use a company secret, $secrets.api_key_v2) so it is masked in logs and LLM messages",
    ]
    status, out, err = run("check", "--quiet", str(path))  # a warning is not a file that is fine
    assert status == 0 and out == "" and err.count("warning:") == 2
    status, out, err = run("check", "--format", "json", str(path))
    report = json.loads(out)
    assert status == 0 and report["ok"] is True and report["errors"] == []
    assert [w["message"].split("'")[1] for w in report["warnings"]] == ["erp_token", "api_key_v2"]
    assert all(w["source"] == str(path) for w in report["warnings"]) and err.count("warning:") == 2


def test_check_is_quiet_about_declared_secrets(tmp_path: Path) -> None:
    path = _trigger_file(tmp_path, secrets=["erp_token", "api_key_v2"])
    status, out, err = run("check", str(path))
    assert (status, err) == (0, "") and ": ok (" in out


# -- secrets ------------------------------------------------------------------------------------------

VALUE = "erp-SECRET-7f3a9c"


def run_with_stdin(stdin: str, *argv: str, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return run(*argv)


@pytest.mark.parametrize("kind", BACKENDS)
def test_secrets_set_list_delete_never_print_the_value(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    factory = StoreFactory(kind, tmp_path)
    factory.create_schema()
    try:
        db = ("--database", factory.url)
        status, out, err = run_with_stdin(VALUE + "\n", "secrets", "set", "erp_token", "--company-id", "cmp_42", *db,
                                          monkeypatch=monkeypatch)
        assert status == 0, err
        assert out == "" and VALUE not in err and "$secrets.erp_token" in err
        run_with_stdin("other-SECRET-0000\r\n", "secrets", "set", "api_key", "--company-id", "cmp_42", *db,
                       monkeypatch=monkeypatch)
        run_with_stdin("acme-SECRET-0000", "secrets", "set", "acme_only", "--company-id", "acme", *db,
                       monkeypatch=monkeypatch)
        status, out, err = run("secrets", "list", "--company-id", "cmp_42", *db)
        assert status == 0 and VALUE not in out + err
        assert [line.split()[0] for line in out.splitlines()] == ["api_key", "erp_token"]
        assert all(re.fullmatch(r"\w+  \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", line) for line in out.splitlines())
        assert asyncio.run(_stored(factory, "cmp_42")) == {"erp_token": VALUE, "api_key": "other-SECRET-0000"}

        status, out, err = run("secrets", "delete", "acme_only", "--company-id", "cmp_42", *db)  # acme's
        assert status == 1 and "no secret acme_only" in err
        status, out, err = run("secrets", "delete", "erp_token", "--company-id", "cmp_42", *db)
        assert status == 0 and "deleted" in err
        status, out, err = run("secrets", "list", "--company-id", "cmp_42", *db)
        assert out.split()[0] == "api_key" and len(out.splitlines()) == 1
        status, out, err = run("secrets", "list", "--company-id", "nobody", *db)
        assert (status, out) == (0, "") and "no secrets for company 'nobody'" in err
    finally:
        factory.drop()


async def _stored(factory: StoreFactory, company: str) -> dict[str, str]:
    store = factory()
    try:
        return await store.company_secrets(company)
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("argv", "stdin", "fragment"),
    [
        (["erp_token", VALUE], "", "read from standard input, never from the command line"),
        (["1st"], VALUE, "secret name '1st': a secret name is 1-64 letters"),
        (["erp_token"], "short\n", "a secret value is at least 8 characters"),
        (["erp_token"], "", "a secret value cannot be empty"),
        (["erp_token"], "\n", "a secret value cannot be empty"),
        (["erp_token"], VALUE + "\n\n", "cannot hold control characters"),
        (["erp_token"], VALUE + "\nX-Injected: 1", "cannot hold control characters"),
        (["erp_token"], VALUE + "\x00", "cannot hold control characters"),
    ],
)
def test_secrets_set_refuses_in_words_and_stores_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], stdin: str, fragment: str
) -> None:
    db = tmp_path / "s.db"
    status, out, err = run_with_stdin(stdin, "secrets", "set", *argv, "--company-id", "c", "--database", str(db),
                                      monkeypatch=monkeypatch)
    assert (status, out) == (1, "") and fragment in err, err
    assert VALUE not in err
    assert not db.exists()


def test_secrets_set_prompts_without_echo_on_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import getpass

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    prompts: list[str] = []
    monkeypatch.setattr(sys, "stdin", Terminal("never read"))
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": prompts.append(prompt) or VALUE)
    db = str(tmp_path / "s.db")
    status, out, err = run("secrets", "set", "erp_token", "--company-id", "c", "--database", db)
    assert (status, out) == (0, ""), err
    assert prompts == ["value of secret erp_token (not shown): "]
    assert SQLiteStore(db).company_secrets_sync("c") == {"erp_token": VALUE}


def test_secrets_check_the_company_and_the_database(tmp_path: Path) -> None:
    status, _, err = run("secrets", "list", "--company-id", "a b", "--database", str(tmp_path / "s.db"))
    assert status == 1 and err == f"--company-id 'a b': {company_id_problem('a b')}\n"
    status, _, err = run("secrets", "list", "--company-id", "c", "--database", "mysql://x")
    assert status == 1 and err.startswith("--database: ")


@pytest.mark.parametrize("argv", [["secrets"], ["secrets", "set"], ["secrets", "list"], ["secrets", "delete"],
                                  ["session", "put"], ["session", "get"]])
def test_secrets_and_session_help_ends_with_an_example(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(*argv, "--help")
    assert exit_info.value.code == 0
    last = capsys.readouterr().out.rstrip().splitlines()[-1]
    assert last.startswith("  ") and "webhook-dsl " + argv[0] in last
