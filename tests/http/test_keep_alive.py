"""``server.keep_alive_seconds`` reaches the HTTP server: an idle keep-alive connection is closed by
the gateway after that long (so a load balancer's longer pool can be matched)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import free_port, wait_until

pytestmark = pytest.mark.e2e

EXE = Path(sys.executable).parent / "mcp-gateway"


def _serve(folder: Path, port: int, keep_alive: int | None) -> subprocess.Popen[bytes]:
    subprocess.run([str(EXE), "init", str(folder), "--port", str(port)], check=True, capture_output=True)
    config = folder / "gateway.yaml"
    if keep_alive is not None:
        text = config.read_text().replace("  port:", f"  keep_alive_seconds: {keep_alive}\n  port:", 1)
        config.write_text(text)
    with (folder / "serve.log").open("wb") as log:
        return subprocess.Popen([str(EXE), "serve", "-c", str(config)], stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """Two gateways: keep-alive 1 s and the default (5 s)."""
    short, default = free_port(), free_port()
    procs = [_serve(tmp_path / "short", short, 1), _serve(tmp_path / "default", default, None)]
    try:
        for port in (short, default):

            def up(port: int = port) -> bool:
                try:
                    return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_until(up, timeout=60, what="the gateway")
        yield short, default
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)


def _idle_close_after(port: int, limit: float) -> float | None:
    """Seconds until the gateway closes an idle keep-alive connection, or None if not within ``limit``."""
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 200")
        start = time.monotonic()
        try:
            while sock.recv(4096):
                pass
        except TimeoutError:
            return None
        return time.monotonic() - start


def test_an_idle_connection_is_closed_after_keep_alive_seconds(gateway: tuple[int, int]) -> None:
    short, default = gateway
    closed = _idle_close_after(short, limit=3.5)
    assert closed is not None and 0.5 <= closed < 3.5
    assert _idle_close_after(default, limit=3.5) is None  # the default (5 s) holds it longer
