"""The fast parser agrees exactly with the Lark grammar, or steps aside.

`parse_fast` reads well-formed configs without Lark. The law: whenever it returns a tree, the Lark
path returns the same tree, every span included; and it never accepts text the grammar rejects.
Inputs: generated configs, JSON data dumped in several layouts, mutations of a valid config,
token soup, and arbitrary text.
"""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.test_properties import JSON_DATA, SOUP, config_text, mutated_config
from webhook_dsl import ConfigSyntaxError
from webhook_dsl.language.fastparse import parse_fast
from webhook_dsl.language.parse import MAX_NESTING, SourceText, _parse_with_lark

BUDGET = settings(max_examples=int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "200")), deadline=None)


def agree(text: str) -> bool:
    """True when the fast parser took the text (and then matched Lark exactly)."""
    fast = parse_fast(text, MAX_NESTING)
    try:
        slow = _parse_with_lark(SourceText(text, "t.json"))
    except ConfigSyntaxError:
        assert fast is None, f"fast parser accepted text the grammar rejects: {text!r}"
        return False
    if fast is not None:
        assert fast == slow, text
    return fast is not None


def test_generated_configs_take_the_fast_path_and_agree() -> None:
    """The fast parser earns its keep only if it reads the configs people write: of generated configs (every
    construct of the language, all well-formed), at least 90% must take it, and each one then agree with Lark."""
    taken: list[bool] = []

    @BUDGET
    @given(config_text())
    def check(text: str) -> None:
        taken.append(agree(text))

    check()
    assert sum(taken) >= 0.9 * len(taken), f"the fast parser read {sum(taken)} of {len(taken)}"


@BUDGET
@given(JSON_DATA, st.sampled_from([None, 0, 2]), st.booleans())
def test_json_data_in_any_layout(data: Any, indent: int | None, ascii_only: bool) -> None:
    text = json.dumps(
        {"url": "https://x.example/", "method": "POST", "body": data}, indent=indent, ensure_ascii=ascii_only
    )
    assert agree(text) or "$" in text or "\\" in text or any(ord(c) < 0x20 for c in text)


@BUDGET
@given(st.one_of(mutated_config(), SOUP, st.text()))
@example('{"a": "\\ud83d\\ude00x", "b": "\\ud83d\\ude00", "c": "x\\ud83d\\ude00$y"}')
@example('{"a": $b, "c": ${d}, "e": [$f[0], -0.5e+3, true, false, null]}')
@example("[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1))
@example("[" * MAX_NESTING + "]" * MAX_NESTING)
@example('{"a":1}\n\n ')
@example('{"a": 01}')
@example('{"a": "$$$x${y}$z[1]", "b": "\\u0024x"}')
@example('{"a": "$user-id $é.ç-1 ${a b} ${a\\u0041} $caf\\u00e9 $\\u0035 $5 US$ 1 $", "b": ${2fa}, "c": $x-y[2]}')
@example('{"a": "$a\\u005b0] $a\\u0020b $\\u007bx} $\\ud840\\udc00 $\\ud83d\\ude00"}')
@example('{"a": "${x\\ud800}", "b": "${a\tb}", "c": "${}", "d": "${x", "e": $a\\u0020b}')
def test_mutations_and_noise(text: str) -> None:
    agree(text)


def test_the_examples_take_the_fast_path() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    for path in sorted((root / "examples").rglob("*.json")):
        assert agree(path.read_text()), path
