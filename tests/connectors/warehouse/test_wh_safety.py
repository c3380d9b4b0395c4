"""Guard rails of the data toolset on real warehouses: production is never written in place."""

from __future__ import annotations

from typing import Any

import pytest
from wh_support import Backend, backend, make_ctx

from mcp_gateway.demo.lake import DEMO_POLICY, FAT_FINGER_ID
from mcp_gateway.tools.base import NeedsApproval, ToolFailure

__all__ = ["backend"]

pytestmark = pytest.mark.anyio

FIX = [{"column": "id", "op": "=", "value": FAT_FINGER_ID}]


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("update_rows", {"branch": "main", "where": FIX, "set": {"amount": 1}}),
        ("delete_rows", {"branch": "main", "where": FIX}),
        ("clone_table", {"branch": "main"}),
        ("discard_branch", {"branch": "main"}),
    ],
)
async def test_an_operation_aimed_at_main_is_refused_and_production_is_unchanged(
    backend: Backend, tool: str, args: dict[str, Any]
) -> None:
    before = backend.rows("opportunities"), backend.snapshot("opportunities")
    with pytest.raises(ToolFailure, match="`main` is production"):
        await backend.call(tool, {"table": backend.table("opportunities"), **args})
    assert (backend.rows("opportunities"), backend.snapshot("opportunities")) == before


async def test_switch_in_is_refused_when_main_moved_after_the_branch_was_cut(backend: Backend) -> None:
    table = backend.table("opportunities")
    await backend.call("clone_table", {"table": table, "branch": "stale"})
    await backend.call(
        "update_rows", {"table": table, "branch": "stale", "where": FIX, "set": {"amount": 1e6}}
    )
    backend.write_production("opportunities")
    moved = backend.rows("opportunities"), backend.snapshot("opportunities")

    ctx = make_ctx()
    with pytest.raises(ToolFailure, match="since branch `stale` was cut"):
        await backend.call("switch_in", {"table": table, "branch": "stale"}, ctx)
    assert "after_snapshot" not in ctx.audit_detail
    assert (backend.rows("opportunities"), backend.snapshot("opportunities")) == moved


@pytest.mark.parametrize("tool", ["update_rows", "delete_rows"])
async def test_a_write_over_the_row_cap_is_refused_and_writes_nothing(backend: Backend, tool: str) -> None:
    table = backend.table("opportunities")
    await backend.call("clone_table", {"table": table, "branch": "capped"})
    branch_before = await backend.call("query_quality_metrics", {"table": table, "branch": "capped"})
    production = backend.rows("opportunities"), backend.snapshot("opportunities")
    args: dict[str, Any] = {
        "table": table,
        "branch": "capped",
        "where": [{"column": "amount", "op": ">", "value": 0}],
    }
    if tool == "update_rows":
        args["set"] = {"amount": 0}

    with pytest.raises(ToolFailure, match="5 rows match, over the cap of 2") as refused:
        await backend.call(tool, args, make_ctx(max_rows=2))
    assert refused.value.detail["rows_written"] == 0

    branch_after = await backend.call(
        "query_quality_metrics",
        {"table": table, "branch": "capped", "checks": [{"metric": "max", "column": "amount"}]},
    )
    assert branch_after["results"][0]["value"] == 10_000_000
    assert branch_before["results"][0]["value"] == 5
    assert (backend.rows("opportunities"), backend.snapshot("opportunities")) == production


async def test_default_row_cap_is_100_when_the_grant_sets_none(backend: Backend) -> None:
    table = backend.table("opportunities")
    await backend.call("clone_table", {"table": table, "branch": "all"})
    args = {"table": table, "branch": "all", "where": [{"column": "id", "op": "not_null"}]}
    assert (await backend.call("delete_rows", args))["rows_deleted"] == 5
    assert len(backend.rows("opportunities")) == 5


async def test_switch_in_asks_for_approval_before_changing_anything_when_policy_requires_it(
    backend: Backend,
) -> None:
    table = backend.table("opportunities")
    policy = {
        **DEMO_POLICY,
        "tables": {
            table: {"switch_in_checks": [{"metric": "row_count", "min": 1}], "switch_in_approval": True}
        },
    }
    await backend.call("clone_table", {"table": table, "branch": "ok"})
    await backend.call("update_rows", {"table": table, "branch": "ok", "where": FIX, "set": {"amount": 1e6}})
    before = backend.rows("opportunities"), backend.snapshot("opportunities")

    with pytest.raises(NeedsApproval, match="needs approval"):
        await backend.call("switch_in", {"table": table, "branch": "ok"}, make_ctx(policy=policy))
    assert (backend.rows("opportunities"), backend.snapshot("opportunities")) == before

    done = await backend.call(
        "switch_in", {"table": table, "branch": "ok"}, make_ctx(policy=policy, approved=True)
    )
    assert done["before_snapshot"] != done["after_snapshot"]
    assert max(r["amount"] for r in backend.rows("opportunities")) == 1_200_000


async def test_a_stale_branch_is_refused_before_a_human_is_asked_to_approve_it(backend: Backend) -> None:
    table = backend.table("opportunities")
    policy = {
        **DEMO_POLICY,
        "tables": {
            table: {"switch_in_checks": [{"metric": "row_count", "min": 1}], "switch_in_approval": True}
        },
    }
    await backend.call("clone_table", {"table": table, "branch": "stale"})
    await backend.call(
        "update_rows", {"table": table, "branch": "stale", "where": FIX, "set": {"amount": 1e6}}
    )
    backend.write_production("opportunities")
    moved = backend.rows("opportunities"), backend.snapshot("opportunities")

    # A conflict (ToolFailure), not NeedsApproval: nobody is asked to approve a switch that cannot happen.
    with pytest.raises(ToolFailure, match="since branch `stale` was cut"):
        await backend.call("switch_in", {"table": table, "branch": "stale"}, make_ctx(policy=policy))
    assert (backend.rows("opportunities"), backend.snapshot("opportunities")) == moved


async def test_discarding_a_branch_leaves_production_and_the_branch_is_gone(backend: Backend) -> None:
    table = backend.table("opportunities")
    before = backend.rows("opportunities"), backend.snapshot("opportunities")
    await backend.call("clone_table", {"table": table, "branch": "scratch"})
    await backend.call("delete_rows", {"table": table, "branch": "scratch", "where": FIX})
    await backend.call("discard_branch", {"table": table, "branch": "scratch"})
    with pytest.raises(ToolFailure, match="no branch `scratch`"):
        await backend.call("query_quality_metrics", {"table": table, "branch": "scratch"})
    assert (backend.rows("opportunities"), backend.snapshot("opportunities")) == before


async def test_named_metric_not_allowed_for_the_table_is_refused(backend: Backend) -> None:
    with pytest.raises(ToolFailure, match="named metric `distinct_currencies` is not allowed"):
        await backend.call(
            "query_quality_metrics",
            {"table": backend.table("us_forecast_dec_v1"), "metrics": ["distinct_currencies"]},
        )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"where": [{"column": "nope", "op": "=", "value": 1}], "set": {"amount": 1}}, "no column `nope`"),
        ({"where": FIX, "set": {"amount; DROP TABLE x": 1}}, "no column `amount; DROP TABLE x`"),
        ({"where": FIX, "set": {"amount": "not a number"}}, None),
    ],
)
async def test_bad_columns_and_values_are_clear_errors_that_change_nothing(
    backend: Backend, args: dict[str, Any], message: str | None
) -> None:
    table = backend.table("opportunities")
    await backend.call("clone_table", {"table": table, "branch": "bad"})
    before = backend.rows("opportunities"), backend.snapshot("opportunities")
    with pytest.raises(ToolFailure, match=message or "."):
        await backend.call("update_rows", {"table": table, "branch": "bad", **args})
    assert (backend.rows("opportunities"), backend.snapshot("opportunities")) == before


async def test_rollback_to_a_handle_outside_the_tables_history_is_refused(backend: Backend) -> None:
    before = backend.rows("opportunities"), backend.snapshot("opportunities")
    with pytest.raises(ToolFailure):
        await backend.call(
            "rollback_table", {"table": backend.table("opportunities"), "to_snapshot": "12345"}
        )
    assert (backend.rows("opportunities"), backend.snapshot("opportunities")) == before


async def test_a_table_in_an_unknown_warehouse_is_refused(backend: Backend) -> None:
    with pytest.raises(ToolFailure, match="unknown warehouse"):
        await backend.call("clone_table", {"table": "nowhere.sales.opportunities", "branch": "x"})


async def test_a_table_policy_attaches_no_checks_to_is_never_switched_in(backend: Backend) -> None:
    table = backend.table("opportunities")
    await backend.call("clone_table", {"table": table, "branch": "unchecked"})
    production = backend.rows("opportunities"), backend.snapshot("opportunities")
    ctx = make_ctx(policy={"tables": {}, "metrics": DEMO_POLICY["metrics"]})
    with pytest.raises(ToolFailure, match="policy attaches no `switch_in_checks`"):
        await backend.call("switch_in", {"table": table, "branch": "unchecked"}, ctx)
    assert (backend.rows("opportunities"), backend.snapshot("opportunities")) == production
