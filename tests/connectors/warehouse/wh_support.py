"""Real demo warehouses for the data-toolset tests: Iceberg (SQLite and PostgreSQL catalogs) and PostgreSQL.

Each backend is seeded with the demo stories under a name unique to the test and removed afterwards.
Production is read back independently of the adapter under test (a fresh catalog / a plain SELECT).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
from psycopg import sql

from mcp_gateway.connectors.warehouse.config import IcebergSettings, PostgresSettings
from mcp_gateway.demo.lake import DEMO_POLICY, seed_demo
from mcp_gateway.tools.base import ToolContext, Toolset
from mcp_gateway.tools.data import build_data_toolset
from mcp_gateway.types import Principal, SecretValue

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
PG_CATALOG_URI = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BACKENDS = ["iceberg_sqlite", "iceberg_pg", "postgres"]


def no_secrets(name: str) -> SecretValue:
    raise AssertionError(f"no secret expected, asked for {name}")


@dataclass
class Backend:
    """One seeded warehouse behind a ``data`` toolset named ``wh``."""

    kind: str
    toolset: Toolset
    prefix: str  # "<warehouse>.<namespace>"
    rows: Callable[[str], list[dict[str, Any]]]  # production rows of a table, sorted
    snapshot: Callable[[str], Any]  # production's state handle (snapshot id / content digest)
    write_production: Callable[[str], None]  # change production behind the gateway's back

    def table(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    async def call(self, tool: str, args: dict[str, Any], ctx: ToolContext | None = None) -> dict[str, Any]:
        spec = self.toolset.tools[f"data.{tool}"]
        return await spec.run(ctx or make_ctx(), spec.input_model.model_validate(args))


def make_ctx(
    policy: dict[str, Any] | None = None, max_rows: int | None = None, approved: bool = False
) -> ToolContext:
    return ToolContext(
        principal=Principal(agent="fixer", token_id="t1"),
        call_id=uuid.uuid4().hex,
        grant_limits={} if max_rows is None else {"max_rows": max_rows},
        approved=approved,
        policy_extra=DEMO_POLICY if policy is None else policy,
    )


async def _stop(toolset: Toolset) -> None:
    if toolset.stop is not None:
        await toolset.stop()


def _sorted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: repr(sorted(r.items())))


def _iceberg(tmp_path: Path, uri: str) -> Iterator[Backend]:
    import pyarrow as pa
    from pyiceberg.catalog.sql import SqlCatalog

    settings = IcebergSettings(
        catalog_uri=uri, warehouse=(tmp_path / "lake").as_uri(), catalog_name=f"t_{uuid.uuid4().hex[:12]}"
    )
    seed_demo(settings)
    catalog = SqlCatalog(settings.catalog_name, uri=uri, warehouse=settings.warehouse)

    def rows(name: str) -> list[dict[str, Any]]:
        return _sorted(catalog.load_table(("sales", name)).scan().to_arrow().to_pylist())

    def snapshot(name: str) -> Any:
        snap = catalog.load_table(("sales", name)).current_snapshot()
        return None if snap is None else snap.snapshot_id

    def write_production(name: str) -> None:
        tbl = catalog.load_table(("sales", name))
        extra = tbl.scan(limit=1).to_arrow()
        tbl.append(pa.Table.from_pylist(extra.to_pylist(), schema=extra.schema))

    toolset = build_data_toolset({"lake": settings}, no_secrets)
    try:
        yield Backend("iceberg", toolset, "lake.sales", rows, snapshot, write_production)
    finally:
        anyio.run(_stop, toolset)
        for ident in catalog.list_tables("sales"):
            catalog.purge_table(ident)
        catalog.drop_namespace("sales")
        catalog.engine.dispose()


def _postgres() -> Iterator[Backend]:
    schema = f"wh_{uuid.uuid4().hex[:12]}"
    settings = PostgresSettings(dsn=PG_DSN, schema=schema)
    seed_demo(settings)

    def rows(name: str) -> list[dict[str, Any]]:
        with psycopg.connect(PG_DSN) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            cur.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(schema, name)))
            return _sorted(cur.fetchall())

    def snapshot(name: str) -> Any:
        return rows(name)

    def write_production(name: str) -> None:
        with psycopg.connect(PG_DSN) as conn:
            conn.execute(sql.SQL("UPDATE {} SET amount = amount + 1").format(sql.Identifier(schema, name)))

    toolset = build_data_toolset({"pg": settings}, no_secrets)
    try:
        yield Backend("postgres", toolset, f"pg.{schema}", rows, snapshot, write_production)
    finally:
        anyio.run(_stop, toolset)
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "postgres":
        yield from _postgres()
    elif request.param == "iceberg_pg":
        yield from _iceberg(tmp_path, PG_CATALOG_URI)
    else:
        yield from _iceberg(tmp_path, f"sqlite:///{tmp_path / 'catalog.db'}")


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
