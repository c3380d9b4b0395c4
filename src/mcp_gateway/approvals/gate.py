"""The call path's approval gate over an ``ApprovalStore`` (stores block: each call runs in a worker
thread), telling approvers through the webhook when one is configured."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio

from mcp_gateway.approvals.model import PendingApproval
from mcp_gateway.approvals.notify import ApprovalNotifier
from mcp_gateway.approvals.store import ApprovalStore


class StoreApprovalGate:
    """Records approvals in an ``ApprovalStore`` and tells approvers through a webhook, if configured.

    Args:
        store: the approval store.
        default_ttl: seconds an approval stays usable when the grant does not say.
        notifier: posts each new request; None: approvers look with the CLI or the admin API.
    """

    def __init__(
        self, store: ApprovalStore, *, default_ttl: float, notifier: ApprovalNotifier | None = None
    ) -> None:
        self.store = store
        self.default_ttl = default_ttl
        self.notifier = notifier

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
        ttl = float(ttl_seconds) if ttl_seconds is not None else self.default_ttl
        approval = await anyio.to_thread.run_sync(
            lambda: self.store.create(
                agent=agent,
                tool=tool,
                args_hash=args_hash,
                args=args,
                reason=reason,
                detail=detail,
                ttl_seconds=ttl,
                min_approvers=min_approvers,
            )
        )
        if self.notifier is not None:
            # Queued, never awaited: a slow webhook must not stall the call. The approval is durable;
            # approvers can still find it with the CLI or the admin API.
            self.notifier.submit(approval)
        return PendingApproval(approval.id, approval.expires_at)

    async def consume(self, approval_id: str, *, agent: str, tool: str, args_hash: str, call_id: str) -> None:
        await anyio.to_thread.run_sync(
            lambda: self.store.consume(
                approval_id, agent=agent, tool=tool, args_hash=args_hash, call_id=call_id
            )
        )
