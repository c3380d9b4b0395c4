"""Decoded views of a text: the encodings whose exact form the automaton cannot know in advance.

A secret can be written in forms that vary with the encoder or with what surrounds it: any mix of
HTML entities (named, ``&#NN;``, ``&#xHH;``), ``\\uXXXX`` escapes of any character, any byte
percent-encoded in either case, base64 wrapped at any width. Instead of listing every variant, each
decoder here turns the text into a ``View``: the same text with one kind of escape decoded (or line
breaks removed), which remembers where each decoded piece came from. The automaton searches the view
for the plain forms, and a match is mapped back to the original characters to replace.

Each decoder returns ``None`` when the text holds nothing it would decode, so clean text costs one
substring test per decoder. Views are one layer deep: an entity inside a percent-escape is not found.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from html.entities import html5
from itertools import accumulate

Token = tuple[int, int, str, int]
"""An escape found in the text: original start, original end, what it decodes to, and its scale (the
number of original characters per decoded character, when uniform; 0 when the token is atomic)."""


@dataclass(frozen=True, slots=True)
class View:
    """``text`` with some escapes decoded; the tokens' positions, in the view and in the original."""

    text: str
    view_starts: list[int]
    view_ends: list[int]
    orig_starts: list[int]
    orig_ends: list[int]
    scales: list[int]

    def windows(self, reach: int) -> list[tuple[int, int]]:
        """The parts of the view within ``reach`` characters of a decoded token, merged.

        A match that touches no token is a match in the original text too, so only these parts need
        searching (with ``reach`` the longest form's length): a few escapes in a long text cost a few
        short searches, not a second pass over all of it.
        """
        starts, ends, size = self.view_starts, self.view_ends, len(self.text)
        # A new window wherever two tokens are further apart than twice the reach.
        cuts = [k for k in range(1, len(starts)) if starts[k] - ends[k - 1] > 2 * reach]
        firsts, lasts = [0, *cuts], [*(k - 1 for k in cuts), len(starts) - 1]
        return [
            (max(0, starts[first] - reach), min(size, ends[last] + reach))
            for first, last in zip(firsts, lasts, strict=True)
        ]

    def original(self, start: int, end: int) -> tuple[int, int]:
        """The original span that the view's ``[start, end)`` came from (whole tokens when atomic)."""
        k = bisect_right(self.view_starts, start) - 1
        if k < 0:
            first = start
        elif start < self.view_ends[k]:
            scale = self.scales[k]
            first = self.orig_starts[k] + scale * (start - self.view_starts[k])
        else:
            first = self.orig_ends[k] + (start - self.view_ends[k])
        k = bisect_right(self.view_starts, end - 1) - 1
        if k < 0:
            last = end
        elif end - 1 < self.view_ends[k]:
            scale = self.scales[k]
            last = self.orig_starts[k] + scale * (end - self.view_starts[k]) if scale else self.orig_ends[k]
        else:
            last = self.orig_ends[k] + (end - self.view_ends[k])
        return first, last


Decoder = Callable[[str], View | None]


def build_view(text: str, tokens: list[Token]) -> View | None:
    """The view of ``text`` with ``tokens`` (in order, not overlapping) decoded; ``None`` if none."""
    if not tokens:
        return None
    # Comprehensions and zips rather than one loop: a text full of escapes has thousands of tokens.
    orig_starts, orig_ends, decoded, scales = (list(column) for column in zip(*tokens, strict=True))
    gaps = [text[a:b] for a, b in zip([0, *orig_ends], [*orig_starts, len(text)], strict=True)]
    parts: list[str] = [""] * (2 * len(tokens) + 1)
    parts[0::2] = gaps
    parts[1::2] = decoded
    lengths = [len(piece) for piece in decoded]
    shrink = accumulate(
        (end - start - length for start, end, length in zip(orig_starts, orig_ends, lengths, strict=True)),
        initial=0,
    )
    view_starts = [start - shrunk for start, shrunk in zip(orig_starts, shrink, strict=False)]
    view_ends = [start + length for start, length in zip(view_starts, lengths, strict=True)]
    return View("".join(parts), view_starts, view_ends, orig_starts, orig_ends, scales)


# Every pattern starts with a literal character, which lets ``re`` skip ahead to it (a pattern that
# starts with a group or a class is tried at every position: 20-70 times slower on clean text).
_PERCENT_RUN = re.compile(r"%[0-9A-Fa-f]{2}(?:%[0-9A-Fa-f]{2})*")


def percent_view(text: str) -> View | None:
    """Percent-escapes decoded byte by byte, as Latin-1 (the redactor knows each value's Latin-1 form)."""
    if "%" not in text:
        return None
    return build_view(
        text,
        [
            (m.start(), m.end(), bytes.fromhex(m.group().replace("%", "")).decode("latin-1"), 3)
            for m in _PERCENT_RUN.finditer(text)
        ],
    )


_ENTITY = re.compile(r"&(?:#[xX]([0-9A-Fa-f]{1,6});?|#([0-9]{1,7});?|([A-Za-z][A-Za-z0-9]{1,31});)")


def _char(code: int) -> str | None:
    return chr(code) if code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else None


@lru_cache(maxsize=4096)
def _entity(reference: str) -> str | None:
    match = _ENTITY.fullmatch(reference)
    if match is None:
        return None
    hexa, decimal, name = match.groups()
    if name is not None:
        return html5.get(name + ";")
    return _char(int(hexa, 16) if hexa is not None else int(decimal))


def _entities(text: str) -> list[Token]:
    return [
        (match.start(), match.end(), decoded, 0)
        for match in _ENTITY.finditer(text)
        if (decoded := _entity(match.group())) is not None
    ]


def html_view(text: str) -> View | None:
    """HTML character references decoded: named (HTML5's list), decimal and hexadecimal."""
    if "&" not in text:
        return None
    return build_view(text, _entities(text))


# Any number of backslashes: a ``\\uXXXX`` inside a JSON string is ``\\\\uXXXX`` once serialized.
# Other escapes (``\\n``, ``\\"``) are left alone: the fixed forms include JSON-escaped values.
_JSON_ESCAPE = re.compile(r"\\\\*u([0-9A-Fa-f]{4})")


def _json_escapes(text: str) -> Iterable[Token]:
    pending: tuple[int, int, int] | None = None  # a high surrogate waiting for its low half
    for match in _JSON_ESCAPE.finditer(text):
        code = int(match.group(1), 16)
        if pending is not None:
            high_start, high_end, high = pending
            pending = None
            if 0xDC00 <= code <= 0xDFFF and match.start() == high_end:
                yield high_start, match.end(), chr(0x10000 + ((high - 0xD800) << 10) + (code - 0xDC00)), 0
                continue
        if 0xD800 <= code <= 0xDBFF:
            pending = (match.start(), match.end(), code)
        elif not 0xDC00 <= code <= 0xDFFF:
            yield match.start(), match.end(), chr(code), 0


def json_escape_view(text: str) -> View | None:
    """JSON ``\\uXXXX`` escapes decoded (surrogate pairs joined), however many backslashes precede."""
    if "\\" not in text or "\\u" not in text:
        return None
    return build_view(text, list(_json_escapes(text)))


# A line break (real, or JSON-escaped) after a run of 16 base64 characters and before another: the
# line breaks of wrapped base64 (MIME's 76 columns, PEM's 64, any width from 16), and its indentation.
_B64 = "[A-Za-z0-9+/_-]"
_WRAP = re.compile(rf"\n(?:(?<={_B64}{{16}}\n)|(?<={_B64}{{16}}\r\n))[ \t]*(?={_B64})")
_ESCAPED_WRAP = re.compile(rf"\\n(?:(?<={_B64}{{16}}\\n)|(?<={_B64}{{16}}\\r\\n))[ \t]*(?={_B64})")


def _wraps(text: str) -> list[Token]:
    tokens: list[Token] = []
    if "\n" in text:
        for m in _WRAP.finditer(text):
            start = m.start() - 1 if text[m.start() - 1] == "\r" else m.start()
            tokens.append((start, m.end(), "", 0))
    if "\\" in text and "\\n" in text:
        for m in _ESCAPED_WRAP.finditer(text):
            start = m.start() - 2 if text[m.start() - 2 : m.start()] == "\\r" else m.start()
            tokens.append((start, m.end(), "", 0))
        tokens.sort()
    return tokens


def unwrap_view(text: str) -> View | None:
    """Wrapped base64 joined again: line breaks between base64 lines removed."""
    if "\n" not in text and "\\" not in text:
        return None
    return build_view(text, _wraps(text))


_ANY_BREAK = re.compile(r"\n[ \t]*(?:\r?\n[ \t]*)*")


def joined_lines_view(text: str) -> View | None:
    """Every line break (and the next line's indentation) removed: a value split across lines."""
    if "\n" not in text:
        return None
    return build_view(
        text,
        [
            (m.start() - 1 if m.start() and text[m.start() - 1] == "\r" else m.start(), m.end(), "", 0)
            for m in _ANY_BREAK.finditer(text)
        ],
    )


DECODERS: tuple[Decoder, ...] = (percent_view, html_view, json_escape_view, unwrap_view)
"""The views every text is searched in, besides itself. None finds anything in a text without one of
``%``, ``&``, a line break or a backslash (``Redactor.find`` tests that first)."""
