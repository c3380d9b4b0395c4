"""Quality monitors: the gateway measures production tables on a schedule and raises incidents.

Each monitor's checks run every ``every_seconds`` (the first run at start). A failing run opens an
incident, or adds to the monitor's open one; the first passing run after that closes it as
``recovered`` with its resolution: the governed calls that touched its table or job in between and
ended ``ok`` (switch-ins, rollbacks, reruns whose run did not fail), by audit call id and agent.

Audit first: the record of a failing run, a recovery, or a run that could not measure is durable
before the incident store changes or anyone is notified (kind ``incident``; ``status`` is ``open``,
``failing``, ``recovered`` or ``error``). A passing run that changes nothing is not recorded: it read
the table and did nothing. If the audit log cannot record, the store is not touched and the next run
tries again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

import anyio

from mcp_gateway.audit.log import AuditLog
from mcp_gateway.connectors.warehouse.base import Check
from mcp_gateway.errors import AuditUnavailable, GatewayError
from mcp_gateway.incidents.model import Fix, Incident
from mcp_gateway.incidents.store import IncidentStore, new_id
from mcp_gateway.monitors.config import MonitorSettings
from mcp_gateway.redact import EMPTY, Redactor
from mcp_gateway.types import AuditEvent, AuditRecord

logger = logging.getLogger(__name__)

Measure = Callable[[str, Sequence[Check]], Awaitable[list[dict[str, Any]]]]
"""(table, checks) → one judged result per check (``check``, ``value``, ``min``, ``max``, ``passed``)."""
Notify = Callable[[str], Awaitable[object]]
"""Posts one line of text to the humans' channel (the approval webhook)."""

FIXING_TOOLS: Final = ("data.switch_in", "data.rollback_table", "ops.rerun_job", "ops.rerun_downstream")
"""Calls that can fix a table: listed in an incident's resolution when they ended ``ok``."""
UNFIXED_STATES: Final = frozenset({"failed", "cancelled"})
"""A rerun that ended ``ok`` as a call but whose run ended in one of these fixed nothing."""


class MonitorService:
    """Runs ``monitors`` on their schedules (``run``) or one at a time (``run_once``).

    Args:
        monitors: name → settings.
        measure: measures a production table.
        incidents: the incident store.
        audit: the audit log (every state change is recorded there first).
        notify: posts a line to humans; None: nobody is told.
        clock: epoch seconds (tests pass a fake one).
        redactor: the vault's current redactor (measured values are scrubbed with it).
    """

    def __init__(
        self,
        monitors: Mapping[str, MonitorSettings],
        *,
        measure: Measure,
        incidents: IncidentStore,
        audit: AuditLog,
        notify: Notify | None = None,
        clock: Callable[[], float] = time.time,
        redactor: Callable[[], Redactor] = lambda: EMPTY,
    ) -> None:
        self.monitors = dict(monitors)
        self._redactor = redactor
        self._measure = measure
        self._incidents = incidents
        self._audit = audit
        self._notify = notify
        self._clock = clock

    async def run(self) -> None:
        """Run every monitor on its schedule until cancelled."""
        async with anyio.create_task_group() as tg:
            for name in self.monitors:
                tg.start_soon(self._every, name)

    async def _every(self, name: str) -> None:
        period = self.monitors[name].every_seconds
        while True:
            try:
                await self.run_once(name)
            except Exception:  # a monitor must never take the gateway down
                logger.exception("monitor %s: run failed", name)
            await anyio.sleep(period)

    async def run_once(self, name: str) -> Incident | None:
        """Run monitor ``name`` once; returns its incident when this run opened, added to or closed one.

        Raises:
            AuditUnavailable: the run's record could not be made durable (nothing else changed).
        """
        spec = self.monitors[name]
        try:
            results = await self._measure(spec.table, spec.checks)
        except GatewayError as exc:
            await self._record(name, spec, "error", {"error": type(exc).__name__, "message": str(exc)})
            logger.warning("monitor %s: cannot measure `%s`: %s", name, spec.table, exc)
            return None
        # A measured value can be a column's value (``min``/``max``): scrubbed before it is recorded,
        # stored or told, like anything else the gateway writes down.
        failing, _ = self._redactor().scrub_json([r for r in results if not r.get("passed")])
        current = await anyio.to_thread.run_sync(self._incidents.open_of, name)
        if failing:
            return await self._failing(name, spec, failing, current)
        if current is not None:
            return await self._recovered(name, spec, current)
        return None

    async def _failing(
        self, name: str, spec: MonitorSettings, failing: list[dict[str, Any]], current: Incident | None
    ) -> Incident:
        incident_id = current.id if current is not None else new_id()
        status = "failing" if current is not None else "open"
        record = await self._record(name, spec, status, {"incident": incident_id, "failing": failing})
        incident, new = await anyio.to_thread.run_sync(
            lambda: self._incidents.raise_or_add(
                incident_id,
                monitor=name,
                table=spec.table,
                job=spec.job,
                failing=failing,
                opened_seq=record.seq,
                now=self._clock(),
            )
        )
        if new:
            said = "; ".join(f"{r['check']} = {r['value']}" for r in failing)
            await self._tell(
                spec, f"incident {incident.id}: monitor `{name}` on `{spec.table}` fails: {said}"
            )
        return incident

    async def _recovered(self, name: str, spec: MonitorSettings, incident: Incident) -> Incident:
        fixes = await anyio.to_thread.run_sync(lambda: self.fixes_for(incident))
        await self._record(
            name, spec, "recovered", {"incident": incident.id, "resolution": [f.as_dict() for f in fixes]}
        )
        closed = await anyio.to_thread.run_sync(
            lambda: self._incidents.recover(incident.id, fixes, now=self._clock())
        )
        by = ", ".join(sorted({f"{f.agent} ({f.tool})" for f in fixes})) or "no governed call"
        await self._tell(
            spec, f"incident {incident.id}: monitor `{name}` on `{spec.table}` passes again; fixed by {by}"
        )
        return closed

    def fixes_for(self, incident: Incident) -> list[Fix]:
        """The governed calls since ``incident`` opened that touched its table or job and ended ``ok``."""
        sink = self._audit.sink
        fixes: list[Fix] = []
        for tool in FIXING_TOOLS:
            for intent in sink.query(tool=tool, kind="intent", since=incident.opened_at, limit=200):
                if not _touches(intent, incident):
                    continue
                ended = [
                    r
                    for r in sink.query(call_id=intent.call_id, kind="outcome", limit=5)
                    if r.status == "ok" and _run_state(r) not in UNFIXED_STATES
                ]
                if ended:
                    fixes.append(Fix(intent.call_id, intent.agent, intent.tool, ended[-1].seq))
        return sorted(fixes, key=lambda f: f.audit_seq)

    async def _record(
        self, name: str, spec: MonitorSettings, status: str, detail: dict[str, Any]
    ) -> AuditRecord:
        event = AuditEvent(
            kind="incident",
            status=status,
            args={"monitor": name, "table": spec.table},
            detail={"job": spec.job, **detail} if spec.job else detail,
        )
        try:
            return await self._audit.append(event)
        except AuditUnavailable:
            logger.error("monitor %s: the audit log cannot record this run; nothing changed", name)
            raise

    async def _tell(self, spec: MonitorSettings, text: str) -> None:
        if self._notify is None or not spec.notify:
            return
        try:
            await self._notify(text)
        except Exception as exc:  # telling people must not undo what was recorded
            logger.warning("incident notification failed (%s)", type(exc).__name__)


def _run_state(outcome: AuditRecord) -> object:
    facts = outcome.detail.get("facts")
    return facts.get("state") if isinstance(facts, dict) else None


def _touches(intent: AuditRecord, incident: Incident) -> bool:
    if intent.args.get("table") == incident.table:
        return True
    return incident.job is not None and intent.args.get("job") == incident.job
