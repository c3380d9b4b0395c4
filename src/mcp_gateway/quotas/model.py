"""Quotas as the call path sees them: the checks that apply to one call and the refusals (pure)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mcp_gateway.errors import CallRefused, GatewayError
from mcp_gateway.policy.model import parse_rate

__all__ = [
    "ALL_TOOLS",
    "QuotaCheck",
    "QuotaExceeded",
    "QuotaUnavailable",
    "QuotaUsage",
    "parse_key",
    "quota_checks",
    "usage_of",
]

ALL_TOOLS = "*"
"""The ``tool`` of a quota on all of an agent's calls together."""
Rate = str | tuple[str, int, int]
"""A quota as written (``"3/hour"``) or as policy compiles it (``("3/hour", 3, 3600)``)."""


class QuotaExceeded(CallRefused):
    """A quota refused the call; nothing was counted.

    Attributes:
        retry_after_seconds: when the refusing quota next has room (whole seconds, at least 1).
        limit: the quota's text, e.g. ``3/hour``.
    """

    kind = "quota_exceeded"

    def __init__(self, message: str, *, retry_after_seconds: int, limit: str) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds
        self.limit = limit


class QuotaUnavailable(CallRefused):
    """The quota store cannot be read or written; the call is refused (a quota must not fail open)."""

    kind = "quota_unavailable"


@dataclass(frozen=True, slots=True)
class QuotaCheck:
    """One quota that applies to a call.

    Attributes:
        agent: the caller.
        tool: the tool, or ``ALL_TOOLS`` for the agent's overall quota.
        limit: the quota's text (``3/hour``).
        amount, seconds: at most ``amount`` calls in any ``seconds``.
    """

    agent: str
    tool: str
    limit: str
    amount: int
    seconds: int

    @property
    def key(self) -> str:
        # JSON keeps the parts apart whatever characters an agent or tool name holds.
        return json.dumps([self.agent, self.tool, self.limit], ensure_ascii=True, separators=(",", ":"))

    @property
    def subject(self) -> str:
        return f"agent `{self.agent}` (all tools)" if self.tool == ALL_TOOLS else f"`{self.tool}`"

    def exceeded(self, retry_after: float) -> QuotaExceeded:
        seconds = max(1, math.ceil(retry_after))
        return QuotaExceeded(
            f"quota `{self.limit}` for {self.subject} exhausted; retry in {seconds:,} s",
            retry_after_seconds=seconds,
            limit=self.limit,
        )


def quota_checks(
    agent: str, tool: str, *, tool_limits: Sequence[Rate] = (), agent_limits: Sequence[Rate] = ()
) -> list[QuotaCheck]:
    """The checks for one call: each of ``tool_limits`` on (agent, tool), each of ``agent_limits`` on the
    agent overall (duplicates dropped).

    Raises:
        GatewayError: a limit that is not like ``3/hour`` (policy validation normally caught it).
    """
    checks: dict[str, QuotaCheck] = {}
    for scope, limits in ((tool, tool_limits), (ALL_TOOLS, agent_limits)):
        for rate in limits:
            text, amount, seconds = rate if isinstance(rate, tuple) else (rate, *_parse(rate))
            if amount < 1 or seconds < 1:
                raise GatewayError(f"quota `{text}` must allow at least one call in at least one second")
            check = QuotaCheck(agent, scope, text.strip(), amount, seconds)
            checks.setdefault(check.key, check)
    return list(checks.values())


def _parse(text: str) -> tuple[int, int]:
    try:
        return parse_rate(text)
    except ValueError:
        raise GatewayError(f"quota `{text}` must look like `3/hour`") from None


def parse_key(key: str) -> tuple[str, str, str] | None:
    """``(agent, tool, limit)`` of a ``QuotaCheck.key``; None for anything else."""
    try:
        parts = json.loads(key)
    except ValueError:
        return None
    if not (isinstance(parts, list) and len(parts) == 3 and all(isinstance(p, str) for p in parts)):
        return None
    agent, tool, limit = parts
    return agent, tool, limit


@dataclass(frozen=True, slots=True)
class QuotaUsage:
    """How much of one quota is used at a moment (what ``mcp-gateway quota show`` prints).

    Attributes:
        key: the store's key (``QuotaCheck.key``).
        agent, tool, limit, amount, seconds: as in ``QuotaCheck``.
        used: calls counted in the window that ends at the moment asked about.
        room_at: when the next call fits again, if the quota is full now; else None.
        clear_at: when the newest counted call leaves the window (nothing counted from then on).
    """

    key: str
    agent: str
    tool: str
    limit: str
    amount: int
    seconds: int
    used: int
    room_at: float | None
    clear_at: float

    @property
    def subject(self) -> str:
        return "(all tools)" if self.tool == ALL_TOOLS else self.tool


def usage_of(key: str, times: Iterable[float], now: float) -> QuotaUsage | None:
    """The usage of the quota ``key`` whose calls were counted at ``times``; None when ``key`` is not a
    quota key, its limit does not parse, or no call is in its window at ``now``."""
    parsed = parse_key(key)
    if parsed is None:
        return None
    agent, tool, limit = parsed
    try:
        amount, seconds = parse_rate(limit)
    except ValueError:
        return None
    window = sorted(t for t in times if t > now - seconds)
    if not window:
        return None
    full = len(window) >= amount
    return QuotaUsage(
        key=key,
        agent=agent,
        tool=tool,
        limit=limit,
        amount=amount,
        seconds=seconds,
        used=len(window),
        room_at=window[len(window) - amount] + seconds if full else None,
        clear_at=window[-1] + seconds,
    )
