"""Hostile values in every context: each outcome is what specs/security.md promises.

The expected outcome of each (context, value) pair is decided here from the spec's rules,
independently of the encoders: percent-encoding by a byte loop, host validity by a tiny
label check, header refusal by the control-character set.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import pytest

from webhook_dsl import RenderError, compile_webhook

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
    "\\",
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


def test_case_count() -> None:
    assert len(CASES) == len(CONTEXTS) * len(HOSTILE) >= 400


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
