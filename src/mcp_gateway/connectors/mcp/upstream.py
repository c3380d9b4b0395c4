"""Federation: one supervised MCP client connection per upstream server (stdio or Streamable HTTP).

Each connection lives in a task of its own (anyio cancel scopes must be entered and left by one task),
started in the gateway's lifespan. It connects, lists the upstream's tools, then waits until it is
asked to reconnect (a failure, or a change in the vault) or to stop. Secrets are resolved from the
vault at connect time and passed only to the upstream: as environment variables of the stdio
process, or as HTTP headers of the gateway's own client. The agent's token is never among them.

An upstream's stderr may echo its secrets, so it is read through the redactor before it is logged.

Every listing of the upstream's tools passes through a ``ToolReview`` (the ``PinGuard``) before it is
published, so a tool whose definition changed is blocked before an agent can see or call it. The
connection re-lists when the upstream says its tools changed (``notifications/tools/list_changed``
on a 2025-11-25 connection, a ``subscriptions/listen`` stream on a 2026-07-28 one), every
``relist_seconds``, and when asked (``request_relist``).

Resources, prompts and completions are forwarded on demand (``federation.py`` governs them). While a
call is in flight, the upstream's progress notifications go to the ``CallRelay`` the server put in
``CURRENT_RELAY`` for that request (the SDK maps progress tokens per request); its log messages go to
the relay of the one call in flight, and are dropped when several are (a log message names no
request, so it could otherwise reach another agent's session).

Resource subscriptions (2025-11-25 connections) are made on behalf of ``core/subscriptions.py``, which
counts the sessions behind each URI; the upstream's ``notifications/resources/updated`` go to
``on_resource_updated``, and the URIs subscribed are subscribed again after a reconnect.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from typing import Any, TextIO, TypeVar

import anyio
import httpx2
import mcp_types as types
from mcp import Client, StdioServerParameters
from mcp.client.session import ClientRequestContext, IncomingMessage
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import SubscriptionLost
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import TypeAdapter, ValidationError

from mcp_gateway.channel import CURRENT_RELAY, CallRelay, ClientBoundRequest
from mcp_gateway.connectors.mcp.config import StdioUpstream, Upstream
from mcp_gateway.connectors.mcp.forwarder import PASSED_THROUGH, FastToolCaller
from mcp_gateway.connectors.mcp.http_client import HttpFailure
from mcp_gateway.connectors.netguard import check_upstream_url
from mcp_gateway.errors import GatewayError, ProtocolRefusal, UpstreamError, VaultSealed
from mcp_gateway.redact import Redactor
from mcp_gateway.types import SECRET_REF, SecretValue, ToolSpec, secret_refs

logger = logging.getLogger(__name__)

SecretResolver = Callable[[str], SecretValue]
RedactorSource = Callable[[], Redactor]
ToolReview = Callable[[str, Mapping[str, ToolSpec]], Awaitable[None]]
"""Checks a fresh listing (upstream, tools by public name) before it is published: ``PinGuard.review``."""
ResourceListener = Callable[[str, str], Awaitable[None]]
"""Told of an upstream's ``notifications/resources/updated``: (upstream name, URI)."""

_MAX_BACKOFF = 30.0
_T = TypeVar("_T")


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


def _describe(exc: BaseException) -> str:
    """The innermost error of a task-group failure: the one that says what went wrong."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


class UpstreamConnection:
    """A supervised client connection to one upstream MCP server."""

    def __init__(
        self,
        name: str,
        config: Upstream,
        resolve: SecretResolver,
        redactor: RedactorSource,
        *,
        review: ToolReview | None = None,
        relist_seconds: float | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.prefix = config.prefix if config.prefix is not None else f"{name}."
        """Public names of this upstream's tools and prompts: ``<prefix><its own name>``."""
        self._resolve = resolve
        self._redactor = redactor
        self._review = review
        self._relist_seconds = relist_seconds
        self._client: Client | None = None
        self._fast: FastToolCaller | None = None
        self._tools: dict[str, ToolSpec] = {}
        self._reconnect = anyio.Event()
        self._relist = anyio.Event()
        self._ready = anyio.Event()
        self._stopping = False
        self._in_flight: list[CallRelay | None] = []
        self.last_error: str | None = None
        self.needs_vault = False
        self.on_resource_updated: ResourceListener | None = None
        self._subscribed: set[str] = set()

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

    def request_relist(self) -> None:
        """List the upstream's tools again (and review them) soon, without reconnecting."""
        self._relist.set()

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
                self.last_error = self._redactor().scrub_text(_describe(exc))
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

    def _client_over(self, transport: Any) -> Client:
        config = self.config
        return Client(
            transport,
            mode=config.protocol,
            cache=None,
            read_timeout_seconds=config.timeout_seconds,
            message_handler=self._on_message,
            logging_callback=self._on_log,
            log_level="debug",
            # Declaring a callback advertises the capability to the upstream: only when relayed.
            sampling_callback=self._on_sampling if "sampling" in config.relay_requests else None,
            elicitation_callback=self._on_elicitation if "elicitation" in config.relay_requests else None,
            list_roots_callback=self._on_roots if "roots" in config.relay_requests else None,
        )

    async def _open(self, stack: AsyncExitStack) -> Client:
        config = self.config
        if isinstance(config, StdioUpstream):
            env = {key: _substitute(value, self._resolve) for key, value in config.env.items()}
            errlog, _ = _stderr_pipe(self.name, self._redactor)
            stack.callback(errlog.close)
            params = StdioServerParameters(
                command=config.command, args=list(config.args), env=env, cwd=config.cwd
            )
            client = self._client_over(stdio_client(params, errlog=errlog))
        else:
            await check_upstream_url(config.url, allow_private_network=config.allow_private_network)
            headers = {key: _substitute(value, self._resolve) for key, value in config.headers.items()}
            http = httpx2.AsyncClient(
                headers=headers,
                timeout=httpx2.Timeout(config.timeout_seconds, read=config.timeout_seconds),
                follow_redirects=False,
            )
            await stack.enter_async_context(http)
            client = self._client_over(streamable_http_client(config.url, http_client=http))
            opened = await stack.enter_async_context(client)
            if config.lean_calls and opened.protocol_version in MODERN_PROTOCOL_VERSIONS:
                try:
                    fast = FastToolCaller(
                        self.name,
                        config.url,
                        headers,
                        opened.protocol_version,
                        config.timeout_seconds,
                        allow_private_network=config.allow_private_network,
                    )
                except HttpFailure as exc:  # names no header value
                    logger.warning("upstream %s: calls take the SDK client: %s", self.name, exc)
                else:
                    stack.push_async_callback(fast.aclose)
                    self._fast = fast
            return opened
        return await stack.enter_async_context(client)

    async def _on_message(self, message: IncomingMessage) -> None:
        # 2025-11-25 connections deliver change notifications here (2026-07-28 ones via `_listen`).
        if isinstance(message, types.ToolListChangedNotification):
            self._relist.set()
        elif isinstance(message, types.ResourceUpdatedNotification):
            await self._resource_updated(message.params.uri)

    async def _on_sampling(
        self, context: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult | types.CreateMessageResultWithTools | types.ErrorData:
        answer = await self._ask(types.CreateMessageRequest(params=params))
        if isinstance(
            answer, types.CreateMessageResult | types.CreateMessageResultWithTools | types.ErrorData
        ):
            return answer
        return _unexpected(answer)

    async def _on_elicitation(
        self, context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult | types.ErrorData:
        answer = await self._ask(types.ElicitRequest(params=params))
        if isinstance(answer, types.ElicitResult | types.ErrorData):
            return answer
        return _unexpected(answer)

    async def _on_roots(self, context: ClientRequestContext) -> types.ListRootsResult | types.ErrorData:
        answer = await self._ask(types.ListRootsRequest())
        if isinstance(answer, types.ListRootsResult | types.ErrorData):
            return answer
        return _unexpected(answer)

    async def _ask(self, request: ClientBoundRequest) -> types.Result | types.ErrorData:
        # The relay of the calling task when the SDK runs the callback there (a 2026-07-28 upstream's
        # input requests); else, as for log messages, the one call in flight: a request that could
        # belong to several agents' calls goes to none of them.
        relay = CURRENT_RELAY.get()
        if relay is None and len(self._in_flight) == 1:
            relay = self._in_flight[0]
        if relay is None:
            logger.info(
                "upstream %s: %s not relayed (%d calls in flight)",
                self.name,
                request.method,
                len(self._in_flight),
            )
            return types.ErrorData(
                code=types.INVALID_REQUEST,
                message=f"{request.method} cannot be relayed: it belongs to no single call in flight",
            )
        return await relay.ask(self.name, request)

    async def _on_log(self, params: types.LoggingMessageNotificationParams) -> None:
        # A log message names no request: deliver it only when exactly one call can have caused it.
        if len(self._in_flight) == 1 and (relay := self._in_flight[0]) is not None:
            await relay.log(str(params.level), params.data, params.logger)
        else:
            logger.debug(
                "upstream %s: log message not relayed (%d calls in flight)", self.name, len(self._in_flight)
            )

    async def _publish_tools(self, client: Client) -> None:
        tools = await self._list_tools(client)
        if self._review is not None:
            # Before publishing: a changed tool is blocked before any agent can see or call it.
            await self._review(self.name, tools)
        self._tools = tools

    async def _watch_tools(self, client: Client) -> None:
        """Re-list on change notifications, on request and periodically, until cancelled.

        Raises:
            Exception: a re-list failed; the caller's task group ends and the connection reconnects.
        """
        async with anyio.create_task_group() as tg:
            capability = client.server_capabilities.tools
            if client.protocol_version in MODERN_PROTOCOL_VERSIONS and capability and capability.list_changed:
                tg.start_soon(self._listen, client)
            while True:
                with anyio.move_on_after(self._relist_seconds):
                    await self._relist.wait()
                self._relist = anyio.Event()
                await self._publish_tools(client)

    async def _listen(self, client: Client) -> None:
        """Follow the upstream's ``subscriptions/listen`` stream of tool changes (2026-07-28)."""
        backoff = 0.5
        while True:
            try:
                async with client.listen(tools_list_changed=True) as subscription:
                    backoff = 0.5
                    # No replay: a change made before the stream was acknowledged would be missed.
                    self._relist.set()
                    async for _event in subscription:
                        self._relist.set()
            except MCPError as exc:
                if exc.code == types.METHOD_NOT_FOUND:
                    logger.info("upstream %s: no change subscription; periodic re-list only", self.name)
                    return
                logger.info("upstream %s: change subscription failed: %s", self.name, exc.message)
            except (SubscriptionLost, TimeoutError) as exc:
                # Expected now and then: an HTTP upstream's stream ends at the client's read timeout.
                logger.debug("upstream %s: change subscription ended: %s", self.name, exc)
            # A server that ends every stream at once must not make this a busy loop.
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF)

    async def _list_tools(self, client: Client) -> dict[str, ToolSpec]:
        tools: dict[str, ToolSpec] = {}
        cursor: str | None = None
        while True:
            page = await client.list_tools(cursor=cursor, cache_mode="bypass")
            for tool in page.tools:
                public = f"{self.prefix}{tool.name}"
                definition = tool.model_dump(by_alias=True, mode="json", exclude_none=True)
                definition["name"] = public
                tools[public] = ToolSpec(public, self.name, tool.name, definition)
            cursor = page.next_cursor
            if not cursor:
                return tools

    async def call_payload(
        self,
        upstream_tool: str,
        arguments: dict[str, Any],
        *,
        input_responses: Mapping[str, Any] | None = None,
        request_state: str | None = None,
    ) -> dict[str, Any]:
        """Call a tool at the upstream; its answer as JSON-ready data (not yet validated).

        For a 2026-07-28 caller (or none) an upstream's ``input_required`` answer is returned as it
        is, and ``input_responses`` / ``request_state`` resume one; for a 2025-11-25 caller the SDK
        client answers the upstream's input requests itself, through the relay, mid-call. A call to a
        stateless HTTP upstream whose client did not ask for progress takes the lean path (one pooled
        POST, the caller's declared capabilities that ``relay_requests`` allows in its envelope).

        Raises:
            UpstreamError: not connected, timed out, a protocol error, or an unusable answer.
            ProtocolRefusal: the upstream answered a JSON-RPC error the agent must get as it is.
        """
        fast = self._fast
        relay = CURRENT_RELAY.get()
        legacy = not _modern_caller()
        if legacy and (input_responses is not None or request_state is not None):
            raise UpstreamError("a 2025-11-25 caller cannot resume a 2026-07-28 request")
        if legacy and (
            fast is None or self.config.relay_requests or (relay is not None and relay.wants_progress)
        ):
            # The SDK client answers the upstream's input requests mid-call, through the relay.
            result = await self.call(upstream_tool, arguments)
            return result.model_dump(by_alias=True, mode="json", exclude_none=True)
        if fast is None or (relay is not None and relay.wants_progress):
            progress = relay.progress if relay is not None else None
            responses = _input_responses(input_responses)
            raw = await self._request(
                lambda c: c.session.call_tool(
                    upstream_tool,
                    arguments,
                    progress_callback=progress,
                    input_responses=responses,
                    request_state=request_state,
                    allow_input_required=True,
                )
            )
            return raw.model_dump(by_alias=True, mode="json", exclude_none=True)
        if self._client is None:
            raise UpstreamError(f"upstream `{self.name}` is not connected")
        capabilities = self.allowed_capabilities(relay.client_capabilities if relay is not None else None)
        self._in_flight.append(relay)
        try:
            return await fast.call(
                upstream_tool,
                arguments,
                capabilities=capabilities,
                input_responses=input_responses,
                request_state=request_state,
            )
        finally:
            self._in_flight.remove(relay)

    def allowed_capabilities(self, declared: types.ClientCapabilities | None) -> dict[str, Any]:
        """What of the caller's declared client capabilities this upstream may use: those its
        ``relay_requests`` allows (the gateway relays nothing else)."""
        if declared is None:
            return {}
        allowed = set(self.config.relay_requests)
        dumped = declared.model_dump(by_alias=True, mode="json", exclude_none=True)
        return {key: value for key, value in dumped.items() if key in allowed}

    async def call(self, upstream_tool: str, arguments: dict[str, Any]) -> types.CallToolResult:
        """Call a tool at the upstream; progress and log messages go to ``CURRENT_RELAY``'s relay.

        Raises:
            UpstreamError: not connected, timed out, a protocol error, or an unusable answer.
        """
        relay = CURRENT_RELAY.get()
        progress = relay.progress if relay is not None else None
        return await self._request(
            lambda c: c.call_tool(upstream_tool, arguments, progress_callback=progress)
        )

    async def list_resources(self) -> list[types.Resource]:
        """Every resource the upstream lists (all pages). Raises ``UpstreamError``."""

        async def fetch(client: Client, cursor: str | None) -> tuple[list[types.Resource], str | None]:
            page = await client.list_resources(cursor=cursor, cache_mode="bypass")
            return list(page.resources), page.next_cursor

        return await self._paged(fetch, "resources")

    async def list_resource_templates(self) -> list[types.ResourceTemplate]:
        """Every resource template the upstream lists (all pages). Raises ``UpstreamError``."""

        async def fetch(
            client: Client, cursor: str | None
        ) -> tuple[list[types.ResourceTemplate], str | None]:
            page = await client.list_resource_templates(cursor=cursor, cache_mode="bypass")
            return list(page.resource_templates), page.next_cursor

        return await self._paged(fetch, "resources")

    async def list_prompts(self) -> list[types.Prompt]:
        """Every prompt the upstream lists (all pages). Raises ``UpstreamError``."""

        async def fetch(client: Client, cursor: str | None) -> tuple[list[types.Prompt], str | None]:
            page = await client.list_prompts(cursor=cursor, cache_mode="bypass")
            return list(page.prompts), page.next_cursor

        return await self._paged(fetch, "prompts")

    async def read_resource(
        self, uri: str, *, input_responses: Mapping[str, Any] | None = None, request_state: str | None = None
    ) -> types.ReadResourceResult | types.InputRequiredResult:
        """Read ``uri`` at the upstream; for a 2026-07-28 caller an ``input_required`` answer is
        returned as it is (see ``call_payload``). Raises ``UpstreamError``, ``ProtocolRefusal``."""
        if not _modern_caller():
            return await self._request(lambda c: c.read_resource(uri, cache_mode="bypass"))
        responses = _input_responses(input_responses)
        return await self._request(
            lambda c: c.session.read_resource(
                uri, input_responses=responses, request_state=request_state, allow_input_required=True
            )
        )

    async def get_prompt(
        self,
        name: str,
        arguments: dict[str, str] | None,
        *,
        input_responses: Mapping[str, Any] | None = None,
        request_state: str | None = None,
    ) -> types.GetPromptResult | types.InputRequiredResult:
        """Get the upstream's prompt ``name``; for a 2026-07-28 caller an ``input_required`` answer is
        returned as it is (see ``call_payload``). Raises ``UpstreamError``, ``ProtocolRefusal``."""
        if not _modern_caller():
            return await self._request(lambda c: c.get_prompt(name, arguments))
        responses = _input_responses(input_responses)
        return await self._request(
            lambda c: c.session.get_prompt(
                name,
                arguments,
                input_responses=responses,
                request_state=request_state,
                allow_input_required=True,
            )
        )

    async def complete(
        self,
        ref: types.PromptReference | types.ResourceTemplateReference,
        argument: dict[str, str],
        context_arguments: dict[str, str] | None,
    ) -> types.CompleteResult:
        """Forward ``completion/complete`` (``ref`` in the upstream's own names). Raises ``UpstreamError``."""
        return await self._request(lambda c: c.complete(ref, argument, context_arguments))

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

    def supports(self, capability: str) -> bool:
        """Whether the connected upstream declares ``capability`` (``resources``, ``prompts``, ...)."""
        client = self._client
        return client is not None and getattr(client.server_capabilities, capability, None) is not None

    async def _paged(
        self, fetch: Callable[[Client, str | None], Awaitable[tuple[list[_T], str | None]]], capability: str
    ) -> list[_T]:
        if not self.supports(capability):
            return []
        items: list[_T] = []
        cursor: str | None = None
        while True:
            page, cursor = await self._request(lambda c, cur=cursor: fetch(c, cur))  # type: ignore[misc]
            items.extend(page)
            if not cursor:
                return items

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
            raise UpstreamError(f"upstream `{self.name}` failed: {_describe(exc)}") from None
        finally:
            self._in_flight.remove(marker)


def _modern_caller() -> bool:
    """Whether the request being served comes from a 2026-07-28 client (or from none)."""
    relay = CURRENT_RELAY.get()
    return relay is None or relay.modern


def _input_responses(raw: Mapping[str, Any] | None) -> types.InputResponses | None:
    """The agent's answers to an upstream's input requests, as the SDK client sends them."""
    if raw is None:
        return None
    adapter: TypeAdapter[types.InputResponses] = TypeAdapter(types.InputResponses)
    try:
        return adapter.validate_python(dict(raw))
    except ValidationError:
        raise UpstreamError("the agent's inputResponses are not valid responses to input requests") from None


def _unexpected(answer: types.Result) -> types.ErrorData:
    return types.ErrorData(
        code=types.INTERNAL_ERROR, message=f"the agent answered with {type(answer).__name__}"
    )


def _subscription(client: Client, uri: str, *, subscribe: bool) -> Awaitable[types.EmptyResult]:
    # Sent as a plain request: the SDK's helpers for these warn (removed in 2026-07-28, SEP-2575),
    # and they are live on the 2025-11-25 connections this is used on.
    request: types.SubscribeRequest | types.UnsubscribeRequest = (
        types.SubscribeRequest(params=types.SubscribeRequestParams(uri=uri))
        if subscribe
        else types.UnsubscribeRequest(params=types.UnsubscribeRequestParams(uri=uri))
    )
    return client.session.send_request(request, types.EmptyResult)
