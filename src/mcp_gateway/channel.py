"""The channel back to the client of the request being served.

While the gateway serves one of an agent's requests, what the upstream says about it (progress, log
messages, requests to the client) goes back through a ``CallRelay`` that the HTTP face puts in
``CURRENT_RELAY`` for that request; the upstream connection finds it there. The Protocol lives here,
below both, so neither imports the other.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Protocol

import mcp_types as types


class CallRelay(Protocol):
    """Where an upstream's notifications about one in-flight request go (the calling client)."""

    @property
    def wants_progress(self) -> bool:
        """Whether the calling client asked for progress (a progress token in its request)."""
        ...

    @property
    def modern(self) -> bool:
        """Whether the calling client speaks 2026-07-28: an upstream's input requests go back to it
        in an ``input_required`` answer, not as requests in the middle of the call."""
        ...

    @property
    def client_capabilities(self) -> types.ClientCapabilities | None:
        """What the calling client declared (per request in 2026-07-28, per session before)."""
        ...

    async def progress(self, progress: float, total: float | None, message: str | None) -> None: ...

    async def log(self, level: str, data: Any, logger_name: str | None) -> None: ...

    async def ask(self, upstream: str, request: ClientBoundRequest) -> types.Result | types.ErrorData:
        """Put an upstream's request to the calling client (``relay.py``)."""
        ...


ClientBoundRequest = types.CreateMessageRequest | types.ElicitRequest | types.ListRootsRequest
"""Requests an upstream may send to the client of the call it is serving (``relay_requests``)."""

CURRENT_RELAY: ContextVar[CallRelay | None] = ContextVar("mcp_gateway_call_relay", default=None)
"""Set by the server for the request being served; read by ``UpstreamConnection`` calls."""
