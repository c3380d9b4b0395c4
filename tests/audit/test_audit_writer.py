"""The audit log's writer thread (``audit/writer.py``): batches that are not committed on the loop run
there, in order, their exceptions reach the awaiting caller, and an idle thread ends."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from mcp_gateway.audit import writer as writer_module
from mcp_gateway.audit.log import AuditLog
from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.audit.writer import SinkWriter
from mcp_gateway.errors import AuditUnavailable, AuditWriteError
from mcp_gateway.types import AuditEvent, AuditRecord

pytestmark = pytest.mark.anyio


def _event(n: int) -> AuditEvent:
    return AuditEvent(kind="intent", call_id=f"c{n}", agent="a", tool="up.echo", decision="allow")


async def test_work_runs_off_the_loop_thread_in_submission_order() -> None:
    writer = SinkWriter()
    seen: list[tuple[int, str]] = []

    def work(n: int) -> int:
        seen.append((n, threading.current_thread().name))
        return n * 2

    futures = [writer.run(work, n) for n in range(5)]
    assert [await f for f in futures] == [0, 2, 4, 6, 8]
    assert [n for n, _ in seen] == [0, 1, 2, 3, 4]
    assert {name for _, name in seen} == {"audit writer"}
    assert threading.current_thread().name not in {name for _, name in seen}


async def test_an_exception_in_the_thread_reaches_the_caller() -> None:
    writer = SinkWriter()

    def boom(_: None) -> None:
        raise AuditWriteError("disk full", reason="disk full")

    with pytest.raises(AuditWriteError, match="disk full"):
        await writer.run(boom, None)
    assert await writer.run(lambda x: x + 1, 1) == 2  # the thread survived the failure


async def test_an_idle_writer_thread_ends_and_the_next_batch_starts_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(writer_module, "IDLE_SECONDS", 0.05)
    writer = SinkWriter(name="audit writer idle-test")

    def alive() -> bool:
        return any(t.name == "audit writer idle-test" for t in threading.enumerate())

    assert await writer.run(lambda x: x, 1) == 1
    deadline = time.monotonic() + 10
    while alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive()
    assert await writer.run(lambda x: x, 2) == 2  # started again on demand


class _FailingSink(SQLiteAuditSink):
    def append(self, events: Sequence[AuditEvent]) -> list[AuditRecord]:
        raise AuditWriteError("store `/secret/path` is gone", reason="audit store is gone")


async def test_a_batch_written_in_the_thread_is_durable_before_append_returns(tmp_path: Path) -> None:
    sink = SQLiteAuditSink(tmp_path / "audit.db")
    log = AuditLog(sink, commit_on_loop=False)  # every batch goes to the writer thread
    record = await log.append(_event(1))
    assert [r.call_id for r in SQLiteAuditSink(tmp_path / "audit.db").records()] == ["c1"]
    assert record.seq == 1
    await log.aclose()


async def test_a_failed_thread_batch_fails_closed_without_the_store_path(tmp_path: Path) -> None:
    log = AuditLog(_FailingSink(tmp_path / "audit.db"), commit_on_loop=False)
    with pytest.raises(AuditUnavailable) as caught:
        await log.append(_event(1))
    assert "audit store is gone" in str(caught.value)
    assert "/secret/path" not in str(caught.value)
    await log.aclose()
