"""Masking laws, against forms built here with the standard library, independently of masking.py.

Two laws: no form of a declared secret survives (raw, percent-encoded in either hex case or with ``+``,
JSON-escaped with ``\\/`` or ``\\uXXXX`` in either case, surrogate pairs, nested JSON, base64 and base64url
at every offset, Basic credentials for any user name, and mixes of these character by character); and
text that holds no form comes back exactly as it was.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
from typing import Any
from urllib.parse import quote, quote_plus, unquote, unquote_plus

import pytest
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st

from webhook_dsl.runtime.masking import (
    MASK,
    MIN_SECRET_LENGTH,
    Masker,
    mask_client_data,
    masked_variables,
    secret_strings,
    whole_secret_headers,
    whole_secrets,
)

MAX_EXAMPLES = int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "200"))
SETTINGS = settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# No '*' (a mask beside a secret's own stars could spell it again) and no lone surrogates (not text).
_CHARACTERS = st.characters(blacklist_categories=("Cs",), blacklist_characters="*")
long_secrets = st.text(_CHARACTERS, min_size=MIN_SECRET_LENGTH, max_size=24)


def _lower_hex(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), text)


def _json_u_escape(c: str, upper: bool) -> str:
    units = c.encode("utf-16-be", "surrogatepass")
    escaped = "".join(f"\\u{int.from_bytes(units[i:i + 2], 'big'):04x}" for i in range(0, len(units), 2))
    return escaped.upper().replace("\\U", "\\u") if upper else escaped


@st.composite
def a_form(draw: st.DrawFn, secret: str) -> str:
    """One form a remote or an encoder may give ``secret``, built with the standard library."""
    kind = draw(st.sampled_from([
        "raw", "percent", "percent-lower", "plus", "json", "json-ascii", "json-ascii-upper", "json-slash",
        "json-nested", "mixed", "base64", "base64url", "basic",
    ]))
    if kind == "raw":
        return secret
    if kind == "percent":
        return quote(secret, safe="")
    if kind == "percent-lower":
        return _lower_hex(quote(secret, safe=""))
    if kind == "plus":
        return quote_plus(secret, safe="")
    if kind == "json":
        return json.dumps(secret, ensure_ascii=False)[1:-1]
    if kind == "json-ascii":
        return json.dumps(secret)[1:-1]
    if kind == "json-ascii-upper":
        return re.sub(r"\\u([0-9a-f]{4})", lambda m: "\\u" + m.group(1).upper(), json.dumps(secret)[1:-1])
    if kind == "json-slash":  # PHP's default
        return json.dumps(secret, ensure_ascii=False)[1:-1].replace("/", "\\/")
    if kind == "json-nested":  # a JSON document inside a JSON string
        return json.dumps(json.dumps({"v": secret}))[1:-1]
    if kind == "mixed":  # character by character: raw, \uXXXX (either case) or percent-encoded
        pieces = []
        for c in secret:
            how = draw(st.sampled_from(["raw", "u", "U", "%"]))
            if how == "raw" and c not in '"\\' and ord(c) >= 0x20:
                pieces.append(c)
            elif how == "%":
                pieces.append(quote(c, safe=""))
            else:
                pieces.append(_json_u_escape(c, how == "U"))
        return "".join(pieces)
    prefix = draw(st.binary(max_size=5))
    suffix = draw(st.binary(max_size=5))
    data = prefix + secret.encode("utf-8") + suffix
    if kind == "base64":
        return base64.b64encode(data).decode()
    if kind == "base64url":
        return base64.urlsafe_b64encode(data).decode().rstrip("=")
    user = draw(st.sampled_from(["user", "root", "a", "admin", "ü", ""]))
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


_JSON_ESCAPE = re.compile(r'\\(u[0-9a-fA-F]{4}|["\\/bfnrt])')


def _json_unescape(text: str) -> str:
    """Each JSON escape decoded by the json module, wherever it stands; surrogate pairs joined."""
    decoded = _JSON_ESCAPE.sub(lambda m: json.loads(f'"\\{m.group(1)}"'), text)
    return decoded.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _recoverable(text: str, secret: str) -> bool:
    """Whether ``secret`` can be read back out of ``text`` by decoding it: the independent check."""
    views = {text, unquote(text), unquote_plus(text)}
    for _depth in range(3):  # JSON inside JSON inside JSON
        views |= {_json_unescape(view) for view in views}
    views |= {unquote(view) for view in views}
    if any(secret in view for view in views):
        return True
    needle = secret.encode("utf-8")
    for run in re.findall(r"[A-Za-z0-9+/_-]{4,}", text):
        for offset in range(4):
            chunk = run[offset:]
            chunk = chunk[: len(chunk) - len(chunk) % 4]
            for alphabet in (None, b"-_"):
                try:
                    if needle in base64.b64decode(chunk, altchars=alphabet):
                        return True
                except ValueError:
                    pass
    return False


noise = st.text(st.sampled_from("ab .,:{}\"'/?=&%+-_"), max_size=6)


@SETTINGS
@given(st.data(), st.lists(long_secrets, min_size=1, max_size=3, unique=True))
def test_no_form_of_a_secret_survives(data: st.DataObject, secrets: list[str]) -> None:
    forms = [data.draw(a_form(secret)) for secret in secrets]
    text = "".join(data.draw(noise) + form for form in forms) + data.draw(noise)
    masked = Masker(secrets).text(text)
    note(f"secrets={secrets!r} text={text!r} masked={masked!r}")
    for secret, form in zip(secrets, forms, strict=True):
        assert form.removeprefix("Basic ") not in masked
        assert not _recoverable(masked, secret), (secret, form, masked)


@SETTINGS
@given(long_secrets, st.text(_CHARACTERS, max_size=60))
def test_text_holding_no_form_comes_back_exactly(secret: str, text: str) -> None:
    assume(not _recoverable(text, secret))
    assert Masker([secret]).text(text) == text


json_data = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(_CHARACTERS, max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(_CHARACTERS, max_size=6), inner, max_size=4),
    max_leaves=12,
)


@SETTINGS
@given(json_data, st.lists(long_secrets, max_size=3))
def test_responses_and_records_without_a_secret_are_untouched(response: Any, secrets: list[str]) -> None:
    """The false-positive law for JSON data: a response, its JSON text and a record holding it are left
    exactly as they were when no secret can be read out of them."""
    text = json.dumps(response, ensure_ascii=False)
    assume(not any(_recoverable(text, s) or _recoverable(json.dumps(response), s) for s in secrets))
    masker = Masker(secrets)
    assert masker.text(text) == text
    assert masker.data(response) == response
    record = {"response_body": text, "variables": {"v": response}}
    assert masker.record(record) == record


@SETTINGS
@given(st.data(), long_secrets, st.integers(min_value=0, max_value=80))
def test_head_never_shows_part_of_a_secret(data: st.DataObject, secret: str, limit: int) -> None:
    text = data.draw(noise) + data.draw(a_form(secret)) + data.draw(noise)
    masker = Masker([secret])
    head = masker.head(text, limit)
    assert masker.text(text).startswith(head.removesuffix(MASK)) or head == masker.text(text)[: len(head)]
    assert not _recoverable(head, secret)
    # Any visible start of the secret's raw form would be a leak: the head ends before it or masks it whole.
    shown_starts = range(MIN_SECRET_LENGTH // 2, len(secret))
    assert not any(head.endswith(secret[:k]) and text.startswith(head) for k in shown_starts)


@pytest.mark.parametrize(
    "form",
    [
        "sk_live/Ab c\\/x",  # PHP's \/ (the secret holds '/')
        "sk_live\\u002fAb c/x",
        "sk_live\\u002FAb\\u0020c/x",
        "sk%5Flive%2fAb+c%2Fx",
        "sk_live%2FAb%20c%2fx",
    ],
)
def test_escaped_and_percent_forms_in_either_case(form: str) -> None:
    secret = "sk_live/Ab c/x"
    assert Masker([secret]).text(f"<{form}>") == f"<{MASK}>"


def test_surrogate_pairs_and_basic_credentials_for_any_user() -> None:
    secret = "pässwörd-😀-long"
    masker = Masker([secret])
    escaped = json.dumps(secret)[1:-1]  # \u00e4 ... \ud83d\ude00
    assert "\\ud83d\\ude00" in escaped
    assert masker.text(f'{{"p":"{escaped}"}}') == f'{{"p":"{MASK}"}}'
    assert masker.text(escaped.upper().replace("\\U", "\\u")) != escaped.upper()
    for user in ("user", "root", "a", "ab", "abc", "", "très-long-user-name"):
        header = "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()
        assert masker.text(header) == f"Basic {MASK}", user


def test_short_secrets_are_masked_as_whole_tokens_only() -> None:
    masker = Masker(["1500"])
    assert masker.text('{"pin":"1500","price":15000,"ref":"A1500"}') == '{"pin":"***","price":15000,"ref":"A1500"}'
    assert masker.text("pin=1500&x=1") == "pin=***&x=1"


def test_names_decide_nothing() -> None:
    """A value is secret because it is declared: values under credential-like names, or that merely appear
    in a response, are left alone unless listed."""
    variables = {"search_keyword": "shoes", "max_tokens": 1500, "erp_token": "tok-UNIQUE-7f3a9"}
    masker = Masker.for_call(variables, ["erp_token"])
    response = '{"title":"Red running shoes","price":1500,"echo":"tok-UNIQUE-7f3a9"}'
    assert masker.text(response) == '{"title":"Red running shoes","price":1500,"echo":"***"}'
    assert Masker.for_call(variables, []).text(response) == response
    assert whole_secrets(variables, ["erp_token"]) == {"search_keyword": "shoes", "max_tokens": 1500,
                                                       "erp_token": MASK}


def test_every_string_inside_a_declared_list_or_object_is_a_secret() -> None:
    variables = {"api_keys": ["first-key-0001", "second-key-0002"], "creds": {"user": "svc", "pass": "p4ssw0rd-xyz"}}
    assert set(secret_strings(variables["api_keys"])) >= {"first-key-0001", "second-key-0002"}
    masker = Masker.for_call(variables, ["api_keys", "creds"])
    assert masker.text("k=second-key-0002 p=p4ssw0rd-xyz") == f"k={MASK} p={MASK}"
    hidden = masked_variables(variables, ["api_keys"], "HIDDEN")
    assert hidden["api_keys"] == ["HIDDEN", "HIDDEN"] and hidden["creds"] == variables["creds"]


def test_company_secrets_are_always_secret() -> None:
    variables = {"secrets.erp": "company-secret-1", "plain": "x"}
    assert whole_secrets(variables) == {"secrets.erp": MASK, "plain": "x"}
    assert Masker.for_call(variables).text("company-secret-1") == MASK


def test_record_masks_inside_what_orjson_writes_as_strings() -> None:
    """A store writes a dataclass as JSON: the secret in it is masked all the same."""

    @dataclasses.dataclass
    class Order:
        note: str

    masker = Masker(["tok-UNIQUE-7f3a9"])
    masked = masker.record({"variables": {"order": Order("paid with tok-UNIQUE-7f3a9")}, "at": 1.5})
    assert masked == {"variables": {"order": {"note": f"paid with {MASK}"}}, "at": 1.5}
    clean = {"body": "nothing", "n": [1, 2.5, None]}
    assert masker.record(clean) is clean


def test_credential_headers_whole_and_client_data_by_declaration() -> None:
    headers = [("Authorization", "Bearer t"), ("Cookie", "a=b"), ("X-Api-Key", "k"), ("Accept", "json")]
    assert whole_secret_headers(headers) == [["Authorization", MASK], ["Cookie", MASK], ["X-Api-Key", "k"],
                                             ["Accept", "json"]]
    data = {"erp_token": "tok-UNIQUE-7f3a9", "api_key_hint": "not secret", "note": "uses tok-UNIQUE-7f3a9"}
    assert mask_client_data(data, ["erp_token"]) == {"erp_token": MASK, "api_key_hint": "not secret",
                                                     "note": f"uses {MASK}"}


def test_a_name_reached_by_descent_into_a_declared_secret_is_secret() -> None:
    used = {"creds.user": "svc", "creds": {"user": "svc"}, "credsx": "open", "other.creds": "open"}
    assert whole_secrets(used, ["creds"]) == {"creds.user": MASK, "creds": MASK, "credsx": "open",
                                              "other.creds": "open"}
