"""SSRF guard, the address rules: every special-purpose range of the IANA registries is refused
(first, middle and last address), IPv6 forms that carry an IPv4 address are judged by it, and
nothing passes that the standard library would not call global."""

from __future__ import annotations

import ipaddress
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_gateway.connectors.netguard import IPAddress, blocked_reason

# (range, what the reason must say, a regular expression): IANA IPv4/IPv6 Special-Purpose Address Registries,
# multicast, and the transition forms. Ranges IANA calls globally reachable but no upstream lives in
# (IETF protocol anycast) are refused too.
BLOCKED_RANGES = [
    ("0.0.0.0/8", "this network|unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "carrier-grade NAT"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved|broadcast"),
    ("255.255.255.255/32", "broadcast"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::2/127", "IPv4-compatible"),
    ("::ffff:0:0:0/96", "IPv4-translated"),
    ("::ffff:10.0.0.0/104", "private"),
    ("::ffff:127.0.0.0/104", "loopback"),
    ("::ffff:100.64.0.0/106", "carrier-grade NAT"),
    ("64:ff9b::a00:0/104", "NAT64 address of a private"),
    ("64:ff9b::7f00:0/104", "NAT64 address of a loopback"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("100:0:0:1::/64", "dummy"),
    ("2001::/32", "Teredo"),
    ("2001:1::/32", "IETF protocol"),
    ("2001:2::/48", "IETF protocol"),
    ("2001:20::/28", "IETF protocol"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("2002::/16", "6to4"),
    ("5f00::/16", "segment routing"),
    ("fc00::/7", "unique local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
    ("4000::/3", "reserved"),
]


def _samples(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> list[IPAddress]:
    first, last = int(network.network_address), int(network.broadcast_address)
    kind = type(network.network_address)
    return [kind(first), kind((first + last) // 2), kind(last)]


@pytest.mark.parametrize(("network", "word"), BLOCKED_RANGES)
def test_every_address_of_a_special_purpose_range_is_refused_with_its_reason(network: str, word: str) -> None:
    for address in _samples(ipaddress.ip_network(network)):
        why = blocked_reason(address)
        assert why is not None and re.search(word, why), (address, why)


@pytest.mark.parametrize(
    ("address", "word"),
    [
        ("100.100.100.200", "metadata"),  # Alibaba, inside the CGNAT range
        ("168.63.129.16", "metadata"),  # Azure WireServer: a public address
        ("192.0.0.192", "metadata"),  # OCI
        ("::ffff:169.254.169.254", "metadata"),
        ("64:ff9b::a9fe:a9fe", "metadata"),  # NAT64 of 169.254.169.254
        ("2002:a9fe:a9fe::1", "metadata"),  # 6to4 wrapping 169.254.169.254
        ("2002:a00:1::1", "private address (10.0.0.1)"),
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "private address (10.0.0.1)"),  # Teredo client, obfuscated
        ("::7f00:1", "loopback address (127.0.0.1)"),  # IPv4-compatible
        ("fe80::1%eth0", "link-local"),  # a scoped address
    ],
)
def test_a_wrapped_or_metadata_address_names_what_it_reaches(address: str, word: str) -> None:
    why = blocked_reason(ipaddress.ip_address(address))
    assert why is not None and word in why, why


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "93.184.216.34",
        "192.31.196.1",  # AS112, globally reachable
        "2606:4700:4700::1111",
        "2620:4f:8000::1",  # AS112 direct delegation
        "::ffff:8.8.8.8",  # IPv4-mapped public: the same host as 8.8.8.8
        "64:ff9b::808:808",  # NAT64 of a public address (IPv6-only networks with DNS64)
    ],
)
def test_a_public_unicast_address_passes(address: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) is None


_V4 = st.integers(min_value=0, max_value=2**32 - 1).map(ipaddress.IPv4Address)
_V6 = st.integers(min_value=0, max_value=2**128 - 1).map(ipaddress.IPv6Address)


@given(_V4)
def test_an_ipv4_mapped_address_gets_the_verdict_of_its_ipv4_address(v4: ipaddress.IPv4Address) -> None:
    mapped = ipaddress.IPv6Address(0xFFFF_0000_0000 | int(v4))
    assert (blocked_reason(mapped) is None) == (blocked_reason(v4) is None)


@given(_V4, _V4)
def test_no_tunnel_or_translation_form_passes_when_it_wraps_a_refused_ipv4_address(
    v4: ipaddress.IPv4Address, server: ipaddress.IPv4Address
) -> None:
    nat64 = ipaddress.IPv6Address((0x64FF9B << 96) | int(v4))
    six_to_four = ipaddress.IPv6Address((0x2002 << 112) | (int(v4) << 80) | 1)
    teredo = ipaddress.IPv6Address((0x20010000 << 96) | (int(server) << 64) | (int(v4) ^ 0xFFFFFFFF))
    compatible = ipaddress.IPv6Address(int(v4))
    # 6to4, Teredo and IPv4-compatible never pass; NAT64 passes exactly when its IPv4 address does.
    for wrapped in (six_to_four, teredo, compatible):
        assert blocked_reason(wrapped) is not None
    assert (blocked_reason(nat64) is None) == (blocked_reason(v4) is None)


@given(st.one_of(_V4, _V6))
def test_nothing_passes_that_the_standard_library_does_not_call_global(address: IPAddress) -> None:
    if blocked_reason(address) is None:
        if isinstance(address, ipaddress.IPv6Address) and address in ipaddress.ip_network("64:ff9b::/96"):
            address = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)  # judged by what it translates to
        assert address.is_global
        assert not (address.is_private or address.is_loopback or address.is_link_local)
        assert not (address.is_multicast or address.is_reserved or address.is_unspecified)
