"""``subscriptions/listen`` for 2026-07-28 agents: the tool list's changes and resource updates.

A 2026-07-28 client has no standing stream; it opens one by sending ``subscriptions/listen``, whose
answer is the stream (SEP-2575). The gateway acknowledges first, with the subset of the filter it will
honour, and tags every event with the listen request's id (``_meta`` subscription id):

- ``toolsListChanged``: the list of tools *this caller* may see changed (an upstream re-listed, a pin
  blocked a tool, the policy was reloaded). The caller's granted list is compared, not the catalog, so
  an agent is never told about tools it cannot see. Checked every ``poll_seconds`` while the stream is
  open, and only when something behind the list changed (the upstreams' listings, the policy version,
  the blocked set).
- ``resourceSubscriptions``: each URI passes the governed skeleton as a subscription (the grant that
  lets the agent read it, audited; ``core/subscriptions.py``), and is honoured only if admitted and its
  upstream takes subscriptions. Each update is decided again against the policy and audited before it
  is sent. A refused URI is left out of the acknowledgement (the refusal is on the record).
- Prompt and resource list changes are not relayed: they are left out of the acknowledgement.

The stream ends when the client disconnects (the request's watch cancels it; the subscriptions are
dropped) or the gateway shuts down.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any, Final

import anyio
import mcp_types as types
from anyio.streams.memory import MemoryObjectSendStream

from mcp_gateway.core.gateway import Gateway
from mcp_gateway.errors import AuditUnavailable, CallRefused, UpstreamError
from mcp_gateway.http.methods import Served
from mcp_gateway.types import Principal

logger = logging.getLogger(__name__)

SUBSCRIPTION_ID: Final = "io.modelcontextprotocol/subscriptionId"
POLL_SECONDS: Final = 1.0
TOOLS_CHANGED: Final = "notifications/tools/list_changed"
_UPDATED: Final = "notifications/resources/updated"


class _Sink:
    """Where ``core/subscriptions.py`` puts this stream's resource updates."""

    def __init__(self, events: MemoryObjectSendStream[dict[str, Any]]) -> None:
        self._events = events

    async def send_resource_updated(self, uri: str) -> None:
        # Raises (the stream is gone) and the subscriptions then drop this stream.
        self._events.send_nowait({"method": _UPDATED, "params": {"uri": uri}})


def _behind_the_list(gateway: Gateway) -> tuple[Any, ...]:
    """What the caller's tool list is made of; the list is compared only when this changes."""
    blocked = frozenset(gateway.pins.blocked) if gateway.pins is not None else frozenset()
    listings = tuple(id(up.tools) for up in gateway.upstreams.values())
    return gateway.policy.version, blocked, listings


def _tool_list(gateway: Gateway, principal: Principal) -> list[dict[str, Any]]:
    tools = gateway.list_tools(principal)
    return [tool.model_dump(by_alias=True, mode="json", exclude_none=True) for tool in tools]


async def tool_list_changes(
    gateway: Gateway, principal: Principal, poll_seconds: float
) -> AsyncIterator[None]:
    """Yields each time the list of tools ``principal`` may see changes (checked every
    ``poll_seconds``, compared only when something behind the list changed)."""
    basis = _behind_the_list(gateway)
    shown = _tool_list(gateway, principal)
    while True:
        await anyio.sleep(poll_seconds)
        now = _behind_the_list(gateway)
        if now == basis:
            continue
        basis = now
        listed = _tool_list(gateway, principal)
        if listed != shown:
            shown = listed
            yield


async def _subscribe(served: Served, uris: list[str], key: str, sink: _Sink) -> list[str]:
    """The URIs admitted for this stream (each a governed, audited subscription)."""
    honoured: list[str] = []
    for uri in uris:
        try:
            await served.federation.subscriptions.subscribe(served.principal, uri, key, sink)
        except (CallRefused, UpstreamError, AuditUnavailable) as exc:
            logger.info("agent %s: listen: a resource subscription refused: %s", served.principal.agent, exc)
            continue
        honoured.append(uri)
    return honoured


async def listen(served: Served, params: dict[str, Any], poll_seconds: float = POLL_SECONDS) -> types.Result:
    """Serve one listen stream until the client leaves (see the module doc).

    Raises:
        ValidationError: the filter is malformed (answered ``-32602``).
    """
    typed = types.SubscriptionsListenRequestParams.model_validate(params, by_name=False)
    wanted = typed.notifications
    meta = {SUBSCRIPTION_ID: served.request_id}
    key = f"listen:{uuid.uuid4().hex}"
    send, receive = anyio.create_memory_object_stream[dict[str, Any]](256)
    subscriptions = served.federation.subscriptions
    try:
        uris = await _subscribe(served, list(wanted.resource_subscriptions or ()), key, _Sink(send))
        honoured = types.SubscriptionFilter(
            tools_list_changed=True if wanted.tools_list_changed else None,
            resource_subscriptions=uris or None,
        )
        ack = types.SubscriptionsAcknowledgedNotificationParams(notifications=honoured, _meta=meta)
        await served.reply.notify(
            {
                "jsonrpc": "2.0",
                "method": "notifications/subscriptions/acknowledged",
                "params": ack.model_dump(by_alias=True, mode="json", exclude_none=True),
            }
        )
        async with anyio.create_task_group() as tg:
            if wanted.tools_list_changed:
                tg.start_soon(_watch_tools, served, send.clone(), poll_seconds)
            async with receive:
                async for found in receive:
                    params_out = {**found.get("params", {}), "_meta": meta}
                    message = {"jsonrpc": "2.0", "method": found["method"], "params": params_out}
                    await served.reply.notify(message)
    finally:
        send.close()
        with anyio.CancelScope(shield=True):
            await subscriptions.forget(key)
    return types.SubscriptionsListenResult.model_validate({"_meta": meta})


async def _watch_tools(
    served: Served, events: MemoryObjectSendStream[dict[str, Any]], poll_seconds: float
) -> None:
    """Put a list-changed event on the stream each time the caller's tool list changes."""
    async with events:
        async for _ in tool_list_changes(served.gateway, served.principal, poll_seconds):
            await events.send({"method": TOOLS_CHANGED, "params": {}})
