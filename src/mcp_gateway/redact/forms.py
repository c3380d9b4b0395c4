"""The textual forms of a secret that the automaton searches for directly.

Forms are fixed strings: raw, base64 (standard and URL-safe, whole and at each of the three byte
alignments it can take inside a longer blob), hex in both cases, URL-encoded, JSON-escaped (once and
twice) and, for a value that is not text or not ASCII, its bytes read as Latin-1 (what a decoder that
works byte by byte, like the percent-decoding view, produces). Encodings whose form varies with what
surrounds it or with the encoder's whims (line-wrapped base64, ``\\uXXXX`` or HTML entities of any
character, percent-encoding of any byte) are found by decoding the text instead: see ``views.py``.

A value is also searched for with surrounding whitespace stripped, with its line breaks removed (a
PEM key or a JSON document re-wrapped or indented), and, for each PEM block it holds, by the block's
base64 body alone (the key itself, whatever the width it is wrapped at; a JSON key file's
``private_key`` included).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from urllib.parse import quote, quote_plus

MIN_SECRET_LENGTH = 6
"""Values shorter than this are not scrubbed: scrubbing a two-letter value would shred every result."""

# The base64 characters that depend on a 6-byte value alone, at byte offset 1 or 2 of a blob, are 7;
# 7 base64 characters (42 bits) occur by chance about once in 2**42 positions per form.
_MIN_FRAGMENT = 7
_LINE_BREAKS = re.compile(r"\r?\n[ \t]*")
_PEM_NOISE = re.compile(r"\\[nr]|\s")
_PEM_BODY = re.compile(r"-----BEGIN [^-\r\n]{1,64}-----(.*?)-----END [^-\r\n]{1,64}-----", re.DOTALL)


def _base64_forms(raw: bytes) -> set[str]:
    forms: set[str] = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        full = encode(raw).decode("ascii")
        forms.add(full)
        forms.add(full.rstrip("="))
        # Inside a longer blob the value may start at byte offset 0, 1 or 2 of a 3-byte group; keep
        # only the characters that depend on the value's bytes alone.
        for shift in (0, 1, 2):
            encoded = encode(b"\0" * shift + raw).decode("ascii").rstrip("=")
            start = -(-8 * shift // 6)
            end = (8 * (shift + len(raw))) // 6
            fragment = encoded[start:end]
            if len(fragment) >= _MIN_FRAGMENT:
                forms.add(fragment)
    return forms


def _text_forms(text: str) -> set[str]:
    forms = {text, quote(text, safe=""), quote_plus(text), quote(text)}
    escaped = json.dumps(text)[1:-1]
    forms.add(escaped)
    forms.add(json.dumps(text, ensure_ascii=False)[1:-1])
    # A JSON string embedded in another JSON string is escaped twice.
    forms.add(json.dumps(escaped)[1:-1])
    return forms


def _variants(raw: bytes) -> set[bytes]:
    """``raw`` and the values derived from it that are searched for too (each at least 6 bytes)."""
    found = {raw, raw.strip()}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None:
        collapsed = _LINE_BREAKS.sub("", text.strip())
        found.add(collapsed.encode("utf-8"))
        # The key inside, whatever its wrapping: also a PEM held in a JSON key file (``\\n`` escapes).
        for body in _PEM_BODY.findall(text):
            found.add(_PEM_NOISE.sub("", body).encode("ascii", errors="ignore"))
    return {value for value in found if len(value) >= MIN_SECRET_LENGTH}


def encoded_forms(raw: bytes) -> set[str]:
    """Every fixed textual form of ``raw`` (and of its variants) that the redactor searches for."""
    forms: set[str] = set()
    for value in _variants(raw):
        forms |= _base64_forms(value)
        hexed = binascii.hexlify(value).decode("ascii")
        forms.update({hexed, hexed.upper()})
        latin = value.decode("latin-1")
        forms.add(latin)
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            continue
        forms |= _text_forms(text)
    return {form for form in forms if form}
