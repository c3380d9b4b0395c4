"""What the call path asks beyond allow/deny: quotas and human approval.

The gateway core sees only the two Protocols below; ``app/wiring.py`` backs them with the gates in
``quotas/gate.py`` and ``approvals/gate.py`` (SQLite by default; Redis / PostgreSQL when replicas share them).

Approval flow, as the agent sees it:

1. A call that policy sends to a human does not run. The gateway records a pending approval bound to
   the agent, the tool and the SHA-256 of the exact arguments, notifies the approvers and returns a
   ``pending_approval`` result carrying the approval id.
2. A human approves or denies (CLI or admin API).
3. The agent calls again with the same arguments plus ``approval_id``. The approval is consumed
   atomically (single use) before the tool runs; another agent, another tool, changed arguments, a
   pending, denied, expired or used approval is refused and audited.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from mcp_gateway.approvals.model import APPROVAL_ARG, PendingApproval, args_hash
from mcp_gateway.policy.evaluate import deny_rule_fires
from mcp_gateway.policy.model import GrantGovernance, Policy
from mcp_gateway.quotas.model import QuotaCheck, quota_checks

__all__ = ["APPROVAL_ARG", "ApprovalGate", "PendingApproval", "QuotaGate", "args_hash", "split_approval"]

APPROVAL_PREFIX = "apr_"


class QuotaGate(Protocol):
    async def hit(self, checks: Sequence[QuotaCheck]) -> None:
        """Count one call against every quota, or against none if any is used up.

        Raises:
            QuotaExceeded: naming the quota and the retry time; nothing was counted.
            QuotaUnavailable: the store cannot be read (a quota must not fail open).
        """
        ...


class ApprovalGate(Protocol):
    async def request(
        self,
        *,
        agent: str,
        tool: str,
        args_hash: str,
        args: Mapping[str, Any],
        reason: str,
        detail: Mapping[str, Any],
        ttl_seconds: int | None,
        min_approvers: int | None = None,
    ) -> PendingApproval:
        """Record a pending approval (durably) and notify approvers. ``args`` are already redacted.

        ``min_approvers``: distinct approvers the grant asks for (the store's minimum applies if larger).
        """
        ...

    async def consume(self, approval_id: str, *, agent: str, tool: str, args_hash: str, call_id: str) -> None:
        """Use an approved approval for this exact call, once.

        Raises:
            CallRefused: an ``ApprovalError`` (its ``kind`` says why) when it cannot be used.
        """
        ...


def split_approval(arguments: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """Take ``approval_id`` out of the arguments: it is the gateway's, never the tool's.

    Only a string value that looks like an approval id is taken, so an upstream tool with its own
    ``approval_id`` argument still receives it (documented in the README).
    """
    value = arguments.get(APPROVAL_ARG)
    if isinstance(value, str) and value.startswith(APPROVAL_PREFIX):
        return {k: v for k, v in arguments.items() if k != APPROVAL_ARG}, value
    return dict(arguments), None


def approval_reasons(governance: GrantGovernance, arguments: Mapping[str, Any], builtin: bool) -> list[str]:
    """Why this call needs a human before it runs; empty when the gateway need not ask (yet).

    Tool-evaluated conditions (``change_factor``) are left to a built-in tool, which raises
    ``NeedsApproval`` after reading state. An upstream tool cannot evaluate them, so for it such a
    condition always asks: a condition that cannot be checked must not let the call through.
    """
    reasons: list[str] = []
    if governance.approval_required:
        reasons.append("policy requires approval for every call")
    for rule in governance.approval_rules:  # a loop: most grants have none, and this runs every call
        if deny_rule_fires(rule, arguments):
            reasons.append(f"approval condition `{rule.id}` matched")
    if governance.tool_conditions and not builtin:
        reasons.append("policy has approval conditions this upstream tool cannot evaluate")
    return reasons


def quota_limits(policy: Policy, agent: str, tool: str, governance: GrantGovernance) -> list[QuotaCheck]:
    """The quotas a call of ``tool`` by ``agent`` counts against: the grant's, and the agent's overall."""
    return quota_checks(
        agent, tool, tool_limits=governance.rates, agent_limits=policy.agent_rates.get(agent, ())
    )


def pending_result(tool: str, approval: PendingApproval, reasons: Sequence[str]) -> dict[str, Any]:
    """The structured answer to a call that waits for a human (not an error: nothing failed)."""
    return {
        "status": "pending_approval",
        "approval_id": approval.id,
        "expires_at": approval.expires_at,
        "reasons": list(reasons),
        "next_step": (
            f"a human must approve this call of `{tool}`; once approved, call it again with exactly "
            f"the same arguments plus `{APPROVAL_ARG}`: `{approval.id}` (it can be used once)"
        ),
    }
