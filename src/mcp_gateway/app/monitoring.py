"""The gateway's background services, built from ``Settings`` and registered on the ``Gateway``.

Each replica runs its own approval notifier, checkpoint writer and auth-failure recorder (they handle
that replica's own events). The SIEM export, the alert service and the quality monitors follow the
shared audit log, so a deployment runs each of them once: each runs under a lease of its own
(``storage/lease.py``; ``siem``, ``alerts``, ``monitors``). With a top-level ``store:`` the replica that
holds the lease runs the service and the others stand by to take it over (the SIEM cursors are then in
the shared schema too); without one this process always holds it.

Each takeover is audited before the service starts (kind ``leader``, status ``acquired``; detail: the
service's lease, the replica ``host:pid``, the lease backend): if it cannot be recorded the lease is
given up. A lost lease is audited when the audit log can still write (status ``lost``). A single
process on SQLite takes no lease from anyone and writes no ``leader`` record.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

from mcp_gateway.alerts.board import AlertBoard
from mcp_gateway.alerts.service import build_alert_service
from mcp_gateway.app.quality import quality_services
from mcp_gateway.approvals.notify import ApprovalNotifier
from mcp_gateway.approvals.store import ApprovalStore
from mcp_gateway.audit.log import AuditLog
from mcp_gateway.config import Settings
from mcp_gateway.connectors.siem.cursor import CursorStore, PostgresCursorStore, SQLiteCursorStore
from mcp_gateway.connectors.siem.exporter import SiemService
from mcp_gateway.core.gateway import Gateway
from mcp_gateway.core.state import SecretsView
from mcp_gateway.incidents.store import IncidentStore
from mcp_gateway.storage.lease import Lease, LocalLease, PostgresLease, run_as_leader
from mcp_gateway.types import AuditEvent, AuditSink

__all__ = ["AlertBoard", "add_services", "approval_notifier", "leader_service", "open_lease"]

Service = Callable[[], Coroutine[Any, Any, None]]
OpenLease = Callable[[str], Lease]

WHAT = {"siem": "siem export", "alerts": "alert service", "monitors": "quality monitors"}
"""Each deployment-wide service's lease name, and the service as log lines name it."""


def open_lease(settings: Settings, name: str) -> Lease:
    """The lease ``name``: an advisory lock in the ``store:`` schema, else held by this process alone."""
    if settings.store is not None:
        return PostgresLease(settings.store.url, settings.store.schema_name, name)
    return LocalLease(name)


def cursor_opener(settings: Settings, service: SiemService) -> Callable[[], CursorStore]:
    """Opens the SIEM cursors: the ``store:`` schema when set, else the SQLite ``siem.cursor_path``."""
    store = settings.store
    if store is not None:
        return partial(PostgresCursorStore, store.url, store.schema_name)
    return partial(SQLiteCursorStore, service.cursor_path)


def leader_service(lease: Lease, service: Service, audit: AuditLog) -> Service:
    """``service`` run under ``lease`` (``run_as_leader``), with each takeover audited first."""

    async def record(status: str, held: Lease) -> None:
        if held.kind == "local":
            return  # one process: nothing was taken over from anyone
        detail = {"service": held.name, "replica": held.replica, "lease": held.kind}
        await audit.append(AuditEvent(kind="leader", status=status, detail=detail))

    what = WHAT.get(lease.name, lease.name)
    return partial(
        run_as_leader,
        lease,
        service,
        what=what,
        on_acquired=partial(record, "acquired"),
        on_lost=partial(record, "lost"),
    )


def approval_notifier(settings: Settings, secrets: SecretsView) -> ApprovalNotifier | None:
    """The approval-request webhook poster, when ``approvals.webhook_url`` is set."""
    approvals = settings.approvals
    if approvals.webhook_url is None:
        return None
    return ApprovalNotifier(
        approvals.webhook_url,
        resolve_secret=secrets.resolve,
        allow_private_network=approvals.allow_private_network,
        timeout_seconds=approvals.notify_timeout_seconds,
    )


def _deployment_services(
    settings: Settings,
    gateway: Gateway,
    sink: AuditSink,
    approvals: ApprovalStore | None,
    incidents: IncidentStore,
    lease: OpenLease,
) -> tuple[AlertBoard, list[Service]]:
    audit, secrets = gateway.audit, gateway.secrets
    services: list[Service] = []
    if settings.siem.sinks:
        siem_lease = lease("siem")
        siem = SiemService(
            settings.siem,
            settings.data_dir,
            sink,
            redactor=secrets.redactor,
            resolve_secret=secrets.resolve,
            confirm=siem_lease.confirm,
        )
        siem.open_cursors = cursor_opener(settings, siem)
        services.append(leader_service(siem_lease, siem.run, audit))
    board = AlertBoard(audit.append)
    alert_service = build_alert_service(
        settings.alerts,
        board,
        sink,
        list_pending=(lambda: approvals.list("pending", limit=500)) if approvals is not None else None,
        resolve_secret=secrets.resolve,
        watch_checkpoints=audit.checkpointer is not None,
    )
    if alert_service is not None:
        services.append(leader_service(lease("alerts"), alert_service.run, audit))
    for monitors in quality_services(settings, gateway, incidents):
        services.append(leader_service(lease("monitors"), monitors, audit))
    return board, services


def add_services(
    settings: Settings,
    gateway: Gateway,
    sink: AuditSink,
    approvals: ApprovalStore | None,
    incidents: IncidentStore,
    notifier: ApprovalNotifier | None,
    *,
    lease: OpenLease | None = None,
) -> AlertBoard:
    """Register every background service on ``gateway.services``; returns the alert board (always;
    empty without alert rules).

    Args:
        sink: the audit store the deployment-wide services follow.
        approvals: the approval store (the alert rule on waiting approvals reads it).
        incidents: the quality monitors' incident store.
        notifier: the approval notifier (``approval_notifier``), run when there is one.
        lease: opens a deployment-wide service's lease by name (default ``open_lease``).
    """
    audit = gateway.audit
    if notifier is not None:
        gateway.services.append(notifier.run)
    if audit.checkpointer is not None and audit.checkpointer.interval > 0:
        gateway.services.append(audit.run_checkpoints)
    gateway.services.append(audit.failures.run)
    opener = lease if lease is not None else partial(open_lease, settings)
    board, services = _deployment_services(settings, gateway, sink, approvals, incidents, opener)
    gateway.services.extend(services)
    return board
