"""What OpenTelemetry costs the governed path, in-process: off (the default) and on.

- primitives: the telemetry calls one exchange makes when telemetry is off (``trace_exchange`` and
  its context manager, ``answered``, the lean forwarder's ``trace_headers``), in ns, next to what the
  code before this change did per exchange when off (the ``exchange_span`` check and five no-op
  ``set_attribute`` calls on the invalid span);
- governed: ``Governor.run`` of one ``tools/call`` (real policy, vault redactor, SQLite audit log with
  intent and outcome records on tmpfs, an ``act`` that answers at once), CPU µs per call, in interleaved
  rounds with telemetry off and on (spans to an in-memory exporter through the batch processor,
  metrics to an in-memory reader).

Run: ``python bench/telemetry_overhead.py [--calls 2000] [--rounds 5]``. Prints Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

import mcp_types as types
from opentelemetry import trace
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mcp_gateway.audit.log import AuditLog
from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.core.exchange import Exchange, Granted, ResultRule
from mcp_gateway.core.governed import Governor
from mcp_gateway.core.state import PolicyHolder, SecretsView
from mcp_gateway.policy.load import parse_policy_text
from mcp_gateway.redact import Redactor
from mcp_gateway.telemetry import TelemetrySettings, configure_metrics, configure_tracing, trace_exchange
from mcp_gateway.telemetry.propagation import trace_headers
from mcp_gateway.telemetry.state import STATE
from mcp_gateway.types import Principal
from mcp_gateway.vault.crypto import Keyring, MasterKey
from mcp_gateway.vault.service import Vault
from mcp_gateway.vault.store import SQLiteSecretStore

POLICY = "version: 1\nagents:\n  agent-a:\n    grants:\n      - {id: t, tool: up.echo}\n"
AGENT = Principal("agent-a", "tok1")
RULE = ResultRule(types.CallToolResult, oversize="truncate", failure="result")
PAYLOAD = {"content": [{"type": "text", "text": "hello"}]}


def primitives(redactor: Redactor) -> list[tuple[str, float]]:
    """ns per exchange of the telemetry calls, with telemetry off."""
    loops = 200_000

    def now_off() -> None:
        with trace_exchange("tools/call", "up.echo", agent="agent-a", label=None, redactor=redactor) as t:
            t.answered(None)
        trace_headers()

    def before_off() -> None:
        # HEAD's exchange_span: the provider check, a null context, five no-op attribute sets, a clock.
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            manager: Any = contextlib.nullcontext(trace.INVALID_SPAN)
        else:  # pragma: no cover - off only
            raise RuntimeError("tracing is on")
        with manager as span:
            span.set_attribute("mcp_gateway.agent", "agent-a")
            span.set_attribute("mcp_gateway.tool", "up.echo")
            started = time.perf_counter()
            span.set_attribute("mcp_gateway.decision", "allow")
            span.set_attribute("mcp_gateway.status", "ok")
            span.set_attribute("mcp_gateway.latency_ms", (time.perf_counter() - started) * 1000)

    rows = []
    for name, fn in (("before this change, off", before_off), ("now, off", now_off)):
        best = min(timeit.repeat(fn, number=loops, repeat=5))
        rows.append((name, best / loops * 1e9))
    return rows


async def governed(governor: Governor, calls: int) -> float:
    """CPU µs per governed call."""

    async def act(_: Granted) -> tuple[dict[str, Any], str]:
        return PAYLOAD, "ok"

    exchange = Exchange(AGENT, "tools/call", "up.echo", {"text": "hi"})
    for _ in range(50):  # warm up
        await governor.run(exchange, act, RULE)
    started = time.process_time()
    for _ in range(calls):
        await governor.run(exchange, act, RULE)
    return (time.process_time() - started) / calls * 1e6


async def main(calls: int, rounds: int) -> None:
    # tmpfs when there is one: the audit fsync would otherwise drown what is measured.
    shm = Path("/dev/shm")  # noqa: S108 - a private TemporaryDirectory inside it
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as folder:
        root = Path(folder)
        vault = Vault(SQLiteSecretStore(root / "vault.db"), Keyring(MasterKey.generate()))
        vault.put("api", b"secret-value-for-the-redactor")
        (root / "policy.yaml").write_text(POLICY)
        sink = SQLiteAuditSink(root / "audit.db")
        governor = Governor(
            policy=PolicyHolder(root / "policy.yaml", parse_policy_text(POLICY)),
            secrets=SecretsView(vault),
            audit=AuditLog(sink, commit_on_loop=True),
        )
        assert STATE.off
        rows = primitives(governor.secrets.redactor())
        print("| telemetry calls per exchange | ns |\n|---|---:|")
        for name, ns in rows:
            print(f"| {name} | {ns:.0f} |")
        exporter = InMemorySpanExporter()
        configure_tracing(TelemetrySettings(exporter="otlp"), exporter=exporter)  # batch processor
        configure_metrics(TelemetrySettings(), reader=InMemoryMetricReader())
        instruments = STATE.instruments
        results: dict[str, list[float]] = {"off": [], "on": []}
        for _ in range(rounds):
            for mode in ("off", "on"):
                STATE.set(tracing=mode == "on", instruments=instruments if mode == "on" else None)
                results[mode].append(await governed(governor, calls))
                exporter.clear()
        STATE.set(tracing=False, instruments=None)
        await governor.audit.aclose()
        sink.close()
        title = f"Governor.run, tools/call ({calls} calls x {rounds} rounds)"
        print(f"\n| {title} | CPU µs/call (median) | rounds |")
        print("|---|---:|---|")
        for mode, values in results.items():
            shown = ", ".join(f"{v:.0f}" for v in values)
            print(f"| telemetry {mode} | {statistics.median(values):.1f} | {shown} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.rounds))
