"""The data toolset through the real gateway (policy, audit, MCP SDK client) on a real Iceberg lake."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pyiceberg.catalog.sql import SqlCatalog
from wh_support import no_secrets

from conftest import GatewayFactory, connect
from mcp_gateway.connectors.warehouse.config import IcebergSettings
from mcp_gateway.demo.lake import FAT_FINGER_ID, seed_demo
from mcp_gateway.tools.data import build_data_toolset

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

POLICY = """
version: 1
agents:
  fixer:
    grants:
      - {id: fixer-data, tool: "data.*", max_rows: 2}
tables:
  "lake.sales.opportunities":
    switch_in_checks:
      - {metric: row_count, min: 1}
      - {metric: max, column: amount, max: 5000000}
    metrics: [distinct_currencies]
metrics:
  distinct_currencies:
    sql: "SELECT count(DISTINCT currency) AS value FROM {table}"
"""


async def test_an_agent_fixes_a_fat_fingered_amount_on_a_branch_through_the_gateway(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    settings = IcebergSettings(
        catalog_uri=f"sqlite:///{tmp_path / 'lake.db'}",
        warehouse=(tmp_path / "lake").as_uri(),
        catalog_name="e2e",
    )
    seed_demo(settings)
    catalog = SqlCatalog("e2e", uri=settings.catalog_uri, warehouse=settings.warehouse)
    original_snapshot = catalog.load_table(("sales", "opportunities")).current_snapshot()
    assert original_snapshot is not None
    gw = make_gateway(
        POLICY, agents=("fixer",), upstreams={}, toolsets=[build_data_toolset({"lake": settings}, no_secrets)]
    )
    table = "lake.sales.opportunities"
    fix = [{"column": "id", "op": "=", "value": FAT_FINGER_ID}]

    async with connect(gw.url, gw.tokens["fixer"]) as client:
        listed = {t.name for t in (await client.list_tools()).tools}
        on_main = await client.call_tool(
            "data.update_rows", {"table": table, "branch": "main", "where": fix, "set": {"amount": 1}}
        )
        await client.call_tool("data.clone_table", {"table": table, "branch": "fix"})
        too_many = await client.call_tool(
            "data.delete_rows",
            {"table": table, "branch": "fix", "where": [{"column": "amount", "op": ">", "value": 0}]},
        )
        updated = await client.call_tool(
            "data.update_rows", {"table": table, "branch": "fix", "where": fix, "set": {"amount": 1e6}}
        )
        switched = await client.call_tool("data.switch_in", {"table": table, "branch": "fix"})

    assert "data.switch_in" in listed and "data.query_quality_metrics" in listed
    assert on_main.is_error and "`main` is production" in on_main.content[0].text
    assert too_many.is_error and "over the cap of 2" in too_many.content[0].text
    assert not updated.is_error and updated.structured_content is not None
    assert updated.structured_content["rows_updated"] == 1
    assert not switched.is_error and switched.structured_content is not None
    assert switched.structured_content["before_snapshot"] == str(original_snapshot.snapshot_id)

    outcomes: list[Any] = [r for r in gw.audit() if r.kind == "outcome"]
    facts = outcomes[-1].detail["facts"]
    assert facts["before_snapshot"] == str(original_snapshot.snapshot_id)
    assert facts["after_snapshot"] == switched.structured_content["after_snapshot"]
    main = catalog.load_table(("sales", "opportunities"))
    assert str(main.current_snapshot().snapshot_id) == facts["after_snapshot"]  # type: ignore[union-attr]
    amounts = {r["id"]: r["amount"] for r in main.scan().to_arrow().to_pylist()}
    assert amounts[FAT_FINGER_ID] == 1_000_000
    catalog.engine.dispose()
