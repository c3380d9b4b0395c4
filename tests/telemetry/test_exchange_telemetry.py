"""The span and metrics of every kind of governed exchange, in process: the real skeleton (``Governor``
with a SQLite audit log and vault), the SDK's in-memory exporter and metric reader; what the HTTP
face knows of a request is handed over with ``telemetry.inbound``, as the face does."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from mcp_gateway.audit.log import AuditLog
from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.core.exchange import Exchange, Granted, ResultRule
from mcp_gateway.core.governed import Governor
from mcp_gateway.core.state import PolicyHolder, SecretsView
from mcp_gateway.errors import PolicyDenied, ToolNotGranted, UpstreamError
from mcp_gateway.policy.load import parse_policy_text
from mcp_gateway.telemetry import (
    TelemetrySettings,
    configure_metrics,
    inbound,
    stop_metrics,
    trace_exchange,
    trace_headers,
)
from mcp_gateway.telemetry.exchange import OFF
from mcp_gateway.telemetry.state import STATE
from mcp_gateway.types import Decision, Principal
from mcp_gateway.vault.crypto import Keyring, MasterKey
from mcp_gateway.vault.service import Vault
from mcp_gateway.vault.store import SQLiteSecretStore

pytestmark = pytest.mark.anyio

AGENT = Principal("agent-a", "tok1")
SECRET = "vault-secret-value-123"
AGENT_TRACE = 0x0AF7651916CD43DD8448EB211C80319C
AGENT_SPAN = 0xB7AD6B7169203331
TRACEPARENT = f"00-{AGENT_TRACE:032x}-{AGENT_SPAN:016x}-01"

POLICY = """
version: 1
agents:
  agent-a:
    grants:
      - {id: tool, tool: up.echo, args: {text: {max_length: 50}}}
      - {id: resource, tool: "resource:up:test://*"}
      - {id: prompt, tool: "prompt:up.greet"}
      - {id: completion, tool: "prompt:up.greet"}
"""

TOOL = ResultRule(types.CallToolResult, oversize="truncate", failure="result")
EMPTY = ResultRule(types.EmptyResult)


@pytest.fixture
def governor(tmp_path: Path) -> Iterator[Governor]:
    vault = Vault(SQLiteSecretStore(tmp_path / "vault.db"), Keyring(MasterKey.generate()))
    vault.put("api", SECRET.encode())
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(POLICY)
    sink = SQLiteAuditSink(tmp_path / "audit.db")
    yield Governor(
        policy=PolicyHolder(policy_file, parse_policy_text(POLICY)),
        secrets=SecretsView(vault),
        audit=AuditLog(sink),
    )
    sink.close()


@pytest.fixture
def metric_reader() -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    provider = configure_metrics(TelemetrySettings(), reader=reader)
    yield reader
    stop_metrics(provider)


def answer(payload: dict[str, Any], status: str = "ok") -> Any:
    async def act(_: Granted) -> tuple[dict[str, Any], str]:
        return payload, status

    return act


def spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return list(exporter.get_finished_spans())


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def points(reader: InMemoryMetricReader, name: str) -> list[tuple[dict[str, Any], Any]]:
    """(attributes, data point) of every point of metric ``name``."""
    data = reader.get_metrics_data()
    found: list[tuple[dict[str, Any], Any]] = []
    for resource in data.resource_metrics if data is not None else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    found.extend((dict(p.attributes or {}), p) for p in metric.data.data_points)
    return found


async def test_a_tool_call_span_is_named_method_and_tool_with_the_mcp_attributes(
    governor: Governor, span_exporter: InMemorySpanExporter
) -> None:
    exchange = Exchange(AGENT, "tools/call", "up.echo", {"text": "hi"})
    meta = {"traceparent": TRACEPARENT}
    with inbound(protocol_version="2025-11-25", session_id="sess-1", request_id=7, meta=meta):
        await governor.run(exchange, answer({"content": []}), TOOL)
    (span,) = spans(span_exporter)
    assert span.name == "tools/call up.echo"
    assert span.kind is SpanKind.SERVER
    assert attrs(span) == {
        "mcp.method.name": "tools/call",
        "gen_ai.tool.name": "up.echo",
        "gen_ai.operation.name": "execute_tool",
        "mcp.protocol.version": "2025-11-25",
        "mcp.session.id": "sess-1",
        "jsonrpc.request.id": "7",
        "mcp_gateway.agent": "agent-a",
        "mcp_gateway.decision": "allow",
        "mcp_gateway.status": "ok",
    }
    # The agent's trace continues: same trace, the agent's span as parent.
    assert span.context is not None and span.context.trace_id == AGENT_TRACE
    assert span.parent is not None and span.parent.span_id == AGENT_SPAN


async def test_the_agents_traceparent_header_is_continued_and_meta_wins_over_it(
    governor: Governor, span_exporter: InMemorySpanExporter
) -> None:
    other = f"00-{0x1234:032x}-{0x5678:016x}-01"
    exchange = Exchange(AGENT, "tools/call", "up.echo", {"text": "hi"})
    with inbound(protocol_version="2026-07-28", request_id="r1", headers={"traceparent": TRACEPARENT}):
        await governor.run(exchange, answer({"content": []}), TOOL)
    raw_headers = [(b"traceparent", other.encode())]
    with inbound(protocol_version="2026-07-28", meta={"traceparent": TRACEPARENT}, headers=raw_headers):
        await governor.run(exchange, answer({"content": []}), TOOL)
    by_header, by_meta = spans(span_exporter)
    for span in (by_header, by_meta):
        assert span.context is not None and span.context.trace_id == AGENT_TRACE
        assert span.parent is not None and span.parent.span_id == AGENT_SPAN
    assert "mcp.session.id" not in attrs(by_header)  # 2026-07-28 has no session


async def test_without_an_agent_trace_the_span_continues_the_current_context_or_starts_one(
    governor: Governor, span_exporter: InMemorySpanExporter
) -> None:
    exchange = Exchange(AGENT, "tools/call", "up.echo", {"text": "hi"})
    await governor.run(exchange, answer({"content": []}), TOOL)
    ambient = NonRecordingSpan(SpanContext(AGENT_TRACE, AGENT_SPAN, True, TraceFlags(1)))
    with trace.use_span(ambient):
        await governor.run(exchange, answer({"content": []}), TOOL)
    root, child = spans(span_exporter)
    assert root.parent is None and "mcp.protocol.version" not in attrs(root)
    assert child.context is not None and child.context.trace_id == AGENT_TRACE


@pytest.mark.parametrize(
    ("method", "target", "label", "name", "extra"),
    [
        (
            "resources/read",
            "resource:up:test://a",
            "test://a",
            "resources/read",
            {"mcp.resource.uri": "test://a"},
        ),
        (
            "prompts/get",
            "prompt:up.greet",
            "up.greet",
            "prompts/get up.greet",
            {"gen_ai.prompt.name": "up.greet"},
        ),
        ("completion/complete", "completion:prompt:up.greet", "up.greet", "completion/complete", {}),
    ],
)
async def test_every_governed_method_gets_a_span_by_the_conventions(
    governor: Governor,
    span_exporter: InMemorySpanExporter,
    method: str,
    target: str,
    label: str,
    name: str,
    extra: dict[str, str],
) -> None:
    grant = "prompt:up.greet" if method == "completion/complete" else None
    exchange = Exchange(AGENT, method, target, {}, "resource", label=label, grant=grant)
    await governor.run(exchange, answer({}), EMPTY)
    (span,) = spans(span_exporter)
    assert span.name == name
    assert attrs(span) == {
        "mcp.method.name": method,
        "mcp_gateway.agent": "agent-a",
        "mcp_gateway.decision": "allow",
        "mcp_gateway.status": "ok",
        **extra,
    }


async def test_a_relayed_request_to_the_agent_is_a_client_span(
    governor: Governor, span_exporter: InMemorySpanExporter
) -> None:
    exchange = Exchange(AGENT, "sampling/createMessage", "up:sampling/createMessage", {}, "request")
    allow = Decision("allow", ("upstreams.up.relay_requests",), ())
    await governor.run(exchange, answer({}), EMPTY, authorize=lambda _: allow)
    (span,) = spans(span_exporter)
    assert (span.name, span.kind) == ("sampling/createMessage", SpanKind.CLIENT)
    assert attrs(span)["mcp_gateway.decision"] == "allow"


async def test_failures_set_error_type_refusal_kind_tool_error_or_upstream_error(
    governor: Governor, span_exporter: InMemorySpanExporter
) -> None:
    async def broken(_: Granted) -> tuple[dict[str, Any], str]:
        raise UpstreamError("upstream `up` failed")

    with pytest.raises(ToolNotGranted):
        await governor.run(Exchange(AGENT, "tools/call", "up.other", {}), answer({}), TOOL)
    with pytest.raises(PolicyDenied):
        await governor.run(Exchange(AGENT, "tools/call", "up.echo", {"text": "x" * 60}), answer({}), TOOL)
    tool_error = {"content": [], "isError": True}
    await governor.run(Exchange(AGENT, "tools/call", "up.echo", {"text": "a"}), answer(tool_error), TOOL)
    with pytest.raises(UpstreamError):
        await governor.run(Exchange(AGENT, "resources/read", "resource:up:test://a", {}), broken, EMPTY)
    got = [
        (s.name, attrs(s).get("error.type"), attrs(s).get("mcp_gateway.decision"))
        for s in spans(span_exporter)
    ]
    assert got == [
        ("tools/call up.other", "not_granted", "deny"),
        ("tools/call up.echo", "denied", "deny"),
        ("tools/call up.echo", "tool_error", "allow"),
        ("resources/read", "upstream_error", "allow"),
    ]
    assert all(s.status.status_code is trace.StatusCode.ERROR for s in spans(span_exporter))
    assert all(s.status.description is None for s in spans(span_exporter))


async def test_no_vault_value_reaches_a_span_or_metric_as_tool_name_uri_request_id_or_argument(
    governor: Governor, span_exporter: InMemorySpanExporter, metric_reader: InMemoryMetricReader
) -> None:
    with inbound(protocol_version=SECRET, session_id=SECRET, request_id=f"id-{SECRET}"):
        with pytest.raises(ToolNotGranted):
            await governor.run(Exchange(AGENT, "tools/call", f"up.{SECRET}", {}), answer({}), TOOL)
        uri = f"test://{SECRET}"
        exchange = Exchange(AGENT, "resources/read", f"resource:up:{uri}", {"uri": uri}, label=uri)
        await governor.run(exchange, answer({"contents": []}), ResultRule(types.ReadResourceResult))
        echo = {"content": [{"type": "text", "text": f"the key is {SECRET}"}]}
        await governor.run(Exchange(AGENT, "tools/call", "up.echo", {"text": SECRET}), answer(echo), TOOL)
    exported = [s.to_json() for s in spans(span_exporter)]
    assert len(exported) == 3
    assert not [s for s in exported if SECRET in s]
    assert "[REDACTED" in exported[0]  # the tool name was scrubbed, not dropped
    metrics = metric_reader.get_metrics_data()
    assert metrics is not None and SECRET not in metrics.to_json()
    # The scrubbed answer was counted as a redaction of the tool it came from.
    (counted,) = points(metric_reader, "mcp_gateway.redactions")
    assert counted[0] == {"mcp.method.name": "tools/call", "gen_ai.tool.name": "up.echo"}
    assert counted[1].value == 1


async def test_the_duration_metric_and_the_decision_counter_carry_low_cardinality_attributes(
    governor: Governor, metric_reader: InMemoryMetricReader
) -> None:
    with inbound(protocol_version="2025-11-25", session_id="s", request_id=1):
        await governor.run(
            Exchange(AGENT, "tools/call", "up.echo", {"text": "a"}), answer({"content": []}), TOOL
        )
        await governor.run(
            Exchange(AGENT, "tools/call", "up.echo", {"text": "b"}), answer({"content": []}), TOOL
        )
        with pytest.raises(ToolNotGranted):
            await governor.run(Exchange(AGENT, "tools/call", "up.made-up", {}), answer({}), TOOL)
    durations = {
        tuple(sorted(a.items())): p for a, p in points(metric_reader, "mcp.server.operation.duration")
    }
    allowed = {
        "mcp.method.name": "tools/call",
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "up.echo",
        "mcp.protocol.version": "2025-11-25",
    }
    # A refused call carries no target name: made-up names cannot grow the series.
    refused = {
        "mcp.method.name": "tools/call",
        "gen_ai.operation.name": "execute_tool",
        "mcp.protocol.version": "2025-11-25",
        "error.type": "not_granted",
    }
    assert set(durations) == {tuple(sorted(allowed.items())), tuple(sorted(refused.items()))}
    point = durations[tuple(sorted(allowed.items()))]
    assert point.count == 2 and 0 < point.sum < 5
    assert 0.01 in point.explicit_bounds  # the conventions' buckets, in seconds
    decisions = {
        a["mcp_gateway.decision"]: (a, p.value)
        for a, p in points(metric_reader, "mcp_gateway.policy.decisions")
    }
    assert decisions["allow"][1] == 2 and decisions["deny"][1] == 1
    assert decisions["deny"][0]["error.type"] == "not_granted"
    # Each exchange committed intent/outcome or a denial: the audit commit latency was recorded.
    commits = points(metric_reader, "mcp_gateway.audit.commit.duration")
    assert commits and sum(p.count for _, p in commits) >= 3


async def test_the_agents_tracestate_is_not_carried_to_the_span_or_upstreams(
    governor: Governor, span_exporter: InMemorySpanExporter
) -> None:
    seen: list[dict[str, str] | None] = []

    async def act(_: Granted) -> tuple[dict[str, Any], str]:
        seen.append(trace_headers())
        return {"content": []}, "ok"

    meta = {"traceparent": TRACEPARENT, "tracestate": "agent=smuggled-text"}
    with inbound(protocol_version="2025-11-25", meta=meta, headers={"tracestate": "agent=smuggled-text"}):
        await governor.run(Exchange(AGENT, "tools/call", "up.echo", {"text": "hi"}), act, TOOL)
    (span,) = spans(span_exporter)
    assert span.context is not None and span.context.trace_id == AGENT_TRACE
    assert seen == [{"traceparent": f"00-{AGENT_TRACE:032x}-{span.context.span_id:016x}-01"}]
    assert "smuggled" not in span.to_json()


async def test_with_telemetry_off_nothing_is_built_or_recorded(
    governor: Governor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(STATE, "tracing", False)
    monkeypatch.setattr(STATE, "instruments", None)
    monkeypatch.setattr(STATE, "off", True)
    redactor = governor.secrets.redactor()
    # One shared do-nothing object: no span, no attribute dict, no clock read.
    assert trace_exchange("tools/call", "up.echo", agent="a", label=None, redactor=redactor) is OFF
    assert isinstance(inbound(protocol_version="2025-11-25", meta={"traceparent": TRACEPARENT}), nullcontext)
    assert trace_headers() is None
    seen: list[dict[str, str] | None] = []

    async def act(_: Granted) -> tuple[dict[str, Any], str]:
        seen.append(trace_headers())
        return {"content": []}, "ok"

    await governor.run(Exchange(AGENT, "tools/call", "up.echo", {"text": "hi"}), act, TOOL)
    assert seen == [None] and trace.get_current_span() is trace.INVALID_SPAN
