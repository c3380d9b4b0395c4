"""Attack: an upstream leaks a secret it holds in an encoding the redactor used to miss.

Each form below escaped the redactor before (issue 13, item 9): base64 wrapped at 76 columns (MIME)
or 64 (PEM) for values of 57 bytes or more, base64 of a 6-byte value at byte offset 1 or 2 inside a
longer blob, ``\\uXXXX`` escapes of every character, HTML entities of every character (named, decimal,
hexadecimal, mixed), and every byte percent-encoded (either case). For any value of at least 6 bytes,
in any of these forms, at any offset inside random text, the scrubbed text must not give the value
back when decoded the same way. The decoders here are written independently of ``redact/views.py``.
"""

from __future__ import annotations

import base64
import html
import json
import re
import string
from html.entities import codepoint2name
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from mcp_gateway.http.egress import scrub_message
from mcp_gateway.redact import Redactor
from mcp_gateway.types import SecretValue

# Random text around a form; without the escape introducers, so the reference decoders below cannot
# be confused by the noise itself.
noise = st.text(
    alphabet=st.sampled_from(string.ascii_letters + string.digits + " .,:;!?()[]{}=+/-_\n\t'\"éß€✓"),
    max_size=120,
)
secret_bytes = st.binary(min_size=6, max_size=120)
secret_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=6, max_size=40
)
short_or_long = st.one_of(st.binary(min_size=6, max_size=8), st.binary(min_size=57, max_size=160))


def _redactor(raw: bytes) -> Redactor:
    return Redactor.from_secrets([SecretValue("k", raw)])


def _base64_payloads(text: str) -> list[bytes]:
    """Every decoding of every base64 run in ``text`` (line breaks joined), at each of 4 char offsets."""
    joined = re.sub(r"\r?\n[ \t]*", "", text)
    out: list[bytes] = []
    for run in re.findall(r"[A-Za-z0-9+/]{4,}|[A-Za-z0-9_-]{4,}", joined):
        for offset in range(4):
            chunk = run[offset:]
            chunk = chunk[: len(chunk) - len(chunk) % 4]
            for decode in (base64.b64decode, base64.urlsafe_b64decode):
                try:
                    out.append(decode(chunk))
                except ValueError:
                    continue
    return out


def _chunks(raw: bytes, size: int = 6) -> set[bytes]:
    return {raw[i : i + size] for i in range(len(raw) - size + 1)}


def _assert_no_chunk_in_base64(raw: bytes, scrubbed: str, around: bytes) -> None:
    payloads = _base64_payloads(scrubbed)
    # A 6-byte piece that the random bytes around the value also hold is not the value's to leak.
    leaked = {
        chunk for chunk in _chunks(raw) for payload in payloads if chunk in payload and chunk not in around
    }
    assert not leaked


@given(
    raw=short_or_long,
    prefix=st.binary(max_size=5),
    suffix=st.binary(max_size=5),
    before=noise,
    after=noise,
    width=st.sampled_from([64, 76]),
    newline=st.sampled_from(["\n", "\r\n"]),
)
def test_wrapped_base64_of_a_secret_is_scrubbed_at_any_width_alignment_and_offset(
    raw: bytes, prefix: bytes, suffix: bytes, before: str, after: str, width: int, newline: str
) -> None:
    encoded = base64.b64encode(prefix + raw + suffix).decode()
    wrapped = newline.join(encoded[i : i + width] for i in range(0, len(encoded), width))
    scrubbed, count = _redactor(raw).scrub(before + newline + wrapped + newline + after)
    assert count >= 1
    _assert_no_chunk_in_base64(raw, scrubbed, prefix + suffix)


@given(raw=st.binary(min_size=57, max_size=200), before=noise, after=noise)
def test_mime_base64_of_a_long_secret_inside_json_text_is_scrubbed(
    raw: bytes, before: str, after: str
) -> None:
    # As it travels inside a serialized JSON string: the line breaks are the two characters ``\n``.
    mime = base64.encodebytes(raw).decode().replace("\n", "\\n")
    scrubbed, count = _redactor(raw).scrub(f'{{"a": "{before}\\n{mime}{after}"}}'.replace("\n", " "))
    assert count >= 1
    _assert_no_chunk_in_base64(raw, scrubbed.replace("\\n", "\n"), b"")


@given(
    raw=st.binary(min_size=6, max_size=6),
    shift=st.sampled_from([0, 1, 2]),
    tail=st.binary(max_size=9),
    urlsafe=st.booleans(),
    before=noise,
    after=noise,
)
def test_base64_of_a_six_byte_secret_is_scrubbed_at_every_byte_offset_of_a_longer_blob(
    raw: bytes, shift: int, tail: bytes, urlsafe: bool, before: str, after: str
) -> None:
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    head = b"\x01\x02"[:shift]
    blob = encode(head + raw + tail).decode()
    scrubbed, count = _redactor(raw).scrub(before + " " + blob + " " + after)
    assert count >= 1
    _assert_no_chunk_in_base64(raw, scrubbed, head + tail)


def _u_escape(text: str, upper: bool) -> str:
    units = text.encode("utf-16-be")
    codes = [int.from_bytes(units[i : i + 2], "big") for i in range(0, len(units), 2)]
    return "".join(f"\\u{code:04X}" if upper else f"\\u{code:04x}" for code in codes)


def _u_unescape(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        return match.group(0).encode("ascii").decode("unicode_escape")

    decoded = re.sub(r"(?:\\u[0-9A-Fa-f]{4})+", one, text)
    return decoded.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


@given(secret=secret_text, upper=st.booleans(), before=noise, after=noise)
def test_every_character_u_escaped_is_scrubbed(secret: str, upper: bool, before: str, after: str) -> None:
    scrubbed, count = _redactor(secret.encode()).scrub(before + _u_escape(secret, upper) + after)
    assert count >= 1
    assert secret not in _u_unescape(scrubbed)


@given(secret=secret_text, before=noise, after=noise)
def test_every_character_u_escaped_inside_a_serialized_json_string_is_scrubbed(
    secret: str, before: str, after: str
) -> None:
    # A string holding ``\\u0068...`` is serialized with each backslash doubled.
    escaped = _u_escape(secret, upper=False).replace("\\", "\\\\")
    scrubbed, count = _redactor(secret.encode()).scrub(f'{{"v": "{before}{escaped}{after}"}}')
    assert count >= 1
    assert secret not in _u_unescape(scrubbed.replace("\\\\", "\\"))


_STYLES = ("decimal", "hex", "HEX", "named")


def _entity(char: str, style: str) -> str:
    code = ord(char)
    if style == "named" and code in codepoint2name:
        return f"&{codepoint2name[code]};"
    if style == "hex":
        return f"&#x{code:x};"
    if style == "HEX":
        return f"&#X{code:X};"
    return f"&#{code};"


@given(secret=secret_text, data=st.data(), before=noise, after=noise)
def test_every_character_as_an_html_entity_is_scrubbed_in_any_mix_of_styles(
    secret: str, data: st.DataObject, before: str, after: str
) -> None:
    styles = data.draw(st.lists(st.sampled_from(_STYLES), min_size=len(secret), max_size=len(secret)))
    encoded = "".join(_entity(char, style) for char, style in zip(secret, styles, strict=True))
    scrubbed, count = _redactor(secret.encode()).scrub(before + encoded + after)
    assert count >= 1
    assert secret not in html.unescape(scrubbed)


@given(secret=secret_text, before=noise, after=noise)
def test_a_secret_html_escaped_by_the_standard_library_is_scrubbed(
    secret: str, before: str, after: str
) -> None:
    encoded = html.escape(secret).encode("ascii", "xmlcharrefreplace").decode()
    scrubbed, count = _redactor(secret.encode()).scrub(before + encoded + after)
    assert count >= 1
    assert secret not in html.unescape(scrubbed)


@given(raw=secret_bytes, data=st.data(), before=noise, after=noise)
def test_every_byte_percent_encoded_is_scrubbed_in_either_case(
    raw: bytes, data: st.DataObject, before: str, after: str
) -> None:
    cases = data.draw(st.lists(st.booleans(), min_size=len(raw), max_size=len(raw)))
    encoded = "".join(f"%{b:02X}" if upper else f"%{b:02x}" for b, upper in zip(raw, cases, strict=True))
    scrubbed, count = _redactor(raw).scrub(before + encoded + after)
    assert count >= 1
    assert raw not in unquote_to_bytes(scrubbed)


@given(secret=secret_text, before=noise, after=noise)
def test_escaped_forms_are_replaced_exactly_and_the_text_around_them_is_kept(
    secret: str, before: str, after: str
) -> None:
    redactor = _redactor(secret.encode())
    assume(redactor.scrub(before)[1] == 0 and redactor.scrub(after)[1] == 0)
    for encoded in (
        _u_escape(secret, upper=False),
        "".join(f"&#{ord(c)};" for c in secret),
        "".join(f"%{b:02x}" for b in secret.encode()),
    ):
        # A separator the value cannot run into, so the match cannot start inside the noise.
        assert redactor.scrub(f"{before}\x00{encoded}\x00{after}") == (
            f"{before}\x00[REDACTED:k]\x00{after}",
            1,
        )


def _every_form(secret: str) -> dict[str, str]:
    raw = secret.encode()
    return {
        "mime": base64.encodebytes(b"\x01" + raw + b"tail").decode(),
        "pem64": "\r\n".join(re.findall(".{1,64}", base64.b64encode(b"xy" + raw).decode())),
        "u_escapes": _u_escape(secret, upper=True),
        "entities": "".join(_entity(char, _STYLES[i % 4]) for i, char in enumerate(secret)),
        "percent": "".join(f"%{b:02x}" for b in raw),
    }


@pytest.mark.parametrize("form", ["mime", "pem64", "u_escapes", "entities", "percent"])
def test_the_egress_scrubber_removes_each_form_from_a_message_toward_the_agent(form: str) -> None:
    secret = "sk_live_" + "Qm9yZGVyIGNvbGxpZGU" * 4  # 84 bytes: its base64 spans two MIME lines
    redactor = _redactor(secret.encode())
    leak = _every_form(secret)[form]
    message = {
        "jsonrpc": "2.0",
        "id": 7,
        "result": {"content": [{"type": "text", "text": f"out: {leak} end"}]},
    }
    scrubbed, count = scrub_message(json.dumps(message), redactor)
    assert count >= 1
    text = json.loads(scrubbed)["result"]["content"][0]["text"]
    assert text.startswith("out: ")
    assert "[REDACTED:k]" in text
    assert secret not in html.unescape(_u_unescape(unquote_to_bytes(text).decode("utf-8", "replace")))
    _assert_no_chunk_in_base64(secret.encode(), text, b"\x01tailxy")
