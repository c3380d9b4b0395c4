"""The 2025-11-25 front door: Streamable HTTP with sessions, served by the gateway's own dispatch.

``LegacyDoor`` takes every ``/mcp`` request without a 2026-07-28 version header:

- ``POST`` ``initialize`` without a session opens one (``session.py``) and answers with its
  ``Mcp-Session-Id``; any other POST must name a live session of the same credential (400 without
  one, 404 for an unknown, expired, ended or another credential's session). A request is served by
  ``methods.py`` for the session's negotiated version and answered as JSON, or as SSE once something
  about it must go first (progress, log messages, a relayed sampling / elicitation / roots request:
  ``session_relay.py``). A notification or a response is accepted with 202: ``notifications/cancelled``
  cancels the request it names (answered -32800), a response answers the relayed request it names.
  A client that disconnects cancels its request (the skeleton records ``cancelled``).
- ``GET`` opens the session's one standalone stream (409 for a second): resource updates, and
  ``notifications/tools/list_changed`` when the tools the caller may see change.
- ``DELETE`` ends the session.

Every request first passes the body limit (413), Host/Origin (421/403) and, for a POST, Content-Type
(400) and ``Accept`` (406).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, Final

import anyio
import mcp_types as types
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from mcp_gateway import wire
from mcp_gateway.channel import CURRENT_RELAY
from mcp_gateway.core.federation import Federation
from mcp_gateway.core.gateway import Gateway
from mcp_gateway.http.auth import PRINCIPAL_KEY
from mcp_gateway.http.headers import accepts, headers_of, plainly_allowed
from mcp_gateway.http.listen import POLL_SECONDS, TOOLS_CHANGED, tool_list_changes
from mcp_gateway.http.methods import (
    INSTRUCTIONS,
    SERVER_INFO,
    Served,
    admit,
    error_data,
    shape,
)
from mcp_gateway.http.modern import WATCH_AFTER, Watch, read_body, request_of, too_large
from mcp_gateway.http.reply import Reply, event, send_json
from mcp_gateway.http.session import Session, SessionTable, owner_of
from mcp_gateway.http.session_methods import SESSION_METHODS, capabilities
from mcp_gateway.http.session_relay import SessionRelay
from mcp_gateway.telemetry import inbound
from mcp_gateway.types import Principal

logger = logging.getLogger(__name__)

SESSION_HEADER: Final = b"mcp-session-id"
REQUEST_CANCELLED: Final = -32800
PING_AFTER: Final = 15.0
_MODERN_ENVELOPE: Final = (
    "this connection serves the handshake protocol era; "
    "requests carrying the 2026-07-28 envelope are not accepted on it"
)


def _refusal(status: int, message: str, code: int = types.INVALID_REQUEST) -> tuple[int, bytes]:
    return status, wire.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}})


class LegacyDoor:
    """ASGI app: the 2025-11-25 Streamable HTTP transport with sessions (see the module doc).

    Args:
        gateway: the governed path.
        federation: resources, prompts, completions and resource subscriptions (one per gateway).
        security: the Host/Origin allow-lists (``app.transport_security``).
        max_body: the request body limit in bytes.
        sessions: the session table (its ``run`` belongs in the app's lifespan).
        poll_seconds: how often an open GET stream looks for a changed tool list.
    """

    def __init__(
        self,
        gateway: Gateway,
        federation: Federation,
        *,
        security: TransportSecuritySettings,
        max_body: int,
        sessions: SessionTable,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.gateway = gateway
        self.federation = federation
        self.sessions = sessions
        self.poll_seconds = poll_seconds
        self._security = TransportSecurityMiddleware(security)
        self._max_body = max_body
        self.served = 0  # requests answered in sessions (tests and benchmarks read it)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        headers = headers_of(scope)
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self._max_body:
            await too_large(send)
            return
        post = method == "POST"
        if not plainly_allowed(self._security.settings, headers, post):
            refused = await self._security.validate_request(Request(scope), is_post=post)
            if refused is not None:
                await refused(scope, receive, send)
                return
        if method == "POST":
            answer = await self._post(scope, headers, receive, send)
        elif method in ("GET", "DELETE"):
            answer = await self._stream_or_end(scope, headers, receive, send)
        else:
            answer = _refusal(405, "Method Not Allowed")
        if answer is not None:
            await send_json(send, *answer)

    def _session(self, scope: Scope, request_headers: dict[bytes, bytes]) -> Session | tuple[int, bytes]:
        """The live session the request names, or the refusal to send."""
        found = request_headers.get(SESSION_HEADER)
        session_id = found.decode("latin-1") if found is not None else None
        if not session_id:
            return _refusal(400, "Bad Request: Missing session ID")
        session = self.sessions.find(session_id, owner_of(scope))
        return session if session is not None else _refusal(404, "Session not found")

    async def _post(
        self, scope: Scope, request_headers: dict[bytes, bytes], receive: Receive, send: Send
    ) -> tuple[int, bytes] | None:
        has_json, has_sse = accepts(request_headers.get(b"accept", b""))
        if not (has_json and has_sse):
            message = "Not Acceptable: Client must accept both application/json and text/event-stream"
            return _refusal(406, message)
        body = await read_body(receive, self._max_body)
        if body is None:
            return None  # the client went away
        if not isinstance(body, bytes):
            await too_large(send)
            return None
        try:
            decoded = wire.loads(body)
        except (ValueError, RecursionError):
            return _refusal(400, "Parse error", types.PARSE_ERROR)
        kind = _kind(decoded)
        if kind is None:
            return _refusal(400, "Validation error: not one JSON-RPC message", types.INVALID_PARAMS)
        if kind == "request" and decoded["method"] == "initialize":
            return await self._initialize(scope, request_headers, decoded, send)
        found = self._session(scope, request_headers)
        if not isinstance(found, Session):
            return found
        headers = [(SESSION_HEADER, found.id.encode("latin-1"))]
        if kind != "request":
            await send_json(send, 202, b"", headers)
            self._accept(found, kind, decoded)
            return None
        await self._serve(
            scope, found, decoded, receive, Reply(send, headers, ping_after=None, error_status=False)
        )
        return None

    async def _initialize(
        self, scope: Scope, request_headers: dict[bytes, bytes], decoded: dict[str, Any], send: Send
    ) -> tuple[int, bytes] | None:
        if request_headers.get(SESSION_HEADER):
            return _refusal(400, "Bad Request: initialize opens a session; this request names one")
        principal = scope.get("state", {}).get(PRINCIPAL_KEY)
        if not isinstance(principal, Principal):
            return _refusal(401, "unauthenticated")  # unreachable behind AuthMiddleware
        request_id = decoded["id"]
        try:
            params = types.InitializeRequestParams.model_validate(decoded.get("params") or {}, by_name=False)
        except ValidationError as exc:
            return 200, wire.dumps({"jsonrpc": "2.0", "id": request_id, "error": error_data(exc)})
        requested = params.protocol_version
        version = requested if requested in HANDSHAKE_PROTOCOL_VERSIONS else LATEST_HANDSHAKE_VERSION
        session = self.sessions.open(owner_of(scope), version, params)
        if session is None:
            return _refusal(503, "Too many open sessions", types.INTERNAL_ERROR)
        result = types.InitializeResult(
            protocol_version=version,
            capabilities=capabilities(self.gateway, principal),
            server_info=types.Implementation.model_validate(SERVER_INFO),
            instructions=INSTRUCTIONS,
        )
        answer = {"jsonrpc": "2.0", "id": request_id, "result": shape("initialize", version, result)}
        await send_json(send, 200, wire.dumps(answer), [(SESSION_HEADER, session.id.encode("latin-1"))])
        return None

    def _accept(self, session: Session, kind: str, decoded: dict[str, Any]) -> None:
        """Act on a notification or a response the client sent on its session."""
        if kind == "response":
            session.answer(decoded)
        elif decoded.get("method") == "notifications/cancelled":
            params = decoded.get("params")
            session.cancel(params.get("requestId") if isinstance(params, dict) else None)

    async def _serve(
        self, scope: Scope, session: Session, decoded: dict[str, Any], receive: Receive, reply: Reply
    ) -> None:
        """Serve one request of a session; nothing is sent when the client went away first."""
        principal = scope.get("state", {}).get(PRINCIPAL_KEY)
        method, request_id = decoded["method"], decoded["id"]
        params = decoded.get("params")
        meta = params.get("_meta") if isinstance(params, dict) else None
        meta = meta if isinstance(meta, dict) else {}
        assert isinstance(principal, Principal)  # noqa: S101 - AuthMiddleware put it there
        served = Served(self.gateway, self.federation, principal, session.version, request_id, reply, session)
        token = CURRENT_RELAY.set(SessionRelay(self.gateway, principal, session, meta, reply))
        call = session.serving(request_id)
        watch = Watch(receive, call, reply)
        timer = asyncio.get_running_loop().call_later(WATCH_AFTER, watch.start)
        self.sessions.enter(session)
        answer: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id}
        facts = inbound(
            protocol_version=session.version,
            session_id=session.id,
            request_id=request_id,
            meta=meta,
            headers=Headers(scope=scope),
        )
        try:
            with call, facts:
                if types.PROTOCOL_VERSION_META_KEY in meta:
                    raise _Refused(types.INVALID_REQUEST, _MODERN_ENVELOPE)
                admit(method, session.version, params, SESSION_METHODS)
                result = await SESSION_METHODS[method](served, params or {})
                answer["result"] = shape(method, session.version, result)
        except _Refused as exc:
            answer["error"] = {"code": exc.code, "message": exc.message}
        except Exception as exc:
            answer["error"] = error_data(exc)
        finally:
            timer.cancel()
            watch.stop()
            CURRENT_RELAY.reset(token)
            session.done(request_id)
            self.sessions.leave(session)
        self.served += 1
        if call.cancelled_caught:
            if watch.gone or session.closed:
                reply.close()
                return
            answer.pop("result", None)
            answer["error"] = {"code": REQUEST_CANCELLED, "message": "Request cancelled"}
        await reply.finish(answer)

    async def _stream_or_end(
        self, scope: Scope, request_headers: dict[bytes, bytes], receive: Receive, send: Send
    ) -> tuple[int, bytes] | None:
        """GET: the session's standalone stream; DELETE: end the session."""
        if scope["method"] == "GET" and not accepts(request_headers.get(b"accept", b""))[1]:
            return _refusal(406, "Not Acceptable: Client must accept text/event-stream")
        found = self._session(scope, request_headers)
        if not isinstance(found, Session):
            return found
        headers = [(SESSION_HEADER, found.id.encode("latin-1"))]
        if scope["method"] == "DELETE":
            await self.sessions.close(found)
            await send_json(send, 200, b"", headers)
            return None
        if found.streaming:
            return _refusal(409, "Conflict: Only one SSE stream is allowed per session")
        found.streaming = True
        self.sessions.enter(found)
        try:
            principal = scope.get("state", {}).get(PRINCIPAL_KEY)
            assert isinstance(principal, Principal)  # noqa: S101 - AuthMiddleware put it there
            changes = tool_list_changes(self.gateway, principal, self.poll_seconds)
            await _standalone(found, receive, send, headers, changes)
        finally:
            found.streaming = False
            self.sessions.leave(found)
        return None


class _Refused(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _kind(decoded: Any) -> str | None:
    """``request``, ``notification`` or ``response`` for one well-formed JSON-RPC message, else None."""
    if not isinstance(decoded, dict):
        return None
    try:
        if "method" in decoded:
            if "id" in decoded:
                return "request" if request_of(decoded) is not None else None
            types.JSONRPCNotification.model_validate(decoded)
            return "notification"
        if "error" in decoded:
            types.JSONRPCError.model_validate(decoded)
        else:
            types.JSONRPCResponse.model_validate(decoded)
    except ValidationError:
        return None
    return "response"


async def _standalone(
    session: Session,
    receive: Receive,
    send: Send,
    headers: list[tuple[bytes, bytes]],
    changes: AsyncIterator[None],
) -> None:
    """The GET stream: what the session carries outside any request (resource updates, the caller's
    tool list changing), until the client or the session ends."""
    start = [
        (b"content-type", b"text/event-stream"),
        (b"cache-control", b"no-cache, no-transform"),
        (b"connection", b"keep-alive"),
        *headers,
    ]
    await send({"type": "http.response.start", "status": 200, "headers": start})

    async def pump() -> None:
        while True:
            message: dict[str, Any] | None = None
            with anyio.move_on_after(PING_AFTER):
                try:
                    message = await session.outbox.receive()
                except (anyio.EndOfStream, anyio.ClosedResourceError):
                    break
            body = event(message) if message is not None else b": ping\r\n\r\n"
            await send({"type": "http.response.body", "body": body, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            tg.cancel_scope.cancel()

        async def tools() -> None:
            async for _ in changes:
                try:
                    session.post(TOOLS_CHANGED, {})
                except anyio.ClosedResourceError:
                    return  # the session ended; the pump ends the stream

        tg.start_soon(watch)
        tg.start_soon(tools)
        try:
            await pump()
        except OSError:
            pass  # the client went away mid-write
        tg.cancel_scope.cancel()
