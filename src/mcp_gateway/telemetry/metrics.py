"""The gateway's metrics: ``mcp.server.operation.duration`` by the MCP semantic conventions, and its own.

- ``mcp.server.operation.duration`` (histogram, s): ``mcp.method.name``, ``mcp.protocol.version``,
  ``gen_ai.operation.name``, ``error.type``, and ``gen_ai.tool.name`` / ``gen_ai.prompt.name`` for
  an exchange that was not refused;
- ``mcp_gateway.policy.decisions`` (counter, {decision}): ``mcp_gateway.decision`` (allow, deny,
  pending), ``mcp.method.name``, ``error.type`` (a refusal's kind);
- ``mcp_gateway.audit.commit.duration`` (histogram, s): ``error.type`` on a failed commit;
- ``mcp_gateway.redactions`` (counter, {value}): ``mcp.method.name``, ``gen_ai.tool.name``;
- ``mcp_gateway.approvals.pending`` (observable gauge, {approval});
- ``mcp_gateway.upstream.up`` (observable gauge, 1 or 0): ``mcp_gateway.upstream``.

Attribute values are names the gateway scrubbed of vault values; no argument or answer value is
ever one. A refused exchange carries no target name, so an agent calling made-up names cannot grow
the number of series (the SDK's cardinality limit is the second guard).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from mcp_gateway.telemetry.state import STATE

Attributes = Mapping[str, str]

# The MCP semantic conventions' advice for operation durations.
DURATION_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


@dataclass(frozen=True, slots=True)
class Watched:
    """A running gateway's state, read when metrics are collected (in the exporter's thread).

    Attributes:
        pending_approvals: how many approvals wait for a human (None: no approval store).
        upstreams: each upstream's name and whether it is connected.
    """

    pending_approvals: Callable[[], int] | None
    upstreams: Callable[[], Mapping[str, bool]]


class Instruments:
    """The instruments of one meter; ``STATE.instruments`` while metrics are on."""

    def __init__(self, meter: Meter) -> None:
        self.duration = meter.create_histogram(
            "mcp.server.operation.duration",
            unit="s",
            description="Duration of an MCP request as the gateway served it",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.decisions = meter.create_counter(
            "mcp_gateway.policy.decisions", unit="{decision}", description="Governed exchanges by decision"
        )
        self.audit_commit = meter.create_histogram(
            "mcp_gateway.audit.commit.duration",
            unit="s",
            description="Time to make one batch of audit records durable",
            explicit_bucket_boundaries_advisory=COMMIT_BUCKETS,
        )
        self.redactions = meter.create_counter(
            "mcp_gateway.redactions", unit="{value}", description="Vault values scrubbed from answers"
        )
        self.watched: list[Watched] = []
        meter.create_observable_gauge(
            "mcp_gateway.approvals.pending",
            callbacks=[self._pending],
            unit="{approval}",
            description="Approvals waiting for a human",
        )
        meter.create_observable_gauge(
            "mcp_gateway.upstream.up",
            callbacks=[self._upstreams],
            unit="1",
            description="1 when the upstream is connected, else 0",
        )

    def _pending(self, options: CallbackOptions) -> Iterable[Observation]:
        counters = [w.pending_approvals for w in list(self.watched) if w.pending_approvals is not None]
        if counters:
            yield Observation(sum(count() for count in counters))

    def _upstreams(self, options: CallbackOptions) -> Iterable[Observation]:
        for watched in list(self.watched):
            for name, up in watched.upstreams().items():
                yield Observation(1 if up else 0, {"mcp_gateway.upstream": name})


def watch_gateway(watched: Watched) -> Callable[[], None]:
    """Report a running gateway's pending approvals and upstream health; returns the undo (call it
    when the gateway stops). Nothing is watched while metrics are off."""
    instruments = STATE.instruments
    if instruments is None:
        return lambda: None
    instruments.watched.append(watched)

    def unwatch() -> None:
        if watched in instruments.watched:
            instruments.watched.remove(watched)

    return unwatch


def audit_committed(seconds: float, failure: str | None = None) -> None:
    """Record one audit batch commit (``failure``: its error type)."""
    instruments = STATE.instruments
    if instruments is not None:
        instruments.audit_commit.record(seconds, {"error.type": failure} if failure else None)


def redacted(count: int, method: str, target: str) -> None:
    """Count vault values scrubbed from the answer of an exchange (``target`` already scrubbed)."""
    instruments = STATE.instruments
    if instruments is not None and count:
        attributes = {"mcp.method.name": method}
        if method == "tools/call":
            attributes["gen_ai.tool.name"] = target
        instruments.redactions.add(count, attributes)
