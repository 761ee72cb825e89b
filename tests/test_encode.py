"""Per-context encoders, checked against the RFC rules they cite."""

from __future__ import annotations

import math

import pytest

from webhook_dsl.language.encode import (
    ValueProblem,
    check_header_name,
    check_header_value,
    check_host,
    check_whole_url,
    json_value,
    percent_encode,
    to_text,
)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("x", "x"),
        (True, "true"),
        (False, "false"),
        (0, "0"),
        (-12, "-12"),
        (2**80, str(2**80)),
        (1.5, "1.5"),
        (None, ""),
        ([1, "a"], '[1,"a"]'),
        ({"k": None}, '{"k":null}'),
    ],
)
def test_to_text(value: object, text: str) -> None:
    assert to_text(value) == text


@pytest.mark.parametrize(
    "value", [math.nan, math.inf, -math.inf, [1, math.nan], {"a": {"b": math.inf}}, object(), b"x"]
)
def test_values_without_json_text_are_refused(value: object) -> None:
    with pytest.raises(ValueProblem):
        to_text(value)


def test_json_value_refuses_deep_nesting_and_non_string_keys() -> None:
    deep: list[object] = []
    for _ in range(100):
        deep = [deep]
    with pytest.raises(ValueProblem, match="deeper"):
        json_value(deep)
    with pytest.raises(ValueProblem, match="key"):
        json_value({1: "a"})
    assert json_value([2**70, "é"]) == f'[{2**70},"é"]'.encode()


def test_percent_encoding_is_rfc3986_unreserved_only() -> None:
    unreserved = "ABCxyz019-._~"
    assert percent_encode(unreserved) == unreserved
    for char in "/?#[]@!$&'()*+,;=% \"<>\\^`{|}":
        assert percent_encode(char) == "%" + format(ord(char), "02X")
    assert percent_encode("é€😀") == "%C3%A9%E2%82%AC%F0%9F%98%80"
    with pytest.raises(ValueProblem):
        percent_encode("\ud800")


@pytest.mark.parametrize("value", ["a\rb", "a\nb", "\x00", "\x1b[31m", "\x7f", "\x0b"])
def test_header_values_refuse_controls(value: str) -> None:
    with pytest.raises(ValueProblem, match="control character"):
        check_header_value(value)


def test_header_values_allow_tab_and_non_ascii() -> None:
    assert check_header_value("a\tb é \u2028") == "a\tb é \u2028"


def test_header_names() -> None:
    assert check_header_name("X-Api_Key.1") == "X-Api_Key.1"
    for bad in ("", "a b", "a:b", "é", "Content-Length", "HOST"):
        with pytest.raises(ValueProblem):
            check_header_name(bad)


def test_hosts() -> None:
    for good in ("a", "api.example.com", "x-1.example.", "127.0.0.1"):
        assert check_host(good) == good
    for bad in ("", "a/b", "a@b", "a b", "-a.com", "a..b", "é.com", "a" * 64 + ".com", "a:1"):
        with pytest.raises(ValueProblem):
            check_host(bad)


def test_whole_urls() -> None:
    assert check_whole_url("https://h.example/p?q=1#f") == "https://h.example/p?q=1#f"
    assert check_whole_url("http://[::1]:8080/") == "http://[::1]:8080/"
    for bad in (
        "ftp://h/",
        "//h/p",
        "https://u:p@h/",
        "https:///p",
        "https://h/a b",
        "https://h:99999/",
        "javascript:alert(1)",
        "https://h/\r\n",
    ):
        with pytest.raises(ValueProblem):
            check_whole_url(bad)


def test_integers_beyond_pythons_text_limit_are_render_errors() -> None:
    """Regression (found by the property tests): 10**4300 raised a bare ValueError."""
    with pytest.raises(ValueProblem, match="too large"):
        to_text(10**4300)
    with pytest.raises(ValueProblem, match="too large"):
        json_value([10**4300])
