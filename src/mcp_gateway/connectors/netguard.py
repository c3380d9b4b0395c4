"""SSRF guard for the gateway's outbound HTTP: refuse addresses an outside URL should never reach.

Upstream, orchestrator, Salesforce and webhook URLs come from gateway.yaml, never from an agent;
still, a hostname can resolve to a loopback, private, link-local or cloud-metadata address (by
mistake, or by DNS an attacker controls), and a Salesforce token answer names the instance URL the
next requests go to. Such a target must be marked ``allow_private_network: true`` on purpose.

Which addresses are refused is ``netranges.blocked_reason`` (deny by default: only public unicast
passes).

DNS rebinding: every connection resolves the host once, checks every address it got, and connects
to exactly one of those addresses (``PinnedBackend`` under ``GuardedTransport`` for httpx; the lean
client and the SDK client's transport do the same), while TLS still checks the certificate against
the hostname. A second, different DNS answer is never asked for.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio
import httpcore
import httpx

from mcp_gateway.connectors.netranges import IPAddress as IPAddress
from mcp_gateway.connectors.netranges import blocked_reason as blocked_reason
from mcp_gateway.errors import UpstreamError

KEEPALIVE_SECONDS = 2.0
"""How long a pooled connection may sit idle before it is dropped: well below the usual server
keep-alive (5 s for uvicorn and Node), so a request is never sent on a connection the server is
closing at that moment (an idle SDK client connection re-used for a pin re-check every ~5 s lost
that race under load: a ``ReadError`` and a reconnect)."""

Resolver = Callable[[str, int], Awaitable[Sequence[IPAddress]]]
"""Resolves ``(host, port)`` to addresses; the system's DNS by default (``system_resolver``)."""


class HostRefused(UpstreamError):
    """A host resolved to an address the guard refuses; the message names the host, address, why."""

    def __init__(self, host: str, address: IPAddress, reason: str, *, subject: str = "host") -> None:
        self.host, self.address, self.reason = host, address, reason
        super().__init__(
            f"{subject} `{host}` resolves to {reason} ({address}); "
            "set allow_private_network: true on it if this is intended"
        )


class HostUnresolved(UpstreamError):
    """A host has no address."""


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """``host``'s addresses from the system's resolver, in its order, without repeats.

    Raises:
        OSError: the name does not resolve.
    """
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: dict[IPAddress, None] = {}
    for info in infos:
        found.setdefault(ipaddress.ip_address(str(info[4][0])), None)
    return list(found)


async def resolve_checked(
    host: str,
    port: int,
    *,
    allow_private_network: bool,
    resolver: Resolver = system_resolver,
    subject: str = "host",
) -> list[IPAddress]:
    """Resolve ``host`` once and refuse it if any address is blocked; the addresses to connect to.

    Raises:
        HostUnresolved: no address.
        HostRefused: an address is blocked (and ``allow_private_network`` is false).
    """
    try:
        addresses = list(await resolver(host, port))
    except OSError:
        raise HostUnresolved(f"{subject} `{host}` does not resolve") from None
    if not addresses:
        raise HostUnresolved(f"{subject} `{host}` does not resolve")
    if not allow_private_network:
        for address in addresses:
            reason = blocked_reason(address)
            if reason is not None:
                raise HostRefused(host, address, reason, subject=subject)
    return addresses


async def check_upstream_url(
    url: str, *, allow_private_network: bool, resolver: Resolver = system_resolver
) -> None:
    """Resolve ``url``'s host and refuse it if any address is blocked (a check only: connect through
    a pinned client, or the name may resolve differently the next time).

    Raises:
        UpstreamError: the host does not resolve (``HostUnresolved``), or resolves to a blocked
            address (``HostRefused``).
    """
    if allow_private_network:
        return
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    await resolve_checked(
        parts.hostname or "", port, allow_private_network=False, resolver=resolver, subject="upstream host"
    )


_Stream = TypeVar("_Stream")


async def connect_pinned(
    host: str,
    port: int,
    timeout: float | None,
    connect: Callable[[str, float | None], Awaitable[_Stream]],
    *,
    allow_private_network: bool,
    resolver: Resolver,
    failures: tuple[type[Exception], ...],
) -> _Stream:
    """Resolve and check ``host`` once, then ``connect(address, timeout)`` to each checked address in
    turn until one answers (``failures`` are the errors that move on to the next address).

    Raises:
        HostRefused, HostUnresolved: from ``resolve_checked``.
        TimeoutError: resolving took longer than ``timeout``.
        the last of ``failures``: no address took the connection.
    """
    deadline = None if timeout is None else anyio.current_time() + timeout
    with anyio.fail_after(timeout):
        addresses = await resolve_checked(
            host, port, allow_private_network=allow_private_network, resolver=resolver
        )
    last = len(addresses) - 1
    for index, address in enumerate(addresses):
        left = None if deadline is None else max(0.0, deadline - anyio.current_time())
        try:
            return await connect(str(address), left)
        except failures:
            if index == last:
                raise
    raise AssertionError("unreachable: resolve_checked returns at least one address")


class PinnedConnector:
    """Connects only to addresses the guard checked; the base of ``PinnedBackend`` (``httpcore``, under
    ``GuardedTransport``) and ``PinnedBackend2`` (``httpcore2``, the MCP SDK client's), which name their
    stack's errors and backend. TLS keeps the URL's hostname (SNI, certificate), the client sends its
    ``Host``: only the socket's IP is pinned. A host that does not resolve is a connect error (an outage).

    What a *refused* host becomes differs on purpose. Under ``GuardedTransport`` ``HostRefused`` passes
    up and becomes ``BlockedAddress``, which the adapters tell from an outage (named, never retried; an
    ``httpx.HTTPError`` is retried and named by class only: its text can quote a secret URL). Under the
    SDK client it is ``httpcore2.ConnectError`` with the host and why: the SDK and ``httpx2`` handle
    their own transport errors only, and the upstream link reports it and retries like any outage.

    Args:
        allow_private_network: connect to any address (still resolved once).
        resolver: the DNS lookup (tests inject one that answers differently each time).
        inner: the backend that opens sockets (default: the stack's anyio one).
    """

    _connect_error: type[Exception]
    _connect_timeout: type[Exception]
    _refused_passes: bool
    _backend: Callable[[], Any]

    def __init__(
        self,
        *,
        allow_private_network: bool = False,
        resolver: Resolver = system_resolver,
        inner: Any = None,
    ) -> None:
        self._allow = allow_private_network
        self._resolver = resolver
        self._inner = inner if inner is not None else self._backend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> Any:
        async def connect(address: str, left: float | None) -> Any:
            return await self._inner.connect_tcp(address, port, left, local_address, socket_options)

        try:
            return await connect_pinned(
                host,
                port,
                timeout,
                connect,
                allow_private_network=self._allow,
                resolver=self._resolver,
                failures=(self._connect_error, self._connect_timeout),
            )
        except HostRefused as exc:
            if self._refused_passes:
                raise
            raise self._connect_error(str(exc)) from None
        except HostUnresolved as exc:
            raise self._connect_error(str(exc)) from None
        except TimeoutError:
            raise self._connect_timeout(f"host `{host}` did not resolve in time") from None

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> Any:
        raise self._connect_error("the guarded transport does not open unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class PinnedBackend(PinnedConnector, httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to addresses the guard checked; a refused host
    passes up as ``HostRefused`` (see ``PinnedConnector``)."""

    _connect_error, _connect_timeout = httpcore.ConnectError, httpcore.ConnectTimeout
    _refused_passes = True
    _backend = httpcore.AnyIOBackend


class _PinnedHTTPTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a ``PinnedBackend`` (httpx 0.28 takes no backend argument, so the
    pool it builds is replaced by one with the same settings and the backend)."""

    def __init__(self, backend: httpcore.AsyncNetworkBackend) -> None:
        context = httpx.create_ssl_context()
        super().__init__(verify=context)
        limits = httpx.Limits(
            max_connections=100, max_keepalive_connections=20, keepalive_expiry=KEEPALIVE_SECONDS
        )
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


class BlockedAddress(httpx.TransportError):
    """The guard refused a request's host; the message names the host and why (never credentials)."""


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that sends only to addresses the SSRF guard checked.

    Without ``inner`` it connects through a ``PinnedBackend``: each new connection resolves the host
    once, refuses it if any address is blocked, and connects to a checked address. With ``inner``
    (tests pass ``httpx.MockTransport``) it checks each request's host before handing it over;
    ``inner`` makes its own connections, so that mode pins nothing.

    Args:
        inner: a transport that sends instead of the network.
        allow_private_network: skip the check (a deliberately private target, e.g. an emulator).
        resolver: the DNS lookup.
        backend: opens the sockets under the pinning (default: httpcore's anyio backend).
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport | None = None,
        *,
        allow_private_network: bool = False,
        resolver: Resolver = system_resolver,
        backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._precheck = inner is not None and not allow_private_network
        self._resolver = resolver
        self._inner = inner or _PinnedHTTPTransport(
            PinnedBackend(allow_private_network=allow_private_network, resolver=resolver, inner=backend)
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            if self._precheck:
                await check_upstream_url(
                    str(request.url), allow_private_network=False, resolver=self._resolver
                )
            return await self._inner.handle_async_request(request)
        except HostRefused as exc:
            raise BlockedAddress(str(exc).replace("upstream host", "host"), request=request) from None
        except HostUnresolved as exc:
            raise httpx.ConnectError(str(exc), request=request) from None

    async def aclose(self) -> None:
        await self._inner.aclose()
