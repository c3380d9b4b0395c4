"""Attack: DNS rebinding against the gateway's outbound clients.

The attacker's name server answers a public address to the first lookup (the SSRF check passes) and
127.0.0.1 to every later one. A client that checks one answer and connects by name (resolving again)
reaches the loopback server. Every client must resolve once and connect to exactly what it checked:
the real HTTP server on 127.0.0.1 below must receive nothing.

Sockets go through a backend that opens real connections to loopback and to names (as a client that
connects by name would), and refuses other IP literals: the test network has no internet, and the
public address is where a pinned client must try to go.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Iterable, Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import httpcore
import httpcore2
import httpx
import httpx2
import pytest

from mcp_gateway.approvals.model import Approval
from mcp_gateway.approvals.notify import ApprovalNotifier
from mcp_gateway.connectors.mcp.http_client import HttpFailure, LeanHttpClient
from mcp_gateway.connectors.mcp.pinned_transport import PinnedTransport2
from mcp_gateway.connectors.netguard import (
    BlockedAddress,
    GuardedTransport,
    IPAddress,
    check_upstream_url,
)

pytestmark = pytest.mark.anyio
PUBLIC = "93.184.216.34"


class Rebinding:
    """A resolver under the attacker's control: ``first`` for the first lookup, ``then`` after."""

    def __init__(self, first: str, then: str) -> None:
        self.first, self.then = ipaddress.ip_address(first), ipaddress.ip_address(then)
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.lookups.append(host)
        return [self.first if len(self.lookups) == 1 else self.then]


def _loopback_only(host: str) -> None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return  # a name: the real backend resolves it, as a client connecting by name would
    if not address.is_loopback:
        raise OSError(f"the test network reaches only loopback, not {host}")


class LoopbackBackend(httpcore.AsyncNetworkBackend):
    """httpcore's real backend, limited to loopback; records every host it was asked to connect to."""

    def __init__(self) -> None:
        self.hosts: list[str] = []
        self._real = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.hosts.append(host)
        try:
            _loopback_only(host)
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from None
        return await self._real.connect_tcp(host, port, timeout, local_address, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self._real.sleep(seconds)


class LoopbackBackend2(httpcore2.AsyncNetworkBackend):
    """``LoopbackBackend`` for the SDK client's httpcore2."""

    def __init__(self) -> None:
        self.hosts: list[str] = []
        self._real = httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        self.hosts.append(host)
        try:
            _loopback_only(host)
        except OSError as exc:
            raise httpcore2.ConnectError(str(exc)) from None
        return await self._real.connect_tcp(host, port, timeout, local_address, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self._real.sleep(seconds)


class Loopback:
    """A real HTTP server on ``address``; records the requests it receives."""

    def __init__(self, address: str = "127.0.0.1", port: int = 0) -> None:
        self.requests: list[tuple[str, str]] = []  # (path, Host header)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                outer.requests.append((self.path, self.headers.get("host", "")))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((address, port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def loopback() -> Iterator[Loopback]:
    server = Loopback()
    yield server
    server.stop()


async def test_the_adapters_transport_connects_to_the_public_answer_it_checked_not_a_rebound_one(
    loopback: Loopback,
) -> None:
    resolver, sockets = Rebinding(PUBLIC, "127.0.0.1"), LoopbackBackend()
    transport = GuardedTransport(resolver=resolver, backend=sockets)
    async with httpx.AsyncClient(transport=transport) as client:
        with anyio.fail_after(10), pytest.raises(httpx.ConnectError):
            await client.get(f"http://localhost:{loopback.port}/latest/meta-data/")
        # A later connection resolves again, gets the rebound answer, and checks it.
        with anyio.fail_after(10), pytest.raises(BlockedAddress, match=r"loopback address \(127\.0\.0\.1\)"):
            await client.get(f"http://localhost:{loopback.port}/latest/meta-data/")
    assert sockets.hosts == [PUBLIC]
    assert resolver.lookups == ["localhost", "localhost"]
    assert loopback.requests == []


async def test_the_sdk_clients_transport_connects_to_the_public_answer_it_checked_not_a_rebound_one(
    loopback: Loopback,
) -> None:
    resolver, sockets = Rebinding(PUBLIC, "127.0.0.1"), LoopbackBackend2()
    transport = PinnedTransport2(allow_private_network=False, resolver=resolver, backend=sockets)
    async with httpx2.AsyncClient(transport=transport) as client:
        with anyio.fail_after(10), pytest.raises(httpx2.ConnectError):
            await client.post(f"http://localhost:{loopback.port}/mcp", json={})
        with anyio.fail_after(10), pytest.raises(httpx2.ConnectError, match="loopback address"):
            await client.post(f"http://localhost:{loopback.port}/mcp", json={})
    assert sockets.hosts == [PUBLIC]
    assert loopback.requests == []


async def test_a_check_then_a_second_lookup_by_the_transport_is_refused_by_the_link_and_the_webhook(
    loopback: Loopback, caplog: pytest.LogCaptureFixture
) -> None:
    # The MCP link and the webhook check the URL first, then send through a pinned transport that
    # resolves again: the rebound second answer is checked too, and nothing is sent.
    resolver = Rebinding(PUBLIC, "127.0.0.1")
    url = f"http://localhost:{loopback.port}/services/T0/B0/sEcReT"
    notifier = ApprovalNotifier(
        url,
        transport=GuardedTransport(resolver=resolver, backend=LoopbackBackend()),
        check_url=partial(check_upstream_url, resolver=resolver),
    )
    approval = Approval(
        id="apr_rebind",
        agent="a",
        tool="t.x",
        args_hash="0" * 64,
        args={},
        reason="needs a human",
        created_at=1_700_000_000.0,
        expires_at=1_700_003_600.0,
    )
    with caplog.at_level(logging.WARNING), anyio.fail_after(10):
        assert await notifier.notify(approval) is False
    assert loopback.requests == []
    assert "refused by the network guard" in caplog.text and "loopback" in caplog.text
    assert "sEcReT" not in caplog.text  # the webhook path is a credential


async def test_the_lean_client_connects_to_the_address_it_resolved_once_not_a_later_answer() -> None:
    # Pinning with the guard off (both answers are loopback): the first answer's server gets the
    # call, the server the OS (and the rebound answer) names for `localhost` gets nothing.
    pinned = Loopback("127.0.0.2")
    try:
        rebound = Loopback("127.0.0.1", pinned.port)
    except OSError:
        pinned.stop()
        pytest.skip("the port is taken on 127.0.0.1")
    resolver = Rebinding("127.0.0.2", "127.0.0.1")
    client = LeanHttpClient(
        f"http://localhost:{pinned.port}/mcp",
        {},
        timeout=5,
        allow_private_network=True,
        resolver=resolver,
    )
    try:
        answer = await client.post(b"{}", {})
    finally:
        await client.aclose()
        pinned.stop()
        rebound.stop()
    assert answer.status == 200
    assert pinned.requests == [("/mcp", f"localhost:{pinned.port}")]
    assert rebound.requests == []
    assert resolver.lookups == ["localhost"]


class Mixed:
    """One answer holding a public address and a loopback one (a client must check every address)."""

    def __init__(self) -> None:
        self.lookups = 0

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.lookups += 1
        return [ipaddress.ip_address(PUBLIC), ipaddress.ip_address("127.0.0.1")]


@pytest.mark.parametrize("client", ["adapters", "sdk", "lean"])
async def test_an_answer_mixing_a_public_and_a_loopback_address_is_refused_before_any_socket_opens(
    client: str, loopback: Loopback
) -> None:
    resolver, url = Mixed(), f"http://localhost:{loopback.port}/mcp"
    with anyio.fail_after(10):
        if client == "adapters":
            sockets = LoopbackBackend()
            async with httpx.AsyncClient(
                transport=GuardedTransport(resolver=resolver, backend=sockets)
            ) as http:
                with pytest.raises(BlockedAddress, match="loopback address"):
                    await http.post(url, json={})
            assert sockets.hosts == []
        elif client == "sdk":
            sockets2 = LoopbackBackend2()
            pinned = PinnedTransport2(allow_private_network=False, resolver=resolver, backend=sockets2)
            async with httpx2.AsyncClient(transport=pinned) as http2:
                with pytest.raises(httpx2.ConnectError, match="loopback address"):
                    await http2.post(url, json={})
            assert sockets2.hosts == []
        else:
            lean = LeanHttpClient(url, {}, timeout=5, allow_private_network=False, resolver=resolver)
            with pytest.raises(HttpFailure, match="resolves to a loopback address"):
                await lean.post(b"{}", {})
            await lean.aclose()
    assert resolver.lookups == 1
    assert loopback.requests == []
