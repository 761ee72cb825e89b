"""What a core install costs: disk over an empty venv, and time to import and to compile and render one config.

    python benchmarks/footprint.py                 # core install; prints a table, writes results/footprint.json
    python benchmarks/footprint.py --extras service,postgres

It makes two fresh venvs in a temporary directory: one empty (the baseline: pip and what ``venv`` puts
there) and one with this checkout installed (``pip install .``, or ``.[EXTRAS]``). The install's size is
the difference of their ``site-packages``. Then, in the installed venv, in fresh processes (median of
``--repeats``): ``import webhook_dsl``; ``compile_webhook(...).render(...)`` including its imports; and the
modules that this pulls in, which must include no HTTP client, no service stack and no jsonschema-rs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import venv
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: Modules a compile-only user must not pay for.
HEAVY = ("httpx", "pyreqwest", "jsonschema_rs", "jsonschema", "starlette", "uvicorn", "asyncpg", "aiohttp", "jinja2")

_IMPORT = "import time; t = time.perf_counter(); import webhook_dsl; print((time.perf_counter() - t) * 1000)"
_COMPILE = """
import json, sys, time
t = time.perf_counter()
import webhook_dsl
plan = webhook_dsl.compile_webhook('''{
    "url": "https://erp.example.com/api/orders/$order_number", "method": "POST",
    "headers": [{"key": "Authorization", "value": "Bearer $erp_token"}],
    "body": {"order": "$order_number", "images": $images}
}''')
plan.render({"order_number": "A-1", "erp_token": "t", "images": ["u"]})
print(json.dumps({"ms": (time.perf_counter() - t) * 1000, "heavy": [m for m in HEAVY if m in sys.modules]}))
"""


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _site_packages(env: Path) -> Path:
    return next((env / "lib").glob("python*/site-packages"))


def _run(python: Path, code: str) -> str:
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd="/", check=True)
    return result.stdout.strip()


def measure(extras: str, repeats: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        empty, installed = Path(tmp) / "empty", Path(tmp) / "installed"
        venv.create(empty, with_pip=True)
        venv.create(installed, with_pip=True)
        python = installed / "bin" / "python"
        target = f"{ROOT}[{extras}]" if extras else str(ROOT)
        subprocess.run([str(python), "-m", "pip", "install", "-q", target], check=True)
        size = _size(_site_packages(installed)) - _size(_site_packages(empty))
        imports = [float(_run(python, _IMPORT)) for _ in range(repeats)]
        compiles = [json.loads(_run(python, f"HEAVY = {HEAVY!r}\n" + _COMPILE)) for _ in range(repeats)]
        heavy = sorted({m for c in compiles for m in c["heavy"]})
        check = subprocess.run(
            [str(installed / "bin" / "webhook-dsl"), "check", *map(str, sorted((ROOT / "examples").glob("*/*.json")))],
            capture_output=True,
            text=True,
        )
    return {
        "extras": extras or "core",
        "install_mb_over_empty_venv": round(size / 1e6, 1),
        "import_webhook_dsl_ms": round(statistics.median(imports), 1),
        "compile_and_render_with_imports_ms": round(statistics.median(c["ms"] for c in compiles), 1),
        "heavy_modules_imported_by_compile_and_render": heavy,
        "webhook_dsl_check_examples_exit_status": check.returncode,
        **({"webhook_dsl_check_stderr_tail": check.stderr.strip().splitlines()[-3:]} if check.returncode else {}),
        "python": sys.version.split()[0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--extras", default="", help="extras to install, e.g. service,postgres (default: none)")
    parser.add_argument("--repeats", type=int, default=7, help="fresh processes per timing (default 7)")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "footprint.json"), metavar="FILE")
    args = parser.parse_args()
    figures = measure(args.extras, args.repeats)
    for key, value in figures.items():
        print(f"{key:48} {value}")
    Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    heavy = figures["heavy_modules_imported_by_compile_and_render"]
    return 1 if heavy or figures["webhook_dsl_check_examples_exit_status"] else 0


if __name__ == "__main__":
    sys.exit(main())
