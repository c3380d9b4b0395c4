"""SSRF guard for the gateway's outbound HTTP: refuse addresses an outside URL should never reach.

Upstream, orchestrator and Salesforce URLs come only from gateway.yaml, never from an agent; still, a
hostname can resolve to a loopback, private, link-local or cloud-metadata address (by mistake, or by
DNS an attacker controls), and a Salesforce token answer names the instance URL the next requests go
to. Such a target must be marked ``allow_private_network: true`` on purpose. MCP upstreams are checked
at connect time (``check_upstream_url``); the adapters' httpx clients check every request
(``GuardedTransport``).

Residual risk: the check runs at connect time; a hostname that re-resolves between the check and the
connection (DNS rebinding against the gateway itself) is not pinned. Use IP literals or trusted DNS
for upstreams that matter.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import anyio
import httpx

from mcp_gateway.errors import UpstreamError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud instance-metadata endpoints (AWS, GCP, Azure, OCI, Alibaba; AWS's IPv6 one).
_METADATA = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("169.254.170.2"),
    ipaddress.ip_address("100.100.100.200"),
    ipaddress.ip_address("fd00:ec2::254"),
}


def blocked_reason(address: IPAddress) -> str | None:
    """Why ``address`` is not a public unicast address, or None if it is one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return blocked_reason(address.ipv4_mapped)
    if address in _METADATA:
        return "a cloud metadata address"
    checks = (
        (address.is_unspecified, "an unspecified address"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_private, "a private address"),
        (address.is_multicast, "a multicast address"),
        (address.is_reserved, "a reserved address"),
    )
    return next((why for hit, why in checks if hit), None)


async def check_upstream_url(url: str, *, allow_private_network: bool) -> None:
    """Resolve ``url``'s host and refuse it if any address is blocked.

    Raises:
        UpstreamError: the host does not resolve, or resolves to a blocked address.
    """
    if allow_private_network:
        return
    host = urlsplit(url).hostname or ""
    try:
        infos = await anyio.getaddrinfo(host, None)
    except OSError:
        raise UpstreamError(f"upstream host `{host}` does not resolve") from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        reason = blocked_reason(address)
        if reason is not None:
            raise UpstreamError(
                f"upstream host `{host}` resolves to {reason} ({address}); "
                "set allow_private_network: true on that upstream if this is intended"
            )


class BlockedAddress(httpx.TransportError):
    """The guard refused a request's host; the message names the host and why (never credentials)."""


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that runs the SSRF guard on every request's host before sending it.

    Args:
        inner: the transport that sends (default: httpx's own).
        allow_private_network: skip the guard (a deliberately private target, e.g. an emulator).
    """

    def __init__(
        self, inner: httpx.AsyncBaseTransport | None = None, *, allow_private_network: bool = False
    ) -> None:
        self._inner = inner if inner is not None else httpx.AsyncHTTPTransport()
        self._allow = allow_private_network

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self._allow:
            try:
                await check_upstream_url(str(request.url), allow_private_network=False)
            except UpstreamError as exc:
                raise BlockedAddress(str(exc).replace("upstream host", "host"), request=request) from None
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()
