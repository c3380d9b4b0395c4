"""A real Streamable HTTP upstream (the MCP SDK's server under uvicorn, in a thread) that records the
W3C trace context of every tool call it receives: the ``traceparent`` header of the POST and the
``traceparent`` in ``params._meta``. It also offers a resource and a prompt, and a tool that echoes."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import uvicorn
from mcp.server.mcpserver import Context, MCPServer

from conftest import free_port, wait_until


@dataclass
class Seen:
    """What the upstream received with each tool call, in order."""

    headers: list[str | None] = field(default_factory=list)
    metas: list[str | None] = field(default_factory=list)


@contextmanager
def traced_upstream() -> Iterator[tuple[str, Seen]]:
    """Serve the upstream on a free port; yields its MCP URL and what it saw."""
    seen = Seen()
    server = MCPServer("traced")

    @server.tool()
    def trace_seen(text: str, ctx: Context) -> str:
        """Answer with the trace context this call arrived with."""
        request = ctx.request_context.request
        header = request.headers.get("traceparent") if request is not None else None
        meta = ctx.request_context.meta or {}
        carried = meta.get("traceparent")
        seen.headers.append(header)
        seen.metas.append(carried if isinstance(carried, str) else None)
        return json.dumps({"header": header, "meta": carried, "text": text})

    @server.resource("note://daily")
    def daily() -> str:
        """A note."""
        return "today's note"

    @server.prompt()
    def greet(who: str) -> str:
        """A greeting."""
        return f"hello {who}"

    port = free_port()
    app = server.streamable_http_app()
    # lifespan on: the SDK's session manager runs in the app's lifespan.
    http = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=http.run, daemon=True, name=f"traced-upstream-{port}")
    thread.start()
    try:
        wait_until(lambda: http.started, what="the traced upstream")
        yield f"http://127.0.0.1:{port}/mcp", seen
    finally:
        # Not a graceful stop: it would wait for the gateway's open listen stream.
        http.should_exit = http.force_exit = True
        thread.join(timeout=20)
