"""The parse stage: config text to JSON template tree, and its syntax errors."""

from __future__ import annotations

import pytest

from webhook_dsl import ConfigSyntaxError, compile_webhook
from webhook_dsl.language.parse import MAX_CONFIG_BYTES, MAX_NESTING, parse_config
from webhook_dsl.language.syntax import BareVar, JsonNumber, JsonObject, StringTemplate, Text, VarRef


def _string(node: object) -> StringTemplate:
    assert isinstance(node, JsonObject)
    value = node.members[0].value
    assert isinstance(value, StringTemplate)
    return value


def test_variables_keep_their_position_in_the_file() -> None:
    tree = parse_config('{\n  "a": "x $first y ${second} $images[2]"\n}')
    refs = [p for p in _string(tree).parts if isinstance(p, VarRef)]
    assert [(r.name, r.index, r.braced, r.span.line, r.span.column) for r in refs] == [
        ("first", None, False, 2, 11),
        ("second", None, True, 2, 20),
        ("images", 2, False, 2, 30),
    ]


def test_escapes_are_decoded_and_an_escaped_dollar_is_text() -> None:
    tree = parse_config(r'{"a": "\u0024name \"q\" \\ \n \ud83d\ude00 $$x"}')
    parts = _string(tree).parts
    assert parts == (Text('$name "q" \\ \n 😀 $x', parts[0].span),)


def test_bare_variable_and_exact_numbers() -> None:
    tree = parse_config('{"a": $images, "n": 123456789012345678901234567890.5e-3}')
    assert isinstance(tree, JsonObject)
    bare, number = (m.value for m in tree.members)
    assert isinstance(bare, BareVar) and bare.ref.name == "images"
    assert isinstance(number, JsonNumber) and number.text == "123456789012345678901234567890.5e-3"


@pytest.mark.parametrize(
    ("text", "line", "column", "fragment"),
    [
        ('{"a": 1,}', 1, 9, "no trailing comma"),
        ("{'a': 1}", 1, 2, "double quotes"),
        ('{"a": tru}', 1, 7, "unexpected 't'"),
        ('{"a":\n  1\n  "b": 2}', 3, 3, "expected ','"),
        ('{"a": "x', 1, 9, "end of input"),
        ('{"a": "\\q"}', 1, 8, "invalid escape"),
        ('{"a": "tab\there"}', 1, 11, "control character U+0009"),
        ('{"a": "\\ud800"}', 1, 8, "surrogate"),
        ("", 1, 1, "end of input"),
    ],
)
def test_syntax_errors_say_where_and_what_was_expected(text: str, line: int, column: int, fragment: str) -> None:
    with pytest.raises(ConfigSyntaxError) as caught:
        parse_config(text, "cfg.json")
    first = caught.value.diagnostics[0]
    assert (first.source, first.line, first.column) == ("cfg.json", line, column)
    assert fragment in first.message
    assert str(caught.value).startswith(f"cfg.json:{line}:{column}: ")


def test_several_syntax_errors_are_reported_in_one_pass() -> None:
    text = '{\n  "a": 1\n  "b": [1,,2],\n  "c": \'x\'\n}'
    with pytest.raises(ConfigSyntaxError) as caught:
        parse_config(text)
    lines = [d.line for d in caught.value.diagnostics]
    assert lines[:3] == [3, 3, 4]


def test_error_text_shows_the_line_and_a_caret() -> None:
    with pytest.raises(ConfigSyntaxError) as caught:
        parse_config('{"url": "x",\n "method" "GET"}', "w.json")
    assert str(caught.value).splitlines()[:3] == [
        'w.json:2:11: unexpected string "GET"; expected \':\'',
        '     "method" "GET"}',
        "              ^",
    ]


def test_nesting_and_size_are_bounded() -> None:
    deep = "[" * (MAX_NESTING + 5) + "]" * (MAX_NESTING + 5)
    with pytest.raises(ConfigSyntaxError, match="nesting deeper"):
        parse_config(deep)
    with pytest.raises(ConfigSyntaxError, match="larger than"):
        parse_config('"' + "a" * MAX_CONFIG_BYTES + '"')


def test_mapping_input_is_parsed_as_template_text() -> None:
    plan = compile_webhook({"url": "https://x.example/$id", "method": "GET"})
    assert plan.render({"id": "1 2"}).url == "https://x.example/1%202"
    with pytest.raises(ConfigSyntaxError, match="not JSON data"):
        compile_webhook({"url": object(), "method": "GET"})
