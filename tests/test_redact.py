"""Exact-value scrubbing: every encoding of every vault value disappears, and nothing else changes."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_gateway.redact import Redactor, Span, encoded_forms
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
    scrubbed, count = redactor.scrub(base64.b64encode(prefix + raw + suffix).decode())
    assert count == 1
    # What is left of the blob decodes, at any alignment, to nothing that holds the secret.
    for piece in scrubbed.split("[REDACTED:k]"):
        for offset in range(4):
            chunk = piece[offset:]
            decoded = base64.b64decode(chunk[: len(chunk) - len(chunk) % 4] + "==", validate=False)
            assert raw not in decoded


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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a &#104;&#117;&#110;&#116;&#101;&#114;&#50;&#33; b", "a [REDACTED:k] b"),
        ("a &#x68;&#X75;nter2&excl; b", "a [REDACTED:k] b"),
        ("a %68%75%6E%74%65%72%32%21 b", "a [REDACTED:k] b"),
        ("a hu%6eter2! b", "a [REDACTED:k] b"),
        # Inside a longer run of escapes only the secret's own escapes go.
        ("a %41%42%68%75%6E%74%65%72%32%21%43 b", "a %41%42[REDACTED:k]%43 b"),
        ("a &#65;&#104;&#117;&#110;&#116;&#101;&#114;&#50;&#33;&#65; b", "a &#65;[REDACTED:k]&#65; b"),
        ("a \\u0068\\u0075nter2\\u0021 b", "a [REDACTED:k] b"),
        ("a \\\\u0068unter2! b", "a [REDACTED:k] b"),
        # Clean text holding the same escapes keeps every character.
        ("caf&eacute; &amp; 100%25 \\u00e9t\\u00e9", "caf&eacute; &amp; 100%25 \\u00e9t\\u00e9"),
    ],
)
def test_an_escaped_secret_is_replaced_exactly_where_its_escapes_are(text: str, expected: str) -> None:
    redactor = Redactor.from_secrets([SecretValue("k", b"hunter2!")])
    assert redactor.scrub_text(text) == expected


def test_a_non_bmp_character_escaped_as_a_surrogate_pair_is_decoded() -> None:
    secret = "key-\U0001f511-42"
    escaped = json.dumps(secret)[1:-1]  # ensure_ascii: the emoji is two \uXXXX escapes
    assert "\\ud83d\\udd11" in escaped
    redactor = Redactor.from_secrets([SecretValue("k", secret.encode())])
    assert redactor.scrub_text("x" + escaped.replace("key", "\\u006b\\u0065y")) == "x[REDACTED:k]"


def test_a_pem_key_rewrapped_at_another_width_is_scrubbed_by_its_body() -> None:
    body = base64.b64encode(bytes(range(256)) * 2).decode()
    pem = "-----BEGIN PRIVATE KEY-----\n" + "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    pem += "\n-----END PRIVATE KEY-----\n"
    redactor = Redactor.from_secrets([SecretValue("pem", pem.encode())])
    rewrapped = "\n    ".join(body[i : i + 76] for i in range(0, len(body), 76))
    scrubbed = redactor.scrub_text("key:\n    " + rewrapped + "\nend")
    assert scrubbed == "key:\n    [REDACTED:pem]\nend"


def test_the_private_key_inside_a_json_key_file_is_scrubbed_when_printed_alone() -> None:
    body = base64.b64encode(bytes(range(256))).decode()
    pem = "-----BEGIN PRIVATE KEY-----\n" + "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    pem += "\n-----END PRIVATE KEY-----\n"
    key_file = json.dumps({"type": "service_account", "private_key": pem}, indent=2)
    redactor = Redactor.from_secrets([SecretValue("sa", key_file.encode())])
    scrubbed = redactor.scrub_text("loaded " + pem)
    assert body[:16] not in scrubbed
    assert "[REDACTED:sa]" in scrubbed


def test_a_value_stored_with_a_trailing_newline_is_scrubbed_when_echoed_without_it() -> None:
    redactor = Redactor.from_secrets([SecretValue("tok", b"tok-0123456789\n")])
    assert redactor.scrub_text("Bearer tok-0123456789.") == "Bearer [REDACTED:tok]."


def test_unrelated_wrapped_base64_and_escapes_are_left_alone() -> None:
    redactor = Redactor.from_secrets([SecretValue("k", b"hunter2-but-longer")])
    blob = base64.encodebytes(bytes(range(200))).decode()
    text = blob + "&lt;p&gt; %41%42 \\u0041\n" + blob.replace("\n", "\\n")
    assert redactor.scrub(text) == (text, 0)


def test_joining_lines_finds_a_value_split_across_lines_only_when_asked() -> None:
    redactor = Redactor.from_secrets([SecretValue("k", b"hunter2.but/longer")])
    text = "value: hunter2.\n  but/longer\n"
    assert redactor.find(text) == []
    assert redactor.find(text, join_lines=True) == [Span(7, 28, "[REDACTED:k]")]


# Characters that JSON escapes or that make ``find`` search decoded views, among plain ones.
_TRICKY = st.sampled_from(
    ['"', "\\", "\n", "\t", "\x00", "\x1f", "%", "&", "&#104;", "%68", "\\u0068", "é", "\u2028"]
)


@st.composite
def _json_with_secret(draw: st.DrawFn) -> tuple[Redactor, Any]:
    secret = draw(st.one_of(secret_text, st.text(alphabet='ab"\\\n%&é\x01-', min_size=6, max_size=12)))
    redactor = Redactor.from_secrets([SecretValue("k", secret.encode())])
    forms = sorted(encoded_forms(secret.encode()))
    piece = st.one_of(noise, _TRICKY, st.sampled_from(forms) if forms else noise)
    text = st.lists(piece, max_size=4).map("".join)
    leaves = st.one_of(st.none(), st.booleans(), st.integers(), text)
    value = draw(
        st.recursive(
            leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3)
        )
    )
    return redactor, value


@given(case=_json_with_secret(), ensure_ascii=st.booleans())
def test_json_text_found_clean_means_the_walk_would_change_nothing(
    case: tuple[Redactor, Any], ensure_ascii: bool
) -> None:
    redactor, value = case
    if redactor.clean_json(json.dumps(value, ensure_ascii=ensure_ascii, sort_keys=True)):
        assert redactor.scrub_json(value) == (value, 0)


def test_clean_json_says_clean_only_for_plain_text_without_a_secret() -> None:
    redactor = Redactor.from_secrets([SecretValue("api", b"tok-123456789")])
    assert redactor.clean_json(json.dumps({"content": [{"type": "text", "text": "hello"}]}))
    assert not redactor.clean_json(json.dumps({"k": ["Bearer tok-123456789"]}))
    assert not redactor.clean_json(json.dumps({"k": "line\nbreak"}))  # escapes: walk to be sure
    assert not redactor.clean_json(json.dumps({"k": "100%"}))
    assert Redactor.from_secrets([]).clean_json(json.dumps({"k": "x\n"}))
