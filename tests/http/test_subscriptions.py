"""Resource subscriptions through the gateway (2025-11-25 sessions): governed by the resource's grant,
counted per upstream URI, and an upstream's update delivered only to the sessions that subscribed and
are still granted.

"Did not get it" is shown by order: the fixture notifies URIs in the order asked, and each session's
updates arrive on its one standalone stream in that order, so a session whose first update is the
second URI did not get the first.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.session import IncomingMessage
from mcp.shared.exceptions import MCPError

from conftest import GatewayFactory, RunningGateway, connect_with

FIXTURE = Path(__file__).parents[1] / "fixtures" / "watched_upstream.py"
ONE, TWO = "test://one", "test://two"
POLICY = """
version: 1
agents:
  agent-a:
    grants:
      - {id: a-resources, tool: "resource:watch:test://*"}
      - {id: a-tools, tool: "watch.*"}
  agent-b:
    grants:
      - {id: b-resources, tool: "resource:watch:test://*"}
      - {id: b-tools, tool: "watch.*"}
  agent-c:
    grants:
      - {id: c-tools, tool: "watch.*"}
"""


async def subscribe(client: Client, uri: str) -> None:
    """``resources/subscribe`` as a plain request (the SDK's helper warns: removed in 2026-07-28)."""
    request = types.SubscribeRequest(params=types.SubscribeRequestParams(uri=uri))
    await client.session.send_request(request, types.EmptyResult)


async def unsubscribe(client: Client, uri: str) -> None:
    request = types.UnsubscribeRequest(params=types.UnsubscribeRequestParams(uri=uri))
    await client.session.send_request(request, types.EmptyResult)


class Updates:
    """The URIs a client was told changed, in order of arrival."""

    def __init__(self) -> None:
        self.uris: list[str] = []
        self._arrived = anyio.Event()

    async def handler(self, message: IncomingMessage) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            self.uris.append(str(message.params.uri))
            self._arrived.set()
            self._arrived = anyio.Event()

    async def first(self, count: int) -> list[str]:
        """The first ``count`` updates, once they have arrived (bounded wait)."""
        with anyio.fail_after(10):
            while len(self.uris) < count:
                await self._arrived.wait()
        return self.uris[:count]


@pytest.fixture
def gw(make_gateway: GatewayFactory) -> RunningGateway:
    upstream = {
        "transport": "stdio",
        "command": sys.executable,
        "args": [str(FIXTURE)],
        "protocol": "legacy",
    }
    return make_gateway(
        POLICY, agents=("agent-a", "agent-b", "agent-c"), upstreams={"watch": upstream}, watch_policy=False
    )


def session(gw: RunningGateway, agent: str, updates: Updates | None = None) -> Any:
    handler = updates.handler if updates is not None else None
    return connect_with(gw.url, gw.tokens[agent], "legacy", message_handler=handler)


async def subscribers(client: Client, uri: str) -> int:
    """How many sessions the upstream itself serves for ``uri`` (the gateway is one, or none)."""
    result = await client.call_tool("watch.subscribers", {"uri": uri})
    assert not result.is_error, result
    return int(result.content[0].text)  # type: ignore[union-attr]


async def touch(client: Client, *uris: str) -> None:
    result = await client.call_tool("watch.touch", {"uris": list(uris)})
    assert not result.is_error, result


@pytest.mark.e2e
@pytest.mark.anyio
async def test_subscribe_is_advertised_when_an_upstream_takes_subscriptions(gw: RunningGateway) -> None:
    async with session(gw, "agent-a") as client:
        resources = client.server_capabilities.resources
    assert resources is not None and resources.subscribe is True


@pytest.mark.e2e
@pytest.mark.anyio
async def test_only_the_sessions_that_subscribed_get_an_update(gw: RunningGateway) -> None:
    a_updates, b_updates = Updates(), Updates()
    async with session(gw, "agent-a", a_updates) as a, session(gw, "agent-b", b_updates) as b:
        await subscribe(a, ONE)
        await subscribe(b, TWO)
        await touch(a, ONE, TWO)
        assert await a_updates.first(1) == [ONE]
        assert await b_updates.first(1) == [TWO]
        # The upstream saw one subscriber per URI (the gateway), however many agents watch it.
        assert await subscribers(a, ONE) == 1
        assert await subscribers(a, TWO) == 1


@pytest.mark.e2e
@pytest.mark.anyio
async def test_one_sessions_unsubscribe_leaves_another_sessions_subscription(gw: RunningGateway) -> None:
    a_updates, b_updates = Updates(), Updates()
    async with session(gw, "agent-a", a_updates) as a, session(gw, "agent-b", b_updates) as b:
        await subscribe(a, ONE)
        await subscribe(b, ONE)
        await subscribe(b, TWO)
        await unsubscribe(b, ONE)
        assert await subscribers(a, ONE) == 1  # still held for agent-a
        await touch(a, ONE, TWO)
        assert await a_updates.first(1) == [ONE]
        assert await b_updates.first(1) == [TWO]
        await unsubscribe(a, ONE)
        # The last session out: the gateway unsubscribes upstream before answering.
        assert await subscribers(a, ONE) == 0


@pytest.mark.e2e
@pytest.mark.anyio
@pytest.mark.parametrize(("agent", "uri"), [("agent-c", ONE), ("agent-a", "test://no-such-thing")])
async def test_ungranted_or_unknown_subscribe_is_refused_and_audited(
    gw: RunningGateway, agent: str, uri: str
) -> None:
    async with session(gw, agent) as client:
        with pytest.raises(MCPError) as refused:
            await subscribe(client, uri)
        assert await subscribers(client, uri) == 0  # nothing reached the upstream
    assert refused.value.code == types.INVALID_PARAMS
    assert refused.value.message == f"resource `{uri}` is not available"
    denied = [r for r in gw.audit() if r.kind == "denied" and r.tool.endswith(uri)]
    assert [(r.agent, r.detail["method"]) for r in denied] == [(agent, "resources/subscribe")]


@pytest.mark.e2e
@pytest.mark.anyio
async def test_subscribe_and_unsubscribe_are_audited_like_every_exchange(gw: RunningGateway) -> None:
    async with session(gw, "agent-a") as client:
        await subscribe(client, ONE)
        await unsubscribe(client, ONE)
    records = [r for r in gw.audit() if r.tool == f"resource:watch:{ONE}" and r.kind in ("intent", "outcome")]
    assert [(r.kind, r.detail.get("method")) for r in records] == [
        ("intent", "resources/subscribe"),
        ("outcome", None),
        ("intent", "resources/unsubscribe"),
        ("outcome", None),
    ]
    assert records[0].args == {"uri": ONE}
    assert [r.status for r in records if r.kind == "outcome"] == ["ok", "ok"]


@pytest.mark.e2e
@pytest.mark.anyio
async def test_a_session_that_lost_its_grant_gets_no_update(gw: RunningGateway) -> None:
    a_updates, b_updates = Updates(), Updates()
    async with session(gw, "agent-a", a_updates) as a, session(gw, "agent-b", b_updates) as b:
        await subscribe(a, ONE)
        await subscribe(b, ONE)
        await subscribe(b, TWO)
        # agent-b keeps test://two only.
        narrowed = POLICY.replace(
            '{id: b-resources, tool: "resource:watch:test://*"}',
            '{id: b-resources, tool: "resource:watch:test://two"}',
        )
        assert narrowed != POLICY
        (gw.runtime.gateway.policy.path / "policy.yaml").write_text(narrowed, encoding="utf-8")
        assert gw.runtime.gateway.policy.reload() is None
        await touch(a, ONE, TWO)
        assert await a_updates.first(1) == [ONE]
        assert await b_updates.first(1) == [TWO]


@pytest.mark.e2e
@pytest.mark.anyio
async def test_an_ended_session_is_dropped_and_the_last_one_out_unsubscribes_upstream(
    gw: RunningGateway,
) -> None:
    async with session(gw, "agent-a") as a:
        await subscribe(a, ONE)
        assert await subscribers(a, ONE) == 1
    # The client's DELETE ends the session; its subscriptions go with it.
    async with session(gw, "agent-c") as c:
        with anyio.fail_after(10):
            while await subscribers(c, ONE) != 0:
                await anyio.sleep(0.02)


@pytest.mark.e2e
@pytest.mark.anyio
async def test_subscriptions_are_renewed_when_the_upstream_reconnects(make_gateway: GatewayFactory) -> None:
    from typer.testing import CliRunner

    from mcp_gateway.cli import app

    upstream = {
        "transport": "stdio",
        "command": sys.executable,
        "args": [str(FIXTURE)],
        "protocol": "legacy",
        "env": {"WATCH_KEY": "secret://watch-key"},
    }
    gw = make_gateway(
        POLICY, secrets={"watch-key": "first"}, upstreams={"watch": upstream}, watch_policy=False
    )
    updates = Updates()
    async with session(gw, "agent-a", updates) as a:
        await subscribe(a, ONE)
        before = await pid(a)
        # A new value for a secret the upstream uses: the gateway reconnects to a fresh process.
        put = CliRunner().invoke(
            app, ["vault", "put", "watch-key", "-c", str(gw.config_path)], input="second"
        )
        assert put.exit_code == 0, put.output
        with anyio.fail_after(20):
            while True:
                now = await pid(a)
                if now not in (None, before) and await subscribers(a, ONE) == 1:
                    break
                await anyio.sleep(0.05)
        await touch(a, ONE)
        assert await updates.first(1) == [ONE]


async def pid(client: Client) -> int | None:
    """The upstream process's id (None while the gateway is reconnecting)."""
    result = await client.call_tool("watch.pid", {})
    return None if result.is_error else int(result.content[0].text)  # type: ignore[union-attr]
