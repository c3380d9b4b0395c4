"""Attack: a hostile upstream puts a vault secret into every field of every message kind it can send
toward the agent, keys included (a log notification's ``logger`` and ``data`` keys, progress
messages, a result's ``_meta`` and ``structuredContent`` keys, a JSON-RPC error's ``message`` and
``data``). Every answer is read as raw bytes off the wire, in both protocol eras, on the lean path and
on the SDK path (``server.fast_path: false``): no form of the secret may appear, and none may reach the
gateway's log.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from test_attack_canary_leak import capture_logs, find_leaks

from conftest import FIXTURES, RunningGateway, gateways

pytestmark = pytest.mark.e2e

# JSON's quote and backslash, a slash, non-ASCII: every serializer writes this differently.
SECRET = 'hs-"quoted"\\back/é✓-7c1f90ab'
SECRETS = {"hostile-secret": SECRET}
POLICY = """\
version: 1
agents:
  agent-a:
    grants:
      - id: all
        tool: "hostile.*"
"""
MODERN = "2026-07-28"
LEGACY = "2025-11-25"
ACCEPT = "application/json, text/event-stream"
META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
}
TOOLS = ("log_everywhere", "progress_leak", "error_data")


@pytest.fixture(scope="module", params=[True, False], ids=["lean-path", "sdk-path"])
def hostile(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    upstream = {
        "transport": "stdio",
        "command": sys.executable,
        "args": [str(FIXTURES / "hostile_upstream.py"), "stdio"],
        "env": {"HOSTILE_SECRET": "secret://hostile-secret"},
    }
    with gateways(tmp_path_factory.mktemp("egress")) as factory:
        yield factory(
            POLICY,
            secrets=SECRETS,
            upstreams={"hostile": upstream},
            watch_policy=False,
            server_options={"fast_path": request.param},
        )


def _modern(gw: RunningGateway, tool: str, *, progress: bool) -> httpx.Response:
    meta = {**META, "progressToken": "p1"} if progress else META
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "_meta": meta}}
    headers = {
        "Authorization": f"Bearer {gw.tokens['agent-a']}",
        "Accept": ACCEPT,
        "Content-Type": "application/json",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call",
        "Mcp-Name": tool,
    }
    return httpx.post(gw.url, content=json.dumps(body), headers=headers, timeout=30)


def _legacy_session(gw: RunningGateway) -> tuple[dict[str, str], list[httpx.Response]]:
    headers = {"Authorization": f"Bearer {gw.tokens['agent-a']}", "Accept": ACCEPT}
    params = {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}
    opened = httpx.post(
        gw.url, json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params}, headers=headers
    )
    assert opened.status_code == 200, opened.text
    headers |= {"Mcp-Session-Id": opened.headers["mcp-session-id"], "MCP-Protocol-Version": LEGACY}
    done = httpx.post(gw.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
    assert done.status_code == 202
    return headers, [opened]


def _legacy(gw: RunningGateway, headers: dict[str, str], tool: str, *, progress: bool) -> httpx.Response:
    params: dict[str, Any] = {"name": tool, "arguments": {}}
    if progress:
        params["_meta"] = {"progressToken": "p1"}
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params}
    return httpx.post(gw.url, json=body, headers=headers, timeout=30)


def _wire(response: httpx.Response) -> str:
    """Everything the agent received: status line facts, every header, the raw body."""
    head = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    return f"{response.status_code}\n{head}\n{response.content.decode('utf-8', errors='replace')}"


def _messages(response: httpx.Response) -> list[Any]:
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        lines = [line[5:] for line in response.text.splitlines() if line.startswith("data:")]
        return [json.loads(line) for line in lines if line.strip()]
    return [response.json()]


def test_no_form_of_a_secret_reaches_the_agent_from_any_field_of_any_message(hostile: RunningGateway) -> None:
    with capture_logs("mcp_gateway", "mcp") as logs:
        answers = [_modern(hostile, f"hostile.{t}", progress=p) for t in TOOLS for p in (False, True)]
        headers, opened = _legacy_session(hostile)
        answers += opened + [
            _legacy(hostile, headers, f"hostile.{t}", progress=p) for t in TOOLS for p in (False, True)
        ]
    wire = [_wire(a) for a in answers]
    assert find_leaks(SECRETS, wire) == []
    assert find_leaks(SECRETS, [logs.text]) == []
    # The upstream did send the secret: what arrived carries the gateway's marker where it was.
    assert "[REDACTED:hostile-secret]" in "".join(wire)


def test_a_log_notifications_logger_and_data_keys_reach_a_session_scrubbed(hostile: RunningGateway) -> None:
    headers, _ = _legacy_session(hostile)
    answer = _legacy(hostile, headers, "hostile.log_everywhere", progress=False)
    notes = [m for m in _messages(answer) if m.get("method") == "notifications/message"]
    assert notes, f"the upstream's log message was not relayed: {answer.text}"
    params = notes[0]["params"]
    assert params["logger"] == "[REDACTED:hostile-secret]"
    assert "[REDACTED:hostile-secret]" in params["data"]
    result = next(m for m in _messages(answer) if m.get("id") == 7)["result"]
    assert list(result["structuredContent"]) == ["[REDACTED:hostile-secret]"]
    assert "[REDACTED:hostile-secret]" in result["_meta"]


def test_a_progress_message_reaches_the_caller_scrubbed(hostile: RunningGateway) -> None:
    headers, _ = _legacy_session(hostile)
    answer = _legacy(hostile, headers, "hostile.progress_leak", progress=True)
    notes = [m for m in _messages(answer) if m.get("method") == "notifications/progress"]
    assert notes, f"the upstream's progress was not relayed: {answer.text}"
    assert notes[0]["params"]["message"] == "halfway [REDACTED:hostile-secret]"


@pytest.mark.parametrize("era", [MODERN, LEGACY])
def test_an_upstream_errors_message_and_data_reach_the_agent_scrubbed(
    hostile: RunningGateway, era: str
) -> None:
    if era == MODERN:
        answer = _modern(hostile, "hostile.error_data", progress=False)
    else:
        headers, _ = _legacy_session(hostile)
        answer = _legacy(hostile, headers, "hostile.error_data", progress=False)
    text = json.dumps(_messages(answer))
    assert SECRET not in text and json.dumps(SECRET)[1:-1] not in text
    assert find_leaks(SECRETS, [_wire(answer)]) == []
