"""The call path's quota and approval gates, backed by the stores (``quotas.py``, ``approvals/``).

The stores block (SQLite, PostgreSQL, Redis), so every store call runs in a worker thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import anyio

from mcp_gateway.approvals.notify import ApprovalNotifier
from mcp_gateway.approvals.store import ApprovalStore
from mcp_gateway.core.governance import PendingApproval
from mcp_gateway.quotas.store import QuotaCheck, QuotaStore
from mcp_gateway.types import Clock, system_clock


class StoreQuotaGate:
    """Counts calls in a ``QuotaStore``."""

    def __init__(self, store: QuotaStore, *, clock: Clock = system_clock) -> None:
        self.store = store
        self._clock = clock

    async def hit(self, checks: Sequence[QuotaCheck]) -> None:
        now = self._clock()
        await anyio.to_thread.run_sync(lambda: self.store.check_and_hit(checks, now))


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
