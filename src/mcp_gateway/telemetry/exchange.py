"""The span and the metrics of one governed exchange, by the MCP semantic conventions.

The span is named ``{mcp.method.name} {target}`` (the tool or prompt name; the method alone for
anything else) and carries ``mcp.method.name``, ``gen_ai.tool.name`` and
``gen_ai.operation.name=execute_tool`` (``tools/call``), ``gen_ai.prompt.name`` (``prompts/get``),
``mcp.resource.uri`` (resources), ``mcp.protocol.version``, ``mcp.session.id`` (2025-11-25),
``jsonrpc.request.id``, ``error.type`` on failure, and the gateway's ``mcp_gateway.agent``,
``mcp_gateway.decision`` and ``mcp_gateway.status``. Every string value the agent or an upstream
could have chosen passes the exchange's redactor first: a vault value sent as a tool name, a URI or
a request id reaches no span, span name or metric. No argument or answer value is ever recorded.

With telemetry off ``trace_exchange`` returns one shared do-nothing object: nothing is built.
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from mcp_gateway.errors import CallRefused, ProtocolRefusal, UpstreamError
from mcp_gateway.redact import Redactor
from mcp_gateway.telemetry.propagation import CURRENT_INBOUND
from mcp_gateway.telemetry.state import GATEWAY_SCOPE, STATE

RELAYED = frozenset({"sampling/createMessage", "elicitation/create", "roots/list"})
"""Requests an upstream puts to the agent's client through the gateway."""
_MAX_VALUE = 256  # an agent-chosen string (request id, protocol version) is cut to this

_tracer = trace.get_tracer(GATEWAY_SCOPE)


class ExchangeTrace:
    """What the governed skeleton tells telemetry about one exchange; this one records nothing."""

    __slots__ = ()

    def refused(self, kind: str) -> None:
        """The gateway refused the exchange (``kind``: the refusal's ``CallRefused.kind``)."""

    def parked(self) -> None:
        """The exchange waits for a human."""

    def answered(self, result: object) -> None:
        """The exchange was answered (an ``isError`` answer counts as a ``tool_error``)."""

    def __enter__(self) -> ExchangeTrace:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


OFF = ExchangeTrace()


def trace_exchange(
    method: str, target: str, *, agent: str, label: str | None, redactor: Redactor
) -> ExchangeTrace:
    """The telemetry of one governed exchange; use it as a context manager around the whole exchange.

    Args:
        method: the MCP method.
        target: the exchange's target as the audit shows it (already scrubbed): a tool name for
            ``tools/call``.
        agent: the agent's id.
        label: what the agent named (a prompt name, a URI), not yet scrubbed.
        redactor: the exchange's redactor.
    """
    if STATE.off:
        return OFF
    return _Traced(method, target, agent, label, redactor)


class _Traced(ExchangeTrace):
    __slots__ = ("_attributes", "_decision", "_error", "_method", "_named", "_span", "_started", "_token")

    def __init__(self, method: str, target: str, agent: str, label: str | None, redactor: Redactor) -> None:
        self._method = method
        self._decision: str | None = None
        self._error: str | None = None
        self._span: trace.Span | None = None
        self._token: object = None
        attributes: dict[str, Any] = {"mcp.method.name": method}
        named: dict[str, str] = {}
        name = method
        if method == "tools/call":
            named = {"gen_ai.tool.name": target}
            attributes["gen_ai.operation.name"] = "execute_tool"
            name = f"{method} {target}"
        elif label is not None and method == "prompts/get":
            prompt = redactor.scrub_text(label[:_MAX_VALUE])
            named = {"gen_ai.prompt.name": prompt}
            name = f"{method} {prompt}"
        elif label is not None and method.startswith("resources/"):
            attributes["mcp.resource.uri"] = redactor.scrub_text(label[:_MAX_VALUE])
        facts = CURRENT_INBOUND.get()
        parent = None
        if facts is not None:
            if facts.protocol_version is not None:
                attributes["mcp.protocol.version"] = _scrubbed(facts.protocol_version, redactor)
            parent = facts.parent
        # Metric attributes: the low-cardinality ones (no agent, session, request id or URI).
        self._attributes = dict(attributes)
        self._named = named
        self._started = time.perf_counter()
        if not STATE.tracing:
            return
        attributes |= named
        attributes["mcp_gateway.agent"] = agent
        if facts is not None:
            if facts.session_id is not None:
                attributes["mcp.session.id"] = _scrubbed(facts.session_id, redactor)
            if facts.request_id is not None:
                attributes["jsonrpc.request.id"] = _scrubbed(str(facts.request_id), redactor)
        kind = SpanKind.CLIENT if method in RELAYED else SpanKind.SERVER
        self._span = _tracer.start_span(name, context=parent, kind=kind, attributes=attributes)
        self._token = otel_context.attach(trace.set_span_in_context(self._span))

    def refused(self, kind: str) -> None:
        self._decision, self._error = "deny", kind

    def parked(self) -> None:
        self._decision = "pending"

    def answered(self, result: object) -> None:
        self._decision = "allow"
        if getattr(result, "is_error", False):
            self._error = "tool_error"

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None and self._decision is None:
            self._error = _error_type(exc)
            if isinstance(exc, UpstreamError | ProtocolRefusal):
                self._decision = "allow"  # raised by the act, after the exchange was allowed
        instruments = STATE.instruments
        if instruments is not None:
            attributes = self._attributes
            if self._decision != "deny":
                attributes |= self._named
            if self._error is not None:
                attributes["error.type"] = self._error
            instruments.duration.record(time.perf_counter() - self._started, attributes)
            if self._decision is not None:
                counted = {"mcp_gateway.decision": self._decision, "mcp.method.name": self._method}
                if self._decision == "deny" and self._error is not None:
                    counted["error.type"] = self._error
                instruments.decisions.add(1, counted)
        span = self._span
        if span is None:
            return
        if self._decision is not None:
            span.set_attribute("mcp_gateway.decision", self._decision)
        status = self._status()
        span.set_attribute("mcp_gateway.status", status)
        if self._error is not None:
            span.set_attribute("error.type", self._error)
            span.set_status(StatusCode.ERROR)  # no description: it could quote an upstream
        span.end()
        otel_context.detach(self._token)  # type: ignore[arg-type]

    def _status(self) -> str:
        if self._decision == "pending":
            return "pending_approval"
        if self._error == "tool_error":
            return "error"
        return self._error or "ok"


def _scrubbed(value: str, redactor: Redactor) -> str:
    return redactor.scrub_text(value[:_MAX_VALUE])


def _error_type(exc: BaseException) -> str:
    """``error.type`` of an exchange that raised: a refusal's kind, a JSON-RPC code, or a class name."""
    if isinstance(exc, CallRefused):
        return exc.kind
    if isinstance(exc, ProtocolRefusal):
        return str(exc.code)
    if isinstance(exc, UpstreamError):
        return "upstream_error"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return type(exc).__qualname__
