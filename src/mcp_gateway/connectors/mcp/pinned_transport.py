"""The MCP SDK client's transport (``httpx2``): connects only to addresses the SSRF guard checked.

The SDK's Streamable HTTP client runs on ``httpx2``/``httpcore2``, not the ``httpx`` the adapters
use, so ``netguard.GuardedTransport`` cannot serve it; this is the same pinning for that stack. Each
new connection resolves the host once (``netguard.connect_pinned``), refuses it if any address is
blocked, and opens the socket to a checked address; TLS keeps the hostname for SNI and the
certificate check. A refusal surfaces as ``httpx2.ConnectError`` (the SDK's connection failure),
naming the host and the reason.
"""

from __future__ import annotations

import httpcore2
import httpx2

from mcp_gateway.connectors.netguard import KEEPALIVE_SECONDS, PinnedConnector, Resolver, system_resolver


class PinnedBackend2(PinnedConnector, httpcore2.AsyncNetworkBackend):
    """``netguard.PinnedBackend`` for ``httpcore2``; a refused host is ``httpcore2.ConnectError``
    naming the host and why (see ``netguard.PinnedConnector`` for why the stacks differ there)."""

    _connect_error, _connect_timeout = httpcore2.ConnectError, httpcore2.ConnectTimeout
    _refused_passes = False
    _backend = httpcore2.AnyIOBackend


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
