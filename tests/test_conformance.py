"""Runs the conformance vectors in specs/conformance/: the language spec as data."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

import webhook_dsl
from webhook_dsl import DiagnosticsError

ROOT = Path(__file__).resolve().parent.parent
VECTOR_FILES = sorted((ROOT / "specs" / "conformance").glob("*.json"))


def _cases() -> list[Any]:
    params = []
    for path in VECTOR_FILES:
        for case in json.loads(path.read_text(encoding="utf-8"))["cases"]:
            params.append(pytest.param(case, id=f"{path.stem}: {case['name']}"))
    return params


def _config(case: dict[str, Any]) -> webhook_dsl.WebhookPlan:
    if "config_file" in case:
        path = case["config_file"]
        return webhook_dsl.compile_webhook((ROOT / path).read_text(encoding="utf-8"), source=path)
    return webhook_dsl.compile_webhook(case["config"], source="case.json")


def _variables(case: dict[str, Any]) -> dict[str, Any]:
    if "variables_file" in case:
        loaded: dict[str, Any] = json.loads((ROOT / case["variables_file"]).read_text(encoding="utf-8"))
        return loaded
    return dict(case["variables"])


def test_every_vector_file_is_loaded() -> None:
    """Every file in specs/conformance/ is a vector file the cases are read from, with cases of its own, and
    the files the language spec names are among them: a vector cannot sit there unrun."""
    folder = ROOT / "specs" / "conformance"
    assert sorted(p for p in folder.rglob("*") if p.is_file()) == VECTOR_FILES
    named = set(re.findall(r"`(\w+\.json)`", _section_8()))
    assert named and named <= {p.name for p in VECTOR_FILES}
    counts = {p.name: len(json.loads(p.read_text(encoding="utf-8"))["cases"]) for p in VECTOR_FILES}
    assert all(counts.values()), counts
    ids = [param.id for param in _cases()]
    assert len(ids) == sum(counts.values()) == len(set(ids))  # one test per case, none hidden by a twin name


def _section_8() -> str:
    """Section 8 of specs/language.md: the conformance vectors."""
    text = (ROOT / "specs" / "language.md").read_text(encoding="utf-8")
    return text.split("\n## 8. Conformance vectors", 1)[1].split("\n## ", 1)[0]


def _case_format() -> tuple[list[set[str]], set[str]]:
    """The case format as specs/language.md section 8 writes it: ``{"name", "config" | "config_file", ...,
    "lenient"?, ...}``: the keys of which a case holds exactly one, and the optional keys."""
    [form] = re.findall(r'`\{("name".*?)\}`', _section_8())
    required, optional = [], set()
    for item in form.split(", "):
        names = set(re.findall(r'"(\w+)"', item))
        if item.endswith("?"):
            optional |= names
        else:
            required.append(names)
    return required, optional


CASE_FORMAT = _case_format()
REQUEST_PARTS = set(webhook_dsl.compile_webhook({"url": "https://x.example/", "method": "GET"}).render({}).to_dict())


@pytest.mark.parametrize("case", _cases())
def test_vector_is_well_formed(case: dict[str, Any]) -> None:
    """A case holds the keys the spec gives and asserts something: a misspelt key ("expected", "lenent")
    would otherwise be ignored, and an empty "expect" or a "contains" of "" would check nothing."""
    required, optional = CASE_FORMAT
    assert {"name", "config", "config_file", "lenient", "expect", "error"} <= set().union(*required, optional)
    known = set().union(*required, optional)
    assert set(case) <= known, f"unknown keys {sorted(set(case) - known)}"
    for one_of in required:
        assert len(one_of & set(case)) == 1, f"exactly one of {sorted(one_of)}"
    assert isinstance(case["name"], str) and case["name"].strip()
    assert isinstance(case.get("lenient", False), bool)
    for key in ("config_file", "variables_file"):
        if key in case:
            assert (ROOT / case[key]).is_file(), case[key]
    if "expect" in case:
        assert case["expect"] and set(case["expect"]) <= REQUEST_PARTS, case["expect"]
        return
    error = case["error"]
    assert set(error) == {"class", "diagnostics"}
    error_class = getattr(webhook_dsl, error["class"], None)
    assert isinstance(error_class, type) and issubclass(error_class, DiagnosticsError), error["class"]
    assert error["diagnostics"], "an error case names at least one diagnostic"
    for diagnostic in error["diagnostics"]:
        assert set(diagnostic) == {"line", "column", "contains"}, diagnostic
        assert all(type(diagnostic[k]) is int and diagnostic[k] >= 1 for k in ("line", "column")), diagnostic
        assert isinstance(diagnostic["contains"], str) and diagnostic["contains"].strip(), diagnostic


@pytest.mark.parametrize("case", _cases())
def test_vector(case: dict[str, Any]) -> None:
    lenient = bool(case.get("lenient", False))
    if "error" in case:
        expected = case["error"]
        with pytest.raises(DiagnosticsError) as caught:
            _config(case).render(_variables(case), lenient=lenient)
        error = caught.value
        assert type(error).__name__ == expected["class"], str(error)
        got = [(d.line, d.column, d.message) for d in error.diagnostics]
        want = expected["diagnostics"]
        assert len(got) == len(want), str(error)
        for (line, column, message), spec in zip(got, want, strict=True):
            assert (line, column) == (spec["line"], spec["column"]), str(error)
            assert spec["contains"] in message, str(error)
        return
    request = _config(case).render(_variables(case), lenient=lenient).to_dict()
    for key, value in case["expect"].items():
        assert request[key] == value, f"{key}: {request[key]!r}"
