"""`sensitive: true` on an argument: parsed, ignored by the evaluator, answered by `sensitive_args`."""

from __future__ import annotations

import pytest

from mcp_gateway.errors import PolicyLoadError
from mcp_gateway.policy.evaluate import evaluate
from mcp_gateway.policy.load import parse_policy_text
from mcp_gateway.policy.model import Policy
from mcp_gateway.policy.sensitive import WITHHELD, sensitive_args, withhold_reasons

POLICY = """\
version: 1
agents:
  ops:
    grants:
      - id: login
        tool: crm.login
        args:
          user: {max_length: 20}
          password: {sensitive: true, max_length: 8}
      - id: any-vault
        tool: "vault.*"
        args:
          token: {sensitive: true}
        deny:
          - args: {pin: {sensitive: true, in: ["0000"]}}
  other:
    grants:
      - tool: crm.search
        args:
          account: {sensitive: true}
"""


@pytest.fixture(scope="module")
def policy() -> Policy:
    return parse_policy_text(POLICY)


@pytest.mark.parametrize(
    ("agent", "tool", "expected"),
    [
        ("ops", "crm.login", {"password"}),
        ("ops", "vault.read", {"token", "pin"}),
        ("ops", "crm.search", {"account"}),  # marked by another agent's grant: still withheld
        ("nobody", "crm.login", {"password"}),  # a caller without a grant is audited too
        ("ops", "crm.other", set()),
        ("ops", "time.now", set()),
    ],
)
def test_sensitive_args_are_the_marked_arguments_of_every_grant_matching_the_tool(
    policy: Policy, agent: str, tool: str, expected: set[str]
) -> None:
    assert sensitive_args(policy, agent, tool) == expected


def test_marking_an_argument_sensitive_changes_no_decision(policy: Policy) -> None:
    plain = parse_policy_text(POLICY.replace("sensitive: true, ", "").replace("{sensitive: true}", "{}"))
    for args in ({"user": "ann", "password": "pw"}, {"password": "far-too-long"}, {}):
        assert evaluate(policy, "ops", "crm.login", args) == evaluate(plain, "ops", "crm.login", args)


def test_reasons_about_a_sensitive_argument_do_not_quote_its_value(policy: Policy) -> None:
    decision = evaluate(policy, "ops", "crm.login", {"user": "ann" * 10, "password": "hunter2-long"})
    assert any("hunter2-long" in r for r in decision.reasons)
    withheld = withhold_reasons(decision, sensitive_args(policy, "ops", "crm.login"))
    assert not any("hunter2-long" in r for r in withheld.reasons)
    assert f"argument `password` {WITHHELD}" in withheld.reasons
    assert any("annann" in r for r in withheld.reasons)  # other arguments keep their detail
    assert withheld.rule_ids == decision.rule_ids and withheld.effect == "deny"
    assert withhold_reasons(decision, set()) is decision


def test_sensitive_must_be_a_boolean_and_unknown_keys_are_still_refused() -> None:
    with pytest.raises(PolicyLoadError) as info:
        parse_policy_text(POLICY.replace("{sensitive: true}", "{sensitive: yes}", 1), "p.yaml")
    assert any("p.yaml:13" in p and "`true` or `false`" in p for p in info.value.problems)
    with pytest.raises(PolicyLoadError, match="unknown key `sensitiv`"):
        parse_policy_text(POLICY.replace("{sensitive: true}", "{sensitiv: true}", 1))


def test_a_reloaded_policy_answers_from_its_own_marks(policy: Policy) -> None:
    assert sensitive_args(policy, "ops", "crm.login") == {"password"}
    reloaded = parse_policy_text(POLICY.replace("password: {sensitive: true,", "password: {"))
    assert sensitive_args(reloaded, "ops", "crm.login") == set()
    assert sensitive_args(policy, "ops", "crm.login") == {"password"}
