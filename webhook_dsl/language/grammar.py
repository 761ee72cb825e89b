"""Loads the Lark grammar, ``webhook.lark`` beside this module, and builds its parser once per process.

The grammar file is the language's single source of truth: the parser is built from it, and a plan
records its hash (``grammar_hash``), so a plan made by another grammar is refused when loaded.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from lark import Lark

__all__ = ["GRAMMAR_FILE", "grammar_hash", "grammar_text", "parser"]

GRAMMAR_FILE = Path(__file__).resolve().parent / "webhook.lark"


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
