"""An upstream's request to the agent (sampling, elicitation, roots) through the governed skeleton.

Whichever path serves the agent's call (the SDK session, the lean path), what the upstream asks of the
agent is one exchange: authorized by the upstream's ``relay_requests`` (its connection asks only for
those), refused and audited when the agent's client cannot answer (another era, no back-channel, the
capability not declared), limited, given an in-flight slot of its own, counted against the agent's
quota, recorded (intent before the agent is asked, outcome after), scrubbed of vault values.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import mcp_types as types
from pydantic import BaseModel, ConfigDict

from mcp_gateway.channel import ClientBoundRequest
from mcp_gateway.core.exchange import Exchange, Granted, ResultRule
from mcp_gateway.core.governed import Governor
from mcp_gateway.errors import AuditUnavailable, CallRefused, UpstreamError
from mcp_gateway.redact import Redactor
from mcp_gateway.types import Decision, Principal

Send = Callable[[dict[str, Any]], Awaitable[tuple[str, types.Result | types.ErrorData]]]
"""Puts the (scrubbed) request params to the agent's client: ``(status, answer)``."""


class ClientCannotAnswer(CallRefused):
    """The agent's client cannot answer a relayed request (another era, no back-channel, or the
    capability not declared)."""

    kind = "client_cannot_answer"


class _Answer(BaseModel):
    """Whatever the agent's client answered (the SDK validated it as the request's result type)."""

    model_config = ConfigDict(extra="allow")


_ANSWER = ResultRule(_Answer)


async def ask_agent(
    governor: Governor,
    redactor: Redactor,
    principal: Principal,
    upstream: str,
    request: ClientBoundRequest,
    *,
    can_answer: bool,
    send: Send,
) -> types.Result | types.ErrorData:
    """Put ``request`` to the agent's client as one governed exchange; its answer, or an error for
    the upstream.

    Raises:
        AuditUnavailable: the intent or outcome could not be recorded (nothing was asked).
    """
    method = request.method
    dumped = (
        request.params.model_dump(by_alias=True, mode="json", exclude_none=True) if request.params else {}
    )
    params, _ = redactor.scrub_json(dumped)
    exchange = Exchange(
        principal, method, f"{upstream}:{method}", params, "request", where="the agent's client"
    )
    answers: list[types.Result | types.ErrorData] = []

    def prepare(_: Exchange) -> None:
        if not can_answer:
            raise ClientCannotAnswer(f"the agent's client cannot answer {method} through the gateway")

    async def act(_: Granted) -> tuple[dict[str, Any], str]:
        status, answer = await send(params)
        answers.append(answer)
        return answer.model_dump(by_alias=True, mode="json", exclude_none=True), status

    def allow(_: Exchange) -> Decision:
        return Decision("allow", (f"upstreams.{upstream}.relay_requests",), ())

    try:
        await governor.run(
            exchange, act, _ANSWER, prepare=prepare, authorize=allow, slot=f"{principal.agent} <- {upstream}"
        )
    except AuditUnavailable:
        raise
    except (CallRefused, UpstreamError) as exc:
        return types.ErrorData(code=types.INVALID_REQUEST, message=str(exc))
    return answers[0]
