"""Large and deep plans: only our own errors escape compile and render, and the generated renderer agrees with
the careful one however many references a string holds (a chain of ``+`` once overflowed the compiler)."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webhook_dsl import WebhookDslError, compile_webhook
from webhook_dsl.language.codegen import Fallback, generate_render_function
from webhook_dsl.language.encode import ValueProblem

MAX_EXAMPLES = max(8, int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "200")) // 30)  # each example is large


def nested(depth: int, leaf: Any) -> Any:
    for level in range(depth):
        leaf = {"k": leaf} if level % 2 else [leaf]
    return leaf


@st.composite
def large_configs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    count = draw(st.sampled_from([1, 33, 500, 2_000, 10_000]))
    names = [f"v{i % draw(st.integers(1, 50))}" for i in range(count)]
    separator = draw(st.sampled_from(["", " ", "/", "-"]))
    text = separator.join(f"${name}" for name in names)
    where = draw(st.sampled_from(["body", "path", "query", "header", "headers"]))
    config: dict[str, Any] = {"url": "https://api.example.com/x", "method": "POST"}
    if where == "body":
        config["body"] = nested(draw(st.integers(0, 70)), text)
    elif where == "path":
        config["url"] = "https://api.example.com/" + text
    elif where == "query":
        config["url"] = "https://api.example.com/x?q=" + text
    elif where == "header":
        config["headers"] = [{"key": "X-Big", "value": text}]
    else:
        config["headers"] = [{"key": f"X-{i}", "value": f"${name}"} for i, name in enumerate(names[:2000])]
    values = draw(st.sampled_from(["a", "é/?&", "", "x" * 20]))
    variables: dict[str, Any] = {f"v{i}": values for i in range(50)}
    if draw(st.booleans()):
        variables.pop("v0")  # a missing variable: a RenderError naming it
    return config, variables


@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(large_configs())
def test_only_our_errors_escape_and_both_renderers_agree(case: tuple[dict[str, Any], dict[str, Any]]) -> None:
    config, variables = case
    try:
        plan = compile_webhook(config)
    except WebhookDslError:
        return
    fast = generate_render_function(plan)  # must compile, whatever the size
    try:
        careful = plan.render_careful(variables)
    except WebhookDslError:
        careful = None
    try:
        public = plan.render(variables)
    except WebhookDslError:
        public = None
    assert public == careful
    if careful is not None:
        try:  # the generated function answers, or misses (a shorter name matched) and leaves it to the careful one
            answer = fast(variables)
        except (Fallback, ValueProblem):
            return
        assert answer == careful


def test_ten_thousand_references_in_one_string_render_on_the_generated_path() -> None:
    text = " ".join(f"$v{i}" for i in range(10_000))
    plan = compile_webhook({"url": "https://api.example.com/x", "method": "POST", "body": {"a": text}})
    variables = {f"v{i}": str(i) for i in range(10_000)}
    expected = plan.render_careful(variables)
    assert generate_render_function(plan)(variables) == expected == plan.render(variables)
