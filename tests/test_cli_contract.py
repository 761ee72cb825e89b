"""Bad values on the command line are one line and exit status 2 (argparse), never a traceback or a silent
surprise; read-only commands never create a database."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_cli import run
from tests.test_cli_secrets import run_capturing_exit
from webhook_dsl import __version__
from webhook_dsl.storage.sqlite import SQLiteStore


def test_version_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    from webhook_dsl.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"webhook-dsl {__version__}"


@pytest.mark.parametrize("port", ["99999", "65536", "-1", "http"])
def test_a_port_out_of_range_is_refused(tmp_path: Path, port: str) -> None:
    for command in (["serve", "--triggers", str(tmp_path)], ["stand-in"]):
        status, _, err = run_capturing_exit(*command, "--port", port)
        assert status == 2 and "Traceback" not in err
        assert "is not a port" in err


@pytest.mark.parametrize("timeout", ["0", "-3", "nan", "inf", "soon"])
def test_a_deadline_must_be_above_zero(tmp_path: Path, timeout: str) -> None:
    status, _, err = run_capturing_exit("call", "t.json", "--session", "S1", "--timeout", timeout)
    assert status == 2 and "Traceback" not in err
    assert "seconds" in err


def test_reading_commands_do_not_create_a_misspelt_database(tmp_path: Path) -> None:
    typo = tmp_path / "typo.db"
    for command in (["logs", "S1"], ["session", "get", "S1"]):
        status, out, err = run(*command, "--database", str(typo))
        assert status == 1, (command, out, err)
        assert "no such file" in err
        assert not typo.exists()
    real = tmp_path / "real.db"
    SQLiteStore(real).put_session_sync("S1", company_id="c")
    status, out, err = run("logs", "S1", "--database", str(real))
    assert status == 0, err


def test_serve_on_a_database_it_cannot_use_is_one_line(tmp_path: Path) -> None:
    """Unreachable PostgreSQL (a closed loopback port) and a SQLite schema newer than this code: exit 1, one
    line saying why, no traceback, nothing served."""
    import socket
    import sqlite3

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens once the socket is closed
    triggers = str(Path(__file__).resolve().parent.parent / "examples" / "triggers")
    status, _, err = run("serve", "--triggers", triggers, "--database", f"postgresql://u:pw@127.0.0.1:{closed}/x")
    assert status == 1 and "Traceback" not in err and "pw" not in err
    assert err.splitlines()[-1].startswith("not started: the database cannot be used: ")
    newer = tmp_path / "newer.db"
    SQLiteStore(newer).close_sync()
    with sqlite3.connect(newer) as db:
        db.execute("PRAGMA user_version = 99")
    status, _, err = run("serve", "--triggers", triggers, "--database", str(newer))
    assert status == 1 and "Traceback" not in err
    assert "schema version 99 is newer than this webhook-dsl" in err
