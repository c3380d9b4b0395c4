"""Built-in tools, human approval and quotas through the real gateway, driven by the MCP SDK client."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from mcp.shared.exceptions import MCPError
from pydantic import Field

from conftest import GatewayFactory, RunningGateway, connect
from mcp_gateway.tools.base import BuiltinTool, NeedsApproval, ToolContext, ToolFailure, ToolInput, Toolset

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

RUNS: list[dict[str, Any]] = []


class SetInput(ToolInput):
    key: str = Field(max_length=40)
    value: int


async def _set(ctx: ToolContext, args: SetInput) -> dict[str, Any]:
    before = 10
    for condition in ctx.approval_conditions:
        factor = condition.get("change_factor")
        if factor and not ctx.approved and args.value > before * factor["over"]:
            raise NeedsApproval(f"`{args.key}` changes by more than {factor['over']}x", {"before": before})
    if args.value < 0:
        raise ToolFailure(f"`{args.key}` cannot be negative", {"refused_value": args.value})
    RUNS.append(
        {"agent": ctx.principal.agent, "key": args.key, "value": args.value, "approved": ctx.approved}
    )
    ctx.audit_detail.update({"before": before, "after": args.value})
    return {"key": args.key, "value": args.value, "audit_id": ctx.call_id}


def demo_toolset() -> Toolset:
    tool = BuiltinTool("demo.set_value", "set a value", SetInput, _set, idempotent=True)
    return Toolset("demo", {tool.name: tool})


POLICY = """
version: 1
agents:
  agent-a:
    rate: ["5/hour"]
    grants:
      - id: a-set
        tool: demo.set_value
        args: {key: {pattern: "k.*"}}
        approval:
          when:
            - args: {key: {in: [kprod]}}
            - change_factor: {field: value, over: 5}
        rate: ["3/hour"]
  agent-b:
    grants:
      - {id: b-set, tool: demo.set_value}
"""


@pytest.fixture(autouse=True)
def _clear_runs() -> None:
    RUNS.clear()


def _start(make_gateway: GatewayFactory, name: str = "gw") -> RunningGateway:
    return make_gateway(
        POLICY, agents=("agent-a", "agent-b"), upstreams={}, toolsets=[demo_toolset()], name=name
    )


async def _call(gw: RunningGateway, agent: str, args: dict[str, Any]) -> Any:
    async with connect(gw.url, gw.tokens[agent]) as client:
        return await client.call_tool("demo.set_value", args)


def _approve(gw: RunningGateway, approval_id: str, approve: bool = True) -> None:
    store = gw.runtime.approvals
    assert store is not None
    store.decide(approval_id, approve=approve, approver="alice")


async def test_a_builtin_tool_runs_and_its_facts_reach_the_outcome_record(
    make_gateway: GatewayFactory,
) -> None:
    gw = _start(make_gateway)
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        listed = [t.name for t in (await client.list_tools()).tools]
        result = await client.call_tool("demo.set_value", {"key": "k1", "value": 20})
    assert listed == ["demo.set_value"]
    assert not result.is_error
    assert result.structured_content is not None and result.structured_content["value"] == 20
    outcome = [r for r in gw.audit() if r.kind == "outcome"][-1]
    assert outcome.status == "ok"
    assert outcome.detail["facts"] == {"before": 10, "after": 20}
    assert RUNS == [{"agent": "agent-a", "key": "k1", "value": 20, "approved": False}]


async def test_invalid_arguments_are_refused_before_the_tool_runs_and_audited(
    make_gateway: GatewayFactory,
) -> None:
    gw = _start(make_gateway)
    result = await _call(gw, "agent-a", {"key": "k1", "value": "lots", "extra": 1})
    assert result.is_error
    text = result.content[0].text
    assert "`value`" in text and "`extra`" in text
    denied = [r for r in gw.audit() if r.kind == "denied"][-1]
    assert denied.status == "invalid_arguments"
    assert not any(r.kind == "intent" for r in gw.audit())
    assert RUNS == []


async def test_a_tool_failure_is_a_tool_error_with_its_facts_audited(make_gateway: GatewayFactory) -> None:
    gw = _start(make_gateway)
    result = await _call(gw, "agent-a", {"key": "k1", "value": -1})
    assert result.is_error and "cannot be negative" in result.content[0].text
    outcome = [r for r in gw.audit() if r.kind == "outcome"][-1]
    assert outcome.status == "error" and outcome.detail["facts"] == {"refused_value": -1}


async def test_an_argument_condition_parks_the_call_until_a_human_approves_it_once(
    make_gateway: GatewayFactory,
) -> None:
    gw = _start(make_gateway)
    args = {"key": "kprod", "value": 11}
    pending = await _call(gw, "agent-a", args)
    assert pending.is_error  # not run: an agent must not read it as done
    body = pending.structured_content
    assert body["status"] == "pending_approval" and body["approval_id"].startswith("apr_")
    assert RUNS == []
    approval_id = body["approval_id"]

    early = await _call(gw, "agent-a", {**args, "approval_id": approval_id})
    assert early.is_error and RUNS == []

    _approve(gw, approval_id)
    done = await _call(gw, "agent-a", {**args, "approval_id": approval_id})
    assert not done.is_error
    assert RUNS == [{"agent": "agent-a", "key": "kprod", "value": 11, "approved": True}]

    replay = await _call(gw, "agent-a", {**args, "approval_id": approval_id})
    assert replay.is_error and len(RUNS) == 1
    kinds = [(r.kind, r.status) for r in gw.audit()]
    assert ("approval_requested", "pending_approval") in kinds
    assert ("denied", "approval_pending") in kinds
    assert ("denied", "approval_used") in kinds
    intent = [r for r in gw.audit() if r.kind == "intent"][-1]
    assert intent.detail["approval_id"] == approval_id


@pytest.mark.parametrize(
    ("agent", "args", "kind"),
    [
        ("agent-a", {"key": "kprod", "value": 12}, "approval_args_changed"),
        ("agent-b", {"key": "kprod", "value": 11}, "approval_other_agent"),
    ],
)
async def test_an_approval_cannot_be_used_for_other_arguments_or_by_another_agent(
    make_gateway: GatewayFactory, agent: str, args: dict[str, Any], kind: str
) -> None:
    gw = _start(make_gateway)
    pending = await _call(gw, "agent-a", {"key": "kprod", "value": 11})
    approval_id = pending.structured_content["approval_id"]
    _approve(gw, approval_id)
    misuse = await _call(gw, agent, {**args, "approval_id": approval_id})
    assert misuse.is_error
    assert RUNS == []
    assert [r.status for r in gw.audit() if r.kind == "denied"][-1] == kind


async def test_a_denied_approval_never_runs_the_call(make_gateway: GatewayFactory) -> None:
    gw = _start(make_gateway)
    pending = await _call(gw, "agent-a", {"key": "kprod", "value": 11})
    approval_id = pending.structured_content["approval_id"]
    _approve(gw, approval_id, approve=False)
    refused = await _call(gw, "agent-a", {"key": "kprod", "value": 11, "approval_id": approval_id})
    assert refused.is_error and RUNS == []


async def test_a_tool_evaluated_condition_asks_after_reading_state_and_runs_once_approved(
    make_gateway: GatewayFactory,
) -> None:
    gw = _start(make_gateway)
    args = {"key": "k1", "value": 100}  # 10x the current value: over the 5x change factor
    pending = await _call(gw, "agent-a", args)
    body = pending.structured_content
    assert body["status"] == "pending_approval"
    assert "more than 5" in body["reasons"][0]
    assert RUNS == []
    assert [r.status for r in gw.audit() if r.kind == "outcome"] == ["pending_approval"]
    _approve(gw, body["approval_id"])
    done = await _call(gw, "agent-a", {**args, "approval_id": body["approval_id"]})
    assert not done.is_error and RUNS[-1]["approved"] is True


async def test_a_grant_quota_refuses_with_a_retry_time_and_survives_a_restart(
    make_gateway: GatewayFactory,
) -> None:
    gw = _start(make_gateway)
    for value in (11, 12, 13):
        assert not (await _call(gw, "agent-a", {"key": "k1", "value": value})).is_error
    over = await _call(gw, "agent-a", {"key": "k1", "value": 14})
    assert over.is_error
    assert "3/hour" in over.content[0].text and "retry in" in over.content[0].text
    assert [r.status for r in gw.audit() if r.kind == "denied"][-1] == "quota_exceeded"
    gw.stop()

    again = _start(make_gateway)
    still = await _call(again, "agent-a", {"key": "k1", "value": 15})
    assert still.is_error and "3/hour" in still.content[0].text
    assert len(RUNS) == 3
    # Another agent's calls are not counted against agent-a's quota.
    assert not (await _call(again, "agent-b", {"key": "k1", "value": 16})).is_error


async def test_an_ungranted_builtin_tool_is_invisible_and_refused(make_gateway: GatewayFactory) -> None:
    gw = make_gateway(
        "version: 1\nagents: {agent-a: {grants: []}}\n", upstreams={}, toolsets=[demo_toolset()]
    )
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        assert (await client.list_tools()).tools == []
        with pytest.raises(MCPError):
            await client.call_tool("demo.set_value", {"key": "k1", "value": 1})
    assert RUNS == []


async def test_an_approver_approves_over_the_admin_api_and_an_agent_token_cannot(
    make_gateway: GatewayFactory,
) -> None:
    gw = _start(make_gateway)
    assert gw.runtime.admins is not None
    _, admin_token = gw.runtime.admins.create("alice")
    args = {"key": "kprod", "value": 11}
    approval_id = (await _call(gw, "agent-a", args)).structured_content["approval_id"]
    async with httpx.AsyncClient(base_url=gw.base, timeout=10) as http:
        forged = await http.post(
            f"/admin/approvals/{approval_id}/approve",
            headers={"Authorization": f"Bearer {gw.tokens['agent-a']}"},
            json={"note": "self-approval"},
        )
        assert forged.status_code == 401
        listed = await http.get(
            "/admin/approvals",
            params={"status": "pending"},
            headers={"Authorization": f"Bearer {admin_token}"},
        )
        assert [a["id"] for a in listed.json()["approvals"]] == [approval_id]
        approved = await http.post(
            f"/admin/approvals/{approval_id}/approve",
            headers={"Authorization": f"Bearer {admin_token}"},
            json={"note": "checked with the owner"},
        )
        assert approved.status_code == 200
    assert not (await _call(gw, "agent-a", {**args, "approval_id": approval_id})).is_error
    assert len(RUNS) == 1
    kinds = [r.kind for r in gw.audit()]
    assert "admin_auth_failure" in kinds and "approval" in kinds


async def test_an_expired_approval_is_refused_and_audited(make_gateway: GatewayFactory) -> None:
    import sqlite3

    gw = _start(make_gateway)
    args = {"key": "kprod", "value": 11}
    approval_id = (await _call(gw, "agent-a", args)).structured_content["approval_id"]
    _approve(gw, approval_id)
    # Age the approval past its expiry, as the clock would after ttl_seconds.
    with sqlite3.connect(gw.settings.data_dir / "approvals.db") as db:
        db.execute("UPDATE approvals SET expires_at = expires_at - 7200 WHERE id = ?", (approval_id,))
    late = await _call(gw, "agent-a", {**args, "approval_id": approval_id})
    assert late.is_error and RUNS == []
    assert [r.status for r in gw.audit() if r.kind == "denied"][-1] == "approval_expired"


async def test_a_pending_approval_survives_a_gateway_restart_and_is_usable_once_after_it(
    make_gateway: GatewayFactory,
) -> None:
    gw = _start(make_gateway)
    args = {"key": "kprod", "value": 11}
    approval_id = (await _call(gw, "agent-a", args)).structured_content["approval_id"]
    gw.stop()
    again = _start(make_gateway)
    _approve(again, approval_id)
    assert not (await _call(again, "agent-a", {**args, "approval_id": approval_id})).is_error
    assert (await _call(again, "agent-a", {**args, "approval_id": approval_id})).is_error
    assert len(RUNS) == 1


async def test_the_gateway_echo_tool_is_offered_only_when_granted_and_names_the_caller(
    make_gateway: GatewayFactory,
) -> None:
    policy = (
        "version: 1\nagents:\n  agent-a:\n    grants:\n"
        "      - {tool: gateway.echo, args: {text: {max_length: 10}}}\n"
        "  agent-b:\n    grants: []\n"
    )
    gw = make_gateway(policy, agents=("agent-a", "agent-b"), upstreams={})
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        assert [t.name for t in (await client.list_tools()).tools] == ["gateway.echo"]
        result = await client.call_tool("gateway.echo", {"text": "hello"})
        too_long = await client.call_tool("gateway.echo", {"text": "x" * 11})
    assert result.structured_content is not None
    assert result.structured_content["text"] == "hello" and result.structured_content["agent"] == "agent-a"
    assert too_long.is_error and "max_length" in too_long.content[0].text
    async with connect(gw.url, gw.tokens["agent-b"]) as client:
        assert (await client.list_tools()).tools == []
