"""The calling agent's client capabilities on each 2026-07-28 request the SDK client sends upstream.

In 2026-07-28 a client declares its capabilities per request, in ``_meta``. The SDK client stamps every
request with the capabilities its session declared at connect (``mcp/client/session.py``,
``_make_modern_stamp``: it *assigns* ``io.modelcontextprotocol/clientCapabilities``, so a value the
caller puts in ``meta`` is overwritten) and has no per-request setting. The gateway's session declares
what the upstream's ``relay_requests`` allows; the agent behind a call may have declared less.

So a call puts the capabilities it wants declared under the gateway's own ``_meta`` key (``ASKED``),
and ``per_request_capabilities`` (around the SDK's transport, a public seam) moves them into the
spec's key as the message leaves, after the stamp. A request without that key leaves as stamped; the
gateway's key never reaches the upstream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

from mcp.client import Transport
from mcp.shared.message import SessionMessage
from mcp_types import CLIENT_CAPABILITIES_META_KEY, JSONRPCRequest

ASKED = "io.mcp-gateway/clientCapabilities"
"""The ``_meta`` key a call's wanted capabilities ride under, inside the gateway only."""


class _Declaring:
    """The transport's write stream, declaring each request's own capabilities."""

    def __init__(self, inner: Any) -> None:  # the SDK's WriteStream[SessionMessage] (not exported)
        self._inner = inner

    async def send(self, item: SessionMessage, /) -> None:
        message = item.message
        params = message.params if isinstance(message, JSONRPCRequest) else None
        meta = params.get("_meta") if params is not None else None
        if isinstance(meta, dict) and ASKED in meta:
            asked = meta.pop(ASKED)
            if CLIENT_CAPABILITIES_META_KEY in meta:  # a 2026-07-28 envelope (2025-11-25 has none)
                meta[CLIENT_CAPABILITIES_META_KEY] = asked
        await self._inner.send(item)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> _Declaring:
        await self._inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        suppressed: bool | None = await self._inner.__aexit__(exc_type, exc_val, exc_tb)
        return suppressed


@asynccontextmanager
async def per_request_capabilities(transport: Transport) -> AsyncIterator[tuple[Any, Any]]:
    """``transport`` with each request's ``ASKED`` capabilities declared as its own."""
    async with transport as (read, write):
        yield read, _Declaring(write)


def asked(capabilities: dict[str, Any]) -> dict[str, Any]:
    """The ``meta`` of a request that declares ``capabilities`` (the caller's, as allowed)."""
    return {ASKED: capabilities}
