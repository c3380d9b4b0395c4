"""``telemetry:`` in gateway.yaml."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class TelemetrySettings(BaseModel):
    """``telemetry:`` in gateway.yaml. Off (``exporter: none``) by default: then the call path builds
    no span, no attribute and records no metric."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    exporter: Literal["none", "console", "otlp"] = "none"
    """Where spans and metrics go: nowhere, stderr, or an OTLP/HTTP collector."""
    endpoint: str | None = None
    """OTLP/HTTP traces endpoint, e.g. ``http://127.0.0.1:4318/v1/traces``."""
    metrics: bool = True
    """Export metrics too (``mcp.server.operation.duration`` and the gateway's own) with the exporter."""
    metrics_endpoint: str | None = None
    """OTLP/HTTP metrics endpoint; default ``endpoint`` with ``/v1/traces`` replaced by ``/v1/metrics``."""
    metrics_interval_seconds: float = Field(default=60.0, gt=0)
    """How often metrics are exported (and the approval and upstream gauges read)."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    """The gateway's log level (``serve`` and ``quickstart``); ``MCP_GATEWAY_LOG_LEVEL``, when set,
    wins. Any case is accepted."""

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value
