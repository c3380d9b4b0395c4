"""What an upstream says to the agent while it serves one of the agent's requests.

``relaying`` puts a ``ClientRelay`` in ``CURRENT_RELAY`` for the request being served; the upstream
connection hands it what the upstream sends about that request:

- progress and log notifications, scrubbed of vault values, to the calling client's session;
- requests to the client (``sampling/createMessage``, ``elicitation/create``), only from an upstream
  whose config lists them in ``relay_requests`` (off by default: a sampling request puts upstream text
  in front of the agent's model, an elicitation puts it in front of its human). Each is audited like a
  call, as ``<upstream>:<method>``: a durable ``intent`` with the scrubbed request before the agent is
  asked (no audit, no relay), an ``outcome`` with a digest of the answer after. It goes only to a
  2025-11-25 session whose client declared the capability, on the stream of the request it belongs
  to; anything else answers the upstream with an error (audited as ``denied``).
"""

from __future__ import annotations

import json
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from mcp_gateway.audit.record import digest
from mcp_gateway.channel import CURRENT_RELAY, ClientBoundRequest
from mcp_gateway.core.gateway import Gateway
from mcp_gateway.types import AuditEvent, Principal

_LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
_CAPABILITY = {
    "sampling/createMessage": types.ClientCapabilities(sampling=types.SamplingCapability()),
    "elicitation/create": types.ClientCapabilities(elicitation=types.ElicitationCapability()),
}


class ClientRelay:
    """Relays an upstream's messages about one request to the client that made it."""

    def __init__(self, ctx: ServerRequestContext[Any, Any], gateway: Gateway, principal: Principal) -> None:
        self._ctx = ctx
        self._gateway = gateway
        self._principal = principal

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
        if level not in _LOG_LEVELS:
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
        """Put ``request`` to the calling client; its answer, or an error for the upstream.

        Raises:
            AuditUnavailable: the intent could not be recorded (nothing was asked).
        """
        method = request.method
        session = self._ctx.session
        common: dict[str, Any] = {
            "call_id": uuid.uuid4().hex,
            "agent": self._principal.agent,
            "tool": f"{upstream}:{method}",
        }
        if (
            session.protocol_version in MODERN_PROTOCOL_VERSIONS
            or not session.can_send_request
            or not session.check_client_capability(_CAPABILITY[method])
        ):
            await self._gateway.audit.append(
                AuditEvent(kind="denied", decision="deny", status="client_cannot_answer", **common)
            )
            return types.ErrorData(
                code=types.INVALID_REQUEST,
                message=f"the agent's client cannot answer {method} through the gateway",
            )
        params, redactions = self._gateway.secrets.redactor().scrub_json(
            request.params.model_dump(by_alias=True, mode="json", exclude_none=True)
        )
        recorded: dict[str, Any] = params
        if len(json.dumps(params, separators=(",", ":"))) > self._gateway.limits.max_argument_bytes:
            # What the upstream asked is evidence, but an upstream must not be able to bloat the log.
            recorded = {"_omitted": "above limits.max_argument_bytes", "params_digest": digest(params)}
        # Durable before the agent is asked: no audit, no relay (AuditUnavailable propagates).
        await self._gateway.audit.append(
            AuditEvent(
                kind="intent",
                decision="allow",
                args=recorded,
                detail={"token_id": self._principal.token_id, "redactions": redactions},
                **common,
            )
        )
        started = time.perf_counter()
        status, answer = await self._send(request, params)
        latency = {"latency_ms": round((time.perf_counter() - started) * 1000, 3)}
        detail = latency | (
            {"result_digest": digest(answer.model_dump(mode="json"))} if status == "ok" else {}
        )
        await self._gateway.audit.append(
            AuditEvent(kind="outcome", decision="allow", status=status, detail=detail, **common)
        )
        return answer

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
