"""Warehouse adapters behind one Protocol: Apache Iceberg, PostgreSQL and Snowflake.

See ``base.py`` for the interface and error tree, ``config.py`` for settings, and
``mcp_gateway.tools.data`` for the governed ``data`` toolset built on them.
"""

from __future__ import annotations

from mcp_gateway.connectors.warehouse.base import (
    Capabilities,
    Check,
    NamedMetric,
    Predicate,
    SwitchResult,
    Warehouse,
    WarehouseError,
)
from mcp_gateway.connectors.warehouse.config import (
    IcebergSettings,
    PostgresSettings,
    SnowflakeSettings,
    WarehouseSettings,
)
from mcp_gateway.connectors.warehouse.open import open_warehouse

__all__ = [
    "Capabilities",
    "Check",
    "IcebergSettings",
    "NamedMetric",
    "PostgresSettings",
    "Predicate",
    "SnowflakeSettings",
    "SwitchResult",
    "Warehouse",
    "WarehouseError",
    "WarehouseSettings",
    "open_warehouse",
]
