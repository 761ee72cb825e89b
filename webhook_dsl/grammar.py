"""Loads the Lark grammar in ``grammar/`` and builds its parser once per process.

The grammar file is the language's single source of truth. In a source checkout
it is read from ``grammar/`` at the top of the repository; in an installed wheel
it ships as ``webhook_dsl/_grammar/webhook.lark`` (see ``pyproject.toml``).
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from lark import Lark

__all__ = ["GRAMMAR_FILE", "grammar_hash", "grammar_text", "parser"]

_PACKAGE_DIR = Path(__file__).resolve().parent
_CANDIDATES = (
    _PACKAGE_DIR / "_grammar" / "webhook.lark",  # installed wheel
    _PACKAGE_DIR.parent / "grammar" / "webhook.lark",  # source checkout / editable install
)


def _find_grammar() -> Path:
    for path in _CANDIDATES:
        if path.is_file():
            return path
    raise FileNotFoundError(f"webhook.lark not found in any of: {', '.join(map(str, _CANDIDATES))}")


GRAMMAR_FILE = _find_grammar()


@functools.lru_cache(maxsize=1)
def grammar_text() -> str:
    return GRAMMAR_FILE.read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def grammar_hash() -> str:
    """Short digest stamped into compiled plans: a plan from another grammar is refused."""
    return hashlib.sha256(grammar_text().encode("utf-8")).hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def parser() -> Lark:
    """The LALR parser; building it costs milliseconds, so it is built once."""
    return Lark(
        grammar_text(),
        parser="lalr",
        lexer="contextual",
        propagate_positions=True,
        maybe_placeholders=False,
    )
