"""A 2026-07-28 call through the SDK client (here: lean calls off, as for stdio upstreams and calls with a
progress token) declares the calling agent's client capabilities, as ``relay_requests`` allows them, on
that request: a real SDK server under uvicorn, every POST body it receives recorded."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import mcp_types as types
import pytest
import uvicorn
from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conftest import free_port, wait_until
from mcp_gateway.channel import CURRENT_RELAY
from mcp_gateway.connectors.mcp.capabilities import ASKED
from mcp_gateway.connectors.mcp.config import HttpUpstream
from mcp_gateway.connectors.mcp.upstream import UpstreamConnection
from mcp_gateway.redact import Redactor
from mcp_gateway.types import SecretValue

pytestmark = pytest.mark.anyio
DECLARED = types.CLIENT_CAPABILITIES_META_KEY


def _recording(app: ASGIApp, bodies: list[dict[str, Any]]) -> ASGIApp:
    """``app``, with each JSON POST body it receives appended to ``bodies``."""

    async def recorded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await app(scope, receive, send)
            return
        chunks: list[bytes] = []

        async def reading() -> Message:
            message = await receive()
            if message["type"] == "http.request":  # not the disconnect that may follow
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    bodies.append(json.loads(b"".join(chunks)))
            return message

        await app(scope, reading, send)

    return recorded


@pytest.fixture
def upstream() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    server = MCPServer("capabilities")

    @server.tool()
    def echo(text: str) -> str:
        return text

    bodies: list[dict[str, Any]] = []
    port = free_port()
    app = _recording(server.streamable_http_app(), bodies)
    runner = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    wait_until(lambda: runner.started, what="upstream startup")
    yield f"http://127.0.0.1:{port}/mcp", bodies
    runner.should_exit = runner.force_exit = True
    thread.join(timeout=10)


class Caller:
    """A 2026-07-28 agent's relay that declared ``capabilities``."""

    wants_progress = False
    modern = True

    def __init__(self, capabilities: dict[str, Any]) -> None:
        self.client_capabilities = types.ClientCapabilities.model_validate(capabilities)

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        return None


def _no_secret(name: str) -> SecretValue:
    raise AssertionError(f"no secret expected, asked for {name}")


async def test_each_call_declares_its_agents_capabilities_as_relay_requests_allows_them(
    upstream: tuple[str, list[dict[str, Any]]],
) -> None:
    url, bodies = upstream
    config = HttpUpstream(
        transport="http", url=url, allow_private_network=True, relay_requests=("sampling",), lean_calls=False
    )
    connection = UpstreamConnection("caps", config, _no_secret, lambda: Redactor.from_secrets([]))
    callers = {
        "both": Caller({"sampling": {}, "elicitation": {}}),  # elicitation is not relayed: not declared
        "none": Caller({}),
    }
    async with anyio.create_task_group() as tg:
        tg.start_soon(connection.run)
        with anyio.fail_after(15):
            await connection.wait_ready()
            assert connection.connected, connection.last_error
            for who, caller in callers.items():
                CURRENT_RELAY.set(caller)  # type: ignore[arg-type]
                payload = await connection.call_payload("echo", {"text": who})
                assert payload["content"][0]["text"] == who
        connection.stop()
    calls = [body for body in bodies if body.get("method") == "tools/call"]
    assert [call["params"]["arguments"]["text"] for call in calls] == ["both", "none"]
    declared = [call["params"]["_meta"][DECLARED] for call in calls]
    assert declared == [{"sampling": {}}, {}]
    assert all(ASKED not in call["params"]["_meta"] for call in calls)  # the gateway's key never leaves
    # Other requests keep what the session declares (what relay_requests allows).
    listing = next(body for body in bodies if body.get("method") == "tools/list")
    assert "sampling" in listing["params"]["_meta"][DECLARED]
