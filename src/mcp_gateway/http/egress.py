"""The one egress scrubber: every byte the gateway sends toward an agent passes here.

``EgressScrubber`` wraps the whole ASGI app. Whatever produced a message (the lean path, the SDK's
transport, a relayed log notification, an error mapper, a header), it is scrubbed here as the
serialized message the agent will read, keys included, not field by field: a field nobody thought of
is scrubbed like every other.

How a message is scrubbed (``scrub_message``):

1. The serialized text is searched once for every form of every vault value (the redactor's
   automaton). No match, the bytes go out untouched: the common case costs one pass.
2. On a match the message is decoded and every string in it, keys included, is scrubbed, then it is
   encoded again (so JSON stays JSON: a placeholder never cuts an escape sequence in half).
3. The result is searched again. A form still present (a secret spread across a key and its value,
   or anything the structure hides) fails closed: the message is replaced by a JSON-RPC error.

JSON bodies are scrubbed whole, with ``Content-Length`` set anew; an SSE stream is scrubbed event by
event (an event held until its terminating blank line arrives), so a secret cannot straddle two
chunks. Header values are scrubbed as text.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any, Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_gateway.redact import Redactor

logger = logging.getLogger(__name__)

REFUSED_CODE: Final = -32603
REFUSED_MESSAGE: Final = "the answer held a secret value the gateway could not remove"
_EVENT_END: Final = (b"\r\n\r\n", b"\n\n", b"\r\r")
_SSE_LINE: Final = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


def _refusal(decoded: Any) -> Any:
    """A JSON-RPC error standing in for ``decoded`` (one per message of a batch, same ids)."""
    if isinstance(decoded, list):
        return [_refusal(item) for item in decoded]
    request_id = decoded.get("id") if isinstance(decoded, dict) else None
    error = {"code": REFUSED_CODE, "message": REFUSED_MESSAGE}
    return {"jsonrpc": "2.0", "id": request_id if isinstance(request_id, int | str) else None, "error": error}


def scrub_message(text: str, redactor: Redactor) -> tuple[str, int]:
    """``text`` (one serialized message) with every vault value removed, and the number removed.

    JSON is decoded, scrubbed string by string (keys included) and encoded again; text that is not
    JSON is scrubbed as text. A form that survives is refused as a whole (a JSON-RPC error).
    """
    if redactor.empty:
        return text, 0
    flat, found = redactor.scrub(text)
    if not found:
        return text, 0
    try:
        decoded = json.loads(text)
    except (ValueError, RecursionError):
        # Not JSON (an SSE comment, a plain-text error body): the text scrub is the answer.
        return flat, found
    scrubbed, count = redactor.scrub_json(decoded)
    encoded = json.dumps(scrubbed, ensure_ascii=False, separators=(",", ":"))
    if redactor.scrub(encoded)[1]:
        logger.warning("egress: a secret form survived structured scrubbing; the message was refused")
        return json.dumps(_refusal(decoded), separators=(",", ":")), max(count, found)
    return encoded, max(count, found)


def _scrub_event(event: bytes, redactor: Redactor) -> bytes:
    """One SSE event: each ``data:`` line is a message; other lines are scrubbed as text."""
    text = event.decode("utf-8", errors="surrogateescape")
    if not redactor.scrub(text)[1]:
        return event
    out: list[str] = []
    # SSE lines end with CR LF, LF or CR only (str.splitlines would also cut at U+0085 or U+2028).
    for line in _SSE_LINE.findall(text):
        body = line.rstrip("\r\n")
        ending = line[len(body) :]
        if body.startswith("data:"):
            payload = body[5:].removeprefix(" ")
            body = "data: " + scrub_message(payload, redactor)[0]
        else:
            body = redactor.scrub_text(body)
        out.append(body + ending)
    return "".join(out).encode("utf-8", errors="surrogateescape")


def _scrub_headers(headers: list[tuple[bytes, bytes]], redactor: Redactor) -> list[tuple[bytes, bytes]]:
    out = []
    for key, value in headers:
        text = value.decode("latin-1")
        scrubbed, found = redactor.scrub(text)
        if found:
            value = scrubbed.encode("latin-1", errors="replace")
        out.append((key, value))
    return out


class EgressScrubber:
    """ASGI middleware: scrubs every HTTP answer of the wrapped app (see the module doc).

    Args:
        app: the app whose answers are scrubbed.
        redactor: returns the redactor of the moment (the vault's values, old ones included).
    """

    def __init__(self, app: ASGIApp, redactor: Callable[[], Redactor]) -> None:
        self.app = app
        self._redactor = redactor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, _EgressSend(send, self._redactor))


class _EgressSend:
    """The ``send`` of one HTTP exchange, scrubbing on the way out."""

    __slots__ = ("_body", "_now", "_pending", "_redactor", "_send", "_start", "_streaming")

    def __init__(self, send: Send, redactor: Callable[[], Redactor]) -> None:
        self._send = send
        self._redactor = redactor
        self._start: Message | None = None
        self._streaming = False
        self._body: list[bytes] = []
        self._pending = b""  # an SSE event not yet complete
        self._now: Redactor | None = None  # the redactor taken at the response start

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            await self._on_start(message)
        elif kind == "http.response.body":
            if self._streaming:
                await self._on_stream(message)
            else:
                await self._on_body(message)
        else:
            await self._send(message)

    async def _on_start(self, message: Message) -> None:
        headers = list(message.get("headers", ()))
        content_type = b""
        for key, value in headers:
            if key.lower() == b"content-type":
                content_type = value
                break
        redactor = self._now = self._redactor()
        start = dict(message)
        start["headers"] = _scrub_headers(headers, redactor) if not redactor.empty else headers
        if content_type.startswith(b"text/event-stream"):
            self._streaming = True
            await self._send(start)
        else:
            self._start = start  # held until the whole body is known (its length may change)

    async def _on_body(self, message: Message) -> None:
        self._body.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = b"".join(self._body) if len(self._body) > 1 else self._body[0]
        self._body = []
        start = self._start
        self._start = None
        redactor = self._now
        if start is None or redactor is None:
            raise RuntimeError("ASGI: a response body before its start")
        if not redactor.empty and body:
            text = body.decode("utf-8", errors="surrogateescape")
            scrubbed, found = scrub_message(text, redactor)
            if found:
                body = scrubbed.encode("utf-8", errors="surrogateescape")
                start["headers"] = [
                    (k, str(len(body)).encode("latin-1") if k.lower() == b"content-length" else v)
                    for k, v in start["headers"]
                ]
        await self._send(start)
        await self._send({"type": "http.response.body", "body": body, "more_body": False})

    async def _on_stream(self, message: Message) -> None:
        data = self._pending + message.get("body", b"")
        more = message.get("more_body", False)
        cut = max((data.rfind(end) + len(end) for end in _EVENT_END if end in data), default=0)
        if not more:
            cut = len(data)
        ready, self._pending = data[:cut], data[cut:]
        # A stream can stay open for hours: each event meets the redactor of its moment.
        redactor = self._redactor()
        if ready and not redactor.empty:
            ready = b"".join(_scrub_event(event, redactor) for event in _events(ready))
        if ready or not more:
            await self._send({"type": "http.response.body", "body": ready, "more_body": more})


def _events(data: bytes) -> list[bytes]:
    """``data`` cut after each blank line that ends an SSE event (the pieces join back to ``data``)."""
    pieces: list[bytes] = []
    start = 0
    while start < len(data):
        ends = [(i, len(e)) for e in _EVENT_END if (i := data.find(e, start)) >= 0]
        if not ends:
            pieces.append(data[start:])
            break
        index, length = min(ends)
        pieces.append(data[start : index + length])
        start = index + length
    return pieces
