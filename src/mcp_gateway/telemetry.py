"""Logging and OpenTelemetry set-up: the only module that configures output.

Spans carry the agent, the tool, the decision and the status of a call, never argument values
(see ``gateway.py``), so exporting them cannot leak what an agent sent or what a secret holds.
"""

from __future__ import annotations

import contextlib
import logging
import random
import sys
import threading
import traceback
import weakref
from contextlib import AbstractContextManager
from typing import Any, Literal, Protocol

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.id_generator import IdGenerator
from pydantic import BaseModel, ConfigDict

from mcp_gateway.redact import Redactor


class TelemetrySettings(BaseModel):
    """``telemetry:`` in gateway.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    exporter: Literal["none", "console", "otlp"] = "none"
    endpoint: str | None = None
    """OTLP/HTTP traces endpoint, e.g. ``http://127.0.0.1:4318/v1/traces``."""
    log_level: str = "INFO"


GATEWAY_SCOPE = "mcp_gateway"


class OwnSpansOnly(SpanProcessor):
    """Export only the gateway's own spans.

    Libraries instrumented with OpenTelemetry (the MCP SDK among them) put upstream error messages and
    other untrusted, unredacted text into their spans' status and events; the gateway's spans carry
    only agent, tool, decision and status.
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


class RedactorHolder(Protocol):
    def current_redactor(self) -> Redactor: ...


_holders: weakref.WeakSet[Any] = weakref.WeakSet()
_reentry = threading.local()
_installed: list[bool] = []


def install_log_redaction(holder: RedactorHolder) -> None:
    """Scrub vault values from every log record made in this process, the libraries' included.

    Third-party code logs untrusted text too (the MCP SDK quotes an upstream's unparsable output in
    its validation errors), so redaction happens where records are made: the record factory formats
    the message and any traceback once, scrubs them, and stores the result.
    """
    _holders.add(holder)
    if _installed:
        return
    make_record = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        if getattr(_reentry, "active", False):
            return record
        _reentry.active = True
        try:
            _scrub_record(record, [h.current_redactor() for h in list(_holders)])
        finally:
            _reentry.active = False
        return record

    logging.setLogRecordFactory(factory)
    _installed.append(True)


def _scrub_record(record: logging.LogRecord, redactors: list[Redactor]) -> None:
    redactors = [r for r in redactors if not r.empty]
    if not redactors:
        return
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: leave it to the handler to report
        return
    exc_text = None
    if record.exc_info and record.exc_info[0] is not None:
        exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
    stack = record.stack_info
    for redactor in redactors:
        message = redactor.scrub_text(message)
        exc_text = redactor.scrub_text(exc_text) if exc_text is not None else None
        stack = redactor.scrub_text(stack) if stack is not None else None
    record.msg, record.args = message, None
    if exc_text is not None:
        # Formatters use exc_text when it is set, so the raw exception is never formatted again.
        record.exc_text = exc_text
    record.stack_info = stack


def configure_logging(level: str = "INFO") -> None:
    """Log to stderr in a plain, greppable format."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # pyiceberg announces its file IO choice at INFO on every table load.
    # pyiceberg announces its file IO choice at INFO on every table load; the HTTP clients log every
    # request line at INFO (URLs included).
    for noisy in ("pyiceberg", "httpx", "httpx2"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


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
    provider = TracerProvider(
        resource=Resource.create({"service.name": "mcp-gateway"}), id_generator=PrivateIdGenerator()
    )
    processor = (
        SimpleSpanProcessor(exporter) if settings.exporter == "console" else BatchSpanProcessor(exporter)
    )
    provider.add_span_processor(OwnSpansOnly(processor))
    trace.set_tracer_provider(provider)
    return provider


_tracer = trace.get_tracer(GATEWAY_SCOPE)


def exchange_span(method: str) -> AbstractContextManager[trace.Span]:
    """The span of one governed exchange (``mcp_gateway.<method>``). With no tracer provider a span
    is a no-op that still switches the context twice: then the exchange gets the invalid span."""
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return contextlib.nullcontext(trace.INVALID_SPAN)
    return _tracer.start_as_current_span(f"mcp_gateway.{method}", record_exception=False)
