"""Masking laws, checked against forms and a replacement computed here, independently of masking.py.

A secret must never survive in any form the masker knows (raw, percent-encoded, JSON-escaped, inside
Basic-auth base64); text holding no form must come back unchanged. The quick paths (substring screens,
one search over a whole log record's JSON, a bounded scan for a body's head) must decide exactly as a
plain replacement over everything would.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webhook_dsl.masking import MASK, MIN_SECRET_LENGTH, Masker, whole_secret_headers, whole_secrets

MAX_EXAMPLES = int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "200"))
SETTINGS = settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reference_forms(secret: str) -> set[str]:
    """Every form a secret may take in our outputs, as the README lists them."""
    forms = {secret, quote(secret, safe=""), json.dumps(secret, ensure_ascii=False)[1:-1]}
    for pair in (secret, f"{secret}:", f":{secret}"):
        forms.add(base64.b64encode(pair.encode()).decode().rstrip("="))
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


def reference_mask(text: str, secrets: list[str]) -> str:
    """Leftmost occurrence first, the longest form at a position, each replaced whole."""
    forms = sorted(set().union(*map(reference_forms, secrets)), key=len, reverse=True) if secrets else []
    return re.sub("|".join(map(re.escape, forms)), MASK, text) if forms else text


def holds_a_form(text: str, secrets: list[str]) -> bool:
    return any(form in text for secret in secrets for form in reference_forms(secret))


def strings_in(value: Any) -> list[str]:
    """Every string inside JSON-like data, dictionary keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for item in value for s in strings_in(item)]
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in [*strings_in(key), *strings_in(item)]]
    return []


# No '*' (a mask next to a secret's own stars could spell it again) and no lone surrogates (not text).
_CHARACTERS = st.characters(blacklist_categories=("Cs",), blacklist_characters="*")
secrets_strategy = st.lists(st.text(_CHARACTERS, min_size=1, max_size=12), min_size=1, max_size=3, unique=True)


@st.composite
def secrets_and_text(draw: st.DrawFn) -> tuple[list[str], str]:
    """Secrets, and text stitched from noise and their forms (so occurrences, overlaps and near misses are common)."""
    secrets = draw(secrets_strategy)
    forms = sorted(set().union(*map(reference_forms, secrets))) or ["x"]
    pieces = st.one_of(
        st.text(_CHARACTERS, max_size=8), st.sampled_from(forms), st.sampled_from(forms).map(lambda f: f[:-1])
    )
    return secrets, "".join(draw(st.lists(pieces, max_size=8)))


def json_values(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(_CHARACTERS, max_size=6) | leaves.filter(
            lambda v: isinstance(v, str)), inner, max_size=3),
        max_leaves=8,
    )


@SETTINGS
@given(secrets_and_text())
def test_text_masks_every_form_and_leaves_clean_text_alone(case: tuple[list[str], str]) -> None:
    secrets, text = case
    masked = Masker(secrets).text(text)
    assert masked == reference_mask(text, secrets)
    assert not holds_a_form(masked, secrets)
    if not holds_a_form(text, secrets):
        assert masked == text


@SETTINGS
@given(secrets_and_text(), st.integers(min_value=0, max_value=40))
def test_head_is_the_start_of_the_masked_text_and_never_half_a_secret(case: tuple[list[str], str], limit: int) -> None:
    secrets, text = case
    head = Masker(secrets).head(text, limit)
    whole = reference_mask(text, secrets)
    assert whole.startswith(head)
    assert not holds_a_form(head, secrets)
    assert len(head) <= limit + len(MASK) - 1 or head == whole
    if not holds_a_form(text, secrets):
        assert head == text[:limit]


@st.composite
def secrets_and_record(draw: st.DrawFn) -> tuple[list[str], dict[str, Any]]:
    secrets = draw(secrets_strategy)
    forms = sorted(set().union(*map(reference_forms, secrets))) or ["x"]
    strings = st.one_of(st.text(_CHARACTERS, max_size=8), st.sampled_from(forms),
                        st.tuples(st.text(_CHARACTERS, max_size=4), st.sampled_from(forms)).map("".join))
    big = st.integers(min_value=2**64, max_value=2**70)  # not plain JSON for orjson: the record is walked
    leaves = st.one_of(strings, st.integers(), big, st.floats(allow_nan=False), st.booleans(), st.none())
    return secrets, draw(st.dictionaries(st.sampled_from(["url", "body", "variables", "error"]), json_values(leaves)))


@SETTINGS
@given(secrets_and_record())
def test_record_masks_every_string_in_its_values_and_returns_a_clean_record_as_it_is(
    case: tuple[list[str], dict[str, Any]],
) -> None:
    secrets, record = case
    masked = Masker(secrets).record(record)
    assert list(masked) == list(record)  # a record's own keys are its schema
    assert not any(holds_a_form(s, secrets) for s in strings_in(list(masked.values())))
    if not any(holds_a_form(s, secrets) for s in strings_in(list(record.values()))):
        assert masked == record


def test_record_screens_the_json_escaped_forms() -> None:
    """A secret with characters JSON escapes is found inside the record's JSON, and masked."""
    secret = 'pa"ss\\word\n'
    masker = Masker([secret])
    # One field per record: a field that sends the record down the slow path would mask the others too.
    assert masker.record({"body": f'{{"p": {json.dumps(secret)}}}', "n": 1}) == {"body": '{"p": "***"}', "n": 1}
    assert masker.record({"raw": f"x{secret}y"}) == {"raw": "x***y"}
    assert masker.record({"url": "/p/" + quote(secret, safe="")}) == {"url": "/p/***"}
    clean = {"body": "nothing", "n": [1, 2.5, None]}
    assert masker.record(clean) is clean


def test_record_masks_inside_what_orjson_writes_as_strings() -> None:
    """A store writes a dataclass or a datetime as JSON text: the secret in it is masked all the same."""

    @dataclasses.dataclass
    class Order:
        note: str

    masker = Masker(["tok-UNIQUE-7f3a9"])
    masked = masker.record({"variables": {"order": Order("paid with tok-UNIQUE-7f3a9")}, "at": 1.5})
    assert masked == {"variables": {"order": {"note": "paid with ***"}}, "at": 1.5}


def test_whole_secrets_and_headers_replace_values_by_name() -> None:
    variables = {"erp_token": "t", "order": "A-1", "pin": "1234", "nested": {"password": "x"}}
    assert whole_secrets(variables, ["pin"]) == {"erp_token": MASK, "order": "A-1", "pin": MASK,
                                                 "nested": {"password": "x"}}
    headers = [("Authorization", "Bearer t"), ("X-Api-Key", "k"), ("Accept", "json"), ("X-Trace", "Bearer t")]
    assert whole_secret_headers(headers) == [["Authorization", MASK], ["X-Api-Key", MASK], ["Accept", "json"],
                                             ["X-Trace", "Bearer t"]]
