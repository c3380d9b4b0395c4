"""Test-only: a bare MCP SDK server in front of an upstream (no policy, no audit, no redaction).

The reference the gateway's own 2026-07-28 dispatch is compared with (``test_modern.py``): the SDK's
``StreamableHTTPSessionManager`` and low-level ``Server``, whose ``tools/list`` and ``tools/call``
forward to one upstream through an SDK client, with the gateway's name and version (so the
``serverInfo`` stamp agrees) and the same Host/Origin allow-lists the gateway builds for its port.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import mcp_types as types
import uvicorn
from mcp import Client, StdioServerParameters
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.routing import Route

from conftest import free_port, wait_until
from mcp_gateway import __version__
from mcp_gateway.http.methods import INSTRUCTIONS, SERVER_NAME


class SdkFront:
    """Serves ``/mcp`` on a free port; ``url`` is where to send requests."""

    def __init__(self, command: str, args: list[str], env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self._upstream = StdioServerParameters(command=command, args=args, env=env)
        self._client: Client | None = None
        self._schemas: dict[str, Any] = {}

    def _server(self) -> Server[Any]:
        async def on_list_tools(
            ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
        ) -> types.ListToolsResult:
            assert self._client is not None
            return await self._client.list_tools()

        async def on_call_tool(
            ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
        ) -> types.CallToolResult:
            assert self._client is not None
            result = await self._client.call_tool(params.name, params.arguments or {})
            # The upstream's own serverInfo stamp: this server stamps its own, as the gateway does.
            meta = {k: v for k, v in (result.meta or {}).items() if k != types.SERVER_INFO_META_KEY}
            return result.model_copy(update={"meta": meta or None})

        return Server(
            SERVER_NAME,
            version=__version__,
            instructions=INSTRUCTIONS,
            get_tool_input_schema=self._schemas.get,
            on_list_tools=on_list_tools,
            on_call_tool=on_call_tool,
        )

    def app(self) -> Starlette:
        hosts = [f"127.0.0.1:{self.port}", f"localhost:{self.port}", f"[::1]:{self.port}"]
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=hosts,
            allowed_origins=[f"http://{h}" for h in hosts],
        )
        manager = StreamableHTTPSessionManager(app=self._server(), security_settings=security)

        @contextlib.asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            async with Client(self._upstream) as client, manager.run():
                self._client = client
                for tool in (await client.list_tools()).tools:
                    self._schemas[tool.name] = tool.input_schema
                yield

        endpoint = StreamableHTTPASGIApp(manager)
        return Starlette(
            routes=[Route("/mcp", endpoint, methods=["GET", "POST", "DELETE"])], lifespan=lifespan
        )

    @contextlib.contextmanager
    def serve(self) -> Iterator[SdkFront]:
        server = uvicorn.Server(
            uvicorn.Config(self.app(), host="127.0.0.1", port=self.port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait_until(lambda: server.started, what="the bare SDK server")
        try:
            yield self
        finally:
            server.should_exit = True
            thread.join(timeout=10)
