"""SSRF guard for the gateway's outbound HTTP: refuse addresses an outside URL should never reach.

Upstream, orchestrator, Salesforce and webhook URLs come from gateway.yaml, never from an agent;
still, a hostname can resolve to a loopback, private, link-local or cloud-metadata address (by
mistake, or by DNS an attacker controls), and a Salesforce token answer names the instance URL the
next requests go to. Such a target must be marked ``allow_private_network: true`` on purpose.

An address passes only if no rule below refuses it *and* the standard library calls it global
(deny by default; ``ipaddress`` alone misses ranges newer than the running Python and calls
multicast, 6to4 and some NAT64 ranges global). IPv6 forms that carry an IPv4 address are judged by
it: IPv4-mapped and NAT64 (``64:ff9b::/96``) pass only when the IPv4 address would; 6to4, Teredo,
IPv4-compatible, IPv4-translated and local-use NAT64 are refused outright (a tunnel or translator
on the gateway's own network could carry them inward, and a Teredo client's address is hidden).

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

from mcp_gateway.errors import UpstreamError

KEEPALIVE_SECONDS = 2.0
"""How long a pooled connection may sit idle before it is dropped: well below the usual server
keep-alive (5 s for uvicorn and Node), so a request is never sent on a connection the server is
closing at that moment (an idle SDK client connection re-used for a pin re-check every ~5 s lost
that race under load: a ``ReadError`` and a reconnect)."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[Sequence[IPAddress]]]
"""Resolves ``(host, port)`` to addresses; the system's DNS by default (``system_resolver``)."""

# Cloud instance-metadata and host endpoints (AWS IMDS and ECS, GCP, Azure IMDS and WireServer,
# OCI, Alibaba, AWS's IPv6 IMDS); most also fall in a blocked range, this names the reason.
_METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.170.2",
        "168.63.129.16",
        "192.0.0.192",
        "100.100.100.200",
        "fd00:ec2::254",
    )
)

# IANA IPv4 and IPv6 Special-Purpose Address Registries (2025), plus multicast, the deprecated
# site-local range and the transition forms. First match names the reason.
_V4_BLOCKED = tuple(
    (ipaddress.IPv4Network(net), why)
    for net, why in (
        ("0.0.0.0/32", "an unspecified address"),
        ("0.0.0.0/8", "a 'this network' address"),
        ("10.0.0.0/8", "a private address"),
        ("100.64.0.0/10", "a shared (carrier-grade NAT) address"),
        ("127.0.0.0/8", "a loopback address"),
        ("169.254.0.0/16", "a link-local address"),
        ("172.16.0.0/12", "a private address"),
        ("192.0.0.0/24", "an IETF protocol assignment address"),
        ("192.0.2.0/24", "a documentation address"),
        ("192.88.99.0/24", "a 6to4 relay anycast address"),
        ("192.168.0.0/16", "a private address"),
        ("198.18.0.0/15", "a benchmarking address"),
        ("198.51.100.0/24", "a documentation address"),
        ("203.0.113.0/24", "a documentation address"),
        ("224.0.0.0/4", "a multicast address"),
        ("255.255.255.255/32", "a broadcast address"),
        ("240.0.0.0/4", "a reserved address"),
    )
)
_V6_BLOCKED = tuple(
    (ipaddress.IPv6Network(net), why)
    for net, why in (
        ("::/128", "an unspecified address"),
        ("::1/128", "a loopback address"),
        ("::/96", "an IPv4-compatible address"),
        ("::ffff:0:0:0/96", "an IPv4-translated address"),
        ("64:ff9b:1::/48", "a local-use NAT64 address"),
        ("100::/64", "a discard-only address"),
        ("100:0:0:1::/64", "a dummy address"),
        ("2001::/32", "a Teredo tunnel address"),
        ("2001::/23", "an IETF protocol assignment address"),
        ("2001:db8::/32", "a documentation address"),
        ("3fff::/20", "a documentation address"),
        ("2002::/16", "a 6to4 tunnel address"),
        ("5f00::/16", "a segment routing address"),
        ("fc00::/7", "a private (unique local) address"),
        ("fe80::/10", "a link-local address"),
        ("fec0::/10", "a site-local address"),
        ("ff00::/8", "a multicast address"),
    )
)
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_COMPATIBLE = ipaddress.IPv6Network("::/96")


def _embedded(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 transition form carries (Teredo: server and de-obfuscated client)."""
    if address.teredo is not None:
        return address.teredo
    if address.sixtofour is not None:
        return (address.sixtofour,)
    if address in _NAT64 or address in _COMPATIBLE:
        return (ipaddress.IPv4Address(int(address) & 0xFFFFFFFF),)
    return ()


def blocked_reason(address: IPAddress) -> str | None:
    """Why ``address`` is not a public unicast address, or None if it is one."""
    if isinstance(address, ipaddress.IPv6Address):
        address = ipaddress.IPv6Address(int(address))  # a scope (``%eth0``) changes nothing here
        if address in _MAPPED:
            return blocked_reason(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address in _METADATA:
        return "a cloud metadata address"
    if isinstance(address, ipaddress.IPv6Address):
        if address in _NAT64:
            inner = _embedded(address)[0]
            why = blocked_reason(inner)
            return None if why is None else f"a NAT64 address of {why} ({inner})"
        table: Iterable[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]] = _V6_BLOCKED
    else:
        table = _V4_BLOCKED
    for network, why in table:
        if address in network:
            if isinstance(address, ipaddress.IPv6Address) and network.prefixlen < 128:
                wrapped = [
                    f"{inner_why} ({inner})"
                    for inner in _embedded(address)
                    if (inner_why := blocked_reason(inner)) is not None
                ]
                if wrapped:
                    return f"{why} wrapping {wrapped[0]}"
            return why
    if address.is_reserved:
        return "a reserved address"
    if not address.is_global:
        return "a non-global address"
    return None


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


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to addresses the guard checked.

    httpcore still starts TLS with the URL's hostname (SNI and certificate check), and httpx sends
    the URL's ``Host`` header: only the IP the socket goes to is pinned.

    Args:
        allow_private_network: connect to any address (still resolved once).
        resolver: the DNS lookup (tests inject one that answers differently each time).
        inner: the backend that opens sockets (default: httpcore's anyio one).
    """

    def __init__(
        self,
        *,
        allow_private_network: bool = False,
        resolver: Resolver = system_resolver,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._allow = allow_private_network
        self._resolver = resolver
        self._inner = inner if inner is not None else httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        async def connect(address: str, left: float | None) -> httpcore.AsyncNetworkStream:
            return await self._inner.connect_tcp(address, port, left, local_address, socket_options)

        try:
            return await connect_pinned(
                host,
                port,
                timeout,
                connect,
                allow_private_network=self._allow,
                resolver=self._resolver,
                failures=(httpcore.ConnectError, httpcore.ConnectTimeout),
            )
        except HostUnresolved as exc:
            raise httpcore.ConnectError(str(exc)) from None
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"host `{host}` did not resolve in time") from None

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("the guarded transport does not open unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


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
