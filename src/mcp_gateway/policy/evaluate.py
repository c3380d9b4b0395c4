"""Pure policy decisions: may this agent call this tool with these arguments, and which rules said so.

Order (Cedar's): deny by default; among the grants whose tool matches (exact names first, then globs,
each in declaration order) any firing deny rule denies (forbid beats permit); otherwise the first grant
whose constraints all hold allows; otherwise deny with every violated constraint as a reason.
Any exception while deciding is a deny: a rule that fails to evaluate must not fail open.

Scopes: ``scopes=None`` is a gateway agent token, which grant ``scopes`` do not filter. An OAuth
caller passes its token's scopes, and only grants whose ``scopes`` it carries in full can allow (or
make a tool visible). Deny rules of every grant matching the tool still fire: a scope never lifts a deny.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from mcp_gateway.policy.model import CompiledConstraint, CompiledDenyRule, CompiledGrant, Policy, preview
from mcp_gateway.types import Decision

_log = logging.getLogger(__name__)

_MISSING = object()
EVALUATION_FAILED = "policy evaluation failed"


def constraint_failures(constraint: CompiledConstraint, args: Mapping[str, Any]) -> list[str]:
    """Why ``args`` violate one argument's constraint; empty when it holds.

    An absent argument violates nothing unless the constraint is ``required``.
    """
    value = args.get(constraint.arg, _MISSING)
    if value is _MISSING:
        return [f"argument `{constraint.arg}` is required but absent"] if constraint.required else []
    failures = []
    for check in constraint.checks:
        why = check.test(value)
        if why is not None:
            failures.append(f"argument `{constraint.arg}` = {preview(value)} {why}")
    return failures


def grant_failures(grant: CompiledGrant, args: Mapping[str, Any]) -> list[str]:
    """Every constraint of ``grant`` that ``args`` violate; empty when the grant allows them."""
    return [why for constraint in grant.constraints for why in constraint_failures(constraint, args)]


def condition_matches(condition: CompiledConstraint, args: Mapping[str, Any]) -> bool:
    """A deny-rule condition matches when the argument is present and satisfies every check."""
    value = args.get(condition.arg, _MISSING)
    if value is _MISSING:
        return False
    return all(check.test(value) is None for check in condition.checks)


def deny_rule_fires(rule: CompiledDenyRule, args: Mapping[str, Any]) -> bool:
    """A deny rule fires when all its conditions match (a rule without conditions always fires)."""
    return all(condition_matches(condition, args) for condition in rule.conditions)


def _deny_reason(rule: CompiledDenyRule) -> str:
    return f"denied by rule `{rule.id}`: {rule.reason}" if rule.reason else f"denied by rule `{rule.id}`"


def _no_grant(tool: Any) -> Decision:
    # The same answer for an unknown agent and an ungranted tool: a caller learns nothing about
    # which agents or tools exist.
    return Decision("deny", (), (f"no grant for tool {preview(tool)}",))


def grant_applies(grant: CompiledGrant, scopes: frozenset[str] | None) -> bool:
    """Whether ``grant`` can allow for a caller with ``scopes`` (None: an agent token, never filtered)."""
    return scopes is None or grant.scopes <= scopes


def _decide(
    policy: Policy, agent: str, tool: str, args: Mapping[str, Any], scopes: frozenset[str] | None
) -> Decision:
    matching = policy.matching_grants(agent, tool)
    if not matching:
        return _no_grant(tool)
    fired: list[CompiledDenyRule] = []
    for grant in matching:  # plain loops: this runs on every call, most grants have no deny rules
        for rule in grant.deny_rules:
            if deny_rule_fires(rule, args):
                fired.append(rule)
    if fired:
        return Decision("deny", tuple(r.id for r in fired), tuple(_deny_reason(r) for r in fired))
    grants = matching if scopes is None else [grant for grant in matching if grant_applies(grant, scopes)]
    if not grants:
        # Rule ids and missing scopes are for the audit log; the caller is told only "not available".
        return Decision(
            "deny",
            tuple(g.id for g in matching),
            tuple(
                f"grant `{g.id}` needs scope(s) "
                + ", ".join(f"`{s}`" for s in sorted(g.scopes - (scopes or frozenset())))
                for g in matching
            ),
        )
    reasons: list[str] = []
    for grant in grants:
        failures = grant_failures(grant, args)
        if not failures:
            return Decision("allow", (grant.id,), (f"allowed by grant `{grant.id}`",))
        # Name the grant only when several were tried; with one, rule_ids already says which.
        suffix = f" (grant `{grant.id}`)" if len(grants) > 1 else ""
        reasons.extend(why + suffix for why in failures)
    return Decision("deny", tuple(g.id for g in grants), tuple(reasons))


def evaluate(
    policy: Policy,
    agent: str,
    tool: str,
    args: Mapping[str, Any],
    *,
    scopes: frozenset[str] | None = None,
) -> Decision:
    """Decide one call. Pure; never raises.

    Args:
        policy: the compiled policy.
        agent: the authenticated agent's name.
        tool: the tool name the agent called.
        args: the call's arguments (decoded JSON).
        scopes: an OAuth caller's token scopes; None for a gateway agent token (no scope filtering).

    Returns:
        ``allow`` with the allowing grant's id, or ``deny`` with the deciding rule ids (empty when no
        grant matched) and reasons naming each violated argument and constraint. An error while
        deciding is a ``deny`` with reason ``policy evaluation failed``.
    """
    try:
        return _decide(policy, agent, tool, args, scopes)
    except Exception as exc:
        # The exception text may quote argument values (secrets); log its type only.
        _log.error("policy evaluation failed for agent %r: %s", agent, type(exc).__name__)
        return Decision("deny", (), (EVALUATION_FAILED,))


def is_granted(policy: Policy, agent: str, tool: str, *, scopes: frozenset[str] | None = None) -> bool:
    """Whether some grant of ``agent`` matches ``tool`` by name (exact or glob), whatever its constraints.

    This decides visibility (``tools/list``), not whether a particular call is allowed.

    Args:
        policy: the compiled policy.
        agent: the agent name.
        tool: the tool name.
        scopes: an OAuth caller's token scopes (grants needing others do not count); None: no filtering.
    """
    try:
        return any(grant_applies(grant, scopes) for grant in policy.matching_grants(agent, tool))
    except Exception:  # a tool name that cannot be matched is not granted
        return False


has_grant = is_granted


def granted_tools(
    policy: Policy, agent: str, available: Iterable[str], *, scopes: frozenset[str] | None = None
) -> list[str]:
    """The names in ``available`` that ``agent`` has some applicable grant for, in their original order.

    Args:
        policy: the compiled policy.
        agent: the agent name.
        available: candidate tool names.
        scopes: as for ``is_granted``.
    """
    return [tool for tool in available if is_granted(policy, agent, tool, scopes=scopes)]
