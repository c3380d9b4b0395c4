"""2026-07-28 multi-round-trip requests through the gateway: an upstream's ``input_required`` answer.

A 2026-07-28 agent gets the upstream's input requests in an ``input_required`` answer of its own, with
a ``requestState`` the gateway seals (``request_state.py``): the upstream's state rides inside it, bound
to this agent, this exchange and its arguments, for one retry. Each input request must be one the
upstream's ``relay_requests`` allows (else the upstream's answer is its error), and one the agent
declared it can answer (else the agent gets -32021 naming the capability, as the spec says a server
must answer). Each round is its own governed exchange, audited with status ``input_required``.

A 2025-11-25 agent never sees this: its upstream calls answer input requests mid-call through the relay.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mcp_types as types

from mcp_gateway.channel import CURRENT_RELAY
from mcp_gateway.core.exchange import Exchange
from mcp_gateway.core.request_state import RequestStates
from mcp_gateway.errors import ProtocolRefusal, UpstreamError

INPUT_REQUIRED = "input_required"
_KIND = {"sampling/createMessage": "sampling", "elicitation/create": "elicitation", "roots/list": "roots"}


def is_input_required(payload: Mapping[str, Any]) -> bool:
    return payload.get("resultType") == INPUT_REQUIRED


def pass_on(
    payload: dict[str, Any],
    exchange: Exchange,
    *,
    upstream: str,
    relay_requests: tuple[str, ...],
    states: RequestStates,
) -> tuple[dict[str, Any], str]:
    """The agent's ``input_required`` answer for an upstream's one, its state sealed by the gateway.

    Raises:
        UpstreamError: the upstream asked for something its ``relay_requests`` does not allow, or its
            answer is not a well-formed ``input_required`` result.
        ProtocolRefusal: -32021, the agent did not declare a capability the requests need.
    """
    requests = payload.get("inputRequests") or {}
    if not isinstance(requests, dict):
        raise UpstreamError(f"upstream `{upstream}` answered a malformed input_required result")
    needed: dict[str, Any] = {}
    for request in requests.values():
        method = request.get("method") if isinstance(request, dict) else None
        kind = _KIND.get(method) if isinstance(method, str) else None
        if kind is None:
            raise UpstreamError(f"upstream `{upstream}` asked the agent for something unknown")
        if kind not in relay_requests:
            setting = f"upstreams.{upstream}.relay_requests"
            raise UpstreamError(
                f"upstream `{upstream}` asked the agent for {kind}, which `{setting}` does not allow"
            )
        needed[kind] = {}
    relay = CURRENT_RELAY.get()
    declared = relay.client_capabilities if relay is not None else None
    have = declared.model_dump(by_alias=True, exclude_none=True) if declared is not None else {}
    missing = {kind: value for kind, value in needed.items() if kind not in have}
    if missing:
        raise ProtocolRefusal(
            f"this request needs the client capabilities {sorted(missing)}, which the client did not declare",
            code=types.MISSING_REQUIRED_CLIENT_CAPABILITY,
            data={"requiredCapabilities": missing},
        )
    upstream_state = payload.get("requestState")
    token = states.seal(
        exchange.principal,
        exchange.method,
        exchange.target,
        exchange.arguments,
        upstream_state if isinstance(upstream_state, str) else None,
    )
    return {**payload, "requestState": token}, INPUT_REQUIRED
