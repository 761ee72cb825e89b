"""Property-based tests (Hypothesis) for the laws webhook-dsl promises.

Every law is checked against an *independent* reference written here (a naive
string-replace substituter, an RFC 3986 percent-encoder, a control-character
predicate, ``json``/``urllib`` decoding), never against webhook_dsl's own code.
``json``/``orjson`` are used only to build config text and to decode results.

The number of examples per test is ``HYPOTHESIS_MAX_EXAMPLES`` (default 200).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import string
import sys
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import webhook_dsl
from webhook_dsl import ConfigError, PlanFormatError, RenderError, compile_webhook, dump_plans, load_plans
from webhook_dsl.language.codegen import Fallback
from webhook_dsl.language.encode import ValueProblem
from webhook_dsl.language.syntax import Context

MAX_EXAMPLES = int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "200"))
SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

# --- independent references ----------------------------------------------------------

UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
# The characters a header value may not carry (tab, 0x09, is allowed).
HEADER_CONTROLS = "".join(chr(c) for c in [*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F])
TCHAR_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 section 5.6.2
BAD_PERCENT = re.compile(r"%(?![0-9A-F]{2})")  # a '%' not followed by two UPPER-case hex digits


def ref_percent(text: str) -> str:
    """RFC 3986 section 2.1/2.3: every char outside unreserved as UTF-8 %XX, upper-case hex."""
    return "".join(c if c in UNRESERVED else "".join(f"%{b:02X}" for b in c.encode("utf-8")) for c in text)


def ref_text(value: Any) -> str:
    """Text of a value in a string context, per the language docs: str as is, None as '', the rest as compact JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def naive(text: str, variables: dict[str, str]) -> str:
    """Naive reference for longest match: replace ``$name`` longest name first.

    Two refinements over a plain chained ``str.replace``: ``${name}`` (exact, the
    braces delimit it) is replaced too; and each reference is first replaced by
    a private-use sentinel, the sentinels by the values at the very end. A
    chained replace could otherwise build a *new* ``$name`` out of a kept ``$`` +
    run and an inserted value (``$a$cc`` with ``cc="b"`` and ``ab`` defined gives
    "Y" instead of "Xb" when ``cc`` is replaced before ``ab``), i.e. re-scan
    substituted text, which the law forbids.
    """
    sentinels = {}
    for i, name in enumerate(sorted(variables, key=len, reverse=True)):
        sentinel = chr(0xF0000 + i)
        sentinels[sentinel] = variables[name]
        text = text.replace("${" + name + "}", sentinel)
    for i, name in enumerate(sorted(variables, key=len, reverse=True)):
        text = text.replace("$" + name, chr(0xF0000 + i))
    for sentinel, value in sentinels.items():
        text = text.replace(sentinel, value)
    return text


def strict_json(body: bytes | None) -> Any:
    """Decode a body as strict UTF-8 and strict RFC 8259 JSON (no NaN/Infinity tokens)."""
    assert body is not None
    text = body.decode("utf-8")  # strict: no encoded surrogates

    def refuse(token: str) -> Any:
        raise AssertionError(f"non-JSON constant {token} in body")

    return json.loads(text, parse_constant=refuse)


def same(a: Any, b: Any) -> bool:
    """Equality that also checks types (so 1 != 1.0 != True) all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float):
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    return bool(a == b)


def outcome(render: Any, variables: Any, **kw: Any) -> tuple[str, Any]:
    """A render's result or its RenderError's diagnostics, comparable with ==."""
    try:
        return ("ok", render(variables, **kw))
    except RenderError as error:
        return ("error", tuple((d.message, d.line, d.column, d.field, d.variable) for d in error.diagnostics))


def header(request: webhook_dsl.RenderedRequest, name: str) -> str:
    values = [v for n, v in request.headers if n == name]
    assert len(values) == 1, request.headers
    return values[0]


# --- shared strategies ------------------------------------------------------------------

# Any Unicode text without lone surrogates (Hypothesis' default alphabet), plus hand-picked trouble.
TRICKY = ['"', "\\", "/", "%", "?", "#", "&", "=", "+", " ", "\t", "\r", "\n", "\x00", "\x1f", "\x7f",
          "\x85", "\u2028", "\u2029", "\ufeff", "é", "€", "😀", "$", "${", "$$", "%24", "%2F", ".", ".."]
ANY_TEXT = st.lists(st.one_of(st.characters(exclude_categories=["Cs"]), st.sampled_from(TRICKY)),
                    max_size=10).map("".join)

JSON_DATA = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63 - 3, max_value=2**64 + 3)
    | st.integers(min_value=-(2**64) - 3, max_value=-(2**63) + 3)
    | st.integers(min_value=-(10**60), max_value=10**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | ANY_TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(ANY_TEXT, children, max_size=4),
    max_leaves=15,
)


# =========================================================================================
# 1. Longest match equals the naive longest-name-first replacement
# =========================================================================================

# Name characters: ASCII and non-ASCII letters, `_`, digits (ASCII and Arabic-Indic) and `-`. A segment
# starts with a letter or `_`. 'z' is never in a defined name (the undefined references start with it).
_START = "ab_éç名"
_SEG = st.builds(lambda head, tail: head + tail, st.sampled_from(_START), st.text("ab_1-é٣", max_size=2))
DEFINED_NAME = st.lists(_SEG, min_size=1, max_size=3).map(".".join)  # names collide on prefixes a lot
# Literal chunks: no '$', '\\', '"', '[', '{' and nothing a header value refuses. They may start
# with name characters, '-' or '.', so a chunk may extend the run of the reference before it: by
# design the longest-match law still equals the naive replacement then.
LITERAL_CHUNK = st.text(
    st.one_of(
        st.characters(exclude_categories=["Cs", "Co"], exclude_characters='$\\"[{' + HEADER_CONTROLS),
        st.sampled_from("ab_1.z -é名٣"),
    ),
    max_size=4,
)
# A '$' that starts no name: literal text, which no naive replacement touches either.
LONE_DOLLAR = st.builds(lambda c: "$" + c, st.sampled_from([*"5 .-!,/€٣)", "٣a", "1a", "-a", ".a"]))
# Values never contain '$' (and no private-use chars: the naive reference's sentinels).
PLAIN_VALUE = st.text(st.characters(exclude_categories=["Cs", "Co"], exclude_characters="$" + HEADER_CONTROLS),
                      max_size=6)
NAME_SUFFIX = st.sampled_from(["", "", "a", "_", "b1", ".a", ".b", ".", ".1", "a.b", "-", "-a", "é", ".é", "-.b"])


@st.composite
def longest_match_case(draw: Any, undefined: bool) -> tuple[str, dict[str, str], bool]:
    names = draw(st.sets(DEFINED_NAME, min_size=1, max_size=6))
    variables = {name: draw(PLAIN_VALUE) for name in sorted(names)}
    parts = []
    has_undefined = False
    for _ in range(draw(st.integers(1, 6))):
        parts.append(draw(LITERAL_CHUNK))
        if draw(st.integers(0, 4)) == 0:
            parts.append(draw(LONE_DOLLAR))
            continue
        if undefined and draw(st.booleans()):
            # No defined name contains 'z', so a run starting with 'z' has no defined prefix.
            name = "z" + draw(st.text("ab_1-é", max_size=2))
            parts.append(draw(st.sampled_from(["$" + name + draw(NAME_SUFFIX), "${" + name + "}"])))
            has_undefined = True
        else:
            name = draw(st.sampled_from(sorted(names)))
            parts.append(draw(st.sampled_from(["$" + name + draw(NAME_SUFFIX), "${" + name + "}"])))
    parts.append(draw(LITERAL_CHUNK))
    if draw(st.integers(0, 4)) == 0:
        parts.append("$")  # a '$' at the very end is text too
    return "".join(parts), variables, has_undefined


def _template_plan(text: str, ensure_ascii: bool) -> webhook_dsl.WebhookPlan:
    config = {
        "url": "https://api.example.com/hook",
        "method": "POST",
        "headers": [{"key": "X-T", "value": text}],
        "body": {"t": text},
    }
    return compile_webhook(json.dumps(config, ensure_ascii=ensure_ascii))


@SETTINGS
@given(longest_match_case(undefined=False), st.booleans())
@example(("$session_id: $session.company", {"session_id": "A", "session": "B"}, False), False)
@example(("$orders", {"order": "<order>"}, False), False)
@example(("${a}b $a.b", {"a": "1", "ab": "2", "a.b": "3"}, False), False)
@example(("$a$cc", {"a": "X", "cc": "b", "ab": "Y"}, False), False)  # a chained str.replace says "Y"
@example(("$user-id $user-name $username", {"user": "U", "user-id": "I"}, False), False)
@example(("$endereço.rua-1 costs $5, US$ 10 $", {"endereço": "E", "endereço.rua-1": "R"}, False), False)
def test_longest_match_equals_naive_reference(case: tuple[str, dict[str, str], bool], ensure_ascii: bool) -> None:
    text, variables, _ = case
    expected = naive(text, variables)  # the same whether the config escapes non-ASCII (ensure_ascii) or not
    request = _template_plan(text, ensure_ascii).render(variables)
    assert header(request, "X-T") == expected
    assert strict_json(request.body)["t"] == expected


@pytest.mark.parametrize(
    ("template", "variables", "expected"),
    [
        ("$session_id: $session.company", {"session_id": "A", "session": "B"}, "A: B.company"),
        ("$orders", {"order": "<order>"}, "<order>s"),  # the longest defined prefix, then the rest as text
        ("$a$cc", {"a": "X", "cc": "b", "ab": "Y"}, "Xb"),  # `$cc` is its own reference, never `a` + `$cc`
        ("${a}b $a.b", {"a": "1", "ab": "2", "a.b": "3"}, "1b 3"),
        ("$session_x", {"session": "S"}, "S_x"),  # README: a shorter match keeps the name characters after it
        ("costs $5, US$ 10 $", {}, "costs $5, US$ 10 $"),  # a `$` that starts no name is text
    ],
)
def test_longest_match_documented_examples(template: str, variables: dict[str, str], expected: str) -> None:
    """The documented examples, rendered by the library, against expectations written out by hand."""
    request = _template_plan(template, False).render(variables)
    assert header(request, "X-T") == expected
    assert strict_json(request.body)["t"] == expected


@SETTINGS
@given(longest_match_case(undefined=True), st.booleans())
def test_longest_match_lenient_keeps_unresolved_as_written(
    case: tuple[str, dict[str, str], bool], ensure_ascii: bool
) -> None:
    text, variables, has_undefined = case
    plan = _template_plan(text, ensure_ascii)
    expected = naive(text, variables)  # an unresolvable $zz... stays in place, as written
    request = plan.render(variables, lenient=True)
    assert header(request, "X-T") == expected
    assert strict_json(request.body)["t"] == expected
    if has_undefined:
        with pytest.raises(RenderError):
            plan.render(variables)
    else:
        assert plan.render(variables) == request


# =========================================================================================
# 1b. Descent: a dotted run reaches into nested objects as if their paths were flat names
# =========================================================================================


def flattened(variables: dict[str, Any]) -> dict[str, Any]:
    """Every name a reference can reach, as one flat mapping: the independent reference for descent.

    The flat keys first (a flat key wins); then the paths into each object value, from the longest
    root key to the shortest (a path from a longer root wins), one nested key per ``.`` segment. A
    nested key holding ``.`` is not a segment, so it makes no path.
    """
    out = dict(variables)

    def walk(path: str, value: Any) -> None:
        if type(value) is dict:
            for key, item in value.items():
                if "." not in key:
                    out.setdefault(f"{path}.{key}", item)
                    walk(f"{path}.{key}", item)

    for root in sorted(variables, key=len, reverse=True):
        walk(root, variables[root])
    return out


NESTED_KEY = st.one_of(_SEG, st.sampled_from(["b.c", "é.1"]))  # the last two cannot be reached
NESTED = st.recursive(
    PLAIN_VALUE,
    lambda inner: st.dictionaries(NESTED_KEY, inner, min_size=1, max_size=3),
    max_leaves=6,
)


@st.composite
def descent_case(draw: Any) -> tuple[str, dict[str, Any]]:
    variables = draw(st.dictionaries(DEFINED_NAME, NESTED, min_size=1, max_size=4))
    reachable = sorted(flattened(variables))
    parts = []
    for _ in range(draw(st.integers(1, 5))):
        parts.append(draw(LITERAL_CHUNK))
        name = draw(st.sampled_from(reachable))
        parts.append(draw(st.sampled_from(["$" + name + draw(NAME_SUFFIX), "${" + name + "}"])))
    parts.append(draw(LITERAL_CHUNK))
    return "".join(parts), variables


@SETTINGS
@given(descent_case(), st.booleans())
@example(("$customer.email $customer.emails $customer.x", {"customer": {"email": "E", "x": {"y": "Y"}}}), False)
@example(("$a.b.c $a.b.d", {"a.b": {"c": "1"}, "a": {"b": {"c": "2", "d": "3"}}}), False)  # the longer root wins
@example(("$a.b|${a.b}", {"a.b": "flat", "a": {"b": "nested"}}), False)  # a flat key wins
@example(("$a.b.c", {"a": {"b.c": "unreachable", "b": "B"}}), False)
def test_descent_equals_naive_replacement_of_flattened_names(
    case: tuple[str, dict[str, Any]], ensure_ascii: bool
) -> None:
    text, variables = case
    expected = naive(text, {name: ref_text(value) for name, value in flattened(variables).items()})
    plan = _template_plan(text, ensure_ascii)
    request = plan.render(variables)
    assert plan.render_careful(variables) == request
    assert header(request, "X-T") == expected
    assert strict_json(request.body)["t"] == expected


# =========================================================================================
# 2. No re-substitution: a substituted value is never scanned again
# =========================================================================================

SECRET = "S3CR3T-MARKER"
_REF_LOOKALIKES = ["$other", "${other}", "$$other", "%24other", "$other[0]", "${other[0]}", "\\u0024other",
                   "{other}", "$", "${", "$$", "other", "S3CR3T", "$v", "${v}", "$v-x", "$other.x", "${other.x}",
                   "$oth\\u0065r", "$5", "${}"]
LOOKALIKE_VALUE = st.lists(
    st.one_of(st.sampled_from(_REF_LOOKALIKES), st.text(st.characters(exclude_categories=["Cs"],
                                                                      exclude_characters=HEADER_CONTROLS),
                                                       max_size=3)),
    min_size=1,
    max_size=6,
).map("".join)

RESUB_CONFIG = """{
  "url": "https://api.example.com/p/$v/x?q=$v&r=${v}#$v",
  "method": "POST",
  "headers": [{"key": "X-V", "value": "$v"}, {"key": "X-W", "value": "[${v}]"}],
  "body": {"s": "$v", "m": "<$v>", "bare": $v, "k_$v": 1}
}"""


@SETTINGS
@given(LOOKALIKE_VALUE)
@example("$other ${other} $$other %24other")
def test_no_resubstitution(value: str) -> None:
    assume(value not in (".", "..") and SECRET not in value)  # a whole '.'/'..' segment is refused
    variables = {"other": SECRET, "other.x": SECRET, "v": value, "v.x": SECRET}
    variables["other[0]"] = SECRET
    plan = compile_webhook(RESUB_CONFIG)
    request = plan.render(variables)
    # The reference renderer and lenient mode must not re-scan either.
    assert plan.render_careful(variables) == request
    assert plan.render(variables, lenient=True) == request
    everything = request.url + repr(request.headers) + (request.body or b"").decode("utf-8")
    assert SECRET not in everything
    assert SECRET not in urllib.parse.unquote(request.url)
    assert header(request, "X-V") == value
    assert header(request, "X-W") == "[" + value + "]"
    body = strict_json(request.body)
    assert body == {"s": value, "m": "<" + value + ">", "bare": value, "k_" + value: 1}
    parts = urllib.parse.urlsplit(request.url)
    assert [urllib.parse.unquote(s) for s in parts.path.split("/")] == ["", "p", value, "x"]
    query = [pair.split("=") for pair in parts.query.split("&")]
    assert [(k, urllib.parse.unquote(v)) for k, v in query] == [("q", value), ("r", value)]
    assert urllib.parse.unquote(parts.fragment) == value


# =========================================================================================
# 3. URL: values percent-encoded exactly, structure of the URL unchanged
# =========================================================================================

URL_VALUE = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=10),
    ANY_TEXT,
)


def _check_url_invariants(url: str, port: int | None) -> urllib.parse.SplitResult:
    assert url.isascii(), url
    assert not BAD_PERCENT.search(url), url
    parts = urllib.parse.urlsplit(url)
    assert parts.scheme == "https"
    assert parts.hostname == "api.example.com"
    assert parts.port == port
    assert parts.username is None and parts.password is None
    return parts


@SETTINGS
@given(URL_VALUE, URL_VALUE, URL_VALUE)
@example("a/b?c#d&e=f g%2F", "x&y=z#w", "#?/ %")
@example("", "", "")
def test_url_values_are_percent_encoded(p: str, q: str, f: str) -> None:
    assume(p not in (".", ".."))
    plan = compile_webhook({"url": "https://api.example.com/a/$p/b?q=$q&r=x#$f", "method": "GET"})
    url = plan.render({"p": p, "q": q, "f": f}).url
    parts = _check_url_invariants(url, None)
    assert parts.path.count("/") == 3
    segments = parts.path.split("/")
    assert segments == ["", "a", ref_percent(p), "b"]
    assert urllib.parse.unquote(segments[2]) == p
    pairs = parts.query.split("&")
    assert pairs == ["q=" + ref_percent(q), "r=x"]
    assert urllib.parse.unquote(pairs[0][2:]) == q
    assert parts.fragment == ref_percent(f)
    assert urllib.parse.unquote(parts.fragment) == f
    assert url == f"https://api.example.com/a/{ref_percent(p)}/b?q={ref_percent(q)}&r=x#{ref_percent(f)}"


@SETTINGS
@given(URL_VALUE, URL_VALUE, URL_VALUE, URL_VALUE)
def test_url_values_mid_segment_and_in_query_names(p: str, q: str, k: str, f: str) -> None:
    # `$p.y` is the run "p.y": only `p` is defined, so it is p's value then the text ".y".
    plan = compile_webhook(
        {"url": "https://api.example.com:8443/x$p.y/${q}z?$k=1&n=$k#pre-$f-post", "method": "DELETE"}
    )
    url = plan.render({"p": p, "q": q, "k": k, "f": f}).url
    parts = _check_url_invariants(url, 8443)
    assert parts.path.count("/") == 2
    segments = parts.path.split("/")
    assert segments == ["", "x" + ref_percent(p) + ".y", ref_percent(q) + "z"]
    assert urllib.parse.unquote(segments[1]) == "x" + p + ".y"
    assert urllib.parse.unquote(segments[2]) == q + "z"
    pairs = [pair.split("=") for pair in parts.query.split("&")]
    assert pairs == [[ref_percent(k), "1"], ["n", ref_percent(k)]]
    assert urllib.parse.unquote(pairs[0][0]) == k
    assert urllib.parse.unquote(parts.fragment) == "pre-" + f + "-post"


DOT_PARTS = st.sampled_from(["", ".", "..", "...", "a", ".a", None, 0])


@SETTINGS
@given(DOT_PARTS, DOT_PARTS)
@example(".", "")
@example("..", "")
@example(".", ".")
@example(None, "..")
def test_dot_segments_are_refused(p: Any, q: Any) -> None:
    variables = {"p": p, "q": q}
    for template, segment, shape in [
        ("https://api.example.com/a/$p/b", ref_text(p), "https://api.example.com/a/{}/b"),
        ("https://api.example.com/a/$p${q}", ref_text(p) + ref_text(q), "https://api.example.com/a/{}"),
        ("https://api.example.com/.$p/b", "." + ref_text(p), "https://api.example.com/{}/b"),
        ("https://api.example.com/a/x$p", "x" + ref_text(p), "https://api.example.com/a/{}"),
    ]:
        plan = compile_webhook({"url": template, "method": "GET"})
        if segment in (".", ".."):
            with pytest.raises(RenderError):
                plan.render(variables)
            with pytest.raises(RenderError):
                plan.render_careful(variables)
        else:
            assert plan.render(variables).url == shape.format(ref_percent(segment))
            assert plan.render_careful(variables).url == shape.format(ref_percent(segment))


# =========================================================================================
# 4. Body: every value comes back exactly from json.loads
# =========================================================================================

BODY_CONFIG = r"""{
  "url": "https://api.example.com/items",
  "method": "POST",
  "body": {
    "s": "$a",
    "mixed": "pre $b post",
    "key_$c": "k",
    "bare": $v,
    "nested": {
      "arr": ["$a", 1, {"x": "${b}x", "esc": "\"q\" \\ \u00e9 \ud83d\ude00 \u2028 $$a"}],
      "n": null, "t": true, "f": false, "num": -1.5e3, "big": 123456789012345678901234567890
    },
    "lst": [$v, "$$a", ${v}, "$c$a"]
  }
}"""


@SETTINGS
@given(ANY_TEXT, ANY_TEXT, ANY_TEXT, JSON_DATA)
@example("\"\\\x00\x1f\x7f\u2028😀", "</script>", "", 2**64 + 1)
@example("", "", "x", {"": [None, -(2**70), 1e308, -0.0, 5e-324, True]})
def test_body_values_round_trip_exactly(a: str, b: str, c: str, v: Any) -> None:
    body = strict_json(compile_webhook(BODY_CONFIG).render({"a": a, "b": b, "c": c, "v": v}).body)
    expected = {
        "s": a,
        "mixed": "pre " + b + " post",
        "key_" + c: "k",
        "bare": v,
        "nested": {
            "arr": [a, 1, {"x": b + "x", "esc": '"q" \\ é 😀 \u2028 $a'}],
            "n": None, "t": True, "f": False, "num": -1500.0, "big": 123456789012345678901234567890,
        },
        "lst": [v, "$a", v, c + a],
    }
    assert same(body, expected)


@pytest.fixture
def default_digit_limit() -> Iterator[None]:
    """Python's default limit on the digits of an integer written as text, whatever the process set."""
    previous = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(4300)
    yield
    sys.set_int_max_str_digits(previous)


@pytest.mark.usefixtures("default_digit_limit")
@pytest.mark.parametrize("render", ["render", "render_careful"])
def test_body_integers_up_to_pythons_digit_limit_render_exactly_and_past_it_are_render_errors(render: str) -> None:
    """An integer is written exactly while Python can write it as text (``sys.get_int_max_str_digits``, 4,300
    digits by default); past that it is a RenderError naming the variable, without quoting the value."""
    plan = compile_webhook('{"url": "https://api.example.com/", "method": "POST", "body": {"n": $n, "s": "$n"}}')
    renderer = getattr(plan, render)
    largest = 10**4300 - 1  # 4,300 nines
    assert renderer({"n": largest}).body == b'{"n":' + b"9" * 4300 + b',"s":"' + b"9" * 4300 + b'"}'
    with pytest.raises(RenderError) as caught:
        renderer({"n": 10**4300})  # 4,301 digits
    assert [(d.variable, d.field) for d in caught.value.diagnostics] == [("$n", "body.n"), ("$n", "body.s")]
    assert "too large to write as text" in str(caught.value)
    assert "0000000000" not in str(caught.value)


# =========================================================================================
# 4b. Body: no object is sent with a repeated member name
# =========================================================================================

# Member name templates: literal names, and names with variables that often render alike.
_MEMBER = st.sampled_from(["k", "p_k", "admin", "", "$a", "${b}", "p_$a", "$a$b", "${b}_x", "$a-x", "$c.d"])
_MEMBER_VALUE = st.sampled_from(["k", "p_k", "admin", "", "x", "k_x", "p_", "admin-x"])
MEMBER_TREE = st.recursive(
    st.one_of(st.integers(-3, 3), st.booleans(), st.none(), st.text("ab", max_size=2)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_MEMBER, inner, max_size=4),
    max_leaves=10,
).filter(lambda tree: isinstance(tree, (dict, list)))  # a null body sends no body at all


def _object_pairs(pairs: list[tuple[str, Any]]) -> tuple[str, list[tuple[str, Any]]]:
    """json.loads hook keeping every member in order, repeats included."""
    return ("object", pairs)


def _expected_pairs(node: Any, variables: dict[str, Any]) -> tuple[Any, bool]:
    """The body json.loads should give (objects as ("object", pairs)), and whether some object
    repeats a name: member names rendered by the naive reference over the flattened variables."""
    names = {name: ref_text(value) for name, value in flattened(variables).items()}
    if isinstance(node, dict):
        pairs, repeated = [], False
        for key, item in node.items():
            value, inner = _expected_pairs(item, variables)
            pairs.append((naive(key, names), value))
            repeated |= inner
        return ("object", pairs), repeated or len({k for k, _ in pairs}) < len(pairs)
    if isinstance(node, list):
        items = [_expected_pairs(item, variables) for item in node]
        return [value for value, _ in items], any(inner for _, inner in items)
    return node, False


@SETTINGS
@given(
    MEMBER_TREE, _MEMBER_VALUE, _MEMBER_VALUE, st.one_of(_MEMBER_VALUE, st.dictionaries(st.just("d"), _MEMBER_VALUE))
)
@example({"admin": False, "$a": "x"}, "admin", "k", "x")
@example({"p_$a": 1, "${b}": 2}, "k", "p_k", "x")
@example({"$a": 1, "o": {"$a": 2, "k": 3}}, "k", "x", "x")  # the same name in two objects is fine
@example({"$c.d": 1, "k": 2}, "x", "x", {"d": "k"})  # a name reached by descent
def test_rendered_objects_never_repeat_a_member_name(tree: Any, a: str, b: str, c: Any) -> None:
    variables = {"a": a, "b": b, "c": c}
    config = {"url": "https://api.example.com/", "method": "POST", "body": tree}
    plan = compile_webhook(config)
    expected, repeated = _expected_pairs(tree, variables)
    for render in (plan.render, plan.render_careful):
        if repeated:
            with pytest.raises(RenderError, match="makes a member name this object already has"):
                render(variables)
            continue
        body = render(variables).body
        assert body is not None
        assert json.loads(body, object_pairs_hook=_object_pairs) == expected


# =========================================================================================
# 5. Headers: no value can split a header
# =========================================================================================

HEADER_VALUE = st.one_of(
    ANY_TEXT,
    st.text(st.sampled_from("ab \t\r\n\x00\x0b\x1b\x7f\x85\u2028é"), max_size=6),
    st.lists(ANY_TEXT, max_size=3),
    st.integers(),
    st.booleans(),
    st.none(),
)


def _no_header_controls(request: webhook_dsl.RenderedRequest) -> None:
    for name, value in request.headers:
        for text in (name, value):
            assert "\r" not in text and "\n" not in text
            assert not any(c in HEADER_CONTROLS for c in text), (name, value)


@SETTINGS
@given(HEADER_VALUE)
@example("a\r\nX-Injected: 1")
@example("tab\tok")
@example("\x7f")
@example(["\x7f"])
def test_header_values_never_carry_controls(h: Any) -> None:
    plan = compile_webhook(
        {"url": "https://api.example.com/", "method": "GET",
         "headers": [{"key": "X-A", "value": "$h"}, {"key": "X-B", "value": "pre\t$h post"}]}
    )
    text = ref_text(h)
    must_fail = any(c in HEADER_CONTROLS for c in text)
    for render in (plan.render, plan.render_careful):
        if must_fail:
            with pytest.raises(RenderError):
                render({"h": h})
            continue
        request = render({"h": h})
        _no_header_controls(request)
        if isinstance(h, str) or h is None:
            assert header(request, "X-A") == text
            assert header(request, "X-B") == "pre\t" + text + " post"
        else:
            assert same(json.loads(header(request, "X-A")), h)


@SETTINGS
@given(HEADER_VALUE)
@example("Injected\r\nX-Evil")
@example("Ok-Name")
@example(7)
def test_header_names_stay_tokens(n: Any) -> None:
    plan = compile_webhook(
        {"url": "https://api.example.com/", "method": "GET", "headers": [{"key": "X-$n", "value": "v"}]}
    )
    name = "X-" + ref_text(n)
    for render in (plan.render, plan.render_careful):
        if not TCHAR_TOKEN.fullmatch(name):
            with pytest.raises(RenderError):
                render({"n": n})
            continue
        request = render({"n": n})
        assert request.headers == [(name, "v")]
        _no_header_controls(request)


# =========================================================================================
# 6. Parser robustness: ConfigError with positions, or a plan; nothing else
# =========================================================================================

_TOKENS = ["{", "}", "[", "]", ":", ",", '"', "$", "${", "$$", "\\", "true", "false", "null", "1e5", "-0", "01",
           '"url"', '"method"', '"GET"', '"POST"', '"headers"', '"body"', '"key"', '"value"', '"type"',
           '"https://x.example/', "https://", "$a", "${a}", "$a[0]", "$a.b", "${a", "\\u00", "\\u0024",
           "\\ud800", "\\udc00", "\\n", "\\x", "\n", "\r\n", " ", "\t", "'", "@", "#", "?", "/", "%", "%zz",
           "é", "😀", "\x00", "\u2028", "\ufeff", "$user-id", "$é", "${a b}", "${}", "$5", "$-", "${a\\u0041}",
           "$caf\\u00e9", "$\\u0035", "\\u005b", "\\u007d", "${\\ud800}", "$\\ud840\\udc00", "${2fa[1]}", "-"]
SOUP = st.lists(
    st.one_of(st.sampled_from(_TOKENS), st.text(max_size=3), st.text("ab_.", min_size=1, max_size=4)),
    max_size=40,
).map("".join)
VALID_CONFIG = (
    '{"url": "https://$h.example.com:$port/a/$p?q=$q#$f", "method": "POST",\n'
    ' "headers": [{"key": "X-$n", "value": "Bearer $t"}],\n'
    ' "body": {"s": "$a", "all": $images, "k_$b": [1, "${c}"]}, "responseDirective": "ok"}'
)


@st.composite
def mutated_config(draw: Any) -> str:
    text = VALID_CONFIG
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(st.sampled_from(_TOKENS))
        if op == "insert":
            text = text[:i] + piece + text[i:]
        elif op == "delete":
            text = text[:i] + text[i + draw(st.integers(1, 5)):]
        else:
            text = text[:i] + piece + text[i + 1:]
    return text


def _check_compile(text: str) -> None:
    try:
        plan = compile_webhook(text)
    except ConfigError as error:
        assert error.diagnostics
        lines = text.split("\n")
        for d in error.diagnostics:
            assert d.line >= 1 and d.column >= 1, d
            assert d.line <= len(lines), d
        assert str(error)
        return
    # A config that compiles renders, at worst, to a RenderError.
    with contextlib.suppress(RenderError):
        plan.render({}, lenient=True)


@SETTINGS
@given(st.one_of(st.text(), SOUP, mutated_config()))
@example("")
@example("{")
@example('{"url": "https://x.example/$", "method": "GET"}')
@example("[" * 10_000)
@example('"\\ud800"')
def test_parser_never_crashes(text: str) -> None:
    _check_compile(text)


def test_parser_valid_config_compiles() -> None:
    compile_webhook(VALID_CONFIG)  # the mutation base is itself valid


@SETTINGS
@given(st.dictionaries(st.sampled_from(["url", "method", "headers", "body", "type", "x"]),
                       st.recursive(st.none() | st.booleans() | st.integers() | ANY_TEXT,
                                    lambda c: st.lists(c, max_size=3) | st.dictionaries(ANY_TEXT, c, max_size=3),
                                    max_leaves=8)))
def test_compile_mapping_never_crashes(config: dict[str, Any]) -> None:
    try:
        compile_webhook(config)
    except ConfigError as error:
        assert all(d.line >= 1 and d.column >= 1 for d in error.diagnostics)


# =========================================================================================
# Generated templates (shared by 7 and 8)
# =========================================================================================

NAMES = ["a", "ab", "a.b", "a_1", "x", "x.y", "h", "n", "u", "l", "a-b", "é", "é.ç-1"]
# Keys only ${...} can name: a digit first, a space, a '$', a '"' (written \" in the JSON text).
BRACED_ONLY = ["2fa", "a b", "x.y z", "$", 'a"b']
_REF_NAME = st.sampled_from([*NAMES, "zz", "a.b.c"])
REF = st.one_of(
    st.builds(lambda n, s: "$" + n + s, _REF_NAME, st.sampled_from(["", "", "_x", ".b", ".y", "1", "-", "-b", "é"])),
    _REF_NAME.map(lambda n: "${" + n + "}"),
    st.sampled_from(BRACED_ONLY).map(lambda n: "${" + n + "}"),
    st.builds(lambda n, i: f"${n}[{i}]", _REF_NAME, st.integers(0, 2)),
    st.builds(lambda n, i: "${" + n + f"[{i}]" + "}", _REF_NAME, st.integers(0, 2)),
)
# A '$' that starts no name is text. Not in member names: "$5" and "$$5" would be one literal name twice.
_LONE_DOLLAR = st.sampled_from(["$5", "$-", "$."])


def _pieces(literal: st.SearchStrategy[str], max_size: int = 3, lone: bool = True) -> st.SearchStrategy[str]:
    dollars = st.one_of(st.just("$$"), _LONE_DOLLAR) if lone else st.just("$$")
    return st.lists(st.one_of(REF, literal, dollars), max_size=max_size).map("".join)


_URL_LIT = st.one_of(st.text("abc-._~", max_size=3), st.just("%41"))
_SEGMENT = _pieces(_URL_LIT)
URL_TEMPLATE = st.one_of(
    st.builds(
        lambda host, port, segs, query, frag: "https://" + host + port + "".join("/" + s for s in segs) + query + frag,
        st.sampled_from(["api.example.com", "${h}.example.com", "$h", "$h.example.com", "a-${h}.example.com",
                         "[::1]"]),
        st.sampled_from(["", ":8080", ":$n", ":${n}", ":8$n"]),
        st.lists(_SEGMENT, max_size=3),
        st.one_of(st.just(""), _pieces(st.text("ab=&-._~/?", max_size=3)).map(lambda s: "?" + s)),
        st.one_of(st.just(""), _pieces(st.text("ab=&-._~/?", max_size=3)).map(lambda s: "#" + s)),
    ),
    st.sampled_from(["$u", "${u}"]),
)
_TEXT_LIT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="$" + HEADER_CONTROLS), max_size=4)
HEADERS = st.lists(
    st.fixed_dictionaries({
        "key": st.one_of(st.sampled_from(["X-H", "Authorization"]), REF.map(lambda r: "X-" + r)),
        "value": _pieces(_TEXT_LIT),
    }),
    max_size=2,
)


class Bare(str):
    """Marks a bare `$name` standing as a JSON value in a generated body."""


_JSON_STRING_LIT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="$"), max_size=4)
BODY = st.recursive(
    st.one_of(
        _pieces(_JSON_STRING_LIT),
        st.builds(Bare, st.one_of(_REF_NAME.map(lambda n: "$" + n), _REF_NAME.map(lambda n: "${" + n + "}"),
                                  st.sampled_from(BRACED_ONLY).map(lambda n: "${" + json.dumps(n)[1:-1] + "}"),
                                  st.builds(lambda n, i: f"${n}[{i}]", _REF_NAME, st.integers(0, 2)))),
        st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.none(),
    ),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(_pieces(_JSON_STRING_LIT, 2, lone=False), c, max_size=3),
    max_leaves=8,
)


def _json_template(node: Any) -> str:
    if isinstance(node, Bare):
        return str(node)
    if isinstance(node, dict):
        return "{" + ", ".join(f"{_json_template(k)}: {_json_template(v)}" for k, v in node.items()) + "}"
    if isinstance(node, list):
        return "[" + ", ".join(_json_template(v) for v in node) + "]"
    return json.dumps(node, ensure_ascii=False)


@st.composite
def config_text(draw: Any) -> str:
    url = draw(URL_TEMPLATE)
    headers = draw(HEADERS)
    has_body = draw(st.booleans())
    method = draw(st.sampled_from(["POST", "PUT", "PATCH"] if has_body else ["GET", "DELETE", "POST"]))
    text = f'{{"url": {json.dumps(url)}, "method": "{method}", "headers": {json.dumps(headers, ensure_ascii=False)}'
    if has_body:
        text += ', "body": ' + _json_template(draw(BODY))
    return text + "}"


VALUE = st.one_of(
    ANY_TEXT,
    st.sampled_from(["", ".", "..", "example", "a-b", "8080", "0", "70000", "https://b.example/x?y=1#z",
                     "http://user@b.example/", "ftp://b.example/", "a\r\nb", "\ud800", "x\udfff", "x\x7f", "\t"]),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.booleans(),
    st.none(),
    st.lists(st.one_of(ANY_TEXT, st.integers(-5, 5), st.sampled_from(["\ud800", "8080", "example"])), max_size=3),
    st.lists(ANY_TEXT, max_size=3).map(tuple),
    st.dictionaries(ANY_TEXT, st.integers(), max_size=2),
    st.just(b"bytes"),
)
# Objects a dotted reference may descend into (`$a.b` reads {"a": {"b": ...}} when no flat `a.b` exists).
NESTED_VALUE = st.recursive(
    st.one_of(ANY_TEXT, st.integers(-5, 5), st.none(), st.lists(st.text("ab", max_size=2), max_size=3)),
    lambda inner: st.dictionaries(st.sampled_from(["b", "c", "y", "y_z", "b_x", "ç-1", "1"]), inner, max_size=3),
    max_leaves=5,
)
VARIABLES = st.dictionaries(
    st.sampled_from([*NAMES, *BRACED_ONLY, "a.b.c", "x.y_z", "a.b_x", "zz", "é.ç"]),
    st.one_of(VALUE, NESTED_VALUE),
    max_size=8,
)
# Values that usually fit where the generated templates put each name (host, port, whole URL...),
# so that renders succeed, and the fast path returns, often enough to be compared.
_GOOD_DEFAULT = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters=HEADER_CONTROLS), max_size=6),
    st.text("abc-_.~", max_size=4),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.lists(st.text("abc é", max_size=3), max_size=3),
    st.dictionaries(st.sampled_from(["b", "y", "c", "ç-1", "b_x"]), st.text("abc é", max_size=3), max_size=3),
)
_GOOD = {
    "u": st.sampled_from(["https://b.example/x?y=1#z", "http://b.example:8080/", "HTTPS://B.EXAMPLE", "https://[::1]/"]),
    "n": st.one_of(st.integers(1, 65535), st.integers(1, 65535).map(str)),
    "h": st.from_regex(r"[a-z0-9]([a-z0-9-]{0,5}[a-z0-9])?", fullmatch=True),
}


def _mostly(usual: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``usual`` about 9 times in 10, ``rare`` otherwise (st.one_of would give each half)."""
    return st.integers(0, 9).flatmap(lambda i: rare if i == 9 else usual)


def plan_variables(plan: webhook_dsl.WebhookPlan) -> st.SearchStrategy[dict[str, Any]]:
    """Variables for a plan: every referenced full name, mostly with a fitting value; some dropped."""
    good: dict[str, st.SearchStrategy[Any]] = {}
    for slot in plan.slots():
        name = slot.candidates[0]
        fitting = _GOOD.get(name[0], _GOOD_DEFAULT)
        if slot.index is not None:
            fitting = st.lists(fitting, min_size=3, max_size=3)
        good[name] = _mostly(fitting, VALUE)

    def combine(extra: dict[str, Any], chosen: dict[str, Any], dropped: set[str]) -> dict[str, Any]:
        merged = {**extra, **chosen}
        for name in dropped:
            merged.pop(name, None)
        return merged

    return st.builds(
        combine,
        VARIABLES,
        st.fixed_dictionaries(good),
        _mostly(st.just(set()), st.sets(st.sampled_from(sorted(good)), min_size=1, max_size=2))
        if good
        else st.just(set()),
    )


@SETTINGS
@given(config_text())
@example('{"url": "https://${h}.example.com:$n/$a$$x/%41$5?$x.y=$$#$u", "method": "PUT", '
         '"headers": [{"key": "X-$a[0]", "value": "$$ $ab $- ${a b}"}], '
         '"body": {"$x": [$a, ${l[1]}, $a-b, ${2fa}, ${a\\"b}], "${$}": "$é.ç-1"}}')
def test_generated_configs_compile(text: str) -> None:
    """The generator the laws below draw from makes configs that compile."""
    compile_webhook(text)


# =========================================================================================
# 7. Serialization: dump/load keeps behaviour, dump is deterministic, damage is refused
# =========================================================================================


@SETTINGS
@given(config_text(), st.data())
def test_dump_load_round_trip(text: str, data: st.DataObject) -> None:
    plan = compile_webhook(text)
    variables = data.draw(plan_variables(plan), label="variables")
    dumped = dump_plans([plan])
    assert dump_plans([plan]) == dumped
    assert dump_plans([compile_webhook(text)]) == dumped
    loaded = load_plans(dumped)
    assert loaded == [plan]
    assert dump_plans(loaded) == dumped
    assert webhook_dsl.WebhookPlan.from_json(plan.to_json()) == plan
    assert outcome(loaded[0].render, variables) == outcome(plan.render, variables)
    assert outcome(loaded[0].render, variables, lenient=True) == outcome(plan.render, variables, lenient=True)


def _locations(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path of every value inside a JSON document, the document itself excepted."""
    found = [path] if path else []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, item in items:
        found += _locations(item, (*path, key))
    return found


# Replacements that look like plan data: indexes, positions, contexts, names, written references.
_PLAN_LIKE = st.one_of(
    st.sampled_from([-1, 0, 1, 2, 99, True, None, 1.5, "", "a", "$a", "${a}", "$a[0]", "url_path", "json_value",
                     "host", "body", "url", "headers[0].key", "\ud800", "}", "http://", [], {}, [1, 1], ["a"]]),
    st.integers(-3, 3),
)


@SETTINGS
@given(config_text(), st.data())
def test_a_damaged_plan_file_is_refused_or_renders_alike_on_both_renderers(text: str, data: st.DataObject) -> None:
    """Mutate one value of a dumped plan: loading either refuses it with PlanFormatError (and nothing else),
    or gives a plan that dumps back to the same document and that the two renderers render alike."""
    plan = compile_webhook(text)
    document = json.loads(dump_plans([plan]))
    path = data.draw(st.sampled_from(_locations(document["plans"])), label="path")
    *parents, last = ("plans", *path)
    parent: Any = document
    for key in parents:
        parent = parent[key]
    operation = data.draw(st.sampled_from(["replace", "delete", "repeat"]), label="operation")
    if operation == "replace":
        parent[last] = data.draw(_PLAN_LIKE, label="value")
    elif operation == "delete":
        del parent[last]
    elif isinstance(parent, list):
        parent.insert(last, parent[last])
    else:
        parent[last] = [parent[last], parent[last]]
    damaged = json.dumps(document, ensure_ascii=False)
    try:
        loaded = load_plans(damaged)
    except PlanFormatError as error:
        assert str(error).startswith(("damaged plan file: ", "not a compiled plan file")), error
        return
    assert load_plans(dump_plans(loaded)) == loaded
    variables = data.draw(plan_variables(plan), label="variables")
    for each in loaded:
        assert outcome(each.render, variables) == outcome(each.render_careful, variables)
        try:
            answer = each.generated_renderer()(variables)
        except (Fallback, ValueProblem):
            continue
        assert answer == each.render_careful(variables)


# =========================================================================================
# 8. The generated renderer agrees with the careful renderer, and answers the common case
# =========================================================================================

_HOST_LABEL = st.text("abcxyz0189", min_size=1, max_size=6)  # also a header-name token and a path segment
_PLAIN_TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters=HEADER_CONTROLS), min_size=1,
                      max_size=6).filter(lambda text: text.strip("."))  # a path segment of dots is refused
_PLAIN_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _PLAIN_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_PLAIN_TEXT, inner, max_size=3),
    max_leaves=6,
)
_FITTING: list[tuple[set[Context], st.SearchStrategy[Any]]] = [  # the strictest context a name stands in first
    ({Context.URL_WHOLE}, st.sampled_from(["https://b.example/x?y=1#z", "http://b.example:8080/", "HTTPS://B.EXAMPLE"])),
    ({Context.URL_PORT}, st.one_of(st.integers(1, 999), st.integers(1, 999).map(str))),
    ({Context.URL_HOST, Context.HEADER_NAME}, _HOST_LABEL),
    ({Context.URL_PATH, Context.URL_QUERY, Context.URL_FRAGMENT, Context.HEADER_VALUE, Context.JSON_STRING},
     st.one_of(_PLAIN_TEXT, st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
               st.lists(_PLAIN_TEXT, max_size=2))),
    ({Context.JSON_VALUE}, _PLAIN_JSON),
]


def _fitting(contexts: set[Context]) -> st.SearchStrategy[Any]:
    return next(strategy for kinds, strategy in _FITTING if kinds & contexts)


_STRICT = {Context.URL_WHOLE, Context.URL_PORT, Context.URL_HOST, Context.HEADER_NAME}


def _conflicting(contexts: set[Context]) -> bool:
    """No one value fits: a whole URL is neither a host, a port nor a header name."""
    return Context.URL_WHOLE in contexts and bool(contexts & _STRICT - {Context.URL_WHOLE})


def accepted_variables(plan: webhook_dsl.WebhookPlan) -> tuple[bool, st.SearchStrategy[dict[str, Any]]]:
    """Variables the generated renderer is built to answer: every full name defined, with a value that fits each
    place it stands (a list long enough where it is indexed), among unrelated variables. False first when no
    value fits every place of some name: indexed somewhere (a list), it stands whole where a list's JSON text
    cannot (a host, a port, a header name, the whole URL), or it is both a whole URL and a host or port."""
    contexts: dict[str, set[Context]] = {}
    indexed: dict[str, set[Context]] = {}
    for slot in plan.slots():
        (indexed if slot.index is not None else contexts).setdefault(slot.full_name, set()).add(slot.context)
    chosen: dict[str, st.SearchStrategy[Any]] = {}
    fits = True
    for name in sorted({*contexts, *indexed}):
        plain = contexts.get(name, set())
        if name in indexed:  # its plain uses, if any, then see the list as JSON text
            chosen[name] = st.lists(_fitting(indexed[name]), min_size=3, max_size=4)
            fits = fits and not plain & _STRICT and not _conflicting(indexed[name])
        else:
            chosen[name] = _fitting(plain)
            fits = fits and not _conflicting(plain)
    return fits, st.builds(lambda extra, values: {**extra, **values}, VARIABLES, st.fixed_dictionaries(chosen))


def test_generated_renderer_equals_careful_renderer_and_answers_the_common_case() -> None:
    """On variables it is built for, the generated function answers, in at least 90% of the draws whose values
    fit (the rest are values that clash, such as two member names rendered alike), and equals the careful
    renderer; on every draw, ``render`` (lenient too) gives what the careful renderer gives."""
    answered: list[bool] = []  # one per draw whose values fit every place
    draws = 0

    @SETTINGS
    @given(config_text(), st.data())
    def check(text: str, data: st.DataObject) -> None:
        nonlocal draws
        draws += 1
        plan = compile_webhook(text)
        fits, strategy = accepted_variables(plan)
        variables = data.draw(strategy, label="variables")
        careful = outcome(plan.render_careful, variables)
        assert outcome(plan.render, variables) == careful
        assert outcome(plan.render, variables, lenient=True) == careful  # every name is defined: nothing to keep
        try:
            answer = plan.generated_renderer()(variables)
        except (Fallback, ValueProblem):
            answer = None
        else:
            assert careful == ("ok", answer)
        if fits:
            answered.append(answer is not None)

    check()
    assert len(answered) >= draws / 2, f"only {len(answered)} of {draws} draws had values that fit"
    assert sum(answered) >= 0.9 * len(answered), f"the generated function answered {sum(answered)} of {len(answered)}"


@SETTINGS
@given(config_text(), st.data())
def test_render_equals_careful_renderer_on_any_variables(text: str, data: st.DataObject) -> None:
    """Variables often unrelated to the template: misses, shorter names, odd values. Where the generated
    function answers at all, it answers what the careful renderer does."""
    plan = compile_webhook(text)
    for variables in (data.draw(plan_variables(plan), label="variables"), data.draw(VARIABLES, label="loose")):
        careful = outcome(plan.render_careful, variables)
        assert outcome(plan.render, variables) == careful
        try:
            answer = plan.generated_renderer()(variables)
        except (Fallback, ValueProblem):
            continue
        assert careful == ("ok", answer)
