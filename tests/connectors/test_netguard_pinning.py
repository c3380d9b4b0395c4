"""SSRF guard, the pinned transports: a real call to an allowed target works, keeps the URL's host
for the ``Host`` header and for TLS (SNI and the certificate check) while the socket goes to the
checked address, and a refused or unresolvable host sends nothing. (The rebinding attack itself:
tests/security/test_attack_dns_rebinding.py.)"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import httpcore
import httpcore2
import httpx
import httpx2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mcp_gateway.connectors.mcp.pinned_transport import PinnedBackend2, PinnedTransport2
from mcp_gateway.connectors.netguard import (
    BlockedAddress,
    GuardedTransport,
    HostRefused,
    IPAddress,
    PinnedBackend,
)

pytestmark = pytest.mark.anyio
HOSTNAME = "upstream.example"


class Server:
    """A real HTTP(S) server on 127.0.0.1 recording each request's path and ``Host`` header."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[tuple[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                outer.requests.append((self.path, self.headers.get("host", "")))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_POST = do_GET

            def log_message(self, *args: object) -> None:
                pass

            def handle(self) -> None:
                try:
                    super().handle()
                except (ssl.SSLError, OSError):
                    pass  # the client refused our certificate

        class TLSServer(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self):  # type: ignore[no-untyped-def]
                sock, address = self.socket.accept()
                if tls is not None:
                    sock = tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                return sock, address

        self.server = TLSServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server()
    yield running
    running.stop()


async def to_loopback(host: str, port: int) -> list[IPAddress]:
    """A resolver for names the test network does not know."""
    return [ipaddress.ip_address("127.0.0.1")]


async def nowhere(host: str, port: int) -> list[IPAddress]:
    raise OSError("no such name")


async def _get(stack: str, url: str, **options: object) -> tuple[int, bytes]:
    with anyio.fail_after(10):
        if stack == "httpx":
            async with httpx.AsyncClient(transport=GuardedTransport(**options)) as client:  # type: ignore[arg-type]
                response = await client.get(url)
                return response.status_code, response.content
        async with httpx2.AsyncClient(transport=PinnedTransport2(**options)) as client2:  # type: ignore[arg-type]
            response2 = await client2.get(url)
            return response2.status_code, response2.content


@pytest.mark.parametrize("stack", ["httpx", "httpx2"])
async def test_a_real_call_to_an_allowed_private_target_still_works_and_keeps_the_host_header(
    stack: str, server: Server
) -> None:
    assert await _get(stack, f"http://localhost:{server.port}/a", allow_private_network=True) == (200, b"ok")
    options = {"allow_private_network": True, "resolver": to_loopback}
    assert await _get(stack, f"http://{HOSTNAME}:{server.port}/b", **options) == (200, b"ok")
    assert server.requests == [("/a", f"localhost:{server.port}"), ("/b", f"{HOSTNAME}:{server.port}")]


@pytest.mark.parametrize("stack", ["httpx", "httpx2"])
async def test_localhost_is_refused_through_the_systems_resolver_without_opt_in(
    stack: str, server: Server
) -> None:
    refusal = BlockedAddress if stack == "httpx" else httpx2.ConnectError
    with pytest.raises(refusal, match=r"host `localhost` resolves to a loopback address"):
        await _get(stack, f"http://localhost:{server.port}/", allow_private_network=False)
    assert server.requests == []


async def test_a_host_that_does_not_resolve_is_a_connect_error_not_a_refusal() -> None:
    with pytest.raises(httpx.ConnectError, match=r"host `nowhere\.example` does not resolve") as caught:
        await _get("httpx", "http://nowhere.example/", resolver=nowhere)
    assert not isinstance(caught.value, BlockedAddress)  # an outage, retried by the adapters


def _certificate(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    """A throwaway CA (its PEM file) and a server context with a certificate for ``HOSTNAME`` only."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])

    def issue(subject: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
        )

    ca = issue(ca_name, ca_key.public_key()).add_extension(
        x509.BasicConstraints(ca=True, path_length=None), critical=True
    )
    leaf = issue(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTNAME)]), key.public_key())
    leaf = leaf.add_extension(x509.SubjectAlternativeName([x509.DNSName(HOSTNAME)]), critical=False)
    ca_file, chain_file, key_file = tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"
    ca_file.write_bytes(ca.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    chain_file.write_bytes(leaf.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(chain_file, key_file)
    return ca_file, context


@pytest.mark.parametrize("stack", ["httpx", "httpx2"])
async def test_https_to_a_pinned_address_verifies_the_certificate_against_the_hostname(
    stack: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca_file, context = _certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # what both clients' default contexts read
    tls = Server(tls=context)
    options = {"allow_private_network": True, "resolver": to_loopback}
    try:
        # The socket goes to 127.0.0.1; SNI, the certificate check and Host name the hostname.
        assert await _get(stack, f"https://{HOSTNAME}:{tls.port}/ok", **options) == (200, b"ok")
        # The same server by its address: the certificate does not name it, so nothing is sent.
        refusal = httpx.ConnectError if stack == "httpx" else httpx2.ConnectError
        with pytest.raises(refusal, match=r"CERTIFICATE_VERIFY_FAILED|IP address mismatch"):
            await _get(stack, f"https://127.0.0.1:{tls.port}/by-address", **options)
    finally:
        tls.stop()
    assert tls.requests == [("/ok", f"{HOSTNAME}:{tls.port}")]


def test_pooled_connections_are_dropped_before_a_default_uvicorn_server_closes_them() -> None:
    """A request sent on an idle connection the server is closing at that moment fails (ReadError);
    an SDK link idle for ~5 s between pin re-checks lost that race under load and reconnected."""
    import uvicorn

    from mcp_gateway.connectors.mcp.pinned_transport import PinnedTransport2
    from mcp_gateway.connectors.netguard import GuardedTransport

    server_idle = uvicorn.Config(app=None).timeout_keep_alive
    guarded = GuardedTransport(allow_private_network=True)._inner  # its pinned transport
    for transport in (PinnedTransport2(allow_private_network=True), guarded):
        pool: Any = transport._pool  # the pool the pinned backend replaced
        assert pool._keepalive_expiry is not None
        assert pool._keepalive_expiry <= server_idle / 2


class _Sockets:
    """An inner network backend that records where it was asked to connect, and connects nowhere."""

    def __init__(self) -> None:
        self.opened: list[str] = []

    async def connect_tcp(self, address: str, *_: Any) -> Any:
        self.opened.append(address)
        raise AssertionError("the guard let a refused host through")

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


async def _slow(host: str, port: int) -> list[IPAddress]:
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


def _backend(stack: str, inner: _Sockets, resolver: Any) -> Any:
    cls = PinnedBackend if stack == "httpcore" else PinnedBackend2
    return cls(allow_private_network=False, resolver=resolver, inner=inner)


@pytest.mark.parametrize(
    ("stack", "refused"),
    [("httpcore", "HostRefused"), ("httpcore2", "ConnectError")],
)
async def test_both_pinned_backends_share_one_guard_and_differ_only_in_what_a_refusal_becomes(
    stack: str, refused: str
) -> None:
    core: Any = httpcore if stack == "httpcore" else httpcore2
    inner = _Sockets()
    # A refused host: HostRefused passes up under httpx (GuardedTransport makes it BlockedAddress);
    # under the SDK client it is that stack's ConnectError, naming the host and why.
    expected = HostRefused if refused == "HostRefused" else core.ConnectError
    with pytest.raises(expected, match=r"host `upstream\.example` resolves to a loopback address") as caught:
        await _backend(stack, inner, to_loopback).connect_tcp(HOSTNAME, 80, timeout=5)
    assert isinstance(caught.value, HostRefused) == (refused == "HostRefused")
    # What both stacks treat alike: an unresolvable host, a slow resolver, a unix socket.
    with pytest.raises(core.ConnectError, match=r"host `nowhere\.example` does not resolve"):
        await _backend(stack, inner, nowhere).connect_tcp("nowhere.example", 80, timeout=5)
    with pytest.raises(core.ConnectTimeout, match="did not resolve in time"):
        await _backend(stack, inner, _slow).connect_tcp(HOSTNAME, 80, timeout=0.05)
    with pytest.raises(core.ConnectError, match="does not open unix sockets"):
        await _backend(stack, inner, to_loopback).connect_unix_socket("/run/x.sock")
    assert inner.opened == []
