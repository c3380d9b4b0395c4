"""Warehouse configuration: one entry per warehouse name, discriminated by ``kind``.

Secrets (PostgreSQL DSN, Snowflake password) may be ``secret://NAME`` references; they are resolved
through the vault only when the adapter is first used, and never logged.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mcp_gateway.connectors.warehouse.base import Warehouse
from mcp_gateway.errors import ConfigError
from mcp_gateway.types import SecretValue

# Same form as mcp_gateway.config.SECRET_REF; not imported from there because config.py imports this module.
SECRET_REF = re.compile(r"secret://([A-Za-z0-9_.-]{1,128})")


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


def expand_secrets(value: str, resolve_secret: Callable[[str], SecretValue] | None) -> str:
    """``value`` with every ``secret://NAME`` replaced by the secret's text.

    Raises:
        ConfigError: the value references a secret but no resolver was given.
    """
    if not SECRET_REF.search(value):
        return value
    if resolve_secret is None:
        raise ConfigError("warehouse settings reference a secret but no vault is available")
    resolver = resolve_secret
    return SECRET_REF.sub(lambda m: resolver(m.group(1)).reveal_text(), value)


def open_warehouse(
    settings: IcebergSettings | PostgresSettings | SnowflakeSettings,
    resolve_secret: Callable[[str], SecretValue] | None,
) -> Warehouse:
    """Build the adapter ``settings`` describe, resolving its secrets now."""
    if isinstance(settings, IcebergSettings):
        from mcp_gateway.connectors.warehouse.iceberg import IcebergWarehouse

        uri = expand_secrets(settings.catalog_uri, resolve_secret)
        return IcebergWarehouse.connect(uri, settings.warehouse, settings.catalog_name)
    if isinstance(settings, PostgresSettings):
        from mcp_gateway.connectors.warehouse.postgres import PostgresWarehouse

        dsn = expand_secrets(settings.dsn, resolve_secret)
        return PostgresWarehouse(dsn, settings.schema_name, settings.statement_timeout_ms)
    from mcp_gateway.connectors.warehouse.snowflake import SnowflakeWarehouse

    args: dict[str, Any] = {
        "account": settings.account,
        "user": settings.user,
        "password": expand_secrets(settings.password, resolve_secret),
        "database": settings.database,
        "schema": settings.schema_name,
        "warehouse": settings.warehouse,
    }
    if settings.role:
        args["role"] = settings.role
    return SnowflakeWarehouse(settings.database, settings.schema_name, args)
