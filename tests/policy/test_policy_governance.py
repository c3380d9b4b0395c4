"""Table rules, named metrics, runbooks, row caps, approval conditions and quotas in policy files."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_gateway.core.governance import approval_reasons, quota_limits
from mcp_gateway.errors import PolicyLoadError
from mcp_gateway.policy.evaluate import evaluate
from mcp_gateway.policy.load import load_policy, parse_policy_text
from mcp_gateway.quotas.model import ALL_TOOLS

GOVERNED = """
version: 1
tables:
  lake.sales.opportunities:
    switch_in_checks:
      - {metric: row_count, min: 1}
      - {metric: max, column: amount, max: 5000000}
    switch_in_approval: true
    metrics: [distinct_currencies]
metrics:
  distinct_currencies:
    sql: "SELECT count(DISTINCT currency) AS value FROM {table}"
runbooks:
  nightly_revenue: "check the upstream export first"
agents:
  fixer:
    rate: ["100/day"]
    grants:
      - id: fixer-update
        tool: data.update_rows
        max_rows: 5
        rate: ["3/hour", "20 per day"]
      - id: fixer-patch
        tool: salesforce.patch_record
        args:
          fields:
            subset_of: [Amount, StageName]
            properties: {Amount: {min: 0, max: 5000000}}
        approval:
          when:
            - args: {org: {in: [production]}}
            - change_factor: {field: Amount, over: 5}
      - id: fixer-switch
        tool: data.switch_in
        approval: required
"""


def test_governance_sections_compile_into_the_policy_and_its_grants() -> None:
    policy = parse_policy_text(GOVERNED, "gov.yaml")
    update = policy.grant("fixer-update")
    assert update is not None
    assert update.governance.max_rows == 5
    assert update.governance.rates == (("3/hour", 3, 3600), ("20/day", 20, 86400))
    assert policy.agent_rates["fixer"] == (("100/day", 100, 86400),)
    assert policy.extra["tables"]["lake.sales.opportunities"]["switch_in_approval"] is True
    assert policy.extra["metrics"]["distinct_currencies"]["sql"].endswith("FROM {table}")
    assert policy.extra["runbooks"] == {"nightly_revenue": "check the upstream export first"}
    switch = policy.grant("fixer-switch")
    assert switch is not None and switch.governance.approval_required


@pytest.mark.parametrize(
    ("fields", "allowed"),
    [
        ({"Amount": 1_000_000}, True),
        ({"Amount": 1_000_000, "StageName": "Closed Won"}, True),
        ({"OwnerId": "005xx"}, False),  # a field outside subset_of
        ({"Amount": 50_000_000}, False),  # above the value bound
        ({"Amount": "lots"}, False),  # wrong type for the bound
        ("Amount=1", False),  # not an object
    ],
)
def test_object_arguments_are_limited_by_their_keys_and_member_bounds(fields: object, allowed: bool) -> None:
    policy = parse_policy_text(GOVERNED)
    decision = evaluate(policy, "fixer", "salesforce.patch_record", {"org": "sandbox", "fields": fields})
    assert decision.allowed is allowed


def test_approval_conditions_ask_only_when_they_match_and_always_for_an_upstream_tool() -> None:
    policy = parse_policy_text(GOVERNED)
    grant = policy.grant("fixer-patch")
    assert grant is not None
    sandbox = {"org": "sandbox", "fields": {"Amount": 1}}
    production = {"org": "production", "fields": {"Amount": 1}}
    assert approval_reasons(grant.governance, sandbox, builtin=True) == []
    assert approval_reasons(grant.governance, production, builtin=True) != []
    # A change-factor condition cannot be evaluated by an upstream tool: it must ask, not pass.
    assert approval_reasons(grant.governance, sandbox, builtin=False) != []
    assert grant.governance.tool_conditions == ({"change_factor": {"field": "Amount", "over": 5}},)


def test_quota_limits_cover_the_grant_and_the_agent_overall() -> None:
    policy = parse_policy_text(GOVERNED)
    grant = policy.grant("fixer-update")
    assert grant is not None
    checks = quota_limits(policy, "fixer", "data.update_rows", grant.governance)
    assert [(c.tool, c.limit, c.amount, c.seconds) for c in checks] == [
        ("data.update_rows", "3/hour", 3, 3600),
        ("data.update_rows", "20/day", 20, 86400),
        (ALL_TOOLS, "100/day", 100, 86400),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "version: 1\nagents:\n  a:\n    grants:\n      - tool: t\n        rate: [lots]\n",
            "p.yaml:6: `agents.a.grants[0].rate[0]`: rate `lots` must look like `3/hour`",
        ),
        (
            "version: 1\nagents:\n  a:\n    grants:\n      - tool: t\n        approval: maybe\n",
            "p.yaml:6:",
        ),
        (
            "version: 1\nagents:\n  a:\n    grants:\n      - tool: t\n        approval: {when: []}\n",
            "approval needs `required` or `when`",
        ),
        (
            "version: 1\nagents:\n  a:\n    grants:\n      - tool: t\n        approval:\n"
            "          when: [{change_factor: {field: Amount, over: 0.5}}]\n",
            "`over` must be greater than 1",
        ),
        (
            "version: 1\ntables:\n  t: {switch_in_checks: [{metric: max, max: 3}]}\n",
            "check `max` needs `column`",
        ),
        (
            "version: 1\ntables:\n  t: {switch_in_checks: [{metric: row_count}]}\n",
            "check `row_count` needs `min` or `max`",
        ),
        ("version: 1\nmetrics:\n  m: {sql: 'SELECT 1'}\n", "metric sql must name the table as `{table}`"),
        ("version: 1\ntables:\n  t: {metrics: [nope]}\n", "p.yaml:3: table `t` names unknown metric `nope`"),
        (
            "version: 1\nagents:\n  a:\n    grants:\n      - {tool: t, max_rows: -1}\n",
            "must be a non-negative integer",
        ),
        (
            "version: 1\nagents:\n  a:\n    grants:\n      - tool: t\n"
            "        approval: {required: true, min_approvers: 0}\n",
            "p.yaml:6: `agents.a.grants[0].approval.min_approvers`",
        ),
        (
            "version: 1\nagents:\n  a:\n    grants:\n      - tool: t\n"
            "        approval: {required: true, min_approvers: '2'}\n",
            "`agents.a.grants[0].approval.min_approvers`",
        ),
    ],
)
def test_bad_governance_settings_are_load_errors_naming_file_and_line(text: str, message: str) -> None:
    with pytest.raises(PolicyLoadError) as caught:
        parse_policy_text(text, "p.yaml")
    assert any(message in problem for problem in caught.value.problems), caught.value.problems


def test_a_table_rule_defined_in_two_files_is_an_error(tmp_path: Path) -> None:
    rule = "version: 1\ntables:\n  lake.sales.t: {switch_in_approval: true}\n"
    (tmp_path / "a.yaml").write_text(rule)
    (tmp_path / "b.yaml").write_text(rule)
    with pytest.raises(PolicyLoadError) as caught:
        load_policy(tmp_path)
    assert any("`tables.lake.sales.t` is defined in more than one file" in p for p in caught.value.problems)


def test_a_grant_can_ask_for_two_distinct_approvers() -> None:
    policy = parse_policy_text(
        "version: 1\nagents:\n  a:\n    grants:\n      - tool: t\n"
        "        approval: {required: true, min_approvers: 2}\n      - tool: u\n        approval: required\n",
        "p.yaml",
    )
    two, one = policy.agents["a"]
    assert (two.governance.approval_min_approvers, one.governance.approval_min_approvers) == (2, None)
