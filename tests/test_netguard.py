"""SSRF guard: upstream hosts that resolve to internal addresses are refused unless allowed."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest

from conftest import GatewayFactory, connect, wait_until
from mcp_gateway.errors import UpstreamError
from mcp_gateway.netguard import blocked_reason, check_upstream_url


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fd00:ec2::254", "metadata"),
        ("::ffff:127.0.0.1", "loopback"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - a test value, nothing binds to it
        ("224.0.0.1", "multicast"),
    ],
)
def test_every_internal_address_class_is_blocked(address: str, reason: str) -> None:
    why = blocked_reason(ipaddress.ip_address(address))
    assert why is not None and reason in why


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700:4700::1111", "93.184.216.34"])
def test_public_addresses_pass(address: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) is None


@pytest.mark.anyio
async def test_a_hostname_resolving_to_loopback_is_refused_unless_allowed() -> None:
    with pytest.raises(UpstreamError) as info:
        await check_upstream_url("http://localhost:9/mcp", allow_private_network=False)
    assert "loopback" in str(info.value) and "allow_private_network" in str(info.value)
    await check_upstream_url("http://localhost:9/mcp", allow_private_network=True)


POLICY = """\
version: 1
agents:
  agent-a:
    grants:
      - tool: "up.*"
"""


@pytest.mark.anyio
@pytest.mark.e2e
async def test_an_upstream_on_a_private_address_is_not_contacted_without_opt_in(
    make_gateway: GatewayFactory, http_upstream: tuple[str, Path]
) -> None:
    url, log = http_upstream
    gw = make_gateway(POLICY, upstreams={"up": {"transport": "http", "url": url}})
    wait_until(lambda: "loopback" in httpx.get(f"{gw.base}/readyz").json()["upstreams"]["up"], what="refusal")
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        assert (await client.list_tools()).tools == []
        result = await client.call_tool("up.echo", {"text": "hi"})
    assert result.is_error and "unavailable" in result.content[0].text  # type: ignore[union-attr]
    assert not log.exists()


class _Redirect(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.send_response(307)
        self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def redirecting_upstream() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Redirect)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/mcp"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.anyio
@pytest.mark.e2e
async def test_a_redirect_to_a_metadata_address_is_not_followed(
    make_gateway: GatewayFactory, redirecting_upstream: str
) -> None:
    gw = make_gateway(
        POLICY,
        upstreams={"up": {"transport": "http", "url": redirecting_upstream, "allow_private_network": True}},
    )
    wait_until(
        lambda: "unavailable" in httpx.get(f"{gw.base}/readyz").json()["upstreams"]["up"],
        what="redirect refusal",
    )
    status = httpx.get(f"{gw.base}/readyz").json()["upstreams"]["up"]
    assert "169.254.169.254" in status or "redirect" in status.lower()
