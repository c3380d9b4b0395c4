"""Quality monitors and their incidents, built from ``Settings`` (``monitors:``).

The incident store is opened whenever the gateway runs (the ``ops`` toolset and the ``incident://``
resources read it; with no monitors it stays empty): SQLite in the data dir, or the shared
PostgreSQL schema when ``store:`` is set, so every replica sees the same incidents. The monitor
service runs only when monitors are configured; every replica runs it, and the store's one-open-
incident-per-monitor rule keeps their findings to one incident.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import anyio

from mcp_gateway.config import Settings
from mcp_gateway.connectors.warehouse.registry import WarehouseRegistry
from mcp_gateway.connectors.webhook import Webhook, slack_escape
from mcp_gateway.core.gateway import Gateway
from mcp_gateway.incidents.store import IncidentStore, open_incident_store
from mcp_gateway.monitors.measure import ProductionMeasure, policy_metrics
from mcp_gateway.monitors.runner import MonitorService, Notify

Service = Callable[[], Coroutine[Any, Any, None]]
INCIDENTS_FILE = "incidents.db"


def open_incidents(settings: Settings) -> IncidentStore:
    """The incident store ``settings`` name (see the module docstring)."""
    if settings.store is not None:
        return open_incident_store(dsn=settings.store.url, schema=settings.store.schema_name)
    return open_incident_store(path=settings.data_dir / INCIDENTS_FILE)


def quality_services(settings: Settings, gateway: Gateway, incidents: IncidentStore) -> list[Service]:
    """The monitor service when ``monitors:`` is set (it closes the warehouses it opened when it
    stops), posting new and recovered incidents to ``approvals.webhook_url`` if there is one."""
    if not settings.monitors:
        return []
    registry = WarehouseRegistry(settings.warehouses, gateway.secrets.resolve)
    policy = gateway.policy
    measure = ProductionMeasure(registry, lambda: policy_metrics(policy.policy.extra))
    notify: Notify | None = None
    approvals = settings.approvals
    if approvals.webhook_url is not None:
        webhook = Webhook(
            approvals.webhook_url,
            what="incident",
            resolve_secret=gateway.secrets.resolve,
            allow_private_network=approvals.allow_private_network,
            timeout_seconds=approvals.notify_timeout_seconds,
        )

        async def post(text: str) -> bool:
            return await webhook.post("monitor", {"text": slack_escape(text)})

        notify = post
    service = MonitorService(
        settings.monitors,
        measure=measure,
        incidents=incidents,
        audit=gateway.audit,
        notify=notify,
        redactor=gateway.secrets.current_redactor,
    )

    async def run() -> None:
        try:
            await service.run()
        finally:
            await anyio.to_thread.run_sync(registry.close)

    return [run]
