"""Warehouse configuration: one entry per warehouse name, discriminated by ``kind``.

Secrets (PostgreSQL DSN, Snowflake password) may be ``secret://NAME`` references; they are resolved
through the vault only when the adapter is first used, and never logged.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IcebergSettings(_Frozen):
    """An Iceberg lake behind a pyiceberg SQL catalog.

    Attributes:
        catalog_uri: SQLAlchemy URL of the catalog database (``sqlite:///...`` or
            ``postgresql+psycopg://...``; may be ``secret://NAME``).
        warehouse: where data and metadata files live (a path or ``file://`` URL).
        catalog_name: the catalog's name inside that database.
    """

    kind: Literal["iceberg"] = "iceberg"
    catalog_uri: str
    warehouse: str
    catalog_name: str = "gateway"


class PostgresSettings(_Frozen):
    """PostgreSQL tables; branches are full copies (no zero-copy clone in PostgreSQL).

    Attributes:
        dsn: libpq connection string or URL (may be ``secret://NAME``).
        schema_name: the schema whose tables are exposed (``schema`` in YAML).
        statement_timeout_ms: bound on each metric query.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    kind: Literal["postgres"] = "postgres"
    dsn: str
    schema_name: str = Field(default="public", alias="schema")
    statement_timeout_ms: int = Field(default=5000, gt=0)


class SnowflakeSettings(_Frozen):
    """A Snowflake database/schema (needs the ``snowflake`` extra).

    Attributes:
        password: a ``secret://NAME`` reference (plain values are accepted but discouraged).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    kind: Literal["snowflake"] = "snowflake"
    account: str
    user: str
    password: str
    database: str
    schema_name: str = Field(default="PUBLIC", alias="schema")
    warehouse: str
    role: str | None = None


WarehouseSettings = Annotated[
    IcebergSettings | PostgresSettings | SnowflakeSettings, Field(discriminator="kind")
]
