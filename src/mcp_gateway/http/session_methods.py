"""The methods only a 2025-11-25 session serves, and what such a session is offered.

``logging/setLevel`` (``core/log_levels.py``) and ``resources/subscribe`` / ``unsubscribe``
(``core/subscriptions.py``) apply to the session that asks; what they keep for it is dropped when the
session ends (``Session.on_close``). The capabilities follow what the gateway can honour for the caller.
"""

from __future__ import annotations

from typing import Any, Final

import mcp_types as types
from pydantic import BaseModel

from mcp_gateway.core.gateway import Gateway
from mcp_gateway.core.log_levels import POLICY_KEY as SET_LEVEL_KEY
from mcp_gateway.core.log_levels import set_level
from mcp_gateway.http.methods import MODERN_METHODS, Handler, Served, answered
from mcp_gateway.policy.evaluate import is_granted
from mcp_gateway.types import Principal


def capabilities(gateway: Gateway, principal: Principal) -> types.ServerCapabilities:
    """What a 2025-11-25 session is offered: ``logging`` when a connected upstream logs and the caller
    may set a level, ``resources.subscribe`` when a connected upstream takes subscriptions, and the
    tool list's changes (on the GET stream)."""
    upstreams = list(gateway.upstreams.values())
    scopes = principal.scopes if principal.source == "oauth" else None
    logs = any(up.supports("logging") for up in upstreams) and is_granted(
        gateway.policy.policy, principal.agent, SET_LEVEL_KEY, scopes=scopes
    )
    return types.ServerCapabilities(
        prompts=types.PromptsCapability(list_changed=False),
        resources=types.ResourcesCapability(
            subscribe=any(up.subscribable for up in upstreams), list_changed=False
        ),
        tools=types.ToolsCapability(list_changed=True),
        logging=types.LoggingCapability() if logs else None,
        completions=types.CompletionsCapability(),
    )


async def _set_level(served: Served, params: Any) -> BaseModel:
    typed = types.SetLevelRequestParams.model_validate(params, by_name=False)
    gateway, session = served.gateway, served.session
    assert session is not None  # noqa: S101 - only sessions are served these methods
    levels = gateway.log_levels

    async def forget() -> None:
        levels.forget(session.id)

    session.on_close("log_level", forget)
    await answered(lambda: set_level(gateway.governor, served.principal, session.id, typed.level, levels))
    return types.EmptyResult()


async def _subscribe(served: Served, params: Any) -> BaseModel:
    uri = str(types.SubscribeRequestParams.model_validate(params, by_name=False).uri)
    subscriptions, session = served.federation.subscriptions, served.session
    assert session is not None  # noqa: S101 - only sessions are served these methods

    async def forget() -> None:
        await subscriptions.forget(session.id)

    session.on_close("subscriptions", forget)
    # Updates go to the session's GET stream, not to this request.
    await answered(lambda: subscriptions.subscribe(served.principal, uri, session.id, session))
    return types.EmptyResult()


async def _unsubscribe(served: Served, params: Any) -> BaseModel:
    uri = str(types.UnsubscribeRequestParams.model_validate(params, by_name=False).uri)
    session_id = served.session.id if served.session is not None else None
    await answered(lambda: served.federation.subscriptions.unsubscribe(served.principal, uri, session_id))
    return types.EmptyResult()


SESSION_METHODS: Final[dict[str, Handler]] = {
    **{m: h for m, h in MODERN_METHODS.items() if m != "server/discover"},
    "logging/setLevel": _set_level,
    "resources/subscribe": _subscribe,
    "resources/unsubscribe": _unsubscribe,
}
