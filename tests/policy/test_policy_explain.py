from __future__ import annotations

from typing import Any

import pytest

from mcp_gateway.policy.evaluate import evaluate
from mcp_gateway.policy.explain import explain
from mcp_gateway.policy.load import parse_policy_text
from mcp_gateway.policy.model import Policy

POLICY = """\
version: 1
agents:
  fixer:
    grants:
      - id: time-now
        tool: time.get_current_time
        args:
          timezone: {in: [UTC, Europe/Paris]}
          limit: {min: 1, max: 1000}
        deny:
          - id: no-tokyo
            args: {timezone: {in: [Asia/Tokyo]}}
            reason: tokyo is out of scope
      - id: everything
        tool: "everything.*"
      - id: retired
        tool: old.tool
        deny:
          - id: retired-deny
"""


@pytest.fixture
def policy() -> Policy:
    return parse_policy_text(POLICY, "p.yaml")


def test_explain_shows_decision_deciding_rules_and_each_constraint_result(policy: Policy) -> None:
    text = explain(policy, "fixer", "time.get_current_time", {"timezone": "UTC", "limit": 5000})
    lines = text.splitlines()
    assert lines[0] == "decision: deny"
    assert "deciding rules: `time-now`" in lines
    assert "  - argument `limit` = 5000 is above max 1000" in lines
    assert "grant `time-now` (tool `time.get_current_time`, p.yaml:5)" in lines
    assert "  arg `timezone` = `UTC`: in [`UTC`, `Europe/Paris`]: pass" in lines
    assert "  arg `limit` = 5000: min 1, max 1000: fail" in lines
    assert "  deny rule `no-tokyo`: did not fire" in lines
    assert "    when `timezone` in [`Asia/Tokyo`]: no match" in lines


def test_explain_shows_a_fired_deny_rule_with_its_reason(policy: Policy) -> None:
    text = explain(policy, "fixer", "time.get_current_time", {"timezone": "Asia/Tokyo"})
    assert text.startswith("decision: deny\n")
    assert "deciding rules: `no-tokyo`" in text
    assert "  deny rule `no-tokyo`: fired\n    reason: tokyo is out of scope" in text
    assert "    when `timezone` in [`Asia/Tokyo`]: match" in text


def test_explain_marks_absent_arguments_and_unconstrained_grants(policy: Policy) -> None:
    allowed = explain(policy, "fixer", "time.get_current_time", {})
    assert "  arg `limit` = absent: min 1, max 1000: pass" in allowed
    glob = explain(policy, "fixer", "everything.echo", {"x": 1})
    assert "deciding rules: `everything`" in glob
    assert "  args: unrestricted" in glob


def test_explain_says_a_deny_rule_without_conditions_always_fires(policy: Policy) -> None:
    text = explain(policy, "fixer", "old.tool", {})
    assert "deciding rules: `retired-deny`" in text
    assert "    (no conditions: always fires)" in text


def test_explain_names_an_unknown_agent_and_an_ungranted_tool(policy: Policy) -> None:
    assert "agent `stranger` is not in the policy" in explain(policy, "stranger", "everything.echo", {})
    assert "no grant of agent `fixer` matches tool `db.drop`" in explain(policy, "fixer", "db.drop", {})
    assert "deciding rules: (none)" in explain(policy, "fixer", "db.drop", {})


@pytest.mark.parametrize(
    ("agent", "tool", "args"),
    [
        ("fixer", "time.get_current_time", {"timezone": "UTC"}),
        ("fixer", "time.get_current_time", {"timezone": "Asia/Tokyo"}),
        ("fixer", "time.get_current_time", {"limit": 0}),
        ("fixer", "everything.add", {}),
        ("fixer", "old.tool", {}),
        ("nobody", "everything.add", {}),
    ],
)
def test_explain_reports_the_same_decision_as_evaluate(
    policy: Policy, agent: str, tool: str, args: dict[str, Any]
) -> None:
    decision = evaluate(policy, agent, tool, args)
    lines = explain(policy, agent, tool, args).splitlines()
    assert lines[0] == f"decision: {decision.effect}"
    assert all(f"  - {why}" in lines for why in decision.reasons)


def test_explain_survives_a_broken_policy_and_still_reports_a_deny(
    policy: Policy, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Policy, agent: str, tool: str) -> tuple[()]:
        raise RuntimeError("boom")

    monkeypatch.setattr(Policy, "matching_grants", broken)
    text = explain(policy, "fixer", "everything.echo", {})
    assert text.startswith("decision: deny\n")
    assert "policy evaluation failed" in text
    assert text.endswith("details unavailable: RuntimeError")


GOVERNED = """\
version: 1
agents:
  fixer:
    rate: ["100/day"]
    grants:
      - id: rerun
        tool: ops.rerun_job
        rate: ["3/hour"]
        approval:
          min_approvers: 2
          ttl_seconds: 900
          when:
            - args: {mode: {in: [full]}}
            - change_factor: {field: Amount, over: 10}
      - id: patch
        tool: salesforce.patch_record
        approval: required
      - id: echo
        tool: gateway.echo
"""


def test_explain_shows_which_approval_conditions_apply_how_many_approvers_and_the_quotas() -> None:
    policy = parse_policy_text(GOVERNED, "g.yaml")
    text = explain(policy, "fixer", "ops.rerun_job", {"job": "etl", "mode": "full"})
    lines = text.splitlines()
    assert lines[0] == "decision: allow"
    assert (
        "approval: needed (condition `rerun/approval#0` applies): 2 distinct approvers (two-person rule),"
        " never the requesting agent; usable once, for 900s after it is granted"
    ) in lines
    assert "agent quotas: `100/day` over all of `fixer`'s calls" in lines
    assert "    condition `rerun/approval#0`: applies" in lines
    assert "      when `mode` in [`full`]: match" in lines
    assert any(line.startswith("    condition `Amount` changing by more than 10") for line in lines)
    assert "  quotas: `3/hour` per agent, over the tools this grant matches" in lines
    calm = explain(policy, "fixer", "ops.rerun_job", {"job": "etl", "mode": "from_failure"})
    assert "    condition `rerun/approval#0`: does not apply" in calm.splitlines()
    assert "approval: needed if `Amount` changing by more than 10x" in calm


def test_explain_applies_the_gateway_minimum_of_approvers_and_says_when_none_is_needed() -> None:
    policy = parse_policy_text(GOVERNED, "g.yaml")
    patch = explain(policy, "fixer", "salesforce.patch_record", {}, min_approvers=2).splitlines()
    assert any(
        line.startswith("approval: needed (policy requires approval for every call): 2 distinct approvers")
        for line in patch
    )
    assert "    required for every call: applies" in patch
    echo = explain(policy, "fixer", "gateway.echo", {}).splitlines()
    assert "approval: not needed" in echo and "  approval: not required" in echo
    denied = explain(policy, "fixer", "nope.tool", {}).splitlines()
    assert not any(line.startswith("approval:") for line in denied)
