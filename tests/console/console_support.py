"""A real gateway with the console on, under uvicorn on 127.0.0.1, and people to log in as.

One gateway per test module (the console's tests share it; each test makes its own calls and
approvals). Its agent calls the built-in ``note`` toolset: ``note.write`` always waits for a human,
``note.echo`` records its ``code`` argument as sensitive (an HMAC only).
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
import yaml
from mcp.shared.exceptions import MCPError

from conftest import connect, free_port, wait_until
from mcp_gateway.app.console import with_console
from mcp_gateway.app.wiring import Runtime, build_runtime, key_file_path, open_agents
from mcp_gateway.config import Settings
from mcp_gateway.http.app import create_app
from mcp_gateway.tools.base import BuiltinTool, ToolContext, ToolInput, Toolset
from mcp_gateway.vault.keys import init_key_file

POLICY = """\
version: 1
agents:
  agent-a:
    grants:
      - {id: notes-ask, tool: note.write, approval: required}
      - id: notes-echo
        tool: note.echo
        rate: ["1000/hour"]
        args:
          code: {sensitive: true}
"""

PEOPLE = {"alice": "admin", "april": "approver", "victor": "viewer", "agent-a": "approver"}
"""Console roles; ``agent-a`` is also the agent's name (a person by that name must not approve its calls)."""


class WriteInput(ToolInput):
    text: str


class EchoInput(ToolInput):
    text: str
    code: str = ""


WRITES: list[str] = []


async def _write(ctx: ToolContext, args: WriteInput) -> dict[str, Any]:
    WRITES.append(args.text)
    return {"written": args.text}


async def _echo(ctx: ToolContext, args: EchoInput) -> dict[str, Any]:
    return {"echo": args.text}


def note_toolset() -> Toolset:
    write = BuiltinTool("note.write", "write a note (a human approves first)", WriteInput, _write)
    echo = BuiltinTool("note.echo", "echo a text", EchoInput, _echo, read_only=True)
    return Toolset("note", {write.name: write, echo.name: echo})


@dataclass
class ConsoleGateway:
    base: str
    console: str
    runtime: Runtime
    settings: Settings
    agent_token: str
    admin_tokens: dict[str, str]
    server: uvicorn.Server
    thread: threading.Thread

    def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """One MCP ``tools/call`` as the agent (its own event loop, in a worker thread); the result."""

        async def go() -> dict[str, Any]:
            async with connect(f"{self.base}/mcp", self.agent_token) as client:
                try:
                    result = await client.call_tool(tool, arguments)
                except MCPError as exc:  # a tool not granted: a protocol error
                    return {"is_error": True, "structured": None, "error": str(exc)}
            return {"is_error": result.is_error, "structured": result.structured_content}

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(anyio.run, go).result(timeout=60)

    def park(self, text: str) -> str:
        """A ``note.write`` call parked for approval; its approval id."""
        result = self.call("note.write", {"text": text})
        approval_id: str = result["structured"]["approval_id"]
        return approval_id

    def audit(self) -> list[Any]:
        return self.runtime.sink.records()


def start_console_gateway(
    root: Path,
    console: dict[str, Any] | None = None,
    more: dict[str, Any] | None = None,
    *,
    key_from: Path | None = None,
    alerts: dict[str, Any] | None = None,
) -> ConsoleGateway:
    """Start a gateway with the console on; ``more``: further ``gateway.yaml`` sections (``oauth``,
    ``store``); ``key_from``: another gateway's vault key file (a replica sharing its ``store:``);
    ``alerts``: the ``alerts.rules`` (default: a denied call raises an alert at once). Started again
    on the same ``root``, it is that gateway restarted (its data dir and key kept)."""
    (root / "policies").mkdir(parents=True, exist_ok=True)
    (root / "policies" / "policy.yaml").write_text(POLICY, encoding="utf-8")
    port = free_port()
    raw: dict[str, Any] = {
        "data_dir": str(root / "data"),
        "policies": str(root / "policies"),
        "server": {"host": "127.0.0.1", "port": port, "watch_policy": False},
        "upstreams": {},
        "console": console or {"enabled": True, "roles": PEOPLE},
        # A denied call raises an alert at once: the console's banner shows it.
        "alerts": {
            "rules": alerts or {"denial_burst": {"count": 1, "window_seconds": 60}},
            "poll_seconds": 0.1,
        },
        **(more or {}),
    }
    (root / "gateway.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    settings = Settings.model_validate(raw)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    key_file = key_file_path(settings)
    assert key_file is not None
    if key_from is not None and not key_file.exists():
        key_file.touch(mode=0o600)
        shutil.copyfile(key_from, key_file)
    init_key_file(key_file)
    agents = open_agents(settings)
    agent_token = agents.create("agent-a")[1]
    agents.close()
    runtime = build_runtime(settings, master_key_env=None, toolsets=[note_toolset()])
    assert runtime.admins is not None
    admin_tokens = {name: runtime.admins.create(name)[1] for name in [*PEOPLE, "mallory"]}
    app = create_app(
        settings,
        runtime.gateway,
        runtime.agents,
        approvals=runtime.approvals,
        verify_admin=runtime.admins.verify,
    )
    server = uvicorn.Server(
        uvicorn.Config(with_console(app, settings, runtime), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: server.started, what="console gateway startup")
    return ConsoleGateway(
        base, f"{base}/console", runtime, settings, agent_token, admin_tokens, server, thread
    )


def stop_console_gateway(gw: ConsoleGateway) -> None:
    gw.server.should_exit = True
    gw.thread.join(timeout=20)
    gw.runtime.close()


def gateway_for_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleGateway]:
    """What a module's ``console_gateway`` fixture yields: one gateway, stopped after the module."""
    gw = start_console_gateway(tmp_path_factory.mktemp("console"))
    try:
        yield gw
    finally:
        stop_console_gateway(gw)


CLIENTS: list[httpx.Client] = []


def close_clients() -> Iterator[None]:
    """What a module's autouse fixture yields: the test's HTTP clients closed after it."""
    yield
    while CLIENTS:
        CLIENTS.pop().close()


def client_for(gw: ConsoleGateway) -> httpx.Client:
    """An HTTP client of the console, closed after the test."""
    client = httpx.Client(base_url=gw.console, timeout=10)
    CLIENTS.append(client)
    return client


def login(gw: ConsoleGateway, person: str) -> httpx.Client:
    """An HTTP client logged in to the console as ``person`` (the session cookie in its jar)."""
    client = client_for(gw)
    page = client.get("/login")
    nonce = page.text.split('name="nonce" value="', 1)[1].split('"', 1)[0]
    answer = client.post("/login", data={"nonce": nonce, "token": gw.admin_tokens[person]})
    assert answer.status_code == 303, answer.text
    return client


def cookie_client(gw: ConsoleGateway, session_id: str) -> httpx.Client:
    """An HTTP client of ``gw``'s console presenting the session cookie ``session_id`` (no login)."""
    client = httpx.Client(base_url=gw.console, timeout=10, cookies={"mgw_console": session_id})
    CLIENTS.append(client)
    return client


def session_id_of(client: httpx.Client) -> str:
    """The session id in a logged-in client's cookie jar."""
    value = client.cookies.get("mgw_console")
    assert value, "not logged in"
    return str(value)


def csrf_of(client: httpx.Client) -> str:
    page = client.get("/audit")
    return page.text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]


ARTIFACTS = Path(os.environ.get("MCP_GATEWAY_TEST_ARTIFACTS", "test-artifacts")) / "console"
"""Where the browser tests save their screenshots (``MCP_GATEWAY_TEST_ARTIFACTS`` overrides the root)."""
