"""A ``tools/call`` as the MCP answer, shared by the SDK handler (``handlers.py``) and the lean path
(``lean.py``): errors mapped by ``errors.protocol_error``, anything unexpected a generic error."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import mcp_types as types
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from mcp_gateway.channel import ClientBoundRequest
from mcp_gateway.core.asked import ask_agent
from mcp_gateway.core.gateway import Gateway
from mcp_gateway.core.request_state import Resume
from mcp_gateway.errors import CallRefused, ProtocolRefusal
from mcp_gateway.http.errors import protocol_error
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


class ModernCaller:
    """The relay of a lean 2026-07-28 call: the capabilities its envelope declared, and no stream to
    put notifications on (a call that asked for progress goes to the SDK)."""

    wants_progress = False
    modern = True

    def __init__(self, gateway: Gateway, principal: Principal, declared: Any) -> None:
        self._gateway = gateway
        self._principal = principal
        self._declared = declared
        self._parsed = False
        self._capabilities: types.ClientCapabilities | None = None

    @property
    def client_capabilities(self) -> types.ClientCapabilities | None:
        # Parsed on first use: most calls never ask (only an upstream that may put input requests).
        if not self._parsed:
            self._parsed = True
            try:
                self._capabilities = types.ClientCapabilities.model_validate(self._declared or {})
            except ValidationError:
                self._capabilities = None
        return self._capabilities

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        return None

    async def log(self, level: str, data: Any, logger_name: str | None) -> None:
        return None

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
