"""Spans, metrics and trace propagation through a real gateway: the official SDK client as the agent,
a real Streamable HTTP upstream that records the ``traceparent`` it received, the SDK's in-memory
span exporter and metric reader."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from traced_upstream import Seen, traced_upstream

from conftest import ERA_VERSION, GatewayFactory, RunningGateway, connect
from mcp_gateway.app.observed import watched
from mcp_gateway.telemetry import TelemetrySettings, configure_metrics, stop_metrics, watch_gateway

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

AGENT_TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
AGENT_SPAN = 0x00F067AA0BA902B7
SECRET = "vault-secret-value-789"

POLICY = """\
version: 1
agents:
  agent-a:
    grants:
      - tool: traced.trace_seen
        args:
          text: {max_length: 30}
      - tool: "resource:traced:note://*"
      - tool: prompt:traced.greet
"""


@pytest.fixture
def metric_reader() -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    provider = configure_metrics(TelemetrySettings(), reader=reader)
    yield reader
    stop_metrics(provider)


@pytest.fixture
def upstream() -> Iterator[tuple[str, Seen]]:
    with traced_upstream() as served:
        yield served


def start(make_gateway: GatewayFactory, url: str, *, lean: bool = True) -> RunningGateway:
    config = {"transport": "http", "url": url, "allow_private_network": True, "lean_calls": lean}
    return make_gateway(POLICY, upstreams={"traced": config}, secrets={"key": SECRET}, watch_policy=False)


@contextmanager
def agent_span() -> Iterator[None]:
    """The agent's own span: its SDK client puts it in each request's ``_meta`` (``traceparent``)."""
    with trace.use_span(NonRecordingSpan(SpanContext(AGENT_TRACE, AGENT_SPAN, False, TraceFlags(1)))):
        yield


def gateway_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if (s.attributes or {}).get("mcp.method.name")]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def traceparent_of(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-01"


async def test_each_governed_exchange_exports_one_span_named_by_the_mcp_conventions_without_arguments(
    make_gateway: GatewayFactory, upstream: tuple[str, Seen], span_exporter: InMemorySpanExporter
) -> None:
    gw = start(make_gateway, upstream[0])
    async with connect(gw.url, gw.tokens["agent-a"], mode="legacy") as client:
        with anyio.fail_after(20):
            await client.call_tool("traced.trace_seen", {"text": "argument-value-allowed"})
            await client.call_tool("traced.trace_seen", {"text": "argument-value-that-is-far-too-long"})
            await client.read_resource("note://daily")
            await client.get_prompt("traced.greet", {"who": "argument-value-prompt"})
    spans = gateway_spans(span_exporter)
    assert [s.name for s in spans] == [
        "tools/call traced.trace_seen",
        "tools/call traced.trace_seen",
        "resources/read",
        "prompts/get traced.greet",
    ]
    allowed, denied, resource, prompt = (attrs(s) for s in spans)
    assert allowed["gen_ai.tool.name"] == "traced.trace_seen"
    assert allowed["gen_ai.operation.name"] == "execute_tool"
    assert (allowed["mcp_gateway.decision"], allowed["mcp_gateway.status"]) == ("allow", "ok")
    assert "error.type" not in allowed
    assert (denied["mcp_gateway.decision"], denied["error.type"]) == ("deny", "denied")
    assert resource["mcp.resource.uri"] == "note://daily"
    assert prompt["gen_ai.prompt.name"] == "traced.greet"
    exported = repr([s.to_json() for s in span_exporter.get_finished_spans()])
    assert "argument-value" not in exported


@pytest.mark.parametrize("lean", [True, False], ids=["lean-forwarder", "sdk-client"])
async def test_an_http_upstream_receives_the_traceparent_header_and_meta_of_the_gateways_span(
    make_gateway: GatewayFactory, upstream: tuple[str, Seen], span_exporter: InMemorySpanExporter, lean: bool
) -> None:
    url, seen = upstream
    gw = start(make_gateway, url, lean=lean)
    assert (gw.runtime.gateway.upstreams["traced"]._fast is not None) is lean
    async with connect(gw.url, gw.tokens["agent-a"], mode="legacy") as client:
        with anyio.fail_after(20):
            await client.call_tool("traced.trace_seen", {"text": "one"})
            await client.call_tool("traced.trace_seen", {"text": "two"})
    spans = gateway_spans(span_exporter)
    assert len(spans) == 2
    expected = [traceparent_of(s) for s in spans]
    assert seen.headers == expected
    assert seen.metas == expected


@pytest.mark.parametrize("era", ["legacy", "auto"])
async def test_the_face_hands_over_the_protocol_version_request_id_session_and_the_agents_trace(
    make_gateway: GatewayFactory, upstream: tuple[str, Seen], span_exporter: InMemorySpanExporter, era: str
) -> None:
    url, seen = upstream
    gw = start(make_gateway, url)
    async with connect(gw.url, gw.tokens["agent-a"], mode=era) as client:
        with anyio.fail_after(20), agent_span():
            await client.call_tool("traced.trace_seen", {"text": "hi"})
            await client.read_resource("note://daily")
    for span in gateway_spans(span_exporter):
        assert attrs(span)["mcp.protocol.version"] == ERA_VERSION[era]
        assert attrs(span)["jsonrpc.request.id"].isdigit()
        assert ("mcp.session.id" in attrs(span)) is (era == "legacy")
        # The agent's trace continues: its span is the gateway span's parent.
        assert span.context is not None and span.context.trace_id == AGENT_TRACE
        assert span.parent is not None and span.parent.span_id == AGENT_SPAN
    # ... and the upstream's parent is the gateway's span (no hole where a library span would be).
    assert seen.metas == [traceparent_of(gateway_spans(span_exporter)[0])]


async def test_metrics_through_the_gateway_duration_decisions_redactions_and_upstream_health(
    make_gateway: GatewayFactory, upstream: tuple[str, Seen], metric_reader: InMemoryMetricReader
) -> None:
    gw = start(make_gateway, upstream[0])
    unwatch = watch_gateway(watched(gw.runtime))
    try:
        async with connect(gw.url, gw.tokens["agent-a"], mode="legacy") as client:
            with anyio.fail_after(20):
                await client.call_tool("traced.trace_seen", {"text": "ok"})
                # The upstream echoes the vault value back: scrubbed, and counted.
                await client.call_tool("traced.trace_seen", {"text": SECRET})
        data = metric_reader.get_metrics_data()
    finally:
        unwatch()
    assert data is not None
    found: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    for scope in data.resource_metrics[0].scope_metrics:
        for metric in scope.metrics:
            found[metric.name] = [(dict(p.attributes or {}), p) for p in metric.data.data_points]
    (duration,) = found["mcp.server.operation.duration"]
    assert duration[0] == {
        "mcp.method.name": "tools/call",
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "traced.trace_seen",
        "mcp.protocol.version": "2025-11-25",
    }
    assert duration[1].count == 2
    assert [
        p.value for a, p in found["mcp_gateway.policy.decisions"] if a["mcp_gateway.decision"] == "allow"
    ] == [2]
    # As many as the audit's outcome records say were scrubbed (text and structured content).
    audited = sum(r.detail.get("redactions", 0) for r in gw.audit() if r.kind == "outcome")
    assert audited > 0
    assert [p.value for _, p in found["mcp_gateway.redactions"]] == [audited]
    assert [(a, p.value) for a, p in found["mcp_gateway.upstream.up"]] == [
        ({"mcp_gateway.upstream": "traced"}, 1)
    ]
    assert [p.value for _, p in found["mcp_gateway.approvals.pending"]] == [0]
    assert SECRET not in data.to_json()
