"""A real PostgreSQL schema (own per test) with customer data to mask, for the read-tool tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql

from mcp_gateway.connectors.warehouse.config import PostgresSettings

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"

# Values that must never come back raw: not in a result, an error, or the audit log.
RAW_EMAIL = "ada.lovelace@example.com"
RAW_PHONE = "+1 415 555 0142"
RAW_SSN = "123-45-6789"
RAW_SECRET = "top-secret-payload"
RAW_VALUES = (RAW_EMAIL, RAW_PHONE, RAW_SSN, RAW_SECRET)

CUSTOMERS = [
    (1, "Ada", RAW_EMAIL, RAW_PHONE, RAW_SSN),
    (2, "Grace", "grace@example.com", "+1 212 555 0199", "987-65-4321"),
    (3, "Ada again", RAW_EMAIL, None, "111-22-3333"),
]


def masks_for(warehouse: str, schema: str) -> dict[str, Any]:
    """The policy ``tables`` section masking the customers table."""
    return {
        f"{warehouse}.{schema}.customers": {
            "mask": {"email": "hash", "phone": {"mode": "partial", "keep_last": 2}, "ssn": "drop"}
        }
    }


@dataclass
class PgData:
    schema: str
    settings: PostgresSettings

    def rows(self, table: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(PG_DSN) as conn:
            query = sql.SQL("SELECT * FROM {} ORDER BY 1").format(sql.Identifier(self.schema, table))
            return conn.execute(query).fetchall()


@pytest.fixture
def pg_data() -> Iterator[PgData]:
    schema = f"rd_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        ident = sql.Identifier
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident(schema)))
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (id bigint PRIMARY KEY, name text, email text, phone text, ssn text)"
            ).format(ident(schema, "customers"))
        )
        conn.execute(
            sql.SQL("CREATE TABLE {} (id bigint, customer_id bigint, amount numeric, note text)").format(
                ident(schema, "orders")
            )
        )
        conn.execute(sql.SQL("CREATE TABLE {} (id bigint, payload text)").format(ident(schema, "secret")))
        conn.execute(sql.SQL("CREATE TABLE {} (n bigint)").format(ident(schema, "big")))
        with conn.cursor() as cur:
            cur.executemany(
                sql.SQL("INSERT INTO {} VALUES (%s, %s, %s, %s, %s)").format(ident(schema, "customers")),
                CUSTOMERS,
            )
            cur.executemany(
                sql.SQL("INSERT INTO {} VALUES (%s, %s, %s, %s)").format(ident(schema, "orders")),
                [(10, 1, 250.5, "first"), (11, 1, 99, "second"), (12, 2, 10_000_000, "fat finger")],
            )
            cur.execute(
                sql.SQL("INSERT INTO {} VALUES (1, %s)").format(ident(schema, "secret")), [RAW_SECRET]
            )
            cur.execute(
                sql.SQL("INSERT INTO {} SELECT generate_series(1, 2000)").format(ident(schema, "big"))
            )
    try:
        yield PgData(schema, PostgresSettings(dsn=PG_DSN, schema=schema, statement_timeout_ms=5000))
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
