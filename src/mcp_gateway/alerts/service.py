"""The alert service: follow the audit log by seq, evaluate the rules, raise, audit and send alerts.

A gateway background service (``run``). At start it rebuilds the board from the ``alert`` and
``alert_ack`` records, counts the records of the longest burst window before the newest one into the
burst rules without raising anything (``RuleEngine.prime``: a burst that straddles a restart still
trips), and begins after the newest record (alerts are about what happens while it runs, not about
history). Every ``poll_seconds`` it reads the new records, feeds them to the rules,
checks the timed rules (pending approvals, uncovered records), and raises what tripped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import anyio

from mcp_gateway.alerts.board import AlertBoard
from mcp_gateway.alerts.config import AlertSettings
from mcp_gateway.alerts.rules import RuleEngine, Trigger, Waiting
from mcp_gateway.alerts.webhook import AlertNotifier
from mcp_gateway.approvals.model import Approval
from mcp_gateway.errors import GatewayError
from mcp_gateway.types import AuditRecord, AuditSink, Clock, SecretValue

logger = logging.getLogger(__name__)

_BATCH = 1000
_RESTORE_LIMIT = 1000
_PRIME_LIMIT = 10_000
PendingApprovals = Callable[[], Sequence[Waiting]]


class AlertService:
    """Evaluates ``settings.rules`` over ``sink`` and puts what trips on ``board``.

    Args:
        settings: the ``alerts:`` section.
        board: where alerts go (and are audited from).
        sink: the audit store to follow.
        notifier: sends each new alert to the webhook (None: none configured).
        pending: the approvals still pending (a blocking call; run in a worker thread).
        watch_checkpoints: whether checkpoints are being signed (the chain-stalled rule needs it).
        clock: epoch seconds.
    """

    def __init__(
        self,
        settings: AlertSettings,
        board: AlertBoard,
        sink: AuditSink,
        *,
        notifier: AlertNotifier | None = None,
        pending: PendingApprovals | None = None,
        watch_checkpoints: bool = True,
        clock: Clock = time.time,
    ) -> None:
        self.settings = settings
        self.board = board
        self.sink = sink
        self.notifier = notifier
        self.pending = pending
        self.watch_checkpoints = watch_checkpoints
        self.engine = RuleEngine(settings.rules)
        self._clock = clock
        self.cursor = 0

    def _restore(self) -> int:
        alerts = self.sink.query(kind="alert", limit=_RESTORE_LIMIT)
        acks = self.sink.query(kind="alert_ack", limit=_RESTORE_LIMIT)
        self.board.restore(sorted([*alerts, *acks], key=lambda record: record.seq))
        head = self.sink.head()
        if head is None:
            return 0
        window = self.engine.longest_window
        if window > 0:
            # The newest records within the longest window (at most _PRIME_LIMIT of them), up to the head.
            recent = self.sink.query(since=self._clock() - window, limit=_PRIME_LIMIT)
            self.engine.prime(record for record in recent if record.seq <= head[0])
        return head[0]

    def _uncovered(self) -> tuple[float | None, str]:
        """The time of the oldest record no checkpoint covers, and why the store could not be read."""
        try:
            stored = self.sink.checkpoints()
            covered = stored[-1].seq if stored else 0
            first = self.sink.records(after_seq=covered, limit=1)
        except GatewayError as exc:
            return None, str(exc)
        return (first[0].ts if first else None), ""

    def _timed(self) -> tuple[list[Waiting], float | None, str]:
        waiting = list(self.pending()) if self.pending is not None else []
        if self.settings.rules.chain_stalled_seconds is None:
            return waiting, None, ""
        if not self.watch_checkpoints:
            try:
                self.sink.head()
            except GatewayError as exc:
                return waiting, None, str(exc)
            return waiting, None, ""
        uncovered, error = self._uncovered()
        return waiting, uncovered, error

    async def raise_all(self, triggers: list[Trigger]) -> None:
        for trigger in triggers:
            alert = await self.board.raise_alert(trigger)
            if alert is None:
                continue
            logger.warning("alert %s (%s): %s", alert.id, alert.rule, alert.message)
            if self.notifier is not None:
                self.notifier.submit(alert)

    async def step(self) -> None:
        """Read and evaluate what is new, then the timed rules (one poll)."""
        try:
            records: list[AuditRecord] = await anyio.to_thread.run_sync(
                lambda: self.sink.records(after_seq=self.cursor, limit=_BATCH)
            )
        except GatewayError as exc:
            records = []
            logger.error("alerts: the audit store cannot be read: %s", exc)
        triggers: list[Trigger] = []
        for record in records:
            triggers.extend(self.engine.feed(record))
            self.cursor = record.seq
        try:
            waiting, uncovered, error = await anyio.to_thread.run_sync(self._timed)
        except GatewayError as exc:
            logger.error("alerts: a timed rule could not be checked: %s", exc)
        else:
            triggers.extend(self.engine.tick(self._clock(), waiting, uncovered, error))
        await self.raise_all(triggers)

    async def run(self) -> None:
        """Evaluate until cancelled (a gateway service)."""
        while True:
            try:
                self.cursor = await anyio.to_thread.run_sync(self._restore)
                break
            except GatewayError as exc:
                logger.error("alerts not started yet: the audit store cannot be read: %s", exc)
                await anyio.sleep(max(self.settings.poll_seconds, 5.0))
        async with anyio.create_task_group() as tg:
            if self.notifier is not None:
                tg.start_soon(self.notifier.run)
            while True:
                try:
                    await self.step()
                except Exception:  # a service must never take the gateway down with it
                    logger.exception("alerts: evaluation failed; trying again")
                await anyio.sleep(self.settings.poll_seconds)


def build_alert_service(
    settings: AlertSettings,
    board: AlertBoard,
    sink: AuditSink,
    *,
    list_pending: Callable[[], Sequence[Approval]] | None = None,
    resolve_secret: Callable[[str], SecretValue] | None = None,
    watch_checkpoints: bool = True,
) -> AlertService | None:
    """The alert service for ``settings`` (None when no rule is on).

    Args:
        list_pending: the approval store's pending approvals (a blocking call).
        resolve_secret: vault lookup for a ``secret://`` webhook URL.
        watch_checkpoints: whether this gateway signs checkpoints.
    """
    if not settings.enabled:
        return None
    notifier = None
    if settings.webhook_url is not None:
        notifier = AlertNotifier(
            settings.webhook_url,
            resolve_secret=resolve_secret,
            allow_private_network=settings.allow_private_network,
            timeout_seconds=settings.timeout_seconds,
        )
    pending: PendingApprovals | None = None
    if list_pending is not None:
        lister = list_pending

        def pending() -> list[Waiting]:
            return [Waiting(a.id, a.agent, a.tool, a.created_at) for a in lister()]

    return AlertService(
        settings, board, sink, notifier=notifier, pending=pending, watch_checkpoints=watch_checkpoints
    )
