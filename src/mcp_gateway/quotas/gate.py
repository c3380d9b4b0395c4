"""The call path's quota gate over a ``QuotaStore`` (stores block: each call runs in a worker thread)."""

from __future__ import annotations

from collections.abc import Sequence

import anyio

from mcp_gateway.quotas.model import QuotaCheck
from mcp_gateway.quotas.store import QuotaStore
from mcp_gateway.types import Clock, system_clock


class StoreQuotaGate:
    """Counts calls in a ``QuotaStore``."""

    def __init__(self, store: QuotaStore, *, clock: Clock = system_clock) -> None:
        self.store = store
        self._clock = clock

    async def hit(self, checks: Sequence[QuotaCheck]) -> None:
        now = self._clock()
        await anyio.to_thread.run_sync(lambda: self.store.check_and_hit(checks, now))
