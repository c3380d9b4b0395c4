"""A lean ``tools/call`` to a stateless (2026-07-28) Streamable HTTP upstream: one pooled POST.

The SDK client's generic path costs milliseconds of CPU per call (request models, the session's
dispatcher, response models that the gateway then dumps back to JSON, and httpx, itself the largest
part of it). For the one request
the hot path sends, to an upstream that speaks the stateless era, none of that is needed: a
self-contained POST with the era's headers and ``_meta`` envelope, and the JSON-RPC answer parsed as
plain data. Everything else (listing, resources, prompts, subscriptions, calls whose client asked
for progress) stays on the SDK client. The answer is validated as a ``CallToolResult`` by the gateway
after redaction, as every upstream answer is.

Only used when the SDK client negotiated a modern protocol version with this upstream, over HTTP,
with the same resolved headers (the gateway's credentials; never the agent's token). The HTTP client
is ``lean_http.LeanHttpClient``: pooled connections, httptools framing, the SSRF check on every new
connection, a fraction of a general client's CPU per request.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from mcp.shared.inbound import encode_header_value
from mcp_types import MISSING_REQUIRED_CLIENT_CAPABILITY, URL_ELICITATION_REQUIRED

from mcp_gateway import __version__, wire
from mcp_gateway.connectors.mcp.http_client import HttpFailure, LeanHttpClient
from mcp_gateway.errors import ProtocolRefusal, UpstreamError
from mcp_gateway.telemetry import trace_headers

_ACCEPT = "application/json, text/event-stream"
_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"

PASSED_THROUGH = frozenset({MISSING_REQUIRED_CLIENT_CAPABILITY, URL_ELICITATION_REQUIRED})
"""Upstream JSON-RPC errors that reach the agent as the same error (code, message, data), not as a
tool result: they tell the agent's client what it must do (declare a capability, open a URL)."""


class FastToolCaller:
    """Sends ``tools/call`` to one stateless HTTP upstream over a pooled connection.

    Args:
        name: the upstream's name (for error messages).
        url: its MCP endpoint.
        headers: the resolved headers from config (credentials injected by the gateway).
        protocol_version: the modern version the SDK client negotiated.
        timeout: seconds per call.
        allow_private_network: the upstream's setting (else a blocked address is refused per connection).

    Raises:
        HttpFailure: the URL or a configured header cannot be sent by the lean client.
    """

    def __init__(
        self,
        name: str,
        url: str,
        headers: Mapping[str, str],
        protocol_version: str,
        timeout: float,
        *,
        allow_private_network: bool = False,
    ) -> None:
        self.name = name
        self._url = url
        self._version = protocol_version
        self._ids = itertools.count(1)
        fixed = {
            **headers,
            "Content-Type": "application/json",
            "Accept": _ACCEPT,
            "MCP-Protocol-Version": protocol_version,
            "Mcp-Method": "tools/call",
        }
        self._envelope = {
            "io.modelcontextprotocol/protocolVersion": protocol_version,
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "mcp-gateway", "version": __version__},
        }
        self._http = LeanHttpClient(url, fixed, timeout=timeout, allow_private_network=allow_private_network)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def call(
        self,
        tool: str,
        arguments: Mapping[str, Any],
        *,
        capabilities: Mapping[str, Any] | None = None,
        input_responses: Mapping[str, Any] | None = None,
        request_state: str | None = None,
    ) -> dict[str, Any]:
        """The upstream's answer (a ``CallToolResult``, or an ``input_required`` one) as JSON-ready data.

        Args:
            tool, arguments: the call.
            capabilities: the client capabilities to declare for this call (the agent's, as far as
                the upstream's ``relay_requests`` allows); default none.
            input_responses, request_state: resume an ``input_required`` round.

        Raises:
            UpstreamError: the network failed, the upstream answered an HTTP or JSON-RPC error, or its
                answer is not a JSON-RPC response to this request.
            ProtocolRefusal: a JSON-RPC error the agent must get as it is (``PASSED_THROUGH``).
        """
        request_id = next(self._ids)
        envelope = (
            self._envelope if not capabilities else {**self._envelope, _CAPABILITIES: dict(capabilities)}
        )
        headers = {"Mcp-Name": encode_header_value(tool)}
        traced = trace_headers()  # None unless tracing is on
        if traced is not None:
            # The gateway's span as the upstream's parent: the W3C header, and in _meta as MCP has it.
            envelope = {**envelope, **traced}
            headers |= traced
        params: dict[str, Any] = {"name": tool, "arguments": dict(arguments), "_meta": envelope}
        if input_responses is not None:
            params["inputResponses"] = dict(input_responses)
        if request_state is not None:
            params["requestState"] = request_state
        body = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}
        try:
            answer = await self._http.post(wire.dumps(body), headers)
        except HttpFailure as exc:
            raise UpstreamError(f"upstream `{self.name}` failed: {exc}") from None
        status, content_type, raw = answer.status, answer.headers.get("content-type", ""), answer.body
        message = _answer(self.name, status, content_type, raw, request_id)
        if "error" in message:
            error = message["error"] if isinstance(message["error"], dict) else {}
            code, text = error.get("code"), str(error.get("message", ""))[:500]
            if code in PASSED_THROUGH:
                raise ProtocolRefusal(text, code=code, data=error.get("data"))
            raise UpstreamError(f"upstream `{self.name}` error {code}: {text}")
        result = message.get("result")
        if not isinstance(result, dict) or not isinstance(result.get("resultType"), str):
            # As the SDK client refuses it: a 2026-07-28 result must say what it is.
            raise UpstreamError(f"upstream `{self.name}` answered garbage")
        return result


def _answer(name: str, status: int, content_type: str, raw: bytes, request_id: int) -> dict[str, Any]:
    """The JSON-RPC message answering ``request_id`` in a JSON or SSE body."""
    if status != 200:
        # A JSON-RPC error may come with a 4xx status (the stateless era maps some errors to HTTP).
        try:
            parsed = wire.loads(raw)
        except (ValueError, RecursionError):
            parsed = None
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            return parsed
        raise UpstreamError(f"upstream `{name}` answered HTTP {status}")
    try:
        if content_type.startswith("text/event-stream"):
            # Notifications before the answer (progress, logs) are dropped: calls that asked for
            # progress do not take this path.
            for line in raw.decode("utf-8").splitlines():
                if line.startswith("data:"):
                    message = wire.loads(line[5:])
                    if isinstance(message, dict) and message.get("id") == request_id:
                        return message
            raise UpstreamError(f"upstream `{name}` answered garbage")
        message = wire.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nesting too deep for the parser
        raise UpstreamError(f"upstream `{name}` answered garbage") from None
    if not isinstance(message, dict) or message.get("id") != request_id:
        raise UpstreamError(f"upstream `{name}` answered garbage")
    return message
