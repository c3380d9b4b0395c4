"""How monitors measure: the warehouse adapters' metrics on production, judged against each check."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio

from mcp_gateway.connectors.warehouse.base import Check, NamedMetric
from mcp_gateway.connectors.warehouse.metrics import judge, resolve_named
from mcp_gateway.connectors.warehouse.registry import WarehouseRegistry


class ProductionMeasure:
    """A ``Measure`` over ``registry``: each check's metric on the production table, judged.

    Args:
        registry: the configured warehouses.
        named_metrics: the named metrics policy defines now (policy reloads change them).
    """

    def __init__(
        self, registry: WarehouseRegistry, named_metrics: Callable[[], Mapping[str, NamedMetric]]
    ) -> None:
        self._registry = registry
        self._named = named_metrics

    async def __call__(self, table: str, checks: Sequence[Check]) -> list[dict[str, Any]]:
        """Raises ``WarehouseError`` (a ``GatewayError``) when the table cannot be measured."""
        name, inner = self._registry.split(table)
        named = resolve_named(checks, self._named())

        def work() -> list[Any]:
            return self._registry.get(name).metrics(inner, None, checks, named)

        values = await anyio.to_thread.run_sync(work)
        return [judge(check, value) for check, value in zip(checks, values, strict=True)]


def policy_metrics(extra: Mapping[str, Any]) -> dict[str, NamedMetric]:
    """The named metrics of a loaded policy's ``metrics:`` section."""
    defined = extra.get("metrics") or {}
    return {name: NamedMetric(name, str(spec["sql"])) for name, spec in defined.items() if "sql" in spec}
