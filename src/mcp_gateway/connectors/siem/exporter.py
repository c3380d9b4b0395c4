"""The SIEM export service: follow the audit log by seq and deliver each batch to one sink.

One ``SiemExporter`` per sink, each a gateway background service (``run``). The loop:

1. read up to ``batch_size`` records after the sink's cursor (from the audit store);
2. redact each again (the vault's current values) and encode it (OCSF or the JSON record);
3. deliver the batch; on failure wait (exponential backoff with jitter, ``tenacity``) and deliver the
   same batch again, for as long as it takes: a sink that is down catches up when it is back;
4. durably move the cursor from where the batch was read to its last seq (``CursorStore.move``: a
   replica that lost the export to another one cannot move the cursor under it).

Steps 3-4 of one attempt run shielded from cancellation (each bounded by the sink's timeout), so a
gateway that stops finishes the batch it is sending and records it before it goes: a restart neither
skips nor resends. A process killed between 3 and 4 resends that one batch, with the same event ids.
With replicas, ``confirm`` (the export lease's check, ``storage/lease.py``) runs before each delivery.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Literal, Protocol

import anyio
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from mcp_gateway.connectors.siem.config import HttpSink, SiemSettings, SyslogSink
from mcp_gateway.connectors.siem.cursor import CursorMoved, CursorStore, SQLiteCursorStore
from mcp_gateway.connectors.siem.formats import to_json
from mcp_gateway.connectors.siem.syslog import DeliveryError, SyslogDelivery
from mcp_gateway.errors import GatewayError
from mcp_gateway.redact import EMPTY, Redactor
from mcp_gateway.types import AuditRecord, AuditSink, SecretValue

logger = logging.getLogger(__name__)

Batch = Sequence[tuple[AuditRecord, str]]


class Delivery(Protocol):
    """Where a sink's batches go (``SyslogDelivery``, ``HecDelivery``)."""

    async def send(self, batch: Batch) -> None:
        """Deliver ``batch`` or raise ``DeliveryError``."""
        ...

    async def aclose(self) -> None: ...


async def _sleep(seconds: float) -> None:
    await anyio.sleep(seconds)


class SiemExporter:
    """Streams the audit log to one sink with a durable cursor.

    Args:
        name: the sink's name (its cursor's key).
        delivery: sends batches.
        fmt: ``ocsf`` or ``jsonl``.
        sink: the audit store read from (``records(after_seq=, limit=)``, ``head()``).
        cursors: the cursor store (opened and closed by the caller).
        redactor: the current redactor (called per batch, so new vault values are caught).
        settings: batch size, poll interval, backoff, where a new cursor starts.
        confirm: raises unless this replica may still export (the lease check); None: always may.
    """

    def __init__(
        self,
        name: str,
        delivery: Delivery,
        fmt: Literal["ocsf", "jsonl"],
        sink: AuditSink,
        cursors: CursorStore,
        *,
        redactor: Callable[[], Redactor] = lambda: EMPTY,
        settings: SiemSettings | None = None,
        confirm: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.name = name
        self.delivery = delivery
        self.fmt = fmt
        self.sink = sink
        self.cursors = cursors
        self.redactor = redactor
        self.settings = settings or SiemSettings()
        self.confirm = confirm
        self.delivered = 0
        self.failures = 0
        self.last_error = ""

    def __repr__(self) -> str:
        return f"SiemExporter({self.name!r})"

    async def _start(self) -> int:
        cursor = await anyio.to_thread.run_sync(self.cursors.get, self.name)
        if cursor is not None:
            return cursor
        start = 0
        if self.settings.start_at == "end":
            head = await anyio.to_thread.run_sync(self.sink.head)
            start = head[0] if head else 0
        await anyio.to_thread.run_sync(self.cursors.set, self.name, start)
        return start

    def _before_sleep(self, state: RetryCallState) -> None:
        self.failures += 1
        exc = state.outcome.exception() if state.outcome is not None else None
        self.last_error = str(exc)
        wait = state.next_action.sleep if state.next_action is not None else 0
        # DeliveryError messages name the sink's host and the problem, never a credential.
        logger.warning("%s; attempt %d, retrying in %.1fs", exc, state.attempt_number, wait)

    async def _deliver(self, after: int, records: list[AuditRecord]) -> None:
        redactor = self.redactor()
        batch = [(record, to_json(record, self.fmt, redactor)) for record in records]
        last = records[-1].seq
        retrying = AsyncRetrying(
            wait=wait_exponential_jitter(
                multiplier=self.settings.retry_initial_seconds,
                max=self.settings.retry_max_seconds,
                jitter=self.settings.retry_initial_seconds,
            ),
            retry=retry_if_exception_type(DeliveryError),
            sleep=_sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt, anyio.CancelScope(shield=True):
                # Shielded: a batch sent is always followed by its cursor (each step has a timeout).
                if self.confirm is not None:
                    await self.confirm()
                await self.delivery.send(batch)
                await anyio.to_thread.run_sync(self.cursors.move, self.name, after, last)
        self.delivered += len(records)
        self.last_error = ""

    def _read(self, after: int) -> list[AuditRecord]:
        return self.sink.records(after_seq=after, limit=self.settings.batch_size)

    async def _step(self, cursor: int) -> int:
        """Deliver the next batch after ``cursor``; the new cursor (the same when there was nothing)."""
        records = await anyio.to_thread.run_sync(self._read, cursor)
        if not records:
            await anyio.sleep(self.settings.poll_seconds)
            return cursor
        await self._deliver(cursor, records)
        return records[-1].seq

    async def run(self) -> None:
        """Follow the log until cancelled (a gateway service). A store that cannot be read or written
        is retried after ``retry_max_seconds``; nothing here ends the gateway."""
        cursor: int | None = None
        try:
            while True:
                try:
                    if cursor is None:
                        cursor = await self._start()
                        logger.info("siem sink `%s`: streaming from seq %d", self.name, cursor + 1)
                    cursor = await self._step(cursor)
                except CursorMoved as exc:
                    logger.warning("siem sink `%s`: %s; reading it again", self.name, exc)
                    cursor = None
                except GatewayError as exc:
                    self.failures += 1
                    self.last_error = str(exc)
                    logger.error("siem sink `%s`: %s; trying again", self.name, exc)
                    await anyio.sleep(self.settings.retry_max_seconds)
                except Exception:  # a service must never take the gateway down with it
                    self.failures += 1
                    logger.exception("siem sink `%s` failed unexpectedly; trying again", self.name)
                    await anyio.sleep(self.settings.retry_max_seconds)
        finally:
            with anyio.CancelScope(shield=True):
                await self.delivery.aclose()


class SiemService:
    """Every configured sink's exporter, run as one gateway service sharing one cursor store.

    Args:
        settings: the ``siem:`` section.
        data_dir: where a relative ``cursor_path`` lives.
        sink: the audit store to follow.
        redactor: the current redactor.
        resolve_secret: vault lookup (an HTTP sink's ``secret://`` token).
        open_cursors: opens the cursor store (a blocking call); default: the SQLite ``cursor_path``.
        confirm: the export lease's check, run before each delivery (see ``SiemExporter``).
    """

    def __init__(
        self,
        settings: SiemSettings,
        data_dir: Path,
        sink: AuditSink,
        *,
        redactor: Callable[[], Redactor] = lambda: EMPTY,
        resolve_secret: Callable[[str], SecretValue] | None = None,
        open_cursors: Callable[[], CursorStore] | None = None,
        confirm: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        path = settings.cursor_path
        self.cursor_path = path if path.is_absolute() else data_dir / path
        self.sink = sink
        self.redactor = redactor
        self.resolve_secret = resolve_secret
        self.open_cursors = open_cursors or (lambda: SQLiteCursorStore(self.cursor_path))
        self.confirm = confirm
        self.exporters: list[SiemExporter] = []

    def _build(self, cursors: CursorStore) -> list[SiemExporter]:
        from mcp_gateway.connectors.lineage.delivery import LineageDelivery
        from mcp_gateway.connectors.siem.hec import HecDelivery

        exporters = []
        for name, config in self.settings.sinks.items():
            delivery: Delivery
            if isinstance(config, SyslogSink):
                delivery = SyslogDelivery(name, config)
            elif isinstance(config, HttpSink):
                delivery = HecDelivery(name, config, self.resolve_secret)
            else:
                delivery = LineageDelivery(name, config, self.sink, self.resolve_secret, self.redactor)
            exporters.append(
                SiemExporter(
                    name,
                    delivery,
                    config.format,
                    self.sink,
                    cursors,
                    redactor=self.redactor,
                    settings=self.settings,
                    confirm=self.confirm,
                )
            )
        return exporters

    async def run(self) -> None:
        """Run every sink's exporter until cancelled (a gateway service)."""
        if not self.settings.sinks:
            return
        try:
            cursors = await anyio.to_thread.run_sync(self.open_cursors)
        except GatewayError as exc:
            logger.error("siem export not started: %s", exc)
            return
        try:
            self.exporters = self._build(cursors)
            async with anyio.create_task_group() as tg:
                for exporter in self.exporters:
                    tg.start_soon(exporter.run)
        finally:
            cursors.close()
