"""Refusals on the record: every exchange the governed skeleton refuses is audited as ``denied``
(durably, if the store can) before the refusal reaches the agent."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from mcp_gateway.audit.log import AuditLog
from mcp_gateway.core.exchange import Call
from mcp_gateway.errors import AuditUnavailable, CallRefused
from mcp_gateway.policy.history_store import REPLICA
from mcp_gateway.types import Decision

logger = logging.getLogger(__name__)


async def record_refusal(
    audit: AuditLog,
    call: Call,
    exc: CallRefused,
    decision: Decision | None = None,
    safe_args: Mapping[str, Any] | None = None,
) -> CallRefused:
    """Audit the refusal of ``call`` with ``exc`` (the policy's rule ids and reasons, scrubbed);
    returns ``exc`` for the caller to raise. A store that cannot record it is logged: still refused."""
    decision = decision if decision is not None else call.decision
    redactor = call.redactor
    detail = {
        "rule_ids": list(decision.rule_ids),
        "reasons": [redactor.scrub_text(r) for r in decision.reasons] or [redactor.scrub_text(str(exc))],
        "token_id": call.exchange.principal.token_id,
        "replica": REPLICA,
    }
    if call.policy_version:
        detail["policy"] = call.policy_version
    if call.exchange.method != "tools/call":
        detail["method"] = call.exchange.method
    args = call.safe_args if safe_args is None else safe_args
    try:
        await audit.append(call.event("denied", decision="deny", status=exc.kind, args=args, detail=detail))
    except AuditUnavailable:
        # Still refused; the caller learns the refusal could not be recorded either.
        logger.error("audit unavailable while recording a denial of `%s`", call.shown)
    return exc
