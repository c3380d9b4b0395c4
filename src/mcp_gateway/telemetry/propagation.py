"""Trace context in and out: the agent's trace continued, the gateway's passed on to upstreams.

In: the face says what it knows of the request being served (protocol version, session, JSON-RPC
id, the agent's ``traceparent`` from ``params._meta`` or the HTTP header) with ``inbound``, around
its dispatch; the exchanges the request starts read it (``CURRENT_INBOUND``).

Out: ``trace_headers`` is the W3C ``traceparent`` (and ``tracestate``) of the current span, for the
lean forwarder's HTTP header and ``_meta`` and the SDK client's HTTP header; the SDK client injects
the same into ``_meta`` itself. Library tracers record nothing and pass the context through
(``setup.GatewayTracerProvider``), so what an upstream receives names the gateway's span.

Only the W3C ``traceparent`` crosses the gateway from an agent: its ``tracestate`` and ``baggage``
are neither read nor forwarded (``configure_tracing`` installs a trace-context-only propagator).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from mcp_gateway.telemetry.state import STATE

W3C = TraceContextTextMapPropagator()
# Only the agent's traceparent is read: its tracestate (free text an agent chooses) would reach every
# upstream, a channel no policy governs.
_CARRIED = ("traceparent",)


@dataclass(frozen=True, slots=True)
class Inbound:
    """What the face knows of the request being served (values as the agent sent them)."""

    protocol_version: str | None = None
    session_id: str | None = None
    request_id: str | int | None = None
    parent: Context | None = None
    """The agent's trace context, when it sent a valid one."""


CURRENT_INBOUND: ContextVar[Inbound | None] = ContextVar("mcp_gateway_inbound", default=None)


def inbound(
    *,
    protocol_version: str | None,
    session_id: str | None = None,
    request_id: str | int | None = None,
    meta: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | Sequence[tuple[bytes, bytes]] | None = None,
) -> contextlib.AbstractContextManager[None]:
    """Mark the request being served for the exchanges it starts (the face calls this around the core).

    Args:
        protocol_version: the request's MCP protocol version.
        session_id: its ``Mcp-Session-Id`` (2025-11-25 only).
        request_id: its JSON-RPC id.
        meta: its ``params._meta``; a ``traceparent`` there wins over the header's.
        headers: its HTTP headers (a mapping with lower-case lookups, or the ASGI scope's list).

    With telemetry off nothing is read or set.
    """
    if STATE.off:
        return contextlib.nullcontext()
    return _marked(Inbound(protocol_version, session_id, request_id, _parent(meta, headers)))


@contextlib.contextmanager
def _marked(facts: Inbound) -> Iterator[None]:
    token = CURRENT_INBOUND.set(facts)
    try:
        yield
    finally:
        CURRENT_INBOUND.reset(token)


def _parent(
    meta: Mapping[str, Any] | None, headers: Mapping[str, str] | Sequence[tuple[bytes, bytes]] | None
) -> Context | None:
    for carrier in (_from_meta(meta), _from_headers(headers)):
        if carrier:
            context = W3C.extract(carrier)
            if trace.get_current_span(context).get_span_context().is_valid:
                return context
    return None


def _from_meta(meta: Mapping[str, Any] | None) -> dict[str, str]:
    if not meta:
        return {}
    return {key: value for key in _CARRIED if isinstance(value := meta.get(key), str)}


def _from_headers(headers: Mapping[str, str] | Sequence[tuple[bytes, bytes]] | None) -> dict[str, str]:
    if not headers:
        return {}
    if isinstance(headers, Mapping):
        return {key: value for key in _CARRIED if isinstance(value := headers.get(key), str)}
    wanted = {key.encode(): key for key in _CARRIED}
    return {
        wanted[name.lower()]: value.decode("latin-1") for name, value in headers if name.lower() in wanted
    }


def trace_headers() -> dict[str, str] | None:
    """``traceparent`` (and ``tracestate``) of the current span for an upstream request; None when
    tracing is off or there is no span."""
    if not STATE.tracing:
        return None
    carrier: dict[str, str] = {}
    W3C.inject(carrier)
    return carrier or None
