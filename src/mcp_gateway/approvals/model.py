"""What an approval is, how a call's arguments are bound to it, and the ways using one can fail.

An approval binds one human decision to one exact call: the agent, the tool and the SHA-256 of the
call's arguments (canonical JSON, without the ``approval_id`` argument that carries the approval
itself). It is used at most once. Its life:

    pending ──approve (the min_approvers-th distinct approver)──▶ approved ──consume──▶ used
       │  ▲                                                            │
       │  └─approve (fewer so far: the vote is kept, still pending)    └──(ttl passes)──▶ expired
       ├──deny (any one approver)──▶ denied
       └──(ttl passes)──▶ expired

A pending request expires ``ttl_seconds`` after it was made; an approval expires ``ttl_seconds``
after it was granted. ``expired`` is derived from ``expires_at`` when read, so nothing needs to sweep.

Who may decide (``decide_refusal``, checked again by the store inside the deciding transaction): an
authenticated admin (the CLI and the admin API verify an admin token; the name is the token's holder,
never a name the caller declares). The requester never approves its own call: an approver whose name
equals the requesting agent's (case-insensitively, so an admin token minted as ``Ops-Agent`` does not
slip past ``ops-agent``) is refused. Under the two-person rule (``min_approvers`` > 1, from
``approvals.min_approvers`` in gateway.yaml or a grant's ``approval.min_approvers``, the larger wins)
an approval needs that many distinct approvers; the same name (case-insensitively) counts once, and
its second attempt is refused. One deny is final.

Errors (each a ``CallRefused`` with a stable ``kind``):

    ApprovalError
    ├── ApprovalRequired        the call needs a human's approval; one is now pending (id in the message)
    ├── ApprovalNotFound        no approval has that id
    ├── ApprovalOtherAgent      it was requested by another agent
    ├── ApprovalOtherTool       it was requested for another tool
    ├── ApprovalArgsChanged     the arguments differ from the ones approved
    ├── ApprovalPending         no human has decided yet
    ├── ApprovalDenied          a human denied it
    ├── ApprovalExpired         it expired before it was used (or decided)
    ├── ApprovalUsed            it was already used once
    ├── ApprovalNotPending      a decision on one that was already decided
    ├── ApprovalSelfApproval    the approver is the agent that asked
    ├── ApprovalSameApprover    this approver already approved it (counts once)
    ├── ApproverSelfDeclared    a decision under a declared name rather than an admin token
    └── ApprovalBadRequest      a decision whose request is malformed (e.g. names an approver)
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from mcp_gateway.audit.record import canonical
from mcp_gateway.errors import CallRefused
from mcp_gateway.types import AuditEvent

ApprovalStatus = Literal["pending", "approved", "denied", "used", "expired"]
STATUSES: tuple[ApprovalStatus, ...] = ("pending", "approved", "denied", "used", "expired")
APPROVAL_ARG = "approval_id"
"""The argument an agent adds to a call to present an approval; not part of the approved arguments."""


def args_hash(arguments: Mapping[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON of ``arguments`` without ``approval_id``.

    Canonical: sorted keys, no whitespace, non-ASCII kept as UTF-8 (``ensure_ascii=False``).

    Raises:
        TypeError: the arguments hold something JSON cannot represent.
    """
    bound = {key: value for key, value in arguments.items() if key != APPROVAL_ARG}
    return hashlib.sha256(canonical(bound)).hexdigest()


def new_approval_id() -> str:
    """An unguessable approval id: ``apr_`` and 192 random bits."""
    return "apr_" + secrets.token_urlsafe(24)


@dataclass(frozen=True, slots=True)
class Approval:
    """One request for a human decision on one exact call.

    Attributes:
        id: ``apr_...``, unguessable; the agent presents it as the ``approval_id`` argument.
        agent: the agent that made the call.
        tool: the tool called.
        args_hash: ``args_hash`` of the call's arguments.
        args: the arguments for display, already redacted by the caller.
        reason: why a human must decide (shown to the agent and the approver).
        detail: facts the approver needs (e.g. a before-image), already redacted by the caller.
        created_at, expires_at: epoch seconds; ``expires_at`` moves to decision time + ttl on approval.
        ttl_seconds: how long a pending request, then a granted approval, stays usable.
        status: as stored; see ``effective_status`` for the status at a given time.
        decided_by, decided_at, note: who approved or denied it, when, and what they said.
        used_at, used_call_id: when it was used, by which call.
        min_approvers: distinct approvers needed before it is approved (the two-person rule: 2).
        approvers: the approvals given so far, each ``{"name", "at", "note"}``, in order.
    """

    id: str
    agent: str
    tool: str
    args_hash: str
    args: Mapping[str, Any] = field(default_factory=dict)
    reason: str = ""
    detail: Mapping[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    expires_at: float = 0.0
    ttl_seconds: float = 3600.0
    status: ApprovalStatus = "pending"
    decided_by: str | None = None
    decided_at: float | None = None
    note: str | None = None
    used_at: float | None = None
    used_call_id: str | None = None
    min_approvers: int = 1
    approvers: tuple[Mapping[str, Any], ...] = ()

    @property
    def approver_names(self) -> tuple[str, ...]:
        """The names of those who approved so far, in order."""
        return tuple(str(vote.get("name", "")) for vote in self.approvers)

    def has_approved(self, approver: str) -> bool:
        """Whether ``approver`` (compared case-insensitively) already approved this request."""
        key = approver.casefold()
        return any(name.casefold() == key for name in self.approver_names)

    def is_requester(self, approver: str) -> bool:
        """Whether ``approver`` is the agent that made the call (compared case-insensitively)."""
        return approver.casefold() == self.agent.casefold()

    def effective_status(self, now: float) -> ApprovalStatus:
        """The status at ``now``: a pending or approved one past ``expires_at`` is ``expired``."""
        if self.status in ("pending", "approved") and self.expires_at <= now:
            return "expired"
        return self.status

    def as_of(self, now: float) -> Approval:
        """This approval with ``status`` set to its effective status at ``now``."""
        status = self.effective_status(now)
        return self if status == self.status else replace(self, status=status)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (the admin API's and ``approvals show --json``'s shape)."""
        return {
            "id": self.id,
            "agent": self.agent,
            "tool": self.tool,
            "args_hash": self.args_hash,
            "args": dict(self.args),
            "reason": self.reason,
            "detail": dict(self.detail),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "ttl_seconds": self.ttl_seconds,
            "status": self.status,
            "decided_by": self.decided_by,
            "decided_at": self.decided_at,
            "note": self.note,
            "used_at": self.used_at,
            "used_call_id": self.used_call_id,
            "min_approvers": self.min_approvers,
            "approvers": [dict(vote) for vote in self.approvers],
        }


class ApprovalError(CallRefused):
    """An approval cannot be used or decided. ``approval_id`` names it (never anything secret)."""

    kind = "approval_error"

    def __init__(self, message: str, approval_id: str = "") -> None:
        super().__init__(message)
        self.approval_id = approval_id


class ApprovalRequired(ApprovalError):
    """This call needs a human's approval; ``approval`` is the pending request just made."""

    kind = "approval_required"

    def __init__(self, approval: Approval) -> None:
        super().__init__(
            f"this call needs a human's approval: {approval.reason}; approval `{approval.id}` is pending"
            f" (ask an admin to approve it, then repeat the same call with `{APPROVAL_ARG}` set to it)",
            approval.id,
        )
        self.approval = approval


class ApprovalNotFound(ApprovalError):
    kind = "approval_not_found"


class ApprovalOtherAgent(ApprovalError):
    kind = "approval_other_agent"


class ApprovalOtherTool(ApprovalError):
    kind = "approval_other_tool"


class ApprovalArgsChanged(ApprovalError):
    kind = "approval_args_changed"


class ApprovalPending(ApprovalError):
    kind = "approval_pending"


class ApprovalDenied(ApprovalError):
    kind = "approval_denied"


class ApprovalExpired(ApprovalError):
    kind = "approval_expired"


class ApprovalUsed(ApprovalError):
    kind = "approval_used"


class ApprovalNotPending(ApprovalError):
    kind = "approval_not_pending"


class ApprovalSelfApproval(ApprovalError):
    kind = "approval_self_approval"


class ApprovalSameApprover(ApprovalError):
    kind = "approval_same_approver"


class ApproverSelfDeclared(ApprovalError):
    kind = "approver_self_declared"


class ApprovalBadRequest(ApprovalError):
    kind = "approval_bad_request"


def consume_refusal(
    approval: Approval | None, approval_id: str, *, agent: str, tool: str, args_hash: str, now: float
) -> ApprovalError | None:
    """Why ``approval`` may not be used for this call, or None if it may (pure; stores call it).

    Binding is checked before state: a stolen id used for another call is reported as such.
    """
    if approval is None:
        return ApprovalNotFound(f"no approval `{approval_id}`", approval_id)
    if approval.agent != agent:
        return ApprovalOtherAgent(f"approval `{approval_id}` belongs to another agent", approval_id)
    if approval.tool != tool:
        return ApprovalOtherTool(
            f"approval `{approval_id}` is for tool `{approval.tool}`, not `{tool}`", approval_id
        )
    if approval.args_hash != args_hash:
        return ApprovalArgsChanged(
            f"approval `{approval_id}` was given for other arguments; the arguments must be exactly"
            " the ones approved",
            approval_id,
        )
    status = approval.effective_status(now)
    if status == "approved":
        return None
    if status == "pending" and approval.approvers:
        given, needed = len(approval.approvers), approval.min_approvers
        return ApprovalPending(
            f"approval `{approval_id}` is still pending: {given} of {needed} distinct approvers"
            " have approved it",
            approval_id,
        )
    return _STATE_ERRORS[status](approval_id)


def decide_refusal(
    approval: Approval | None,
    approval_id: str,
    *,
    now: float,
    approver: str | None = None,
    approve: bool = True,
) -> ApprovalError | None:
    """Why ``approver`` may not decide ``approval`` now, or None if they may.

    It must be pending and unexpired; to approve, the approver must not be the requesting agent and
    must not have approved it already (one approver counts once toward ``min_approvers``). Anyone
    who may decide may deny, the requester included: a deny only takes power away.
    """
    if approval is None:
        return ApprovalNotFound(f"no approval `{approval_id}`", approval_id)
    status = approval.effective_status(now)
    if status == "expired":
        return ApprovalExpired(f"approval `{approval_id}` expired before it was decided", approval_id)
    if status != "pending":
        return ApprovalNotPending(f"approval `{approval_id}` is already {status}", approval_id)
    if approve and approver is not None:
        if approval.is_requester(approver):
            return ApprovalSelfApproval(
                f"approver `{approver}` is the agent that asked for approval `{approval_id}`;"
                " a requester never approves its own call",
                approval_id,
            )
        if approval.has_approved(approver):
            return ApprovalSameApprover(
                f"approver `{approver}` already approved `{approval_id}` and counts once;"
                f" it needs {approval.min_approvers - len(approval.approvers)} more distinct approver(s)",
                approval_id,
            )
    return None


_STATE_ERRORS: dict[ApprovalStatus, Callable[[str], ApprovalError]] = {
    "pending": lambda i: ApprovalPending(f"approval `{i}` is still pending: no human has decided yet", i),
    "denied": lambda i: ApprovalDenied(f"approval `{i}` was denied", i),
    "expired": lambda i: ApprovalExpired(f"approval `{i}` has expired", i),
    "used": lambda i: ApprovalUsed(f"approval `{i}` was already used; each approval allows one call", i),
}


def decision_event(
    approval_id: str,
    approval: Approval | None,
    *,
    approve: bool,
    approver: str,
    note: str | None,
    via: str,
    error: ApprovalError | None = None,
    admin_token_id: str = "",
) -> AuditEvent:
    """The audit record of a human's decision (``status`` ok) or of a refused attempt (``error``).

    Args:
        approval_id: the approval asked for.
        approval: it as stored, if it exists (its agent, tool and argument hash go on the record).
        approve: approve or deny.
        approver: the authenticated admin's name (the holder of the admin token used).
        note: what the approver wrote.
        via: ``cli`` or ``api``.
        error: why the decision did not happen, if it did not.
        admin_token_id: the public id of the admin token used (never the token).
    """
    detail: dict[str, Any] = {
        "approval_id": approval_id,
        "approver": approver,
        "decision": "approve" if approve else "deny",
        "via": via,
    }
    if approval is not None:
        detail["args_hash"] = approval.args_hash
        detail["approvals_before"] = len(approval.approvers)
        detail["min_approvers"] = approval.min_approvers
    if note:
        detail["note"] = note
    if admin_token_id:
        detail["admin_token_id"] = admin_token_id
    if error is not None:
        detail["error"] = str(error)
        detail["error_kind"] = error.kind
    return AuditEvent(
        kind="approval",
        agent=approval.agent if approval is not None else "",
        tool=approval.tool if approval is not None else "",
        decision="allow" if approve else "deny",
        status="ok" if error is None else "error",
        detail=detail,
    )


@dataclass(frozen=True, slots=True)
class PendingApproval:
    """An approval waiting for a human."""

    id: str
    expires_at: float
