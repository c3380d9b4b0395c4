"""Tracer and meter providers: the only place spans and metrics are given somewhere to go."""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagate import set_global_textmap
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.id_generator import IdGenerator

from mcp_gateway.telemetry.metrics import Instruments
from mcp_gateway.telemetry.propagation import W3C
from mcp_gateway.telemetry.settings import TelemetrySettings
from mcp_gateway.telemetry.state import GATEWAY_SCOPE, STATE

_RESOURCE = {"service.name": "mcp-gateway"}


class OwnSpansOnly(SpanProcessor):
    """Export only the gateway's own spans.

    Libraries instrumented with OpenTelemetry (the MCP SDK among them) put upstream error messages and
    other untrusted, unredacted text into their spans' status and events; the gateway's spans carry
    only names and values it scrubbed. (``GatewayTracerProvider`` already gives libraries a tracer
    that records nothing; this stays as a second guard.)
    """

    def __init__(self, inner: SpanProcessor) -> None:
        self._inner = inner

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if _own(span):
            self._inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if _own(span):
            self._inner.on_end(span)

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


def _own(span: ReadableSpan) -> bool:
    scope = span.instrumentation_scope
    return scope is not None and scope.name == GATEWAY_SCOPE


class GatewayTracerProvider(TracerProvider):
    """Records the gateway's spans only. Any other library (the MCP SDK client among them) gets a
    no-op tracer, whose spans are not recorded and carry their parent's context: what the SDK client
    injects into an upstream's ``_meta`` is then the gateway's span, and an exported trace has no hole
    where an unexported library span would be. (Library spans also carry upstream error text the
    gateway has not scrubbed.)"""

    def get_tracer(self, instrumenting_module_name: str, *args: Any, **kwargs: Any) -> trace.Tracer:
        if instrumenting_module_name != GATEWAY_SCOPE:
            return trace.NoOpTracer()
        return super().get_tracer(instrumenting_module_name, *args, **kwargs)


class PrivateIdGenerator(IdGenerator):
    """Trace and span ids from the gateway's own PRNG instead of the ``random`` module's shared state
    (OpenTelemetry's default), which every other library in the process draws from and may seed."""

    def __init__(self) -> None:
        self._random = random.Random()  # noqa: S311 - ids must be unique, not secret

    def generate_span_id(self) -> int:
        span_id = self._random.getrandbits(64)
        while span_id == trace.INVALID_SPAN_ID:
            span_id = self._random.getrandbits(64)
        return span_id

    def generate_trace_id(self) -> int:
        trace_id = self._random.getrandbits(128)
        while trace_id == trace.INVALID_TRACE_ID:
            trace_id = self._random.getrandbits(128)
        return trace_id


def configure_tracing(
    settings: TelemetrySettings, *, exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """Install a tracer provider exporting to the console, OTLP/HTTP, or a given exporter.

    OpenTelemetry allows one tracer provider per process: a second call returns the new provider,
    but spans keep going to the first.

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
    provider = GatewayTracerProvider(resource=Resource.create(_RESOURCE), id_generator=PrivateIdGenerator())
    processor = (
        SimpleSpanProcessor(exporter) if settings.exporter == "console" else BatchSpanProcessor(exporter)
    )
    provider.add_span_processor(OwnSpansOnly(processor))
    trace.set_tracer_provider(provider)
    # Trace context only: an agent's baggage is not the gateway's to pass on to upstreams.
    set_global_textmap(W3C)
    STATE.set(tracing=True, instruments=STATE.instruments)
    return provider


def configure_metrics(
    settings: TelemetrySettings, *, reader: MetricReader | None = None
) -> MeterProvider | None:
    """Record the gateway's metrics and export them to the console, OTLP/HTTP, or a given reader.

    Unlike tracing this can be called again (tests do): the newest provider's instruments are used.

    Args:
        settings: the ``telemetry`` section of gateway.yaml.
        reader: an explicit reader (tests pass an in-memory one); overrides ``settings.exporter``.

    Returns:
        The provider (shut it down at exit), or None when metrics are off.
    """
    if reader is None:
        exporter = _metric_exporter(settings)
        if exporter is None:
            return None
        reader = PeriodicExportingMetricReader(
            exporter, export_interval_millis=settings.metrics_interval_seconds * 1000
        )
    # No exemplars: sampling one per measurement costs more CPU than the measurement itself.
    provider = MeterProvider(
        metric_readers=[reader],
        resource=Resource.create(_RESOURCE),
        exemplar_filter=AlwaysOffExemplarFilter(),
    )
    STATE.set(tracing=STATE.tracing, instruments=Instruments(provider.get_meter(GATEWAY_SCOPE)))
    return provider


def stop_metrics(provider: MeterProvider | None) -> None:
    """Stop recording metrics and shut ``provider`` down (its last metrics are exported)."""
    STATE.set(tracing=STATE.tracing, instruments=None)
    if provider is not None:
        provider.shutdown()


def _metric_exporter(settings: TelemetrySettings) -> MetricExporter | None:
    if settings.exporter == "none" or not settings.metrics:
        return None
    if settings.exporter == "console":
        return ConsoleMetricExporter(out=sys.stderr)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    endpoint = settings.metrics_endpoint
    if endpoint is None and settings.endpoint is not None and settings.endpoint.endswith("/v1/traces"):
        endpoint = settings.endpoint.removesuffix("/v1/traces") + "/v1/metrics"
    return OTLPMetricExporter(endpoint=endpoint) if endpoint else OTLPMetricExporter()


@dataclass
class Telemetry:
    """What ``configure_telemetry`` installed; ``shutdown`` flushes and stops it."""

    tracer_provider: TracerProvider | None
    meter_provider: MeterProvider | None

    def shutdown(self) -> None:
        stop_metrics(self.meter_provider)
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()


def configure_telemetry(settings: TelemetrySettings) -> Telemetry:
    """Tracing and metrics as ``settings`` says (both off by default)."""
    return Telemetry(configure_tracing(settings), configure_metrics(settings))
