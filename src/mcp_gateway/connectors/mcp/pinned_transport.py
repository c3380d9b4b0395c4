"""The MCP SDK client's transport (``httpx2``): connects only to addresses the SSRF guard checked.

The SDK's Streamable HTTP client runs on ``httpx2``/``httpcore2``, not the ``httpx`` the adapters
use, so ``netguard.GuardedTransport`` cannot serve it; this is the same pinning for that stack. Each
new connection resolves the host once (``netguard.connect_pinned``), refuses it if any address is
blocked, and opens the socket to a checked address; TLS keeps the hostname for SNI and the
certificate check. A refusal surfaces as ``httpx2.ConnectError`` (the SDK's connection failure),
naming the host and the reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpcore2
import httpx2

from mcp_gateway.connectors.netguard import (
    KEEPALIVE_SECONDS,
    HostRefused,
    HostUnresolved,
    Resolver,
    connect_pinned,
    system_resolver,
)


class PinnedBackend2(httpcore2.AsyncNetworkBackend):
    """``netguard.PinnedBackend`` for ``httpcore2``."""

    def __init__(
        self,
        *,
        allow_private_network: bool,
        resolver: Resolver = system_resolver,
        inner: httpcore2.AsyncNetworkBackend | None = None,
    ) -> None:
        self._allow = allow_private_network
        self._resolver = resolver
        self._inner = inner if inner is not None else httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        async def connect(address: str, left: float | None) -> httpcore2.AsyncNetworkStream:
            return await self._inner.connect_tcp(address, port, left, local_address, socket_options)

        try:
            return await connect_pinned(
                host,
                port,
                timeout,
                connect,
                allow_private_network=self._allow,
                resolver=self._resolver,
                failures=(httpcore2.ConnectError, httpcore2.ConnectTimeout),
            )
        except (HostRefused, HostUnresolved) as exc:
            raise httpcore2.ConnectError(str(exc)) from None
        except TimeoutError:
            raise httpcore2.ConnectTimeout(f"host `{host}` did not resolve in time") from None

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore2.AsyncNetworkStream:
        raise httpcore2.ConnectError("the guarded transport does not open unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class PinnedTransport2(httpx2.AsyncHTTPTransport):
    """httpx2's transport over a ``PinnedBackend2`` (its constructor takes no backend, so the pool
    it builds is replaced by one with httpx2's default limits and the backend).

    Args:
        allow_private_network: connect to any address (still resolved once).
        resolver: the DNS lookup (tests inject one).
        backend: opens the sockets under the pinning (default: httpcore2's anyio backend).
    """

    def __init__(
        self,
        *,
        allow_private_network: bool,
        resolver: Resolver = system_resolver,
        backend: httpcore2.AsyncNetworkBackend | None = None,
    ) -> None:
        context = httpx2.create_ssl_context()
        super().__init__(verify=context)
        limits = httpx2.Limits(
            max_connections=100, max_keepalive_connections=20, keepalive_expiry=KEEPALIVE_SECONDS
        )
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=PinnedBackend2(
                allow_private_network=allow_private_network, resolver=resolver, inner=backend
            ),
        )
