"""Authentication failures: each one counted, the log bounded (``audit/flood.py``)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from mcp_gateway.audit.flood import OVERFLOW_SOURCE, SUMMARY_KIND, FailureRecorder
from mcp_gateway.errors import AuditUnavailable
from mcp_gateway.types import AuditEvent, AuditRecord

pytestmark = pytest.mark.anyio


class _Log:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []
        self.failing = False

    async def append_many(self, events: Sequence[AuditEvent]) -> list[AuditRecord]:
        if self.failing:
            raise AuditUnavailable("audit log unavailable: test")
        self.events.extend(events)
        return []


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _failure(reason: str = "unknown token") -> AuditEvent:
    return AuditEvent(
        kind="auth_failure", decision="deny", status="unauthenticated", detail={"reason": reason}
    )


def _summaries(log: _Log) -> list[AuditEvent]:
    return [e for e in log.events if e.kind == SUMMARY_KIND]


async def test_failures_past_the_threshold_are_counted_in_one_summary_per_source_and_window() -> None:
    log, clock = _Log(), _Clock()
    rec = FailureRecorder(log.append_many, threshold=5, window=60, clock=clock)
    for i in range(1000):
        await rec.record(_failure("expired" if i % 2 else "unknown token"), "10.0.0.9")
    assert len(log.events) == 5  # the flood did not reach the log one by one
    clock.now += 60
    await rec.record(_failure(), "10.0.0.9")  # the next window's first failure flushes the last one
    (summary,) = _summaries(log)
    assert summary.detail["aggregated"] == 995 and summary.detail["client"] == "10.0.0.9"
    assert sum(summary.detail["reasons"].values()) == 995
    assert len(log.events) == 5 + 1 + 1


async def test_pending_counts_are_written_at_flush_so_none_is_lost_at_shutdown() -> None:
    log = _Log()
    rec = FailureRecorder(log.append_many, threshold=2, window=60, clock=_Clock())
    for _ in range(7):
        await rec.record(_failure(), "10.0.0.1")
    await rec.flush()
    (summary,) = _summaries(log)
    assert summary.detail["recorded"] == 2 and summary.detail["aggregated"] == 5


async def test_a_source_below_the_threshold_gets_no_summary() -> None:
    log = _Log()
    rec = FailureRecorder(log.append_many, threshold=3, window=60, clock=_Clock())
    for _ in range(3):
        await rec.record(_failure(), "10.0.0.1")
    await rec.flush()
    assert len(log.events) == 3 and _summaries(log) == []


async def test_sources_beyond_the_limit_share_one_bucket_so_memory_stays_bounded() -> None:
    log = _Log()
    rec = FailureRecorder(log.append_many, threshold=1, window=60, max_sources=4, clock=_Clock())
    for i in range(100):
        await rec.record(_failure(), f"10.0.{i}.1")
    assert len(log.events) == 5  # one each for the first four sources, one for the shared bucket
    await rec.flush()
    (summary,) = _summaries(log)
    assert summary.detail["client"] == OVERFLOW_SOURCE and summary.detail["aggregated"] == 95


async def test_a_summary_that_cannot_be_written_keeps_its_count_for_the_next_try() -> None:
    log, clock = _Log(), _Clock()
    rec = FailureRecorder(log.append_many, threshold=1, window=60, clock=clock)
    for _ in range(4):
        await rec.record(_failure(), "10.0.0.1")
    log.failing = True
    await rec.flush()  # logged, not raised
    log.failing = False
    await rec.flush()
    (summary,) = _summaries(log)
    assert summary.detail["aggregated"] == 3
