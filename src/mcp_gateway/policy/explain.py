"""A human-readable account of one decision, for admins (``mcp-gateway policy explain``).

It re-runs the same pure functions ``evaluate`` uses, so the account cannot drift from the decision.
Beyond allow/deny it shows what the call path asks next: whether a human must approve (which
conditions apply, how many distinct approvers) and the quotas the call counts against.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mcp_gateway.policy.evaluate import condition_matches, constraint_failures, deny_rule_fires, evaluate
from mcp_gateway.policy.model import CompiledGrant, GrantGovernance, Policy, preview


def _approvers(governance: GrantGovernance, floor: int) -> str:
    count = max(floor, governance.approval_min_approvers or 1)
    who = "1 approver" if count == 1 else f"{count} distinct approvers (two-person rule)"
    ttl = f"{governance.approval_ttl}s" if governance.approval_ttl is not None else "the gateway's ttl"
    return f"{who}, never the requesting agent; usable once, for {ttl} after it is granted"


def _tool_condition(condition: Mapping[str, Any]) -> str:
    factor = condition.get("change_factor") or {}
    return (
        f"`{factor.get('field')}` changing by more than {factor.get('over')}x (a built-in tool checks it"
        " against current state; an upstream tool cannot, so there it always asks)"
    )


def _governance_lines(grant: CompiledGrant, args: Mapping[str, Any], floor: int) -> list[str]:
    governance = grant.governance
    lines: list[str] = []
    if governance.approval_required or governance.approval_rules or governance.tool_conditions:
        lines.append(f"  approval: {_approvers(governance, floor)}")
        if governance.approval_required:
            lines.append("    required for every call: applies")
        for rule in governance.approval_rules:
            state = "applies" if deny_rule_fires(rule, args) else "does not apply"
            lines.append(f"    condition `{rule.id}`: {state}")
            for condition in rule.conditions:
                matched = "match" if condition_matches(condition, args) else "no match"
                lines.append(f"      when `{condition.arg}` {condition.describe()}: {matched}")
        lines.extend(f"    condition {_tool_condition(c)}" for c in governance.tool_conditions)
    else:
        lines.append("  approval: not required")
    if governance.rates:
        shown = ", ".join(f"`{text}`" for text, _, _ in governance.rates)
        lines.append(f"  quotas: {shown} per agent, over the tools this grant matches")
    if governance.max_rows is not None:
        lines.append(f"  max_rows: {governance.max_rows} per data call")
    return lines


def _next_step(grant: CompiledGrant, args: Mapping[str, Any], floor: int) -> str:
    """What happens to an allowed call: does it wait for a human?"""
    governance = grant.governance
    why = ["policy requires approval for every call"] if governance.approval_required else []
    why.extend(f"condition `{r.id}` applies" for r in governance.approval_rules if deny_rule_fires(r, args))
    if why:
        return f"approval: needed ({'; '.join(why)}): {_approvers(governance, floor)}"
    if governance.tool_conditions:
        return "approval: needed if " + "; or ".join(_tool_condition(c) for c in governance.tool_conditions)
    return "approval: not needed"


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


def explain(policy: Policy, agent: str, tool: str, args: Mapping[str, Any], *, min_approvers: int = 1) -> str:
    """Explain the decision for one call, line by line.

    Shows the decision, the deciding rule ids, the reasons, whether an allowed call waits for a human,
    the agent's overall quotas, then every grant whose tool matches with each argument constraint's
    result (pass/fail), each deny rule and whether it fired, its approval conditions (which apply, how
    many approvers) and its quotas.

    Args:
        policy: the compiled policy.
        agent: the agent name.
        tool: the tool name.
        args: the call's arguments.
        min_approvers: the gateway's ``approvals.min_approvers`` (a floor under every grant's).
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
        deciding = policy.grant(decision.rule_ids[0]) if decision.allowed and decision.rule_ids else None
        if deciding is not None:
            lines.append(_next_step(deciding, args, min_approvers))
        if rates := policy.agent_rates.get(agent):
            shown = ", ".join(f"`{text}`" for text, _, _ in rates)
            lines.append(f"agent quotas: {shown} over all of `{agent}`'s calls")
        grants = policy.matching_grants(agent, tool)
        if agent not in policy.agents:
            lines.append(f"agent `{agent}` is not in the policy")
        elif not grants:
            lines.append(f"no grant of agent `{agent}` matches tool `{tool}`")
        for grant in grants:
            lines.extend(_grant_lines(grant, args))
            lines.extend(_governance_lines(grant, args, min_approvers))
    except Exception as exc:
        # The decision above already failed closed; say why the details are missing.
        lines.append(f"details unavailable: {type(exc).__name__}")
    return "\n".join(lines)
