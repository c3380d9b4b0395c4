"""An incident: one stretch of time a quality monitor failed, from the first failing run to recovery.

A monitor has at most one open incident: later failing runs add to it (``occurrences``, the newest
failing checks). When the monitor passes again the incident is ``recovered`` and keeps its
*resolution*: the governed calls on its table or job between opening and recovery (switch-ins,
reruns), by audit call id and agent, so the next agent to meet the same failure sees what fixed it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

IncidentStatus = Literal["open", "recovered"]


@dataclass(frozen=True, slots=True)
class Fix:
    """A governed call that may have fixed the incident: ``ok`` outcome, on its table or job."""

    call_id: str
    agent: str
    tool: str
    audit_seq: int
    """The seq of the call's outcome record."""

    def as_dict(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "agent": self.agent, "tool": self.tool, "audit_seq": self.audit_seq}


@dataclass(frozen=True, slots=True)
class Incident:
    """One incident (see the module docstring).

    Attributes:
        id: ``inc_`` + 16 hex characters; also the resource ``incident://<id>``.
        monitor: the monitor's name in ``gateway.yaml``.
        table: the monitored table (``<warehouse>.<namespace>.<table>``).
        job: the job that writes the table (its failure context lists the incident), or None.
        status: ``open`` or ``recovered``.
        opened_at, updated_at: epoch seconds of the first and the newest failing run.
        closed_at: when the monitor passed again (None while open).
        occurrences: failing runs so far.
        failing: the newest failing checks (``check``, ``value``, ``min``, ``max``, ``passed``).
        opened_seq: the seq of the audit record that opened it.
        fixes: the resolution (empty while open, and when nothing governed touched the table).
    """

    id: str
    monitor: str
    table: str
    job: str | None
    status: IncidentStatus
    opened_at: float
    updated_at: float
    closed_at: float | None
    occurrences: int
    failing: Sequence[Mapping[str, Any]]
    opened_seq: int
    fixes: Sequence[Fix] = field(default_factory=tuple)

    @property
    def uri(self) -> str:
        return f"incident://{self.id}"

    def as_dict(self) -> dict[str, Any]:
        """The incident as agents and the audit log see it."""
        return {
            "id": self.id,
            "uri": self.uri,
            "monitor": self.monitor,
            "table": self.table,
            "job": self.job,
            "status": self.status,
            "opened_at": self.opened_at,
            "updated_at": self.updated_at,
            "closed_at": self.closed_at,
            "occurrences": self.occurrences,
            "failing": [dict(c) for c in self.failing],
            "opened_audit_seq": self.opened_seq,
            "resolution": [fix.as_dict() for fix in self.fixes],
        }
