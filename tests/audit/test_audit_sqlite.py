"""The SQLite audit store, and the group-committing AuditLog in front of it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_gateway.audit.log import AuditLog
from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.audit.verify import verify
from mcp_gateway.errors import AuditUnavailable, AuditWriteError
from mcp_gateway.types import AuditEvent, AuditRecord


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[SQLiteAuditSink]:
    store = SQLiteAuditSink(tmp_path / "audit.db")
    yield store
    store.close()


def event(call_id: str, kind: str = "intent", **fields: Any) -> AuditEvent:
    return AuditEvent(kind=kind, call_id=call_id, **fields)


def intact(store: SQLiteAuditSink) -> list[AuditRecord]:
    records = store.records()
    report = verify(records, expected_head=store.head())
    assert report.ok, report.problems
    return records


class CountingSink:
    """Counts transactions; optionally holds the first one until released (to stage races)."""

    def __init__(self, inner: SQLiteAuditSink, *, hold_first: bool = False) -> None:
        self.inner = inner
        self.batches: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()

    def append(self, events: Sequence[AuditEvent]) -> list[AuditRecord]:
        self.entered.set()
        assert self.release.wait(10), "test never released the held batch"
        self.batches.append(len(events))
        return self.inner.append(events)

    def records(self, *, after_seq: int = 0, limit: int | None = None) -> list[AuditRecord]:
        return self.inner.records(after_seq=after_seq, limit=limit)

    def close(self) -> None:
        self.inner.close()


class FailingSink(CountingSink):
    def append(self, events: Sequence[AuditEvent]) -> list[AuditRecord]:
        self.batches.append(len(events))
        raise AuditWriteError("audit store `x` refused the append: disk I/O error")


# ---- the store ---------------------------------------------------------------------------------


def test_appended_records_are_chained_durable_and_read_back_in_order(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with SQLiteAuditSink(path, clock=lambda: 1234.5) as store:
        first = store.append(
            [event("c1", args={"q": "select 1", "n": [1, 2.5]}), event("c1", kind="outcome")]
        )
        assert [r.seq for r in first] == [1, 2] and all(r.ts == 1234.5 for r in first)
        assert store.append([]) == []
    with SQLiteAuditSink(path) as reopened:  # committed means on disk: a new connection sees it
        assert reopened.records() == first
        (third,) = reopened.append([event("c2", detail={"rule_ids": ("r1",)})])
        assert third.seq == 3 and third.prev_hash == first[-1].hash and third.detail == {"rule_ids": ["r1"]}
        assert reopened.head() == (3, third.hash)
        assert [r.seq for r in reopened.records(after_seq=1, limit=1)] == [2]
        intact(reopened)


def test_the_store_runs_in_wal_mode_with_full_sync(sink: SQLiteAuditSink) -> None:
    db = sqlite3.connect(sink.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    # synchronous is a per-connection setting: only the sink's own connection can show it.
    assert sink._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_query_returns_the_newest_matches_for_every_filter_in_seq_order(tmp_path: Path) -> None:
    now = [100.0]
    with SQLiteAuditSink(tmp_path / "audit.db", clock=lambda: now[0]) as store:
        for i in range(6):
            now[0] = 100.0 + i
            store.append(
                [
                    event(
                        f"c{i}",
                        agent="a" if i % 2 else "b",
                        tool="t1" if i < 3 else "t2",
                        decision="deny" if i == 4 else "allow",
                        kind="denied" if i == 4 else "intent",
                    )
                ]
            )
        assert [r.call_id for r in store.query(agent="a")] == ["c1", "c3", "c5"]
        assert [r.call_id for r in store.query(agent="a", limit=2)] == ["c3", "c5"]
        assert [r.call_id for r in store.query(tool="t2", agent="b")] == ["c4"]
        assert [r.call_id for r in store.query(decision="deny")] == ["c4"]
        assert [r.call_id for r in store.query(kind="intent", since=103.0)] == ["c3", "c5"]
        assert [r.call_id for r in store.query(call_id="c2")] == ["c2"]
        assert store.query(agent="nobody") == []
        assert len(store.query()) == 6


def test_an_event_json_cannot_hold_fails_the_append_and_writes_nothing(sink: SQLiteAuditSink) -> None:
    sink.append([event("ok")])
    with pytest.raises(AuditWriteError, match="`args`"):
        sink.append([event("fine"), event("bad", args={"x": object()})])
    assert [r.call_id for r in intact(sink)] == ["ok"]


SINK_WRITER = """
for i in range(int(sys.argv[3])):
    sink.append([AuditEvent(kind='intent', call_id=f'{sys.argv[2]}-{i}')])
"""
# Through the async log committing on its loop: a store the other process holds sends the batch to
# the worker thread, which waits for it.
LOOP_WRITER = """
import anyio
from mcp_gateway.audit.log import AuditLog
async def main():
    async with AuditLog(sink, commit_on_loop=True) as log:
        for i in range(int(sys.argv[3])):
            await log.append(AuditEvent(kind='intent', call_id=f'{sys.argv[2]}-{i}'))
anyio.run(main)
"""


@pytest.mark.e2e
@pytest.mark.parametrize("writer", [SINK_WRITER, LOOP_WRITER], ids=["sink", "log-on-loop"])
def test_two_processes_appending_to_one_file_keep_one_valid_chain(tmp_path: Path, writer: str) -> None:
    path = tmp_path / "shared.db"
    script = (
        "import sys\n"
        "from mcp_gateway.audit.sqlite import SQLiteAuditSink\n"
        "from mcp_gateway.types import AuditEvent\n"
        "sink = SQLiteAuditSink(sys.argv[1], busy_timeout=30)\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n" + writer + "sink.close()\n"
    )
    with contextlib.ExitStack() as stack:
        procs = [
            stack.enter_context(
                subprocess.Popen(
                    [sys.executable, "-c", script, str(path), name, "200"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
            for name in ("a", "b")
        ]
        for proc in procs:
            stack.callback(proc.kill)  # a no-op for a process that already exited
        for proc in procs:  # both have opened the store: start them together so they contend for the lock
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        assert [proc.wait(timeout=120) for proc in procs] == [0, 0]
    with SQLiteAuditSink(path) as store:
        records = intact(store)
    assert [r.seq for r in records] == list(range(1, 401))
    for name in ("a", "b"):  # each writer's own events stay in its order
        assert [r.call_id for r in records if r.call_id.startswith(name)] == [
            f"{name}-{i}" for i in range(200)
        ]


def test_a_store_that_cannot_be_created_raises_audit_write_error(tmp_path: Path) -> None:
    # Root ignores file modes, but nobody can create a file beneath a regular file.
    (tmp_path / "not-a-dir").write_text("x")
    with pytest.raises(AuditWriteError, match="cannot be opened"):
        SQLiteAuditSink(tmp_path / "not-a-dir" / "audit.db")


@pytest.mark.parametrize("replacement", ["directory", "nothing"])
def test_a_store_replaced_or_deleted_under_a_running_sink_refuses_appends(
    sink: SQLiteAuditSink, replacement: str
) -> None:
    sink.append([event("before")])
    os.rename(sink.path, sink.path.with_suffix(".moved"))
    if replacement == "directory":
        sink.path.mkdir()
    with pytest.raises(AuditWriteError, match=r"moved, replaced or deleted|is gone"):
        sink.append([event("after")])


def test_a_locked_store_fails_the_append_within_the_busy_timeout_and_recovers(sink: SQLiteAuditSink) -> None:
    sink.append([event("before")])
    blocker = sqlite3.connect(sink.path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    started = time.monotonic()
    with pytest.raises(AuditWriteError, match="locked") as caught:
        sink.append([event("while-locked", args={"password": "hunter2"})])
    assert time.monotonic() - started < 10  # the default busy timeout is 2 s: fail closed, do not hang
    assert "hunter2" not in str(caught.value)
    blocker.execute("ROLLBACK")
    blocker.close()
    sink.append([event("after")])
    assert [r.call_id for r in intact(sink)] == ["before", "after"]


def test_each_append_chains_after_what_other_connections_wrote_meanwhile(tmp_path: Path) -> None:
    # A sink skips reading the head while nobody else has committed; any other writer makes it read.
    path = tmp_path / "audit.db"
    with SQLiteAuditSink(path) as first, SQLiteAuditSink(path) as second:
        for store, name in [(first, "a1"), (second, "b1"), (first, "a2"), (first, "a3"), (second, "b2")]:
            store.append([event(name)])
        assert [r.call_id for r in intact(first)] == ["a1", "b1", "a2", "a3", "b2"]
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("DELETE FROM audit WHERE seq = 5")  # the newest record, gone behind its back
        other.close()
        (record,) = first.append([event("a4")])
        assert (record.seq, record.prev_hash) == (5, first.records()[3].hash)
        assert [r.call_id for r in intact(first)] == ["a1", "b1", "a2", "a3", "a4"]


def test_an_append_failing_midway_leaves_no_transaction_behind(sink: SQLiteAuditSink) -> None:
    sink.append([event("before")])
    with pytest.raises(ValueError, match="digits"):  # Python will not write a 5000-digit integer
        sink.append([event("huge", args={"n": 10**5000})])
    sink.append([event("after")])
    assert [r.call_id for r in intact(sink)] == ["before", "after"]


# ---- the async log: group commit ---------------------------------------------------------------


@pytest.mark.anyio
async def test_concurrent_appends_share_a_few_transactions_and_form_one_chain(sink: SQLiteAuditSink) -> None:
    counting = CountingSink(sink)
    log = AuditLog(counting)
    results: dict[int, AuditRecord] = {}

    async def one(i: int) -> None:
        results[i] = await log.append(event(f"c{i}"))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(one, i)
        await log.aclose()
    records = intact(sink)
    assert len(records) == 200 and sorted(results.values(), key=lambda r: r.seq) == records
    assert sum(counting.batches) == 200 and len(counting.batches) <= 5


@pytest.mark.anyio
async def test_append_many_keeps_a_callers_events_together_and_in_order(sink: SQLiteAuditSink) -> None:
    log = AuditLog(sink, max_batch=4)

    async def burst(name: str) -> None:
        await log.append_many([event(f"{name}-{i}") for i in range(6)])  # larger than a batch: not split

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for name in "abc":
                tg.start_soon(burst, name)
    call_ids = [r.call_id for r in intact(sink)]
    for name in "abc":
        start = call_ids.index(f"{name}-0")
        assert call_ids[start : start + 6] == [f"{name}-{i}" for i in range(6)]
    assert await log.append_many([]) == []


@pytest.mark.anyio
async def test_every_caller_in_a_failed_batch_gets_audit_unavailable(sink: SQLiteAuditSink) -> None:
    log = AuditLog(FailingSink(sink))
    errors: list[AuditUnavailable] = []

    async def one(i: int) -> None:
        with pytest.raises(AuditUnavailable) as caught:
            await log.append(event(f"c{i}", args={"token": "s3cret"}))
        errors.append(caught.value)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(one, i)
    assert len(errors) == 50
    assert all(str(e).startswith("audit log unavailable: ") and "s3cret" not in str(e) for e in errors)
    assert sink.records() == []


@pytest.mark.anyio
async def test_an_unstorable_event_is_refused_without_failing_other_callers(sink: SQLiteAuditSink) -> None:
    log = AuditLog(sink)
    with pytest.raises(AuditUnavailable, match=r"audit log unavailable: .*`detail`"):
        await log.append(event("bad", detail={"at": object()}))
    assert (await log.append(event("good"))).seq == 1


@pytest.mark.anyio
async def test_a_cancelled_waiting_caller_loses_no_event_and_blocks_no_one(sink: SQLiteAuditSink) -> None:
    held = CountingSink(sink, hold_first=True)
    log = AuditLog(held)
    done: list[str] = []
    scope = anyio.CancelScope()

    async def call(name: str) -> None:
        await log.append(event(name))
        done.append(name)

    async def cancelled_call() -> None:
        with scope:
            await call("cancelled")

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(call, "leader")
            await anyio.to_thread.run_sync(held.entered.wait, 10)  # the leader's batch is in the store
            tg.start_soon(cancelled_call)
            tg.start_soon(call, "other")
            await anyio.wait_all_tasks_blocked()
            scope.cancel()  # cancelled while first in line: the next caller must take over
            await anyio.wait_all_tasks_blocked()
            held.release.set()
    assert scope.cancelled_caught and sorted(done) == ["leader", "other"]
    assert [r.call_id for r in intact(sink)] == ["leader", "cancelled", "other"]


@pytest.mark.anyio
async def test_a_cancelled_leader_finishes_its_batch_and_hands_over(sink: SQLiteAuditSink) -> None:
    held = CountingSink(sink, hold_first=True)
    log = AuditLog(held)
    done: list[str] = []
    scope = anyio.CancelScope()

    async def call(name: str) -> None:
        await log.append(event(name))
        done.append(name)

    async def leader() -> None:
        with scope:
            await call("leader")
            await anyio.lowlevel.checkpoint()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(leader)
            await anyio.to_thread.run_sync(held.entered.wait, 10)
            for name in ("f1", "f2"):
                tg.start_soon(call, name)
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
            held.release.set()
    assert scope.cancelled_caught
    assert [r.call_id for r in intact(sink)] == ["leader", "f1", "f2"]
    assert sorted(done) == ["f1", "f2", "leader"]  # the durable append still returned before the cancel
    assert held.batches == [1, 2]


@pytest.mark.anyio
async def test_a_leader_cancelled_before_its_batch_on_the_loop_writes_it_and_returns(
    sink: SQLiteAuditSink,
) -> None:
    log = AuditLog(sink, commit_on_loop=True)
    scope = anyio.CancelScope()
    done: list[str] = []

    async def leader() -> None:
        with scope:
            done.append((await log.append(event("leader"))).call_id)
            await anyio.lowlevel.checkpoint()
            done.append("not cancelled")

    async def cancel() -> None:
        scope.cancel()  # runs while the leader yields once before committing

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(leader)
            tg.start_soon(cancel)
    assert scope.cancelled_caught and done == ["leader"] and log.loop_commits == 1
    assert [r.call_id for r in intact(sink)] == ["leader"]


@pytest.mark.anyio
async def test_a_leader_task_cancelled_natively_answers_its_batch_then_stops(sink: SQLiteAuditSink) -> None:
    # ``Task.cancel()`` (no anyio scope): the batch in the thread is still answered to every caller.
    held = CountingSink(sink, hold_first=True)
    log = AuditLog(held)
    done: list[str] = []

    async def call(name: str) -> None:
        done.append((await log.append(event(name))).call_id)
        await asyncio.sleep(0)
        done.append(f"{name} went on")

    with anyio.fail_after(30):
        leader = asyncio.ensure_future(call("leader"))
        await anyio.to_thread.run_sync(held.entered.wait, 10)
        follower = asyncio.ensure_future(call("f1"))
        await anyio.wait_all_tasks_blocked()
        leader.cancel()
        held.release.set()
        await asyncio.wait([leader, follower])
    assert leader.cancelled() and follower.result() is None
    assert done[:2] == ["leader", "f1"] and "f1 went on" in done and "leader went on" not in done
    assert [r.call_id for r in intact(sink)] == ["leader", "f1"]


@pytest.mark.anyio
async def test_closing_the_log_writes_what_was_queued_then_refuses_appends(sink: SQLiteAuditSink) -> None:
    held = CountingSink(sink, hold_first=True)
    done: list[str] = []

    async def call(log: AuditLog, name: str) -> None:
        await log.append(event(name))
        done.append(name)

    with anyio.fail_after(30):
        async with AuditLog(held) as log, anyio.create_task_group() as tg:
            tg.start_soon(call, log, "first")
            await anyio.to_thread.run_sync(held.entered.wait, 10)
            tg.start_soon(call, log, "queued")
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(log.aclose)
            await anyio.wait_all_tasks_blocked()
            held.release.set()
        with pytest.raises(AuditUnavailable, match="audit log unavailable: the log is closed"):
            await log.append(event("late"))
    assert done == ["first", "queued"]
    assert [r.call_id for r in intact(sink)] == ["first", "queued"]


# ---- the async log: commits on the event loop --------------------------------------------------


def test_append_nowait_writes_nothing_and_waits_for_nothing_while_the_store_is_busy(
    sink: SQLiteAuditSink,
) -> None:
    blocker = sqlite3.connect(sink.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds SQLite's write lock
    started = time.monotonic()
    assert sink.append_nowait([event("while-locked")]) is None
    assert time.monotonic() - started < 0.5  # no busy wait (append would wait up to 2 s)
    blocker.execute("ROLLBACK")
    blocker.close()
    with sink._lock:  # another thread of this process is using the connection
        assert sink.append_nowait([event("while-in-use")]) is None
    assert [r.call_id for r in sink.append_nowait([event("free")]) or []] == ["free"]
    assert [r.call_id for r in intact(sink)] == ["free"]


@pytest.mark.anyio
async def test_concurrent_appends_commit_on_the_loop_in_shared_transactions(sink: SQLiteAuditSink) -> None:
    log = AuditLog(sink, commit_on_loop=True)
    threads_used: list[str] = []
    append = sink.append
    sink.append = lambda events: threads_used.append("thread") or append(events)  # type: ignore[method-assign]

    async def one(i: int) -> None:
        await log.append(event(f"c{i}"))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(one, i)
        await log.aclose()
    assert len(intact(sink)) == 200
    assert threads_used == [] and 1 <= log.loop_commits <= 5  # the callers of one iteration share a batch


@pytest.mark.anyio
async def test_a_busy_store_sends_the_batch_to_the_thread_which_waits_for_it(sink: SQLiteAuditSink) -> None:
    log = AuditLog(sink, commit_on_loop=True)
    blocker = sqlite3.connect(sink.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(log.append, event("queued-behind-another-writer"))
            await anyio.wait_all_tasks_blocked()  # the loop is free: the append waits in a thread
            blocker.execute("ROLLBACK")
    blocker.close()
    assert log.loop_commits == 0
    assert [r.call_id for r in intact(sink)] == ["queued-behind-another-writer"]


@pytest.mark.anyio
async def test_a_slow_commit_on_the_loop_sends_the_next_batches_to_the_thread(sink: SQLiteAuditSink) -> None:
    log = AuditLog(sink, commit_on_loop=True)
    log.LOOP_BUDGET, log.LOOP_PAUSE, log.LOOP_STRIKES = 0.0, 2, 1  # every on-loop commit is slow
    in_thread: list[str] = []
    append = sink.append
    sink.append = lambda events: in_thread.extend(e.call_id for e in events) or append(events)  # type: ignore[method-assign]
    with anyio.fail_after(30):
        for name in ["slow", "t1", "t2", "loop-again"]:
            await log.append(event(name))
    assert in_thread == ["t1", "t2"] and log.loop_commits == 2
    assert [r.call_id for r in intact(sink)] == ["slow", "t1", "t2", "loop-again"]


@pytest.mark.anyio
async def test_only_slow_commits_close_together_move_commits_off_the_loop(sink: SQLiteAuditSink) -> None:
    # A shared machine's disk hiccups now and then; a slow disk is slow again and again.
    log = AuditLog(sink, commit_on_loop=True)
    log.LOOP_STRIKES, log.LOOP_WINDOW, log.LOOP_PAUSE = 3, 10, 1000
    slow: set[str] = set()
    now = [0.0]
    nowait = log._nowait
    assert nowait is not None

    def timed(events: Sequence[AuditEvent]) -> list[AuditRecord] | None:
        now[0] += 1.0 if events[0].call_id in slow else 0.0001  # seconds this commit "took"
        return nowait(events)

    log._nowait, log._clock = timed, lambda: now[0]
    in_thread: list[str] = []
    append = sink.append
    sink.append = lambda events: in_thread.extend(e.call_id for e in events) or append(events)  # type: ignore[method-assign]
    # Hiccups farther apart than the window: commits stay on the loop.
    names = ["h1", *[f"a{i}" for i in range(12)], "h2", *[f"b{i}" for i in range(12)], "h3"]
    names += [f"c{i}" for i in range(12)]
    slow.update({"h1", "h2", "h3"})
    with anyio.fail_after(30):
        for name in names:
            await log.append(event(name))
        assert in_thread == [] and log.loop_commits == len(names)
        # Three slow commits within the window: the next batches go to the thread.
        slow.update({"s1", "s2", "s3"})
        for name in ["s1", "s2", "s3", "after"]:
            await log.append(event(name))
    assert in_thread == ["after"]
    assert [r.call_id for r in intact(sink)] == [*names, "s1", "s2", "s3", "after"]
