"""One supervised MCP client connection per upstream server (stdio or Streamable HTTP).

Each connection lives in a task of its own (anyio cancel scopes must be entered and left by one task),
started in the gateway's lifespan. It connects (``connect.py``: secrets resolved at connect time and
passed only to the upstream, never the agent's token; stderr read through the redactor), lists the
upstream's tools, then waits until it is asked to reconnect (a failure, a closed connection, a change
in the vault) or to stop.

Every listing of the upstream's tools passes through a ``ListingGuard`` (the ``PinGuard``) before it is
published, so a tool whose definition changed is blocked before an agent can see or call it; it
re-lists on the upstream's change notifications (tools, prompts, resources: the guard is told at once,
so a call that follows waits for the re-list), every ``relist_seconds``, and when a call finds the
last review too old (``recheck``).

While a request is in flight, the upstream's progress goes to the ``CallRelay`` the face put in
``CURRENT_RELAY`` for it; its log messages go to the relay of the one request in flight, and are
dropped when several are (a log message names no request, so it could reach another agent's session).
Resource subscriptions are made on behalf of ``core/subscriptions.py`` (which counts the sessions
behind each URI) and renewed after a reconnect.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import TypeVar

import anyio
import mcp_types as types
from mcp import Client
from mcp.client.session import IncomingMessage
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from mcp_gateway.channel import CURRENT_RELAY, CallRelay
from mcp_gateway.connectors.mcp.asks import UpstreamAsks
from mcp_gateway.connectors.mcp.config import Upstream
from mcp_gateway.connectors.mcp.connect import RedactorSource, SecretResolver, StderrTail, open_client
from mcp_gateway.connectors.mcp.forwarder import PASSED_THROUGH, FastToolCaller
from mcp_gateway.connectors.mcp.listing import (
    ListFamily,
    ListingGuard,
    announced_families,
    follow_changes,
    list_tools,
)
from mcp_gateway.connectors.mcp.stdio import describe
from mcp_gateway.errors import GatewayError, ProtocolRefusal, UpstreamError, VaultSealed
from mcp_gateway.types import ToolSpec

logger = logging.getLogger(__name__)

ResourceListener = Callable[[str, str], Awaitable[None]]
"""Told of an upstream's ``notifications/resources/updated``: (upstream name, URI)."""

_MAX_BACKOFF = 30.0
_STDERR_WAIT_SECONDS = 1.0
_STDERR_LINE_CHARS = 300
_T = TypeVar("_T")


class UpstreamLink:
    """A supervised client connection to one upstream MCP server: its lifecycle, the listing of its
    tools, subscriptions, and the one way requests are sent (``_request``)."""

    def __init__(
        self,
        name: str,
        config: Upstream,
        resolve: SecretResolver,
        redactor: RedactorSource,
        *,
        pins: ListingGuard | None = None,
        relist_seconds: float | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.prefix = config.prefix if config.prefix is not None else f"{name}."
        """Public names of this upstream's tools and prompts: ``<prefix><its own name>``."""
        self._resolve = resolve
        self._redactor = redactor
        self._pins = pins
        self._relist_seconds = relist_seconds
        self._client: Client | None = None
        self._fast: FastToolCaller | None = None
        self._tools: dict[str, ToolSpec] = {}
        self._reconnect = anyio.Event()
        self._relist = anyio.Event()
        self._relist_families: set[ListFamily] = set()
        self._listing = anyio.Lock()  # one tools listing at a time, so the last published is the newest
        self._ready = anyio.Event()
        self._stopping = False
        self._in_flight: list[CallRelay | None] = []
        self._asks = UpstreamAsks(name, self._in_flight)
        self.last_error: str | None = None
        self.needs_vault = False
        self._stderr = StderrTail()
        self.on_resource_updated: ResourceListener | None = None
        self._subscribed: set[str] = set()
        if pins is not None:
            pins.attach(name, self.prefix, self.recheck)

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
                    self._relist = anyio.Event()
                    self._relist_families = set()
                    if self._pins is not None:
                        # Whatever was reviewed before this connection: the next call re-lists first,
                        # and they are listed (so pinned, or checked) at once, in the background.
                        for family in ("prompts", "resources"):
                            self._changed(family)
                    await self._publish_tools(client)
                    self._client = client
                    self.last_error = None
                    self.needs_vault = False
                    backoff = 0.5
                    self._ready.set()
                    logger.info("upstream %s connected: %d tools", self.name, len(self._tools))
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(self._watch_tools, client)
                        tg.start_soon(self._resubscribe, client)
                        await self._reconnect.wait()
                        tg.cancel_scope.cancel()
            except VaultSealed:
                self.needs_vault = True
                self.last_error = "vault is sealed"
            except Exception as exc:
                self.last_error = self._redactor().scrub_text(describe(exc)) + await self._stderr_said()
                logger.warning("upstream %s unavailable: %s", self.name, self.last_error)
            finally:
                self._client = None
                self._fast = None
            self._ready.set()
            if self._stopping:
                break
            with anyio.move_on_after(backoff):
                await self._reconnect.wait()
            backoff = min(backoff * 2, _MAX_BACKOFF)

    async def _stderr_said(self) -> str:
        """``; last stderr line: ...`` of a stdio upstream that failed, or ``""``."""
        thread = self._stderr.thread
        if thread is None:
            return ""
        # The pump logs what it holds at EOF, which follows the exit at once: a short bounded wait.
        await anyio.to_thread.run_sync(thread.join, _STDERR_WAIT_SECONDS)
        if not self._stderr.lines:
            return ""
        line = self._stderr.lines[-1]
        return f"; last stderr line: {line[:_STDERR_LINE_CHARS]}"

    async def _open(self, stack: AsyncExitStack) -> Client:
        client, self._fast = await open_client(
            stack,
            self.name,
            self.config,
            self._resolve,
            self._redactor,
            self._asks,
            self._on_message,
            self._stderr,
        )
        return client

    async def _on_message(self, message: IncomingMessage) -> None:
        # 2025-11-25 connections deliver change notifications here (2026-07-28 ones via `follow_changes`).
        if isinstance(message, types.ToolListChangedNotification):
            self._changed("tools")
        elif isinstance(message, types.PromptListChangedNotification):
            self._changed("prompts")
        elif isinstance(message, types.ResourceListChangedNotification):
            self._changed("resources")
        elif isinstance(message, types.ResourceUpdatedNotification):
            await self._resource_updated(message.params.uri)

    def _changed(self, family: ListFamily) -> None:
        """The upstream says ``family`` changed: calls wait for a re-list from now on, which starts now."""
        if self._pins is not None:
            self._pins.stale(self.name, family)
        self._relist_families.add(family)
        self._relist.set()

    async def _publish_tools(self, client: Client) -> None:
        async with self._listing:
            started = self._pins.now() if self._pins is not None else 0.0
            tools = await list_tools(client, self.name, self.prefix)
            if self._pins is not None:
                # Before publishing: a changed tool is blocked before any agent can see or call it.
                await self._pins.review(self.name, tools, started=started)
            self._tools = tools

    async def recheck(self, family: ListFamily) -> None:
        """Re-list ``family`` and have it reviewed now (a call found the last review too old).
        Returns without listing while disconnected: nothing can reach the upstream then.

        Raises:
            UpstreamError: the listing failed or timed out.
        """
        client = self._client
        if client is None:
            return
        if family != "tools":
            await self._relist_other(family)
            return
        try:
            with anyio.fail_after(self.config.timeout_seconds):
                await self._publish_tools(client)
        except TimeoutError:
            raise UpstreamError(f"upstream `{self.name}` timed out listing its tools") from None
        except MCPError as exc:
            raise UpstreamError(f"upstream `{self.name}` error {exc.code} listing its tools") from None

    async def _relist_other(self, family: ListFamily) -> None:
        """Re-list prompts or resources and have them reviewed (``UpstreamConnection`` does this)."""

    async def _watch_tools(self, client: Client) -> None:
        """Re-list on change notifications, on request and periodically, until cancelled.

        Raises:
            Exception: a tools re-list failed; the caller's task group ends and the connection reconnects.
        """
        async with anyio.create_task_group() as tg:
            families = announced_families(client)
            if families:
                tg.start_soon(follow_changes, client, self.name, families, self._changed)
            while True:
                periodic = True
                with anyio.move_on_after(self._relist_seconds):
                    await self._relist.wait()
                    periodic = False
                self._relist = anyio.Event()
                families_now, self._relist_families = self._relist_families, set()
                if periodic:
                    families_now = {"tools", "prompts", "resources"}
                for family in sorted(families_now - {"tools"}):
                    try:
                        await self._relist_other(family)
                    except Exception as exc:  # the tools listing stays supervised; this one is retried
                        shown = self._redactor().scrub_text(describe(exc))
                        logger.warning("upstream %s: re-listing %s failed: %s", self.name, family, shown)
                if "tools" in families_now or not families_now:
                    await self._publish_tools(client)

    @property
    def subscribable(self) -> bool:
        """Whether the upstream takes ``resources/subscribe``: a 2025-11-25 connection that declares it
        (a 2026-07-28 one offers ``subscriptions/listen`` streams instead)."""
        client = self._client
        if client is None or client.protocol_version in MODERN_PROTOCOL_VERSIONS:
            return False
        resources = client.server_capabilities.resources
        return resources is not None and bool(resources.subscribe)

    async def subscribe_resource(self, uri: str) -> None:
        """Subscribe to ``uri`` (again after each reconnect, until unsubscribed). Raises ``UpstreamError``."""
        await self._request(lambda c: _subscription(c, uri, subscribe=True))
        self._subscribed.add(uri)

    async def unsubscribe_resource(self, uri: str) -> None:
        """Unsubscribe from ``uri``; it is not subscribed again on reconnect. Raises ``UpstreamError``."""
        self._subscribed.discard(uri)
        await self._request(lambda c: _subscription(c, uri, subscribe=False))

    async def _resubscribe(self, client: Client) -> None:
        """Renew this connection's subscriptions on a new connection (the old one's ended with it)."""
        for uri in sorted(self._subscribed):
            try:
                with anyio.fail_after(self.config.timeout_seconds):
                    await _subscription(client, uri, subscribe=True)
            except (MCPError, TimeoutError) as exc:
                logger.warning("upstream %s: renewing a resource subscription failed: %s", self.name, exc)

    async def _resource_updated(self, uri: str) -> None:
        listener = self.on_resource_updated
        if listener is None or uri not in self._subscribed:
            return  # nobody here asked about it
        try:
            await listener(self.name, uri)
        except Exception:
            logger.exception("upstream %s: delivering a resource update failed", self.name)

    async def _request(self, send: Callable[[Client], Awaitable[_T]]) -> _T:
        """Send one request with this upstream's timeout; the calling request's relay gets its logs.

        Raises:
            UpstreamError: not connected, timed out, a protocol error, or an unusable answer.
        """
        client = self._client
        if client is None:
            raise UpstreamError(f"upstream `{self.name}` is not connected")
        marker = CURRENT_RELAY.get()
        self._in_flight.append(marker)
        try:
            with anyio.fail_after(self.config.timeout_seconds):
                return await send(client)
        except TimeoutError:
            raise UpstreamError(f"upstream `{self.name}` timed out") from None
        except MCPError as exc:
            if exc.code == types.CONNECTION_CLOSED and exc.message == "Connection closed":
                # The upstream is gone (a stdio process exited): reconnect in the background.
                self.request_reconnect()
            if exc.code in PASSED_THROUGH:
                raise ProtocolRefusal(exc.message, code=exc.code, data=exc.data) from None
            raise UpstreamError(f"upstream `{self.name}` error {exc.code}: {exc.message}") from None
        except GatewayError:
            raise
        except ValidationError:
            # An answer that is not what the protocol says: pydantic's text would quote it.
            raise UpstreamError(f"upstream `{self.name}` answered garbage") from None
        except Exception as exc:
            # A broken connection: reconnect in the background and report this call as failed.
            self.request_reconnect()
            raise UpstreamError(f"upstream `{self.name}` failed: {describe(exc)}") from None
        finally:
            self._in_flight.remove(marker)


def _subscription(client: Client, uri: str, *, subscribe: bool) -> Awaitable[types.EmptyResult]:
    # Sent as a plain request: the SDK's helpers for these warn (removed in 2026-07-28, SEP-2575),
    # and they are live on the 2025-11-25 connections this is used on.
    request: types.SubscribeRequest | types.UnsubscribeRequest = (
        types.SubscribeRequest(params=types.SubscribeRequestParams(uri=uri))
        if subscribe
        else types.UnsubscribeRequest(params=types.UnsubscribeRequestParams(uri=uri))
    )
    return client.session.send_request(request, types.EmptyResult)
