"""What an approval store is: the ``ApprovalStore`` Protocol and the error its stores raise.

The SQLite and PostgreSQL stores, and ``open_approval_store`` that picks one, are in ``sql.py``.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Any, Protocol

from mcp_gateway.approvals.model import Approval, ApprovalStatus
from mcp_gateway.errors import CallRefused

__all__ = ["ApprovalStore", "ApprovalStoreUnavailable"]


class ApprovalStoreUnavailable(CallRefused):
    """The approval store cannot be read or written (the message names no path, host or DSN)."""

    kind = "approval_store_unavailable"


class ApprovalStore(Protocol):
    """Creates, lists, decides and (once) consumes approvals. Every method blocks: call it from a
    worker thread on the async call path (``anyio.to_thread.run_sync``)."""

    def create(
        self,
        *,
        agent: str,
        tool: str,
        args_hash: str,
        args: Mapping[str, Any],
        reason: str,
        detail: Mapping[str, Any],
        ttl_seconds: float,
        min_approvers: int | None = None,
    ) -> Approval: ...

    def get(self, approval_id: str) -> Approval | None: ...

    def list(self, status: ApprovalStatus | None = None, *, limit: int = 100) -> builtins.list[Approval]: ...

    def decide(self, approval_id: str, *, approve: bool, approver: str, note: str | None = None) -> Approval:
        """Record ``approver``'s vote (approve) or final deny. ``approver`` must be authenticated by
        the caller (``approvals/decide.py``); the store refuses self-approval and double votes."""
        ...

    def consume(
        self,
        approval_id: str,
        *,
        agent: str,
        tool: str,
        args_hash: str,
        call_id: str,
        now: float | None = None,
    ) -> Approval: ...

    def close(self) -> None: ...
