"""The ``gateway`` toolset: tools about the gateway itself, always present, granted like any other.

``gateway.echo(text)`` answers with the text and the caller's identity. It touches nothing outside
the gateway, so an agent (or an operator wiring one up) can check that its token, its grant, the audit
log and redaction all work, and the benchmarks can measure the governed built-in path against a bare
SDK server's ``echo`` with nothing else in the way.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from mcp_gateway.tools.base import BuiltinTool, ToolContext, ToolInput, Toolset


class EchoInput(ToolInput):
    text: str = Field(max_length=4096, description="any text; it comes back unchanged")


async def _echo(ctx: ToolContext, args: EchoInput) -> dict[str, Any]:
    return {"text": args.text, "agent": ctx.principal.agent, "token_id": ctx.principal.token_id}


def build_gateway_toolset() -> Toolset:
    """The ``gateway`` toolset (no configuration, no I/O)."""
    echo = BuiltinTool(
        "gateway.echo",
        "Answer with the given text and the caller's agent name: a check that the connection, the token, "
        "the grant and the audit log work.",
        EchoInput,
        _echo,
        read_only=True,
        idempotent=True,
        open_world=False,
    )
    return Toolset("gateway", {echo.name: echo})
