"""A human-readable account of one decision, for admins (``mcp-gateway policy explain``).

It re-runs the same pure functions ``evaluate`` uses, so the account cannot drift from the decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mcp_gateway.policy.evaluate import condition_matches, constraint_failures, deny_rule_fires, evaluate
from mcp_gateway.policy.model import CompiledGrant, Policy, preview


def _grant_lines(grant: CompiledGrant, args: Mapping[str, Any]) -> list[str]:
    where = f", {grant.source}" if grant.source else ""
    lines = [f"grant `{grant.id}` (tool `{grant.tool}`{where})"]
    if grant.scopes:
        shown = ", ".join(f"`{scope}`" for scope in sorted(grant.scopes))
        lines.append(f"  scopes: {shown} (oauth tokens only; agent tokens are not filtered)")
    if not grant.constraints:
        lines.append("  args: unrestricted")
    for constraint in grant.constraints:
        failures = constraint_failures(constraint, args)
        verdict = "fail" if failures else "pass"
        shown = preview(args[constraint.arg]) if constraint.arg in args else "absent"
        lines.append(f"  arg `{constraint.arg}` = {shown}: {constraint.describe()}: {verdict}")
        lines.extend(f"    - {why}" for why in failures)
    for rule in grant.deny_rules:
        state = "fired" if deny_rule_fires(rule, args) else "did not fire"
        lines.append(f"  deny rule `{rule.id}`: {state}")
        if rule.reason:
            lines.append(f"    reason: {rule.reason}")
        if not rule.conditions:
            lines.append("    (no conditions: always fires)")
        for condition in rule.conditions:
            matched = "match" if condition_matches(condition, args) else "no match"
            lines.append(f"    when `{condition.arg}` {condition.describe()}: {matched}")
    return lines


def explain(policy: Policy, agent: str, tool: str, args: Mapping[str, Any]) -> str:
    """Explain the decision for one call, line by line.

    Shows the decision, the deciding rule ids, the reasons, then every grant whose tool matches with each
    argument constraint's result (pass/fail) and each deny rule and whether it fired.

    Args:
        policy: the compiled policy.
        agent: the agent name.
        tool: the tool name.
        args: the call's arguments.
    """
    decision = evaluate(policy, agent, tool, args)
    lines = [
        f"decision: {decision.effect}",
        f"agent: `{agent}`",
        f"tool: `{tool}`",
        "deciding rules: " + (", ".join(f"`{r}`" for r in decision.rule_ids) or "(none)"),
        "reasons:",
        *(f"  - {why}" for why in decision.reasons),
    ]
    try:
        grants = policy.matching_grants(agent, tool)
        if agent not in policy.agents:
            lines.append(f"agent `{agent}` is not in the policy")
        elif not grants:
            lines.append(f"no grant of agent `{agent}` matches tool `{tool}`")
        for grant in grants:
            lines.extend(_grant_lines(grant, args))
    except Exception as exc:
        # The decision above already failed closed; say why the details are missing.
        lines.append(f"details unavailable: {type(exc).__name__}")
    return "\n".join(lines)
