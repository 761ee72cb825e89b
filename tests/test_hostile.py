"""Hostile values in every context: each outcome is what specs/security.md promises.

The expected outcome of each (context, value) pair is decided here from the spec's rules,
independently of the encoders: percent-encoding by a byte loop, host validity by a tiny
label check, header refusal by the control-character set.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from webhook_dsl import RenderError, compile_webhook

ROOT = Path(__file__).resolve().parent.parent
SECRET = "hd-SECRET-0b7e"
HOSTILE: list[str] = [
    "\r",
    "\n",
    "\r\n",
    "a\r\nX-Injected: 1",
    "\0",
    "\x0b",
    "\x7f",
    "\x1b[2J",
    "\t",
    "../",
    "..",
    ".",
    "%2e%2e",
    "%2e%2e%2f",
    "..%2f",
    "?",
    "#",
    "@",
    "\\",
    "a@evil.com",
    "//evil.com",
    "http://evil.com/",
    "https://user:pw@evil.com/",
    "evil.com",
    "evil.com:80",
    "[::1]",
    "127.0.0.1",
    "\uff0f",  # full-width solidus
    "\uff0e\uff0e",  # full-width full stops
    "\uff20",  # full-width commercial at
    "\u202eevil",
    "\u200f",
    "\ufeff",
    "\u2028",
    "\u0085",
    "e\u0301",
    "\ud800",
    "x\udfff",
    "a" * 1_000_000,
    "$helpdesk_api_key",
    "${helpdesk_api_key}",
    "$$helpdesk_api_key",
    "{{helpdesk_api_key}}",
    "%24helpdesk_api_key",
    "\\u0024helpdesk_api_key",
    '"}, "admin": true, "x": {"',
    '\\"',
    "</script>",
    "file:///etc/passwd",  # another scheme
    '"',
    "'",
    "\u0000\u0001",
    "&admin=true",
    "=",
    "+",
    "%",
    "%%",
    "%zz",
    " ",
    "é",
    "😀",
    "\U0010ffff",
]
CONTEXTS = ["url_path", "url_query", "url_host", "url_whole", "header_value", "json_string", "json_value"]
TEMPLATES: dict[str, dict[str, Any]] = {
    "url_path": {"url": "https://api.example.com/a/$v/b", "method": "GET"},
    "url_query": {"url": "https://api.example.com/s?q=$v&k=1", "method": "GET"},
    "url_host": {"url": "https://$v.example.com/x", "method": "GET"},
    "url_whole": {"url": "$v", "method": "GET"},
    "header_value": {"url": "https://api.example.com/", "method": "GET", "headers": [{"key": "X-V", "value": "$v"}]},
    "json_string": {"url": "https://api.example.com/", "method": "POST", "body": {"v": "$v", "admin": False}},
    "json_value": '{"url": "https://api.example.com/", "method": "POST", "body": {"v": $v, "admin": false}}',
}
UNRESERVED = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def reference_percent(value: str) -> str:
    return "".join(chr(b) if b in UNRESERVED else f"%{b:02X}" for b in value.encode("utf-8"))


def has_surrogate(value: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in value)


def valid_host_label_run(value: str) -> bool:
    labels = value.split(".")
    return all(
        0 < len(label) <= 63
        and label.isascii()
        and all(c.isalnum() or c == "-" for c in label)
        and not label.startswith("-")
        and not label.endswith("-")
        for label in labels
    )


def expected(context: str, value: str) -> str:
    """'ok' or 'error', from the spec's rules."""
    if has_surrogate(value):
        return "error"
    if context in ("url_path", "url_query"):
        if context == "url_path" and value in (".", ".."):
            return "error"
        return "error" if len(reference_percent(value)) > 7000 else "ok"
    if context == "url_host":
        return "ok" if valid_host_label_run(value) and len(value) + 12 <= 253 else "error"
    if context == "url_whole":
        return "ok" if value in ("http://evil.com/",) else "error"
    if context == "header_value":
        bad = any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value)
        return "error" if bad or len(value) > 30000 else "ok"
    return "ok"


CASES = [pytest.param(c, v, id=f"{c}-{i}") for c in CONTEXTS for i, v in enumerate(HOSTILE)]


def _security_section_1() -> str:
    text = (ROOT / "specs" / "security.md").read_text(encoding="utf-8")
    return text.split("\n## 1. ", 1)[1].split("\n## 2. ", 1)[0]


def _table(section: str, header: str) -> list[list[str]]:
    """The rows of the Markdown table whose header row starts with ``| header |``, as lists of cells."""
    lines = section[section.index(f"| {header} |") :].splitlines()
    rows = []
    for line in lines[2:]:  # the header and the |---| line
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return rows


def test_hostile_values_are_distinct() -> None:
    assert [v for i, v in enumerate(HOSTILE) if v in HOSTILE[:i]] == []


def test_the_table_in_security_md_is_this_one() -> None:
    """specs/security.md states the size of this table and, per context, how many values are accepted and
    refused: the outcomes decided here (and checked against the renderer below) must be those numbers."""
    section = _security_section_1()
    sizes = re.search(r"\*\*(\d+) hostile values in (\d+) contexts \((\d+) cases\)\*\*", section)
    assert sizes, "specs/security.md section 1 no longer states the size of the hostile-input table"
    assert tuple(int(n) for n in sizes.groups()) == (len(HOSTILE), len(CONTEXTS), len(CASES))
    labels = {
        "URL path segment": "url_path",
        "URL query value": "url_query",
        "URL host": "url_host",
        "whole URL": "url_whole",
        "header value": "header_value",
        "JSON string": "json_string",
        "bare JSON value": "json_value",
    }
    stated = {}
    for label, accepted, refused, _why in _table(section, "context"):
        [context] = [c for prefix, c in labels.items() if label.startswith(prefix)]
        stated[context] = (int(accepted.split()[0]), int(refused.split()[0]))  # "2 (`evil.com`, ...)": 2
    computed = {
        c: (sum(expected(c, v) == "ok" for v in HOSTILE), sum(expected(c, v) == "error" for v in HOSTILE))
        for c in CONTEXTS
    }
    assert stated == computed


def _contains(*fragments: str) -> list[str]:
    return [f"a value holding {f!r}" for f in fragments if not any(f in v for v in HOSTILE)]


def _exactly(*values: str) -> list[str]:
    return [f"the value {v!r}" for v in values if v not in HOSTILE]


def _matching(**patterns: str) -> list[str]:
    return [what.replace("_", " ") for what, p in patterns.items() if not any(re.search(p, v) for v in HOSTILE)]


def _in_contexts(*contexts: str) -> list[str]:
    return [f"the context {c}" for c in contexts if c not in CONTEXTS]


def _ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


#: For each guarantee of section 1 that names test_hostile.py: a distinctive start of its wording, and what
#: the table needs to try it (given the guarantee's cell, whose `quoted` parts are read here).
GUARANTEES: dict[str, Any] = {
    "a value in the URL path, query or fragment cannot add": lambda cell: [
        *_contains(*(t for t in _ticked(cell) if t != "%XX")),
        *_matching(a_percent_escape=r"%[0-9A-Fa-f]{2}", a_scheme=r"^[a-z]+://", a_port=r":\d+$"),
        *_contains("//", "@"),
        *_in_contexts("url_path", "url_query"),
    ],
    "a path segment cannot become": lambda cell: [
        *_exactly(*_ticked(cell), "../", "%2e%2e", "\uff0e\uff0e"),
        *_in_contexts("url_path"),
    ],
    "a host variable cannot point elsewhere": lambda cell: [
        *_exactly("evil.com", "a@evil.com", "evil.com:80", "[::1]", "127.0.0.1", "//evil.com"),
        *_in_contexts("url_host"),
    ],
    "a whole-URL variable is an absolute": lambda cell: [
        *_matching(
            an_http_URL=r"^http://[^@]+$",
            a_URL_with_credentials=r"^https?://[^/@]+@",
            a_URL_of_another_scheme=r"^(?!https?:)[a-z][a-z0-9+.-]*://",
            a_relative_URL=r"^//",
        ),
        *_in_contexts("url_whole"),
    ],
    "a header value never carries": lambda cell: [
        *_contains("\r", "\n", "\r\n", "\0", "\t", "\x7f"),
        *_matching(another_control_character=r"[\x01-\x08\x0b\x0c\x0e-\x1f]", an_injected_header=r"\r\n[\w-]+: "),
        *_in_contexts("header_value"),
    ],
    "a JSON-breaking value": lambda cell: [
        *_exactly(*_ticked(cell), '"', "\\", '\\"'),
        *_in_contexts("json_string", "json_value"),
    ],
    "a substituted value is never substituted again": lambda cell: [
        *_exactly(*(t.replace("key", "helpdesk_api_key") for t in _ticked(cell))),
    ],
    "nothing but our own errors escape": lambda cell: [
        *_matching(a_lone_surrogate="[\ud800-\udfff]", a_value_over_the_limits="^.{100000}"),
        *(f"a value refused in {c}" for c in CONTEXTS if all(expected(c, v) == "ok" for v in HOSTILE)),
    ],
}


def test_the_table_tries_every_guarantee_of_security_md_section_1() -> None:
    """Each guarantee of section 1 that says test_hostile.py tests it is tried here: its characters, its
    forms, its contexts. A guarantee added there with test_hostile.py as its test fails here until it is."""
    rows = [row for row in _table(_security_section_1(), "guarantee") if "test_hostile.py" in row[2]]
    assert len(rows) >= 7
    missing = {}
    for guarantee, _how, _tested_by in rows:
        [check] = [c for start, c in GUARANTEES.items() if guarantee.startswith(start)] or [None]
        assert check is not None, f"no hostile values for the guarantee {guarantee!r}"
        if needs := check(guarantee):
            missing[guarantee] = needs
    assert missing == {}


@pytest.mark.parametrize(("context", "value"), CASES)
def test_hostile_value(context: str, value: str) -> None:
    plan = compile_webhook(TEMPLATES[context])
    variables = {"v": value, "helpdesk_api_key": SECRET, "helpdesk_api_key_x": SECRET}
    outcome = expected(context, value)
    if outcome == "error":
        with pytest.raises(RenderError) as caught:
            plan.render(variables)
        assert all((d.variable or "").startswith("$v") for d in caught.value.diagnostics)
        assert value not in str(caught.value) or len(value) <= 2  # the value itself is never quoted
        return
    request = plan.render(variables)
    rendered = request.url + json.dumps(request.headers) + (request.body or b"").decode()
    assert SECRET not in rendered  # never substituted a second time
    parts = urlsplit(request.url)
    if context != "url_whole":
        assert (parts.scheme, parts.port) == ("https", None)
        assert parts.hostname == ("api.example.com" if context != "url_host" else f"{value}.example.com".lower())
    if context == "url_path":
        assert request.url == f"https://api.example.com/a/{reference_percent(value)}/b"
    elif context == "url_query":
        assert request.url == f"https://api.example.com/s?q={reference_percent(value)}&k=1"
    elif context == "url_host":
        assert request.url == f"https://{value}.example.com/x"
    elif context == "url_whole":
        assert request.url == value
    elif context == "header_value":
        assert request.headers == [("X-V", value)]
    else:
        body = json.loads(request.body or b"")
        assert body == {"v": value, "admin": False}


def test_ten_thousand_variables_and_deep_values() -> None:
    plan = compile_webhook(TEMPLATES["json_value"])
    many = {f"k{i}": f"v{i}" for i in range(10_000)} | {"v": [1, 2]}
    assert json.loads(plan.render(many).body or b"") == {"v": [1, 2], "admin": False}
    deep: Any = "x"
    for _ in range(60):
        deep = {"d": deep}
    assert json.loads(plan.render({"v": deep}).body or b"")["v"]["d"]["d"]["d"]
    for _ in range(100):
        deep = [deep]
    with pytest.raises(RenderError, match="nests deeper than 64"):
        plan.render({"v": deep})
