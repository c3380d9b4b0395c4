"""A small pooled HTTP/1.1 client for the lean ``tools/call`` forwarder (``fast_http.py``).

The forwarder sends one kind of request (a POST of a few hundred bytes) and reads one kind of
answer (a JSON or SSE body). A general client (aiohttp, httpx) spends most of its CPU on features
this does not use: against the benchmark's echo upstream, aiohttp took 0.08-0.13 ms of CPU per call
and this client 0.03 ms (README, Benchmarks).

Framing is not hand-written: responses are parsed by ``httptools`` (llhttp, the parser of Node.js
and uvicorn), which handles Content-Length, chunked bodies and keep-alive. This module builds the
request, keeps the connections, and enforces the limits:

- header names and values are checked once (no CR, LF or other control characters: no header
  injection from a configured credential or a tool name);
- every new connection resolves the host once and, unless ``allow_private_network``, refuses it if
  any address is blocked (``netguard.resolve_checked``), then connects to an address it checked, so
  DNS cannot change between the check and the connect;
- HTTPS verifies the certificate and host name (the default SSL context);
- the answer's head and body are capped; a call has one deadline for connect, send and read;
- an idle connection is reused for at most ``IDLE_SECONDS`` (below the usual server keep-alive
  of 5 s, so a request is not sent on a connection the server is closing); a connection whose
  answer was not read to its end (timeout, cancellation, a bad answer) is closed, never reused;
- ``aclose`` aborts the idle connections and those still closing: their sockets are closed at
  once, with no TLS close_notify exchange (a socket left open when the event loop closes makes
  uvloop's ``loop.close()`` fail);
- no redirects, no proxies from the environment, no cookies, no compression.

A request is never retried: a ``tools/call`` may have acted upstream even if its answer was lost.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import time
from collections.abc import Mapping
from typing import Final, NamedTuple, cast
from urllib.parse import urlsplit

import httptools

from mcp_gateway.connectors.netguard import (
    HostRefused,
    HostUnresolved,
    Resolver,
    resolve_checked,
    system_resolver,
)

IDLE_SECONDS: Final = 4.0
MAX_HEAD_BYTES: Final = 64 * 1024
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VALUE: Final = re.compile(r"[\t\x20-\x7e]*")
_UNSAFE_TARGET: Final = re.compile(r"[\x00-\x20\x7f]")
_RESERVED: Final = frozenset({"host", "content-length", "transfer-encoding", "connection", "accept-encoding"})


class HttpAnswer(NamedTuple):
    status: int
    headers: dict[str, str]  # names lower-cased; a repeated header keeps its last value
    body: bytes


class HttpFailure(Exception):
    """The request failed; the message names what happened, never a header value or body."""


def header_lines(headers: Mapping[str, str]) -> str:
    """``headers`` as request lines, refusing what could split or forge a header.

    Raises:
        HttpFailure: a name is not an HTTP token, a value holds a control character, or a header is
            one this client sets itself.
    """
    lines = []
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name) or name.lower() in _RESERVED:
            raise HttpFailure(f"header name {name!r} is not allowed")
        if not _VALUE.fullmatch(value):
            raise HttpFailure(f"header `{name}` holds a character not allowed in a header value")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines)


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self, max_body: int) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._max_body = max_body
        self.transport: asyncio.Transport | None = None
        self.closed = False
        # Done once the transport is closed: close() only starts closing it (TLS waits for the peer).
        self.gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.idle_since = 0.0
        self._answer: asyncio.Future[HttpAnswer] | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._problem = ""
        self._until_close = False  # the answer's body ends when the server closes

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream connection (uvloop's transports are not subclasses of asyncio.Transport).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail(self._problem or "answered malformed HTTP")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.gone.done():
            self.gone.set_result(None)
        if exc is None and self._until_close and self._answer is not None:
            # A body without a length or chunking ends when the server closes (RFC 9112, 6.3).
            self._complete(self._parser.get_status_code())
            return
        self._fail("closed the connection before answering")

    # -- httptools callbacks

    def on_message_begin(self) -> None:
        if self._answer is None:
            self._problem = "answered without a request"
            raise HttpFailure(self._problem)
        self._headers, self._body, self._size, self._until_close = {}, [], 0, False

    def on_header(self, name: bytes, value: bytes) -> None:
        self._size += len(name) + len(value)
        if self._size > MAX_HEAD_BYTES:
            self._problem = "answered headers over the size limit"
            raise HttpFailure(self._problem)
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._size = 0
        status = self._parser.get_status_code()
        self._until_close = (
            status >= 200
            and status not in (204, 304)
            and "content-length" not in self._headers
            and "transfer-encoding" not in self._headers
        )

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._max_body:
            self._problem = "answered a body over the size limit"
            raise HttpFailure(self._problem)
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            return  # an interim answer (103 Early Hints): the final one follows
        if not self._parser.should_keep_alive():
            self.close()
        self._complete(status)

    def _complete(self, status: int) -> None:
        answer, self._answer = self._answer, None
        self._until_close = False
        if answer is not None and not answer.done():
            answer.set_result(HttpAnswer(status, self._headers, b"".join(self._body)))

    # -- use

    def send(self, data: bytes) -> asyncio.Future[HttpAnswer]:
        if self.transport is None or self._answer is not None or self.closed:
            raise HttpFailure("the connection is not ready for a request")  # a bug, not the network
        self._answer = asyncio.get_running_loop().create_future()
        self._problem = ""
        self.transport.write(data)
        return self._answer

    def _fail(self, problem: str) -> None:
        answer, self._answer = self._answer, None
        self.close()
        if answer is not None and not answer.done():
            answer.set_exception(HttpFailure(problem))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class LeanHttpClient:
    """POSTs to one URL over pooled keep-alive connections.

    Args:
        url: ``http://`` or ``https://`` URL every request goes to.
        headers: sent with every request (checked by ``header_lines``).
        timeout: seconds for one request: connect, send and the whole answer.
        allow_private_network: skip the address check (loopback and private upstreams).
        max_connections: connections open at once; more callers wait for one.
        max_response_bytes: the largest answer body accepted.
        resolver: the DNS lookup (``netguard.system_resolver``; tests inject one).

    Raises:
        HttpFailure: the URL or a header is not usable.
    """

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str],
        *,
        timeout: float,
        allow_private_network: bool,
        max_connections: int = 64,
        max_response_bytes: int = 64 * 1024 * 1024,
        resolver: Resolver = system_resolver,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
            raise HttpFailure("the URL is not an http(s) URL with a host and no user info")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if _UNSAFE_TARGET.search(path):
            raise HttpFailure("the URL's path holds a space or control character")
        self._head = (
            f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            + header_lines(headers)
            + "Accept-Encoding: identity\r\n"
        )
        self._timeout = timeout
        self._allow_private = allow_private_network
        self._resolver = resolver
        self._max_body = max_response_bytes
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()  # connected, transport not closed yet
        self._closed = False

    async def post(self, body: bytes, headers: Mapping[str, str]) -> HttpAnswer:
        """Send ``body`` with the client's headers and ``headers``; the whole answer.

        Raises:
            HttpFailure: connect, send or read failed, timed out or broke a limit; nothing is retried.
        """
        request = (self._head + header_lines(headers) + f"Content-Length: {len(body)}\r\n\r\n").encode(
            "latin-1"
        ) + body
        connection: _Connection | None = None
        answer: HttpAnswer | None = None
        try:
            async with asyncio.timeout(self._timeout), self._slots:
                connection = self._reuse() or await self._connect()
                answer = await connection.send(request)
        except TimeoutError:
            raise HttpFailure("timed out") from None
        except OSError as exc:
            raise HttpFailure(f"connection failed: {type(exc).__name__}") from None
        finally:
            if connection is not None:
                if answer is not None and not connection.closed and not self._closed:
                    connection.idle_since = time.monotonic()
                    self._idle.append(connection)
                else:
                    connection.close()  # its answer was not read to the end: never reuse it
        return answer

    def _reuse(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and now - connection.idle_since < IDLE_SECONDS:
                connection.idle_since = 0.0
                return connection
            connection.close()
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            addresses = await resolve_checked(
                self._host, self._port, allow_private_network=self._allow_private, resolver=self._resolver
            )
        except HostRefused as exc:
            raise HttpFailure(f"the host resolves to {exc.reason}") from None
        except HostUnresolved:
            raise HttpFailure("the host does not resolve") from None
        failure: OSError = OSError("the host does not resolve")
        for address in addresses:
            try:
                # The address just checked, not the name: DNS cannot answer differently in between.
                _, connection = await loop.create_connection(
                    lambda: _Connection(self._max_body),
                    host=str(address),
                    port=self._port,
                    family=socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl is not None else None,
                )
            except OSError as exc:
                failure = exc
                continue
            return self._track(connection)
        raise failure

    def _track(self, connection: _Connection) -> _Connection:
        self._open.add(connection)
        connection.gone.add_done_callback(lambda _: self._open.discard(connection))
        return connection

    async def aclose(self) -> None:
        """Close the idle connections and those still closing, at once and without waiting.

        Each is aborted: its socket is closed now, with no TLS close_notify exchange (a peer that
        never answers one would keep the socket open past the event loop, and uvloop's
        ``loop.close()`` then fails). Nothing is lost: an idle connection has no request or answer
        in flight. A call still in flight keeps its connection and closes it when it ends. No
        ``await`` here: a shutdown being cancelled must not be able to stop halfway.
        """
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.abort()
        for connection in list(self._open):
            if connection.closed and not connection.gone.done():
                connection.abort()  # closed earlier (stale, or an answer not read to its end)
