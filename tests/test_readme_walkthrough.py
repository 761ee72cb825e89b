"""The README's walkthrough (its ``<!-- walkthrough -->`` shell blocks, in order) runs top to bottom in one
shell, as a reader would paste it: the blocks are taken from README.md itself, so the test follows every
edit. Only the two ports change, in the script and in a copy of the examples, so that nothing else on this
machine can collide with them."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MARKER = "<!-- walkthrough -->"


def walkthrough_blocks(readme: str) -> list[str]:
    """The shell blocks that directly follow a walkthrough marker, in document order."""
    return re.findall(re.escape(MARKER) + r"\n```sh\n(.*?)\n```", readme, flags=re.S)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_readme_marks_both_walkthrough_blocks() -> None:
    blocks = walkthrough_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) == 2
    assert blocks[0].count("webhook-dsl stand-in") == 1 and "webhook-dsl stand-in" not in blocks[1]


@pytest.mark.skipif(shutil.which("curl") is None, reason="the walkthrough uses curl")
@pytest.mark.slow
def test_the_walkthrough_runs_top_to_bottom_in_one_shell(tmp_path: Path) -> None:
    script = "\n".join(walkthrough_blocks((ROOT / "README.md").read_text(encoding="utf-8")))
    stand_in, service = free_port(), free_port()
    script = script.replace("8765", str(stand_in)).replace("8080", str(service))
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    for trigger in (tmp_path / "examples" / "triggers").glob("*.json"):
        trigger.write_text(trigger.read_text(encoding="utf-8").replace("8765", str(stand_in)), encoding="utf-8")
    (tmp_path / "walkthrough.sh").write_text("set -euo pipefail\n" + script + "\n", encoding="utf-8")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("WEBHOOK_DSL_")}
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    process = subprocess.Popen(
        ["bash", "walkthrough.sh"],
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever the script left running
    assert process.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}"
    # what each part printed: the CLI's calls, then the service's call and its log
    assert '"status": 200' in out or '"status":200' in out
    assert '"trigger":"check_order"' in out.replace(" ", "") and "erp-demo-token" not in out
