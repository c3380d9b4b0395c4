"""One audited decision, the same for the CLI and the admin API: the approver is an authenticated admin
(the caller verified an admin token and passes its holder's name and public id), every attempt is
audited with that name (refused ones too), and the audit record is durable before the store changes.

    check (decide_refusal) ──refused──▶ audit the refusal, raise it
        │ ok
    audit the attempt          ← durable, else nothing is decided
        │
    store.decide               ── refused in the transaction (a race) ──▶ audit the refusal, raise it
        │
    the approval as it now stands (``approved``, ``denied``, or ``pending`` with one more vote)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mcp_gateway.approvals.model import (
    Approval,
    ApprovalError,
    ApproverSelfDeclared,
    decide_refusal,
    decision_event,
)
from mcp_gateway.approvals.store import ApprovalStore
from mcp_gateway.types import AuditEvent, Clock, system_clock

Record = Callable[[AuditEvent], None]
"""Makes one audit event durable or raises (``AuditUnavailable``); blocks."""


@dataclass(frozen=True, slots=True)
class Approver:
    """An authenticated admin deciding: the admin token holder's name and the token's public id."""

    name: str
    token_id: str


def decide(
    store: ApprovalStore,
    approval_id: str,
    *,
    approver: Approver,
    approve: bool,
    note: str | None,
    via: str,
    record: Record,
    declared_name: str | None = None,
    clock: Clock = system_clock,
) -> Approval:
    """Approve or deny ``approval_id`` as ``approver``, audited before and (if refused) after.

    Blocks (store and audit I/O): run it in a worker thread on an event loop.

    Args:
        store: the approval store.
        approval_id: the request to decide.
        approver: the authenticated admin.
        approve: approve (a vote toward ``min_approvers``) or deny (final).
        note: what the approver wrote; audited and kept with the decision.
        via: ``cli`` or ``api``, for the record.
        record: makes an audit event durable.
        declared_name: a name the caller declared for the approver (the CLI's old ``--as``):
            always refused, since only the admin token says who decides.
        clock: the time source for the pre-check (the store decides with its own clock).

    Raises:
        ApprovalError: refused (its ``kind`` says why); the refusal was audited.
        AuditUnavailable: the attempt could not be audited; nothing was decided.
        ApprovalStoreUnavailable: the store cannot be read or written.
    """
    current = store.get(approval_id)

    def event(error: ApprovalError | None = None) -> AuditEvent:
        return decision_event(
            approval_id,
            current,
            approve=approve,
            approver=approver.name,
            note=note,
            via=via,
            error=error,
            admin_token_id=approver.token_id,
        )

    refusal: ApprovalError | None
    if declared_name is not None:
        refusal = ApproverSelfDeclared(
            f"`--as {declared_name}` is refused: the approver is the holder of the admin token"
            f" (`{approver.name}`), never a declared name",
            approval_id,
        )
    else:
        refusal = decide_refusal(current, approval_id, now=clock(), approver=approver.name, approve=approve)
    if refusal is not None:
        record(event(refusal))
        raise refusal
    record(event())  # audit before act: if this fails, nothing is decided
    try:
        return store.decide(approval_id, approve=approve, approver=approver.name, note=note)
    except ApprovalError as exc:  # lost a race with another approver, or expired meanwhile
        record(event(exc))
        raise
