"""Exact-value scrubbing: every encoding of every vault value disappears, and nothing else changes."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, quote_plus

from hypothesis import given
from hypothesis import strategies as st

from mcp_gateway.redact import Redactor
from mcp_gateway.types import SecretValue

secret_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=6, max_size=40
)
noise = st.text(alphabet="abcdefghij XYZ-_.", max_size=20)


def _encodings(value: str) -> list[str]:
    raw = value.encode()
    return [
        value,
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        quote(value, safe=""),
        quote_plus(value),
        raw.hex(),
        raw.hex().upper(),
        json.dumps(value)[1:-1],
        json.dumps({"v": value}),
    ]


@given(secret=secret_text, before=noise, after=noise)
def test_every_encoding_of_a_secret_is_scrubbed_wherever_it_sits(
    secret: str, before: str, after: str
) -> None:
    redactor = Redactor.from_secrets([SecretValue("k", secret.encode())])
    for form in _encodings(secret):
        scrubbed, count = redactor.scrub(before + form + after)
        assert count >= 1
        assert form not in scrubbed


@given(secret=secret_text, prefix=st.binary(max_size=5), suffix=st.binary(max_size=5))
def test_a_secret_inside_a_longer_base64_blob_is_scrubbed_at_any_alignment(
    secret: str, prefix: bytes, suffix: bytes
) -> None:
    raw = secret.encode()
    redactor = Redactor.from_secrets([SecretValue("k", raw)])
    blob = base64.b64encode(prefix + raw + suffix).decode()
    scrubbed, _ = redactor.scrub(blob)
    if len(raw) >= 9:
        # Long enough that the secret-only middle of the blob is at least a few characters.
        assert base64.b64encode(prefix + raw + suffix).decode() != scrubbed


def test_text_without_secrets_is_returned_unchanged() -> None:
    redactor = Redactor.from_secrets([SecretValue("k", b"hunter2-but-longer")])
    assert redactor.scrub("nothing to see here") == ("nothing to see here", 0)


def test_scrub_json_walks_keys_and_nested_values() -> None:
    redactor = Redactor.from_secrets([SecretValue("api", b"tok-123456789")])
    value = {"tok-123456789": ["a", {"x": "Bearer tok-123456789"}], "n": 3}
    scrubbed, count = redactor.scrub_json(value)
    assert count == 2
    assert scrubbed == {"[REDACTED:api]": ["a", {"x": "Bearer [REDACTED:api]"}], "n": 3}


def test_very_short_values_are_not_used_for_scrubbing() -> None:
    redactor = Redactor.from_secrets([SecretValue("pin", b"12")])
    assert redactor.empty
    assert redactor.scrub("order 12 of 120") == ("order 12 of 120", 0)


def test_the_longest_overlapping_secret_wins() -> None:
    redactor = Redactor.from_secrets([SecretValue("short", b"abcdef"), SecretValue("long", b"abcdefghij")])
    assert redactor.scrub_text("x abcdefghij y") == "x [REDACTED:long] y"
