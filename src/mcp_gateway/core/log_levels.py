"""``logging/setLevel`` (2025-11-25): each agent session's floor for the upstream log messages the gateway
relays to it.

An upstream connection serves every agent, so one agent's level is not forwarded: it would change what
every other session gets. Upstreams keep sending at ``debug`` (their clients ask for it) and the gateway
drops, per session, what is below the level that session asked for (``LogLevels.wants``, consulted by
the relays in ``http/``). A session that never asked gets every level, as the spec's default is.

The request passes the governed skeleton as ``logging:setLevel`` with argument ``level``: deny by
default (a grant matching ``logging:setLevel`` allows it, and may constrain ``level``), audited
(intent and outcome, or ``denied``) like every exchange.
"""

from __future__ import annotations

from typing import Any, Final, get_args

import mcp_types as types

from mcp_gateway.core.exchange import Exchange, Granted, ResultRule
from mcp_gateway.core.governed import Governor
from mcp_gateway.errors import CallRefused
from mcp_gateway.types import Principal

LEVELS: Final[tuple[str, ...]] = get_args(types.LoggingLevel)
"""Syslog severities, least severe first (the spec's order)."""
POLICY_KEY: Final = "logging:setLevel"
EMPTY_RESULT = ResultRule(types.EmptyResult)


class LogLevels:
    """The level each session asked for, by session id."""

    def __init__(self) -> None:
        self._floors: dict[str, int] = {}

    def set(self, session: str, level: str) -> None:
        self._floors[session] = LEVELS.index(level)

    def forget(self, session: str) -> None:
        """Drop a session that ended."""
        self._floors.pop(session, None)

    def wants(self, session: str | None, level: str) -> bool:
        """Whether a message at ``level`` may go to ``session`` (None: a request outside any session,
        which the SDK gates itself). An unknown level goes nowhere."""
        if level not in LEVELS:
            return False
        floor = self._floors.get(session, 0) if session is not None else 0
        return LEVELS.index(level) >= floor

    def __len__(self) -> int:
        return len(self._floors)


class NoSession(CallRefused):
    """The request belongs to no session, so there is nothing to apply it to."""

    kind = "no_session"


async def set_level(
    governor: Governor,
    principal: Principal,
    session: str | None,
    level: types.LoggingLevel,
    levels: LogLevels,
) -> None:
    """Set ``session``'s floor to ``level`` through the governed skeleton.

    Raises:
        ToolNotGranted: no grant matches ``logging:setLevel`` (after the denial is audited).
        CallRefused: a constraint, limit or quota refused it, or there is no session (audited).
        AuditUnavailable: the intent or outcome could not be recorded (then nothing changed).
    """
    exchange = Exchange(
        principal,
        "logging/setLevel",
        POLICY_KEY,
        {"level": level},
        "method",
        where="the gateway",
        label="logging/setLevel",
    )

    def prepare(_: Exchange) -> None:
        if session is None:
            raise NoSession("logging/setLevel applies to a session, and this request has none")

    async def act(_: Granted) -> tuple[dict[str, Any], str]:
        assert session is not None  # noqa: S101 - prepare refused the exchange otherwise
        levels.set(session, level)
        return {}, "ok"

    await governor.run(exchange, act, EMPTY_RESULT, prepare=prepare)
