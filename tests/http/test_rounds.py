"""2026-07-28 behaviour the lean path and the SDK path must share: an upstream's ``input_required``
rounds reach the agent with a state the gateway seals (and refuses when forged, replayed or moved to
another call), a 2025-11-25 agent answers the same upstream mid-call, an upstream's -32021 reaches
the agent as that error with HTTP 400, and a client that disconnects cancels its call (``cancelled``).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import mcp_types as types
import pytest

from conftest import (
    FIXTURES,
    GatewayFactory,
    RunningGateway,
    connect_with,
    free_port,
    leaky_stdio,
    wait_until,
)

pytestmark = pytest.mark.e2e

VERSION = "2026-07-28"
POLICY = """
version: 1
agents:
  agent-a:
    grants:
      - {id: conf, tool: "conf.*"}
      - {id: leaky, tool: "leaky.*"}
  agent-b:
    grants:
      - {id: conf-b, tool: "conf.*"}
"""
PATHS = [True, False]
PATH_IDS = ["lean-path", "sdk-path"]


@pytest.fixture(scope="module")
def fixture_url() -> Iterator[str]:
    """The conformance fixture over Streamable HTTP: its MRTR tools answer ``input_required``."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(FIXTURES / "conformance_server.py"), "http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        wait_until(lambda: _listening(port), what="conformance fixture")
        yield url
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _gateway(make_gateway: GatewayFactory, url: str, fast: bool, tmp_path: Path) -> RunningGateway:
    upstreams = {
        "conf": {
            "transport": "http",
            "url": url,
            "allow_private_network": True,
            "relay_requests": ["sampling", "elicitation", "roots"],
        },
        "leaky": leaky_stdio(tmp_path / "calls.log"),
    }
    return make_gateway(
        POLICY, agents=("agent-a", "agent-b"), upstreams=upstreams, server_options={"fast_path": fast}
    )


def _post(
    gw: RunningGateway, agent: str, tool: str, params: dict[str, Any] | None = None, **meta: Any
) -> httpx.Response:
    envelope = {
        "io.modelcontextprotocol/protocolVersion": VERSION,
        "io.modelcontextprotocol/clientCapabilities": meta.pop("capabilities", {}),
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
    }
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": tool, "arguments": {}, "_meta": envelope, **(params or {})},
    }
    headers = {
        "Authorization": f"Bearer {gw.tokens[agent]}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": VERSION,
        "Mcp-Method": "tools/call",
        "Mcp-Name": tool,
    }
    return httpx.post(gw.url, content=json.dumps(body), headers=headers, timeout=30)


def _message(response: httpx.Response) -> dict[str, Any]:
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        found = [
            json.loads(line[5:])
            for line in response.text.splitlines()
            if line.startswith("data:") and line[5:].strip()
        ]
        return next(m for m in found if "id" in m)
    return response.json()  # type: ignore[no-any-return]


SAMPLING = {"sampling": {}}
ANSWER = {"role": "assistant", "content": {"type": "text", "text": "42"}, "model": "agent-llm"}


@pytest.mark.parametrize("fast", PATHS, ids=PATH_IDS)
def test_an_upstreams_input_required_round_reaches_a_2026_agent_sealed_and_completes(
    make_gateway: GatewayFactory, fixture_url: str, fast: bool, tmp_path: Path
) -> None:
    gw = _gateway(make_gateway, fixture_url, fast, tmp_path)
    tool = "conf.test_input_required_result_sampling"
    first = _message(_post(gw, "agent-a", tool, capabilities=SAMPLING))["result"]
    assert first["resultType"] == "input_required"
    ((key, request),) = first["inputRequests"].items()
    assert request["method"] == "sampling/createMessage"
    state = first["requestState"]
    retry = {"inputResponses": {key: ANSWER}, "requestState": state}
    done = _message(_post(gw, "agent-a", tool, retry, capabilities=SAMPLING))["result"]
    assert done.get("resultType", "complete") == "complete" and not done.get("isError")
    # The gateway is the server toward the agent: the upstream's own stamp does not pass through.
    assert done["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "mcp-gateway"
    rounds = [(r.kind, r.status) for r in gw.audit() if r.tool == tool and r.kind != "tool_pinned"]
    assert rounds == [("intent", ""), ("outcome", "input_required"), ("intent", ""), ("outcome", "ok")]
    # Single use: the same state a second time is refused, and the upstream is not asked again.
    replay = _message(_post(gw, "agent-a", tool, retry, capabilities=SAMPLING))
    assert replay["error"] == {"code": -32602, "message": "Invalid or expired requestState"}
    assert [(r.kind, r.status) for r in gw.audit() if r.tool == tool and r.kind != "tool_pinned"][-1] == (
        "denied",
        "invalid_request_state",
    )


@pytest.mark.parametrize("fast", PATHS, ids=PATH_IDS)
def test_a_sealed_state_is_refused_when_forged_or_used_by_another_agent_or_call(
    make_gateway: GatewayFactory, fixture_url: str, fast: bool, tmp_path: Path
) -> None:
    gw = _gateway(make_gateway, fixture_url, fast, tmp_path)
    tool = "conf.test_input_required_result_sampling"
    first = _message(_post(gw, "agent-a", tool, capabilities=SAMPLING))["result"]
    ((key, _),) = first["inputRequests"].items()
    state = first["requestState"]
    attempts = [
        ("agent-b", tool, state),
        ("agent-a", "conf.test_input_required_result_elicitation", state),
        ("agent-a", tool, state[:-4] + ("AAAA" if not state.endswith("AAAA") else "BBBB")),
    ]
    for agent, target, sent in attempts:
        answer = _message(
            _post(
                gw,
                agent,
                target,
                {"inputResponses": {key: ANSWER}, "requestState": sent},
                capabilities=SAMPLING,
            )
        )
        assert answer["error"] == {"code": -32602, "message": "Invalid or expired requestState"}, (
            agent,
            target,
        )
    # None of the refused retries spent the real state.
    done = _message(
        _post(
            gw,
            "agent-a",
            tool,
            {"inputResponses": {key: ANSWER}, "requestState": state},
            capabilities=SAMPLING,
        )
    )
    assert "result" in done and not done["result"].get("isError")


@pytest.mark.parametrize("fast", PATHS, ids=PATH_IDS)
def test_input_the_agent_did_not_declare_it_can_give_is_minus_32021_with_http_400(
    make_gateway: GatewayFactory, fixture_url: str, fast: bool, tmp_path: Path
) -> None:
    gw = _gateway(make_gateway, fixture_url, fast, tmp_path)
    response = _post(gw, "agent-a", "conf.test_input_required_result_sampling", capabilities={})
    assert response.status_code == 400
    error = _message(response)["error"]
    assert error["code"] == types.MISSING_REQUIRED_CLIENT_CAPABILITY
    assert "sampling" in json.dumps(error.get("data"))


async def _sample(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    return types.CreateMessageResult(
        role="assistant", content=types.TextContent(type="text", text="42"), model="m"
    )


@pytest.mark.anyio
async def test_a_2025_agent_answers_the_same_upstreams_input_requests_mid_call(
    make_gateway: GatewayFactory, fixture_url: str, tmp_path: Path
) -> None:
    gw = _gateway(make_gateway, fixture_url, True, tmp_path)
    async with connect_with(gw.url, gw.tokens["agent-a"], "legacy", sampling_callback=_sample) as client:
        result = await client.call_tool("conf.test_input_required_result_sampling", {})
    assert not result.is_error
    relayed = [(r.kind, r.status) for r in gw.audit() if r.tool == "conf:sampling/createMessage"]
    assert relayed == [("intent", ""), ("outcome", "ok")]


@pytest.mark.parametrize("fast", PATHS, ids=PATH_IDS)
def test_a_2026_client_that_disconnects_cancels_its_call_and_the_outcome_says_cancelled(
    make_gateway: GatewayFactory, fixture_url: str, fast: bool, tmp_path: Path
) -> None:
    gw = _gateway(make_gateway, fixture_url, fast, tmp_path)
    calls = tmp_path / "calls.log"
    envelope = {
        "io.modelcontextprotocol/protocolVersion": VERSION,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
    }
    params = {"name": "leaky.sleep", "arguments": {"seconds": 60}, "_meta": envelope}
    body = json.dumps({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": params}).encode()
    port = int(gw.base.rsplit(":", 1)[1])
    head = (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {gw.tokens['agent-a']}\r\n"
        "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        f"MCP-Protocol-Version: {VERSION}\r\nMcp-Method: tools/call\r\nMcp-Name: leaky.sleep\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head + body)
        wait_until(lambda: calls.exists() and "sleep" in calls.read_text(), 20, "the upstream call")
    outcomes = lambda: [r.status for r in gw.audit() if r.tool == "leaky.sleep" and r.kind == "outcome"]  # noqa: E731
    wait_until(lambda: outcomes() != [], 20, "the call's outcome")
    assert outcomes() == ["cancelled"]


@pytest.mark.parametrize("fast", PATHS, ids=PATH_IDS)
def test_an_upstream_asking_a_2026_agent_mid_call_is_refused_and_the_refusal_audited(
    make_gateway: GatewayFactory, fast: bool, tmp_path: Path
) -> None:
    # A 2025-11-25 upstream samples in the middle of a call; a 2026-07-28 agent cannot be asked then.
    legacy = {
        "transport": "stdio",
        "command": sys.executable,
        "args": [str(FIXTURES / "conformance_server.py"), "stdio"],
        "relay_requests": ["sampling"],
        "protocol": "legacy",
    }
    gw = make_gateway(POLICY, upstreams={"conf": legacy}, server_options={"fast_path": fast})
    answer = _message(
        _post(gw, "agent-a", "conf.test_sampling", {"arguments": {"prompt": "hi"}}, capabilities=SAMPLING)
    )
    assert answer["result"]["isError"] is True
    relayed = [(r.kind, r.status) for r in gw.audit() if r.tool == "conf:sampling/createMessage"]
    assert relayed == [("denied", "client_cannot_answer")]
