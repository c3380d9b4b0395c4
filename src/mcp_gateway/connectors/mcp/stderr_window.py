"""A bounded window over an upstream's stderr, so that a secret split across lines is scrubbed whole.

Scrubbing stderr line by line lets a PEM key, a multi-line JSON key file, wrapped base64 or a value
broken over two lines reach the log in pieces, each too short to recognise. The window holds each
line until ``hold_lines`` more lines or ``hold_chars`` more characters have arrived after it, then
scrubs it together with those lines and with up to as many lines already logged before it (with
every line break removed too: ``Redactor.find(join_lines=True)``). A value that spans at most
``hold_lines`` lines and ``hold_chars`` characters is therefore seen whole, whichever of its lines is
logged. Lines are scrubbed in batches (a window scan per ``hold_lines`` lines, not per line).

``flush`` logs everything held: the pump calls it when the upstream has been quiet for a moment,
when the oldest held line has waited long enough, and at EOF. A value whose pieces arrive further
apart than that may still be cut (its first piece is logged before the rest exists).

Memory is bounded: a line longer than ``hold_chars`` is cut into pieces of that size (joined again
for the search), at most about twice ``hold_lines`` lines or ``hold_chars`` characters are held,
and as much context.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from mcp_gateway.redact import Redactor, Span

HOLD_LINES = 64
"""A 4096-bit RSA key in PEM is 51 lines; a service-account JSON key file is about 13."""
HOLD_CHARS = 16 * 1024


def _scrub_piece(text: str, offset: int, spans: list[Span]) -> str:
    """``text`` (which starts at ``offset`` of the searched window) with the spans it overlaps replaced."""
    end = offset + len(text)
    out: list[str] = []
    position = 0
    for span in spans:
        if span.end <= offset or span.start >= end:
            continue
        start = max(span.start, offset) - offset
        out.append(text[position:start])
        out.append(span.label)
        position = min(span.end, end) - offset
    out.append(text[position:])
    return "".join(out)


class StderrWindow:
    """Holds an upstream's stderr lines until a secret split across them can be seen whole."""

    def __init__(
        self,
        redactor: Callable[[], Redactor],
        *,
        hold_lines: int = HOLD_LINES,
        hold_chars: int = HOLD_CHARS,
    ) -> None:
        """Args:
        redactor: returns the redactor of the moment (the vault's values can change).
        hold_lines: a line is held until this many lines have followed it.
        hold_chars: ... or this many characters; also the longest piece a line is cut into.
        """
        self._redactor = redactor
        self._hold_lines = hold_lines
        self._hold_chars = hold_chars
        self._context: deque[str] = deque()  # logged already, kept for a value that began there
        self._context_chars = 0
        self._pending: deque[str] = deque()
        self._pending_chars = 0
        self._partial = ""  # the start of a line whose end has not arrived

    @property
    def holding(self) -> bool:
        """Whether any text is held (not logged yet)."""
        return bool(self._pending or self._partial)

    @property
    def held_chars(self) -> int:
        return self._context_chars + self._pending_chars + len(self._partial)

    def feed(self, text: str) -> list[str]:
        """Take text read from the pipe; return the lines now ready to log, scrubbed."""
        parts = (self._partial + text).split("\n")
        self._partial = parts.pop()
        for part in parts:
            self._hold(part + "\n")
        while len(self._partial) > self._hold_chars:
            self._hold(self._partial[: self._hold_chars])
            self._partial = self._partial[self._hold_chars :]
        if len(self._pending) < 2 * self._hold_lines and self._pending_chars < 2 * self._hold_chars:
            return []
        # Log the lines that have enough after them; keep the rest as the next lines' lookahead.
        after = self._pending_chars + len(self._partial)
        count = 0
        for line in self._pending:
            after -= len(line)
            if len(self._pending) - count - 1 < self._hold_lines and after < self._hold_chars:
                break
            count += 1
        return self._emit(count)

    def flush(self) -> list[str]:
        """Everything held, scrubbed; the partial line too."""
        if self._partial:
            self._hold(self._partial)
            self._partial = ""
        return self._emit(len(self._pending))

    def discard(self) -> None:
        """Forget everything held and the context (when it cannot be scrubbed, it must not be logged)."""
        self._context.clear()
        self._pending.clear()
        self._context_chars = self._pending_chars = 0
        self._partial = ""

    def _hold(self, line: str) -> None:
        self._pending.append(line)
        self._pending_chars += len(line)

    def _emit(self, count: int) -> list[str]:
        if not count:
            return []
        context = "".join(self._context)
        window = context + "".join(self._pending) + self._partial
        spans = self._redactor().find(window, join_lines=True)
        offset = len(context)
        out: list[str] = []
        for _ in range(count):
            line = self._pending.popleft()
            self._pending_chars -= len(line)
            out.append(_scrub_piece(line, offset, spans) if spans else line)
            offset += len(line)
            self._context.append(line)
            self._context_chars += len(line)
        # Keep as context only what a value ending in the next held line could have begun in.
        while self._context and (
            len(self._context) - 1 >= self._hold_lines
            or self._context_chars - len(self._context[0]) >= self._hold_chars
        ):
            self._context_chars -= len(self._context.popleft())
        return out
