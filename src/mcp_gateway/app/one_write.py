"""uvicorn's HTTP protocol with one socket write per answer instead of two.

uvicorn writes a response's status line and headers as soon as the app sends
``http.response.start``, and its body when the app sends ``http.response.body``: two ``send``
system calls, and on loopback two TCP segments the client wakes up for. The gateway's egress
scrubber always sends the two back to back (it holds the start until the whole body is scrubbed),
so the first write can wait for the second: this protocol's transport holds a header block until
the next write and sends both in one. Whatever else is held (a ``HEAD`` answer, whose body uvicorn
never writes; an app that sends a start and then waits) goes out at the end of the same event-loop
iteration, before any other callback's output, and before a close.

Nothing else changes: the bytes on the wire are the same, in the same order.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_HEAD_END = b"\r\n\r\n"


class _HeldWrites:
    """A transport that joins a header block with the write after it (see the module doc)."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held = b""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._held:
            data, self._held = self._held + bytes(data), b""
            self._transport.write(data)
        elif data[:5] == b"HTTP/" and bytes(data[-4:]) == _HEAD_END:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        if self._held:
            data, self._held = self._held, b""
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class OneWriteHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol over a ``_HeldWrites`` transport."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        held = _HeldWrites(transport, self.loop)
        super().connection_made(held)  # type: ignore[arg-type]
