"""What an upstream asks of the agent behind a call: sampling, elicitation and roots requests, and its
log messages, each delivered to the relay of the one call it can belong to (``channel.CallRelay``).

A 2026-07-28 upstream's input requests arrive in the calling task (``CURRENT_RELAY``). So does a
2025-11-25 HTTP upstream's mid-call request: it comes on the response stream of the call it belongs
to, and the SDK client runs the callback in the context of the task that sent that call (its streams
carry the sender's ``contextvars``), so several calls at once each get their own. A stdio upstream's
mid-call requests and every log message name no request (one pipe, read by one task), so they go to
the one call in flight, and to none when several are: a message that could belong to several agents'
calls must reach none of them.
"""

from __future__ import annotations

import logging

import mcp_types as types
from mcp.client.session import ClientRequestContext

from mcp_gateway.channel import CURRENT_RELAY, CallRelay, ClientBoundRequest

logger = logging.getLogger(__name__)


class UpstreamAsks:
    """The SDK client callbacks of one upstream link.

    Args:
        name: the upstream's name.
        in_flight: the link's calls in flight (their relays, None for a call without one); shared,
            the link adds and removes entries.
    """

    def __init__(self, name: str, in_flight: list[CallRelay | None]) -> None:
        self.name = name
        self.in_flight = in_flight

    async def on_sampling(
        self, context: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult | types.CreateMessageResultWithTools | types.ErrorData:
        answer = await self.ask(types.CreateMessageRequest(params=params))
        if isinstance(
            answer, types.CreateMessageResult | types.CreateMessageResultWithTools | types.ErrorData
        ):
            return answer
        return _unexpected(answer)

    async def on_elicitation(
        self, context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult | types.ErrorData:
        answer = await self.ask(types.ElicitRequest(params=params))
        if isinstance(answer, types.ElicitResult | types.ErrorData):
            return answer
        return _unexpected(answer)

    async def on_roots(self, context: ClientRequestContext) -> types.ListRootsResult | types.ErrorData:
        answer = await self.ask(types.ListRootsRequest())
        if isinstance(answer, types.ListRootsResult | types.ErrorData):
            return answer
        return _unexpected(answer)

    async def ask(self, request: ClientBoundRequest) -> types.Result | types.ErrorData:
        # The relay of the calling task when the SDK runs the callback there (a 2026-07-28 upstream's
        # input requests, an HTTP upstream's mid-call ones); else, as for log messages, the one call
        # in flight: a request that could belong to several agents' calls goes to none of them.
        relay = CURRENT_RELAY.get()
        if relay is None and len(self.in_flight) == 1:
            relay = self.in_flight[0]
        if relay is None:
            logger.info(
                "upstream %s: %s not relayed (%d calls in flight)",
                self.name,
                request.method,
                len(self.in_flight),
            )
            return types.ErrorData(
                code=types.INVALID_REQUEST,
                message=f"{request.method} cannot be relayed: it belongs to no single call in flight",
            )
        return await relay.ask(self.name, request)

    async def on_log(self, params: types.LoggingMessageNotificationParams) -> None:
        # A log message names no request: deliver it only when exactly one call can have caused it.
        if len(self.in_flight) == 1 and (relay := self.in_flight[0]) is not None:
            await relay.log(str(params.level), params.data, params.logger)
        else:
            logger.debug(
                "upstream %s: log message not relayed (%d calls in flight)", self.name, len(self.in_flight)
            )


def _unexpected(answer: types.Result) -> types.ErrorData:
    return types.ErrorData(
        code=types.INTERNAL_ERROR, message=f"the agent answered with {type(answer).__name__}"
    )
