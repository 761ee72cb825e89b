"""The public API is small and pinned: a change to it is a deliberate change to this test.

Also pinned here: the package's import structure (no cycle, stages depending one way) and what importing
it costs (compiling and rendering a config loads no HTTP client, schema validator or service stack).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

import webhook_dsl

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "webhook_dsl"

PUBLIC_NAMES = [
    "CallResult",
    "ConfigError",
    "ConfigSyntaxError",
    "Diagnostic",
    "DiagnosticsError",
    "PlanFormatError",
    "RenderError",
    "RenderedRequest",
    "Runtime",
    "RuntimeSettings",
    "SQLiteStore",
    "Session",
    "SessionNotFound",
    "Store",
    "Trigger",
    "TriggerResult",
    "WebhookDslError",
    "WebhookPlan",
    "__version__",
    "call_trigger_sync",
    "compile_file",
    "compile_trigger",
    "compile_webhook",
    "dump_plans",
    "load_plans",
    "load_trigger",
    "run_tool_calls",  # running a model's tool calls (issue 16): added on purpose
    "tool_definitions",
]


def test_public_names_are_pinned() -> None:
    assert len(PUBLIC_NAMES) == 28
    assert sorted(webhook_dsl.__all__) == PUBLIC_NAMES  # no name missing, none added, none twice
    for name in PUBLIC_NAMES:  # getattr: some names are loaded on first use (module __getattr__)
        assert getattr(webhook_dsl, name, None) is not None, name


def test_every_public_name_imports_in_a_fresh_interpreter() -> None:
    """``from webhook_dsl import NAME`` for each name, and ``import *``, where nothing was imported before:
    a lazily loaded name that points at the wrong module fails here even if another test loaded it."""
    script = (
        "import json, sys\n"
        "names = json.loads(sys.argv[1])\n"
        "for name in names:\n"
        "    exec(f'from webhook_dsl import {name}', {})\n"
        "star = {}\n"
        "exec('from webhook_dsl import *', star)\n"
        "print(json.dumps(sorted(n for n in star if n != '__builtins__')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(PUBLIC_NAMES)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == PUBLIC_NAMES


def test_error_hierarchy() -> None:
    assert issubclass(webhook_dsl.ConfigSyntaxError, webhook_dsl.ConfigError)
    assert issubclass(webhook_dsl.ConfigError, ValueError)
    assert issubclass(webhook_dsl.RenderError, webhook_dsl.WebhookDslError)
    assert issubclass(webhook_dsl.PlanFormatError, ValueError)


# -- the import graph, read from the source -------------------------------------------------------------


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute name ``from <node.module> import ...`` refers to, inside ``module``."""
    if node.level == 0:
        return node.module or ""
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _imported(module: str) -> set[str]:
    """Every module of the package that ``module`` imports, at any level: top, functions, TYPE_CHECKING."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text(encoding="utf-8"))):
        targets: Iterable[str]
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node)
            # `from pkg import name` imports the submodule pkg.name when there is one, else pkg itself.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # `import webhook_dsl.x.y` of a name inside a module
                target = target.rpartition(".")[0]
            if target.startswith("webhook_dsl") and target != module:
                found.add(target)
    return found


def _literal_imports(module: str) -> set[str]:
    """Modules named as text to import later: ``importlib.import_module("...")`` and lazy maps whose values are
    module names (``_LAZY = {"compile_webhook": ".language.compiler"}``); relative ones as ``__name__`` reads."""
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text(encoding="utf-8"))):
        texts: list[ast.expr] = []
        if isinstance(node, ast.Dict):
            texts = [value for value in node.values if value is not None]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            texts = node.args[:1]
        for text in texts:
            if isinstance(text, ast.Constant) and isinstance(text.value, str):
                name = package + text.value if text.value.startswith(".") else text.value
                if name in MODULES and name != module:
                    found.add(name)
    return found


GRAPH = {module: _imported(module) | _literal_imports(module) for module in MODULES}


def _stage(module: str) -> str:
    """``language``, ``storage``, ``runtime``, ``service`` for the subpackages; the module's own name for a
    top-level module (``errors``, ``_version``, ``cli``, ``demo``, ``__main__``); ``webhook_dsl`` for the root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else module


#: What each stage may import from the package besides itself. None: anything but what ``FORBIDDEN`` says.
ALLOWED: dict[str, set[str] | None] = {
    "errors": set(),
    "_version": set(),
    "language": {"errors", "_version"},
    "storage": {"language", "errors", "_version"},
    "runtime": {"language", "storage", "errors", "_version"},
    "service": None,
}
FORBIDDEN = {"service": {"cli", "__main__"}}


def test_the_graph_is_read_from_the_source() -> None:
    """The reader of the source sees the edges it must (else the tests below would pass on an empty graph)."""
    assert {"webhook_dsl.language", "webhook_dsl.runtime", "webhook_dsl.storage", "webhook_dsl.service"} <= set(GRAPH)
    assert "webhook_dsl.errors" in GRAPH["webhook_dsl"]
    assert "webhook_dsl.language.compiler" in GRAPH["webhook_dsl"]  # lazily, through _LAZY and TYPE_CHECKING
    assert any(_stage(t) == "language" for t in GRAPH["webhook_dsl.runtime.trigger"])
    assert any(_stage(t) in ("runtime", "storage") for t in GRAPH["webhook_dsl.cli"])
    assert sum(len(targets) for targets in GRAPH.values()) > 2 * len(GRAPH)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module, sorted (Tarjan): each holds a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def test_cycle_finder_finds_cycles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": {"d"}}) == [["a", "b", "c"], ["d", "e"]]
    assert _cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_no_import_cycle() -> None:
    """Among the package's own modules; an import inside a function counts too (it runs, later)."""
    edges = {
        " <-> ".join(component): sorted(f"{a} -> {b}" for a in component for b in GRAPH[a] if b in component)
        for component in _cycles(GRAPH)
    }
    assert edges == {}, "\n".join(f"cycle {name}: {', '.join(inside)}" for name, inside in edges.items())


@pytest.mark.parametrize("stage", sorted(ALLOWED))
def test_stages_depend_one_way(stage: str) -> None:
    allowed, forbidden = ALLOWED[stage], FORBIDDEN.get(stage, set())
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        if _stage(module) == stage
        for target in targets
        if _stage(target) != stage
        and (_stage(target) in forbidden if allowed is None else _stage(target) not in allowed)
    )
    assert wrong == [], "\n".join(wrong)


# -- what importing costs -------------------------------------------------------------------------------

HEAVY = ["httpx", "pyreqwest", "jsonschema_rs", "starlette", "uvicorn", "asyncpg", "aiohttp", "jinja2"]


def test_compiling_and_rendering_imports_no_client_validator_or_service() -> None:
    script = (
        "import json, sys\n"
        "import webhook_dsl\n"
        "plan = webhook_dsl.compile_webhook({\n"
        "    'url': 'https://erp.example.com/api/orders/$order_number',\n"
        "    'method': 'POST',\n"
        "    'headers': [{'key': 'Authorization', 'value': 'Bearer $erp_token'}],\n"
        "    'body': {'order': '$order_number', 'images': '$images'},\n"
        "})\n"
        "request = plan.render({'order_number': 'A 1', 'erp_token': 't0k', 'images': ['u']})\n"
        "assert request.url.endswith('/A%201'), request.url\n"
        "heavy = json.loads(sys.argv[1])\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(HEAVY)], capture_output=True, text=True, check=False, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
