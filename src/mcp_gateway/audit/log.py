"""The audit log's async face: group commit over a blocking ``AuditSink``.

Callers that append at the same time share one transaction (one fsync). There is no background
task to start: the first caller to find the log idle becomes the *leader*. It writes batches (in a
worker thread) until its own events are durable, then hands leadership to the oldest waiting caller,
who writes the next batch with everything that queued up meanwhile. A caller's ``await`` returns
only once the batch holding its events has committed.

Cancellation cannot wedge the log: a leader's work cannot be interrupted (a cancellation is held
until it is done, so a batch in flight is always finished and reported to every caller in it), and
a waiting caller that is cancelled leaves its events queued (they are still written, in order) and
passes on leadership if it had just received it.

With ``commit_on_loop`` and a sink that offers ``append_nowait`` (the local SQLite store), a batch is
committed on the event loop itself when the store is free, and the leader first yields once so the
callers of the same loop iteration join its batch. That saves the two thread hand-offs per batch
(about a fifth of the gateway's throughput on the benchmark machine); the loop is blocked for one
commit (about 0.2 ms on a local SSD). A busy store (another process's write, a reader thread) falls
back to the worker thread. Commits slower than ``LOOP_BUDGET`` (slow storage) send the next
``LOOP_PAUSE`` batches to the thread once ``LOOP_STRIKES`` of them fall within ``LOOP_WINDOW``
on-loop commits, so a slow disk stalls the loop a few times in a thousand batches, and one hiccup
of a shared machine's disk does not move commits off the loop.

Create it anywhere, use it from one asyncio event loop (as anyio runs it), and ``await aclose()`` at
shutdown (or ``async with AuditLog(sink) as log``). Closing the log does not close the sink.

With a ``Checkpointer``, the leader signs a checkpoint of the newest record after a batch that
crosses a multiple of ``every`` (the batch's callers are already released), ``run_checkpoints``
(a service the gateway runs) signs one every ``interval`` seconds while there are new records, and
``aclose`` signs one of the newest record this log wrote. The checkpoint covers a record this
process just wrote, taken from memory, never a head re-read from a store someone may have edited.
A failed checkpoint is logged and does not fail any call: the records themselves are durable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import anyio

from mcp_gateway.audit.checkpointer import Checkpointer
from mcp_gateway.audit.flood import FailureRecorder
from mcp_gateway.audit.record import normalize_event
from mcp_gateway.audit.writer import SinkWriter
from mcp_gateway.errors import AuditError, AuditUnavailable, AuditWriteError
from mcp_gateway.telemetry import audit_committed
from mcp_gateway.types import AuditEvent, AuditRecord, AuditSink, LoopAuditSink

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class _Waiter:
    """One caller's events, and how its append ended."""

    events: list[AuditEvent]
    # Set when done or promoted to leader; made only for a caller that waits (a leader never does).
    # A bare future, not an ``anyio.Event``: this is per call, and the loop is always asyncio's.
    wake: asyncio.Future[None] | None = None
    records: list[AuditRecord] | None = None
    failure: str = ""
    public: str = ""
    cause: BaseException | None = None
    promoted: bool = False
    abandoned: bool = False  # its caller was cancelled; write its events, wake nobody
    done: bool = False  # finished or failed

    def finish(self, records: list[AuditRecord]) -> None:
        self.records, self.done = records, True
        self.wake_up()

    def fail(self, reason: str, cause: BaseException | None) -> None:
        self.failure, self.public, self.cause, self.done = reason, _public(cause), cause, True
        self.wake_up()

    def wake_up(self) -> None:
        # A cancelled caller's future is already done (cancelled): nothing to wake.
        if self.wake is not None and not self.wake.done():
            self.wake.set_result(None)


def _public(exc: BaseException | None) -> str:
    # What a caller (an agent) may read: the reason without the store's path or host.
    return exc.reason if isinstance(exc, AuditWriteError) else "the audit store cannot write"


def _describe(exc: BaseException) -> str:
    # Our own audit errors are written to carry no values; anything else is named by type only.
    return str(exc) if isinstance(exc, AuditError) else f"unexpected `{type(exc).__name__}`"


class AuditLog:
    """Group-committing, fail-closed audit log over ``sink``.

    Args:
        sink: where records are made durable; its ``append`` runs in a worker thread (``writer.py``).
        max_batch: the most events one transaction takes (one caller's events are never split).
        checkpointer: signs and stores checkpoints; None for none (the vault was sealed).
        commit_on_loop: commit on the event loop when the sink can do so without waiting.
    """

    LOOP_BUDGET = 0.005
    """Seconds an on-loop commit may take without counting as slow."""
    LOOP_STRIKES = 3
    """Slow commits within ``LOOP_WINDOW`` on-loop commits that send the next ``LOOP_PAUSE`` batches
    to the thread."""
    LOOP_WINDOW = 100
    LOOP_PAUSE = 1000

    def __init__(
        self,
        sink: AuditSink,
        *,
        max_batch: int = 256,
        checkpointer: Checkpointer | None = None,
        commit_on_loop: bool = False,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.sink = sink
        self.checkpointer = checkpointer
        self._nowait = sink.append_nowait if commit_on_loop and isinstance(sink, LoopAuditSink) else None
        self._off_loop = 0  # batches left to send to the thread after slow on-loop commits
        self._attempts = 0  # on-loop commit attempts so far
        self._slow: deque[int] = deque()  # the attempts (numbers) that were slow, within the window
        self._clock = time.perf_counter  # tests give slow commits with a clock of their own
        self.loop_commits = 0  # batches committed on the loop (tests and benchmarks read it)
        self._newest: AuditRecord | None = None  # the newest record this log wrote
        self._checkpointed = 0  # the seq of the last checkpoint this log wrote
        self._max_batch = max_batch
        self._writer = SinkWriter()  # the thread for batches not committed on the loop
        self._queue: deque[_Waiter] = deque()
        self._leading = False  # a leader is writing, or has been promoted and will
        self._closed = False
        self._idle: anyio.Event | None = None
        self.failures = FailureRecorder(self.append_many)
        """Where authentication failures go (aggregated per source after a threshold, ``flood.py``)."""
        self.alarm: str | None = None
        """Set at start when the inherited log had records this gateway cannot authenticate
        (``inherit.py``); shown by ``/readyz`` to an admin."""

    async def append(self, event: AuditEvent) -> AuditRecord:
        """Make ``event`` durable and return its record.

        Raises:
            AuditUnavailable: it could not be made durable (``audit log unavailable: ...``).
        """
        return (await self.append_many([event]))[0]

    async def append_many(self, events: Iterable[AuditEvent]) -> list[AuditRecord]:
        """Make ``events`` durable, consecutively and in one transaction; return their records.

        Raises:
            AuditUnavailable: none of them could be made durable.
        """
        try:
            batch = list(map(normalize_event, events))
        except AuditError as exc:
            raise AuditUnavailable(f"audit log unavailable: {exc}") from exc
        if not batch:
            return []
        if self._closed:
            raise AuditUnavailable("audit log unavailable: the log is closed")
        waiter = _Waiter(batch)
        self._queue.append(waiter)
        if self._leading:
            waiter.wake = asyncio.get_running_loop().create_future()
            try:
                await waiter.wake
            except BaseException:
                if waiter.promoted and not waiter.done:
                    await self._lead(waiter, cancelled=True)  # nobody else will; then let it through
                else:
                    waiter.abandoned = True
                raise
            if waiter.promoted and not waiter.done:
                await self._lead(waiter)
        else:
            self._leading = True
            await self._lead(waiter)
        if waiter.records is None:
            # The full reason names the store (a path, a host); it went to the log when the batch failed.
            raise AuditUnavailable(f"audit log unavailable: {waiter.public}")
        return waiter.records

    async def _lead(self, own: _Waiter, *, cancelled: bool = False) -> None:
        """Write batches until ``own`` is done, then pass leadership on (or go idle).

        Nothing interrupts it: a cancellation at its first yield or while a batch is in the writer
        thread (whose futures refuse to be cancelled) is held until it is done, then let through at
        the caller's next await, as a shield would; a checkpoint is shielded. ``cancelled``: its
        caller was cancelled already (nothing to hold, no yield).
        """
        held: BaseException | None = None
        try:
            if not cancelled and self._nowait is not None and not self._off_loop:
                # Let the callers that are ready in this loop iteration join the first batch.
                # anyio's checkpoint is this on asyncio, after a backend lookup per call.
                try:
                    await asyncio.sleep(0)
                except asyncio.CancelledError as exc:
                    held = exc
            while True:
                if not own.done:
                    held = await self._write_batch() or held
                    continue
                queue = self._queue
                successor = next((w for w in queue if not w.abandoned), None) if queue else None
                if successor is not None:
                    successor.promoted = True
                    successor.wake_up()
                    return
                if not queue:
                    break
                held = await self._write_batch() or held  # only abandoned callers left: nobody else will
        except BaseException as exc:
            # Only a bug gets here (batch errors are caught below); never leave callers hanging.
            held = None
            while self._queue:
                self._queue.popleft().fail(_describe(exc), exc)
            raise
        finally:
            if not self._queue or not any(w.promoted and not w.done for w in self._queue):
                self._leading = False
                if self._idle is not None:
                    self._idle.set()
            if held is not None and not cancelled and (task := asyncio.current_task()) is not None:
                task.uncancel()  # the same request, delivered again at the next await
                task.cancel(*held.args)

    async def _write_batch(self) -> BaseException | None:
        """Write the next batch; return a cancellation that came meanwhile (held for ``_lead``)."""
        queue = self._queue
        batch = [queue.popleft()]
        events = batch[0].events
        if queue:
            size = len(events)
            while queue and size + len(queue[0].events) <= self._max_batch:
                size += len(queue[0].events)
                batch.append(queue.popleft())
            if len(batch) > 1:
                events = [event for waiter in batch for event in waiter.events]
        held: BaseException | None = None
        started = time.perf_counter()
        try:
            records = self._commit_on_loop(events)
            if records is None:
                written = self._writer.run(self.sink.append, events)
                try:
                    await written
                except asyncio.CancelledError as exc:
                    if not written.done():
                        raise  # not the thread's future's doing: cannot happen, never swallow
                    held = exc
                records = written.result()
            if len(records) != len(events):
                raise AuditError(f"audit sink returned {len(records)} records for {len(events)} events")
        except BaseException as exc:
            audit_committed(time.perf_counter() - started, type(exc).__name__)
            logger.error("audit batch of %d events failed: %s", len(events), _describe(exc))
            for waiter in batch:
                waiter.fail(_describe(exc), exc)
            if not isinstance(exc, Exception):
                raise
            return held
        audit_committed(time.perf_counter() - started)
        if len(batch) == 1:
            batch[0].finish(records)
        else:
            start = 0
            for waiter in batch:
                waiter.finish(records[start : start + len(waiter.events)])
                start += len(waiter.events)
        self._newest = records[-1]
        checkpointer = self.checkpointer
        if checkpointer is not None and checkpointer.due(records[0].seq, records[-1].seq):
            with anyio.CancelScope(shield=True):
                await self._checkpoint(checkpointer, records[-1])
        return held

    def _commit_on_loop(self, events: list[AuditEvent]) -> list[AuditRecord] | None:
        """The batch's records if it was committed here, on the loop; None to use the thread."""
        if self._nowait is None:
            return None
        if self._off_loop:
            self._off_loop -= 1
            return None
        started = self._clock()
        records = self._nowait(events)
        if self._clock() - started > self.LOOP_BUDGET:
            self._slow.append(self._attempts)
            while self._attempts - self._slow[0] >= self.LOOP_WINDOW:
                self._slow.popleft()
            if len(self._slow) >= self.LOOP_STRIKES:
                self._slow.clear()
                self._off_loop = self.LOOP_PAUSE
                logger.warning(
                    "%d audit commits took over %.0f ms: committing in a worker thread",
                    self.LOOP_STRIKES,
                    self.LOOP_BUDGET * 1e3,
                )
        self._attempts += 1
        if records is not None:
            self.loop_commits += 1
        return records

    async def _checkpoint(self, checkpointer: Checkpointer, record: AuditRecord) -> None:
        try:
            await anyio.to_thread.run_sync(checkpointer.write, record.seq, record.hash)
        except Exception as exc:
            logger.error("audit checkpoint at seq %d failed: %s", record.seq, _describe(exc))
            return
        self._checkpointed = max(self._checkpointed, record.seq)

    async def run_checkpoints(self) -> None:
        """Sign a checkpoint of the newest record every ``checkpointer.interval`` seconds when there
        are records newer than the last one; runs until cancelled (a gateway service)."""
        checkpointer = self.checkpointer
        if checkpointer is None or checkpointer.interval <= 0:
            return
        while not self._closed:
            await anyio.sleep(checkpointer.interval)
            await self.checkpoint_now()

    async def checkpoint_now(self) -> bool:
        """Sign a checkpoint of the newest record this log wrote, if it has none yet; True if signed."""
        newest, checkpointer = self._newest, self.checkpointer
        if checkpointer is None or newest is None or newest.seq <= self._checkpointed:
            return False
        with anyio.CancelScope(shield=True):
            await self._checkpoint(checkpointer, newest)
        return self._checkpointed >= newest.seq

    async def aclose(self) -> None:
        """Write the pending authentication-failure counts, refuse new appends, wait until every
        queued one is written, then sign a checkpoint of the newest record this log wrote (with a
        checkpointer). Idempotent."""
        if not self._closed:
            with anyio.CancelScope(shield=True):
                await self.failures.flush()
        self._closed = True
        while self._leading:
            self._idle = anyio.Event()
            await self._idle.wait()
        newest, checkpointer = self._newest, self.checkpointer
        if checkpointer is not None and newest is not None and newest.seq > self._checkpointed:
            with anyio.CancelScope(shield=True):  # a shutdown being cancelled must still sign the end
                await self._checkpoint(checkpointer, newest)

    async def __aenter__(self) -> AuditLog:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
