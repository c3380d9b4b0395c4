"""Exact-value scrubbing of vault secrets, in every encoding an upstream is likely to use.

For each secret the redactor knows a set of fixed forms (``forms.py``: raw, base64 at each byte
alignment inside a longer blob, URL-encoded, hex, JSON-escaped, ...). One Aho-Corasick automaton
(``ahocorasick-rs``, Rust) over all of them finds the leftmost-longest occurrences in one pass,
whatever the number of secrets. Encodings whose exact form cannot be listed in advance (HTML
entities, ``\\uXXXX`` escapes or percent-escapes of any character, base64 wrapped at any width) are
found by searching decoded views of the text (``views.py``) with the same automaton, then mapping
each match back to the original characters. Every match is replaced with ``[REDACTED:NAME]``.

What stays out of reach: transforms a value's holder must choose to apply (reversed, encrypted,
hashed, split across separate messages or fields, encodings nested inside one another beyond a JSON
string in a JSON string), and values shorter than ``MIN_SECRET_LENGTH``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from ahocorasick_rs import AhoCorasick, MatchKind

from mcp_gateway.redact.forms import MIN_SECRET_LENGTH, encoded_forms
from mcp_gateway.redact.views import DECODERS, Decoder, joined_lines_view
from mcp_gateway.types import SecretValue

__all__ = ["EMPTY", "MIN_SECRET_LENGTH", "Redactor", "Span", "encoded_forms"]

_WITH_LINES: tuple[Decoder, ...] = (*DECODERS, joined_lines_view)


class Span(NamedTuple):
    """Characters ``[start, end)`` of a text hold a form of the secret ``label`` names."""

    start: int
    end: int
    label: str


def _merge(spans: list[Span]) -> list[Span]:
    spans.sort()
    merged = [spans[0]]
    for span in spans[1:]:
        last = merged[-1]
        if span.start < last.end:
            if span.end > last.end:
                merged[-1] = Span(last.start, span.end, last.label)
        else:
            merged.append(span)
    return merged


@dataclass(frozen=True, slots=True)
class Redactor:
    """Scrubs known secret values out of strings and JSON-like structures."""

    _matcher: AhoCorasick | None
    _labels: tuple[str, ...] = ()
    _shortest: int = 0
    _longest: int = 0

    @classmethod
    def from_secrets(cls, secrets: Iterable[SecretValue]) -> Redactor:
        """Build a redactor for ``secrets``; values shorter than ``MIN_SECRET_LENGTH`` are skipped."""
        names: dict[str, str] = {}
        for secret in secrets:
            raw = secret.reveal()
            if len(raw) < MIN_SECRET_LENGTH:
                continue
            for form in sorted(encoded_forms(raw)):
                names.setdefault(form, secret.name)
        if not names:
            return cls(None)
        matcher = AhoCorasick(list(names), matchkind=MatchKind.LeftmostLongest)
        labels = tuple(f"[REDACTED:{name}]" for name in names.values())
        # A decoded view is never longer than its text, so a text shorter than every form is clean.
        return cls(matcher, labels, min(len(form) for form in names), max(len(form) for form in names))

    @property
    def empty(self) -> bool:
        return self._matcher is None

    def find(self, text: str, *, join_lines: bool = False) -> list[Span]:
        """Where ``text`` holds a secret, in any known form; sorted, not overlapping.

        Args:
            text: the text to search.
            join_lines: also search ``text`` with every line break removed (a value split across
                lines: the upstream stderr window). Wrapped base64 is joined again in any case.
        """
        matcher = self._matcher
        if matcher is None or len(text) < self._shortest:
            return []
        matches = matcher.find_matches_as_indexes(text)
        # No decoder finds anything without one of these (C scans; this runs on every outgoing string).
        if not ("%" in text or "&" in text or "\n" in text or "\\" in text):
            if not matches:
                return []
            labels = self._labels
            return [Span(start, end, labels[i]) for i, start, end in matches]
        labels = self._labels
        spans = [Span(start, end, labels[i]) for i, start, end in matches]
        found = False
        for decode in _WITH_LINES if join_lines else DECODERS:
            view = decode(text)
            if view is None:
                continue
            for low, high in view.windows(self._longest):
                part = view.text if low == 0 and high == len(view.text) else view.text[low:high]
                for i, start, end in matcher.find_matches_as_indexes(part):
                    first, last = view.original(low + start, low + end)
                    spans.append(Span(first, last, labels[i]))
                    found = True
        return _merge(spans) if found else spans

    def scrub(self, text: str) -> tuple[str, int]:
        """Return ``text`` with every secret form replaced, and the number of replacements."""
        spans = self.find(text)
        if not spans:
            return text, 0
        pieces: list[str] = []
        position = 0
        for start, end, label in spans:
            pieces.append(text[position:start])
            pieces.append(label)
            position = end
        pieces.append(text[position:])
        return "".join(pieces), len(spans)

    def scrub_text(self, text: str) -> str:
        return self.scrub(text)[0]

    def clean_json(self, encoded: str) -> bool:
        """Whether ``scrub_json`` would find nothing in the value that ``encoded`` is the JSON text of
        (any ``json.dumps`` output: separators, key order, ``ensure_ascii``). True only when
        that is certain: False means "walk the value" (``scrub_json``), not "it holds a secret".

        One search over the whole text instead of one per string (a governed call's answer: about a
        hundred Python calls fewer). Sound because without a backslash in ``encoded`` no string of the
        value holds a quote, a backslash or a control character (``json.dumps`` would have escaped
        it), so each string stands verbatim in the text; and without ``%``, ``&``, ``\\n`` or ``\\``
        ``find`` searches no decoded view, only the string itself. A form in any string is then a form
        in the text, which the automaton reports (a match across two strings only costs the walk).
        """
        matcher = self._matcher
        if matcher is None:
            return True
        if "\\" in encoded or "%" in encoded or "&" in encoded:
            return False
        return not matcher.find_matches_as_indexes(encoded)

    def scrub_json(self, value: Any) -> tuple[Any, int]:
        """Scrub every string (keys included) inside a JSON-like value; returns a new value and a count."""
        if self._matcher is None:
            return value, 0
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict | Mapping):
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
