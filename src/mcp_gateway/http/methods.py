"""The gateway's own JSON-RPC dispatch: each MCP request method, delegated to the core.

``dispatch`` serves one request as the spec's method table says, with the SDK's types (``mcp_types``)
for validation and result shaping: the params surface of the request's protocol version is checked
first (a method the version does not define is ``-32601``; malformed params ``-32602`` with no
pydantic text), then the handler runs, then its result is shaped for the version (the per-version
result sieve, ``resultType``, the ``serverInfo`` stamp). Errors become protocol answers as in
``errors.py``: unknown or ungranted → ``-32602`` naming only what was asked; another refusal of a tool
call → a tool result with ``isError: true``; of another request, or an upstream failure → ``-32603``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import mcp_types as types
from mcp.shared.exceptions import MCPError
from mcp.shared.jsonrpc_dispatcher import handler_exception_to_error_data
from mcp_types import methods
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, ValidationError

from mcp_gateway import __version__
from mcp_gateway.core.federation import Federation
from mcp_gateway.core.gateway import Gateway
from mcp_gateway.core.request_state import Resume
from mcp_gateway.errors import CallRefused, ProtocolRefusal, UpstreamError
from mcp_gateway.http.calls import governed_call
from mcp_gateway.http.errors import protocol_error
from mcp_gateway.http.reply import Reply
from mcp_gateway.http.session import Session
from mcp_gateway.types import Principal

logger = logging.getLogger(__name__)

_R = TypeVar("_R")

SERVER_NAME: Final = "mcp-gateway"
INSTRUCTIONS: Final = "A governed gateway: you see only the tools your policy grants; every call is audited."
SERVER_INFO: Final = types.Implementation(name=SERVER_NAME, version=__version__).model_dump(
    by_alias=True, mode="json", exclude_none=True
)


@dataclass(slots=True)
class Served:
    """One request being served: who asks, in which version, and where its answer goes."""

    gateway: Gateway
    federation: Federation
    principal: Principal
    version: str
    request_id: int | str
    reply: Reply
    session: Session | None = None
    """The 2025-11-25 session the request belongs to (None: a 2026-07-28 request)."""


Handler = Callable[[Served, Mapping[str, Any]], Awaitable[BaseModel]]


def resume_of(params: types.InputResponseRequestParams) -> Resume | None:
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


async def answered(call: Callable[[], Awaitable[_R]]) -> _R:
    """``call``'s answer, its errors turned into protocol errors (for methods other than tools/call)."""
    try:
        return await call()
    except (CallRefused, UpstreamError, ProtocolRefusal) as exc:
        error = protocol_error(exc)
        raise (error if error is not None else MCPError(types.INTERNAL_ERROR, str(exc))) from None
    except MCPError:
        raise
    except Exception:
        # Its text may quote upstream output.
        logger.exception("a request failed")
        raise MCPError(types.INTERNAL_ERROR, "Internal server error") from None


def error_data(exc: Exception) -> dict[str, Any]:
    """The wire ``error`` of a request that raised ``exc`` (anything unexpected: a generic error)."""
    error = handler_exception_to_error_data(exc)
    if error is None:
        logger.error("a request failed", exc_info=exc)
        error = types.ErrorData(code=types.INTERNAL_ERROR, message="Internal server error")
    return error.model_dump(mode="json", by_alias=True, exclude_none=True)


def modern_capabilities(gateway: Gateway) -> types.ServerCapabilities:
    """What the gateway offers a 2026-07-28 client: the tool list's changes on a listen stream, and
    resource updates where an upstream takes subscriptions (no logging/setLevel in this era)."""
    subscribe = any(up.subscribable for up in gateway.upstreams.values())
    return types.ServerCapabilities(
        prompts=types.PromptsCapability(list_changed=False),
        resources=types.ResourcesCapability(subscribe=subscribe, list_changed=False),
        tools=types.ToolsCapability(list_changed=True),
        completions=types.CompletionsCapability(),
    )


async def _ping(served: Served, params: Mapping[str, Any]) -> BaseModel:
    return types.EmptyResult()


async def _discover(served: Served, params: Mapping[str, Any]) -> BaseModel:
    return types.DiscoverResult(
        supported_versions=list(MODERN_PROTOCOL_VERSIONS),
        capabilities=modern_capabilities(served.gateway),
        instructions=INSTRUCTIONS,
    )


async def _list_tools(served: Served, params: Mapping[str, Any]) -> BaseModel:
    # The list depends on who asks (2026-07-28 allows it; say so with a private cache scope).
    tools = served.gateway.list_tools(served.principal)
    return types.ListToolsResult(tools=tools, cache_scope="private", ttl_ms=0)


async def _call_tool(served: Served, params: Mapping[str, Any]) -> BaseModel:
    # The surface check passed: `name` is a string, `arguments` an object if present.
    resume = None
    if "inputResponses" in params or "requestState" in params:
        resume = resume_of(types.CallToolRequestParams.model_validate(params, by_name=False))
    arguments = params.get("arguments") or {}
    return await governed_call(served.gateway, served.principal, params["name"], arguments, resume)


async def _list_resources(served: Served, params: Mapping[str, Any]) -> BaseModel:
    found = await answered(lambda: served.federation.list_resources(served.principal))
    return types.ListResourcesResult(resources=found, cache_scope="private", ttl_ms=0)


async def _list_templates(served: Served, params: Mapping[str, Any]) -> BaseModel:
    found = await answered(lambda: served.federation.list_resource_templates(served.principal))
    return types.ListResourceTemplatesResult(resource_templates=found, cache_scope="private", ttl_ms=0)


async def _read_resource(served: Served, params: Mapping[str, Any]) -> BaseModel:
    typed = types.ReadResourceRequestParams.model_validate(params, by_name=False)
    return await answered(
        lambda: served.federation.read_resource(served.principal, str(typed.uri), resume_of(typed))
    )


async def _list_prompts(served: Served, params: Mapping[str, Any]) -> BaseModel:
    found = await answered(lambda: served.federation.list_prompts(served.principal))
    return types.ListPromptsResult(prompts=found, cache_scope="private", ttl_ms=0)


async def _get_prompt(served: Served, params: Mapping[str, Any]) -> BaseModel:
    typed = types.GetPromptRequestParams.model_validate(params, by_name=False)
    return await answered(
        lambda: served.federation.get_prompt(served.principal, typed.name, typed.arguments, resume_of(typed))
    )


async def _complete(served: Served, params: Mapping[str, Any]) -> BaseModel:
    typed = types.CompleteRequestParams.model_validate(params, by_name=False)
    return await answered(lambda: served.federation.complete(served.principal, typed))


MODERN_METHODS: Final[dict[str, Handler]] = {
    "ping": _ping,
    "server/discover": _discover,
    "tools/list": _list_tools,
    "tools/call": _call_tool,
    "resources/list": _list_resources,
    "resources/templates/list": _list_templates,
    "resources/read": _read_resource,
    "prompts/list": _list_prompts,
    "prompts/get": _get_prompt,
    "completion/complete": _complete,
}
"""What a 2026-07-28 request may ask (``subscriptions/listen`` is served by ``listen.py``)."""


def admit(method: str, version: str, params: Mapping[str, Any] | None, table: Collection[str]) -> None:
    """Check a request against the version's params surface and the methods served.

    Raises:
        MCPError: ``-32601`` for a method the version does not define or the gateway does not serve.
        ValidationError: params that do not fit the method's surface (answered ``-32602``).
    """
    if method in methods.SPEC_CLIENT_METHODS:
        try:
            methods.validate_client_request(method, version, params)
        except KeyError:
            raise MCPError(code=types.METHOD_NOT_FOUND, message="Method not found", data=method) from None
    if method not in table:
        raise MCPError(code=types.METHOD_NOT_FOUND, message="Method not found", data=method)


def shape(method: str, version: str, result: BaseModel) -> dict[str, Any]:
    """``result``'s wire form for ``version``, as the spec fixes it (see the module doc).

    Raises:
        MCPError: the result does not fit the method's result surface (a gateway bug; logged).
    """
    dumped = result.model_dump(by_alias=True, mode="json", exclude_none=True)
    modern = version in MODERN_PROTOCOL_VERSIONS
    result_type = dumped.get("resultType")
    core = not modern or not isinstance(result_type, str) or result_type in types.CORE_RESULT_TYPES
    if method in methods.SPEC_CLIENT_METHODS and core:
        try:
            dumped = methods.serialize_server_result(method, version, dumped)
        except ValidationError:
            logger.exception("the answer to %s does not fit its result type", method)
            raise MCPError(code=types.INTERNAL_ERROR, message="Handler returned an invalid result") from None
    if not modern:
        return dumped
    if dumped.get("resultType") is None:
        dumped["resultType"] = "complete"
    meta = dumped.get("_meta")
    key = types.SERVER_INFO_META_KEY
    if meta is None:
        dumped["_meta"] = {key: dict(SERVER_INFO)}
    elif isinstance(meta, dict) and meta.get(key) is None:
        dumped["_meta"] = {**meta, key: dict(SERVER_INFO)}
    return dumped
