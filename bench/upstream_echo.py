"""A bare MCP SDK server with one ``echo(text)`` tool over Streamable HTTP: the benchmark's upstream.

It plays an HTTP upstream that wants a credential: a request without an ``Authorization`` header is
answered 401 (the value is not checked; the gateway injects ``Bearer <vault secret>``). Everything
else is the SDK's default ``MCPServer`` app (SSE responses, stateful 2025-11-25 sessions, the
per-request 2026-07-28 path), so "direct" numbers are what a stock SDK server does.

Run: ``python bench/upstream_echo.py --port 8931 [--json-response]``, or ``--stdio`` for the same server
over stdin/stdout (what the stdio-fronting peers in ``peers.py`` spawn; no credential there).
"""

from __future__ import annotations

import argparse

import uvicorn
from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp, Receive, Scope, Send

server = MCPServer("bench-echo", log_level="WARNING")


@server.tool()
def echo(text: str) -> str:
    """Echo the text back."""
    return text


class RequireAuthorization:
    """401 for HTTP requests that carry no ``Authorization`` header; its value is ignored."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not any(k == b"authorization" for k, _ in scope["headers"]):
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"12")],
                }
            )
            await send({"type": "http.response.body", "body": b"unauthorized"})
            return
        await self.app(scope, receive, send)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int)
    parser.add_argument("--json-response", action="store_true", help="answer JSON instead of SSE")
    parser.add_argument("--stdio", action="store_true", help="serve over stdin/stdout instead of HTTP")
    args = parser.parse_args()
    if args.stdio:
        server.run("stdio")
        return
    if args.port is None:
        parser.error("--port is required unless --stdio")
    app = server.streamable_http_app(host="127.0.0.1", json_response=args.json_response)
    uvicorn.run(
        RequireAuthorization(app),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )


if __name__ == "__main__":
    main()
