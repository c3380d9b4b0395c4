"""``logging/setLevel`` through the gateway (2025-11-25 sessions): governed and audited like every
exchange, applied per session to the upstream log messages the gateway relays, on both the SDK path and
the lean in-session path, and advertised only when it can be honoured.

A call's log messages travel on the call's own stream ahead of its answer, so once ``call_tool``
returns, every message the session was going to get has arrived.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from conftest import GatewayFactory, RunningGateway, connect_with

FIXTURE = Path(__file__).parents[1] / "fixtures" / "watched_upstream.py"
EVERY = ["debug", "info", "warning", "error"]
POLICY = """
version: 1
agents:
  agent-a:
    grants:
      - {id: a-logs, tool: "logging:setLevel"}
      - {id: a-tools, tool: "watch.*"}
  agent-b:
    grants:
      - {id: b-logs, tool: "logging:setLevel", args: {level: {in: [warning, error]}}}
      - {id: b-tools, tool: "watch.*"}
  agent-c:
    grants:
      - {id: c-tools, tool: "watch.*"}
"""


def _gateway(make_gateway: GatewayFactory) -> RunningGateway:
    upstream = {"transport": "stdio", "command": sys.executable, "args": [str(FIXTURE)], "protocol": "legacy"}
    return make_gateway(
        POLICY,
        agents=("agent-a", "agent-b", "agent-c"),
        upstreams={"watch": upstream},
        watch_policy=False,
    )


class Logs:
    """The levels of the log messages a client got, in order."""

    def __init__(self) -> None:
        self.levels: list[str] = []

    async def callback(self, params: types.LoggingMessageNotificationParams) -> None:
        self.levels.append(str(params.level))


def session(gw: RunningGateway, agent: str, logs: Logs | None = None) -> Any:
    callback = logs.callback if logs is not None else None
    return connect_with(gw.url, gw.tokens[agent], "legacy", logging_callback=callback)


async def set_level(client: Client, level: types.LoggingLevel) -> None:
    """``logging/setLevel`` as a plain request (the SDK's helper warns: deprecated in 2026-07-28)."""
    request = types.SetLevelRequest(params=types.SetLevelRequestParams(level=level))
    await client.session.send_request(request, types.EmptyResult)


async def say(client: Client, levels: list[str]) -> None:
    result = await client.call_tool("watch.say", {"levels": levels})
    assert not result.is_error, result


@pytest.mark.e2e
@pytest.mark.anyio
async def test_set_level_filters_relayed_logs_for_that_session_only(make_gateway: GatewayFactory) -> None:
    gw = _gateway(make_gateway)
    quiet, chatty = Logs(), Logs()
    async with session(gw, "agent-a", quiet) as a, session(gw, "agent-a", chatty) as b:
        await set_level(a, "warning")
        await say(a, EVERY)
        await say(b, EVERY)
        await set_level(a, "debug")
        await say(a, ["debug"])
    assert quiet.levels == ["warning", "error", "debug"]
    assert chatty.levels == EVERY  # the other session never asked: it gets every level


@pytest.mark.e2e
@pytest.mark.anyio
async def test_set_level_is_audited_like_every_exchange(make_gateway: GatewayFactory) -> None:
    gw = _gateway(make_gateway)
    async with session(gw, "agent-a") as client:
        await set_level(client, "error")
    records = [r for r in gw.audit() if r.tool == "logging:setLevel"]
    assert [(r.kind, r.status) for r in records] == [("intent", ""), ("outcome", "ok")]
    assert records[0].args == {"level": "error"}
    assert records[0].detail["method"] == "logging/setLevel"
    assert records[0].detail["rule_ids"] == ["a-logs"]


@pytest.mark.e2e
@pytest.mark.anyio
async def test_set_level_without_a_grant_is_refused_audited_and_not_advertised(
    make_gateway: GatewayFactory,
) -> None:
    gw = _gateway(make_gateway)
    logs = Logs()
    async with session(gw, "agent-c", logs) as client:
        assert client.server_capabilities.logging is None
        with pytest.raises(MCPError) as refused:
            await set_level(client, "error")
        await say(client, ["info"])
    assert refused.value.code == types.INVALID_PARAMS
    assert refused.value.message == "method `logging/setLevel` is not available"
    assert logs.levels == ["info"]  # the refusal changed nothing
    denied = [r for r in gw.audit() if r.tool == "logging:setLevel"]
    assert [(r.kind, r.agent, r.status) for r in denied] == [("denied", "agent-c", "not_granted")]


@pytest.mark.e2e
@pytest.mark.anyio
async def test_a_level_the_grant_does_not_allow_is_refused(make_gateway: GatewayFactory) -> None:
    gw = _gateway(make_gateway)
    logs = Logs()
    async with session(gw, "agent-b", logs) as client:
        assert client.server_capabilities.logging is not None
        await set_level(client, "error")
        with pytest.raises(MCPError) as refused:
            await set_level(client, "debug")
        await say(client, EVERY)
    assert "denied by policy" in refused.value.message
    assert logs.levels == ["error"]  # the refused level did not replace the allowed one


@pytest.mark.e2e
@pytest.mark.anyio
async def test_logging_and_subscriptions_are_not_advertised_without_an_upstream_that_offers_them(
    make_gateway: GatewayFactory,
) -> None:
    gw = make_gateway(POLICY.replace("watch.*", "leaky.*"), watch_policy=False)  # upstream: the leaky server
    async with connect_with(gw.url, gw.tokens["agent-a"], "legacy") as client:
        capabilities = client.server_capabilities
    assert capabilities.logging is None
    assert capabilities.resources is None or not capabilities.resources.subscribe


@pytest.mark.e2e
@pytest.mark.anyio
async def test_an_ended_sessions_level_is_forgotten(make_gateway: GatewayFactory) -> None:
    gw = _gateway(make_gateway)
    levels = gw.runtime.gateway.log_levels
    async with session(gw, "agent-a") as client:
        await set_level(client, "error")
        assert len(levels) == 1
    # The client's DELETE ends the session; the SDK then closes its connection, and its state goes.
    with anyio.fail_after(10):
        while len(levels) != 0:
            await anyio.sleep(0.02)
