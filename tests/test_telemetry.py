"""One span per call, carrying who, what and the verdict, never argument values."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conftest import GatewayFactory, connect

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

POLICY = """\
version: 1
agents:
  agent-a:
    grants:
      - tool: leaky.echo
        args:
          text: {max_length: 30}
"""


async def test_each_call_exports_one_span_with_agent_tool_decision_and_status_but_no_arguments(
    make_gateway: GatewayFactory, span_exporter: InMemorySpanExporter
) -> None:
    exporter = span_exporter
    gw = make_gateway(POLICY)
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        await client.call_tool("leaky.echo", {"text": "argument-value-allowed"})
        await client.call_tool("leaky.echo", {"text": "argument-value-that-is-far-too-long-to-pass"})
    spans = [s for s in exporter.get_finished_spans() if s.name == "mcp_gateway.tools/call"]
    assert [(s.attributes or {}).get("mcp_gateway.decision") for s in spans] == ["allow", "deny"]
    allowed, denied = (dict(s.attributes or {}) for s in spans)
    assert allowed["mcp_gateway.agent"] == "agent-a" and allowed["mcp_gateway.tool"] == "leaky.echo"
    assert allowed["mcp_gateway.status"] == "ok" and denied["mcp_gateway.status"] == "denied"
    exported = repr([dict(s.attributes or {}) for s in exporter.get_finished_spans()])
    assert "argument-value" not in exported
