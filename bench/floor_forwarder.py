"""The floor: the least a governed 2026-07-28 ``tools/call`` forwarder can do, in Python. NOT product code.

A benchmark reference point only (issue 18, "Down to the floor"): it shows how close to the
upstream a Python forwarder that keeps the gateway's durable-audit promise can get, so the README
can state the gateway's distance from it. It is never imported by ``src/``, has no tests, and skips
almost everything the gateway does (no vault, no redaction, no argument constraints, no limits, no
telemetry, no sessions, no validation beyond what forwarding needs).

Per ``tools/call`` it does, on one uvicorn event loop:

1. a token check: sha256 of the bearer token compared (constant time) with the stored hash;
2. a policy lookup: ``POLICY[agent][tool]`` in a dict (deny by default);
3. an intent row committed to SQLite (WAL, ``synchronous=FULL``: fsynced) before the upstream is touched;
4. the call forwarded (name prefix stripped, credential injected) over a pooled raw HTTP/1.1 client;
5. an outcome row committed (fsynced) before the upstream's answer is returned as is.

The commits run on the event loop (no thread hop), as ``commit_on_loop`` does in the gateway.
Other methods (``server/discover``, ``tools/list``) are passed through unaudited; the 2025-11-25
handshake era is not served (400).

Upstream clients (``--pool``): ``h11`` (h11 state machines over asyncio streams, the default) or
``httpcore`` (``httpcore.AsyncConnectionPool``).

Run: ``python bench/floor_forwarder.py --port P --upstream http://127.0.0.1:U/mcp --token-sha256 HEX``
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import sqlite3
import time
from collections import deque
from typing import Any, Protocol
from urllib.parse import urlsplit

import h11
import httpcore
import uvicorn

AGENT = "bench"
PREFIX = "up."
POLICY: dict[str, dict[str, bool]] = {AGENT: {"up.echo": True}}
UPSTREAM_CREDENTIAL = b"Bearer floor-upstream-credential"
FORWARDED = (b"content-type", b"accept", b"mcp-protocol-version", b"mcp-method")
Headers = list[tuple[bytes, bytes]]


class Upstream(Protocol):
    async def post(self, headers: Headers, body: bytes) -> tuple[int, Headers, bytes]: ...


class H11Pool:
    """Keep-alive HTTP/1.1 connections to one origin, each an ``h11.Connection`` over asyncio streams."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path
        self.authority = f"{self.host}:{self.port}".encode()
        self.idle: deque[tuple[asyncio.StreamReader, asyncio.StreamWriter, h11.Connection]] = deque()

    async def post(self, headers: Headers, body: bytes) -> tuple[int, Headers, bytes]:
        if self.idle:
            try:
                return await self._exchange(*self.idle.pop(), headers, body)
            except (ConnectionError, h11.RemoteProtocolError):
                pass  # the upstream closed an idle keep-alive connection: once more on a fresh one
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return await self._exchange(reader, writer, h11.Connection(h11.CLIENT), headers, body)

    async def _exchange(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        conn: h11.Connection,
        headers: Headers,
        body: bytes,
    ) -> tuple[int, Headers, bytes]:
        try:
            request = h11.Request(
                method=b"POST",
                target=self.path,
                headers=[(b"host", self.authority), (b"content-length", str(len(body)).encode()), *headers],
            )
            writer.write(conn.send(request) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
            status, out, chunks = 0, [], []
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.Response):
                    status, out = event.status_code, list(event.headers)
                elif isinstance(event, h11.Data):
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise ConnectionError("upstream closed the connection")
        except BaseException:
            writer.close()
            raise
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            self.idle.append((reader, writer, conn))
        else:
            writer.close()
        return status, out, b"".join(chunks)


class HttpcorePool:
    """The same over ``httpcore.AsyncConnectionPool`` (HTTP/1.1, keep-alive)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.pool = httpcore.AsyncConnectionPool(max_connections=256, max_keepalive_connections=256)

    async def post(self, headers: Headers, body: bytes) -> tuple[int, Headers, bytes]:
        response = await self.pool.request("POST", self.url, headers=headers, content=body)
        return response.status, list(response.headers), response.content


class Audit:
    """Append-only rows in SQLite, WAL, ``synchronous=FULL``: every commit is fsynced."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY, ts REAL, agent TEXT, tool TEXT,"
            " phase TEXT, outcome TEXT)"
        )

    def record(self, agent: str, tool: str, phase: str, outcome: str) -> None:
        self.db.execute("BEGIN")
        self.db.execute(
            "INSERT INTO audit (ts, agent, tool, phase, outcome) VALUES (?, ?, ?, ?, ?)",
            (time.time(), agent, tool, phase, outcome),
        )
        self.db.execute("COMMIT")


def _outcome(content_type: bytes, body: bytes) -> str:
    """``ok``/``tool_error``/``error`` from the upstream's JSON or SSE answer."""
    message = _message(content_type, body)
    result = message.get("result") if isinstance(message, dict) else None
    if not isinstance(result, dict):
        return "error"
    return "tool_error" if result.get("isError") else "ok"


class Floor:
    """The ASGI app."""

    def __init__(self, upstream: Upstream, audit: Audit, token_sha256: bytes) -> None:
        self.upstream, self.audit = upstream, audit
        self.tokens = {token_sha256: AGENT}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            event = await receive()
            chunks.append(event.get("body", b""))
            if not event.get("more_body"):
                break
        status, headers, body = await self.handle(scope, b"".join(chunks))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def handle(self, scope: dict[str, Any], body: bytes) -> tuple[int, Headers, bytes]:
        headers = dict(scope["headers"])
        auth = headers.get(b"authorization", b"")
        digest = hashlib.sha256(auth[7:]).digest() if auth[:7].lower() == b"bearer " else b""
        agent = next((a for h, a in self.tokens.items() if hmac.compare_digest(h, digest)), None)
        if scope["method"] != "POST" or agent is None:
            return _plain(401 if agent is None else 405, b"unauthorized" if agent is None else b"POST only")
        if headers.get(b"mcp-protocol-version") != b"2026-07-28":
            return _plain(400, b"only the 2026-07-28 era is served")
        out = [(k, v) for k, v in scope["headers"] if k in FORWARDED]
        out.append((b"authorization", UPSTREAM_CREDENTIAL))
        try:
            message = json.loads(body)
        except ValueError:
            return _plain(400, b"bad json")
        if not isinstance(message, dict) or message.get("method") != "tools/call":
            # Discovery etc.: not a tool call. tools/list is renamed (``echo`` → ``up.echo``) so the
            # SDK client finds the tool it calls (else it lists again on every call).
            status, answer_headers, answer = await self.upstream.post(out, body)
            if message.get("method") == "tools/list" and status == 200:
                return _prefixed_tools(answer_headers, answer)
            return status, answer_headers, answer
        params = message.get("params") or {}
        tool = params.get("name")
        if not isinstance(tool, str) or not POLICY.get(agent, {}).get(tool, False):
            return _plain(403, b"denied")
        self.audit.record(agent, tool, "intent", "")  # durable before the upstream is touched
        params["name"] = tool.removeprefix(PREFIX)
        out.append((b"mcp-name", params["name"].encode()))
        try:
            status, answer_headers, answer = await self.upstream.post(out, json.dumps(message).encode())
        except (OSError, h11.ProtocolError, httpcore.NetworkError) as exc:
            self.audit.record(agent, tool, "outcome", f"upstream_error:{type(exc).__name__}")
            return _plain(502, b"upstream error")
        content_type = next((v for k, v in answer_headers if k.lower() == b"content-type"), b"")
        self.audit.record(
            agent, tool, "outcome", _outcome(content_type, answer) if status == 200 else "error"
        )
        return (
            status,
            [(b"content-type", content_type), (b"content-length", str(len(answer)).encode())],
            answer,
        )


def _message(content_type: bytes, body: bytes) -> Any:
    """The JSON-RPC message in a JSON or SSE (first ``data:`` line) body; None if unreadable."""
    text = body.decode("utf-8", "replace")
    if content_type.startswith(b"text/event-stream"):
        text = next((ln[5:] for ln in text.splitlines() if ln.startswith("data:")), "null")
    try:
        return json.loads(text)
    except ValueError:
        return None


def _prefixed_tools(headers: Headers, body: bytes) -> tuple[int, Headers, bytes]:
    content_type = next((v for k, v in headers if k.lower() == b"content-type"), b"")
    message = _message(content_type, body)
    for tool in ((message or {}).get("result") or {}).get("tools") or []:
        tool["name"] = PREFIX + tool["name"]
    out = json.dumps(message).encode()
    return 200, [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())], out


def _plain(status: int, body: bytes) -> tuple[int, Headers, bytes]:
    return status, [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())], body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the upstream's Streamable HTTP URL")
    parser.add_argument("--token-sha256", required=True, help="hex sha256 of the one agent's bearer token")
    parser.add_argument("--audit-db", default="floor-audit.sqlite3")
    parser.add_argument("--pool", choices=("h11", "httpcore"), default="h11")
    args = parser.parse_args()
    upstream: Upstream = H11Pool(args.upstream) if args.pool == "h11" else HttpcorePool(args.upstream)
    app = Floor(upstream, Audit(args.audit_db), bytes.fromhex(args.token_sha256))
    # The gateway's uvicorn settings (uvloop + httptools when installed).
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, lifespan="on")


if __name__ == "__main__":
    main()
