"""An upstream that answers valid JSON the rest of the path cannot carry (a lone surrogate, nesting
hundreds deep) after it has acted: the agent gets a clear error, and the outcome is still audited."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp.shared.exceptions import MCPError

from conftest import ERAS, FIXTURES, GatewayFactory, connect, free_port, grants_policy, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

POLICY = grants_policy({"agent-a": ["garbage.*"]})


@pytest.fixture
def garbage_upstream(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    call_log = tmp_path / "garbage-calls.log"
    proc = subprocess.Popen(
        [sys.executable, str(FIXTURES / "garbage_upstream.py"), str(port)],
        env={"GARBAGE_CALL_LOG": str(call_log), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def listening() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        wait_until(listening, what="garbage upstream")
        yield f"http://127.0.0.1:{port}/mcp", call_log
    finally:
        proc.kill()
        proc.wait(timeout=10)


# The SDK's client refuses a lone surrogate as invalid JSON itself; the lean client parses it.
CASES = [
    (
        "garbage.surrogate",
        {},
        {
            True: "upstream `garbage` answered text that is not valid Unicode (a lone surrogate)",
            False: "upstream `garbage` error -32700: Failed to parse JSON response",
        },
    ),
    (
        "garbage.deep",
        {"levels": 100},
        dict.fromkeys((True, False), "upstream `garbage` answered a result nested deeper than 64 levels"),
    ),
]


@pytest.mark.parametrize("lean_calls", [True, False], ids=["lean-upstream-client", "sdk-upstream-client"])
@pytest.mark.parametrize("mode", ERAS)
@pytest.mark.parametrize(("tool", "arguments", "message"), CASES, ids=["lone-surrogate", "too-deep"])
async def test_an_unusable_answer_after_the_upstream_acted_is_a_clear_error_with_its_outcome_audited(
    make_gateway: GatewayFactory,
    garbage_upstream: tuple[str, Path],
    mode: str,
    lean_calls: bool,
    tool: str,
    arguments: dict[str, int],
    message: dict[bool, str],
) -> None:
    url, call_log = garbage_upstream
    upstream = {"transport": "http", "url": url, "allow_private_network": True, "lean_calls": lean_calls}
    gw = make_gateway(POLICY, upstreams={"garbage": upstream})
    async with connect(gw.url, gw.tokens["agent-a"], mode) as client:
        result = await client.call_tool(tool, arguments)
        fine = await client.call_tool("garbage.deep", {"levels": 10})
    assert result.is_error
    assert "".join(getattr(block, "text", "") for block in result.content).startswith(message[lean_calls])
    assert call_log.read_text().splitlines()[0] == tool.split(".")[1]  # the upstream did act
    first = next(r for r in gw.audit() if r.tool == tool and r.kind == "intent")
    records = [r for r in gw.audit() if r.call_id == first.call_id]
    assert [(r.kind, r.status) for r in records] == [("intent", ""), ("outcome", "upstream_error")]
    # A result within the limits still arrives whole.
    assert not fine.is_error and fine.structured_content is not None
    assert str(fine.structured_content).count("down") == 10


ECHO_POLICY = grants_policy({"agent-a": ["leaky.echo"]})


@pytest.mark.parametrize("fast_path", [True, False], ids=["lean-path", "sdk-path"])
@pytest.mark.parametrize("mode", ERAS)
async def test_an_unexpected_failure_after_the_upstream_acted_still_records_the_outcome(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch, mode: str, fast_path: bool
) -> None:
    # Fault injection: the step after the upstream answered fails in a way no branch expects, with a
    # text that must not reach the agent (the SDK's own session would have sent it).
    def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("injected fault")

    gw = make_gateway(ECHO_POLICY, server_options={"fast_path": fast_path})
    monkeypatch.setattr("mcp_gateway.core.result.canonical", broken)  # the answer's encoding, every path
    async with connect(gw.url, gw.tokens["agent-a"], mode) as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool("leaky.echo", {"text": "hello"})
    assert caught.value.error.message == "Internal server error"  # nothing of the fault reaches the agent
    assert gw.call_log.read_text().splitlines() == ["echo"]
    calls = [(r.kind, r.status) for r in gw.audit() if r.tool == "leaky.echo" and r.kind != "tool_pinned"]
    assert calls == [("intent", ""), ("outcome", "internal_error")]


@pytest.mark.parametrize("mode", ERAS)
async def test_an_unexpected_failure_of_a_federated_request_reaches_the_agent_as_a_generic_error(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    async def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("injected fault quoting upstream output")

    gw = make_gateway(ECHO_POLICY)
    monkeypatch.setattr("mcp_gateway.core.federation.Federation.list_resources", broken)
    monkeypatch.setattr("mcp_gateway.core.federation.Federation.read_resource", broken)
    async with connect(gw.url, gw.tokens["agent-a"], mode) as client:
        for request in (client.list_resources(), client.read_resource("file:///anything")):
            with pytest.raises(MCPError) as caught:
                await request
            assert caught.value.error.message == "Internal server error"
