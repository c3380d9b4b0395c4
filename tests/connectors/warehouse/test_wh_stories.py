"""The three data stories at tool level, on Iceberg (SQLite + PostgreSQL catalogs) and PostgreSQL."""

from __future__ import annotations

import pytest
from wh_support import Backend, backend, make_ctx

from mcp_gateway.demo.lake import FAT_FINGER_ID
from mcp_gateway.tools.base import ToolFailure

__all__ = ["backend"]

pytestmark = pytest.mark.anyio


def _amounts(rows: list[dict[str, object]]) -> dict[object, object]:
    return {r["id"]: r["amount"] for r in rows}


async def test_empty_forecast_shows_zero_rows_and_its_branch_cannot_be_switched_in(backend: Backend) -> None:
    table = backend.table("us_forecast_dec_v1")
    before = backend.snapshot("us_forecast_dec_v1")

    metrics = await backend.call("query_quality_metrics", {"table": table})
    row_count = next(r for r in metrics["results"] if r["check"] == "row_count")
    assert row_count["value"] == 0
    assert metrics["passed"] is False

    await backend.call("clone_table", {"table": table, "branch": "dec_fix"})
    ctx = make_ctx()
    with pytest.raises(ToolFailure, match=r"row_count = 0") as refused:
        await backend.call("switch_in", {"table": table, "branch": "dec_fix"}, ctx)
    assert [c["passed"] for c in refused.value.detail["checks"]] == [False]
    assert "before_snapshot" not in ctx.audit_detail
    assert backend.snapshot("us_forecast_dec_v1") == before


async def test_fat_fingered_amount_is_fixed_on_a_branch_switched_in_and_rolled_back(backend: Backend) -> None:
    table = backend.table("opportunities")
    original = backend.rows("opportunities")
    assert _amounts(original)[FAT_FINGER_ID] == 10_000_000

    await backend.call("clone_table", {"table": table, "branch": "fix_amount"})
    where = [{"column": "id", "op": "=", "value": FAT_FINGER_ID}]
    updated = await backend.call(
        "update_rows", {"table": table, "branch": "fix_amount", "where": where, "set": {"amount": 1_000_000}}
    )
    assert updated["rows_updated"] == 1
    assert backend.rows("opportunities") == original  # main untouched until switch-in

    on_branch = await backend.call(
        "query_quality_metrics",
        {
            "table": table,
            "branch": "fix_amount",
            "checks": [{"metric": "max", "column": "amount", "max": 5e6}],
        },
    )
    assert on_branch["results"][0]["value"] == 1_200_000  # the largest real deal is now the max
    assert on_branch["passed"] is True

    ctx = make_ctx()
    switched = await backend.call("switch_in", {"table": table, "branch": "fix_amount"}, ctx)
    assert ctx.audit_detail["before_snapshot"] == switched["before_snapshot"]
    assert ctx.audit_detail["after_snapshot"] == switched["after_snapshot"]
    assert all(c["passed"] for c in ctx.audit_detail["checks"])
    fixed = backend.rows("opportunities")
    assert _amounts(fixed) == {**_amounts(original), FAT_FINGER_ID: 1_000_000}

    rolled = await backend.call(
        "rollback_table", {"table": table, "to_snapshot": switched["before_snapshot"]}
    )
    assert rolled["after_snapshot"] != switched["after_snapshot"]
    assert backend.rows("opportunities") == original


async def test_mixed_currencies_are_caught_by_the_named_metric_and_block_switch_in(backend: Backend) -> None:
    table = backend.table("revenue")
    before = backend.snapshot("revenue")

    on_main = await backend.call(
        "query_quality_metrics", {"table": table, "metrics": ["distinct_currencies"]}
    )
    named = next(r for r in on_main["results"] if r["check"] == "named(distinct_currencies)")
    assert named["value"] == 2

    await backend.call("clone_table", {"table": table, "branch": "fx"})
    with pytest.raises(ToolFailure, match=r"named\(distinct_currencies\) = 2"):
        await backend.call("switch_in", {"table": table, "branch": "fx"})

    deleted = await backend.call(
        "delete_rows",
        {"table": table, "branch": "fx", "where": [{"column": "currency", "op": "=", "value": "JPY"}]},
    )
    assert deleted["rows_deleted"] == 1
    switched = await backend.call("switch_in", {"table": table, "branch": "fx"})
    assert switched["checks"][0]["value"] == 1
    assert {r["currency"] for r in backend.rows("revenue")} == {"USD"}
    assert backend.snapshot("revenue") != before
