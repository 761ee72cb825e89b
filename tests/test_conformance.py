"""Runs the conformance vectors in specs/conformance/: the language spec as data."""

from __future__ import annotations

import json
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


def test_vectors_exist() -> None:
    assert len(_cases()) >= 40


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
