"""Exact-value scrubbing of vault secrets, in every encoding an upstream is likely to use.

For each secret the redactor knows its raw text and its base64 (standard and URL-safe, at each of the
three byte alignments it can take inside a longer base64 string), URL-encoded, hex (both cases) and
JSON-escaped forms. One Aho-Corasick automaton (pyahocorasick, C) over all forms finds the leftmost
longest occurrences in a single pass, whatever the number of secrets (a regex alternation of 1,500
forms cost 1.5 ms per KiB), and each is replaced with ``[REDACTED:NAME]``. Values shorter than
``MIN_SECRET_LENGTH`` are not scrubbed: scrubbing a two-letter value would shred every result.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus

import ahocorasick

from mcp_gateway.types import SecretValue

MIN_SECRET_LENGTH = 6
# A base64 fragment shorter than this is too likely to occur by chance in unrelated data.
_MIN_FRAGMENT = 8


def _base64_forms(raw: bytes) -> set[str]:
    forms: set[str] = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        full = encode(raw).decode("ascii")
        forms.add(full)
        forms.add(full.rstrip("="))
        # Inside a longer blob the secret may start at byte offset 0, 1 or 2 of a 3-byte group; keep
        # only the characters that depend on the secret's bytes alone.
        for shift in (1, 2):
            encoded = encode(b"\0" * shift + raw).decode("ascii").rstrip("=")
            start = -(-8 * shift // 6)
            end = (8 * (shift + len(raw))) // 6
            fragment = encoded[start:end]
            if len(fragment) >= _MIN_FRAGMENT:
                forms.add(fragment)
        body = full.rstrip("=")
        body = body[: (8 * len(raw)) // 6]
        if len(body) >= _MIN_FRAGMENT:
            forms.add(body)
    return forms


def encoded_forms(raw: bytes) -> set[str]:
    """Every textual form of ``raw`` that the redactor scrubs."""
    forms = _base64_forms(raw)
    hexed = binascii.hexlify(raw).decode("ascii")
    forms.update({hexed, hexed.upper()})
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return {f for f in forms if f}
    forms.update({text, quote(text, safe=""), quote_plus(text), quote(text)})
    escaped = json.dumps(text)[1:-1]
    forms.add(escaped)
    forms.add(json.dumps(text, ensure_ascii=False)[1:-1])
    # A JSON string embedded in another JSON string is escaped twice.
    forms.add(json.dumps(escaped)[1:-1])
    return {f for f in forms if f}


@dataclass(frozen=True, slots=True)
class Redactor:
    """Scrubs known secret values out of strings and JSON-like structures."""

    _automaton: Any

    @classmethod
    def from_secrets(cls, secrets: Iterable[SecretValue]) -> Redactor:
        """Build a redactor for ``secrets``; values shorter than ``MIN_SECRET_LENGTH`` are skipped."""
        names: dict[str, str] = {}
        for secret in secrets:
            raw = secret.reveal()
            if len(raw) < MIN_SECRET_LENGTH:
                continue
            for form in encoded_forms(raw):
                names.setdefault(form, secret.name)
        if not names:
            return cls(None)
        automaton = ahocorasick.Automaton()
        for form, name in names.items():
            automaton.add_word(form, (len(form), f"[REDACTED:{name}]"))
        automaton.make_automaton()
        return cls(automaton)

    @property
    def empty(self) -> bool:
        return self._automaton is None

    def scrub(self, text: str) -> tuple[str, int]:
        """Return ``text`` with every secret form replaced, and the number of replacements."""
        if self._automaton is None or not text:
            return text, 0
        pieces: list[str] = []
        position = count = 0
        # iter_long yields the leftmost-longest, non-overlapping matches, in order.
        for end, (length, label) in self._automaton.iter_long(text):
            start = end - length + 1
            pieces.append(text[position:start])
            pieces.append(label)
            position = end + 1
            count += 1
        if not count:
            return text, 0
        pieces.append(text[position:])
        return "".join(pieces), count

    def scrub_text(self, text: str) -> str:
        return self.scrub(text)[0]

    def scrub_json(self, value: Any) -> tuple[Any, int]:
        """Scrub every string (keys included) inside a JSON-like value; returns a new value and a count."""
        if self._automaton is None:
            return value, 0
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, Mapping):
            out: dict[Any, Any] = {}
            total = 0
            for key, item in value.items():
                new_key, n_key = self.scrub(key) if isinstance(key, str) else (key, 0)
                new_item, n_item = self.scrub_json(item)
                out[new_key] = new_item
                total += n_key + n_item
            return out, total
        if isinstance(value, list | tuple):
            items = []
            total = 0
            for item in value:
                new_item, n = self.scrub_json(item)
                items.append(new_item)
                total += n
            return items, total
        return value, 0


EMPTY = Redactor(None)
