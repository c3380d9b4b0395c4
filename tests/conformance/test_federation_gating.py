"""Resources, prompts and completions through the gateway: deny by default, audited, progress relayed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from conftest import GatewayFactory, connect

FIXTURE = Path(__file__).parents[1] / "fixtures" / "conformance_server.py"
POLICY = """
version: 1
agents:
  agent-a:
    grants:
      - id: text
        tool: "resource:conf:test://static-text"
      - id: templates
        tool: "resource:conf:test://template/*"
      - id: prompt
        tool: prompt:conf.test_prompt_with_arguments
      - id: progress
        tool: conf.test_tool_with_progress
  agent-b:
    grants: []
"""


@pytest.fixture
def gw(make_gateway: GatewayFactory):  # type: ignore[no-untyped-def]
    upstream = {"transport": "stdio", "command": sys.executable, "args": [str(FIXTURE), "stdio"]}
    return make_gateway(
        POLICY, agents=("agent-a", "agent-b"), upstreams={"conf": upstream}, watch_policy=False
    )


@pytest.mark.e2e
@pytest.mark.anyio
async def test_only_granted_resources_and_prompts_are_listed(gw) -> None:  # type: ignore[no-untyped-def]
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        resources = await client.list_resources()
        templates = await client.list_resource_templates()
        prompts = await client.list_prompts()
    assert [r.uri for r in resources.resources] == ["test://static-text"]
    assert [t.uri_template for t in templates.resource_templates] == ["test://template/{id}/data"]
    assert [p.name for p in prompts.prompts] == ["conf.test_prompt_with_arguments"]


@pytest.mark.e2e
@pytest.mark.anyio
async def test_granted_resource_and_prompt_are_served_and_audited(gw) -> None:  # type: ignore[no-untyped-def]
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        text = await client.read_resource("test://static-text")
        templated = await client.read_resource("test://template/7/data")
        prompt = await client.get_prompt("conf.test_prompt_with_arguments", {"arg1": "a", "arg2": "b"})
    assert text.contents[0].text == "This is the content of the static text resource."  # type: ignore[union-attr]
    assert '"id":"7"' in templated.contents[0].text  # type: ignore[union-attr]
    assert "arg1='a'" in prompt.messages[0].content.text  # type: ignore[union-attr]
    kinds = [(r.kind, r.tool) for r in gw.audit() if r.tool.startswith(("resource:", "prompt:"))]
    assert ("intent", "resource:conf:test://static-text") in kinds
    assert ("outcome", "resource:conf:test://static-text") in kinds
    assert ("intent", "prompt:conf.test_prompt_with_arguments") in kinds


@pytest.mark.e2e
@pytest.mark.anyio
@pytest.mark.parametrize("uri", ["test://static-binary", "test://no-such-thing"])
async def test_ungranted_or_unknown_resource_is_refused_alike_and_audited(gw, uri: str) -> None:  # type: ignore[no-untyped-def]
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        with pytest.raises(MCPError) as refused:
            await client.read_resource(uri)
    assert refused.value.code == types.INVALID_PARAMS
    assert refused.value.message == f"resource `{uri}` is not available"
    denied = [r for r in gw.audit() if r.kind == "denied"]
    assert denied and denied[-1].tool.endswith(uri) and denied[-1].agent == "agent-a"


@pytest.mark.e2e
@pytest.mark.anyio
async def test_agent_without_grants_sees_no_prompt_and_is_refused(gw) -> None:  # type: ignore[no-untyped-def]
    async with connect(gw.url, gw.tokens["agent-b"]) as client:
        assert (await client.list_prompts()).prompts == []
        assert (await client.list_resources()).resources == []
        with pytest.raises(MCPError) as refused:
            await client.get_prompt("conf.test_prompt_with_arguments", {"arg1": "a", "arg2": "b"})
        with pytest.raises(MCPError):
            await client.complete(
                types.PromptReference(name="conf.test_prompt_with_arguments"), {"name": "arg1", "value": "pa"}
            )
    assert refused.value.message == "prompt `conf.test_prompt_with_arguments` is not available"
    assert any(r.kind == "denied" and r.tool == "prompt:conf.test_prompt_with_arguments" for r in gw.audit())
    denied_completion = [
        r for r in gw.audit() if r.tool == "completion:prompt:conf.test_prompt_with_arguments"
    ]
    assert [r.kind for r in denied_completion] == ["denied"]


@pytest.mark.e2e
@pytest.mark.anyio
async def test_completion_is_forwarded_for_a_granted_prompt(gw) -> None:  # type: ignore[no-untyped-def]
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        result = await client.complete(
            types.PromptReference(name="conf.test_prompt_with_arguments"), {"name": "arg1", "value": "par"}
        )
    assert result.completion.values == ["paris", "park", "party"]
    records = [r for r in gw.audit() if r.tool == "completion:prompt:conf.test_prompt_with_arguments"]
    assert [r.kind for r in records] == ["intent", "outcome"]
    assert records[0].args == {"name": "arg1", "value": "par"}


@pytest.mark.e2e
@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_upstream_progress_is_relayed_to_the_calling_client(gw, mode: str) -> None:  # type: ignore[no-untyped-def]
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with connect(gw.url, gw.tokens["agent-a"], mode=mode) as client:
        with anyio.fail_after(20):
            result = await client.call_tool("conf.test_tool_with_progress", {}, progress_callback=on_progress)
    assert not result.is_error
    assert seen == [0, 50, 100]


@pytest.mark.e2e
@pytest.mark.anyio
@pytest.mark.parametrize("want_progress", [True, False])
async def test_a_stateless_http_upstream_relays_progress_when_asked_and_takes_the_lean_path_otherwise(
    make_gateway: GatewayFactory, tmp_path: Path, want_progress: bool
) -> None:
    import subprocess

    from conftest import free_port, wait_until

    port = free_port()
    log = (tmp_path / "upstream.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, str(FIXTURE), "http", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_until(lambda: _listening(port), what="http conformance upstream")
        upstream = {"transport": "http", "url": f"http://127.0.0.1:{port}/mcp", "allow_private_network": True}
        gw = make_gateway(POLICY, agents=("agent-a",), upstreams={"conf": upstream}, watch_policy=False)
        connection = gw.runtime.gateway.upstreams["conf"]
        fast = connection._fast
        assert fast is not None  # the SDK client negotiated the stateless era
        lean: list[str] = []
        original = fast.call

        async def counting(tool: str, arguments: Any, **round_trip: Any) -> Any:
            lean.append(tool)
            return await original(tool, arguments, **round_trip)

        fast.call = counting  # type: ignore[method-assign]
        seen: list[float] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append(progress)

        async with connect(gw.url, gw.tokens["agent-a"], mode="auto") as client:
            with anyio.fail_after(20):
                result = await client.call_tool(
                    "conf.test_tool_with_progress",
                    {},
                    progress_callback=on_progress if want_progress else None,
                )
        assert not result.is_error
        assert seen == ([0, 50, 100] if want_progress else [])
        # Progress needs the SDK client's stream; without it the call is one pooled POST.
        assert lean == ([] if want_progress else ["test_tool_with_progress"])
        outcome = [r for r in gw.audit() if r.kind == "outcome"][-1]
        assert outcome.status == "ok"
        # Shutting down closes the lean client too, promptly (it once left the loop spinning).
        with anyio.fail_after(15):
            await anyio.to_thread.run_sync(gw.stop)
        assert not gw.thread.is_alive()
    finally:
        proc.kill()
        proc.wait(timeout=10)
        log.close()


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


RUNBOOK_POLICY = """
version: 1
runbooks:
  nightly_revenue: "check raw.orders first; rerun failed_only"
  payroll: "never rerun without finance"
agents:
  agent-a:
    grants:
      - {id: runbook, tool: "resource:gateway:runbook://nightly_revenue"}
"""


@pytest.mark.e2e
@pytest.mark.anyio
async def test_runbooks_from_policy_are_resources_only_for_agents_granted_them(
    make_gateway: GatewayFactory,
) -> None:
    gw = make_gateway(RUNBOOK_POLICY, agents=("agent-a",), upstreams={}, watch_policy=False)
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        listed = [str(r.uri) for r in (await client.list_resources()).resources]
        read = await client.read_resource("runbook://nightly_revenue")
        with pytest.raises(MCPError) as refused:
            await client.read_resource("runbook://payroll")
    assert listed == ["runbook://nightly_revenue"]
    assert read.contents[0].text == "check raw.orders first; rerun failed_only"  # type: ignore[union-attr]
    assert "payroll" in str(refused.value) and "finance" not in str(refused.value)
    records = gw.audit()
    assert [r.kind for r in records if r.tool == "resource:gateway:runbook://nightly_revenue"] == [
        "intent",
        "outcome",
    ]
    assert [r.kind for r in records if r.tool == "resource:gateway:runbook://payroll"] == ["denied"]


@pytest.mark.e2e
@pytest.mark.anyio
async def test_resource_and_prompt_limits_refuse_oversize_answers_and_arguments(
    make_gateway: GatewayFactory,
) -> None:
    upstream = {"transport": "stdio", "command": sys.executable, "args": [str(FIXTURE), "stdio"]}
    # The static text resource answers under 300 bytes of JSON; the prompt echoes its arguments, so
    # with a 140-byte argument it answers over 300: a 300-byte answer limit passes the one and refuses
    # the other. 240 bytes of arguments (the prompt's name counts) refuse a 300-byte argument before
    # the upstream is asked.
    gw = make_gateway(
        POLICY,
        upstreams={"conf": upstream},
        watch_policy=False,
        config={"limits": {"max_result_bytes": 300, "max_argument_bytes": 240}},
    )
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        text = await client.read_resource("test://static-text")
        with pytest.raises(MCPError, match="above the limit of 300"):
            await client.get_prompt("conf.test_prompt_with_arguments", {"arg1": "a" * 140, "arg2": "b"})
        with pytest.raises(MCPError, match="above the limit of 240"):
            await client.get_prompt("conf.test_prompt_with_arguments", {"arg1": "a" * 300, "arg2": "b"})
    assert text.contents
    calls = [r for r in gw.audit() if r.kind in ("intent", "outcome", "denied")]  # not the pin records
    trail = [(r.kind, r.status) for r in calls if r.tool.startswith(("resource:", "prompt:"))]
    assert trail == [
        ("intent", ""),
        ("outcome", "ok"),
        ("intent", ""),
        ("outcome", "too_large"),
        ("denied", "limit_exceeded"),
    ]
    refused = [r for r in gw.audit() if r.kind == "denied" and r.tool.startswith("prompt:")]
    assert "a" * 300 not in str(refused[0].args)
