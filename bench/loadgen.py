"""A lean multi-process MCP load generator: valid JSON-RPC ``tools/call`` POSTs, both protocol eras.

Each worker process runs its own asyncio loop with ``connections`` keep-alive HTTP/1.1 connections,
one request in flight on each (so concurrency = workers x connections). The default client is a
~100-line raw HTTP/1.1 client on asyncio streams (far cheaper per call than any general client,
so the generator does not steal the CPU it is measuring); ``--client httpx`` uses ``httpx.AsyncClient``
and ``--client sdk`` the SDK's ``mcp.Client`` (the client of the reference figures in ANCHORS.md).

- 2025-11-25 (``legacy``): each connection does the ``initialize`` handshake once, sends
  ``notifications/initialized``, and reuses its ``Mcp-Session-Id`` for every call (DELETE at the end).
- 2026-07-28 (``modern``): every POST is self-contained: ``MCP-Protocol-Version``, ``Mcp-Method``,
  ``Mcp-Name`` headers and the ``io.modelcontextprotocol/*`` envelope in ``params._meta``.

Responses are parsed (JSON body, or the SSE ``data:`` lines) and checked: HTTP 200, a JSON-RPC result
for our id, ``isError`` false, the echoed text equal to what was sent. Anything else is an error.
Workers warm up and report ready; the parent starts them all at once, they measure until their call
quota or the deadline, report done, and tear down (sessions deleted) when the parent says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

LEGACY_VERSION = "2025-11-25"
MODERN_VERSION = "2026-07-28"
CLIENT_INFO = {"name": "mcp-gateway-bench", "version": "1"}
ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": CLIENT_INFO,
}
TIMEOUT = 30.0


class CallFailed(Exception):
    """One call did not produce the expected result."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


# ---- HTTP clients ------------------------------------------------------------------------------


class RawConnection:
    """One keep-alive HTTP/1.1 connection; just enough HTTP for Content-Length and chunked bodies."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Response:
        if self.writer is None:
            await self._connect()
        assert self.reader is not None and self.writer is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write(head.encode("latin-1") + b"\r\n" + body)
        try:
            response = await asyncio.wait_for(self._read_response(self.reader), TIMEOUT)
        except BaseException:
            await self.close()
            raise
        if response.headers.get("connection", "").lower() == "close":
            await self.close()
        return response

    async def _read_response(self, reader: asyncio.StreamReader) -> Response:
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionError("connection closed by server")
        status = int(status_line.split(b" ", 2)[1])
        headers: dict[str, str] = {}
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            key, _, value = line.decode("latin-1").partition(":")
            headers[key.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await reader.readline()).split(b";", 1)[0], 16)
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
            body = b"".join(parts)
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
        else:
            body = await reader.read()
            await self.close()
        return Response(status, headers, body)

    async def close(self) -> None:
        writer, self.writer, self.reader = self.writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()


class HttpxConnection:
    """The same interface over a shared ``httpx.AsyncClient``."""

    def __init__(self, client: httpx.AsyncClient, base: str) -> None:
        self.client, self.base = client, base

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Response:
        r = await self.client.request(method, self.base + path, headers=headers, content=body)
        return Response(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content)

    async def close(self) -> None:
        return None


# ---- MCP over one connection -------------------------------------------------------------------


def parse_jsonrpc(response: Response, request_id: int) -> dict[str, Any]:
    """The JSON-RPC message answering ``request_id`` in a JSON or SSE body."""
    if response.status != 200:
        raise CallFailed(f"HTTP {response.status}: {response.body[:200]!r}")
    content_type = response.headers.get("content-type", "")
    if content_type.startswith("text/event-stream"):
        for line in response.body.decode("utf-8").splitlines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if isinstance(message, dict) and message.get("id") == request_id:
                    return message
        raise CallFailed("no SSE data line answered the request")
    message = json.loads(response.body)
    if not isinstance(message, dict) or message.get("id") != request_id:
        raise CallFailed(f"unexpected JSON body: {response.body[:200]!r}")
    return message


def check_echo(result: dict[str, Any], text: str) -> None:
    """Raise ``CallFailed`` unless a ``tools/call`` result (wire form, camelCase) echoes ``text``.

    The one check every client applies. An upstream echo answers with the text as its first content
    item; the gateway's built-in echo may answer with ``structuredContent: {"text": ...}``.
    """
    if result.get("isError"):
        raise CallFailed(f"tool error: {str(result.get('content'))[:200]}")
    content = result.get("content") or [{}]
    first = content[0] if isinstance(content[0], dict) else {}
    structured = result.get("structuredContent")
    if first.get("text") != text and not (isinstance(structured, dict) and structured.get("text") == text):
        raise CallFailed("echo mismatch")


class McpChannel:
    """An MCP client of one era over one connection, stripped to what the benchmark sends."""

    def __init__(self, conn: RawConnection | HttpxConnection, path: str, era: str, auth: str) -> None:
        self.conn, self.path, self.era = conn, path, era
        self.base_headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "Authorization": auth,
        }
        self.session_id: str | None = None
        self.next_id = 0

    async def open(self) -> None:
        if self.era != "legacy":
            return
        self.next_id += 1
        body = {
            "jsonrpc": "2.0",
            "id": self.next_id,
            "method": "initialize",
            "params": {"protocolVersion": LEGACY_VERSION, "capabilities": {}, "clientInfo": CLIENT_INFO},
        }
        response = await self.conn.request("POST", self.path, self.base_headers, json.dumps(body).encode())
        message = parse_jsonrpc(response, self.next_id)
        if "result" not in message:
            raise CallFailed(f"initialize failed: {message.get('error')}")
        self.session_id = response.headers.get("mcp-session-id")
        if not self.session_id:
            raise CallFailed("initialize answered without Mcp-Session-Id")
        headers = self._headers()
        note = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode()
        ack = await self.conn.request("POST", self.path, headers, note)
        if ack.status != 202:
            raise CallFailed(f"notifications/initialized answered HTTP {ack.status}")

    def _headers(self, tool: str | None = None) -> dict[str, str]:
        headers = dict(self.base_headers)
        if self.era == "legacy":
            headers["MCP-Protocol-Version"] = LEGACY_VERSION
            if self.session_id:
                headers["Mcp-Session-Id"] = self.session_id
        else:
            headers["MCP-Protocol-Version"] = MODERN_VERSION
            headers["Mcp-Method"] = "tools/call"
            if tool is not None:
                headers["Mcp-Name"] = tool
        return headers

    async def call(self, tool: str, text: str) -> None:
        """One ``tools/call``; raises ``CallFailed`` unless the echo came back intact."""
        self.next_id += 1
        params: dict[str, Any] = {"name": tool, "arguments": {"text": text}}
        if self.era == "modern":
            params["_meta"] = ENVELOPE
        body = json.dumps({"jsonrpc": "2.0", "id": self.next_id, "method": "tools/call", "params": params})
        response = await self.conn.request("POST", self.path, self._headers(tool), body.encode())
        message = parse_jsonrpc(response, self.next_id)
        result = message.get("result")
        if not isinstance(result, dict):
            raise CallFailed(f"JSON-RPC error: {message.get('error')}")
        check_echo(result, text)

    async def close(self) -> None:
        if self.session_id:
            with contextlib.suppress(Exception):
                await self.conn.request("DELETE", self.path, self._headers(), b"")
        await self.conn.close()


class SdkChannel:
    """The official SDK client (``mcp.Client`` over httpx2), as the reference numbers in ANCHORS.md used.

    Costs the generator several ms of CPU per call: use it to compare with those figures, not to
    measure the servers.
    """

    def __init__(self, url: str, era: str, auth: str) -> None:
        self.url, self.era, self.auth = url, era, auth
        self.session_id: str | None = "sdk"  # the SDK reconnects on its own; never re-open
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None

    async def open(self) -> None:
        import httpx2
        from mcp import Client
        from mcp.client.streamable_http import streamable_http_client

        stack = contextlib.AsyncExitStack()
        http = await stack.enter_async_context(
            httpx2.AsyncClient(headers={"Authorization": self.auth}, timeout=TIMEOUT)
        )
        # Pinned, not "auto": a server without 2026-07-28 must fail the modern cells, not be
        # measured in the handshake era under a modern label.
        mode = "legacy" if self.era == "legacy" else MODERN_VERSION
        self._client = await stack.enter_async_context(
            Client(streamable_http_client(self.url, http_client=http), mode=mode)
        )
        self._stack = stack

    async def call(self, tool: str, text: str) -> None:
        result = await self._client.call_tool(tool, {"text": text})
        check_echo(result.model_dump(mode="json", by_alias=True, exclude_none=True), text)

    async def close(self) -> None:
        if self._stack is not None:
            with contextlib.suppress(Exception):
                await self._stack.aclose()


# ---- workers -----------------------------------------------------------------------------------


@dataclass
class WorkerSpec:
    url: str
    era: str
    tool: str
    auth: str
    connections: int
    calls: int
    warmup_calls: int
    max_seconds: float
    client: str = "raw"
    text_length: int = 32


@dataclass
class WorkerResult:
    latencies_ns: list[int] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    setup_error: str = ""
    started: float = 0.0
    finished: float = 0.0
    cpu_s: float = 0.0

    def error(self, exc: BaseException) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(f"{type(exc).__name__}: {exc}"[:300])


def _text(worker: int, conn: int, i: int, length: int) -> str:
    return f"w{worker}c{conn}i{i}-".ljust(length, "x")[:length]


async def _run_worker(
    spec: WorkerSpec, index: int, wait_start: Callable[[], None], wait_end: Callable[[], None]
) -> WorkerResult:
    result = WorkerResult()
    parts = urlsplit(spec.url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"
    http: httpx.AsyncClient | None = None
    if spec.client == "httpx":
        http = httpx.AsyncClient(
            timeout=TIMEOUT,
            limits=httpx.Limits(max_connections=spec.connections, max_keepalive_connections=spec.connections),
        )
    channels: list[McpChannel | SdkChannel] = []
    for _ in range(spec.connections):
        if spec.client == "sdk":
            channels.append(SdkChannel(spec.url, spec.era, spec.auth))
            continue
        conn = (
            RawConnection(host, port)
            if http is None
            else HttpxConnection(http, f"{parts.scheme}://{parts.netloc}")
        )
        channels.append(McpChannel(conn, path, spec.era, spec.auth))
    loop = asyncio.get_running_loop()
    try:
        try:
            await asyncio.gather(*(ch.open() for ch in channels))
            for n in range(spec.warmup_calls):
                await asyncio.gather(
                    *(
                        ch.call(spec.tool, _text(index, c, -n, spec.text_length))
                        for c, ch in enumerate(channels)
                    )
                )
        except Exception as exc:
            result.setup_error = f"{type(exc).__name__}: {exc}"[:500]
        await loop.run_in_executor(None, wait_start)
        if result.setup_error:
            await loop.run_in_executor(None, wait_end)
            return result
        remaining = spec.calls
        cpu0 = time.process_time()
        result.started = time.monotonic()
        deadline = result.started + spec.max_seconds

        async def drive(c: int, channel: McpChannel | SdkChannel) -> None:
            nonlocal remaining
            i = 0
            while remaining > 0 and time.monotonic() < deadline:
                remaining -= 1
                i += 1
                t0 = time.perf_counter_ns()
                try:
                    await channel.call(spec.tool, _text(index, c, i, spec.text_length))
                except Exception as exc:
                    result.error(exc)
                    if (
                        isinstance(channel, McpChannel)
                        and channel.era == "legacy"
                        and channel.session_id is None
                    ):
                        with contextlib.suppress(Exception):
                            await channel.open()
                    continue
                result.latencies_ns.append(time.perf_counter_ns() - t0)

        await asyncio.gather(*(drive(c, ch) for c, ch in enumerate(channels)))
        result.finished = time.monotonic()
        result.cpu_s = time.process_time() - cpu0
        await loop.run_in_executor(None, wait_end)
    finally:
        await asyncio.gather(*(ch.close() for ch in channels), return_exceptions=True)
        if http is not None:
            await http.aclose()
    return result


class _Signals:
    """Worker side of the coordination: report ``ready``/``done``, wait for ``go``/``teardown``."""

    def __init__(self, index: int, out: Any, go: Any, teardown: Any, timeout: float) -> None:
        self.index, self.out, self.go, self.teardown, self.timeout = index, out, go, teardown, timeout

    def ready(self) -> None:
        self.out.put((self.index, "ready", None))
        if not self.go.wait(self.timeout):
            raise TimeoutError("no start signal")

    def done(self) -> None:
        self.out.put((self.index, "done", None))
        if not self.teardown.wait(self.timeout):
            raise TimeoutError("no teardown signal")


def _worker_main(spec: WorkerSpec, index: int, out: Any, go: Any, teardown: Any) -> None:
    signals = _Signals(index, out, go, teardown, spec.max_seconds + 120)
    try:
        result = asyncio.run(_run_worker(spec, index, signals.ready, signals.done))
    except BaseException as exc:
        result = WorkerResult(setup_error=f"{type(exc).__name__}: {exc}"[:500])
    out.put((index, "result", result))


def run_cell(
    spec_for: Callable[[int], WorkerSpec],
    workers: int,
    on_start: Callable[[], None] = lambda: None,
    on_end: Callable[[], None] = lambda: None,
) -> tuple[list[WorkerResult], float]:
    """Run ``workers`` processes built from ``spec_for(i)``.

    ``on_start`` runs once every worker has warmed up (just before they start measuring), ``on_end``
    once every worker has finished measuring (before they tear down). Returns the per-worker results
    and the wall time between the two.
    """
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    go, teardown = ctx.Event(), ctx.Event()
    specs = [spec_for(i) for i in range(workers)]
    procs = [
        ctx.Process(target=_worker_main, args=(specs[i], i, out, go, teardown), daemon=True)
        for i in range(workers)
    ]
    limit = max(s.max_seconds for s in specs) + 120
    seen: dict[str, set[int]] = {"ready": set(), "done": set()}
    results: dict[int, WorkerResult] = {}

    def collect(kind: str, deadline: float) -> None:
        while len(seen[kind] | set(results)) < workers:
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers not {kind} in time")
            if not any(p.is_alive() for p in procs) and out.empty():
                raise RuntimeError("every worker exited")
            with contextlib.suppress(queue.Empty):
                index, what, payload = out.get(timeout=0.2)
                if what == "result":
                    results[index] = payload
                else:
                    seen[what].add(index)

    wall = 0.0
    for proc in procs:
        proc.start()
    try:
        collect("ready", time.monotonic() + 120)
        on_start()
        t0 = time.monotonic()
        go.set()
        collect("done", time.monotonic() + limit)
        wall = time.monotonic() - t0
        on_end()
    except (TimeoutError, RuntimeError) as exc:
        print(f"warning: load generator problem: {exc}", flush=True)
    finally:
        go.set()
        teardown.set()
        deadline = time.monotonic() + 60
        while len(results) < workers and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                index, what, payload = out.get(timeout=0.2)
                if what == "result":
                    results[index] = payload
            if not any(p.is_alive() for p in procs) and out.empty():
                break
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
    for i in range(workers):
        results.setdefault(i, WorkerResult(setup_error="worker produced no result"))
    return [results[i] for i in range(workers)], wall


def default_workers(concurrency: int) -> int:
    # More generator processes than cores only adds scheduling noise on a small machine.
    return max(1, min(concurrency, max(2, (os.cpu_count() or 2))))


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]
