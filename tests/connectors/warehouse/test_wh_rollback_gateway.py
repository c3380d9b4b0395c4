"""Discarding later production commits on rollback, through the real gateway: refused and audited,
then allowed only with the flag, which the shipped example policy sends to a human approver."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from wh_support import Backend, backend

from conftest import GatewayFactory, connect
from mcp_gateway.core.governance import approval_reasons
from mcp_gateway.demo.lake import DEMO_POLICY, FAT_FINGER_ID
from mcp_gateway.policy.load import load_policy

__all__ = ["backend"]

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[3]


def _policy() -> str:
    grants: list[dict[str, Any]] = [
        {"id": f"fixer-{tool}", "tool": f"data.{tool}"}
        for tool in ("clone_table", "update_rows", "switch_in")
    ]
    grants.append(
        {
            "id": "fixer-rollback",
            "tool": "data.rollback_table",
            "approval": {"when": [{"args": {"discard_later_commits": {"in": [True]}}}]},
        }
    )
    document = {"version": 1, "agents": {"fixer": {"grants": grants}}, **DEMO_POLICY}
    return yaml.safe_dump(document)


def _body(result: Any) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(result.content[0].text)
    return parsed


def test_the_example_policy_asks_a_human_only_when_later_commits_would_be_discarded() -> None:
    policy = load_policy(ROOT / "policies")
    grant = policy.grant("fixer-rollback")
    assert grant is not None
    args = {"table": "lake.sales.opportunities", "to_snapshot": "1"}
    assert approval_reasons(grant.governance, args, builtin=True) == []
    assert approval_reasons(grant.governance, {**args, "discard_later_commits": False}, builtin=True) == []
    asked = approval_reasons(grant.governance, {**args, "discard_later_commits": True}, builtin=True)
    assert asked and "matched" in asked[0]


@pytest.mark.e2e
@pytest.mark.parametrize("backend", ["iceberg_sqlite", "postgres"], indirect=True)
async def test_discarding_a_later_commit_is_refused_then_approved_and_the_audit_names_what_was_lost(
    backend: Backend, make_gateway: GatewayFactory
) -> None:
    gw = make_gateway(_policy(), agents=("fixer",), upstreams={}, toolsets=[backend.toolset])
    table = backend.table("opportunities")
    original = backend.rows("opportunities")
    fix = [{"column": "id", "op": "=", "value": FAT_FINGER_ID}]

    async with connect(gw.url, gw.tokens["fixer"]) as client:
        await client.call_tool("data.clone_table", {"table": table, "branch": "fix"})
        await client.call_tool(
            "data.update_rows", {"table": table, "branch": "fix", "where": fix, "set": {"amount": 1e6}}
        )
        switched = await client.call_tool("data.switch_in", {"table": table, "branch": "fix"})
        assert not switched.is_error, switched.content[0].text
        backend.write_production("opportunities")  # a pipeline commits to production afterwards
        after_pipeline = backend.rows("opportunities")
        args = {"table": table, "to_snapshot": _body(switched)["before_snapshot"]}

        refused = await client.call_tool("data.rollback_table", args)
        assert refused.is_error and "would discard 1 later production commit" in refused.content[0].text
        assert backend.rows("opportunities") == after_pipeline

        parked = await client.call_tool("data.rollback_table", {**args, "discard_later_commits": True})
        assert parked.is_error and _body(parked)["status"] == "pending_approval"
        assert backend.rows("opportunities") == after_pipeline
        assert gw.runtime.approvals is not None
        gw.runtime.approvals.decide(_body(parked)["approval_id"], approve=True, approver="alice")
        done = await client.call_tool(
            "data.rollback_table",
            {**args, "discard_later_commits": True, "approval_id": _body(parked)["approval_id"]},
        )
        assert not done.is_error, done.content[0].text

    assert backend.rows("opportunities") == original
    outcomes = [r for r in gw.audit() if r.kind == "outcome" and r.tool == "data.rollback_table"]
    assert [o.status for o in outcomes] == ["error", "ok"]
    refused_facts, done_facts = (o.detail["facts"] for o in outcomes)
    assert refused_facts["rolled_back"] is False
    assert len(refused_facts["later_commits"]) == 1
    assert done_facts["discarded_later_commits"] == refused_facts["later_commits"]
