"""Whether telemetry is on, read by every recording function before it does anything else.

Off (the default) every function of this package returns after one attribute read: no span, no
attribute dict, no metric recording on the call path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mcp_gateway.telemetry.metrics import Instruments

GATEWAY_SCOPE = "mcp_gateway"
"""The instrumentation scope of the gateway's spans and metrics."""


class State:
    """What ``configure_tracing`` / ``configure_metrics`` turned on (change it with ``set``)."""

    __slots__ = ("instruments", "off", "tracing")

    def __init__(self) -> None:
        self.tracing = False
        self.instruments: Instruments | None = None
        self.off = True  # a plain attribute, not a property: it is read on every exchange

    def set(self, *, tracing: bool, instruments: Instruments | None) -> None:
        self.tracing, self.instruments = tracing, instruments
        self.off = not tracing and instruments is None


STATE = State()
