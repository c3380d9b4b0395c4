"""Quotas: sliding windows per (agent, tool) and per agent, in SQLite (persistent) and the real Redis."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import quota_stores
from mcp_gateway.errors import GatewayError
from mcp_gateway.quotas.model import QuotaExceeded, QuotaUnavailable, quota_checks
from mcp_gateway.quotas.settings import QuotaSettings
from mcp_gateway.quotas.store import QuotaStore, RedisQuotaStore, SQLiteQuotaStore, open_quota_store

T0 = 1_700_000_000.0

Opener = Callable[[], QuotaStore]


@pytest.fixture(params=["sqlite", "redis"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens the same store again on each call (a restart, or another replica); cleaned up after."""
    with quota_stores(request.param, tmp_path) as open_store:
        yield open_store


def test_a_quota_allows_n_calls_in_the_window_then_says_when_to_retry(opener: Opener) -> None:
    store = opener()
    checks = quota_checks("ops-agent", "ops.rerun_job", tool_limits=["3/hour"])
    for offset in (0, 100, 200):
        store.check_and_hit(checks, T0 + offset)
    with pytest.raises(QuotaExceeded) as refused:
        store.check_and_hit(checks, T0 + 1858)
    error = refused.value
    assert (error.kind, error.limit, error.retry_after_seconds) == ("quota_exceeded", "3/hour", 1742)
    assert str(error) == "quota `3/hour` for `ops.rerun_job` exhausted; retry in 1,742 s"
    # The window slides: once the first call is an hour old, there is room for exactly one more.
    store.check_and_hit(checks, T0 + 3600.5)
    with pytest.raises(QuotaExceeded) as again:
        store.check_and_hit(checks, T0 + 3601)
    assert again.value.retry_after_seconds == 99


def test_quotas_persist_across_a_restart_and_are_shared_by_replicas(opener: Opener) -> None:
    checks = quota_checks("a", "t.x", tool_limits=["2/day"])
    first = opener()
    first.check_and_hit(checks, T0)
    first.close()
    second, replica = opener(), opener()
    second.check_and_hit(checks, T0 + 1)
    with pytest.raises(QuotaExceeded, match="retry in 86,399 s"):
        replica.check_and_hit(checks, T0 + 1)


def test_per_tool_quotas_are_separate_and_the_agent_quota_counts_every_tool(opener: Opener) -> None:
    store = opener()
    per_tool = ["2/minute"]
    overall = ["3/minute"]
    store.check_and_hit(quota_checks("a", "t.one", tool_limits=per_tool, agent_limits=overall), T0)
    store.check_and_hit(quota_checks("a", "t.one", tool_limits=per_tool, agent_limits=overall), T0 + 1)
    with pytest.raises(QuotaExceeded, match=r"quota `2/minute` for `t\.one` exhausted"):
        store.check_and_hit(quota_checks("a", "t.one", tool_limits=per_tool, agent_limits=overall), T0 + 2)
    store.check_and_hit(quota_checks("a", "t.two", tool_limits=per_tool, agent_limits=overall), T0 + 3)
    with pytest.raises(QuotaExceeded) as overall_refusal:
        store.check_and_hit(quota_checks("a", "t.three", tool_limits=per_tool, agent_limits=overall), T0 + 4)
    assert str(overall_refusal.value) == "quota `3/minute` for agent `a` (all tools) exhausted; retry in 56 s"
    # Another agent has its own counts.
    store.check_and_hit(quota_checks("b", "t.one", tool_limits=per_tool, agent_limits=overall), T0 + 5)


def test_a_refused_call_uses_up_none_of_its_other_quotas(opener: Opener) -> None:
    store = opener()
    tight = quota_checks("a", "t.tight", tool_limits=["1/hour"], agent_limits=["2/hour"])
    store.check_and_hit(tight, T0)
    for attempt in range(5):
        with pytest.raises(QuotaExceeded, match=r"`1/hour` for `t\.tight`"):
            store.check_and_hit(tight, T0 + 1 + attempt)
    # Had the refused attempts counted against the agent's 2/hour, this would be refused.
    store.check_and_hit(quota_checks("a", "t.other", agent_limits=["2/hour"]), T0 + 10)


def test_the_refusal_names_the_quota_with_the_longest_wait(opener: Opener) -> None:
    store = opener()
    checks = quota_checks("a", "t", tool_limits=["1/minute", "1/day"])
    store.check_and_hit(checks, T0)
    with pytest.raises(QuotaExceeded) as refused:
        store.check_and_hit(checks, T0 + 10)
    assert (refused.value.limit, refused.value.retry_after_seconds) == ("1/day", 86390)


def test_concurrent_calls_cannot_slip_past_a_quota_together(opener: Opener) -> None:
    stores = [opener(), opener()]
    checks = quota_checks("a", "t", tool_limits=["5/hour"])
    start = threading.Barrier(12)
    allowed: list[int] = []

    def call(index: int) -> None:
        start.wait()
        try:
            stores[index % 2].check_and_hit(checks, T0 + index / 100)
            allowed.append(index)
        except QuotaExceeded:
            pass

    threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert len(allowed) == 5


def test_quota_checks_parse_policy_text_and_compiled_rates_and_drop_duplicates() -> None:
    checks = quota_checks("a", "t", tool_limits=["3/hour", ("3/hour", 3, 3600)], agent_limits=["20 per day"])
    assert [(c.tool, c.limit, c.amount, c.seconds) for c in checks] == [
        ("t", "3/hour", 3, 3600),
        ("*", "20 per day", 20, 86400),
    ]
    with pytest.raises(GatewayError, match="quota `often` must look like `3/hour`"):
        quota_checks("a", "t", tool_limits=["often"])
    # Names with separators cannot make two scopes share a key.
    assert (
        quota_checks("a:b", "c", tool_limits=["1/day"])[0].key
        != quota_checks("a", "b:c", tool_limits=["1/day"])[0].key
    )


def test_no_checks_is_a_no_op_and_the_settings_open_the_configured_store(tmp_path: Path) -> None:
    store = open_quota_store(QuotaSettings(), tmp_path)
    assert isinstance(store, SQLiteQuotaStore) and (tmp_path / "quotas.db").exists()
    store.check_and_hit([], T0)
    store.close()
    remote = open_quota_store(QuotaSettings(store="redis", key_prefix="mgw-test-unused:"), tmp_path)
    assert isinstance(remote, RedisQuotaStore)
    remote.close()
    with pytest.raises(ValueError, match="redis_url"):
        QuotaSettings(store="redis", redis_url="http://127.0.0.1:6379")


def test_an_unreachable_redis_refuses_the_call_without_naming_the_password() -> None:
    store = RedisQuotaStore("redis://:hunter2@127.0.0.1:1/0", key_prefix="x:", socket_timeout=1)
    with pytest.raises(QuotaUnavailable) as failed:
        store.check_and_hit(quota_checks("a", "t", tool_limits=["1/day"]), T0)
    assert failed.value.kind == "quota_unavailable" and "hunter2" not in str(failed.value)
    store.close()
