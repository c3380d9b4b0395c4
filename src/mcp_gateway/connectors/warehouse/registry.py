"""The configured warehouses, each opened on first use (its secrets resolved then) and kept."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

from mcp_gateway.connectors.warehouse.base import UnknownTable, Warehouse
from mcp_gateway.connectors.warehouse.config import IcebergSettings, PostgresSettings, SnowflakeSettings
from mcp_gateway.connectors.warehouse.open import open_warehouse
from mcp_gateway.types import SecretValue

AnySettings = IcebergSettings | PostgresSettings | SnowflakeSettings


class WarehouseRegistry:
    """Warehouse name → adapter, opened once (thread-safe).

    Args:
        settings: the ``warehouses:`` section; a name is the first part of every table name.
        resolve_secret: vault lookup for ``secret://NAME`` references.
    """

    def __init__(
        self, settings: Mapping[str, AnySettings], resolve_secret: Callable[[str], SecretValue]
    ) -> None:
        self._settings = dict(settings)
        self._resolve = resolve_secret
        self._open: dict[str, Warehouse] = {}
        self._lock = threading.Lock()

    def split(self, table: str) -> tuple[str, str]:
        """``(warehouse, table inside it)`` for ``<warehouse>.<namespace>.<table>``.

        Raises:
            UnknownTable: the first part names no configured warehouse.
        """
        name, _, rest = table.partition(".")
        if name not in self._settings:
            raise UnknownTable(
                f"unknown warehouse in `{table}`: name tables `<warehouse>.<namespace>.<table>`"
            )
        return name, rest

    def get(self, name: str) -> Warehouse:
        """The open adapter of warehouse ``name`` (opened now if it is not yet)."""
        with self._lock:
            if name not in self._open:
                self._open[name] = open_warehouse(self._settings[name], self._resolve)
            return self._open[name]

    def close(self) -> None:
        """Close every open adapter."""
        with self._lock:
            for warehouse in self._open.values():
                warehouse.close()
            self._open.clear()
