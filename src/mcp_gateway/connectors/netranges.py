"""Which IP addresses an outside URL must never reach (``blocked_reason``), for the SSRF guard
(``netguard.py``).

An address passes only if no rule below refuses it *and* the standard library calls it global
(deny by default; ``ipaddress`` alone misses ranges newer than the running Python and calls
multicast, 6to4 and some NAT64 ranges global). IPv6 forms that carry an IPv4 address are judged by
it: IPv4-mapped and NAT64 (``64:ff9b::/96``) pass only when the IPv4 address would; 6to4, Teredo,
IPv4-compatible, IPv4-translated and local-use NAT64 are refused outright (a tunnel or translator
on the gateway's own network could carry them inward, and a Teredo client's address is hidden).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

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
