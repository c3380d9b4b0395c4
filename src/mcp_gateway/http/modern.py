"""The 2026-07-28 front door: every stateless request, served by the gateway's own dispatch.

A 2026-07-28 request is one self-contained POST: no handshake, no session. ``ModernDoor`` takes every
request whose ``MCP-Protocol-Version`` header is not a handshake-era version (as the SDK routes them)
and answers it itself, in the request's own task, with the checks the spec asks for, in this order:

1. body size (413 over ``max_body``), Host/Origin against DNS rebinding (421/403) and Content-Type
   (400), with the SDK's ``TransportSecurityMiddleware``; a method other than POST is 405;
2. ``Accept`` must take JSON and SSE (406); ``subscriptions/listen`` always needs SSE;
3. the body: not JSON → -32700; a notification → 202 (this era defines none from the client: a
   request is cancelled by closing its connection); not one request → -32600;
4. the routing headers: each once (``Mcp-Method``, ``Mcp-Name``, ...), agreeing with the body, and
   the envelope's version supported (the SDK's ``classify_inbound_request`` ladder); a ``tools/call``'s
   ``Mcp-Param-*`` headers against the tool's schema (only the caller's granted tools have one);
5. ``methods.dispatch``: the version's params surface, the method, the governed core, the result
   shaped for the version.

The answer is JSON, or SSE once a notification about the request (progress, an opted-in log message,
a listen stream) must go first (``reply.py``). A client that disconnects cancels its request: the
governed skeleton records ``cancelled`` and the upstream request is abandoned (its cancel scope).
Errors carry the HTTP status the spec gives their code.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

import anyio
import mcp_types as types
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.shared.inbound import (
    InboundLadderRejection,
    classify_inbound_request,
    find_duplicated_routing_header,
    unsupported_protocol_version_rejection,
    validate_mcp_param_headers,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import BaseModel, ValidationError
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from mcp_gateway import wire
from mcp_gateway.channel import CURRENT_RELAY
from mcp_gateway.core.federation import Federation
from mcp_gateway.core.gateway import Gateway
from mcp_gateway.http.auth import PRINCIPAL_KEY
from mcp_gateway.http.calls import ModernRelay
from mcp_gateway.http.headers import accepts, headers_of, plainly_allowed, repeats
from mcp_gateway.http.listen import POLL_SECONDS, listen
from mcp_gateway.http.methods import MODERN_METHODS, Served, admit, error_data, shape
from mcp_gateway.http.reply import Reply, send_json, send_status, status_of
from mcp_gateway.telemetry import inbound
from mcp_gateway.types import Principal

logger = logging.getLogger(__name__)

WATCH_AFTER: Final = 0.02
"""Seconds a request runs before its client's connection is watched for a disconnect."""
LISTEN: Final = "subscriptions/listen"
_HANDSHAKE: Final = frozenset(v.encode("latin-1") for v in HANDSHAKE_PROTOCOL_VERSIONS)
_SERVED: Final = frozenset({*MODERN_METHODS, LISTEN})
_INVALID_BODY: Final = "Body must be a single JSON-RPC request or notification object"
_ROUTING: Final = (
    ("mcp-protocol-version", b"mcp-protocol-version"),
    ("mcp-method", b"mcp-method"),
    ("mcp-name", b"mcp-name"),
)
"""The headers ``classify_inbound_request`` reads (it is handed just these)."""


def is_modern(scope: Scope) -> bool:
    """Whether the request belongs to this door: a version header that is not a handshake version."""
    version = headers_of(scope).get(b"mcp-protocol-version")
    return version is not None and version not in _HANDSHAKE


class Watch:
    """Cancels a request when its client disconnects, from a task started on demand."""

    __slots__ = ("_call", "_receive", "_reply", "_task", "gone")

    def __init__(self, receive: Receive, call: anyio.CancelScope, reply: Reply) -> None:
        self._receive = receive
        self._call = call
        self._reply = reply
        self._task: asyncio.Task[None] | None = None
        self.gone = False

    def start(self) -> None:
        """Watch for a disconnect, and keep the answer alive while the request runs."""
        self._reply.keep_alive()
        self._task = asyncio.get_running_loop().create_task(self._watch())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _watch(self) -> None:
        # The body is read: nothing but a disconnect can arrive.
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        self._call.cancel()


def request_of(decoded: Any) -> tuple[int | str, str, dict[str, Any] | None] | None:
    """``(id, method, params)`` of one JSON-RPC request, else None (as ``JSONRPCRequest`` decides;
    the common well-formed case is recognised without building the model)."""
    if isinstance(decoded, dict) and decoded.get("jsonrpc") == "2.0":
        request_id, method, params = decoded.get("id"), decoded.get("method"), decoded.get("params")
        if (
            isinstance(request_id, str | int)
            and not isinstance(request_id, bool)
            and isinstance(method, str)
            and (params is None or isinstance(params, dict))
        ):
            return request_id, method, params
    try:
        message = types.JSONRPCRequest.model_validate(decoded)
    except ValidationError:
        return None
    return message.id, message.method, message.params


def _error(request_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


async def too_large(send: Send) -> None:
    body = b"Request body too large"
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-length", str(len(body)).encode("latin-1"))],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive, limit: int) -> bytes | bool | None:
    """The request body; False when it outgrew ``limit``; None when the client went away."""
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return False
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _answer(send: Send, message: dict[str, Any]) -> None:
    await send_json(send, status_of(message), wire.dumps(message))


class ModernDoor:
    """ASGI app: serves every 2026-07-28 request (see the module doc).

    Args:
        gateway: the governed path.
        federation: resources, prompts, completions and resource subscriptions (one per gateway).
        security: the Host/Origin allow-lists (``app.transport_security``).
        max_body: the request body limit in bytes.
        poll_seconds: how often an open listen stream looks for a changed tool list.
    """

    def __init__(
        self,
        gateway: Gateway,
        federation: Federation,
        *,
        security: TransportSecuritySettings,
        max_body: int,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.gateway = gateway
        self.federation = federation
        self._security = TransportSecurityMiddleware(security)
        self._max_body = max_body
        self._poll = poll_seconds
        self.served = 0  # requests answered by dispatch (tests and benchmarks read it)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = headers_of(scope)
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self._max_body:
            await too_large(send)
            return
        post = scope["method"] == "POST"
        if not plainly_allowed(self._security.settings, headers, post):
            refused = await self._security.validate_request(Request(scope), is_post=post)
            if refused is not None:
                await refused(scope, receive, send)
                return
        if not post:
            await send_status(send, 405, [(b"allow", b"POST")])
            return
        has_json, has_sse = accepts(headers.get(b"accept", b""))
        if not (has_json and has_sse):
            await send_status(send, 406)
            return
        body = await read_body(receive, self._max_body)
        if body is None:
            return  # the client went away
        if not isinstance(body, bytes):
            await too_large(send)
            return
        try:
            decoded = wire.loads(body)
        except (ValueError, RecursionError):
            await _answer(send, _error(None, types.PARSE_ERROR, "Parse error"))
            return
        if isinstance(decoded, dict) and "id" not in decoded:
            await self._notification(decoded, headers, send)
            return
        message = request_of(decoded)
        if message is None:
            await _answer(send, _error(None, types.INVALID_REQUEST, _INVALID_BODY))
            return
        request_id, method, params = message
        if method == LISTEN and not has_sse:
            await send_status(send, 406)
            return
        principal = scope.get("state", {}).get(PRINCIPAL_KEY)
        rejection = self._ladder(scope, headers, principal, decoded, method, params)
        if rejection is not None:
            await _answer(send, _error(request_id, rejection.code, rejection.message, rejection.data))
            return
        if not isinstance(principal, Principal):
            # Unreachable behind AuthMiddleware; refuse rather than guess.
            await _answer(send, _error(request_id, types.INVALID_REQUEST, "unauthenticated"))
            return
        await self._serve(principal, request_id, method, params, receive, send)

    async def _notification(self, decoded: dict[str, Any], headers: dict[bytes, bytes], send: Send) -> None:
        """Acknowledge a notification (202) at a served version; this era acts on none."""
        try:
            types.JSONRPCNotification.model_validate(decoded)
        except ValidationError:
            await _answer(send, _error(None, types.INVALID_REQUEST, _INVALID_BODY))
            return
        version = headers.get(b"mcp-protocol-version", b"").decode("latin-1")
        unsupported = unsupported_protocol_version_rejection(version)
        if unsupported is not None:
            await _answer(send, _error(None, unsupported.code, unsupported.message, unsupported.data))
            return
        await send_status(send, 202)

    def _ladder(
        self,
        scope: Scope,
        headers: dict[bytes, bytes],
        principal: Any,
        decoded: dict[str, Any],
        method: str,
        params: dict[str, Any] | None,
    ) -> InboundLadderRejection | None:
        """The routing-header and envelope checks, then a tool call's ``Mcp-Param-*`` headers."""
        if repeats(scope, headers):
            duplicated = find_duplicated_routing_header(Headers(scope=scope).items())
            if duplicated is not None:
                return InboundLadderRejection(
                    code=types.HEADER_MISMATCH, message=f"{duplicated} header appears more than once"
                )
        routing: dict[str, str] = {}
        for header, key in _ROUTING:
            value = headers.get(key)
            if value is not None:
                routing[header] = value.decode("latin-1")
        verdict = classify_inbound_request(decoded, headers=routing)
        if isinstance(verdict, InboundLadderRejection):
            return verdict
        params = params or {}
        name, arguments = params.get("name"), params.get("arguments")
        if method != "tools/call" or not isinstance(name, str):
            return None
        if arguments is not None and not isinstance(arguments, dict):
            return None  # the params surface refuses it
        if not self.gateway.binds_param_headers(name):
            return None  # nothing in the schema to compare a header with
        schema = self.gateway.input_schema(principal, name) if isinstance(principal, Principal) else None
        if schema is None:
            return None
        return validate_mcp_param_headers(schema, arguments or {}, Headers(scope=scope))

    async def _serve(
        self,
        principal: Principal,
        request_id: int | str,
        method: str,
        params: dict[str, Any] | None,
        receive: Receive,
        send: Send,
    ) -> None:
        """Dispatch; answer, or nothing when the client went away first (the request was cancelled)."""
        meta = params.get("_meta") if isinstance(params, dict) else None
        version = meta.get(types.PROTOCOL_VERSION_META_KEY) if isinstance(meta, dict) else None
        reply = Reply(send, ping_after=None)
        served = Served(self.gateway, self.federation, principal, str(version), request_id, reply)
        token = CURRENT_RELAY.set(ModernRelay(self.gateway, principal, meta or {}, reply))
        call = anyio.CancelScope()
        watch = Watch(receive, call, reply)
        # A watcher (and keep-alive) per request costs several percent of the path's CPU: most
        # requests end before WATCH_AFTER; a disconnect after that is noticed at once (the server
        # remembers it).
        timer = asyncio.get_running_loop().call_later(0 if method == LISTEN else WATCH_AFTER, watch.start)
        answer: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id}
        facts = inbound(protocol_version=str(version), request_id=request_id, meta=meta)
        try:
            with call, facts:
                answer["result"] = await self._dispatch(served, method, params)
        except Exception as exc:
            answer["error"] = error_data(exc)
        finally:
            timer.cancel()
            watch.stop()
            CURRENT_RELAY.reset(token)
        self.served += 1
        if call.cancelled_caught:
            reply.close()
            return
        await reply.finish(answer)

    async def _dispatch(self, served: Served, method: str, params: dict[str, Any] | None) -> dict[str, Any]:
        admit(method, served.version, params, _SERVED)
        result: BaseModel
        if method == LISTEN:
            result = await listen(served, params or {}, self._poll)
        else:
            result = await MODERN_METHODS[method](served, params or {})
        return shape(method, served.version, result)


class EraRouter:
    """Sends 2026-07-28 requests to ``modern`` and the rest (2025-11-25 sessions) to ``legacy``."""

    def __init__(self, modern: ModernDoor, legacy: Any) -> None:
        self.modern = modern
        self.app = legacy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_modern(scope):
            await self.modern(scope, receive, send)
        else:
            await self.app(scope, receive, send)
