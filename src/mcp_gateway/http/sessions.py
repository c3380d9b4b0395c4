"""The lean path's 2025-11-25 half: a plain ``tools/call`` inside an established session.

A 2025-era client keeps a session (``Mcp-Session-Id``) and sends each call as a POST on it. The SDK
serves that through the session's server task: a message stream into the session, a dispatcher task
per request, a response stream back, an SSE response with its own task group: about half of the
gateway's CPU per call. ``FastToolCall`` answers the common case itself, in the request's own task,
when the SDK would answer it in the same way. This module holds what that needs from the session:

- ``SessionDirectory`` finds the session the request names, applying the SDK's own rules: the session
  must be live (not terminated, not idle-expired) and owned by the same credential (the SDK answers
  404 otherwise, and so the request goes to the SDK for that answer and its audit record), and its
  handshake must be complete (``initialize`` accepted). The negotiated version comes from the session
  itself, through a server middleware that remembers each session when the SDK serves one of its
  requests (the ``notifications/initialized`` that completes the handshake, normally), so a session
  the SDK has not yet seen is served by the SDK.
- ``StreamRelay`` is the call's relay: upstream log messages about the call go to the client as they
  arrive, on an SSE answer opened for them (a call that produced none is answered with JSON, which
  the 2025-11-25 transport allows), except those below the level the session asked for
  (``logging/setLevel``, ``core/log_levels.py``). Calls that need more (a progress token, an
  upstream that may send requests to the client) go to the SDK.
- ``cancel`` applies a client's ``notifications/cancelled`` to a call this path is serving (the SDK,
  which also gets the notification, does not know the call); the call ends as the SDK ends one:
  outcome ``cancelled`` in the audit log, error -32800 to the client.

Idle expiry: the SDK suspends a session's idle countdown while it serves a request. This path pushes
the deadline forward at the start and end of each call instead, so a session expires mid-call only if
the call outlasts the whole idle timeout (30 minutes by default).

It reads SDK state that is not public API (the manager's session and owner maps); if a later SDK
renames it, ``SessionDirectory.usable`` is False and every session request goes to the SDK.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from typing import Any, Final

import anyio
import mcp_types as types
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, authorization_context
from mcp.server.context import ServerRequestContext
from mcp.server.session import ServerSession
from mcp.server.streamable_http import StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from starlette.requests import Request
from starlette.types import Scope, Send

from mcp_gateway import wire
from mcp_gateway.channel import ClientBoundRequest
from mcp_gateway.core.gateway import Gateway

SESSION_HEADER: Final = "mcp-session-id"
REQUEST_CANCELLED: Final = -32800


class SessionDirectory:
    """The live sessions the lean path may serve, as the SDK's session manager knows them."""

    def __init__(self, manager: StreamableHTTPSessionManager) -> None:
        self._manager = manager
        self._seen: dict[str, ServerSession] = {}
        self._calls: dict[tuple[str, str], anyio.CancelScope] = {}
        self.usable = isinstance(getattr(manager, "_server_instances", None), dict) and isinstance(
            getattr(manager, "_session_owners", None), dict
        )

    async def remember(
        self, ctx: ServerRequestContext[Any, Any], call_next: Callable[[Any], Awaitable[Any]]
    ) -> Any:
        """Server middleware: note the session of every request or notification the SDK serves."""
        request = ctx.request
        if isinstance(request, Request) and (session_id := request.headers.get(SESSION_HEADER)):
            live = self._transports()
            if session_id in live and session_id not in self._seen:
                for gone in [key for key in self._seen if key not in live]:
                    del self._seen[gone]
                self._seen[session_id] = ctx.session
        return await call_next(ctx)

    def _transports(self) -> dict[str, StreamableHTTPServerTransport]:
        found = getattr(self._manager, "_server_instances", None)
        return found if isinstance(found, dict) else {}

    def find(self, scope: Scope, session_id: str) -> tuple[StreamableHTTPServerTransport, str] | None:
        """``(transport, negotiated version)`` of a session this path may serve, else None."""
        if not self.usable:
            return None
        transport = self._transports().get(session_id)
        session = self._seen.get(session_id)
        if transport is None or session is None or transport.is_terminated:
            return None
        user = scope.get("user")
        requestor = authorization_context(user) if isinstance(user, AuthenticatedUser) else None
        owners = getattr(self._manager, "_session_owners", {})
        if requestor != owners.get(session_id):
            return None  # the SDK answers 404 for another credential's session
        idle = transport.idle_scope
        if idle is not None and idle.cancel_called:
            return None
        if session.client_params is None:
            return None  # the handshake is not complete: the SDK refuses the call
        version = session.protocol_version
        return (transport, version) if version not in MODERN_PROTOCOL_VERSIONS else None

    def touch(self, transport: StreamableHTTPServerTransport) -> None:
        """Push the session's idle deadline forward (unless the SDK holds it open itself)."""
        idle, timeout = transport.idle_scope, self._manager.session_idle_timeout
        if idle is not None and timeout is not None and math.isfinite(idle.deadline):
            idle.deadline = max(idle.deadline, anyio.current_time() + timeout)

    def serving(self, session_id: str, request_id: int | str) -> anyio.CancelScope:
        """A cancel scope for one call, found by ``cancel``; the caller must ``done`` it."""
        scope = anyio.CancelScope()
        self._calls[(session_id, json.dumps(request_id))] = scope
        return scope

    def done(self, session_id: str, request_id: int | str) -> None:
        self._calls.pop((session_id, json.dumps(request_id)), None)

    def cancel(self, session_id: str, params: Any) -> None:
        """Apply a ``notifications/cancelled`` sent on ``session_id`` to a call this path serves."""
        request_id = params.get("requestId") if isinstance(params, dict) else None
        if isinstance(request_id, int | str) and not isinstance(request_id, bool):
            scope = self._calls.get((session_id, json.dumps(request_id)))
            if scope is not None:
                scope.cancel()


class StreamRelay:
    """Relays the upstream's log messages about one call; opens the SSE answer for the first one."""

    wants_progress = False  # calls with a progress token go to the SDK
    modern = False  # a 2025-11-25 session
    client_capabilities = None  # calls to upstreams that may ask the client anything go to the SDK

    def __init__(self, gateway: Gateway, send: Send, session_id: str) -> None:
        self._gateway = gateway
        self._send = send
        self._session_id = session_id
        self._levels = gateway.log_levels  # what the session asked for with logging/setLevel
        self._lock = anyio.Lock()
        self._streaming = False  # the SSE answer has started: the result must follow on it
        self._finished = False

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        return None

    async def log(self, level: str, data: Any, logger_name: str | None) -> None:
        if not self._levels.wants(self._session_id, level):
            return
        # Not scrubbed here: every message toward the agent passes the egress scrubber (egress.py).
        params: dict[str, Any] = {"level": level, "data": data}
        if logger_name is not None:
            params["logger"] = logger_name
        await self._stream({"jsonrpc": "2.0", "method": "notifications/message", "params": params})

    async def ask(self, upstream: str, request: ClientBoundRequest) -> types.Result | types.ErrorData:
        # Unreachable in practice: calls to upstreams that relay requests go to the SDK.
        return types.ErrorData(code=types.INVALID_REQUEST, message=f"{request.method} cannot be relayed")

    async def finish(self, message: dict[str, Any]) -> None:
        """Send the call's answer: as JSON if nothing was streamed, else as the SSE answer's last event."""
        data = wire.dumps(message)
        async with self._lock:
            self._finished = True
            if self._streaming:
                await self._event(data, final=True)
                return
            await self._start(b"application/json", (b"content-length", str(len(data)).encode("latin-1")))
            await self._send({"type": "http.response.body", "body": data})

    async def _stream(self, message: dict[str, Any]) -> None:
        """Send one message on the SSE answer (opening it first); nothing once the call has finished."""
        data = wire.dumps(message)
        async with self._lock:
            if self._finished:
                return
            if not self._streaming:
                self._streaming = True
                await self._start(b"text/event-stream", (b"cache-control", b"no-cache, no-transform"))
            await self._event(data, final=False)

    async def _start(self, content_type: bytes, extra: tuple[bytes, bytes]) -> None:
        headers = [
            (b"content-type", content_type),
            extra,
            (SESSION_HEADER.encode(), self._session_id.encode("latin-1")),
        ]
        await self._send({"type": "http.response.start", "status": 200, "headers": headers})

    async def _event(self, data: bytes, *, final: bool) -> None:
        body = b"event: message\r\ndata: " + data + b"\r\n\r\n"
        await self._send({"type": "http.response.body", "body": body, "more_body": not final})
