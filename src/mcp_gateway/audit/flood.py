"""Authentication failures on the record without letting a flood of bad tokens fill the log.

Every failure is counted. Per source (the client address) and window, the first ``threshold``
failures are audited one by one; after that the source's failures are only counted (by reason),
and one ``auth_failure_summary`` record per source and window says how many there were. Summaries
are written when the source's window has ended (at its next failure, by ``run`` every ``window``
seconds, and by ``flush`` at shutdown), so the count survives however long the flood lasts.

Sources beyond ``max_sources`` in one window (an attacker spraying from many addresses) share the
source ``*``, so the memory held stays bounded; so does the audit volume: at most ``threshold``
records per source and window plus one summary each.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence

import anyio

from mcp_gateway.errors import AuditUnavailable
from mcp_gateway.types import AuditEvent, AuditRecord, Clock

logger = logging.getLogger(__name__)

SUMMARY_KIND = "auth_failure_summary"
OVERFLOW_SOURCE = "*"
_REASONS_KEPT = 20


@dataclasses.dataclass(slots=True)
class _Window:
    start: float
    started_at: float
    recorded: int = 0
    suppressed: int = 0
    reasons: Counter[str] = dataclasses.field(default_factory=Counter)
    kinds: Counter[str] = dataclasses.field(default_factory=Counter)


class FailureRecorder:
    """Audits authentication failures, aggregating a source's after ``threshold`` per window.

    Args:
        append: makes events durable (``AuditLog.append_many``).
        threshold: failures per source and window audited one by one.
        window: seconds per window.
        max_sources: distinct sources tracked per window before the rest share ``*``.
        clock: monotonic time for windows; ``wall``: epoch time written in summaries.
    """

    def __init__(
        self,
        append: Callable[[Sequence[AuditEvent]], Awaitable[list[AuditRecord]]],
        *,
        threshold: int = 20,
        window: float = 60.0,
        max_sources: int = 1024,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
    ) -> None:
        if threshold < 1 or window <= 0 or max_sources < 1:
            raise ValueError("threshold, window and max_sources must be positive")
        self._append = append
        self.threshold, self.window, self.max_sources = threshold, window, max_sources
        self._clock, self._wall = clock, wall
        self._windows: dict[str, _Window] = {}

    async def record(self, event: AuditEvent, source: str) -> None:
        """Audit ``event`` (a failure from ``source``), or count it once the source is over threshold.

        Raises:
            AuditUnavailable: the record (or a summary that was due) could not be made durable.
        """
        now = self._clock()
        await self._flush_ended(now)
        if source not in self._windows and len(self._windows) >= self.max_sources:
            source = OVERFLOW_SOURCE
        win = self._windows.get(source)
        if win is None:
            win = self._windows[source] = _Window(now, self._wall())
        if win.recorded < self.threshold:
            win.recorded += 1
            await self._append([event])
            return
        win.suppressed += 1
        reason = str(event.detail.get("reason", ""))[:120]
        if reason in win.reasons or len(win.reasons) < _REASONS_KEPT:
            win.reasons[reason] += 1
        else:
            win.reasons["(other reasons)"] += 1
        win.kinds[event.kind] += 1

    async def _flush_ended(self, now: float, *, every: bool = False) -> None:
        ended = [src for src, win in self._windows.items() if every or now - win.start >= self.window]
        popped = [(source, self._windows.pop(source)) for source in ended]
        events = [self._summary(source, win) for source, win in popped if win.suppressed]
        if not events:
            return
        try:
            await self._append(events)
        except BaseException:
            for source, win in popped:  # keep the counts for the next try
                current = self._windows.setdefault(source, win)
                if current is not win:
                    current.suppressed += win.suppressed
                    current.reasons.update(win.reasons)
                    current.kinds.update(win.kinds)
            raise

    def _summary(self, source: str, win: _Window) -> AuditEvent:
        detail = {
            "client": source,
            "window_start": win.started_at,
            "window_seconds": self.window,
            "recorded": win.recorded,
            "aggregated": win.suppressed,
            "reasons": dict(win.reasons.most_common()),
            "kinds": dict(win.kinds),
        }
        return AuditEvent(kind=SUMMARY_KIND, decision="deny", status="aggregated", detail=detail)

    async def flush(self) -> None:
        """Write the summary of every window with aggregated failures, ended or not (at shutdown)."""
        try:
            await self._flush_ended(self._clock(), every=True)
        except AuditUnavailable:
            logger.error("audit unavailable: authentication failure counts were not recorded")

    async def run(self) -> None:
        """Write the summaries of ended windows every ``window`` seconds; runs until cancelled."""
        while True:
            await anyio.sleep(self.window)
            try:
                await self._flush_ended(self._clock())
            except AuditUnavailable:
                logger.error("audit unavailable: authentication failure counts kept for the next try")
