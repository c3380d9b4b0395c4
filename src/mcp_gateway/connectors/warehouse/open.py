"""Open the warehouse adapter a ``warehouses:`` entry describes, its secrets resolved from the vault."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mcp_gateway.connectors.warehouse.base import Warehouse
from mcp_gateway.connectors.warehouse.config import IcebergSettings, PostgresSettings, SnowflakeSettings
from mcp_gateway.errors import ConfigError
from mcp_gateway.types import SECRET_REF, SecretValue


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

    return SnowflakeWarehouse(
        settings.database, settings.schema_name, snowflake_args(settings, resolve_secret)
    )


def snowflake_args(
    settings: SnowflakeSettings, resolve_secret: Callable[[str], SecretValue] | None
) -> dict[str, Any]:
    """The Snowflake connector's keyword arguments for ``settings``, the password resolved now."""
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
    return args
