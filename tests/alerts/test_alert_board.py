"""The alert board: an acknowledgement is a person's act, recorded before it takes effect."""

from __future__ import annotations

import pytest

from mcp_gateway.alerts.board import AlertBoard
from mcp_gateway.alerts.rules import Trigger
from mcp_gateway.errors import AuditUnavailable
from mcp_gateway.types import AuditEvent, AuditRecord

pytestmark = pytest.mark.anyio


class Log:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []
        self.down = False

    async def append(self, event: AuditEvent) -> AuditRecord:
        if self.down:
            raise AuditUnavailable("audit store unavailable")
        self.events.append(event)
        n = len(self.events)
        return AuditRecord(n, float(n), event.kind, "", "", "", "", event.status, {}, event.detail, "", "")


async def test_an_acknowledgement_the_audit_log_cannot_record_changes_nothing() -> None:
    log = Log()
    board = AlertBoard(log.append)
    alert = await board.raise_alert(Trigger("denial_burst", "agent-a", "12 denials in 60 s", "high", 12))
    assert alert is not None
    log.down = True
    with pytest.raises(AuditUnavailable):
        await board.acknowledge(alert.id, by="alice")
    assert [a.id for a in board.active()] == [alert.id]
    log.down = False
    done = await board.acknowledge(alert.id, by="alice")
    assert done.acknowledged_by == "alice" and board.active() == []
    assert [e.kind for e in log.events] == ["alert", "alert_ack"]
    assert log.events[-1].detail["by"] == "alice"
