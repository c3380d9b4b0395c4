"""What a running gateway reports to the metrics it is watched by (``telemetry.watch_gateway``)."""

from __future__ import annotations

from mcp_gateway.app.wiring import Runtime
from mcp_gateway.telemetry import Watched

PENDING_SHOWN = 10_000
"""The pending-approvals gauge counts up to this many (a queue longer than that is an incident anyway)."""


def watched(runtime: Runtime) -> Watched:
    """Pending approvals (from the approval store) and each upstream's connection state."""
    approvals = runtime.approvals
    upstreams = runtime.gateway.upstreams

    def pending() -> int:
        assert approvals is not None  # noqa: S101 - only given when there is a store
        return len(approvals.list("pending", limit=PENDING_SHOWN))

    return Watched(
        pending_approvals=pending if approvals is not None else None,
        upstreams=lambda: {name: up.connected for name, up in upstreams.items()},
    )
