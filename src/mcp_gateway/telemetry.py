"""Logging and OpenTelemetry set-up: the only module that configures output.

Spans carry the agent, the tool, the decision and the status of a call, never argument values
(see ``gateway.py``), so exporting them cannot leak what an agent sent or what a secret holds.
"""

from __future__ import annotations

import logging
import sys

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)

from mcp_gateway.config import TelemetrySettings


def configure_logging(level: str = "INFO") -> None:
    """Log to stderr in a plain, greppable format."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def configure_tracing(
    settings: TelemetrySettings, *, exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """Install a tracer provider exporting to the console, OTLP/HTTP, or a given exporter.

    Args:
        settings: the ``telemetry`` section of gateway.yaml.
        exporter: an explicit exporter (tests pass an in-memory one); overrides ``settings.exporter``.

    Returns:
        The provider, or None when tracing is off.
    """
    if exporter is None:
        if settings.exporter == "none":
            return None
        if settings.exporter == "console":
            exporter = ConsoleSpanExporter(out=sys.stderr)
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = (
                OTLPSpanExporter(endpoint=settings.endpoint) if settings.endpoint else OTLPSpanExporter()
            )
    provider = TracerProvider(resource=Resource.create({"service.name": "mcp-gateway"}))
    processor = (
        SimpleSpanProcessor(exporter) if settings.exporter == "console" else BatchSpanProcessor(exporter)
    )
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    return provider
