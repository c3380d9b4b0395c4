"""Requests to an upstream on behalf of the agent being served: ``tools/call`` (the lean forwarder or
the SDK client), resources, prompts and completions, and 2026-07-28 ``input_required`` rounds.

``UpstreamConnection`` is the ``UpstreamLink`` (``link.py``: lifecycle, listings, subscriptions) plus
these requests. For a 2026-07-28 caller (or none) an upstream's ``input_required`` answer is returned
as it is; for a 2025-11-25 caller the SDK client answers the upstream's input requests mid-call,
through the caller's relay (``channel.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, TypeVar, cast

import mcp_types as types
from mcp import Client
from pydantic import BaseModel, TypeAdapter, ValidationError

from mcp_gateway.channel import CURRENT_RELAY
from mcp_gateway.connectors.mcp.capabilities import asked
from mcp_gateway.connectors.mcp.config import required_secrets
from mcp_gateway.connectors.mcp.link import UpstreamLink
from mcp_gateway.connectors.mcp.listing import ListFamily
from mcp_gateway.errors import UpstreamError

__all__ = ["UpstreamConnection", "required_secrets"]

_T = TypeVar("_T")
_B = TypeVar("_B", bound=BaseModel)


class UpstreamConnection(UpstreamLink):
    """A supervised connection to one upstream MCP server, and the requests the gateway sends it."""

    async def call_payload(
        self,
        upstream_tool: str,
        arguments: dict[str, Any],
        *,
        input_responses: Mapping[str, Any] | None = None,
        request_state: str | None = None,
    ) -> dict[str, Any]:
        """Call a tool at the upstream; its answer as JSON-ready data (not yet validated).

        For a 2026-07-28 caller (or none) an upstream's ``input_required`` answer is returned as it
        is, and ``input_responses`` / ``request_state`` resume one; for a 2025-11-25 caller the SDK
        client answers the upstream's input requests itself, through the relay, mid-call. A call to a
        stateless HTTP upstream whose client did not ask for progress takes the lean path (one pooled
        POST, the caller's declared capabilities that ``relay_requests`` allows in its envelope).

        Raises:
            UpstreamError: not connected, timed out, a protocol error, or an unusable answer.
            ProtocolRefusal: the upstream answered a JSON-RPC error the agent must get as it is.
        """
        fast = self._fast
        relay = CURRENT_RELAY.get()
        legacy = not _modern_caller()
        if legacy and (input_responses is not None or request_state is not None):
            raise UpstreamError("a 2025-11-25 caller cannot resume a 2026-07-28 request")
        if legacy and (
            fast is None or self.config.relay_requests or (relay is not None and relay.wants_progress)
        ):
            # The SDK client answers the upstream's input requests mid-call, through the relay.
            result = await self.call(upstream_tool, arguments)
            return result.model_dump(by_alias=True, mode="json", exclude_none=True)
        # Only what relay_requests allows is ever declared: without it, nothing to read.
        declared = relay.client_capabilities if relay is not None and self.config.relay_requests else None
        capabilities = self.allowed_capabilities(declared)
        if fast is None or (relay is not None and relay.wants_progress):
            progress = relay.progress if relay is not None else None
            responses = _input_responses(input_responses)
            meta = cast("types.RequestParamsMeta", asked(capabilities))  # declared per request
            raw = await self._request(
                lambda c: c.session.call_tool(
                    upstream_tool,
                    arguments,
                    progress_callback=progress,
                    input_responses=responses,
                    request_state=request_state,
                    meta=meta,
                    allow_input_required=True,
                )
            )
            return raw.model_dump(by_alias=True, mode="json", exclude_none=True)
        if self._client is None:
            raise UpstreamError(f"upstream `{self.name}` is not connected")
        self._in_flight.append(relay)
        try:
            return await fast.call(
                upstream_tool,
                arguments,
                capabilities=capabilities,
                input_responses=input_responses,
                request_state=request_state,
            )
        finally:
            self._in_flight.remove(relay)

    def allowed_capabilities(self, declared: types.ClientCapabilities | None) -> dict[str, Any]:
        """What of the caller's declared client capabilities this upstream may use: those its
        ``relay_requests`` allows (the gateway relays nothing else)."""
        if declared is None:
            return {}
        allowed = set(self.config.relay_requests)
        dumped = declared.model_dump(by_alias=True, mode="json", exclude_none=True)
        return {key: value for key, value in dumped.items() if key in allowed}

    async def call(self, upstream_tool: str, arguments: dict[str, Any]) -> types.CallToolResult:
        """Call a tool at the upstream; progress and log messages go to ``CURRENT_RELAY``'s relay.

        Raises:
            UpstreamError: not connected, timed out, a protocol error, or an unusable answer.
        """
        relay = CURRENT_RELAY.get()
        progress = relay.progress if relay is not None else None
        return await self._request(
            lambda c: c.call_tool(upstream_tool, arguments, progress_callback=progress)
        )

    async def list_resources(self) -> list[types.Resource]:
        """Every resource the upstream lists (all pages) whose pin allows it. Raises ``UpstreamError``."""

        async def fetch(client: Client, cursor: str | None) -> tuple[list[types.Resource], str | None]:
            page = await client.list_resources(cursor=cursor, cache_mode="bypass")
            return list(page.resources), page.next_cursor

        started = self._pins.now() if self._pins is not None else 0.0
        listed = await self._paged(fetch, "resources")
        return await self._reviewed("resource", listed, started, lambda r: r.uri)

    async def list_resource_templates(self) -> list[types.ResourceTemplate]:
        """Every resource template the upstream lists (all pages) whose pin allows it.
        Raises ``UpstreamError``."""

        async def fetch(
            client: Client, cursor: str | None
        ) -> tuple[list[types.ResourceTemplate], str | None]:
            page = await client.list_resource_templates(cursor=cursor, cache_mode="bypass")
            return list(page.resource_templates), page.next_cursor

        started = self._pins.now() if self._pins is not None else 0.0
        listed = await self._paged(fetch, "resources")
        return await self._reviewed("template", listed, started, lambda t: t.uri_template)

    async def list_prompts(self) -> list[types.Prompt]:
        """Every prompt the upstream lists (all pages) whose pin allows it. Raises ``UpstreamError``."""

        async def fetch(client: Client, cursor: str | None) -> tuple[list[types.Prompt], str | None]:
            page = await client.list_prompts(cursor=cursor, cache_mode="bypass")
            return list(page.prompts), page.next_cursor

        started = self._pins.now() if self._pins is not None else 0.0
        listed = await self._paged(fetch, "prompts")
        return await self._reviewed("prompt", listed, started, lambda p: p.name)

    async def _reviewed(
        self,
        kind: Literal["prompt", "resource", "template"],
        items: list[_B],
        started: float,
        ident: Callable[[_B], str],
    ) -> list[_B]:
        """``items`` after the pin review: a blocked one is not offered. A listing made while
        disconnected (empty) is not reviewed: it would make blocked items look removed."""
        if self._pins is None or not self.connected:
            return items
        dumped = [item.model_dump(by_alias=True, mode="json", exclude_none=True) for item in items]
        blocked = await self._pins.review_listing(self.name, kind, self.prefix, dumped, started=started)
        return [item for item in items if ident(item) not in blocked]

    async def _relist_other(self, family: ListFamily) -> None:
        if family == "prompts":
            await self.list_prompts()
        elif family == "resources":
            await self.list_resources()
            await self.list_resource_templates()

    async def read_resource(
        self, uri: str, *, input_responses: Mapping[str, Any] | None = None, request_state: str | None = None
    ) -> types.ReadResourceResult | types.InputRequiredResult:
        """Read ``uri`` at the upstream; for a 2026-07-28 caller an ``input_required`` answer is
        returned as it is (see ``call_payload``). Raises ``UpstreamError``, ``ProtocolRefusal``."""
        if not _modern_caller():
            return await self._request(lambda c: c.read_resource(uri, cache_mode="bypass"))
        responses = _input_responses(input_responses)
        return await self._request(
            lambda c: c.session.read_resource(
                uri, input_responses=responses, request_state=request_state, allow_input_required=True
            )
        )

    async def get_prompt(
        self,
        name: str,
        arguments: dict[str, str] | None,
        *,
        input_responses: Mapping[str, Any] | None = None,
        request_state: str | None = None,
    ) -> types.GetPromptResult | types.InputRequiredResult:
        """Get the upstream's prompt ``name``; for a 2026-07-28 caller an ``input_required`` answer is
        returned as it is (see ``call_payload``). Raises ``UpstreamError``, ``ProtocolRefusal``."""
        if not _modern_caller():
            return await self._request(lambda c: c.get_prompt(name, arguments))
        responses = _input_responses(input_responses)
        return await self._request(
            lambda c: c.session.get_prompt(
                name,
                arguments,
                input_responses=responses,
                request_state=request_state,
                allow_input_required=True,
            )
        )

    async def complete(
        self,
        ref: types.PromptReference | types.ResourceTemplateReference,
        argument: dict[str, str],
        context_arguments: dict[str, str] | None,
    ) -> types.CompleteResult:
        """Forward ``completion/complete`` (``ref`` in the upstream's own names). Raises ``UpstreamError``."""
        return await self._request(lambda c: c.complete(ref, argument, context_arguments))

    def supports(self, capability: str) -> bool:
        """Whether the connected upstream declares ``capability`` (``resources``, ``prompts``, ...)."""
        client = self._client
        return client is not None and getattr(client.server_capabilities, capability, None) is not None

    async def _paged(
        self, fetch: Callable[[Client, str | None], Awaitable[tuple[list[_T], str | None]]], capability: str
    ) -> list[_T]:
        if not self.supports(capability):
            return []
        items: list[_T] = []
        cursor: str | None = None
        while True:
            page, cursor = await self._request(lambda c, cur=cursor: fetch(c, cur))  # type: ignore[misc]
            items.extend(page)
            if not cursor:
                return items


def _modern_caller() -> bool:
    """Whether the request being served comes from a 2026-07-28 client (or from none)."""
    relay = CURRENT_RELAY.get()
    return relay is None or relay.modern


def _input_responses(raw: Mapping[str, Any] | None) -> types.InputResponses | None:
    """The agent's answers to an upstream's input requests, as the SDK client sends them."""
    if raw is None:
        return None
    adapter: TypeAdapter[types.InputResponses] = TypeAdapter(types.InputResponses)
    try:
        return adapter.validate_python(dict(raw))
    except ValidationError:
        raise UpstreamError("the agent's inputResponses are not valid responses to input requests") from None
