"""Demo data for the three data stories (quickstart and tests).

1. ``sales.us_forecast_dec_v1`` arrives empty: its row count is 0 and a branch of it cannot be
   switched in past a ``row_count >= 1`` check.
2. ``sales.opportunities`` has one ``amount`` fat-fingered as 10,000,000 (should be 1,000,000):
   fix it on a branch, verify, switch in, roll back.
3. ``sales.revenue`` mixes JPY and USD; the named metric ``distinct_currencies`` catches it.

For PostgreSQL the namespace is the configured schema (``pg.<schema>.opportunities``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from mcp_gateway.connectors.warehouse.config import (
    IcebergSettings,
    PostgresSettings,
    SnowflakeSettings,
)
from mcp_gateway.connectors.warehouse.open import expand_secrets
from mcp_gateway.types import SecretValue

NAMESPACE = "sales"
FAT_FINGER_ID = 3

# The policy sections that make the stories work (merge into the policy's `tables` and `metrics`).
DEMO_POLICY: dict[str, Any] = {
    "metrics": {
        "distinct_currencies": {
            "sql": "SELECT count(DISTINCT currency) AS value FROM {table}",
            "description": "how many currencies a table mixes (1 is expected)",
        }
    },
    "tables": {
        "*.*.opportunities": {
            "switch_in_checks": [
                {"metric": "row_count", "min": 1},
                {"metric": "max", "column": "amount", "max": 5_000_000},
                {"metric": "duplicate_count", "columns": ["id"], "max": 0},
            ],
            "switch_in_approval": False,
            "metrics": ["distinct_currencies"],
        },
        "*.*.revenue": {
            "switch_in_checks": [{"metric": "named", "name": "distinct_currencies", "max": 1}],
            "metrics": ["distinct_currencies"],
        },
        "*.*.us_forecast_*": {"switch_in_checks": [{"metric": "row_count", "min": 1}]},
    },
}


def _rows(now: dt.datetime) -> dict[str, list[dict[str, Any]]]:
    ago = [now - dt.timedelta(hours=h) for h in range(6)]
    return {
        "us_forecast_dec_v1": [],
        "opportunities": [
            {
                "id": 1,
                "name": "Acme renewal",
                "stage": "won",
                "amount": 250_000.0,
                "currency": "USD",
                "updated_at": ago[1],
            },
            {
                "id": 2,
                "name": "Globex expansion",
                "stage": "open",
                "amount": 480_000.0,
                "currency": "USD",
                "updated_at": ago[2],
            },
            {
                "id": FAT_FINGER_ID,
                "name": "Initech platform",
                "stage": "won",
                "amount": 10_000_000.0,
                "currency": "USD",
                "updated_at": ago[0],
            },
            {
                "id": 4,
                "name": "Umbrella pilot",
                "stage": "lost",
                "amount": 75_000.0,
                "currency": "USD",
                "updated_at": ago[3],
            },
            {
                "id": 5,
                "name": "Stark upsell",
                "stage": "open",
                "amount": 1_200_000.0,
                "currency": "USD",
                "updated_at": ago[4],
            },
        ],
        "revenue": [
            {"id": 1, "region": "us-east", "amount": 120_000.0, "currency": "USD", "booked_at": ago[1]},
            {"id": 2, "region": "us-west", "amount": 98_000.0, "currency": "USD", "booked_at": ago[2]},
            {"id": 3, "region": "apac", "amount": 15_000_000.0, "currency": "JPY", "booked_at": ago[3]},
            {"id": 4, "region": "us-east", "amount": 64_000.0, "currency": "USD", "booked_at": ago[4]},
        ],
    }


# column name → (Arrow type name, PostgreSQL type)
_COLUMNS: dict[str, list[tuple[str, str, str]]] = {
    "us_forecast_dec_v1": [
        ("region", "string", "text"),
        ("month", "date", "date"),
        ("forecast_amount", "float64", "double precision"),
        ("updated_at", "timestamptz", "timestamptz"),
    ],
    "opportunities": [
        ("id", "int64", "bigint"),
        ("name", "string", "text"),
        ("stage", "string", "text"),
        ("amount", "float64", "double precision"),
        ("currency", "string", "text"),
        ("updated_at", "timestamptz", "timestamptz"),
    ],
    "revenue": [
        ("id", "int64", "bigint"),
        ("region", "string", "text"),
        ("amount", "float64", "double precision"),
        ("currency", "string", "text"),
        ("booked_at", "timestamptz", "timestamptz"),
    ],
}


def seed_demo(
    settings: IcebergSettings | PostgresSettings | SnowflakeSettings,
    resolve_secret: Callable[[str], SecretValue] | None = None,
    *,
    now: dt.datetime | None = None,
) -> list[str]:
    """Create (or replace) the three demo tables; return their names as ``<namespace>.<table>``.

    Raises:
        NotImplementedError: for Snowflake (not reachable from the demo).
    """
    rows = _rows(now or dt.datetime.now(dt.UTC))
    if isinstance(settings, IcebergSettings):
        return _seed_iceberg(settings, resolve_secret, rows)
    if isinstance(settings, PostgresSettings):
        return _seed_postgres(settings, resolve_secret, rows)
    raise NotImplementedError("demo data is seeded only into iceberg and postgresql")


def _seed_iceberg(
    settings: IcebergSettings,
    resolve_secret: Callable[[str], SecretValue] | None,
    rows: dict[str, list[dict[str, Any]]],
) -> list[str]:
    import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow ships no type stubs
    from pyiceberg.catalog.sql import SqlCatalog

    types = {
        "string": pa.string(),
        "date": pa.date32(),
        "float64": pa.float64(),
        "int64": pa.int64(),
        "timestamptz": pa.timestamp("us", tz="UTC"),
    }
    catalog = SqlCatalog(
        settings.catalog_name,
        uri=expand_secrets(settings.catalog_uri, resolve_secret),
        warehouse=settings.warehouse,
    )
    catalog.create_namespace_if_not_exists(NAMESPACE)
    names = []
    for table, columns in _COLUMNS.items():
        schema = pa.schema([(c, types[t]) for c, t, _ in columns])
        if catalog.table_exists((NAMESPACE, table)):
            catalog.purge_table((NAMESPACE, table))
        created = catalog.create_table((NAMESPACE, table), schema=schema)
        # An append of zero rows still makes a snapshot, so the empty table can be branched and measured.
        created.append(pa.Table.from_pylist(rows[table], schema=schema))
        names.append(f"{NAMESPACE}.{table}")
    catalog.engine.dispose()
    return names


def _seed_postgres(
    settings: PostgresSettings,
    resolve_secret: Callable[[str], SecretValue] | None,
    rows: dict[str, list[dict[str, Any]]],
) -> list[str]:
    import psycopg
    from psycopg import sql

    schema = settings.schema_name
    names = []
    with psycopg.connect(expand_secrets(settings.dsn, resolve_secret)) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        for table, columns in _COLUMNS.items():
            ident = sql.Identifier(schema, table)
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident))
            spec = sql.SQL(", ").join(sql.SQL("{} " + pg).format(sql.Identifier(c)) for c, _, pg in columns)
            cur.execute(sql.SQL("CREATE TABLE {} ({})").format(ident, spec))
            for row in rows[table]:
                cur.execute(
                    sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                        ident,
                        sql.SQL(", ").join(sql.Identifier(c) for c in row),
                        sql.SQL(", ").join(sql.Placeholder() for _ in row),
                    ),
                    list(row.values()),
                )
            names.append(f"{schema}.{table}")
    return names
