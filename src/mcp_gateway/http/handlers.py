"""The SDK server's handlers: each MCP method the SDK path serves, delegated to the core.

Errors become protocol answers here and in ``lean.py`` (which shares ``governed_call``):
unknown or ungranted → ``-32602`` naming only what was asked; another refusal of a tool call → a tool
result with ``isError: true``; of a federated request, or an upstream failure → ``-32603``.

The 2025-11-25 ``logging/setLevel`` and ``resources/subscribe``/``unsubscribe`` are served here too
(``core/log_levels.py``, ``core/subscriptions.py``), and advertised only while the gateway can honour
them: ``logging`` when a connected upstream logs and the caller is granted ``logging:setLevel``,
``resources.subscribe`` when a connected upstream takes subscriptions.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import NotificationOptions, Server
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from mcp_gateway import __version__
from mcp_gateway.core.federation import Federation
from mcp_gateway.core.gateway import Gateway
from mcp_gateway.core.log_levels import POLICY_KEY as SET_LEVEL_KEY
from mcp_gateway.core.log_levels import set_level
from mcp_gateway.core.request_state import Resume
from mcp_gateway.errors import CallRefused, ProtocolRefusal, UpstreamError
from mcp_gateway.http.auth import CALLER, PRINCIPAL_KEY
from mcp_gateway.http.calls import governed_call
from mcp_gateway.http.errors import protocol_error
from mcp_gateway.http.relay import relaying
from mcp_gateway.http.session_state import session_id, when_session_ends
from mcp_gateway.policy.evaluate import is_granted
from mcp_gateway.types import Principal

logger = logging.getLogger(__name__)

_R = TypeVar("_R")


def _principal(ctx: ServerRequestContext[Any, Any]) -> Principal:
    request = ctx.request
    principal = request.scope.get("state", {}).get(PRINCIPAL_KEY) if request is not None else None
    if not isinstance(principal, Principal):
        # Unreachable behind AuthMiddleware; refuse rather than guess.
        raise MCPError(types.INVALID_REQUEST, "unauthenticated")
    return principal


def _resume(params: types.InputResponseRequestParams) -> Resume | None:
    """A 2026-07-28 retry's answers and state, if the request carries them."""
    if params.input_responses is None and params.request_state is None:
        return None
    responses = (
        {
            key: value.model_dump(by_alias=True, mode="json", exclude_none=True)
            for key, value in params.input_responses.items()
        }
        if params.input_responses is not None
        else None
    )
    return Resume(responses, params.request_state)


class GatewayServer(Server[Any]):
    """The SDK server, with capabilities that follow what the gateway can honour (see the module doc).

    The SDK derives capabilities from the registered handlers when a session initializes; the handlers
    for logging and subscriptions are always registered, and withdrawn here while nothing behind the
    gateway could serve them.
    """

    gateway: Gateway | None = None

    def get_capabilities(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
        *,
        protocol_version: str | None = None,
    ) -> types.ServerCapabilities:
        found = super().get_capabilities(
            notification_options, experimental_capabilities, extensions, protocol_version=protocol_version
        )
        gateway = self.gateway
        if gateway is None:
            return found
        upstreams = list(gateway.upstreams.values())
        principal = CALLER.get()
        logs = (
            protocol_version not in MODERN_PROTOCOL_VERSIONS  # setLevel is gone from 2026-07-28
            and principal is not None
            and any(up.supports("logging") for up in upstreams)
            and is_granted(gateway.policy.policy, principal.agent, SET_LEVEL_KEY, scopes=_scopes(principal))
        )
        update: dict[str, Any] = {"logging": found.logging if logs else None}
        if found.resources is not None and protocol_version not in MODERN_PROTOCOL_VERSIONS:
            subscribe = any(up.subscribable for up in upstreams)
            update["resources"] = found.resources.model_copy(update={"subscribe": subscribe})
        return found.model_copy(update=update)


def _scopes(principal: Principal) -> frozenset[str] | None:
    return principal.scopes if principal.source == "oauth" else None


async def _answered(call: Callable[[], Awaitable[_R]]) -> _R:
    """``call``'s answer, its errors turned into protocol errors (for methods other than tools/call)."""
    try:
        return await call()
    except (CallRefused, UpstreamError, ProtocolRefusal) as exc:
        error = protocol_error(exc)
        raise (error if error is not None else MCPError(types.INTERNAL_ERROR, str(exc))) from None
    except MCPError:
        raise
    except Exception:
        # Its text may quote upstream output; the SDK's 2025-11-25 session would send it on.
        logger.exception("a request failed")
        raise MCPError(types.INTERNAL_ERROR, "Internal server error") from None


def build_mcp_server(gateway: Gateway) -> Server[Any]:
    """The low-level MCP server whose handlers delegate to ``gateway``."""

    async def on_list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        # The list depends on who asks (2026-07-28 allows it; say so with a private cache scope).
        return types.ListToolsResult(
            tools=gateway.list_tools(_principal(ctx)), cache_scope="private", ttl_ms=0
        )

    async def on_call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult:
        principal = _principal(ctx)
        # The upstream's progress and log messages about this call go back to this caller only.
        with relaying(ctx, gateway, principal):
            return await governed_call(
                gateway, principal, params.name, params.arguments or {}, _resume(params)
            )

    def input_schema(name: str) -> dict[str, Any] | None:
        # The SDK checks a 2026-07-28 call's Mcp-Param headers against the tool's schema; without this
        # lookup it runs a whole tools/list per call. Only the caller's granted tools have a schema
        # here, so the check cannot be used to probe for tools the caller may not see.
        principal = CALLER.get()
        return gateway.input_schema(principal, name) if principal is not None else None

    async def on_set_level(
        ctx: ServerRequestContext[Any, Any], params: types.SetLevelRequestParams
    ) -> types.EmptyResult:
        # Applied to what the gateway relays to this session; the shared upstreams keep sending debug.
        principal, session = _principal(ctx), session_id(ctx)
        if session is not None:
            when_session_ends(ctx, "log_level", lambda: _forget_level(gateway, session))
        await _answered(
            lambda: set_level(gateway.governor, principal, session, params.level, gateway.log_levels)
        )
        return types.EmptyResult()

    server = GatewayServer(
        "mcp-gateway",
        version=__version__,
        instructions="A governed gateway: you see only the tools your policy grants; every call is audited.",
        get_tool_input_schema=input_schema,
        on_list_tools=on_list_tools,
        on_call_tool=on_call_tool,
        **federation_handlers(gateway, _principal),
    )
    # Registered, not passed to the constructor: that form is deprecated from 2026-07-28 (SEP-2577),
    # and the SDK serves the method to 2025-era sessions only either way.
    server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, on_set_level)
    server.gateway = gateway
    return server


async def _forget_level(gateway: Gateway, session: str) -> None:
    gateway.log_levels.forget(session)


def federation_handlers(
    gateway: Gateway, principal_of: Callable[[ServerRequestContext[Any, Any]], Principal]
) -> dict[str, Any]:
    """The SDK ``Server(...)`` handlers for resources, templates, prompts and completions.

    Errors become protocol answers here, as ``server.py`` does for tools: unknown or ungranted →
    ``-32602`` naming only what was asked; another refusal or an upstream failure → ``-32603``.
    """
    federation = Federation(gateway)

    async def guarded(ctx: ServerRequestContext[Any, Any], call: Callable[[], Awaitable[_R]]) -> _R:
        with relaying(ctx, gateway, principal_of(ctx)):
            return await _answered(call)

    async def on_list_resources(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        resources = await guarded(ctx, lambda: federation.list_resources(principal_of(ctx)))
        return types.ListResourcesResult(resources=resources, cache_scope="private", ttl_ms=0)

    async def on_list_resource_templates(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        templates = await guarded(ctx, lambda: federation.list_resource_templates(principal_of(ctx)))
        return types.ListResourceTemplatesResult(
            resource_templates=templates, cache_scope="private", ttl_ms=0
        )

    async def on_read_resource(
        ctx: ServerRequestContext[Any, Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult | types.InputRequiredResult:
        principal = principal_of(ctx)
        return await guarded(
            ctx, lambda: federation.read_resource(principal, str(params.uri), _resume(params))
        )

    async def on_list_prompts(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        prompts = await guarded(ctx, lambda: federation.list_prompts(principal_of(ctx)))
        return types.ListPromptsResult(prompts=prompts, cache_scope="private", ttl_ms=0)

    async def on_get_prompt(
        ctx: ServerRequestContext[Any, Any], params: types.GetPromptRequestParams
    ) -> types.GetPromptResult | types.InputRequiredResult:
        principal = principal_of(ctx)
        resume = _resume(params)
        return await guarded(
            ctx, lambda: federation.get_prompt(principal, params.name, params.arguments, resume)
        )

    async def on_completion(
        ctx: ServerRequestContext[Any, Any], params: types.CompleteRequestParams
    ) -> types.CompleteResult:
        principal = principal_of(ctx)
        return await guarded(ctx, lambda: federation.complete(principal, params))

    async def on_subscribe_resource(
        ctx: ServerRequestContext[Any, Any], params: types.SubscribeRequestParams
    ) -> types.EmptyResult:
        principal, session, subscriptions = principal_of(ctx), session_id(ctx), federation.subscriptions
        if session is not None:
            when_session_ends(ctx, "subscriptions", lambda: subscriptions.forget(session))
        # Updates go to this session's connection (its standalone stream), not to this request.
        sink = ctx.session
        await guarded(ctx, lambda: subscriptions.subscribe(principal, str(params.uri), session, sink))
        return types.EmptyResult()

    async def on_unsubscribe_resource(
        ctx: ServerRequestContext[Any, Any], params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        principal, session = principal_of(ctx), session_id(ctx)
        await guarded(ctx, lambda: federation.subscriptions.unsubscribe(principal, str(params.uri), session))
        return types.EmptyResult()

    return {
        "on_subscribe_resource": on_subscribe_resource,
        "on_unsubscribe_resource": on_unsubscribe_resource,
        "on_list_resources": on_list_resources,
        "on_list_resource_templates": on_list_resource_templates,
        "on_read_resource": on_read_resource,
        "on_list_prompts": on_list_prompts,
        "on_get_prompt": on_get_prompt,
        "on_completion": on_completion,
    }
