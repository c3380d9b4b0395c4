"""The lean HTTP path for the commonest request: a plain 2026-07-28 ``tools/call``.

A 2026-07-28 request is one self-contained POST, so the gateway can answer the common case without the
SDK's per-request machinery (request and params models, a server runner and session, a task group and
memory stream for the SSE deferral window), which cost about a third of the gateway's CPU per call.

``FastToolCall`` sits between ``AuthMiddleware`` (so the caller is already authenticated) and the SDK
transport. It serves a request only when every check the SDK would make passes, using the SDK's own
functions for them: Host/Origin and Content-Type (DNS-rebinding protection), Accept, body size, the
JSON-RPC envelope, duplicated routing headers, the modern ladder (``MCP-Protocol-Version`` /
``Mcp-Method`` / ``Mcp-Name`` against the body, supported version), the per-version params surface and
``Mcp-Param-*`` headers against the tool's schema. The governed call itself is the same function the SDK
handler calls (``governed_call``), and the result is shaped as the SDK shapes it (per-version result
sieve, ``resultType``, the ``serverInfo`` stamp); a test compares both paths byte for byte.

A plain ``tools/call`` inside an established 2025-11-25 session is served here too
(``session_path.py``: the session rules, the log relay, cancellation).

Anything else goes to the SDK with the body replayed, so the SDK answers it exactly as before: another
method, a session this path may not serve, a progress token or any other ``_meta`` key (they need the
SDK's stream), unknown params members, a check that fails (the SDK then produces the rejection), a body
without a declared length or over the limit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Final

import anyio
import mcp_types as types
from mcp.server.lowlevel.server import Server
from mcp.server.runner import modern_error_data
from mcp.server.streamable_http import check_accept_headers
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    InboundLadderRejection,
    classify_inbound_request,
    find_duplicated_routing_header,
    validate_mcp_param_headers,
)
from mcp_types import methods
from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_gateway import wire
from mcp_gateway.channel import CURRENT_RELAY
from mcp_gateway.core.gateway import Gateway
from mcp_gateway.http.auth import PRINCIPAL_KEY
from mcp_gateway.http.calls import ModernCaller, governed_call
from mcp_gateway.http.lean_wire import METHOD, loads, parse, parse_in_session
from mcp_gateway.http.sessions import REQUEST_CANCELLED, SessionDirectory, StreamRelay
from mcp_gateway.types import Principal

logger = logging.getLogger(__name__)


MODERN_VERSION: Final = "2026-07-28"
_MODERN: Final = MODERN_VERSION.encode("latin-1")
WATCH_AFTER: Final = 0.02
"""Seconds a lean call runs before its client's connection is watched for a disconnect."""
GONE: Final = (499, b"")
"""What a lean call answers when its client disconnected first: nothing is sent."""


class _Watch:
    """Cancels a call when its client disconnects, from a task started on demand."""

    __slots__ = ("_call", "_receive", "_task")

    def __init__(self, receive: Receive, call: anyio.CancelScope) -> None:
        self._receive = receive
        self._call = call
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _watch(self) -> None:
        # The body is read: nothing but a disconnect can arrive.
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self._call.cancel()


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands out the already-read body once, then defers to the real one."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed


class FastToolCall:
    """ASGI middleware: answers eligible 2026-07-28 ``tools/call`` POSTs, passes everything else on.

    Args:
        app: the SDK transport app (``StreamableHTTPASGIApp``).
        gateway: the governed call path.
        server: the SDK server whose answers this path must match (its ``serverInfo`` stamp).
        security: the same Host/Origin settings the SDK transport enforces.
        max_body: the SDK's request body limit; a larger or undeclared body goes to the SDK.
        json_response: the SDK manager's ``json_response`` (False: it also requires an SSE Accept).
        sessions: the 2025-11-25 sessions this path may serve calls in; None: none.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        gateway: Gateway,
        server: Server[Any],
        security: TransportSecuritySettings,
        max_body: int,
        json_response: bool = False,
        sessions: SessionDirectory | None = None,
    ) -> None:
        self.app = app
        self._sessions = sessions
        self.gateway = gateway
        self.served = 0  # answered here (tests and benchmarks read it)
        self.served_in_session = 0  # of which inside a 2025-11-25 session
        self._security = TransportSecurityMiddleware(security)
        self._max_body = max_body
        self._json_response = json_response
        self._stamp = server.server_info_stamp
        # A cache hint for tools/call would be applied by the SDK's serializer; this path does not.
        self._enabled = server.cache_hints.get(METHOD) is None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        session = self._eligible(scope) if self._enabled else None
        if session is None:
            await self.app(scope, receive, send)
            return
        body = await self._read(receive)
        if body is None:
            return  # the client went away before sending its body: nobody to answer
        if session:
            if await self._serve_in_session(scope, session, body, send):
                self.served += 1
                self.served_in_session += 1
            else:
                await self.app(scope, _replay(body, receive), send)
            return
        answer = await self._answer(scope, body, receive)
        if answer is None:
            await self.app(scope, _replay(body, receive), send)
            return
        status, payload = answer
        self.served += 1
        if answer is GONE:
            return
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode("latin-1")),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    def _eligible(self, scope: Scope) -> str | None:
        """For a POST that declares a body length within the limit: ``""`` for a modern session-less
        one, the session id for one in a 2025-era session (with a version header), else None."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        version: bytes | None = None
        length: bytes | None = None
        session: bytes | None = None
        for key, value in scope["headers"]:
            if key == b"mcp-protocol-version":
                version = value
            elif key == b"content-length":
                length = value
            elif key == b"mcp-session-id":
                session = value
        if length is None or not length.isdigit() or int(length) > self._max_body:
            return None
        if session is None:
            return "" if version == _MODERN else None
        if self._sessions is None or version is None or version == _MODERN or not session:
            return None
        return session.decode("latin-1")

    @staticmethod
    async def _read(receive: Receive) -> bytes | None:
        """The request body, or None if the client went away (nothing left to answer)."""
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        return b"".join(chunks)

    async def _admitted(self, scope: Scope) -> tuple[Principal, Request] | None:
        """The caller and request if the transport checks the SDK makes pass (authenticated caller,
        Host/Origin and Content-Type, Accept), else None."""
        principal = scope.get("state", {}).get(PRINCIPAL_KEY)
        if not isinstance(principal, Principal):
            return None
        request = Request(scope)
        if await self._security.validate_request(request, is_post=True) is not None:
            return None
        has_json, has_sse = check_accept_headers(request)
        if not has_json or (not self._json_response and not has_sse):
            return None
        return principal, request

    async def _answer(self, scope: Scope, body: bytes, receive: Receive) -> tuple[int, bytes] | None:
        """``(status, JSON)`` for a request this path serves, None to hand it to the SDK."""
        admitted = await self._admitted(scope)
        if admitted is None:
            return None
        principal, request = admitted
        parsed = parse(body)
        if parsed is None:
            return None
        decoded, request_id, params, name, arguments = parsed
        headers = request.headers
        if find_duplicated_routing_header(headers.items()) is not None:
            return None
        verdict = classify_inbound_request(decoded, headers=dict(headers))
        if isinstance(verdict, InboundLadderRejection) or verdict.protocol_version != MODERN_VERSION:
            return None
        try:
            methods.validate_client_request(METHOD, MODERN_VERSION, params)
        except (ValidationError, KeyError):
            return None
        if self.gateway.binds_param_headers(name):
            schema = self.gateway.input_schema(principal, name)
            if schema is not None and validate_mcp_param_headers(schema, arguments, headers) is not None:
                return None
        return await self._call(request_id, principal, name, arguments, params["_meta"], receive)

    async def _serve_in_session(self, scope: Scope, session_id: str, body: bytes, send: Send) -> bool:
        """Answer a plain ``tools/call`` in a 2025-era session; False (nothing sent) to let the SDK."""
        sessions = self._sessions
        admitted = await self._admitted(scope) if sessions is not None else None
        if sessions is None or admitted is None:
            return False
        principal, request = admitted
        found = sessions.find(scope, session_id)
        if found is None:
            return False
        transport, version = found
        decoded = loads(body)
        if decoded is not None and decoded.get("method") == "notifications/cancelled":
            sessions.cancel(session_id, decoded.get("params"))
            return False  # the SDK also gets it (and answers 202)
        parsed = parse_in_session(decoded)
        if parsed is None or request.headers.get("mcp-protocol-version") != version:
            return False
        request_id, params, name, arguments = parsed
        try:
            methods.validate_client_request(METHOD, version, params)
        except (ValidationError, KeyError):
            return False
        if self.gateway.relays_requests(name):
            return False  # the upstream may ask the client something: only the SDK session can
        relay = StreamRelay(self.gateway, send, session_id)
        cancel = sessions.serving(session_id, request_id)
        token = CURRENT_RELAY.set(relay)
        sessions.touch(transport)
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id}
        try:
            with cancel:
                result = await governed_call(self.gateway, principal, name, arguments)
                message["result"] = self._shape(result, version)
        except MCPError as exc:
            message["error"] = exc.error.model_dump(mode="json", by_alias=True, exclude_none=True)
        except Exception:
            logger.exception("tools/call %s failed", name)
            message["error"] = {"code": types.INTERNAL_ERROR, "message": "Internal server error"}
        finally:
            CURRENT_RELAY.reset(token)
            sessions.done(session_id, request_id)
            sessions.touch(transport)
        if cancel.cancelled_caught:
            message.pop("result", None)
            message["error"] = {"code": REQUEST_CANCELLED, "message": "Request cancelled"}
        await relay.finish(message)
        return True

    async def _call(
        self,
        request_id: int | str,
        principal: Principal,
        name: str,
        arguments: Mapping[str, Any],
        envelope: Mapping[str, Any],
        receive: Receive,
    ) -> tuple[int, bytes]:
        """Run the call; ``GONE`` when the client went away first (the call was cancelled: the skeleton
        records ``cancelled``, the upstream request is abandoned, nobody is left to answer)."""
        token = CURRENT_RELAY.set(
            ModernCaller(self.gateway, principal, envelope.get(types.CLIENT_CAPABILITIES_META_KEY))
        )
        call = anyio.CancelScope()
        answer = GONE
        # A 2026-07-28 request is its own connection's only business: a disconnect is its end. A bare
        # asyncio task watches for it, started only once the call has run for WATCH_AFTER (most calls
        # end first, and a watcher per call cost several percent of the path's CPU); a disconnect is
        # then noticed at once (the server remembers it).
        watch = _Watch(receive, call)
        timer = asyncio.get_running_loop().call_later(WATCH_AFTER, watch.start)
        try:
            with call:
                answer = await self._answered(request_id, principal, name, arguments)
        finally:
            timer.cancel()
            watch.stop()
            CURRENT_RELAY.reset(token)
        return answer

    async def _answered(
        self, request_id: int | str, principal: Principal, name: str, arguments: Mapping[str, Any]
    ) -> tuple[int, bytes]:
        try:
            result = await governed_call(self.gateway, principal, name, arguments)
            shaped = self._shape(result, MODERN_VERSION)
        except MCPError as exc:
            return _error(request_id, exc.error)
        except Exception as exc:
            logger.exception("tools/call %s failed", name)
            return _error(request_id, modern_error_data(exc))
        message = {"jsonrpc": "2.0", "id": request_id, "result": shaped}
        return 200, wire.dumps(message)

    def _shape(
        self, result: types.CallToolResult | types.InputRequiredResult, version: str
    ) -> dict[str, Any]:
        """The result's wire form, as the SDK's runner shapes a ``tools/call`` result for ``version``."""
        dumped = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        try:
            dumped = methods.serialize_server_result(METHOD, version, dumped)
        except ValidationError:
            logger.exception("tools/call returned an invalid result")
            raise MCPError(code=types.INTERNAL_ERROR, message="Handler returned an invalid result") from None
        if version != MODERN_VERSION:
            return dumped
        if dumped.get("resultType") is None:
            dumped["resultType"] = "complete"
        meta = dumped.get("_meta")
        key = types.SERVER_INFO_META_KEY
        if meta is None:
            dumped["_meta"] = {key: self._stamp}
        elif isinstance(meta, dict) and meta.get(key) is None:
            dumped["_meta"] = {**meta, key: self._stamp}
        return dumped


def _error(request_id: int | str, error: types.ErrorData) -> tuple[int, bytes]:
    message = {
        "jsonrpc": "2.0",
        "id": request_id,
        "error": error.model_dump(mode="json", by_alias=True, exclude_none=True),
    }
    status = ERROR_CODE_HTTP_STATUS.get(error.code, 200)
    return status, wire.dumps(message)
