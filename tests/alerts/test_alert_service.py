"""The alert service over a real SQLite audit log: a burst that straddles a restart still trips, and
what tripped before the restart is not raised again."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from mcp_gateway.alerts.board import AlertBoard
from mcp_gateway.alerts.config import AlertRules, AlertSettings, Burst
from mcp_gateway.alerts.rules import Trigger
from mcp_gateway.alerts.service import AlertService
from mcp_gateway.audit.log import AuditLog
from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.types import AuditEvent

pytestmark = pytest.mark.anyio

SETTINGS = AlertSettings(rules=AlertRules(denial_burst=Burst(count=3, window_seconds=600)), poll_seconds=0.02)


def denied(agent: str) -> AuditEvent:
    return AuditEvent(kind="denied", agent=agent, tool="up.drop", decision="deny", status="denied")


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    with anyio.fail_after(seconds):
        while not condition():
            await anyio.sleep(0.01)


async def test_a_denial_burst_that_straddles_a_restart_trips_when_it_completes(tmp_path: Path) -> None:
    with SQLiteAuditSink(tmp_path / "audit.db") as sink:
        async with AuditLog(sink) as log:
            # Before this start: two denials of `a` (no alert yet) and three of `b`, whose alert the
            # previous process raised and someone acknowledged.
            for agent in ("a", "a", "b", "b", "b"):
                await log.append(denied(agent))
            before = AlertBoard(log.append)
            tripped = Trigger("denial_burst", "b", "agent b was denied 3 calls", "high", 3, agent="b")
            alert = await before.raise_alert(tripped)
            assert alert is not None
            await before.acknowledge(alert.id, "alice")
            board = AlertBoard(log.append)
            service = AlertService(SETTINGS, board, sink)
            head = sink.head()
            assert head is not None
            async with anyio.create_task_group() as tg:
                tg.start_soon(service.run)
                await until(lambda: service.cursor == head[0])
                assert board.active() == []  # counting the earlier records raised nothing again
                await log.append(denied("b"))  # `b` starts a new window: nothing
                await log.append(denied("a"))  # `a`'s third denial within the window: an alert
                await until(lambda: bool(board.active()))
                tg.cancel_scope.cancel()
            (raised,) = board.active()
            assert (raised.rule, raised.subject, raised.count) == ("denial_burst", "a", 3)
            assert [a.subject for a in board.recent()] == ["a", "b"]  # `b`'s old one, still acknowledged
