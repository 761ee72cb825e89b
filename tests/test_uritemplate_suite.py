"""RFC 6570 conformance, Level 1: our URL path/query encoding against the uritemplate-test suite.

A value substituted into a URL path segment or query is encoded exactly like an
RFC 6570 *simple string expansion* ``{var}``: every character outside RFC 3986
unreserved is percent-encoded as UTF-8 with upper-case hex. So every suite case
whose template uses only ``{var}`` expressions, with string variables, must
expand identically once written in our syntax (``{var}`` -> ``${var}``) and
placed in the path (``https://example.com/t/...``) or in a query value
(``https://example.com/t?q=...``). Every other case is skipped with its reason,
at collection time, so ``-ra`` lists what was skipped and why.

Data: github.com/uri-templates/uritemplate-test (Apache-2.0), kept in
``tests/data/uritemplate-test`` (a copy of the public suite; override: ``URITEMPLATE_TEST_DIR``).
"""

from __future__ import annotations

import collections
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from webhook_dsl import compile_webhook

ROOT = Path(__file__).resolve().parent.parent
# A copy of the suite's data ships in tests/data (Apache-2.0, see its LICENSE and SOURCE), so CI on a
# fresh machine runs it; URITEMPLATE_TEST_DIR points at another checkout of the suite.
SUITE_DIR = Path(os.environ.get("URITEMPLATE_TEST_DIR", ROOT / "tests" / "data" / "uritemplate-test"))
# spec-examples.json too: the README says it and spec-examples-by-section.json only partly overlap.
SUITE_FILES = ("spec-examples.json", "spec-examples-by-section.json", "extended-tests.json", "negative-tests.json")
MIN_RAN = 20  # 13 distinct cases x 2 placements run today

EXPRESSION = re.compile(r"\{([^{}]*)\}")
OUR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")  # our grammar's variable name
PCT_OK = re.compile(r"%[0-9A-Fa-f]{2}")
# RFC 3986 pchar = unreserved / pct-encoded / sub-delims / ":" / "@"; a path may add "/", a query "/" and "?".
# '$' is a sub-delim, but in our syntax a literal '$' must be written '$$'.
PATH_LITERAL = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/]*")
QUERY_LITERAL = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?]*")
PLACEMENTS = {
    "path": ("https://example.com/t/", PATH_LITERAL),
    "query": ("https://example.com/t?q=", QUERY_LITERAL),
}


def _skip_reason(template: str, expected: Any, variables: dict[str, Any], literal_ok: re.Pattern[str]) -> str | None:
    """Why a suite case is not a Level-1 string case we can express, or None if it is."""
    if expected is False:
        return "negative case (RFC says expansion must fail)"
    if EXPRESSION.sub("", template).count("{") or EXPRESSION.sub("", template).count("}"):
        return "malformed braces"
    expressions = EXPRESSION.findall(template)
    if not expressions:
        return "no expression"
    for expression in expressions:
        if expression[:1] in "+#./;?&=,!@|":
            return "operator expression (Level 2+)"
        if "," in expression:
            return "variable list {a,b} (Level 3)"
        if expression.endswith("*"):
            return "explode modifier * (Level 4)"
        if ":" in expression:
            return "prefix modifier :N (Level 4)"
        if not OUR_NAME.fullmatch(expression):
            return "variable name not expressible in our syntax"
        if expression not in variables:
            return "undefined variable"
        value = variables[expression]
        if value is None:
            return "null variable"
        if isinstance(value, list):
            return "list variable"
        if isinstance(value, dict):
            return "object variable"
        if not isinstance(value, str):
            return "non-string variable"
    for literal in EXPRESSION.split(template)[::2]:  # text outside expressions
        if not literal_ok.fullmatch(PCT_OK.sub("", literal)):
            return "literal outside expressions not allowed in our URL at this place"
    return None


def _our_template(template: str) -> str:
    """RFC 6570 Level 1 -> our syntax: '$' in literals doubled, {var} -> ${var}."""
    out = []
    for i, piece in enumerate(EXPRESSION.split(template)):
        out.append("${" + piece + "}" if i % 2 else piece.replace("$", "$$"))
    return "".join(out)


def _collect() -> tuple[list[Any], collections.Counter[str]]:
    params = []
    counts: collections.Counter[str] = collections.Counter()
    if not SUITE_DIR.is_dir():
        return [pytest.param(None, None, None, None, marks=pytest.mark.skip(reason=f"no suite at {SUITE_DIR}"),
                             id="missing-suite")], counts
    for file_name in SUITE_FILES:
        path = SUITE_DIR / file_name
        groups = json.loads(path.read_text(encoding="utf-8"))
        for group_name, group in groups.items():
            variables = group.get("variables", {})
            for number, (template, expected) in enumerate(group["testcases"]):
                for placement, (prefix, literal_ok) in PLACEMENTS.items():
                    case_id = f"{file_name.removesuffix('.json')}/{group_name}/{number}/{placement}/{template}"
                    reason = _skip_reason(template, expected, variables, literal_ok)
                    counts[reason or "ran"] += 1
                    used = {name: variables[name] for name in EXPRESSION.findall(template) if name in variables}
                    marks = [pytest.mark.skip(reason=f"uritemplate-test: {reason}")] if reason else []
                    params.append(pytest.param(prefix, template, used, expected, marks=marks, id=case_id))
    return params, counts


CASES, COUNTS = _collect()


@pytest.mark.parametrize(("prefix", "template", "variables", "expected"), CASES)
def test_level1_simple_string_expansion(prefix: str, template: str, variables: dict[str, str], expected: Any) -> None:
    url_template = prefix + _our_template(template)
    plan = compile_webhook({"url": url_template, "method": "GET"})
    url = plan.render(variables).url
    assert url.startswith(prefix)
    expanded = url[len(prefix):]
    acceptable = expected if isinstance(expected, list) else [expected]
    assert expanded in acceptable, f"{template!r} -> {url_template!r} rendered {expanded!r}, want {acceptable!r}"


def test_enough_suite_cases_ran() -> None:
    """Guard against a suite that silently runs nothing (moved data, stricter filters...)."""
    assert SUITE_DIR.is_dir(), f"no suite at {SUITE_DIR}"
    summary = ", ".join(f"{reason}: {n}" for reason, n in sorted(COUNTS.items()))
    print(f"uritemplate-test cases (each counted once per placement: path, query): {summary}")
    assert COUNTS["ran"] >= MIN_RAN, summary
