"""``data.sample_rows`` and ``data.query`` at tool level, on a real PostgreSQL schema and a real Iceberg
lake: what comes back, masked as policy says, and what the audit facts hold."""

# ruff: noqa: S608  # the SQL text is the agent's input under test, sent to the gateway

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from read_support import RAW_EMAIL, RAW_PHONE, RAW_SSN, RAW_VALUES, PgData, masks_for, pg_data

from mcp_gateway.connectors.warehouse.base import Predicate
from mcp_gateway.connectors.warehouse.config import IcebergSettings
from mcp_gateway.demo.lake import FAT_FINGER_ID, seed_demo
from mcp_gateway.errors import SecretNotFound
from mcp_gateway.tools.base import BuiltinTool, ToolContext, ToolFailure
from mcp_gateway.tools.data_read import build_read_tools
from mcp_gateway.types import Principal, SecretValue

__all__ = ["pg_data"]

pytestmark = pytest.mark.anyio

HMAC_KEY = b"k" * 43


def _vault(name: str) -> SecretValue:
    if name == "audit-hmac-key":
        return SecretValue(name, HMAC_KEY)
    raise SecretNotFound(f"no secret `{name}`")


def _sealed(name: str) -> SecretValue:
    raise SecretNotFound(f"no secret `{name}`")


class Tools:
    def __init__(self, tools: dict[str, BuiltinTool[Any]], policy: dict[str, Any]) -> None:
        self.tools = tools
        self.policy = policy

    def ctx(self, read: dict[str, Any], max_rows: int = 5, resolve: Any = _vault) -> ToolContext:
        return ToolContext(
            principal=Principal(agent="reader", token_id="t1"),
            call_id=uuid.uuid4().hex,
            grant_limits={"max_rows": max_rows, "read": read},
            resolve_secret=resolve,
            policy_extra={"tables": self.policy},
        )

    async def call(self, tool: str, args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        spec = self.tools[f"data.{tool}"]
        return await spec.run(ctx, spec.input_model.model_validate(args))


@pytest.fixture
async def pg_tools(pg_data: PgData) -> AsyncIterator[Tools]:
    tools, close = build_read_tools({"pg": pg_data.settings}, _vault)
    try:
        yield Tools({t.name: t for t in tools}, masks_for("pg", pg_data.schema))
    finally:
        close()


@pytest.fixture
def lake(tmp_path: Path) -> Iterator[IcebergSettings]:
    settings = IcebergSettings(
        catalog_uri=f"sqlite:///{tmp_path / 'catalog.db'}", warehouse=(tmp_path / "lake").as_uri()
    )
    seed_demo(settings)
    yield settings


@pytest.fixture
async def lake_tools(lake: IcebergSettings) -> AsyncIterator[Tools]:
    tools, close = build_read_tools({"lake": lake}, _vault)
    policy = {
        "lake.sales.opportunities": {"mask": {"name": {"mode": "partial", "keep_last": 3}, "stage": "drop"}}
    }
    try:
        yield Tools({t.name: t for t in tools}, policy)
    finally:
        close()


def _all_read(schema: str) -> dict[str, Any]:
    return {"tables": [f"pg.{schema}.customers", f"pg.{schema}.orders"], "production": True}


async def test_query_on_postgres_masks_hashed_and_partial_columns_and_never_reads_dropped_ones(
    pg_tools: Tools, pg_data: PgData
) -> None:
    ctx = pg_tools.ctx(_all_read(pg_data.schema))
    result = await pg_tools.call(
        "query", {"sql": f"SELECT * FROM {pg_data.schema}.customers ORDER BY id"}, ctx
    )

    assert result["columns"] == ["id", "name", "email", "phone"]  # ssn is dropped: it does not exist here
    by_id = {row[0]: row for row in result["rows"]}
    assert by_id[1][2].startswith("hmac:") and by_id[1][2] == by_id[3][2]  # equal values stay equal
    assert by_id[1][2] != by_id[2][2]
    assert by_id[1][3] == "****42" and by_id[3][3] is None
    assert result["masked"] == {"email": "hash", "phone": "partial"}
    shown = json.dumps(result) + json.dumps(ctx.audit_detail)
    assert not any(raw in shown for raw in RAW_VALUES)
    assert ctx.audit_detail == {
        "branch": "main",
        "warehouse": "pg",
        "tables": [f"pg.{pg_data.schema}.customers"],
        "columns": ["id", "name", "email", "phone"],
        "masked": {"email": "hash", "phone": "partial"},
        "rows_returned": 3,
        "truncated": False,
        "max_rows": 5,
    }


async def test_query_on_postgres_joins_aggregates_and_cuts_at_the_row_cap(
    pg_tools: Tools, pg_data: PgData
) -> None:
    s = pg_data.schema
    ctx = pg_tools.ctx(_all_read(s), max_rows=2)
    joined = await pg_tools.call(
        "query",
        {
            "sql": f"SELECT c.name, sum(o.amount) AS total FROM {s}.customers c "
            f"JOIN {s}.orders o ON o.customer_id = c.id GROUP BY c.name ORDER BY total DESC"
        },
        ctx,
    )
    assert joined["rows"] == [["Grace", 10_000_000.0], ["Ada", 349.5]]
    assert joined["truncated"] is False
    cut = await pg_tools.call(
        "query", {"sql": f"SELECT id FROM {s}.orders ORDER BY id"}, pg_tools.ctx(_all_read(s), 2)
    )
    assert cut["rows"] == [[10], [11]] and cut["truncated"] is True


async def test_sample_rows_on_postgres_filters_on_unmasked_columns_and_masks_the_rest(
    pg_tools: Tools, pg_data: PgData
) -> None:
    table = f"pg.{pg_data.schema}.customers"
    ctx = pg_tools.ctx(_all_read(pg_data.schema))
    result = await pg_tools.call(
        "sample_rows", {"table": table, "where": [{"column": "id", "op": "=", "value": 1}]}, ctx
    )
    assert result["columns"] == ["id", "name", "email", "phone"]
    assert result["rows"][0][:2] == [1, "Ada"] and result["rows"][0][2].startswith("hmac:")
    assert RAW_EMAIL not in json.dumps(result) and RAW_PHONE not in json.dumps(result)
    assert ctx.audit_detail["rows_returned"] == 1 and ctx.audit_detail["tables"] == [table]

    with pytest.raises(
        ToolFailure, match=r"column `email` is masked \(hash\) and cannot be filtered on"
    ) as refused:
        await pg_tools.call(
            "sample_rows", {"table": table, "where": [{"column": "email", "op": "=", "value": "x@y"}]}, ctx
        )
    assert refused.value.detail["refused"] == "masked_column"
    with pytest.raises(ToolFailure, match=r"has no column `ssn`"):
        await pg_tools.call(
            "sample_rows", {"table": table, "columns": ["id", "ssn"]}, pg_tools.ctx(_all_read(pg_data.schema))
        )


async def test_a_hashed_column_is_not_read_at_all_when_the_vault_cannot_give_the_key(
    pg_tools: Tools, pg_data: PgData
) -> None:
    ctx = pg_tools.ctx(_all_read(pg_data.schema), resolve=_sealed)
    with pytest.raises(ToolFailure, match="vault unsealed") as refused:
        await pg_tools.call("query", {"sql": f"SELECT email FROM {pg_data.schema}.customers"}, ctx)
    assert refused.value.detail["refused"] == "masked_column"
    assert RAW_SSN not in str(refused.value) and RAW_EMAIL not in str(refused.value)
    # An unmasked read needs no key.
    ok = await pg_tools.call("query", {"sql": f"SELECT id FROM {pg_data.schema}.orders"}, ctx)
    assert ok["row_count"] == 3


async def test_sample_rows_on_iceberg_finds_the_fat_fingered_row_on_production_and_on_a_branch(
    lake_tools: Tools, lake: IcebergSettings
) -> None:
    from mcp_gateway.connectors.warehouse.iceberg import IcebergWarehouse

    read = {"tables": ["lake.sales.*"], "production": True}
    where = [{"column": "amount", "op": ">", "value": 5_000_000}]
    ctx = lake_tools.ctx(read)
    found = await lake_tools.call(
        "sample_rows", {"table": "lake.sales.opportunities", "where": where, "columns": ["id", "amount"]}, ctx
    )
    assert found["rows"] == [[FAT_FINGER_ID, 10_000_000.0]]
    assert ctx.audit_detail["rows_returned"] == 1 and ctx.audit_detail["branch"] == "main"

    warehouse = IcebergWarehouse.connect(lake.catalog_uri, lake.warehouse, lake.catalog_name)
    try:
        warehouse.clone("sales.opportunities", "fix")
        warehouse.update_rows(
            "sales.opportunities",
            "fix",
            [Predicate(column="id", op="=", value=FAT_FINGER_ID)],
            {"amount": 1e6},
            1,
        )
    finally:
        warehouse.close()
    on_branch = await lake_tools.call(
        "sample_rows",
        {"table": "lake.sales.opportunities", "branch": "fix", "where": where},
        lake_tools.ctx(read),
    )
    assert on_branch["rows"] == []
    still = await lake_tools.call(
        "sample_rows", {"table": "lake.sales.opportunities", "where": where}, lake_tools.ctx(read)
    )
    assert still["row_count"] == 1


async def test_query_on_iceberg_runs_in_duckdb_over_the_snapshot_with_masks_applied(
    lake_tools: Tools,
) -> None:
    ctx = lake_tools.ctx({"tables": ["lake.sales.*"], "production": True})
    result = await lake_tools.call(
        "query",
        {
            "sql": "SELECT o.id, o.name, o.amount FROM lake.sales.opportunities o "
            "WHERE o.amount > 1000000 ORDER BY o.amount DESC"
        },
        ctx,
    )
    assert result["columns"] == ["id", "name", "amount"]
    assert result["rows"] == [[FAT_FINGER_ID, "****orm", 10_000_000.0], [5, "****ell", 1_200_000.0]]
    assert "Initech" not in json.dumps(result)
    assert result["masked"] == {"name": "partial"}

    agg = await lake_tools.call(
        "query",
        {"sql": "SELECT currency, count(*) AS n FROM sales.revenue GROUP BY currency ORDER BY currency"},
        lake_tools.ctx({"tables": ["lake.sales.*"], "production": True}),
    )
    assert agg["rows"] == [["JPY", 1], ["USD", 3]]
    with pytest.raises(ToolFailure, match="`stage` could not be resolved") as dropped:
        await lake_tools.call(
            "query",
            {"sql": "SELECT stage FROM sales.opportunities"},
            lake_tools.ctx({"tables": ["lake.sales.*"], "production": True}),
        )
    assert dropped.value.detail["refused"] == "column"


async def test_reads_of_production_need_the_grant_to_say_so(lake_tools: Tools) -> None:
    branches_only = lake_tools.ctx({"tables": ["lake.sales.*"]})
    with pytest.raises(ToolFailure, match="reads branches only") as refused:
        await lake_tools.call("sample_rows", {"table": "lake.sales.revenue"}, branches_only)
    assert refused.value.detail == {
        "refused": "production_not_granted",
        "rows_returned": 0,
        "tables": ["lake.sales.revenue"],
        "branch": "main",
    }


async def test_quality_metrics_cannot_show_the_min_or_max_of_a_masked_column(
    pg_tools: Tools, pg_data: PgData
) -> None:
    from mcp_gateway.tools.data import build_data_toolset

    toolset = build_data_toolset({"pg": pg_data.settings}, _vault)
    spec = toolset.tools["data.query_quality_metrics"]
    table = f"pg.{pg_data.schema}.customers"
    ctx = pg_tools.ctx(_all_read(pg_data.schema))
    for metric in ("max", "min"):
        args = {"table": table, "checks": [{"metric": metric, "column": "email"}]}
        with pytest.raises(ToolFailure, match=r"`email` .* is masked \(hash\)") as refused:
            await spec.run(ctx, spec.input_model.model_validate(args))
        assert refused.value.detail == {"refused": "masked_column"}
    counts = {"table": table, "checks": [{"metric": "null_rate", "column": "phone"}]}
    measured = await spec.run(ctx, spec.input_model.model_validate(counts))
    assert measured["results"][0]["value"] == pytest.approx(1 / 3)
    assert not any(raw in json.dumps(measured) for raw in RAW_VALUES)
