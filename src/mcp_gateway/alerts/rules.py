"""The alert rules, evaluated over audit records as they arrive (pure: no I/O, no clock of its own).

``RuleEngine.feed`` takes each new record and returns what it trips; ``RuleEngine.tick`` checks the
conditions that depend on time rather than on a record (approvals waiting, a stalled chain). A burst
rule counts matching records per subject in a sliding window of record times; once it trips, its
window starts empty again, so a flood raises one alert per ``count`` records, and the board folds
repeats of an alert still active into it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mcp_gateway.alerts.config import AlertRules, Burst
from mcp_gateway.types import AuditRecord

OWN_KINDS = frozenset({"alert", "alert_ack"})
"""The alerts' own records, never evaluated (an alert must not feed itself)."""
AUTH_KINDS = frozenset({"auth_failure", "admin_auth_failure"})
PIN_BLOCKED = frozenset({"blocked", "reverted"})


@dataclass(frozen=True, slots=True)
class Trigger:
    """A rule that tripped.

    Attributes:
        rule: the rule's name (``denial_burst``, ``auth_failures``, ...).
        subject: what it is about (an agent, a source address, a tool, an approval id).
        message: one line for people (plain text; escaped where shown).
        severity: ``low``, ``medium``, ``high`` or ``critical``.
        count: how many events tripped it.
        agent, tool: for the alert's audit record.
    """

    rule: str
    subject: str
    message: str
    severity: str
    count: int = 1
    agent: str = ""
    tool: str = ""


@dataclass(frozen=True, slots=True)
class Waiting:
    """An approval still pending (for ``tick``)."""

    id: str
    agent: str
    tool: str
    created_at: float


class _Window:
    """Times of matching records per subject, within a sliding window."""

    def __init__(self, burst: Burst) -> None:
        self.burst = burst
        self.times: dict[str, deque[tuple[float, int]]] = {}

    def add(self, subject: str, ts: float, weight: int = 1) -> int | None:
        """Count ``weight`` events at ``ts``; the total when it reached the burst (the window restarts)."""
        times = self.times.setdefault(subject, deque())
        times.append((ts, weight))
        while times and times[0][0] <= ts - self.burst.window_seconds:
            times.popleft()
        total = sum(w for _, w in times)
        if total < self.burst.count:
            return None
        del self.times[subject]
        return total

    def prune(self, now: float) -> None:
        """Forget subjects with nothing inside the window (bounded memory)."""
        for subject in [
            s for s, t in self.times.items() if not t or t[-1][0] <= now - self.burst.window_seconds
        ]:
            del self.times[subject]


def _window(burst: Burst | None) -> _Window | None:
    return _Window(burst) if burst is not None else None


def _seconds(value: float) -> str:
    return f"{value:g}s"


class RuleEngine:
    """Evaluates ``rules`` over records fed in seq order."""

    def __init__(self, rules: AlertRules) -> None:
        self.rules = rules
        self._denials = _window(rules.denial_burst)
        self._auth = _window(rules.auth_failures)
        self._redactions = _window(rules.redaction_hits)
        self._monitors = _window(rules.monitor_errors)

    @property
    def longest_window(self) -> float:
        """The longest burst window of the rules that are on (0: none): what ``prime`` reads back."""
        windows = (self._denials, self._auth, self._redactions, self._monitors)
        return max((w.burst.window_seconds for w in windows if w is not None), default=0.0)

    def prime(self, records: Iterable[AuditRecord]) -> None:
        """Count ``records`` (seq order, written before this engine started) into the burst windows
        without raising anything: a burst that straddles a restart trips when it completes, and one
        that tripped before the restart (its alert already raised) restarts its window as it did."""
        for record in records:
            self.feed(record)

    def feed(self, record: AuditRecord) -> list[Trigger]:
        """What ``record`` trips (usually nothing)."""
        if record.kind in OWN_KINDS:
            return []
        rules, detail = self.rules, record.detail
        out: list[Trigger] = []
        if self._denials is not None and record.kind == "denied" and record.agent:
            total = self._denials.add(record.agent, record.ts)
            if total is not None:
                burst = self._denials.burst
                out.append(
                    Trigger(
                        "denial_burst",
                        record.agent,
                        f"agent {record.agent} was denied {total} calls within"
                        f" {_seconds(burst.window_seconds)} (last: {record.tool or '-'}, {record.status})",
                        "high",
                        total,
                        agent=record.agent,
                    )
                )
        if self._auth is not None:
            out.extend(self._auth_failure(record, self._auth))
        if rules.pin_blocks and record.kind.endswith("_changed") and record.status in PIN_BLOCKED:
            what = str(detail.get("kind") or "tool")
            out.append(
                Trigger(
                    "pin_block",
                    record.tool,
                    f"the definition of {what} {record.tool} changed and was blocked",
                    "high",
                    tool=record.tool,
                )
            )
        if self._redactions is not None and record.kind == "outcome" and record.tool:
            hits = detail.get("redactions")
            if isinstance(hits, int) and hits > 0:
                total = self._redactions.add(record.tool, record.ts, hits)
                if total is not None:
                    out.append(
                        Trigger(
                            "redaction_hits",
                            record.tool,
                            f"results of {record.tool} held {total} secret value(s) the redactor replaced"
                            f" within {_seconds(self._redactions.burst.window_seconds)}",
                            "high",
                            total,
                            agent=record.agent,
                            tool=record.tool,
                        )
                    )
        if self._monitors is not None and record.kind == "incident" and record.status == "error":
            monitor = str(record.args.get("monitor") or "unknown")
            total = self._monitors.add(monitor, record.ts)
            if total is not None:
                error = str(record.detail.get("error") or "error")
                out.append(
                    Trigger(
                        "monitor_errors",
                        monitor,
                        f"monitor {monitor} could not measure {record.args.get('table') or 'its table'}"
                        f" {total} times within {_seconds(self._monitors.burst.window_seconds)}"
                        f" (last: {error})",
                        "high",
                        total,
                    )
                )
        if rules.verify_failed:
            out.extend(_verify_failure(record))
        return out

    def _auth_failure(self, record: AuditRecord, window: _Window) -> list[Trigger]:
        detail = record.detail
        if record.kind in AUTH_KINDS:
            weight = 1
        elif record.kind == "auth_failure_summary" and isinstance(detail.get("aggregated"), int):
            weight = int(detail["aggregated"])
        else:
            return []
        source = str(detail.get("client") or "unknown")
        total = window.add(source, record.ts, weight)
        if total is None:
            return []
        return [
            Trigger(
                "auth_failures",
                source,
                f"{total} authentication failures from {source} within"
                f" {_seconds(window.burst.window_seconds)}",
                "high",
                total,
            )
        ]

    def tick(
        self,
        now: float,
        waiting: Iterable[Waiting] = (),
        uncovered_since: float | None = None,
        store_error: str = "",
    ) -> list[Trigger]:
        """The time-based rules at ``now``.

        Args:
            now: epoch seconds.
            waiting: approvals still pending.
            uncovered_since: the time of the oldest record no signed checkpoint covers (None: all covered).
            store_error: why the audit store could not be read ("" if it could).
        """
        out: list[Trigger] = []
        for window in (self._denials, self._auth, self._redactions, self._monitors):
            if window is not None:
                window.prune(now)
        minutes = self.rules.approval_wait_minutes
        if minutes is not None:
            for approval in waiting:
                waited = (now - approval.created_at) / 60
                if waited >= minutes:
                    out.append(
                        Trigger(
                            "approval_wait",
                            approval.id,
                            f"approval {approval.id} ({approval.agent} wants {approval.tool}) has waited"
                            f" {waited:.0f} min",
                            "medium",
                            agent=approval.agent,
                            tool=approval.tool,
                        )
                    )
        stalled = self.rules.chain_stalled_seconds
        if stalled is not None:
            if store_error:
                out.append(
                    Trigger(
                        "chain_stalled",
                        "audit store",
                        f"the audit store cannot be read: {store_error}",
                        "critical",
                    )
                )
            elif uncovered_since is not None and now - uncovered_since >= stalled:
                out.append(
                    Trigger(
                        "chain_stalled",
                        "checkpoints",
                        f"records older than {_seconds(stalled)} are not covered by a signed checkpoint:"
                        " the checkpoint writer has stopped",
                        "critical",
                    )
                )
        return out


def _verify_failure(record: AuditRecord) -> list[Trigger]:
    detail: Mapping[str, Any] = record.detail
    if record.kind == "audit_alarm":
        problems = detail.get("problems")
        first = problems[0] if isinstance(problems, list) and problems else "records it cannot authenticate"
        count = detail.get("problem_count", 1)
        message = f"audit chain check at start found {count} problem(s); first: {first}"
        return [Trigger("verify_failed", "audit log", message, "critical")]
    if record.kind == "audit_verify" and record.status not in ("", "ok"):
        problems = detail.get("problems")
        count = len(problems) if isinstance(problems, list) else detail.get("problem_count")
        return [
            Trigger(
                "verify_failed",
                "audit log",
                f"audit verify failed: {count or 'problems'} problem(s)",
                "critical",
            )
        ]
    return []
