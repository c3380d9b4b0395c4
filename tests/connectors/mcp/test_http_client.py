"""The lean forwarder's HTTP client against a real TCP server that answers exactly what each test
scripts: framing, reuse, limits, failures, and the SSRF and header-injection refusals."""

from __future__ import annotations

import datetime
import os
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mcp_gateway.connectors.mcp import http_client as lean_http
from mcp_gateway.connectors.mcp.http_client import HttpFailure, LeanHttpClient

pytestmark = pytest.mark.anyio


@pytest.fixture(params=[pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"), "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> object:
    return request.param  # the gateway serves on uvloop; tests elsewhere run plain asyncio


Script = Callable[[bytes], bytes | None]  # request bytes -> raw answer (None: say nothing, hold)


def ok(body: bytes = b'{"ok":true}', extra: str = "") -> bytes:
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


class Server:
    """A threaded TCP server: reads one request at a time per connection and sends the script's bytes."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.script: Script = lambda request: ok()
        self.connections = 0
        self.requests: list[bytes] = []
        self.release = threading.Event()
        self.peer_closed = threading.Event()  # set by a `<hold>` answer's handler (TLS only)
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                outer.connections += 1
                if tls is None:
                    self.serve()
                    return
                try:
                    self.request = tls.wrap_socket(self.request, server_side=True)
                except (ssl.SSLError, OSError):
                    return  # the client refused our certificate
                with self.request:
                    self.serve()

            def hold(self) -> None:
                """Read the client's close_notify, never answer it, and note when its socket closes."""
                self.request.recv(65536)  # b"": the close_notify
                with socket.socket(fileno=os.dup(self.request.fileno())) as raw:
                    raw.settimeout(10)
                    try:
                        closed = raw.recv(1) == b""
                    except ConnectionResetError:
                        closed = True
                    except TimeoutError:
                        closed = False
                if closed:
                    outer.peer_closed.set()

            def serve(self) -> None:
                buffer = b""
                while True:
                    while b"\r\n\r\n" not in buffer:
                        chunk = self.request.recv(65536)
                        if not chunk:
                            return
                        buffer += chunk
                    head, _, rest = buffer.partition(b"\r\n\r\n")
                    length = next(
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    )
                    while len(rest) < length:
                        rest += self.request.recv(65536)
                    request, buffer = head + b"\r\n\r\n" + rest[:length], rest[length:]
                    outer.requests.append(request)
                    answer = outer.script(request)
                    if answer is None:
                        outer.release.wait(10)
                        return
                    if answer.endswith(b"<hold>"):
                        self.request.sendall(answer.removesuffix(b"<hold>"))
                        self.hold()
                        return
                    self.request.sendall(answer)
                    if b"Connection: close" in answer or answer.endswith(b"<close>"):
                        return

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/mcp"
        threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True).start()

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server()
    yield running
    running.stop()


def client(url: str, **options: object) -> LeanHttpClient:
    settings: dict[str, object] = {"timeout": 5.0, "allow_private_network": True} | options
    return LeanHttpClient(url, {"Authorization": "Bearer cred-123"}, **settings)  # type: ignore[arg-type]


async def test_calls_reuse_one_keep_alive_connection_and_send_a_well_formed_post(server: Server) -> None:
    http = client(server.url)
    for _ in range(5):
        answer = await http.post(b'{"a":1}', {"Mcp-Name": "echo"})
        assert (answer.status, answer.body) == (200, b'{"ok":true}')
        assert answer.headers["content-type"] == "application/json"
    await http.aclose()
    assert server.connections == 1 and len(server.requests) == 5
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /mcp HTTP/1.1" and body == b'{"a":1}'
    assert b"Authorization: Bearer cred-123" in lines and b"Mcp-Name: echo" in lines
    assert b"Content-Length: 7" in lines and b"Accept-Encoding: identity" in lines


async def test_concurrent_calls_wait_for_a_connection_beyond_the_cap(server: Server) -> None:
    http = client(server.url, max_connections=2)
    answers: list[int] = []

    async def one() -> None:
        answers.append((await http.post(b"{}", {})).status)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(one)
    await http.aclose()
    assert answers == [200] * 6 and server.connections == 2


async def test_a_chunked_answer_is_reassembled(server: Server) -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    server.script = lambda request: chunked
    http = client(server.url)
    assert (await http.post(b"{}", {})).body == b"hello world"
    assert (await http.post(b"{}", {})).body == b"hello world"
    await http.aclose()
    assert server.connections == 1


async def test_an_answer_without_length_or_chunking_ends_when_the_server_closes(server: Server) -> None:
    server.script = lambda request: b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"until":"close"}'
    http = client(server.url)
    for _ in range(2):  # each on its own connection
        assert (await http.post(b"{}", {})).body == b'{"until":"close"}'
    await http.aclose()
    assert server.connections == 2


async def test_a_connection_the_server_closes_or_that_sat_idle_too_long_is_not_reused(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.script = lambda request: ok(extra="Connection: close\r\n")
    http = client(server.url)
    await http.post(b"{}", {})
    await http.post(b"{}", {})
    assert server.connections == 2
    server.script = lambda request: ok()
    monkeypatch.setattr(lean_http, "IDLE_SECONDS", 0.0)
    await http.post(b"{}", {})
    await http.post(b"{}", {})
    await http.aclose()
    assert server.connections == 4


BAD_ANSWERS: list[tuple[bytes, str]] = [
    (b"NOT HTTP AT ALL\r\n\r\n", "answered malformed HTTP"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort<close>", "closed the connection before answering"),
    (ok(b"x" * 2048), "answered a body over the size limit"),
    (
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70000 + b"\r\nContent-Length: 0\r\n\r\n",
        "headers over the size",
    ),
]


@pytest.mark.parametrize(("raw", "problem"), BAD_ANSWERS)
async def test_a_bad_answer_fails_the_call_and_its_connection_is_dropped(
    server: Server, raw: bytes, problem: str
) -> None:
    server.script = lambda request: raw if len(server.requests) == 1 else ok()
    http = client(server.url, max_response_bytes=1024)
    with anyio.fail_after(10), pytest.raises(HttpFailure, match=problem) as caught:
        await http.post(b"{}", {})
    assert "cred-123" not in str(caught.value)
    assert (await http.post(b"{}", {})).status == 200  # on a new connection
    await http.aclose()
    assert server.connections == 2


async def test_a_silent_upstream_times_out_and_a_cancelled_call_drops_its_connection(server: Server) -> None:
    to_cancel_arrived = threading.Event()

    def script(request: bytes) -> bytes | None:
        if request.endswith(b'{"cancel":1}'):
            to_cancel_arrived.set()
        return ok() if request.endswith(b"\r\n\r\n{}") else None  # the other calls get no answer

    server.script = script
    http = client(server.url, timeout=1.0)
    with anyio.fail_after(10), pytest.raises(HttpFailure, match="timed out"):
        await http.post(b'{"silent":1}', {})
    answered: list[int] = []

    async def cancelled() -> None:
        answered.append((await http.post(b'{"cancel":1}', {})).status)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(cancelled)
            # Cancelled while it waits for the answer, not before its request is on the wire.
            assert await anyio.to_thread.run_sync(to_cancel_arrived.wait, 10)
            tg.cancel_scope.cancel()
    assert answered == []
    assert (await http.post(b"{}", {})).status == 200
    await http.aclose()
    assert server.connections == 3


async def test_a_refused_connection_is_an_http_failure() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(HttpFailure, match="connection failed: ConnectionRefusedError"):
        await client(f"http://127.0.0.1:{port}/mcp").post(b"{}", {})


async def test_a_private_address_is_refused_before_any_connection_unless_allowed(server: Server) -> None:
    for url in (server.url, server.url.replace("127.0.0.1", "localhost")):
        guarded = client(url, allow_private_network=False)
        with pytest.raises(HttpFailure, match="resolves to a loopback address"):
            await guarded.post(b"{}", {})
    assert server.connections == 0 and server.requests == []


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer x\r\nX-Injected: 1"},
        {"Authorization": "Bearer x\nX-Injected: 1"},
        {"X-Bad Name": "1"},
        {"Host": "elsewhere.example"},
        {"Content-Length": "0"},
    ],
)
async def test_a_header_that_could_split_or_forge_the_request_is_refused(
    server: Server, headers: dict[str, str]
) -> None:
    with pytest.raises(HttpFailure) as caught:
        LeanHttpClient(server.url, headers, timeout=5, allow_private_network=True)
    assert "X-Injected: 1" not in str(caught.value)
    http = client(server.url)
    with pytest.raises(HttpFailure):
        await http.post(b"{}", headers)
    await http.aclose()
    assert server.requests == []


@pytest.mark.parametrize("url", ["ftp://host/mcp", "http:///mcp", "http://user:pw@host/mcp", "http://h/a b"])
def test_an_unusable_url_is_refused(url: str) -> None:
    with pytest.raises(HttpFailure):
        LeanHttpClient(url, {}, timeout=5, allow_private_network=True)


def _certificate(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    """A throwaway CA (its PEM file) and a server context with a certificate it signed for localhost."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, chain_file, key_file = tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    chain_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(chain_file, key_file)
    return ca_file, context


async def test_https_verifies_the_certificate_chain_and_the_host_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca_file, context = _certificate(tmp_path)
    server = Server(tls=context)
    try:
        port = server.server.server_address[1]
        by_name, by_address = f"https://localhost:{port}/mcp", f"https://127.0.0.1:{port}/mcp"
        with pytest.raises(HttpFailure, match="SSLCertVerificationError"):
            await client(by_name).post(b"{}", {})  # a CA the system does not trust
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # what ssl.create_default_context reads
        with pytest.raises(HttpFailure, match="SSLCertVerificationError"):
            await client(by_address).post(b"{}", {})  # trusted chain, but not issued for this host
        trusted = client(by_name)
        assert (await trusted.post(b'{"a":1}', {})).body == b'{"ok":true}'
        await trusted.aclose()
        assert len(server.requests) == 1  # nothing was sent over the refused connections
    finally:
        server.stop()


async def test_aclose_returns_with_a_tls_connection_closed_when_the_peer_never_answers_close_notify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca_file, context = _certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    server = Server(tls=context)
    try:
        server.script = lambda request: ok() + b"<hold>"
        http = client(f"https://localhost:{server.server.server_address[1]}/mcp")
        assert (await http.post(b"{}", {})).status == 200
        with anyio.fail_after(5):
            await http.aclose()
        # The socket is closed (aborted) without the TLS goodbye the peer never answers: the peer
        # sees it closed while the loop goes on (not after a close_notify timeout of 30 s).
        assert await anyio.to_thread.run_sync(server.peer_closed.wait, 5)
    finally:
        server.stop()
