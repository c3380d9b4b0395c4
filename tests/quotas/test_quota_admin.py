"""What an admin sees of quotas (usage) and can do (reset), in SQLite and the real Redis."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import REDIS_URL, clean_redis_prefix, quota_stores
from mcp_gateway.quotas.model import QuotaExceeded, QuotaUnavailable, parse_key, quota_checks, usage_of
from mcp_gateway.quotas.settings import QuotaSettings
from mcp_gateway.quotas.store import QuotaAdmin, RedisQuotaStore, SQLiteQuotaStore, open_quota_admin

T0 = 1_700_000_000.0
Opener = Callable[[], QuotaAdmin]


@pytest.fixture(params=["sqlite", "redis"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    with quota_stores(request.param, tmp_path) as open_store:
        yield open_store


def _hit(store: QuotaAdmin, agent: str, tool: str, times: list[float]) -> None:
    checks = quota_checks(agent, tool, tool_limits=["3/hour"], agent_limits=["10/day"])
    for when in times:
        store.check_and_hit(checks, when)


def test_usage_counts_the_calls_in_each_window_and_says_when_there_is_room(opener: Opener) -> None:
    store = opener()
    _hit(store, "a", "ops.rerun_job", [T0, T0 + 100, T0 + 200])
    _hit(store, "b", "data.query", [T0 + 300])
    shown = {(u.agent, u.tool, u.limit): u for u in store.usage(T0 + 1000)}
    assert set(shown) == {
        ("a", "ops.rerun_job", "3/hour"),
        ("a", "*", "10/day"),
        ("b", "data.query", "3/hour"),
        ("b", "*", "10/day"),
    }
    full = shown[("a", "ops.rerun_job", "3/hour")]
    assert (full.used, full.amount, full.seconds, full.room_at, full.clear_at) == (
        3,
        3,
        3600,
        T0 + 3600,
        T0 + 3800,
    )
    assert full.subject == "ops.rerun_job" and shown[("a", "*", "10/day")].subject == "(all tools)"
    assert (shown[("a", "*", "10/day")].used, shown[("a", "*", "10/day")].room_at) == (3, None)
    # An hour after the first call, one call has left the window.
    later = {(u.agent, u.tool, u.limit): u.used for u in store.usage(T0 + 3650)}
    assert later[("a", "ops.rerun_job", "3/hour")] == 2


def test_reset_forgets_only_the_chosen_quotas_and_the_agent_may_call_again(opener: Opener) -> None:
    store = opener()
    _hit(store, "a", "ops.rerun_job", [T0, T0 + 1, T0 + 2])
    _hit(store, "b", "ops.rerun_job", [T0])
    checks = quota_checks("a", "ops.rerun_job", tool_limits=["3/hour"], agent_limits=["10/day"])
    with pytest.raises(QuotaExceeded):
        store.check_and_hit(checks, T0 + 10)
    chosen = [u.key for u in store.usage(T0 + 10) if u.agent == "a" and u.tool != "*"]
    assert store.reset(chosen) == 1
    store.check_and_hit(checks, T0 + 11)  # room again
    left = {(u.agent, u.tool): u.used for u in opener().usage(T0 + 12)}
    assert left == {("a", "ops.rerun_job"): 1, ("a", "*"): 4, ("b", "ops.rerun_job"): 1, ("b", "*"): 1}
    assert store.reset([]) == 0


def test_a_redis_usage_never_reads_another_prefixs_keys() -> None:
    mine, theirs = f"mgw-test:{uuid.uuid4().hex}:", f"mgw-test:{uuid.uuid4().hex}:"
    try:
        other = RedisQuotaStore(REDIS_URL, key_prefix=theirs)
        _hit(other, "a", "t", [T0])
        store = RedisQuotaStore(REDIS_URL, key_prefix=mine)
        assert store.usage(T0 + 1) == []
        assert len(other.usage(T0 + 1)) == 2
        store.close()
        other.close()
    finally:
        clean_redis_prefix(mine)
        clean_redis_prefix(theirs)


def test_a_read_only_sqlite_store_is_never_created(tmp_path: Path) -> None:
    with pytest.raises(QuotaUnavailable, match="no quota store at"):
        open_quota_admin(QuotaSettings(), tmp_path / "data", read_only=True)
    assert not (tmp_path / "data").exists()


def test_a_read_only_sqlite_store_cannot_reset(tmp_path: Path) -> None:
    store = SQLiteQuotaStore(tmp_path / "quotas.db")
    _hit(store, "a", "t", [T0])
    store.close()
    reader = open_quota_admin(QuotaSettings(), tmp_path, read_only=True)
    try:
        keys = [u.key for u in reader.usage(T0 + 1)]
        assert len(keys) == 2
        with pytest.raises(QuotaUnavailable):
            reader.reset(keys)
    finally:
        reader.close()


def test_an_unreachable_redis_refuses_usage_and_reset_without_its_password() -> None:
    store = RedisQuotaStore("redis://:hunter2@127.0.0.1:1/0", key_prefix="x:", socket_timeout=1)
    for attempt in (lambda: store.usage(T0), lambda: store.reset(["k"])):
        with pytest.raises(QuotaUnavailable) as refused:
            attempt()
        assert "hunter2" not in str(refused.value) and "redis" in str(refused.value)
    store.close()


@pytest.mark.parametrize("key", ["not json", '["a","b"]', '["a","b",3]', "{}"])
def test_a_key_that_is_not_a_quota_key_is_not_shown(key: str) -> None:
    assert parse_key(key) is None
    assert usage_of(key, [T0], T0) is None


def test_a_quota_key_whose_limit_does_not_parse_is_not_shown() -> None:
    assert usage_of('["a","t","often"]', [T0], T0) is None
