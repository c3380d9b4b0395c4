"""A 2025-11-25 HTTP upstream's mid-call request goes to the call it came with, also while the upstream
serves several calls at once: two concurrent calls, each of whose tool asks its own client for a
sampling completion, against a real SDK server under uvicorn (the request comes on its call's response
stream, and the SDK client answers it in that call's context, where ``CURRENT_RELAY`` is the caller's)."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from typing import Any

import anyio
import mcp_types as types
import pytest
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPDeprecationWarning

from conftest import free_port, wait_until
from mcp_gateway.channel import CURRENT_RELAY, ClientBoundRequest
from mcp_gateway.connectors.mcp.config import HttpUpstream
from mcp_gateway.connectors.mcp.upstream import UpstreamConnection
from mcp_gateway.redact import Redactor
from mcp_gateway.types import SecretValue

pytestmark = pytest.mark.anyio


def _two_calls_server() -> MCPServer:
    """Tool ``ask`` waits until two calls are in, then asks its caller's client to sample its text."""
    server = MCPServer("two-calls")
    arrived: list[str] = []
    both: list[anyio.Event] = []

    @server.tool()
    async def ask(text: str, ctx: Context) -> str:
        if not both:
            both.append(anyio.Event())
        arrived.append(text)
        if len(arrived) == 2:
            both[0].set()
        with anyio.fail_after(10):
            await both[0].wait()
        message = types.SamplingMessage(role="user", content=types.TextContent(type="text", text=text))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)  # 2025-11-25 mid-call sampling
            asking = ctx.session.create_message(
                messages=[message], max_tokens=10, related_request_id=ctx.request_id
            )
        result = await asking
        content = result.content
        return content.text if isinstance(content, types.TextContent) else "?"

    return server


@pytest.fixture
def upstream_url() -> Iterator[str]:
    port = free_port()
    app = _two_calls_server().streamable_http_app()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, what="upstream startup")
    yield f"http://127.0.0.1:{port}/mcp"
    server.should_exit = server.force_exit = True
    thread.join(timeout=10)


class Relay:
    """One agent's client behind a call: it answers sampling with its own name."""

    wants_progress = False
    modern = False
    client_capabilities = types.ClientCapabilities(sampling=types.SamplingCapability())

    def __init__(self, name: str) -> None:
        self.name = name
        self.asked: list[str] = []

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        return None

    async def log(self, level: str, data: Any, logger_name: str | None) -> None:
        return None

    async def ask(self, upstream: str, request: ClientBoundRequest) -> types.Result | types.ErrorData:
        assert isinstance(request, types.CreateMessageRequest)
        content = request.params.messages[0].content
        self.asked.append(content.text if isinstance(content, types.TextContent) else "?")
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text=f"from {self.name}"), model="m"
        )


def _no_secret(name: str) -> SecretValue:
    raise AssertionError(f"no secret expected, asked for {name}")


async def test_two_concurrent_calls_each_get_their_own_clients_answer(upstream_url: str) -> None:
    config = HttpUpstream(
        transport="http",
        url=upstream_url,
        allow_private_network=True,
        relay_requests=("sampling",),
        protocol="legacy",
        timeout_seconds=15,
    )
    connection = UpstreamConnection("two", config, _no_secret, lambda: Redactor.from_secrets([]))
    relays = {"alice": Relay("alice"), "bob": Relay("bob")}
    results: dict[str, types.CallToolResult] = {}

    async def call(name: str) -> None:
        CURRENT_RELAY.set(relays[name])  # this task's own context
        results[name] = await connection.call("ask", {"text": name})

    async with anyio.create_task_group() as tg:
        tg.start_soon(connection.run)
        with anyio.fail_after(15):
            await connection.wait_ready()
            assert connection.connected, connection.last_error
            async with anyio.create_task_group() as calls:
                for name in relays:
                    calls.start_soon(call, name)
        connection.stop()
    for name, relay in relays.items():
        assert relay.asked == [name]  # each client was asked about its own call only
        result = results[name]
        assert not result.is_error and isinstance(result.content[0], types.TextContent)
        assert result.content[0].text == f"from {name}"
