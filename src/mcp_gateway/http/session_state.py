"""What the gateway keeps per 2025-11-25 session (its log level, its resource subscriptions), and when
that ends.

State is keyed by the session's ``Mcp-Session-Id`` and dropped when the session ends, however it ends
(the client's DELETE, idle expiry, a crash): the SDK unwinds each connection's ``exit_stack`` when the
connection closes, and ``when_session_ends`` puts the cleanup there. The SDK hands a handler its
connection only inside the request's ``ServerSession`` (not public API); if a later SDK moves it, the
state of an ended session stays until the process ends and a warning says so, once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext

from mcp_gateway.http.sessions import SESSION_HEADER

logger = logging.getLogger(__name__)

_warned: list[bool] = []


def session_id(ctx: ServerRequestContext[Any, Any]) -> str | None:
    """The session the request belongs to (None: a 2026-07-28 request, which has no session)."""
    headers = getattr(ctx.request, "headers", None)
    value = headers.get(SESSION_HEADER) if headers is not None else None
    return value if isinstance(value, str) and value else None


def when_session_ends(
    ctx: ServerRequestContext[Any, Any], key: str, cleanup: Callable[[], Awaitable[None]]
) -> None:
    """Run ``cleanup`` once when the session of ``ctx`` ends; a second call with the same ``key`` on
    the same session does nothing."""
    connection = getattr(ctx.session, "_connection", None)
    if not isinstance(connection, Connection):
        if not _warned:
            _warned.append(True)
            logger.warning("the SDK hides a session's end: per-session state is kept until exit")
        return
    marker = f"mcp_gateway.{key}"
    if marker in connection.state:
        return
    connection.state[marker] = True
    connection.exit_stack.push_async_callback(cleanup)
