"""An upstream's tools: listed page by page under their public names, and re-listed when the upstream
says they changed (2026-07-28: a ``subscriptions/listen`` stream)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
import mcp_types as types
from mcp import Client
from mcp.client.subscriptions import SubscriptionLost
from mcp.shared.exceptions import MCPError

from mcp_gateway.types import ToolSpec

logger = logging.getLogger(__name__)

_MAX_BACKOFF = 30.0


async def list_tools(client: Client, upstream: str, prefix: str) -> dict[str, ToolSpec]:
    """Every tool ``upstream`` lists (all pages), by public name ``<prefix><its name>``."""
    tools: dict[str, ToolSpec] = {}
    cursor: str | None = None
    while True:
        page = await client.list_tools(cursor=cursor, cache_mode="bypass")
        for tool in page.tools:
            public = f"{prefix}{tool.name}"
            definition = tool.model_dump(by_alias=True, mode="json", exclude_none=True)
            definition["name"] = public
            tools[public] = ToolSpec(public, upstream, tool.name, definition)
        cursor = page.next_cursor
        if not cursor:
            return tools


async def follow_tool_changes(client: Client, upstream: str, changed: Callable[[], None]) -> None:
    """Call ``changed`` for each change on the upstream's ``subscriptions/listen`` stream of tool
    changes (and once per stream opened: a change before its acknowledgement would be missed)."""
    backoff = 0.5
    while True:
        try:
            async with client.listen(tools_list_changed=True) as subscription:
                backoff = 0.5
                changed()
                async for _event in subscription:
                    changed()
        except MCPError as exc:
            if exc.code == types.METHOD_NOT_FOUND:
                logger.info("upstream %s: no change subscription; periodic re-list only", upstream)
                return
            logger.info("upstream %s: change subscription failed: %s", upstream, exc.message)
        except (SubscriptionLost, TimeoutError) as exc:
            # Expected now and then: an HTTP upstream's stream ends at the client's read timeout.
            logger.debug("upstream %s: change subscription ended: %s", upstream, exc)
        # A server that ends every stream at once must not make this a busy loop.
        await anyio.sleep(backoff)
        backoff = min(backoff * 2, _MAX_BACKOFF)
