"""One socket write per answer (``app/one_write.py``): the same bytes, in one write, never held back."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from tests.conftest import free_port, wait_until

from mcp_gateway.app.one_write import OneWriteHttpTools, _HeldWrites
from mcp_gateway.app.runner import http_protocol


class _Recorder:
    """A transport that records each write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default


HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


def test_a_header_block_and_its_body_go_out_in_one_write() -> None:
    async def main() -> list[bytes]:
        recorder = _Recorder()
        held = _HeldWrites(recorder, asyncio.get_running_loop())  # type: ignore[arg-type]
        held.write(HEAD)
        held.write(b"ok")
        await asyncio.sleep(0)
        return recorder.writes

    assert asyncio.run(main()) == [HEAD + b"ok"]


def test_a_header_block_without_a_body_leaves_in_the_same_loop_iteration() -> None:
    async def main() -> tuple[list[bytes], list[bytes]]:
        recorder = _Recorder()
        held = _HeldWrites(recorder, asyncio.get_running_loop())  # type: ignore[arg-type]
        held.write(HEAD)
        before = list(recorder.writes)
        await asyncio.sleep(0)  # one loop iteration: the flush scheduled with the header runs
        return before, recorder.writes

    before, after = asyncio.run(main())
    assert before == []
    assert after == [HEAD]


def test_close_sends_what_is_held_first() -> None:
    async def main() -> tuple[list[bytes], bool]:
        recorder = _Recorder()
        held = _HeldWrites(recorder, asyncio.get_running_loop())  # type: ignore[arg-type]
        held.write(HEAD)
        held.close()
        return recorder.writes, recorder.closed

    assert asyncio.run(main()) == ([HEAD], True)


def test_other_writes_pass_straight_through() -> None:
    async def main() -> list[bytes]:
        recorder = _Recorder()
        held = _HeldWrites(recorder, asyncio.get_running_loop())  # type: ignore[arg-type]
        held.write(b"5\r\nhello\r\n")
        held.write(b"data: x\n\n")
        return list(recorder.writes)

    assert asyncio.run(main()) == [b"5\r\nhello\r\n", b"data: x\n\n"]


def test_the_gateway_serves_with_the_one_write_protocol() -> None:
    assert http_protocol() is OneWriteHttpTools


# ---- a real uvicorn with the protocol, over real sockets ----------------------------------------

released = threading.Event()


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/stream":
        # Headers now, the first event only once the test has seen them: held headers would deadlock.
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        await asyncio.get_running_loop().run_in_executor(None, released.wait, 10)
        await send({"type": "http.response.body", "body": b"data: late\n\n", "more_body": False})
        return
    if scope["path"] == "/slow-body":
        # A start, then a wait before the body: the start must not wait with it.
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
        await asyncio.get_running_loop().run_in_executor(None, released.wait, 10)
        await send({"type": "http.response.body", "body": b"body", "more_body": False})
        return
    body = b"hello"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def server() -> Iterator[int]:
    port = free_port()
    srv = uvicorn.Server(
        uvicorn.Config(
            _app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", http=OneWriteHttpTools
        )
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    wait_until(lambda: srv.started, what="uvicorn start")
    released.clear()
    try:
        yield port
    finally:
        released.set()
        srv.should_exit = True
        thread.join(10)


def _read_until(sock: socket.socket, marker: bytes, limit: float = 10.0) -> bytes:
    sock.settimeout(limit)
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_keep_alive_requests_and_head_are_answered_whole(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=10) as sock:
        for _ in range(3):
            sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            answer = _read_until(sock, b"hello")
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
            assert answer.endswith(b"\r\n\r\nhello")
        sock.sendall(b"HEAD / HTTP/1.1\r\nhost: x\r\n\r\n")
        head = _read_until(sock, b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"content-length: 5" in head


@pytest.mark.parametrize("path", ["/stream", "/slow-body"])
def test_headers_are_not_held_while_the_app_waits(server: int, path: str) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
        head = _read_until(sock, b"\r\n\r\n")  # arrives while the app still waits for `released`
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        released.set()
        rest = _read_until(sock, b"late" if path == "/stream" else b"body")
        assert (b"late" if path == "/stream" else b"body") in head + rest
