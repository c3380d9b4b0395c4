"""What an upstream says to the agent while it serves one of the agent's requests.

``relaying`` puts a ``ClientRelay`` in ``CURRENT_RELAY`` for the request being served; the upstream
connection hands it what the upstream sends about that request:

- progress and log notifications, to the calling client's session (the egress scrubber removes
  vault values from them on the wire, keys and every field included); log messages below the level
  the session asked for with ``logging/setLevel`` are dropped (``core/log_levels.py``);
- requests to the client (``sampling/createMessage``, ``elicitation/create``), only from an upstream
  whose config lists them in ``relay_requests`` (off by default: a sampling request puts upstream text
  in front of the agent's model, an elicitation puts it in front of its human). Each passes the
  governed skeleton as ``<upstream>:<method>``: limits, an in-flight slot of its own, the agent's
  quota, a durable ``intent`` with the scrubbed request before the agent is asked (no audit, no
  relay), an ``outcome`` with a digest of the answer after. It goes only to a 2025-11-25 session whose
  client declared the capability, on the stream of the request it belongs to; anything else answers
  the upstream with an error (audited as ``denied``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from mcp_gateway.channel import CURRENT_RELAY, ClientBoundRequest
from mcp_gateway.core.asked import ask_agent
from mcp_gateway.core.gateway import Gateway
from mcp_gateway.http.session_state import session_id
from mcp_gateway.types import Principal

_CAPABILITY = {
    "sampling/createMessage": types.ClientCapabilities(sampling=types.SamplingCapability()),
    "elicitation/create": types.ClientCapabilities(elicitation=types.ElicitationCapability()),
    "roots/list": types.ClientCapabilities(roots=types.RootsCapability()),
}


class ClientRelay:
    """Relays an upstream's messages about one request to the client that made it."""

    def __init__(
        self,
        ctx: ServerRequestContext[Any, Any],
        gateway: Gateway,
        principal: Principal,
    ) -> None:
        self._ctx = ctx
        self._gateway = gateway
        self._principal = principal
        self._levels = gateway.log_levels

    @property
    def modern(self) -> bool:
        return self._ctx.session.protocol_version in MODERN_PROTOCOL_VERSIONS

    @property
    def client_capabilities(self) -> types.ClientCapabilities | None:
        return self._ctx.session.client_capabilities

    @property
    def wants_progress(self) -> bool:
        meta: Any = self._ctx.meta
        return isinstance(meta, dict) and (
            meta.get("progressToken") is not None or meta.get("progress_token") is not None
        )

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        # Not scrubbed here: every message toward the agent passes the egress scrubber (egress.py).
        await self._ctx.session.report_progress(progress, total, message)

    async def log(self, level: str, data: Any, logger_name: str | None) -> None:
        if not self._levels.wants(session_id(self._ctx), level):
            return
        with warnings.catch_warnings():
            # The logging capability is deprecated in 2026-07-28 but live in 2025-11-25; the SDK gates
            # delivery per era (and per request opt-in), so relaying is right for both.
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await self._ctx.session.send_log_message(
                cast(types.LoggingLevel, level),
                data,
                logger_name,
                related_request_id=self._ctx.request_id,
            )

    async def ask(self, upstream: str, request: ClientBoundRequest) -> types.Result | types.ErrorData:
        """Put ``request`` to the calling client: one governed exchange (``core/asked.py``).

        Raises:
            AuditUnavailable: the intent or outcome could not be recorded (nothing was asked).
        """
        session = self._ctx.session
        can_answer = (
            session.protocol_version not in MODERN_PROTOCOL_VERSIONS
            and session.can_send_request
            and session.check_client_capability(_CAPABILITY[request.method])
        )
        return await ask_agent(
            self._gateway.governor,
            self._gateway.secrets.redactor(),
            self._principal,
            upstream,
            request,
            can_answer=can_answer,
            send=lambda params: self._send(request, params),
        )

    async def _send(
        self, request: ClientBoundRequest, params: dict[str, Any]
    ) -> tuple[str, types.Result | types.ErrorData]:
        related = ServerMessageMetadata(related_request_id=self._ctx.request_id)
        session = self._ctx.session
        try:
            if isinstance(request, types.CreateMessageRequest):
                sampling = types.CreateMessageRequestParams.model_validate(params)
                wants_tools = sampling.tools is not None or sampling.tool_choice is not None
                result_type: type[types.Result] = (
                    types.CreateMessageResultWithTools if wants_tools else types.CreateMessageResult
                )
                sent: types.ServerRequest = types.CreateMessageRequest(params=sampling)
            elif isinstance(request, types.ListRootsRequest):
                sent = types.ListRootsRequest(
                    params=types.RequestParams.model_validate(params) if params else None
                )
                result_type = types.ListRootsResult
            else:
                sent = types.ElicitRequest.model_validate({"method": request.method, "params": params})
                result_type = types.ElicitResult
            return "ok", await session.send_request(sent, result_type, metadata=related)
        except MCPError as exc:
            return "client_error", exc.error
        except Exception as exc:  # the client went away, its answer was malformed, or no back-channel
            return "relay_failed", types.ErrorData(
                code=types.INTERNAL_ERROR, message=f"the agent's client did not answer ({type(exc).__name__})"
            )


@contextmanager
def relaying(ctx: ServerRequestContext[Any, Any], gateway: Gateway, principal: Principal) -> Iterator[None]:
    """While inside, what upstreams say about this request goes to its client (see the module doc)."""
    token = CURRENT_RELAY.set(ClientRelay(ctx, gateway, principal))
    try:
        yield
    finally:
        CURRENT_RELAY.reset(token)
