"""The MCP Inspector CLI against the gateway fronting server-everything (npm) over stdio and over HTTP."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from conformance_harness import NodeTools, node_tools

from conftest import GatewayFactory, free_port, wait_until

__all__ = ["node_tools"]  # the session fixture, re-exported for pytest

POLICY = """
version: 1
agents:
  agent-a:
    grants:
      - id: echo
        tool: everything.echo
"""


def _inspector(tools: NodeTools, url: str, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(tools.inspector), "--cli", url, "--transport", "http"]
    command += ["--header", f"Authorization: Bearer {token}", *args]
    return subprocess.run(command, env=tools.env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def everything_http(node_tools: NodeTools) -> Iterator[str]:
    port = free_port()
    env = {**node_tools.env, "PORT": str(port)}
    proc = subprocess.Popen(
        [str(node_tools.everything), "streamableHttp"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _port_open(port), what="server-everything over HTTP")
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _upstream(transport: str, tools: NodeTools, http_url: str) -> dict[str, Any]:
    if transport == "stdio":
        return {
            "transport": "stdio",
            "command": str(tools.everything),
            "args": ["stdio"],
            "env": {"PATH": tools.env["PATH"]},
        }
    return {"transport": "http", "url": http_url, "allow_private_network": True}


@pytest.mark.e2e
@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_inspector_lists_only_granted_tools_and_calls_one(
    transport: str, node_tools: NodeTools, everything_http: str, make_gateway: GatewayFactory
) -> None:
    gw = make_gateway(
        POLICY,
        upstreams={"everything": _upstream(transport, node_tools, everything_http)},
        watch_policy=False,
    )
    token = gw.tokens["agent-a"]
    listed = _inspector(node_tools, gw.url, token, "--method", "tools/list")
    assert listed.returncode == 0, listed.stderr
    assert [t["name"] for t in json.loads(listed.stdout)["tools"]] == ["everything.echo"]
    called = _inspector(
        node_tools,
        gw.url,
        token,
        "--method",
        "tools/call",
        "--tool-name",
        "everything.echo",
        "--tool-arg",
        "message=hi",
    )
    assert called.returncode == 0, called.stderr
    result = json.loads(called.stdout)
    assert not result.get("isError")
    assert "hi" in result["content"][0]["text"]


@pytest.mark.e2e
def test_inspector_with_a_bad_token_is_refused(node_tools: NodeTools, make_gateway: GatewayFactory) -> None:
    gw = make_gateway(
        POLICY, upstreams={"everything": _upstream("stdio", node_tools, "")}, watch_policy=False
    )
    refused = _inspector(node_tools, gw.url, "mgw_notatoken_x", "--method", "tools/list")
    assert refused.returncode != 0
    assert "tools" not in refused.stdout
    assert any(r.kind == "auth_failure" for r in gw.audit())
