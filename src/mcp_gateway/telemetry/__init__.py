"""Logging and OpenTelemetry: the only package that configures output.

- ``settings``: ``telemetry:`` in gateway.yaml (off by default).
- ``logs``: log output, and vault values scrubbed from every log record of the process.
- ``setup``: tracer and meter providers; libraries' spans are not recorded, only passed through.
- ``exchange``: the span and metrics of one governed exchange, by the MCP semantic conventions.
- ``propagation``: the agent's trace context continued, the gateway's passed to upstreams.
- ``metrics``: ``mcp.server.operation.duration`` and the gateway's own metrics.

Spans and metrics carry names the gateway scrubbed, never argument or answer values, so exporting
them cannot leak what an agent sent or what a secret holds. With telemetry off every recording
function returns after one check.
"""

from __future__ import annotations

from mcp_gateway.telemetry.exchange import ExchangeTrace, trace_exchange
from mcp_gateway.telemetry.logs import (
    RedactorHolder,
    apply_config_level,
    configure_logging,
    install_log_redaction,
)
from mcp_gateway.telemetry.metrics import Watched, audit_committed, redacted, watch_gateway
from mcp_gateway.telemetry.propagation import (
    CURRENT_INBOUND,
    Inbound,
    inbound,
    trace_headers,
)
from mcp_gateway.telemetry.settings import TelemetrySettings
from mcp_gateway.telemetry.setup import (
    OwnSpansOnly,
    PrivateIdGenerator,
    Telemetry,
    configure_metrics,
    configure_telemetry,
    configure_tracing,
    stop_metrics,
)
from mcp_gateway.telemetry.state import GATEWAY_SCOPE

__all__ = [
    "CURRENT_INBOUND",
    "GATEWAY_SCOPE",
    "ExchangeTrace",
    "Inbound",
    "OwnSpansOnly",
    "PrivateIdGenerator",
    "RedactorHolder",
    "Telemetry",
    "TelemetrySettings",
    "Watched",
    "apply_config_level",
    "audit_committed",
    "configure_logging",
    "configure_metrics",
    "configure_telemetry",
    "configure_tracing",
    "inbound",
    "install_log_redaction",
    "redacted",
    "stop_metrics",
    "trace_exchange",
    "trace_headers",
    "watch_gateway",
]
