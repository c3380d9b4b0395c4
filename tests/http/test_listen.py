"""Agents are told when their tool list changes, and about updates of the resources they may read.

2026-07-28 agents open ``subscriptions/listen``; 2025-11-25 agents get
``notifications/tools/list_changed`` on their session's GET stream. The agents are the SDK's own
``mcp.Client``; the upstream is a 2025-11-25 server that takes resource subscriptions
(``watched_upstream.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import mcp_types as types
import pytest
from mcp.client.session import IncomingMessage
from mcp.shared.subscriptions import ResourceUpdated, ToolsListChanged

from conftest import GatewayFactory, RunningGateway, connect, connect_with
from mcp_gateway.http.app import reload_policy
from mcp_gateway.http.modern import EraRouter

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

FIXTURE = Path(__file__).parents[1] / "fixtures" / "watched_upstream.py"
ONE, SECRET_URI = "test://one", "test://private"
POLICY = """
version: 1
agents:
  agent-a:
    grants:
      - {id: a-one, tool: "resource:watch:test://one"}
      - {id: a-tools, tool: "watch.touch"}
  agent-b:
    grants:
      - {id: b-tools, tool: "watch.touch"}
"""
WIDER = POLICY.replace('{id: a-tools, tool: "watch.touch"}', '{id: a-tools, tool: "watch.*"}')


@pytest.fixture
def gw(make_gateway: GatewayFactory) -> RunningGateway:
    upstream = {"transport": "stdio", "command": sys.executable, "args": [str(FIXTURE)], "protocol": "legacy"}
    return make_gateway(
        POLICY, agents=("agent-a", "agent-b"), upstreams={"watch": upstream}, watch_policy=False
    )


async def test_a_listen_stream_is_told_when_the_callers_tool_list_changes(gw: RunningGateway) -> None:
    policy_file = gw.settings.policies / "policy.yaml"
    async with connect(gw.url, gw.tokens["agent-a"]) as a, connect(gw.url, gw.tokens["agent-b"]) as b:
        before = {tool.name for tool in (await a.list_tools()).tools}
        async with (
            a.listen(tools_list_changed=True) as stream_a,
            b.listen(tools_list_changed=True) as stream_b,
        ):
            assert stream_a.honored.tools_list_changed is True
            policy_file.write_text(WIDER, encoding="utf-8")
            assert await reload_policy(gw.runtime.gateway)
            with anyio.fail_after(10):
                event = await stream_a.__anext__()
            assert isinstance(event, ToolsListChanged)
            after = {tool.name for tool in (await a.list_tools()).tools}
            assert after > before
            # agent-b's list did not change: its stream stays silent over several checks.
            with anyio.move_on_after(3 * 1.0 + 0.5) as quiet:
                await stream_b.__anext__()
            assert quiet.cancelled_caught, "agent-b was told of a change to another agent's list"


async def test_a_listen_stream_gets_updates_of_granted_resources_only_and_each_is_audited(
    gw: RunningGateway,
) -> None:
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        async with client.listen(resource_subscriptions=[ONE, SECRET_URI]) as stream:
            # The ungranted URI is left out of the acknowledgement; its refusal is on the record.
            assert stream.honored.resource_subscriptions == [ONE]
            denied = [r for r in gw.audit() if r.decision == "deny" and SECRET_URI in (r.tool or "")]
            assert denied, "the refused subscription was not audited"
            result = await client.call_tool("watch.touch", {"uris": [SECRET_URI, ONE]})
            assert not result.is_error, result
            with anyio.fail_after(10):
                event = await stream.__anext__()
            assert isinstance(event, ResourceUpdated) and event.uri == ONE
    delivered = [r for r in gw.audit() if r.kind == "notification" and ONE in (r.tool or "")]
    assert [r.status for r in delivered] == ["ok"]


async def test_a_listen_stream_that_ends_drops_its_subscriptions(gw: RunningGateway) -> None:
    federation = gw.layer(EraRouter).modern.federation
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        async with client.listen(resource_subscriptions=[ONE]):
            assert len(federation.subscriptions.watching("watch", ONE)) == 1
        # The client closed the stream: its subscription goes (the last watcher: unsubscribed upstream).
        with anyio.fail_after(10):
            while federation.subscriptions.watching("watch", ONE):
                await anyio.sleep(0.05)


async def test_a_session_is_told_on_its_get_stream_when_the_callers_tool_list_changes(
    gw: RunningGateway,
) -> None:
    changed = anyio.Event()

    async def handler(message: IncomingMessage) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    policy_file = gw.settings.policies / "policy.yaml"
    async with connect_with(gw.url, gw.tokens["agent-a"], "legacy", message_handler=handler) as client:
        tools = client.server_capabilities.tools
        assert tools is not None and tools.list_changed is True
        before = {tool.name for tool in (await client.list_tools()).tools}
        router = gw.layer(EraRouter)
        with anyio.fail_after(10):  # the client's GET stream is open
            while not any(s.streaming for s in router.app.sessions):
                await anyio.sleep(0.05)
        policy_file.write_text(WIDER, encoding="utf-8")
        assert await reload_policy(gw.runtime.gateway)
        with anyio.fail_after(10):
            await changed.wait()
        assert {tool.name for tool in (await client.list_tools()).tools} > before
