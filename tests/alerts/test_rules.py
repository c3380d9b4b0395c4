"""The alert rules over audit records (pure) and the board that keeps alerts until acknowledged."""

from __future__ import annotations

from typing import Any

import pytest

from mcp_gateway.alerts.board import AlertBoard, UnknownAlert
from mcp_gateway.alerts.config import AlertRules, AlertSettings, Burst
from mcp_gateway.alerts.rules import RuleEngine, Trigger, Waiting
from mcp_gateway.types import AuditEvent, AuditRecord

pytestmark = pytest.mark.anyio


def _rec(seq: int, ts: float, kind: str, **fields: Any) -> AuditRecord:
    base: dict[str, Any] = {
        "call_id": "",
        "agent": "",
        "tool": "",
        "decision": "",
        "status": "",
        "args": {},
        "detail": {},
    }
    base.update(fields)
    return AuditRecord(seq=seq, ts=ts, kind=kind, prev_hash="0" * 64, hash=f"{seq:064x}", **base)


def _feed(engine: RuleEngine, records: list[AuditRecord]) -> list[Trigger]:
    return [trigger for record in records for trigger in engine.feed(record)]


def test_no_rule_is_on_by_default() -> None:
    assert not AlertSettings().enabled
    assert AlertSettings(rules=AlertRules(pin_blocks=True)).enabled


@pytest.mark.parametrize(
    ("times", "expected"),
    [
        ([0, 1, 2], 1),  # three in 60 s
        ([0, 30, 59.9], 1),
        ([0, 61, 122], 0),  # spread out: never three within a window
        ([0, 1, 2, 3, 4, 5], 2),  # the window restarts after it trips: one alert per burst
    ],
)
def test_a_denial_burst_per_agent_trips_at_n_denials_within_the_window(
    times: list[float], expected: int
) -> None:
    engine = RuleEngine(AlertRules(denial_burst=Burst(count=3, window_seconds=60)))
    records = [_rec(i + 1, t, "denied", agent="a", tool="x", decision="deny") for i, t in enumerate(times)]
    triggers = _feed(engine, records)
    assert len(triggers) == expected
    assert all(t.rule == "denial_burst" and t.subject == "a" for t in triggers)


def test_denials_of_different_agents_are_counted_apart() -> None:
    engine = RuleEngine(AlertRules(denial_burst=Burst(count=2, window_seconds=60)))
    records = [_rec(i, i, "denied", agent=agent) for i, agent in enumerate(["a", "b", "c", "a"], 1)]
    assert [t.subject for t in _feed(engine, records)] == ["a"]


def test_auth_failures_count_per_source_including_aggregated_summaries() -> None:
    engine = RuleEngine(AlertRules(auth_failures=Burst(count=10, window_seconds=60)))
    records = [
        _rec(1, 1, "auth_failure", detail={"client": "10.0.0.9"}),
        _rec(2, 2, "auth_failure", detail={"client": "10.0.0.7"}),
        _rec(3, 3, "auth_failure_summary", detail={"client": "10.0.0.9", "aggregated": 9}),
    ]
    (trigger,) = _feed(engine, records)
    assert (trigger.rule, trigger.subject, trigger.count) == ("auth_failures", "10.0.0.9", 10)


def test_a_blocked_definition_change_raises_a_pin_block() -> None:
    engine = RuleEngine(AlertRules(pin_blocks=True))
    (trigger,) = _feed(engine, [_rec(1, 1, "tool_changed", tool="up.drop", status="blocked")])
    assert (trigger.rule, trigger.subject) == ("pin_block", "up.drop")
    assert _feed(engine, [_rec(2, 2, "tool_pinned", tool="up.new", status="pinned")]) == []


def test_redaction_hits_count_the_secrets_replaced_in_a_tools_results() -> None:
    engine = RuleEngine(AlertRules(redaction_hits=Burst(count=3, window_seconds=600)))
    records = [
        _rec(1, 1, "outcome", tool="leaky.env", detail={"redactions": 2}),
        _rec(2, 2, "outcome", tool="leaky.echo", detail={"redactions": 0}),
        _rec(3, 3, "outcome", tool="leaky.env", detail={"redactions": 1}),
    ]
    (trigger,) = _feed(engine, records)
    assert (trigger.rule, trigger.subject, trigger.count) == ("redaction_hits", "leaky.env", 3)


def test_a_failed_chain_check_raises_verify_failed() -> None:
    engine = RuleEngine(AlertRules(verify_failed=True))
    alarm = _rec(1, 1, "audit_alarm", detail={"problems": ["seq 4: modified: hash"], "problem_count": 1})
    verified = _rec(2, 2, "audit_verify", status="ok")
    failed = _rec(3, 3, "audit_verify", status="failed", detail={"problems": ["a", "b"]})
    triggers = _feed(engine, [alarm, verified, failed])
    assert [t.rule for t in triggers] == ["verify_failed", "verify_failed"]
    assert "seq 4: modified" in triggers[0].message and "2 problem" in triggers[1].message


def test_the_alerts_own_records_are_never_evaluated() -> None:
    engine = RuleEngine(AlertRules(denial_burst=Burst(count=1, window_seconds=60), verify_failed=True))
    assert _feed(engine, [_rec(1, 1, "alert", agent="a", status="raised"), _rec(2, 2, "alert_ack")]) == []


def test_an_approval_waiting_longer_than_the_limit_raises_approval_wait() -> None:
    engine = RuleEngine(AlertRules(approval_wait_minutes=30))
    waiting = [Waiting("ap_old", "a", "ops.rerun", 0.0), Waiting("ap_new", "a", "ops.rerun", 1500.0)]
    (trigger,) = engine.tick(now=1800.0, waiting=waiting)
    assert (trigger.rule, trigger.subject) == ("approval_wait", "ap_old")


@pytest.mark.parametrize(
    ("uncovered_since", "error", "expected"),
    [(None, "", []), (100.0, "", []), (0.0, "", ["checkpoints"]), (None, "disk I/O error", ["audit store"])],
)
def test_a_stalled_chain_writer_or_an_unreadable_store_raises_chain_stalled(
    uncovered_since: float | None, error: str, expected: list[str]
) -> None:
    engine = RuleEngine(AlertRules(chain_stalled_seconds=60))
    triggers = engine.tick(now=120.0, uncovered_since=uncovered_since, store_error=error)
    assert [t.subject for t in triggers] == expected


async def test_a_repeat_of_an_active_alert_adds_to_it_instead_of_raising_again() -> None:
    written: list[AuditEvent] = []

    async def append(event: AuditEvent) -> AuditRecord:
        written.append(event)
        return _rec(len(written), 0, event.kind, detail=dict(event.detail))

    board = AlertBoard(append, clock=lambda: 1000.0)
    trigger = Trigger("denial_burst", "a", "agent a was denied 3 calls", "high", 3, agent="a")
    first = await board.raise_alert(trigger)
    assert first is not None and first.seq == 1
    assert await board.raise_alert(trigger) is None
    (active,) = board.active()
    assert active.count == 6 and [e.kind for e in written] == ["alert"]
    done = await board.acknowledge(active.id, by="alice")
    assert done.acknowledged_by == "alice" and board.active() == []
    assert [e.kind for e in written] == ["alert", "alert_ack"] and written[1].detail["by"] == "alice"
    assert await board.acknowledge(active.id, by="bob") == done  # no second record
    assert len(written) == 2
    assert await board.raise_alert(trigger) is not None  # after acknowledgement it is news again
    with pytest.raises(UnknownAlert):
        await board.acknowledge("al_nope", by="alice")


def test_a_restarted_board_keeps_the_unacknowledged_alerts_from_the_audit_records() -> None:
    board = AlertBoard()
    detail = {"rule": "pin_block", "subject": "up.t", "message": "m", "severity": "high", "count": 1}
    board.restore(
        [
            _rec(1, 10, "alert", detail={"alert_id": "al_1", **detail}),
            _rec(2, 11, "alert", detail={"alert_id": "al_2", **detail, "subject": "up.u"}),
            _rec(3, 12, "alert_ack", detail={"alert_id": "al_1", "by": "alice"}),
        ]
    )
    assert [a.id for a in board.active()] == ["al_2"]
    acknowledged = board.get("al_1")
    assert acknowledged is not None and acknowledged.acknowledged_by == "alice"


def test_a_monitor_that_cannot_measure_its_table_raises_monitor_errors_per_monitor() -> None:
    engine = RuleEngine(AlertRules(monitor_errors=Burst(count=3, window_seconds=3600)))

    def run(seq: int, monitor: str, status: str = "error") -> AuditRecord:
        args = {"monitor": monitor, "table": f"lake.s.{monitor}"}
        return _rec(seq, seq * 60, "incident", status=status, args=args, detail={"error": "ConnectionError"})

    records = [run(1, "nulls"), run(2, "rows"), run(3, "nulls", "open"), run(4, "nulls"), run(5, "nulls")]
    (trigger,) = _feed(engine, records)  # opening an incident is not an error; other monitors count apart
    assert (trigger.rule, trigger.subject, trigger.count, trigger.severity) == (
        "monitor_errors",
        "nulls",
        3,
        "high",
    )
    assert (
        trigger.message
        == "monitor nulls could not measure lake.s.nulls 3 times within 3600s (last: ConnectionError)"
    )
    assert AlertSettings(rules=AlertRules(monitor_errors=Burst(count=1, window_seconds=60))).enabled


def test_primed_records_count_towards_a_burst_without_raising_it_again() -> None:
    rules = AlertRules(
        denial_burst=Burst(count=3, window_seconds=60), monitor_errors=Burst(count=2, window_seconds=600)
    )
    engine = RuleEngine(rules)
    assert engine.longest_window == 600
    # Before the restart: two denials of `a` (no alert yet), and three of `b` (its alert was raised).
    before = [_rec(i, i, "denied", agent="a") for i in (1, 2)] + [
        _rec(i, i, "denied", agent="b") for i in (3, 4, 5)
    ]
    engine.prime(before)
    after = [_rec(6, 6, "denied", agent="a"), _rec(7, 7, "denied", agent="b")]
    (trigger,) = _feed(engine, after)  # `a` completes its burst; `b` starts a new window
    assert (trigger.subject, trigger.count) == ("a", 3)
    assert RuleEngine(AlertRules(pin_blocks=True)).longest_window == 0
