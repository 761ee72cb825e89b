"""The built wheel carries the grammar and works outside the source tree."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_wheel_installs_in_a_fresh_environment_and_compiles_an_example(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = wheels.glob("webhook_dsl-*.whl")
    env_dir = tmp_path / "env"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    fresh_site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # Install the wheel alone (pip's --target does exactly that), then let the fresh environment
    # see this environment's dependencies through a plain path entry: a path in a .pth file does not
    # run the .pth files found there, so the source checkout (editable install) stays invisible.
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(fresh_site), str(wheel)],
        check=True,
        capture_output=True,
        text=True,
    )
    (fresh_site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    example = ROOT / "examples" / "webhooks" / "analyze_image.json"
    script = (
        "import json, webhook_dsl, webhook_dsl.language.grammar as g\n"
        f"plan = webhook_dsl.compile_file({str(example)!r})\n"
        "r = plan.render({'session.id': 's', 'vision_api_key': 'k', 'images': ['u']})\n"
        "print(json.dumps([webhook_dsl.__file__, str(g.GRAMMAR_FILE), json.loads(r.body)['all_images']]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    result = subprocess.run([str(python), "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    module_file, grammar_file, images = __import__("json").loads(result.stdout)
    assert module_file.startswith(str(fresh_site))
    assert grammar_file == str(fresh_site / "webhook_dsl" / "language" / "webhook.lark")
    assert images == ["u"]
