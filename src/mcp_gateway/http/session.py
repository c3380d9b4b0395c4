"""2025-11-25 sessions, kept by the gateway: ``Mcp-Session-Id``, its owner, its streams, its end.

A 2025-11-25 client opens a session with ``initialize``; the answer carries a fresh ``Mcp-Session-Id``
(128 random bits) and every later request names it. A session is bound to the credential that opened
it (``authorization_context``: an agent token by its id, an OAuth token by agent, issuer and subject,
so a refreshed token keeps it): another credential is answered 404, as for an unknown session. A
session ends on the client's DELETE, after ``idle_timeout`` seconds with no request in flight and no
open GET stream, or when the gateway stops; then its requests are cancelled, its GET stream closes,
and what the gateway kept for it (log level, resource subscriptions) is dropped (``on_close``).

What the session carries toward the client outside any request (resource updates) goes to its GET
stream (``outbox``); a server-to-client request (sampling, elicitation, roots) goes on the stream of
the request it belongs to, and the client's response, POSTed back, is matched here (``answer``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
from collections.abc import Awaitable, Callable, Iterator
from json.encoder import encode_basestring_ascii
from typing import Any, Final

import anyio
import mcp_types as types
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, authorization_context
from starlette.types import Scope

logger = logging.getLogger(__name__)

IDLE_TIMEOUT: Final = 30 * 60.0
MAX_SESSIONS: Final = 10_000
_OUTBOX: Final = 64


def owner_of(scope: Scope) -> Any:
    """Who a request comes from, as sessions compare it (None: unauthenticated, never served)."""
    user = scope.get("user")
    return authorization_context(user) if isinstance(user, AuthenticatedUser) else None


def _key(request_id: Any) -> str:
    """``json.dumps(request_id)``: a JSON id as one text (``1`` and ``"1"`` differ); an int or a
    string, the ids of nearly every request, without the encoder's four Python calls."""
    kind = type(request_id)
    if kind is str:
        return encode_basestring_ascii(request_id)
    if kind is int:
        return str(request_id)
    return json.dumps(request_id)


def _now() -> float:
    # The event loop's clock (what anyio.current_time reads on asyncio, at a fifth of the calls).
    return asyncio.get_running_loop().time()


class Session:
    """One 2025-11-25 session (see the module doc)."""

    def __init__(
        self, session_id: str, owner: Any, version: str, params: types.InitializeRequestParams
    ) -> None:
        self.id = session_id
        self.owner = owner
        self.version = version
        self.client_capabilities = params.capabilities
        self.closed = False
        self.streaming = False  # a GET stream is open
        self.busy = 0  # requests in flight (and the GET stream): the idle countdown waits
        self.deadline = math.inf
        self._calls: dict[str, anyio.CancelScope] = {}
        self._pending: dict[str, tuple[anyio.Event, list[dict[str, Any]]]] = {}
        self._next_request = 0
        self._cleanups: dict[str, Callable[[], Awaitable[None]]] = {}
        send, receive = anyio.create_memory_object_stream[dict[str, Any]](_OUTBOX)
        self._outbox_send: MemoryObjectSendStream[dict[str, Any]] = send
        self.outbox: MemoryObjectReceiveStream[dict[str, Any]] = receive

    def on_close(self, key: str, cleanup: Callable[[], Awaitable[None]]) -> None:
        """Run ``cleanup`` once when the session ends (a second call with the same key does nothing)."""
        self._cleanups.setdefault(key, cleanup)

    def serving(self, request_id: Any) -> anyio.CancelScope:
        """A cancel scope for one request, found by ``cancel``; the caller must ``done`` it."""
        scope = anyio.CancelScope()
        self._calls[_key(request_id)] = scope
        return scope

    def done(self, request_id: Any) -> None:
        self._calls.pop(_key(request_id), None)

    def cancel(self, request_id: Any) -> None:
        """Apply the client's ``notifications/cancelled`` to a request in flight."""
        if isinstance(request_id, int | str) and not isinstance(request_id, bool):
            scope = self._calls.get(_key(request_id))
            if scope is not None:
                scope.cancel()

    def new_request(self, method: str, params: dict[str, Any] | None) -> tuple[dict[str, Any], anyio.Event]:
        """A server-to-client request and the event set when its answer arrives (``answered``)."""
        self._next_request += 1
        request_id = f"gw-{self._next_request}"
        arrived = anyio.Event()
        self._pending[_key(request_id)] = (arrived, [])
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        return message, arrived

    def answered(self, request_id: Any) -> dict[str, Any] | None:
        """The client's response to a server-to-client request (forgotten once read)."""
        found = self._pending.pop(_key(request_id), None)
        return found[1][0] if found is not None and found[1] else None

    def forget_request(self, request_id: Any) -> None:
        self._pending.pop(_key(request_id), None)

    def answer(self, message: dict[str, Any]) -> None:
        """Route a response the client POSTed to the request it answers (an unknown id is dropped)."""
        found = self._pending.get(_key(message.get("id")))
        if found is not None and not found[1]:
            found[1].append(message)
            found[0].set()

    def post(self, method: str, params: dict[str, Any]) -> None:
        """Put a notification on the GET stream (dropped when its backlog is full).

        Raises:
            anyio.ClosedResourceError: the session ended.
        """
        try:
            self._outbox_send.send_nowait({"jsonrpc": "2.0", "method": method, "params": params})
        except anyio.WouldBlock:
            logger.info("session %s: GET stream backlog full, %s dropped", self.id[:8], method)

    async def send_resource_updated(self, uri: str) -> None:
        """Put a resource update on the GET stream (``core/subscriptions.py``'s sink).

        Raises:
            anyio.ClosedResourceError: the session ended (the subscriptions then drop it).
        """
        self.post("notifications/resources/updated", {"uri": uri})

    async def close(self) -> None:
        """End the session: cancel its requests, close its stream, drop what was kept for it."""
        if self.closed:
            return
        self.closed = True
        for scope in list(self._calls.values()):
            scope.cancel()
        for arrived, _ in self._pending.values():
            arrived.set()
        self._outbox_send.close()
        self.outbox.close()
        with anyio.CancelScope(shield=True):
            for key, cleanup in list(self._cleanups.items()):
                try:
                    await cleanup()
                except Exception:
                    logger.exception("session %s: dropping its %s failed", self.id[:8], key)


class SessionTable:
    """The live sessions of one app.

    Args:
        idle_timeout: seconds a session lives with nothing in flight (None: until DELETE or exit).
        max_sessions: open sessions at most; a further ``initialize`` is refused (503).
    """

    def __init__(self, idle_timeout: float | None = IDLE_TIMEOUT, max_sessions: int = MAX_SESSIONS) -> None:
        self.idle_timeout = idle_timeout
        self.max_sessions = max_sessions
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions.values()))

    def open(self, owner: Any, version: str, params: types.InitializeRequestParams) -> Session | None:
        """A new session for ``owner``; None at the session limit."""
        if len(self._sessions) >= self.max_sessions:
            return None
        session = Session(secrets.token_hex(16), owner, version, params)
        self._sessions[session.id] = session
        self.idle(session)
        return session

    def find(self, session_id: str, owner: Any) -> Session | None:
        """The live session ``session_id`` if ``owner`` opened it, else None (answered 404)."""
        session = self._sessions.get(session_id)
        if session is None or session.closed or session.owner != owner:
            return None
        if session.busy == 0 and session.deadline <= _now():
            return None  # expired; the sweeper closes it
        return session

    def enter(self, session: Session) -> None:
        """A request (or the GET stream) starts: the idle countdown waits."""
        session.busy += 1
        session.deadline = math.inf

    def leave(self, session: Session) -> None:
        session.busy -= 1
        if session.busy == 0:
            self.idle(session)

    def idle(self, session: Session) -> None:
        if self.idle_timeout is not None:
            session.deadline = _now() + self.idle_timeout

    async def close(self, session: Session) -> None:
        self._sessions.pop(session.id, None)
        await session.close()

    async def run(self, tick: float = 1.0) -> None:
        """Close sessions whose idle time ran out, until cancelled; then close every session."""
        try:
            while True:
                await anyio.sleep(tick)
                now = _now()
                for session in [s for s in self._sessions.values() if s.busy == 0 and s.deadline <= now]:
                    logger.info("session %s: idle timeout", session.id[:8])
                    await self.close(session)
        finally:
            with anyio.CancelScope(shield=True):
                for session in list(self._sessions.values()):
                    await self.close(session)
