"""One HTTP answer to one MCP request: JSON when nothing is said before the result, else SSE.

The Streamable HTTP transport lets a server answer a POSTed request with ``application/json`` or with
a ``text/event-stream`` that carries notifications about the request and ends with its response.
``Reply`` starts with neither: the first notification (progress, a log message, a listen stream's
acknowledgement) opens the stream; a result that comes first goes out as JSON with the HTTP status the
spec gives its error code. A request that runs silent for ``PING_AFTER`` seconds opens the stream too,
and a comment line is sent every ``PING_AFTER`` seconds after, so a proxy's idle-read timeout does not
close it (a closed stream cancels the request). Every byte passes the egress scrubber (``egress.py``),
which wraps the whole app.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import anyio
from mcp.shared.inbound import ERROR_CODE_HTTP_STATUS
from starlette.types import Send

from mcp_gateway import wire

PING_AFTER: Final = 15.0
"""Seconds of silence before the answer becomes a stream with keep-alive comments."""
_SSE_HEADERS: Final = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"connection", b"keep-alive"),
    (b"x-accel-buffering", b"no"),
]
_PING: Final = b": ping\r\n\r\n"


def event(message: dict[str, Any]) -> bytes:
    """One JSON-RPC message as an SSE ``message`` event."""
    return b"event: message\r\ndata: " + wire.dumps(message) + b"\r\n\r\n"


async def send_json(
    send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    """A whole ``application/json`` answer."""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode("latin-1"))]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})


async def send_status(send: Send, status: int, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """An answer with a status and no body (202, 405, 406)."""
    base = [(b"content-length", b"0"), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": base})
    await send({"type": "http.response.body", "body": b""})


def status_of(message: dict[str, Any]) -> int:
    """The HTTP status of a JSON-RPC answer sent as JSON (an error's status follows its code)."""
    error = message.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return ERROR_CODE_HTTP_STATUS.get(code, 200) if isinstance(code, int) else 200


class Reply:
    """The answer to one request; ``notify`` and ``finish`` may be called from any task.

    Args:
        send: the ASGI ``send`` of the request.
        headers: further response headers (a session's ``Mcp-Session-Id``).
        ping_after: seconds of silence before the answer becomes a stream (None: not until
            ``keep_alive``).
        error_status: whether an error answered as JSON takes the HTTP status of its code (2026-07-28);
            else 200 (2025-11-25).
    """

    def __init__(
        self,
        send: Send,
        headers: list[tuple[bytes, bytes]] | None = None,
        ping_after: float | None = PING_AFTER,
        *,
        error_status: bool = True,
    ) -> None:
        self._send = send
        self._headers = headers or []
        self._error_status = error_status
        self._held: anyio.Lock | None = None  # made by the first notification or keep-alive ping
        self.streaming = False
        self.finished = False
        self._timer: asyncio.TimerHandle | None = None
        self._pinger: asyncio.Task[None] | None = None
        self._ping_after = PING_AFTER
        if ping_after is not None:
            self.keep_alive(ping_after)

    def keep_alive(self, ping_after: float = PING_AFTER) -> None:
        """Open the stream and send a comment line after ``ping_after`` seconds of silence, and every
        ``ping_after`` seconds after, until the answer is finished."""
        if self._timer is None and self._pinger is None and not self.finished:
            self._ping_after = ping_after
            self._timer = asyncio.get_running_loop().call_later(ping_after, self._start_pinging)

    async def notify(self, message: dict[str, Any]) -> None:
        """Send a notification about the request on the stream (opened first); dropped once finished."""
        data = event(message)
        async with self._lock():
            if self.finished:
                return
            await self._open()
            await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def finish(self, message: dict[str, Any]) -> None:
        """Send the request's answer: as JSON if nothing was streamed, else as the stream's last event."""
        self._stop_pinging()
        held = self._held
        if held is None or not held.locked():
            # Nothing is being sent: no lock to wait for (taking one costs ~15 calls and a trip round
            # the event loop per answer). `finished` is set before the first await, so a notification
            # or ping that takes the lock afterwards finds the answer finished and sends nothing.
            await self._finish(message)
            return
        async with held:
            await self._finish(message)

    async def _finish(self, message: dict[str, Any]) -> None:
        if self.finished:
            return
        self.finished = True
        if self.streaming:
            await self._send({"type": "http.response.body", "body": event(message), "more_body": False})
            return
        status = status_of(message) if self._error_status else 200
        await send_json(self._send, status, wire.dumps(message), self._headers)

    def close(self) -> None:
        """Stop the keep-alive (the client went away: nothing more is sent)."""
        self.finished = True
        self._stop_pinging()

    def _lock(self) -> anyio.Lock:
        if self._held is None:
            self._held = anyio.Lock()
        return self._held

    async def _open(self) -> None:
        if not self.streaming:
            self.streaming = True
            headers = _SSE_HEADERS + self._headers
            await self._send({"type": "http.response.start", "status": 200, "headers": headers})

    def _start_pinging(self) -> None:
        self._timer = None
        self._pinger = asyncio.get_running_loop().create_task(self._ping())

    async def _ping(self) -> None:
        try:
            while True:
                async with self._lock():
                    if self.finished:
                        return
                    await self._open()
                    await self._send({"type": "http.response.body", "body": _PING, "more_body": True})
                await anyio.sleep(self._ping_after)
        except OSError:
            return  # the client went away; the request's own task notices the disconnect

    def _stop_pinging(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pinger is not None:
            self._pinger.cancel()
            self._pinger = None
