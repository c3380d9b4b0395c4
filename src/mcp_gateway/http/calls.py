"""A ``tools/call`` as the MCP answer, shared by the SDK handler (``handlers.py``) and the lean path
(``lean.py``): errors mapped by ``errors.protocol_error``, anything unexpected a generic error."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

import mcp_types as types
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from mcp_gateway.channel import ClientBoundRequest
from mcp_gateway.core.asked import ask_agent
from mcp_gateway.core.gateway import Gateway
from mcp_gateway.core.request_state import Resume
from mcp_gateway.errors import CallRefused, ProtocolRefusal
from mcp_gateway.http.errors import protocol_error
from mcp_gateway.http.reply import Reply
from mcp_gateway.types import Principal

logger = logging.getLogger(__name__)


async def governed_call(
    gateway: Gateway,
    principal: Principal,
    name: str,
    arguments: Mapping[str, Any],
    resume: Resume | None = None,
) -> types.CallToolResult | types.InputRequiredResult:
    """One governed ``tools/call`` as the MCP answer: the SDK handler and the lean path share it.

    Raises:
        MCPError: what ``errors.protocol_error`` says (an ungranted tool, a bad ``requestState``, an
            upstream's -32021); ``INTERNAL_ERROR`` "Internal server error" for anything unexpected,
            whose text may quote arguments or upstream output.
    """
    try:
        return await gateway.call_tool(principal, name, arguments, resume)
    except (CallRefused, ProtocolRefusal) as exc:
        error = protocol_error(exc)
        if error is not None:
            raise error from None
        return types.CallToolResult(content=[types.TextContent(type="text", text=str(exc))], is_error=True)
    except MCPError:
        raise
    except Exception:
        logger.exception("tools/call %s failed", name[:200])
        raise MCPError(types.INTERNAL_ERROR, "Internal server error") from None


_LEVELS: Final = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")


class ModernRelay:
    """The relay of one 2026-07-28 request: the capabilities its envelope declared; progress (when
    it carries a progress token) and log messages at or above the level its ``_meta`` opted in to, on
    its own answer (``reply.py``); nothing else (the era has no other stream for them).

    Args:
        gateway: the governed path (relayed requests are governed exchanges).
        principal: the caller.
        meta: the request's ``params._meta`` (envelope, progress token, log level).
        reply: the request's answer, where notifications go (None: nowhere).
    """

    modern = True

    def __init__(
        self, gateway: Gateway, principal: Principal, meta: Mapping[str, Any], reply: Reply | None = None
    ) -> None:
        self._gateway = gateway
        self._principal = principal
        self._meta = meta
        self._reply = reply
        token = meta.get("progressToken")
        self._token = token if isinstance(token, int | str) and not isinstance(token, bool) else None
        level = meta.get(types.LOG_LEVEL_META_KEY)
        self._from_level = _LEVELS.index(level) if level in _LEVELS else len(_LEVELS)
        self._parsed = False
        self._capabilities: types.ClientCapabilities | None = None

    @property
    def wants_progress(self) -> bool:
        return self._token is not None and self._reply is not None

    @property
    def client_capabilities(self) -> types.ClientCapabilities | None:
        # Parsed on first use: most calls never ask (only an upstream that may put input requests).
        if not self._parsed:
            self._parsed = True
            try:
                declared = self._meta.get(types.CLIENT_CAPABILITIES_META_KEY)
                self._capabilities = types.ClientCapabilities.model_validate(declared or {})
            except ValidationError:
                self._capabilities = None
        return self._capabilities

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        if self._token is None or self._reply is None:
            return
        params: dict[str, Any] = {"progressToken": self._token, "progress": progress}
        if total is not None:
            params["total"] = total
        if message is not None:
            params["message"] = message
        await self._reply.notify({"jsonrpc": "2.0", "method": "notifications/progress", "params": params})

    async def log(self, level: str, data: Any, logger_name: str | None) -> None:
        # 2026-07-28: a log message goes only on the answer of a request that opted in at its level.
        if self._reply is None or level not in _LEVELS or _LEVELS.index(level) < self._from_level:
            return
        params: dict[str, Any] = {"level": level, "data": data}
        if logger_name is not None:
            params["logger"] = logger_name
        await self._reply.notify({"jsonrpc": "2.0", "method": "notifications/message", "params": params})

    async def ask(self, upstream: str, request: ClientBoundRequest) -> types.Result | types.ErrorData:
        # 2026-07-28: an upstream's input requests come back in its answer, never mid-call; one that
        # asks mid-call (a 2025-11-25 upstream) is refused, and the refusal audited like any exchange.
        gateway = self._gateway
        redactor = gateway.secrets.redactor()
        return await ask_agent(
            gateway.governor, redactor, self._principal, upstream, request, can_answer=False, send=_unasked
        )


async def _unasked(params: dict[str, Any]) -> tuple[str, types.Result | types.ErrorData]:
    raise AssertionError("a request the client cannot answer is never sent")  # pragma: no cover
