"""The alerts a gateway has raised: active until a person acknowledges them (the console's banner).

Every alert raised and every acknowledgement is an audit record (``alert``, ``alert_ack``), and a
starting gateway rebuilds its board from those records (``restore``), so an alert stays active
across restarts until someone acknowledges it. While an alert is active, the same rule tripping for
the same subject again adds to its count instead of raising (and sending) a new one.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from mcp_gateway.alerts.rules import Trigger
from mcp_gateway.errors import AuditUnavailable, GatewayError
from mcp_gateway.types import AuditEvent, AuditRecord, Clock

logger = logging.getLogger(__name__)

KEPT = 500
"""The most alerts a board holds; the oldest acknowledged ones go first."""


class UnknownAlert(GatewayError):
    """No alert has this id."""


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert raised (see ``alerts/rules.py`` for the rules).

    Attributes:
        id: ``al_`` and 16 hex digits.
        rule, subject, message, severity: from the rule that tripped (plain text: escape where shown).
        raised_at: epoch seconds.
        count: events folded into it (the tripping ones plus repeats while active).
        seq: the seq of its ``alert`` audit record (0: the record could not be written).
        acknowledged_by, acknowledged_at: who acknowledged it and when (None: active).
    """

    id: str
    rule: str
    subject: str
    message: str
    severity: str
    raised_at: float
    count: int = 1
    seq: int = 0
    acknowledged_by: str | None = None
    acknowledged_at: float | None = None

    @property
    def active(self) -> bool:
        return self.acknowledged_at is None


Append = Callable[[AuditEvent], Awaitable[AuditRecord]]


class AlertBoard:
    """Active and recent alerts.

    Args:
        append: writes an audit record (``AuditLog.append``); None: alerts are not audited (tests).
        clock: epoch seconds.
    """

    def __init__(self, append: Append | None = None, clock: Clock = time.time) -> None:
        self._append = append
        self._clock = clock
        self._alerts: dict[str, Alert] = {}
        self._open: dict[tuple[str, str], str] = {}

    def active(self) -> list[Alert]:
        """Unacknowledged alerts, newest first."""
        return sorted((a for a in self._alerts.values() if a.active), key=lambda a: -a.raised_at)

    def recent(self, limit: int = 50) -> list[Alert]:
        """Active and acknowledged alerts, newest first."""
        return sorted(self._alerts.values(), key=lambda a: -a.raised_at)[:limit]

    def get(self, alert_id: str) -> Alert | None:
        return self._alerts.get(alert_id)

    async def raise_alert(self, trigger: Trigger) -> Alert | None:
        """Raise an alert for ``trigger`` (audited); None when one for the same rule and subject is
        still active (its count grows instead)."""
        key = (trigger.rule, trigger.subject)
        open_id = self._open.get(key)
        if open_id is not None:
            current = self._alerts[open_id]
            self._alerts[open_id] = dataclasses.replace(current, count=current.count + trigger.count)
            return None
        alert = Alert(
            id=f"al_{secrets.token_hex(8)}",
            rule=trigger.rule,
            subject=trigger.subject,
            message=trigger.message,
            severity=trigger.severity,
            raised_at=self._clock(),
            count=trigger.count,
        )
        event = AuditEvent(
            kind="alert",
            agent=trigger.agent,
            tool=trigger.tool,
            status="raised",
            detail={
                "alert_id": alert.id,
                "rule": alert.rule,
                "subject": alert.subject,
                "message": alert.message,
                "severity": alert.severity,
                "count": alert.count,
            },
        )
        record = await self._audit(event)
        if record is not None:
            alert = dataclasses.replace(alert, seq=record.seq)
        self._keep(alert)
        return alert

    async def acknowledge(self, alert_id: str, by: str) -> Alert:
        """Mark an alert acknowledged by ``by`` (audited as ``alert_ack``); a second call changes nothing.

        A person's act, so audited first: if the record cannot be made durable the alert stays
        active and the error is raised.

        Raises:
            UnknownAlert: no alert has this id.
            AuditUnavailable: the acknowledgement could not be recorded (nothing changed).
        """
        alert = self._alerts.get(alert_id)
        if alert is None:
            raise UnknownAlert(f"no alert `{alert_id[:40]}`")
        if not alert.active:
            return alert
        event = AuditEvent(
            kind="alert_ack",
            status="ok",
            detail={"alert_id": alert.id, "rule": alert.rule, "subject": alert.subject, "by": by},
        )
        if self._append is not None:
            await self._append(event)
        done = dataclasses.replace(alert, acknowledged_by=by, acknowledged_at=self._clock())
        self._alerts[alert_id] = done
        self._open.pop((alert.rule, alert.subject), None)
        return done

    def restore(self, records: Iterable[AuditRecord]) -> None:
        """Rebuild the board from ``alert``/``alert_ack`` records in seq order (at start)."""
        for record in records:
            detail = record.detail
            alert_id = str(detail.get("alert_id") or "")
            if not alert_id:
                continue
            if record.kind == "alert":
                count = detail.get("count")
                self._keep(
                    Alert(
                        id=alert_id,
                        rule=str(detail.get("rule", "")),
                        subject=str(detail.get("subject", "")),
                        message=str(detail.get("message", "")),
                        severity=str(detail.get("severity", "high")),
                        raised_at=record.ts,
                        count=count if isinstance(count, int) else 1,
                        seq=record.seq,
                    )
                )
            elif record.kind == "alert_ack" and alert_id in self._alerts:
                alert = self._alerts[alert_id]
                by = str(detail.get("by", ""))
                self._alerts[alert_id] = dataclasses.replace(
                    alert, acknowledged_by=by, acknowledged_at=record.ts
                )
                self._open.pop((alert.rule, alert.subject), None)

    def _keep(self, alert: Alert) -> None:
        self._alerts[alert.id] = alert
        self._open[(alert.rule, alert.subject)] = alert.id
        if len(self._alerts) > KEPT:
            done = sorted((a for a in self._alerts.values() if not a.active), key=lambda a: a.raised_at)
            for old in done[: len(self._alerts) - KEPT]:
                del self._alerts[old.id]

    async def _audit(self, event: AuditEvent) -> AuditRecord | None:
        if self._append is None:
            return None
        try:
            return await self._append(event)
        except AuditUnavailable as exc:
            # The alert still shows and is still sent: an audit store that is down is itself news.
            logger.error("alert `%s` could not be audited: %s", event.detail.get("rule"), exc)
            return None
