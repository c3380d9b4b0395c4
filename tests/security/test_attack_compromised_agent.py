"""Attack: a compromised agent with a narrow grant probes for everything it was not given.

It calls every tool the upstream has outside its grant (listed from the upstream itself, not from the
gateway), tries name tricks on the one it has, pushes each argument constraint just past its boundary,
replays another agent's session id, and presents unknown and garbage tokens. Every attempt is refused
and audited with the right agent and status, and the upstream's call log shows that none reached it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError

from conftest import ERAS, LEAKY, GatewayFactory, RunningGateway, connect

pytestmark = pytest.mark.e2e

POLICY = """\
version: 1
agents:
  narrow:
    grants:
      - id: narrow-echo
        tool: leaky.echo
        args:
          text: {in: [alpha, beta]}
          tag: {not_in: [prod]}
          ticket: {pattern: "T-[0-9]{4}", required: true}
          n: {min: 1, max: 100}
          note: {max_length: 8}
          fields: {subset_of: [Name, Amount]}
  wide:
    grants:
      - id: wide-all
        tool: "leaky.*"
"""

# A call the grant allows, at every boundary at once; each case below changes one argument.
AT_THE_BOUNDARY: dict[str, Any] = {
    "text": "beta",
    "tag": "staging",
    "ticket": "T-9999",
    "n": 100,
    "note": "12345678",
    "fields": ["Name", "Amount"],
}

JUST_PAST: list[tuple[str, Any]] = [
    ("text", "gamma"),  # in
    ("text", "Beta"),
    ("text", "beta "),
    ("text", ["beta"]),
    ("tag", "prod"),  # not_in
    ("ticket", "T-12345"),  # pattern (a full match)
    ("ticket", "T-123"),
    ("ticket", "T-1234\n"),
    ("ticket", "xT-1234"),
    ("ticket", 1234),
    ("ticket", None),
    ("n", 0),  # min
    ("n", 0.999),
    ("n", 101),  # max
    ("n", 100.001),
    ("n", "50"),
    ("n", True),
    ("n", [50]),
    ("note", "123456789"),  # max_length
    ("fields", ["Name", "Password"]),  # subset_of
    ("fields", ["Name", "name"]),
    ("fields", "Name"),
]

# Ways to name a tool the agent was not granted, or to smuggle one past the grant it has.
NAME_TRICKS = [
    "leaky.ECHO",
    "LEAKY.echo",
    "leaky.echo ",
    " leaky.echo",
    "leaky.echo\x00",
    "leaky..echo",
    "leaky/echo",
    "leaky.*",
    "leaky.leak_*",
    "leaky.echo\nleaky.leak_env",
    "leaky.leak_env#leaky.echo",
    "echo",
    "other.echo",
    "",
]


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


async def upstream_tool_names() -> list[str]:
    """The upstream's own tool list, asked of it directly (a gateway could hide tools from us)."""
    async with Client(StdioServerParameters(command=sys.executable, args=[str(LEAKY), "stdio"])) as up:
        return sorted(tool.name for tool in (await up.list_tools()).tools)


def _post(gw: RunningGateway, token: str | None, body: dict[str, Any], **headers: str) -> httpx.Response:
    sent = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json", **headers}
    if token is not None:
        sent["Authorization"] = token
    return httpx.post(gw.url, json=body, headers=sent, timeout=10)


def _initialize(gw: RunningGateway, agent: str) -> str:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": agent, "version": "1"},
        },
    }
    opened = _post(gw, f"Bearer {gw.tokens[agent]}", body)
    assert opened.status_code == 200, opened.text
    session = opened.headers["mcp-session-id"]
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    legacy = {"Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
    assert _post(gw, f"Bearer {gw.tokens[agent]}", initialized, **legacy).status_code == 202
    return session


@pytest.mark.anyio
async def test_every_upstream_tool_outside_the_grant_and_every_name_trick_is_refused_and_audited(
    make_gateway: GatewayFactory,
) -> None:
    upstream_tools = await upstream_tool_names()
    assert "echo" in upstream_tools and len(upstream_tools) >= 5
    ungranted = [f"leaky.{name}" for name in upstream_tools if name != "echo"]
    gw = make_gateway(POLICY, agents=("narrow", "wide"), watch_policy=False)
    attempts = [*ungranted, *NAME_TRICKS]
    for mode in ERAS:
        async with connect(gw.url, gw.tokens["narrow"], mode) as client:
            assert [t.name for t in (await client.list_tools()).tools] == ["leaky.echo"]
            for tool in attempts:
                with pytest.raises(MCPError) as refused:
                    await client.call_tool(tool, {"text": "beta", "ticket": "T-0001", "var": "HOME"})
                assert refused.value.code == -32602, tool
                # The refusal names no tool but the one asked for.
                others = [t for t in ungranted if t != tool and t not in tool]
                assert not any(other in refused.value.message for other in others), refused.value.message
    assert calls(gw.call_log) == []
    denied = [r for r in gw.audit() if r.kind == "denied"]
    assert len(denied) == len(attempts) * len(ERAS)
    assert all(r.agent == "narrow" and r.status == "not_granted" and r.decision == "deny" for r in denied)
    assert [r.tool for r in denied[: len(attempts)]] == [t.replace("\x00", "\ufffd") for t in attempts]
    assert not [r for r in gw.audit() if r.kind in ("intent", "outcome")]
    # The same tools are there for an agent granted them: the refusals were the grant's doing.
    async with connect(gw.url, gw.tokens["wide"]) as client:
        assert sorted(t.name for t in (await client.list_tools()).tools) == sorted(["leaky.echo", *ungranted])


@pytest.mark.anyio
async def test_each_constraint_just_past_its_boundary_is_refused_and_audited(
    make_gateway: GatewayFactory,
) -> None:
    gw = make_gateway(POLICY, agents=("narrow",), watch_policy=False)
    async with connect(gw.url, gw.tokens["narrow"]) as client:
        allowed = await client.call_tool("leaky.echo", AT_THE_BOUNDARY)
        assert not allowed.is_error, allowed
        assert calls(gw.call_log) == ["echo"]
        # `ticket` absent (required), then each argument set just past its boundary.
        cases = [("ticket", {k: v for k, v in AT_THE_BOUNDARY.items() if k != "ticket"})]
        cases += [(arg, {**AT_THE_BOUNDARY, arg: value}) for arg, value in JUST_PAST]
        for _, args in cases:
            result = await client.call_tool("leaky.echo", args)
            text = "".join(getattr(block, "text", "") for block in result.content)
            assert result.is_error and "denied by policy" in text, (args, text)
    assert calls(gw.call_log) == ["echo"]  # only the allowed call reached the upstream
    denied = [r for r in gw.audit() if r.kind == "denied"]
    assert len(denied) == len(cases)
    for record, (arg, _) in zip(denied, cases, strict=True):
        assert (record.agent, record.tool, record.status, record.decision) == (
            "narrow",
            "leaky.echo",
            "denied",
            "deny",
        )
        assert record.detail["rule_ids"] == ["narrow-echo"]
        # The reason names the argument that crossed the line.
        assert any(f"`{arg}`" in reason for reason in record.detail["reasons"]), record.detail


def test_another_agents_session_id_is_refused_and_the_session_stays_its_owners(
    make_gateway: GatewayFactory,
) -> None:
    gw = make_gateway(POLICY, agents=("narrow", "wide"), watch_policy=False)
    session = _initialize(gw, "wide")
    legacy = {"Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
    call = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "leaky.leak_env", "arguments": {"var": "HOME"}},
    }
    before = len(gw.audit())
    # narrow opens nothing of its own: it replays wide's session id with its own valid token.
    assert _post(gw, f"Bearer {gw.tokens['narrow']}", call, **legacy).status_code == 404
    listing = {"jsonrpc": "2.0", "id": 3, "method": "tools/list"}
    assert _post(gw, f"Bearer {gw.tokens['narrow']}", listing, **legacy).status_code == 404
    # Without a valid token of its own, the replay fails authentication first, and that is audited.
    assert _post(gw, None, call, **legacy).status_code == 401
    forged = "Bearer mgw_" + gw.tokens["wide"].split("_")[1] + "_" + "A" * 43
    assert _post(gw, forged, call, **legacy).status_code == 401
    assert calls(gw.call_log) == []
    failures = [r for r in gw.audit()[before:] if r.kind == "auth_failure"]
    replay = "session not found for this credential"
    assert [f.detail["reason"] for f in failures] == [replay, replay, "missing bearer token", "unknown token"]
    assert [f.agent for f in failures[:2]] == ["narrow", "narrow"]
    assert failures[3].detail["token_id"] == gw.tokens["wide"].split("_")[1]
    assert not [r for r in gw.audit() if r.kind in ("intent", "outcome")]
    # The owner's session still works, and its call is the first to reach the upstream.
    own = _post(gw, f"Bearer {gw.tokens['wide']}", call, **legacy)
    assert own.status_code == 200 and "sha256" in own.text
    assert calls(gw.call_log) == ["leak_env"]


def _raw_call(mode: str) -> tuple[dict[str, Any], dict[str, str]]:
    """A raw ``tools/call`` body and headers in the protocol era ``mode``."""
    body: dict[str, Any] = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "leaky.echo", "arguments": dict(AT_THE_BOUNDARY)},
    }
    if mode == "legacy":
        return body, {}
    body["params"]["_meta"] = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "attacker", "version": "1"},
    }
    return body, {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "leaky.echo"}


def test_unknown_and_garbage_tokens_are_refused_with_401_and_each_is_audited(
    make_gateway: GatewayFactory,
) -> None:
    # Above the flood threshold failures are counted, not recorded one by one (test_attack_auth_flood).
    gw = make_gateway(POLICY, agents=("narrow",), watch_policy=False, audit={"auth_failure_threshold": 100})
    real = gw.tokens["narrow"]
    _, token_id, secret = real.split("_", 2)
    flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    garbage: list[tuple[str | None, str]] = [
        (None, "missing bearer token"),
        ("", "missing bearer token"),
        ("Bearer", "missing bearer token"),
        ("bearer", "missing bearer token"),
        (f"Basic {real}", "missing bearer token"),
        (f"Token {real}", "missing bearer token"),
        (real, "missing bearer token"),
        (f"Bearer mgw_{token_id}_{flipped}", "unknown token"),
        (f"Bearer mgw_{'z' * 12}_{secret}", "unknown token"),
        (f"Bearer {real}x", "malformed token"),
        (f"Bearer {real[:-1]}", "malformed token"),
        (f"Bearer {real.upper()}", "malformed token"),
        ("Bearer mgw_../../etc/passwd", "malformed token"),
        ("Bearer " + "A" * 8000, "malformed token"),
        ("Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJuYXJyb3cifQ.", "malformed token"),
        ("Bearer ' OR '1'='1", "malformed token"),
    ]
    for mode in ERAS:
        body, headers = _raw_call(mode)
        for authorization, _ in garbage:
            response = _post(gw, authorization, body, **headers)
            assert response.status_code == 401, (mode, authorization, response.status_code)
            assert response.headers["www-authenticate"].startswith("Bearer ")
    assert calls(gw.call_log) == []
    failures = [r for r in gw.audit() if r.kind == "auth_failure"]
    expected = [("unauthenticated", "deny", "", reason) for _, reason in garbage] * len(ERAS)
    assert [(r.status, r.decision, r.agent, r.detail["reason"]) for r in failures] == expected
    assert failures[7].detail["token_id"] == token_id
    # A presented secret, right or wrong, is never written down; only the public token id may be.
    stored = json.dumps([r.detail for r in failures])
    assert secret not in stored and flipped not in stored
    # The real token, sent properly, works in both eras: the refusals were about the tokens.
    for mode in ERAS:
        body, headers = _raw_call(mode)
        if mode == "legacy":
            headers = {"Mcp-Session-Id": _initialize(gw, "narrow"), "MCP-Protocol-Version": "2025-11-25"}
        assert _post(gw, f"Bearer {real}", body, **headers).status_code == 200
    assert calls(gw.call_log) == ["echo", "echo"]


def test_a_replayed_session_id_is_audited_against_the_agent_that_replayed_it(
    make_gateway: GatewayFactory,
) -> None:
    gw = make_gateway(POLICY, agents=("narrow", "wide"), watch_policy=False)
    session = _initialize(gw, "wide")
    legacy = {"Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    before = len(gw.audit())
    assert _post(gw, f"Bearer {gw.tokens['narrow']}", listing, **legacy).status_code == 404
    refusals = [r for r in gw.audit()[before:] if r.decision == "deny"]
    assert [r.agent for r in refusals] == ["narrow"]


@pytest.mark.parametrize(
    ("trusted_proxies", "recorded"),
    [((), "127.0.0.1"), (("127.0.0.1",), "203.0.113.9"), (("10.0.0.0/8",), "127.0.0.1")],
    ids=["no-proxy-trusted", "loopback-proxy-trusted", "another-network-trusted"],
)
def test_a_forged_x_forwarded_for_cannot_name_the_client_an_audit_record_carries(
    make_gateway: GatewayFactory, trusted_proxies: tuple[str, ...], recorded: str
) -> None:
    # Any process on the gateway's host connects from loopback; uvicorn believes X-Forwarded-For from
    # there by default. Only a configured proxy may name the client.
    gw = make_gateway(
        POLICY,
        agents=("narrow",),
        watch_policy=False,
        server_options={"trusted_proxies": list(trusted_proxies)},
    )
    body, headers = _raw_call("legacy")
    response = _post(gw, "Bearer mgw_forged", body, **headers, **{"X-Forwarded-For": "203.0.113.9"})
    assert response.status_code == 401
    [failure] = [r for r in gw.audit() if r.kind == "auth_failure"]
    assert failure.detail["client"] == recorded
