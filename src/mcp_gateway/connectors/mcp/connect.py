"""Opening one client connection to an upstream, as its config says (``link.py`` supervises it).

Secrets are resolved from the vault here, at connect time, and passed only to the upstream: as
environment variables of the stdio process, or as HTTP headers of the gateway's own client. The
agent's token is never among them. A stdio upstream's stderr is read through the redactor
(``stdio.py``). An HTTP upstream's address is checked against the SSRF guard and pinned; a
2026-07-28 one also gets the lean forwarder for ``tools/call`` (``forwarder.py``) unless
``lean_calls`` is off.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.session import MessageHandlerFnT
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from mcp_gateway.connectors.mcp.asks import UpstreamAsks
from mcp_gateway.connectors.mcp.capabilities import per_request_capabilities
from mcp_gateway.connectors.mcp.config import StdioUpstream, Upstream, substitute
from mcp_gateway.connectors.mcp.forwarder import FastToolCaller
from mcp_gateway.connectors.mcp.http_client import HttpFailure
from mcp_gateway.connectors.mcp.pinned_transport import PinnedTransport2
from mcp_gateway.connectors.mcp.stdio import stderr_pipe
from mcp_gateway.connectors.netguard import check_upstream_url
from mcp_gateway.redact import Redactor
from mcp_gateway.telemetry import trace_headers
from mcp_gateway.types import SecretValue

logger = logging.getLogger(__name__)

SecretResolver = Callable[[str], SecretValue]
RedactorSource = Callable[[], Redactor]


@dataclass
class StderrTail:
    """A stdio upstream's last stderr line (scrubbed) and the thread that reads it: why a process
    that exited at start failed (kept by the link across connection attempts)."""

    lines: deque[str] = field(default_factory=lambda: deque(maxlen=1))
    thread: threading.Thread | None = None


def _client_over(
    transport: Any, config: Upstream, asks: UpstreamAsks, on_message: MessageHandlerFnT
) -> Client:
    return Client(
        per_request_capabilities(transport),
        mode=config.protocol,
        cache=None,
        read_timeout_seconds=config.timeout_seconds,
        message_handler=on_message,
        logging_callback=asks.on_log,
        log_level="debug",
        # Declaring a callback advertises the capability to the upstream: only when relayed.
        sampling_callback=asks.on_sampling if "sampling" in config.relay_requests else None,
        elicitation_callback=asks.on_elicitation if "elicitation" in config.relay_requests else None,
        list_roots_callback=asks.on_roots if "roots" in config.relay_requests else None,
    )


async def open_client(
    stack: AsyncExitStack,
    name: str,
    config: Upstream,
    resolve: SecretResolver,
    redactor: RedactorSource,
    asks: UpstreamAsks,
    on_message: MessageHandlerFnT,
    stderr: StderrTail,
) -> tuple[Client, FastToolCaller | None]:
    """Connect to upstream ``name``: the client, and the lean forwarder beside it (or None);
    everything opened is closed with ``stack``.

    Raises:
        VaultSealed, SecretNotFound: a secret the config names cannot be had.
        UpstreamError: the URL is refused by the SSRF guard.
        Exception: the connection or the handshake failed (the link reports and retries).
    """
    if isinstance(config, StdioUpstream):
        stderr.lines.clear()
        stderr.thread = None
        env = {key: substitute(value, resolve) for key, value in config.env.items()}
        errlog, stderr.thread = stderr_pipe(name, redactor, tail=stderr.lines)
        stack.callback(errlog.close)
        params = StdioServerParameters(
            command=config.command, args=list(config.args), env=env, cwd=config.cwd
        )
        stdio = _client_over(stdio_client(params, errlog=errlog), config, asks, on_message)
        return await stack.enter_async_context(stdio), None
    # A clear refusal up front; the transport pins the address each connection checked.
    await check_upstream_url(config.url, allow_private_network=config.allow_private_network)
    headers = {key: substitute(value, resolve) for key, value in config.headers.items()}
    http = httpx2.AsyncClient(
        transport=PinnedTransport2(allow_private_network=config.allow_private_network),
        headers=headers,
        timeout=httpx2.Timeout(config.timeout_seconds, read=config.timeout_seconds),
        follow_redirects=False,
        event_hooks={"request": [_traced]},
    )
    await stack.enter_async_context(http)
    client = _client_over(streamable_http_client(config.url, http_client=http), config, asks, on_message)
    opened = await stack.enter_async_context(client)
    if not config.lean_calls or opened.protocol_version not in MODERN_PROTOCOL_VERSIONS:
        return opened, None
    try:
        fast = FastToolCaller(
            name,
            config.url,
            headers,
            opened.protocol_version,
            config.timeout_seconds,
            allow_private_network=config.allow_private_network,
        )
    except HttpFailure as exc:  # names no header value
        logger.warning("upstream %s: calls take the SDK client: %s", name, exc)
        return opened, None
    stack.push_async_callback(fast.aclose)
    return opened, fast


async def _traced(request: httpx2.Request) -> None:
    """The gateway's span as the upstream's parent, as a W3C ``traceparent`` header (the SDK client
    puts it in ``_meta`` too); nothing when tracing is off. Hooks run in the sending call's context."""
    headers = trace_headers()
    if headers is not None:
        request.headers.update(headers)
