"""The three data stories through the real gateway (policy, audit, MCP SDK client), on every backend:
Iceberg with a SQLite catalog, Iceberg with a PostgreSQL catalog, PostgreSQL tables."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from wh_support import Backend, backend

from conftest import GatewayFactory, connect
from mcp_gateway.demo.lake import DEMO_POLICY, FAT_FINGER_ID

__all__ = ["backend"]

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

TABLES = ("opportunities", "revenue", "us_forecast_dec_v1")


def _policy() -> str:
    document = {
        "version": 1,
        "agents": {"fixer": {"grants": [{"id": "fixer-data", "tool": "data.*", "max_rows": 2}]}},
        **DEMO_POLICY,
    }
    return yaml.safe_dump(document)


def _text(result: Any) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


async def test_the_three_stories_hold_end_to_end_and_production_changes_only_by_a_verified_switch_in(
    backend: Backend, make_gateway: GatewayFactory
) -> None:
    gw = make_gateway(_policy(), agents=("fixer",), upstreams={}, toolsets=[backend.toolset])
    production = {name: (backend.rows(name), backend.snapshot(name)) for name in TABLES}
    opportunities, revenue, forecast = (backend.table(name) for name in TABLES)
    fix = [{"column": "id", "op": "=", "value": FAT_FINGER_ID}]

    async with connect(gw.url, gw.tokens["fixer"]) as client:
        # Story 1: the December forecast arrives empty; its branch cannot be switched in.
        empty = await client.call_tool("data.query_quality_metrics", {"table": forecast})
        assert empty.structured_content is not None
        assert empty.structured_content["results"][0] == {
            "check": "row_count",
            "value": 0,
            "min": 1.0,
            "max": None,
            "passed": False,
        }
        await client.call_tool("data.clone_table", {"table": forecast, "branch": "empty"})
        refused = await client.call_tool("data.switch_in", {"table": forecast, "branch": "empty"})
        assert refused.is_error and "row_count = 0" in _text(refused)

        # Story 3: revenue mixes JPY and USD; the named metric catches it and blocks a switch-in.
        mixed = await client.call_tool(
            "data.query_quality_metrics", {"table": revenue, "metrics": ["distinct_currencies"]}
        )
        assert mixed.structured_content is not None
        named = [r for r in mixed.structured_content["results"] if "distinct_currencies" in r["check"]]
        assert [r["value"] for r in named] == [2]
        await client.call_tool("data.clone_table", {"table": revenue, "branch": "fx"})
        blocked = await client.call_tool("data.switch_in", {"table": revenue, "branch": "fx"})
        assert blocked.is_error and "distinct_currencies" in _text(blocked)

        # Story 2: a fat-fingered amount, fixed on a branch, verified, switched in, rolled back.
        on_main = await client.call_tool(
            "data.update_rows", {"table": opportunities, "branch": "main", "where": fix, "set": {"amount": 1}}
        )
        assert on_main.is_error and "`main` is production" in _text(on_main)
        await client.call_tool("data.clone_table", {"table": opportunities, "branch": "fix"})
        over_cap = await client.call_tool(
            "data.update_rows",
            {
                "table": opportunities,
                "branch": "fix",
                "where": [{"column": "amount", "op": ">", "value": 0}],
                "set": {"amount": 1},
            },
        )
        assert over_cap.is_error and "cap of 2" in _text(over_cap)
        fixed = await client.call_tool(
            "data.update_rows",
            {"table": opportunities, "branch": "fix", "where": fix, "set": {"amount": 1e6}},
        )
        assert not fixed.is_error, _text(fixed)
        # Nothing so far touched production.
        assert {name: (backend.rows(name), backend.snapshot(name)) for name in TABLES} == production

        switched = await client.call_tool("data.switch_in", {"table": opportunities, "branch": "fix"})
        assert not switched.is_error and switched.structured_content is not None, _text(switched)
        amounts = {row["id"]: row["amount"] for row in backend.rows("opportunities")}
        assert amounts[FAT_FINGER_ID] == 1_000_000
        before = switched.structured_content["before_snapshot"]
        rolled = await client.call_tool(
            "data.rollback_table", {"table": opportunities, "to_snapshot": before}
        )
        assert not rolled.is_error, _text(rolled)
        for table, branch in ((forecast, "empty"), (revenue, "fx")):
            await client.call_tool("data.discard_branch", {"table": table, "branch": branch})

    # Production is again exactly what it was: the switch-in was the only change, and it was undone.
    assert {name: backend.rows(name) for name in TABLES} == {
        name: rows for name, (rows, _) in production.items()
    }
    if backend.kind == "iceberg":
        assert backend.snapshot("opportunities") == production["opportunities"][1]
    records = gw.audit()
    refused_main = [
        r for r in records if r.kind == "outcome" and r.tool == "data.update_rows" and r.status == "error"
    ]
    assert len(refused_main) == 2  # the write aimed at main and the one over the cap, both on the record
    switch = [r for r in records if r.kind == "outcome" and r.tool == "data.switch_in" and r.status == "ok"]
    assert switch[0].detail["facts"]["before_snapshot"] == before
