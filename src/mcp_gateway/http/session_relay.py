"""What an upstream says to a 2025-11-25 agent while the gateway serves one of its session's requests.

``SessionRelay`` is the ``CallRelay`` (``channel.py``) of one request in a session; the upstream
connection hands it what the upstream sends about that request, and it goes on that request's answer
(``reply.py``: the answer becomes an SSE stream):

- progress, when the request carried a progress token;
- log messages, at or above the level the session asked for with ``logging/setLevel``
  (``core/log_levels.py``);
- requests to the client (``sampling/createMessage``, ``elicitation/create``, ``roots/list``), only from
  an upstream whose config lists them in ``relay_requests`` (off by default: a sampling request puts
  upstream text in front of the agent's model, an elicitation puts it in front of its human). Each
  passes the governed skeleton as ``<upstream>:<method>`` (``core/asked.py``): limits, an in-flight
  slot of its own, the agent's quota, a durable ``intent`` with the scrubbed request before the agent
  is asked (no audit, no relay), an ``outcome`` with a digest of the answer after. It goes only to a
  client that declared the capability; the client POSTs its response back on the session
  (``session.py`` matches it). Anything else answers the upstream with an error (audited as
  ``denied``).

Every message passes the egress scrubber on its way out (``egress.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import mcp_types as types
from pydantic import ValidationError

from mcp_gateway.channel import ClientBoundRequest
from mcp_gateway.core.asked import ask_agent
from mcp_gateway.core.gateway import Gateway
from mcp_gateway.http.reply import Reply
from mcp_gateway.http.session import Session
from mcp_gateway.types import Principal

_CAPABILITY: Final = {
    "sampling/createMessage": "sampling",
    "elicitation/create": "elicitation",
    "roots/list": "roots",
}


class SessionRelay:
    """Relays an upstream's messages about one session request to its client (see the module doc)."""

    modern = False

    def __init__(
        self, gateway: Gateway, principal: Principal, session: Session, meta: Mapping[str, Any], reply: Reply
    ) -> None:
        self._gateway = gateway
        self._principal = principal
        self._session = session
        self._reply = reply
        token = meta.get("progressToken")
        self._token = token if isinstance(token, int | str) and not isinstance(token, bool) else None

    @property
    def wants_progress(self) -> bool:
        return self._token is not None

    @property
    def client_capabilities(self) -> types.ClientCapabilities | None:
        return self._session.client_capabilities

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        if self._token is None:
            return
        params: dict[str, Any] = {"progressToken": self._token, "progress": progress}
        if total is not None:
            params["total"] = total
        if message is not None:
            params["message"] = message
        await self._reply.notify({"jsonrpc": "2.0", "method": "notifications/progress", "params": params})

    async def log(self, level: str, data: Any, logger_name: str | None) -> None:
        if not self._gateway.log_levels.wants(self._session.id, level):
            return
        params: dict[str, Any] = {"level": level, "data": data}
        if logger_name is not None:
            params["logger"] = logger_name
        await self._reply.notify({"jsonrpc": "2.0", "method": "notifications/message", "params": params})

    async def ask(self, upstream: str, request: ClientBoundRequest) -> types.Result | types.ErrorData:
        """Put ``request`` to the calling client: one governed exchange (``core/asked.py``).

        Raises:
            AuditUnavailable: the intent or outcome could not be recorded (nothing was asked).
        """
        declared = self._session.client_capabilities
        field = _CAPABILITY.get(request.method)
        can_answer = field is not None and getattr(declared, field, None) is not None
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
        session = self._session
        message, arrived = session.new_request(request.method, params or None)
        try:
            await self._reply.notify(message)
            await arrived.wait()
            answer = session.answered(message["id"])
        finally:
            session.forget_request(message["id"])
        if answer is None:
            return "relay_failed", _failed("the session ended")
        error = answer.get("error")
        if error is not None:
            try:
                return "client_error", types.ErrorData.model_validate(error)
            except ValidationError:
                return "relay_failed", _failed("malformed error")
        try:
            return "ok", _result_type(request, params).model_validate(answer.get("result"), by_name=False)
        except ValidationError:
            return "relay_failed", _failed("malformed answer")


def _result_type(request: ClientBoundRequest, params: dict[str, Any]) -> type[types.Result]:
    if isinstance(request, types.CreateMessageRequest):
        wants_tools = params.get("tools") is not None or params.get("toolChoice") is not None
        return types.CreateMessageResultWithTools if wants_tools else types.CreateMessageResult
    if isinstance(request, types.ListRootsRequest):
        return types.ListRootsResult
    return types.ElicitResult


def _failed(why: str) -> types.ErrorData:
    return types.ErrorData(code=types.INTERNAL_ERROR, message=f"the agent's client did not answer ({why})")
