"""Federation: one supervised MCP client connection per upstream server (stdio or Streamable HTTP).

Each connection lives in a task of its own (anyio cancel scopes must be entered and left by one task),
started in the gateway's lifespan. It connects, lists the upstream's tools, then waits until it is
asked to reconnect (a failure, or a change in the vault) or to stop. Secrets are resolved from the
vault at connect time and passed only to the upstream: as environment variables of the stdio
process, or as HTTP headers of the gateway's own client. The agent's token is never among them.

An upstream's stderr may echo its secrets, so it is read through the redactor before it is logged.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any, TextIO

import anyio
import httpx2
import mcp_types as types
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from mcp_gateway.config import SECRET_REF, StdioUpstream, Upstream, secret_refs
from mcp_gateway.errors import GatewayError, UpstreamError, VaultSealed
from mcp_gateway.redact import Redactor
from mcp_gateway.types import SecretValue, ToolSpec

logger = logging.getLogger(__name__)

SecretResolver = Callable[[str], SecretValue]
RedactorSource = Callable[[], Redactor]

_MAX_BACKOFF = 30.0


def required_secrets(config: Upstream) -> set[str]:
    """Every secret name an upstream's config refers to."""
    values = config.env.values() if isinstance(config, StdioUpstream) else config.headers.values()
    return {name for value in values for name in secret_refs(value)}


def _substitute(value: str, resolve: SecretResolver) -> str:
    return SECRET_REF.sub(lambda m: resolve(m.group(1)).reveal_text(), value)


def _stderr_pipe(name: str, redactor: RedactorSource) -> tuple[TextIO, threading.Thread]:
    """A pipe for the upstream's stderr; a daemon thread logs each line after redaction."""
    read_fd, write_fd = os.pipe()
    reader = os.fdopen(read_fd, "r", encoding="utf-8", errors="replace")
    writer = os.fdopen(write_fd, "w", encoding="utf-8")

    def pump() -> None:
        with reader:
            for line in reader:
                logger.info("upstream %s stderr: %s", name, redactor().scrub_text(line.rstrip()))

    thread = threading.Thread(target=pump, name=f"upstream-{name}-stderr", daemon=True)
    thread.start()
    return writer, thread


class UpstreamConnection:
    """A supervised client connection to one upstream MCP server."""

    def __init__(
        self, name: str, config: Upstream, resolve: SecretResolver, redactor: RedactorSource
    ) -> None:
        self.name = name
        self.config = config
        self._resolve = resolve
        self._redactor = redactor
        self._client: Client | None = None
        self._tools: dict[str, ToolSpec] = {}
        self._reconnect = anyio.Event()
        self._ready = anyio.Event()
        self._stopping = False
        self.last_error: str | None = None
        self.needs_vault = False

    @property
    def tools(self) -> dict[str, ToolSpec]:
        return self._tools

    @property
    def connected(self) -> bool:
        return self._client is not None

    async def wait_ready(self) -> None:
        """Wait until the first connection attempt has finished (successfully or not)."""
        await self._ready.wait()

    def request_reconnect(self) -> None:
        self._reconnect.set()

    def stop(self) -> None:
        self._stopping = True
        self._reconnect.set()

    async def run(self) -> None:
        """Connect, serve, and reconnect with bounded backoff until ``stop``."""
        backoff = 0.5
        while not self._stopping:
            self._reconnect = anyio.Event()
            try:
                async with AsyncExitStack() as stack:
                    client = await self._open(stack)
                    self._tools = await self._list_tools(client)
                    self._client = client
                    self.last_error = None
                    self.needs_vault = False
                    backoff = 0.5
                    self._ready.set()
                    logger.info("upstream %s connected: %d tools", self.name, len(self._tools))
                    await self._reconnect.wait()
            except VaultSealed:
                self.needs_vault = True
                self.last_error = "vault is sealed"
            except Exception as exc:
                self.last_error = self._redactor().scrub_text(f"{type(exc).__name__}: {exc}")
                logger.warning("upstream %s unavailable: %s", self.name, self.last_error)
            finally:
                self._client = None
            self._ready.set()
            if self._stopping:
                break
            with anyio.move_on_after(backoff):
                await self._reconnect.wait()
            backoff = min(backoff * 2, _MAX_BACKOFF)

    async def _open(self, stack: AsyncExitStack) -> Client:
        config = self.config
        if isinstance(config, StdioUpstream):
            env = {key: _substitute(value, self._resolve) for key, value in config.env.items()}
            errlog, _ = _stderr_pipe(self.name, self._redactor)
            stack.callback(errlog.close)
            params = StdioServerParameters(
                command=config.command, args=list(config.args), env=env, cwd=config.cwd
            )
            client = Client(
                stdio_client(params, errlog=errlog),
                mode="auto",
                cache=None,
                read_timeout_seconds=config.timeout_seconds,
            )
        else:
            headers = {key: _substitute(value, self._resolve) for key, value in config.headers.items()}
            http = httpx2.AsyncClient(
                headers=headers,
                timeout=httpx2.Timeout(config.timeout_seconds, read=config.timeout_seconds),
                follow_redirects=False,
            )
            await stack.enter_async_context(http)
            transport = streamable_http_client(config.url, http_client=http)
            client = Client(transport, mode="auto", cache=None, read_timeout_seconds=config.timeout_seconds)
        return await stack.enter_async_context(client)

    async def _list_tools(self, client: Client) -> dict[str, ToolSpec]:
        tools: dict[str, ToolSpec] = {}
        cursor: str | None = None
        while True:
            page = await client.list_tools(cursor=cursor, cache_mode="bypass")
            for tool in page.tools:
                public = f"{self.name}.{tool.name}"
                definition = tool.model_dump(by_alias=True, mode="json", exclude_none=True)
                definition["name"] = public
                tools[public] = ToolSpec(public, self.name, tool.name, definition)
            cursor = page.next_cursor
            if not cursor:
                return tools

    async def call(self, upstream_tool: str, arguments: dict[str, Any]) -> types.CallToolResult:
        """Call a tool at the upstream.

        Raises:
            UpstreamError: not connected, timed out, a protocol error, or an unusable answer.
        """
        client = self._client
        if client is None:
            raise UpstreamError(f"upstream `{self.name}` is not connected")
        try:
            with anyio.fail_after(self.config.timeout_seconds):
                return await client.call_tool(upstream_tool, arguments)
        except TimeoutError:
            raise UpstreamError(f"upstream `{self.name}` timed out") from None
        except MCPError as exc:
            raise UpstreamError(f"upstream `{self.name}` error {exc.code}: {exc.message}") from None
        except GatewayError:
            raise
        except Exception as exc:
            # A broken connection: reconnect in the background and report this call as failed.
            self.request_reconnect()
            raise UpstreamError(f"upstream `{self.name}` failed: {type(exc).__name__}: {exc}") from None
