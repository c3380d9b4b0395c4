"""The two-person rule in the approval stores (SQLite file and the real PostgreSQL on 127.0.0.1:5432):
distinct approvers, the requester never approves, one approver counts once, racing votes lose nothing."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from mcp_gateway.approvals.model import (
    ApprovalDenied,
    ApprovalError,
    ApprovalNotPending,
    ApprovalPending,
    ApprovalSameApprover,
    ApprovalSelfApproval,
    args_hash,
    decide_refusal,
)
from mcp_gateway.approvals.settings import ApprovalSettings
from mcp_gateway.approvals.sql import PostgresApprovalStore, SQLiteApprovalStore, open_approval_store
from mcp_gateway.approvals.store import ApprovalStore

DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
HASH = args_hash({"job": "etl"})
Opener = Callable[..., ApprovalStore]


@pytest.fixture(params=["sqlite", "postgres"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens a store of each kind on one database (open twice: two replicas)."""
    opened: list[ApprovalStore] = []
    schema = f"approvals_2p_{uuid.uuid4().hex[:12]}"

    def open_store(min_approvers: int = 1) -> ApprovalStore:
        store: ApprovalStore
        if request.param == "sqlite":
            store = SQLiteApprovalStore(tmp_path / "approvals.db", min_approvers=min_approvers)
        else:
            store = PostgresApprovalStore(DSN, schema=schema, min_approvers=min_approvers)
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        store.close()
    if request.param == "postgres":
        with psycopg.connect(DSN, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _request(store: ApprovalStore, min_approvers: int | None = 2) -> Any:
    return store.create(
        agent="ops-agent",
        tool="ops.rerun_job",
        args_hash=HASH,
        args={"job": "etl"},
        reason="reruns need two humans",
        detail={},
        ttl_seconds=600,
        min_approvers=min_approvers,
    )


def _consume(store: ApprovalStore, approval_id: str) -> Any:
    return store.consume(approval_id, agent="ops-agent", tool="ops.rerun_job", args_hash=HASH, call_id="c1")


def test_a_call_needing_two_approvers_stays_unusable_until_a_second_distinct_admin_approves(
    opener: Opener,
) -> None:
    store = opener()
    approval = _request(store)
    first = store.decide(approval.id, approve=True, approver="alice", note="looks fine")
    assert (first.status, first.approver_names, first.decided_by) == ("pending", ("alice",), None)
    with pytest.raises(ApprovalPending, match="1 of 2 distinct approvers"):
        _consume(store, approval.id)
    second = store.decide(approval.id, approve=True, approver="bob")
    assert (second.status, second.approver_names, second.decided_by) == (
        "approved",
        ("alice", "bob"),
        "alice, bob",
    )
    assert _consume(store, approval.id).status == "used"


@pytest.mark.parametrize("again", ["alice", "ALICE", "Alice"])
def test_one_approver_counts_once_whatever_the_case_of_the_name(opener: Opener, again: str) -> None:
    store = opener()
    approval = _request(store)
    store.decide(approval.id, approve=True, approver="alice")
    with pytest.raises(ApprovalSameApprover, match="counts once") as refused:
        store.decide(approval.id, approve=True, approver=again)
    assert refused.value.kind == "approval_same_approver"
    current = store.get(approval.id)
    assert current is not None and (current.status, current.approver_names) == ("pending", ("alice",))
    with pytest.raises(ApprovalPending):
        _consume(store, approval.id)


@pytest.mark.parametrize("min_approvers", [1, 2])
@pytest.mark.parametrize("name", ["ops-agent", "OPS-AGENT"])
def test_the_requesting_agent_can_never_approve_its_own_call(
    opener: Opener, min_approvers: int, name: str
) -> None:
    store = opener()
    approval = _request(store, min_approvers)
    with pytest.raises(ApprovalSelfApproval, match="never approves its own call"):
        store.decide(approval.id, approve=True, approver=name)
    current = store.get(approval.id)
    assert current is not None and (current.status, current.approvers) == ("pending", ())


def test_one_deny_is_final_even_after_an_approval(opener: Opener) -> None:
    store = opener()
    approval = _request(store)
    store.decide(approval.id, approve=True, approver="alice")
    denied = store.decide(approval.id, approve=False, approver="bob", note="no")
    assert (denied.status, denied.decided_by) == ("denied", "bob")
    with pytest.raises(ApprovalNotPending):
        store.decide(approval.id, approve=True, approver="carol")
    with pytest.raises(ApprovalDenied):
        _consume(store, approval.id)


def test_the_gateway_minimum_is_a_floor_a_grant_can_raise_but_not_lower(opener: Opener) -> None:
    store = opener(min_approvers=2)
    assert _request(store, None).min_approvers == 2
    assert _request(store, 1).min_approvers == 2
    assert _request(store, 3).min_approvers == 3


def test_the_setting_reaches_the_store_through_open_approval_store(tmp_path: Path) -> None:
    store = open_approval_store(ApprovalSettings(min_approvers=2), tmp_path)
    try:
        assert _request(store, None).min_approvers == 2
    finally:
        store.close()


def test_racing_votes_of_distinct_admins_on_two_replicas_are_each_counted_exactly_once(
    opener: Opener,
) -> None:
    stores = [opener(), opener()]
    approval = _request(stores[0], 3)
    names = [f"admin-{i}" for i in range(8)]
    start = threading.Barrier(len(names))
    outcomes: dict[str, str] = {}

    def vote(index: int) -> None:
        start.wait()
        try:
            stores[index % 2].decide(approval.id, approve=True, approver=names[index])
            outcomes[names[index]] = "counted"
        except ApprovalError as exc:
            outcomes[names[index]] = exc.kind

    threads = [threading.Thread(target=vote, args=(i,)) for i in range(len(names))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    final = stores[0].get(approval.id)
    assert final is not None and final.status == "approved"
    counted = sorted(name for name, outcome in outcomes.items() if outcome == "counted")
    assert sorted(final.approver_names) == counted and len(counted) == 3
    assert {o for o in outcomes.values() if o != "counted"} <= {"approval_not_pending"}


def test_racing_votes_of_one_admin_count_once(opener: Opener) -> None:
    stores = [opener(), opener()]
    approval = _request(stores[0], 2)
    start = threading.Barrier(6)
    outcomes: list[str] = []

    def vote(index: int) -> None:
        start.wait()
        try:
            stores[index % 2].decide(approval.id, approve=True, approver="alice")
            outcomes.append("counted")
        except ApprovalError as exc:
            outcomes.append(exc.kind)

    threads = [threading.Thread(target=vote, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    final = stores[0].get(approval.id)
    assert final is not None and (final.status, final.approver_names) == ("pending", ("alice",))
    assert sorted(outcomes) == ["approval_same_approver"] * 5 + ["counted"]


def test_the_pure_check_refuses_self_approval_and_double_votes_but_lets_anyone_deny(tmp_path: Path) -> None:
    store = SQLiteApprovalStore(tmp_path / "a.db")
    try:
        approval = _request(store)
        voted = store.decide(approval.id, approve=True, approver="alice")
        now = voted.created_at + 1
        assert decide_refusal(voted, voted.id, now=now, approver="ops-agent", approve=False) is None
        self_vote = decide_refusal(voted, voted.id, now=now, approver="ops-agent")
        twice = decide_refusal(voted, voted.id, now=now, approver="Alice")
        assert isinstance(self_vote, ApprovalSelfApproval) and isinstance(twice, ApprovalSameApprover)
        assert decide_refusal(voted, voted.id, now=now, approver="bob") is None
    finally:
        store.close()


def test_a_store_made_before_the_two_person_rule_gains_its_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "approvals.db"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE approvals (id TEXT PRIMARY KEY, agent TEXT NOT NULL, tool TEXT NOT NULL,"
        " args_hash TEXT NOT NULL, args TEXT NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL,"
        " created_at REAL NOT NULL, expires_at REAL NOT NULL, ttl_seconds REAL NOT NULL,"
        " status TEXT NOT NULL, decided_by TEXT, decided_at REAL, note TEXT, used_at REAL, used_call_id TEXT)"
    )
    old.execute(
        "INSERT INTO approvals VALUES ('apr_old', 'ops-agent', 'ops.rerun_job', ?, '{}', 'r', '{}',"
        " 1, 9999999999, 600, 'pending', NULL, NULL, NULL, NULL, NULL)",
        (HASH,),
    )
    old.commit()
    old.close()
    store = SQLiteApprovalStore(path)
    try:
        before = store.get("apr_old")
        assert before is not None and (before.min_approvers, before.approvers) == (1, ())
        assert store.decide("apr_old", approve=True, approver="alice").status == "approved"
        assert _consume(store, "apr_old").status == "used"
    finally:
        store.close()
