"""Approval stores (SQLite file and the real PostgreSQL on 127.0.0.1:5432): binding, single use, expiry."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from mcp_gateway.approvals.model import (
    ApprovalArgsChanged,
    ApprovalDenied,
    ApprovalError,
    ApprovalExpired,
    ApprovalNotFound,
    ApprovalNotPending,
    ApprovalOtherAgent,
    ApprovalOtherTool,
    ApprovalPending,
    ApprovalRequired,
    ApprovalUsed,
    args_hash,
)
from mcp_gateway.approvals.settings import ApprovalSettings
from mcp_gateway.approvals.sql import PostgresApprovalStore, SQLiteApprovalStore, open_approval_store
from mcp_gateway.approvals.store import ApprovalStore
from mcp_gateway.errors import CallRefused, GatewayError

DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
ARGS = {"job": "nightly-etl", "run_id": 42, "note": "é ünïcode"}
HASH = args_hash(ARGS)


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


Opener = Callable[[], ApprovalStore]


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Opener, FakeClock]]:
    """An opener for a fresh store of each kind (open it again to simulate a restart), and its clock."""
    clock = FakeClock()
    opened: list[ApprovalStore] = []
    schema = f"approvals_test_{uuid.uuid4().hex[:12]}"

    def opener() -> ApprovalStore:
        store: ApprovalStore
        if request.param == "sqlite":
            store = SQLiteApprovalStore(tmp_path / "data" / "approvals.db", clock=clock)
        else:
            store = PostgresApprovalStore(DSN, schema=schema, clock=clock)
        opened.append(store)
        return store

    yield opener, clock
    for store in opened:
        store.close()
    if request.param == "postgres":
        with psycopg.connect(DSN, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _request(store: ApprovalStore, *, ttl: float = 600, **overrides: Any) -> Any:
    fields: dict[str, Any] = {
        "agent": "ops-agent",
        "tool": "ops.rerun_job",
        "args_hash": HASH,
        "args": {**ARGS, "token": "[redacted]"},
        "reason": "reruns need a human",
        "detail": {"before": {"state": "failed"}},
        "ttl_seconds": ttl,
    }
    return store.create(**{**fields, **overrides})


def _get(store: ApprovalStore, approval_id: str) -> Any:
    found = store.get(approval_id)
    assert found is not None
    return found


def _consume(store: ApprovalStore, approval_id: str, **overrides: Any) -> Any:
    fields = {"agent": "ops-agent", "tool": "ops.rerun_job", "args_hash": HASH, "call_id": "call-1"}
    return store.consume(approval_id, **{**fields, **overrides})


def test_args_hash_ignores_the_approval_id_and_key_order_but_not_values() -> None:
    assert args_hash({"b": 1, "a": "x"}) == args_hash({"a": "x", "b": 1, "approval_id": "apr_123"})
    assert args_hash({"a": "x", "b": 1}) != args_hash({"a": "x", "b": 2})
    # Canonical JSON: sorted keys, no whitespace, UTF-8 (not \\u escapes).
    import hashlib

    assert args_hash({"é": 1, "a": [1, 2]}) == hashlib.sha256('{"a":[1,2],"é":1}'.encode()).hexdigest()


def test_an_approved_request_is_used_once_for_exactly_the_call_it_names(
    backend: tuple[Opener, FakeClock],
) -> None:
    opener, clock = backend
    store = opener()
    created = _request(store)
    assert created.id.startswith("apr_") and len(created.id) > 30 and created.status == "pending"
    clock.now += 10
    decided = store.decide(created.id, approve=True, approver="alice", note="looks right")
    assert (decided.status, decided.decided_by, decided.note) == ("approved", "alice", "looks right")
    assert decided.expires_at == clock.now + 600  # usable for the ttl from the decision
    used = _consume(store, created.id, call_id="call-7")
    assert (used.status, used.used_call_id, used.used_at) == ("used", "call-7", clock.now)
    with pytest.raises(ApprovalUsed) as replay:
        _consume(store, created.id, call_id="call-8")
    assert replay.value.kind == "approval_used" and isinstance(replay.value, CallRefused)


@pytest.mark.parametrize(
    ("overrides", "error", "kind"),
    [
        ({"agent": "other-agent"}, ApprovalOtherAgent, "approval_other_agent"),
        ({"tool": "ops.delete_job"}, ApprovalOtherTool, "approval_other_tool"),
        ({"args_hash": args_hash({**ARGS, "run_id": 43})}, ApprovalArgsChanged, "approval_args_changed"),
    ],
)
def test_an_approval_presented_for_another_call_is_refused_and_stays_usable(
    backend: tuple[Opener, FakeClock], overrides: dict[str, Any], error: type[ApprovalError], kind: str
) -> None:
    opener, _ = backend
    store = opener()
    approval = _request(store)
    store.decide(approval.id, approve=True, approver="alice")
    with pytest.raises(error) as refused:
        _consume(store, approval.id, **overrides)
    assert refused.value.kind == kind and refused.value.approval_id == approval.id
    assert _get(store, approval.id).status == "approved"  # the misuse consumed nothing
    assert _consume(store, approval.id).status == "used"


def test_pending_denied_unknown_and_expired_approvals_are_refused_with_their_kind(
    backend: tuple[Opener, FakeClock],
) -> None:
    opener, clock = backend
    store = opener()
    pending = _request(store)
    with pytest.raises(ApprovalPending, match="still pending"):
        _consume(store, pending.id)
    denied = _request(store)
    store.decide(denied.id, approve=False, approver="bob", note="no")
    with pytest.raises(ApprovalDenied) as was_denied:
        _consume(store, denied.id)
    assert was_denied.value.kind == "approval_denied"
    with pytest.raises(ApprovalNotFound) as unknown:
        _consume(store, "apr_doesnotexist")
    assert unknown.value.kind == "approval_not_found"
    granted = _request(store, ttl=60)
    store.decide(granted.id, approve=True, approver="alice")
    clock.now += 61
    with pytest.raises(ApprovalExpired) as expired:
        _consume(store, granted.id)
    assert expired.value.kind == "approval_expired"
    assert _get(store, granted.id).status == "expired"


def test_a_request_can_be_decided_only_while_pending_and_unexpired(backend: tuple[Opener, FakeClock]) -> None:
    opener, clock = backend
    store = opener()
    approval = _request(store, ttl=60)
    store.decide(approval.id, approve=False, approver="bob")
    with pytest.raises(ApprovalNotPending, match="already denied"):
        store.decide(approval.id, approve=True, approver="mallory")
    assert _get(store, approval.id).decided_by == "bob"
    stale = _request(store, ttl=60)
    clock.now += 60
    with pytest.raises(ApprovalExpired, match="expired before it was decided"):
        store.decide(stale.id, approve=True, approver="alice")
    with pytest.raises(ApprovalNotFound):
        store.decide("apr_nope", approve=True, approver="alice")
    with pytest.raises(GatewayError, match="approver"):
        store.decide(_request(store).id, approve=True, approver="")


def test_approvals_survive_a_restart_of_the_store(backend: tuple[Opener, FakeClock]) -> None:
    opener, _ = backend
    first = opener()
    approval = _request(first)
    first.decide(approval.id, approve=True, approver="alice", note="ok")
    first.close()
    reopened = opener()
    again = reopened.get(approval.id)
    assert again is not None
    assert again.to_dict() == {**approval.to_dict(), **{k: again.to_dict()[k] for k in _DECISION_FIELDS}}
    assert (again.status, again.decided_by, again.args, again.detail) == (
        "approved",
        "alice",
        approval.args,
        {"before": {"state": "failed"}},
    )
    assert _consume(reopened, approval.id).status == "used"
    reopened.close()
    with pytest.raises(ApprovalUsed):
        _consume(opener(), approval.id)


_DECISION_FIELDS = ("status", "decided_by", "decided_at", "note", "expires_at", "approvers")


def test_list_filters_by_the_status_in_force_now_newest_first(backend: tuple[Opener, FakeClock]) -> None:
    opener, clock = backend
    store = opener()
    old = _request(store, ttl=30)
    clock.now += 1
    fresh = _request(store, ttl=600)
    clock.now += 1
    denied = _request(store)
    store.decide(denied.id, approve=False, approver="bob")
    clock.now += 30
    assert [a.id for a in store.list()] == [denied.id, fresh.id, old.id]
    assert [a.id for a in store.list("pending")] == [fresh.id]
    assert [(a.id, a.status) for a in store.list("expired")] == [(old.id, "expired")]
    assert [a.id for a in store.list("denied")] == [denied.id]
    assert [a.id for a in store.list(limit=1)] == [denied.id]
    with pytest.raises(GatewayError, match="unknown approval status `bogus`"):
        store.list("bogus")  # type: ignore[arg-type]


def test_two_racing_consumers_get_one_use_between_them(backend: tuple[Opener, FakeClock]) -> None:
    opener, _ = backend
    stores = [opener(), opener()]  # two connections: two gateway replicas
    approval = _request(stores[0])
    stores[0].decide(approval.id, approve=True, approver="alice")
    start = threading.Barrier(8)
    outcomes: list[str] = []

    def use(index: int) -> None:
        start.wait()
        try:
            _consume(stores[index % 2], approval.id, call_id=f"call-{index}")
            outcomes.append("used")
        except ApprovalUsed:
            outcomes.append("refused")

    threads = [threading.Thread(target=use, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert sorted(outcomes) == ["refused"] * 7 + ["used"]


def test_values_json_cannot_hold_are_stored_as_text_and_odd_strings_round_trip(
    backend: tuple[Opener, FakeClock],
) -> None:
    import datetime as dt

    opener, _ = backend
    store = opener()
    approval = _request(
        store, args={"s": "nul\x00 and lone \ud800"}, detail={"at": dt.datetime(2026, 1, 2, tzinfo=dt.UTC)}
    )
    again = store.get(approval.id)
    assert again is not None and again.args == {"s": "nul\x00 and lone \ud800"}
    assert again.detail == {"at": "2026-01-02 00:00:00+00:00"}


def test_approval_required_tells_the_agent_the_id_and_how_to_use_it(tmp_path: Path) -> None:
    store = SQLiteApprovalStore(tmp_path / "a.db")
    approval = _request(store)
    error = ApprovalRequired(approval)
    assert error.kind == "approval_required" and approval.id in str(error) and "`approval_id`" in str(error)
    store.close()


def test_open_approval_store_uses_the_data_dir_and_refuses_postgres_without_dsn(tmp_path: Path) -> None:
    store = open_approval_store(ApprovalSettings(), tmp_path)
    assert isinstance(store, SQLiteApprovalStore) and (tmp_path / "approvals.db").exists()
    store.close()
    assert (tmp_path / "approvals.db").stat().st_mode & 0o077 == 0  # owner-only: arguments inside
    with pytest.raises(ValueError, match="needs a `dsn`"):
        ApprovalSettings(store="postgres")
    settings = ApprovalSettings.model_validate({"store": "postgres", "dsn": DSN, "schema": "x"})
    assert settings.schema_name == "x"
    with pytest.raises(ValueError, match="webhook_url"):
        ApprovalSettings(webhook_url="ftp://example.com/hook")


def test_an_unreachable_postgres_is_reported_without_the_dsn() -> None:
    from mcp_gateway.approvals.store import ApprovalStoreUnavailable

    secret_dsn = "host=127.0.0.1 port=1 user=postgres password=hunter2 dbname=test connect_timeout=2"
    with pytest.raises(ApprovalStoreUnavailable) as failed:
        PostgresApprovalStore(secret_dsn, schema="never_made")
    assert "hunter2" not in str(failed.value) and failed.value.kind == "approval_store_unavailable"
