"""An upstream's tools: listed page by page under their public names, and re-listed when the upstream
says they (or its prompts or resources) changed (2026-07-28: a ``subscriptions/listen`` stream)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal, Protocol

import anyio
import mcp_types as types
from mcp import Client
from mcp.client.subscriptions import SubscriptionLost
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import PromptsListChanged, ResourcesListChanged, ToolsListChanged
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from mcp_gateway.types import ToolSpec

logger = logging.getLogger(__name__)

_MAX_BACKOFF = 30.0

ListFamily = Literal["tools", "prompts", "resources"]
_FAMILY_OF: dict[type, ListFamily] = {
    ToolsListChanged: "tools",
    PromptsListChanged: "prompts",
    ResourcesListChanged: "resources",
}


class ListingGuard(Protocol):
    """Checks every fresh listing before it is published or answered (the ``PinGuard``)."""

    async def review(
        self, upstream: str, tools: Mapping[str, ToolSpec], *, started: float | None = None
    ) -> None: ...

    async def review_listing(
        self,
        upstream: str,
        kind: Literal["prompt", "resource", "template"],
        prefix: str,
        items: Sequence[Mapping[str, Any]],
        *,
        started: float | None = None,
    ) -> frozenset[str]:
        """Returns the names (prompt names, URIs, URI templates) of the listed items that are blocked."""
        ...

    def attach(
        self, upstream: str, prefix: str, recheck: Callable[[ListFamily], Awaitable[None]]
    ) -> None: ...

    def stale(self, upstream: str, family: ListFamily) -> None: ...

    def now(self) -> float: ...


def announced_families(client: Client) -> list[ListFamily]:
    """What a 2026-07-28 upstream announces changes of on a ``subscriptions/listen`` stream."""
    if client.protocol_version not in MODERN_PROTOCOL_VERSIONS:
        return []
    caps = client.server_capabilities
    declared: tuple[tuple[ListFamily, Any], ...] = (
        ("tools", caps.tools),
        ("prompts", caps.prompts),
        ("resources", caps.resources),
    )
    return [family for family, capability in declared if capability is not None and capability.list_changed]


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


async def follow_changes(
    client: Client,
    upstream: str,
    families: Sequence[ListFamily],
    changed: Callable[[ListFamily], None],
) -> None:
    """Call ``changed(family)`` for each change of ``families`` on the upstream's ``subscriptions/listen``
    stream (and for each family once per stream opened: a change before its acknowledgement would
    be missed)."""
    backoff = 0.5
    wanted = set(families)
    while True:
        try:
            async with client.listen(
                tools_list_changed="tools" in wanted,
                prompts_list_changed="prompts" in wanted,
                resources_list_changed="resources" in wanted,
            ) as subscription:
                backoff = 0.5
                for family in families:
                    changed(family)
                async for event in subscription:
                    announced = _FAMILY_OF.get(type(event))
                    if announced is not None:
                        changed(announced)
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
