"""Names an agent sees: ``<prefix><tool>``, the upstream's name and a dot by default, any prefix (or
none) when configured; a name two sources offer is offered by neither, and cannot be called."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp.shared.exceptions import MCPError
from pydantic import Field

from conftest import GatewayFactory, connect, leaky_stdio
from mcp_gateway.tools.base import BuiltinTool, ToolContext, ToolInput, Toolset

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

POLICY = """
version: 1
agents:
  agent-a:
    grants:
      - {id: all, tool: "*"}
"""


class _Text(ToolInput):
    text: str = Field(max_length=40)


async def _own_echo(ctx: ToolContext, args: _Text) -> dict[str, str]:
    return {"from": "builtin", "text": args.text}


def _clashing_toolset() -> Toolset:
    """A built-in tool named ``echo``: the same public name an unprefixed upstream's echo has."""
    tool = BuiltinTool("echo", "echo, the gateway's own", _Text, _own_echo, read_only=True)
    return Toolset("clash", {tool.name: tool})


async def test_an_unprefixed_upstream_offers_its_tools_under_their_own_names(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    upstream = {**leaky_stdio(tmp_path / "calls.log"), "prefix": ""}
    gw = make_gateway(POLICY, upstreams={"leaky": upstream})
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        result = await client.call_tool("echo", {"text": "bare"})
    assert {"echo", "leak_env"} <= names and not any(name.startswith("leaky.") for name in names)
    assert result.content[0].text == "bare"  # type: ignore[union-attr]


async def test_a_custom_prefix_replaces_the_upstream_name(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    upstream = {**leaky_stdio(tmp_path / "calls.log"), "prefix": "l_"}
    gw = make_gateway(POLICY, upstreams={"leaky": upstream})
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        result = await client.call_tool("l_echo", {"text": "prefixed"})
    assert "l_echo" in names and "leaky.echo" not in names
    assert result.content[0].text == "prefixed"  # type: ignore[union-attr]


async def test_a_name_offered_by_two_sources_is_offered_by_neither_and_refused(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    upstream = {**leaky_stdio(tmp_path / "calls.log"), "prefix": ""}
    gw = make_gateway(POLICY, upstreams={"leaky": upstream}, toolsets=[_clashing_toolset()])
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        with pytest.raises(MCPError) as refused:
            await client.call_tool("echo", {"text": "which one?"})
    assert "echo" not in names and "leak_env" in names
    assert refused.value.message == "tool `echo` is not available"
    assert not (tmp_path / "calls.log").exists() or "echo" not in (tmp_path / "calls.log").read_text()
    assert [(r.kind, r.status) for r in gw.audit() if r.tool == "echo" and r.kind != "tool_pinned"] == [
        ("denied", "not_granted")
    ]
