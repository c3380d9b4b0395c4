"""Quality metrics mean the same on every backend, and named metrics stay read-only and bounded."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import sql
from wh_support import PG_DSN, Backend, backend, make_ctx

from mcp_gateway.connectors.warehouse.base import NamedMetric, WarehouseError
from mcp_gateway.connectors.warehouse.config import PostgresSettings
from mcp_gateway.connectors.warehouse.metrics import run_named_over_arrow
from mcp_gateway.tools.base import ToolFailure
from mcp_gateway.tools.data import build_data_toolset
from mcp_gateway.types import SecretValue

__all__ = ["backend"]

pytestmark = pytest.mark.anyio


async def test_builtin_metrics_agree_across_backends(backend: Backend) -> None:
    checks = [
        {"metric": "row_count"},
        {"metric": "null_rate", "column": "region"},
        {"metric": "duplicate_count", "columns": ["currency"]},
        {"metric": "duplicate_count", "columns": ["id"]},
        {"metric": "min", "column": "amount"},
        {"metric": "max", "column": "amount"},
        {"metric": "freshness_seconds", "column": "booked_at", "min": 3000, "max": 4000},
    ]
    result = await backend.call(
        "query_quality_metrics", {"table": backend.table("revenue"), "checks": checks}
    )
    values = [r["value"] for r in result["results"]]
    assert values[:6] == [4, 0.0, 2, 0, 64_000, 15_000_000]
    assert 3000 < values[6] < 4000  # the newest booking is an hour old
    assert result["passed"] is True


@pytest.mark.parametrize(
    ("metric_sql", "timeout_ms", "message"),
    [
        ("SELECT 1 FROM pg_sleep(2)", 100, "statement timeout"),
        ("CREATE TABLE wh_should_not_exist (x int)", 5000, "ReadOnlySqlTransaction"),
    ],
)
async def test_postgres_named_metrics_run_read_only_and_time_bounded(
    metric_sql: str, timeout_ms: int, message: str
) -> None:
    settings = PostgresSettings(dsn=PG_DSN, schema="public", statement_timeout_ms=timeout_ms)
    toolset = build_data_toolset({"pg": settings}, lambda name: SecretValue(name, b""))
    policy = {"metrics": {"m": {"sql": metric_sql}}, "tables": {"pg.public.*": {"metrics": ["m"]}}}
    probe = f"wh_probe_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (x int)").format(sql.Identifier(probe)))
    try:
        tool = toolset.tools["data.query_quality_metrics"]
        args = tool.input_model.model_validate(
            {"table": f"pg.public.{probe}", "checks": [], "metrics": ["m"]}
        )
        with pytest.raises(ToolFailure, match=message):
            await tool.run(make_ctx(policy=policy), args)
        with psycopg.connect(PG_DSN) as conn:
            assert conn.execute("SELECT to_regclass('public.wh_should_not_exist')").fetchone() == (None,)
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(probe)))


def test_named_metrics_over_arrow_cannot_read_files() -> None:
    import pyarrow as pa

    data = pa.table({"currency": ["USD", "JPY"]})
    assert run_named_over_arrow(NamedMetric("n", "SELECT count(DISTINCT currency) FROM {table}"), data) == 2
    with pytest.raises(WarehouseError, match="named metric `peek` failed"):
        run_named_over_arrow(NamedMetric("peek", "SELECT count(*) FROM read_csv('/etc/passwd')"), data)
