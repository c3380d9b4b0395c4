"""Running the gateway's own tools (``tools/``) inside the governed call path.

``gateway.py`` decides, audits and redacts; this module validates a built-in tool's arguments
against its input model and turns what the tool does into a JSON-ready result payload.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from mcp_gateway.errors import GatewayError, InvalidArguments
from mcp_gateway.tools.base import BuiltinTool, NeedsApproval, ToolContext, ToolFailure, Toolset
from mcp_gateway.types import ToolSpec

logger = logging.getLogger(__name__)

_MAX_ERRORS = 8


def builtin_specs(toolsets: Mapping[str, Toolset]) -> dict[str, tuple[ToolSpec, BuiltinTool[Any]]]:
    """Every built-in tool by public name, with the ``ToolSpec`` the catalog offers."""
    specs: dict[str, tuple[ToolSpec, BuiltinTool[Any]]] = {}
    for toolset in toolsets.values():
        for tool in toolset.tools.values():
            specs[tool.name] = (ToolSpec(tool.name, "", tool.name, tool.definition()), tool)
    return specs


def parse_arguments(tool: BuiltinTool[Any], arguments: Mapping[str, Any]) -> BaseModel:
    """Validate ``arguments`` against the tool's input model.

    Raises:
        InvalidArguments: naming each bad argument and why (values are not echoed: they may be long
            or carry what an agent should not see again in an error).
    """
    try:
        model: BaseModel = tool.input_model.model_validate(dict(arguments))
        return model
    except ValidationError as exc:
        problems = [
            f"`{'.'.join(str(part) for part in error['loc']) or '(arguments)'}`: {error['msg'].lower()}"
            for error in exc.errors()[:_MAX_ERRORS]
        ]
        more = len(exc.errors()) - _MAX_ERRORS
        if more > 0:
            problems.append(f"and {more} more")
        raise InvalidArguments(f"invalid arguments for `{tool.name}`: " + "; ".join(problems)) from None


def _payload(result: Mapping[str, Any], is_error: bool = False) -> dict[str, Any]:
    text = json.dumps(result, ensure_ascii=False, default=str, sort_keys=True)
    payload: dict[str, Any] = {"content": [{"type": "text", "text": text}], "structuredContent": dict(result)}
    if is_error:
        payload["isError"] = True
    return payload


def error_payload(message: str) -> dict[str, Any]:
    """A tool-error payload with one text block."""
    return {"content": [{"type": "text", "text": message}], "isError": True}


async def run_builtin(
    tool: BuiltinTool[Any], ctx: ToolContext, model: BaseModel
) -> tuple[dict[str, Any], str]:
    """Run the tool; returns ``(payload, status)`` with status ``ok`` or ``error``.

    Raises:
        NeedsApproval: the tool found that this call needs a human first (it changed nothing).
    """
    try:
        result = await tool.run(ctx, model)
    except NeedsApproval:
        raise
    except ToolFailure as exc:
        ctx.audit_detail.update(exc.detail)
        return error_payload(str(exc)), "error"
    except GatewayError as exc:
        # Our own errors name things, never values (a sealed vault, a missing secret, an upstream
        # refusal); the result is scrubbed as well before it leaves.
        return error_payload(f"`{tool.name}` failed: {exc}"), "error"
    except Exception as exc:
        # The message may quote data or connection strings: the agent gets a generic error, the log
        # (scrubbed of vault values like every record) gets the type.
        logger.exception("built-in tool `%s` failed: %s", tool.name, type(exc).__name__)
        return error_payload(f"`{tool.name}` failed with an internal error ({type(exc).__name__})"), "error"
    return _payload(result), "ok"


def result_payload(result: Mapping[str, Any], *, is_error: bool = False) -> dict[str, Any]:
    """A structured result as a ``CallToolResult`` payload."""
    return _payload(result, is_error)
