"""Schema patterns run in linear time (issue 13, M4): no tenant pattern reaches a backtracking engine.

A catastrophic pattern (``^(a+)+$``) against a near-match (``"a" * 40 + "!"``) is answered, and
answered right, for every keyword that runs a pattern; what no linear-time engine can run is refused
when the trigger is compiled, at the pattern's line and column. Hangs are caught by an alarm (a
detector, not a timing assertion: the old code took minutes). The translation is checked against
Python's ``re`` itself: character classes over every code point, and generated patterns against
generated text, on both engines (RE2 for the worded errors, Rust's regex crate for jsonschema_rs).
"""

from __future__ import annotations

import os
import re
import signal
import sys
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import jsonschema_rs
import pytest
import re2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webhook_dsl import ConfigError, compile_trigger
from webhook_dsl.language.patterns import PatternError, linear_pattern, pattern_matches
from webhook_dsl.runtime.trigger import Trigger

MAX_EXAMPLES = int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "200"))
SETTINGS = settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NEAR_MISS = "a" * 40 + "!"


@contextmanager
def no_hang(seconds: float = 5.0) -> Iterator[None]:
    """Fail instead of hanging (Python's ``re`` checks for signals while it backtracks)."""

    def expired(signum: int, frame: Any) -> None:
        raise TimeoutError(f"still matching after {seconds} s: a backtracking engine ran the pattern")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def trigger_with(parameters: dict[str, Any], source: str = "<mapping>") -> Trigger:
    return compile_trigger({
        "name": "t", "description": "d", "parameters": parameters,
        "webhook": {"url": "https://api.example.test/x", "method": "POST", "body": {"a": 1}},
    }, source=source)


# -- catastrophic patterns are answered, and answered right --------------------------------------

CATASTROPHIC = [
    ("^(a+)+$", "a" * 40, NEAR_MISS),
    ("^(a|aa)+$", "a" * 40, NEAR_MISS),
    ("^(a|a?)+$", "a" * 40, NEAR_MISS),
    ("(x+x+)+y", "x" * 40 + "y", "x" * 40),
    ("^(\\w+\\s?)*$", "word " * 10 + "word", "word " * 15 + "!"),
    ("^([a-z0-9]+([._-]?[a-z0-9]+)*)@example\\.com$", "a.b@example.com", "a" * 40 + "@example"),
    ("^(([a-z])+.)+[A-Z]([a-z])+$", "abCdef", "a" * 40),
]


@pytest.mark.parametrize(("pattern", "good", "bad"), CATASTROPHIC)
def test_a_catastrophic_pattern_is_answered_right(pattern: str, good: str, bad: str) -> None:
    trigger = trigger_with({"type": "object", "properties": {"v": {"type": "string", "pattern": pattern}}})
    with no_hang():
        assert trigger.argument_errors({"v": good}) == []
        assert trigger.argument_errors({"v": bad}) == [f"argument 'v': {bad!r} does not match {pattern!r}"]
        assert trigger.argument_errors({"v": bad * 1000}) != []  # linear: a long argument costs little more


KEYWORD_CASES = {
    "additionalProperties": (
        {"type": "object", "patternProperties": {"^(a+)+$": {"type": "integer"}}, "additionalProperties": False},
        {NEAR_MISS: 1},
        [f"{NEAR_MISS!r} does not match any of the regexes: '^(a+)+$'"],
    ),
    "unevaluatedProperties": (
        {"type": "object", "patternProperties": {"^(a+)+$": {"type": "integer"}}, "unevaluatedProperties": False},
        {NEAR_MISS: 1},
        [f"Unevaluated properties are not allowed ({NEAR_MISS!r} was unexpected)"],
    ),
    "patternProperties": (
        {"type": "object", "patternProperties": {"^(a+)+$": {"type": "integer"}}},
        {NEAR_MISS: "x"},
        [],
    ),
    "propertyNames": (
        {"type": "object", "propertyNames": {"pattern": "^(a+)+$"}},
        {NEAR_MISS: 1},
        [f"{NEAR_MISS!r} does not match '^(a+)+$'"],
    ),
    "nested": (
        {"type": "object", "$defs": {"p": {"pattern": "^(a+)+$"}},
         "properties": {"v": {"type": "array", "items": {"anyOf": [{"$ref": "#/$defs/p"}]}}}},
        {"v": [NEAR_MISS]},
        [f"argument 'v/0': {NEAR_MISS!r} is not valid under any of the given schemas"],
    ),
    "not": ({"type": "object", "properties": {"v": {"not": {"pattern": "^(a+)+$"}}}}, {"v": NEAR_MISS}, []),
}


@pytest.mark.parametrize("case", list(KEYWORD_CASES))
def test_every_keyword_that_runs_a_pattern_runs_it_in_linear_time(case: str) -> None:
    parameters, arguments, expected = KEYWORD_CASES[case]
    trigger = trigger_with(parameters)
    with no_hang():
        assert trigger.argument_errors(arguments) == expected


def test_pattern_properties_still_apply_by_pattern() -> None:
    trigger = trigger_with({"type": "object", "patternProperties": {"^n_\\d+$": {"type": "integer"}},
                            "additionalProperties": False})
    assert trigger.argument_errors({"n_1": 1, "n_٣": 2}) == []  # \d is Unicode, as in Python's re
    assert trigger.argument_errors({"n_1": "x"}) == ["argument 'n_1': 'x' is not of type 'integer'"]
    assert trigger.argument_errors({"m": 1}) == ["'m' does not match any of the regexes: '^n_\\\\d+$'"]


def test_an_argument_with_a_lone_surrogate_is_judged_without_an_error() -> None:
    trigger = trigger_with({"type": "object", "properties": {"v": {"type": "string", "pattern": "^a.$"}}})
    assert trigger.argument_errors({"v": "a\ud800"}) == []  # matched as U+FFFD; render refuses it later
    assert trigger.argument_errors({"v": "\ud800"}) != []


# -- what no linear-time engine can run is refused at compile time -------------------------------

REFUSED = [
    ("(a)\\\\1", "backreference"),
    ("(?P<x>a)(?P=x)", "backreference"),
    ("(?=a)a", "lookahead"),
    ("(?!a)b", "negative lookahead"),
    ("(?<=a)b", "lookbehind"),
    ("(?<!a)b", "negative lookbehind"),
    ("(?>a+)b", "atomic group"),
    ("a++b", "possessive repeat"),
    ("(a)?(?(1)b|c)", "conditional"),
    ("a$b", "$ with more pattern after it"),
    ("a{1001}", "repetition"),
]


@pytest.mark.parametrize(("pattern", "what"), REFUSED)
def test_a_pattern_only_a_backtracking_engine_can_run_is_refused_at_its_place(pattern: str, what: str) -> None:
    text = (
        '{"name": "t", "description": "d",\n'
        ' "parameters": {"type": "object", "properties": {\n'
        f'   "a": {{"type": "string", "pattern": "{pattern}"}}}}}},\n'
        ' "webhook": {"url": "https://api.example.test/x", "method": "GET"}}'
    )
    with pytest.raises(ConfigError) as raised:
        compile_trigger(text, source="trig.json")
    [problem] = raised.value.diagnostics
    line = text.splitlines()[2]
    assert (problem.source, problem.line, problem.column) == ("trig.json", 3, line.index(f'"{pattern}"') + 1)
    assert what in problem.message and problem.field == "parameters"
    assert str(raised.value).startswith(f"trig.json:3:{problem.column}: ")


def test_patterns_are_found_wherever_a_schema_can_hold_one() -> None:
    text = """{"name": "t", "description": "d", "parameters": {"type": "object",
  "$defs": {"d": {"pattern": "(?=d)"}},
  "properties": {
    "pattern": {"type": "string", "pattern": "(?=p)"},
    "o": {"type": "object", "patternProperties": {"(?=k)": {"pattern": "(?=v)"}}},
    "l": {"type": "array", "items": {"anyOf": [{"pattern": "(?=i)"}]}},
    "c": {"const": {"pattern": "(?=not a schema)"}, "examples": [{"pattern": "(?=data)"}]}}},
 "webhook": {"url": "https://api.example.test/x", "method": "GET"}}"""
    with pytest.raises(ConfigError) as raised:
        compile_trigger(text, source="t.json")
    found = sorted((d.line, re.search(r"\(\?=(\w)", d.message).group(1)) for d in raised.value.diagnostics)  # type: ignore[union-attr]
    assert found == [(2, "d"), (4, "p"), (5, "k"), (5, "v"), (6, "i")]


def test_a_hand_built_trigger_with_a_refused_pattern_refuses_every_argument() -> None:
    import dataclasses

    good = trigger_with({"type": "object", "properties": {"v": {"type": "string"}}})
    bad = dataclasses.replace(good, parameters={"type": "object", "properties": {"v": {"pattern": "(a)\\1"}}})
    errors = bad.argument_errors({"v": "aa"})
    assert errors and "cannot be checked" in errors[0] and "backreference" in errors[0]


# -- the translation means what Python's re means -----------------------------------------------


def _assigned(point: int) -> bool:
    """Code points Python's Unicode tables know (RE2's and Rust's may be newer); no surrogates."""
    return not 0xD800 <= point <= 0xDFFF and unicodedata.category(chr(point)) != "Cn"


@pytest.fixture(scope="module")
def every_character() -> str:
    return "".join(chr(p) for p in range(sys.maxunicode + 1) if _assigned(p))


@pytest.mark.parametrize("pattern", ["\\d", "\\w", "\\s", "\\D", "\\W", "\\S", ".", "(?s).", "[^\\W\\d_]",
                                     "(?a)\\w", "(?a)\\S", "[\\d\\s-]", "(?i)[k-m]", "(?ai)[k-m]"])
def test_classes_match_what_python_matches_on_every_code_point(pattern: str, every_character: str) -> None:
    expected = re.findall(pattern, every_character)
    options = re2.Options()
    options.never_capture = True
    assert re2.findall(linear_pattern(pattern), every_character, options) == expected
    rust = jsonschema_rs.validator_for({"pattern": linear_pattern(pattern, "rust")},
                                       pattern_options=jsonschema_rs.RegexOptions())
    sample = every_character[::37]  # a code point in 37, all planes: the Rust engine one call each
    assert [c for c in sample if rust.is_valid(c)] == re.findall(pattern, sample)


ALPHABET = "ab-.é٣ \nAB_1\u00a0i\u0130\u0131"  # the last two: Turkish dotted capital and dotless small i
ATOMS = ["a", "b", "i", "-", "\\.", ".", "é", "\\d", "\\w", "\\s", "\\D", "\\W", "\\S", "[a-c]", "[^a]", "[\\w-]",
         "[^\\W\\d_]", "[é٣]", "\\n", "\\x41", "\\u00e9"]


@st.composite
def patterns(draw: st.DrawFn, depth: int = 0) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["atom", "atom", "group", "branch"] if depth < 2 else ["atom"]))
        if kind == "atom":
            part = draw(st.sampled_from(ATOMS))
        elif kind == "group":
            part = draw(st.sampled_from(["(", "(?:", "(?i:"])) + draw(patterns(depth + 1)) + ")"
        else:
            part = "(?:" + draw(patterns(depth + 1)) + "|" + draw(patterns(depth + 1)) + ")"
        part += draw(st.sampled_from(["", "", "*", "+", "?", "{1,3}", "*?", "+?", "{2}"]))
        parts.append(part)
    text = "".join(parts)
    if depth == 0:
        text = draw(st.sampled_from(["", "^", "\\A", "(?i)", "(?s)", "(?m)^", "(?a)"])) + text
        text += draw(st.sampled_from(["", "$", "\\Z"]))
    return text


@SETTINGS
@given(patterns(), st.lists(st.text(alphabet=ALPHABET, max_size=8), min_size=1, max_size=6))
def test_generated_patterns_agree_with_pythons_re_on_both_engines(pattern: str, texts: list[str]) -> None:
    try:
        re2_text, rust_text = linear_pattern(pattern), linear_pattern(pattern, "rust")
    except PatternError:
        return
    assert re2_text is not None
    rust = jsonschema_rs.validator_for({"pattern": rust_text}, pattern_options=jsonschema_rs.RegexOptions())
    for text in texts:
        expected = re.search(pattern, text) is not None
        assert pattern_matches(pattern, text) == expected, (pattern, re2_text, text)
        assert rust.is_valid(text) == expected, (pattern, rust_text, text)


def test_the_ascii_word_boundary_is_the_one_difference_left() -> None:
    """RE2 has no Unicode \\b: a boundary is between ASCII word characters and the rest (as ECMA-262 says)."""
    assert pattern_matches("\\bcat\\b", "a cat.") and not pattern_matches("\\bcat\\b", "bobcat")
    assert pattern_matches("(?a)\\bé", "é") == (re.search("(?a)\\bé", "é") is not None)
