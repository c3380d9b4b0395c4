"""Compiling the policy schema into checks: each constraint becomes closures built once, so a decision
is a dict lookup plus a few function calls (``model.py`` holds the schema and the compiled types)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from mcp_gateway.policy.model import (
    Check,
    CompiledConstraint,
    CompiledDenyRule,
    CompiledGrant,
    Constraint,
    Grant,
    GrantGovernance,
    preview,
)
from mcp_gateway.policy.schema import parse_rate


def _key(value: Any) -> tuple[str, Any] | None:
    """Equality key by JSON type, so `true` never equals `1`; ``None`` for values no set can hold."""
    if value is None:
        return ("null", None)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("num", value)
    if isinstance(value, str):
        return ("str", value)
    return None


def _list_preview(values: Sequence[Any]) -> str:
    shown = ", ".join(preview(v) for v in values[:8])
    return shown + (", …" if len(values) > 8 else "") if values else "(none)"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not value != value  # NaN


def _in(values: Sequence[Any]) -> Check:
    keys = frozenset(_key(v) for v in values)
    listed = _list_preview(values)

    def test(value: Any) -> str | None:
        return None if _key(value) in keys else f"is not one of {listed} (in)"

    return Check("in", f"in [{listed}]", test)


def _not_in(values: Sequence[Any]) -> Check:
    keys = frozenset(_key(v) for v in values)

    def test(value: Any) -> str | None:
        return "is a forbidden value (not_in)" if _key(value) in keys else None

    return Check("not_in", f"not_in [{_list_preview(values)}]", test)


def _pattern(pattern: str) -> Check:
    regex = re.compile(pattern)

    def test(value: Any) -> str | None:
        if not isinstance(value, str):
            return f"is not a string (pattern `{pattern}`)"
        return None if regex.fullmatch(value) else f"does not match pattern `{pattern}`"

    return Check("pattern", f"pattern `{pattern}`", test)


def _min(bound: float) -> Check:
    def test(value: Any) -> str | None:
        if not _is_number(value):
            return f"is not a number (min {bound})"
        return None if value >= bound else f"is below min {bound}"

    return Check("min", f"min {bound}", test)


def _max(bound: float) -> Check:
    def test(value: Any) -> str | None:
        if not _is_number(value):
            return f"is not a number (max {bound})"
        return None if value <= bound else f"is above max {bound}"

    return Check("max", f"max {bound}", test)


def _max_length(bound: int) -> Check:
    def test(value: Any) -> str | None:
        if not isinstance(value, str | list | tuple):
            return f"is not a string or list (max_length {bound})"
        size = len(value)
        return None if size <= bound else f"has length {size}, above max_length {bound}"

    return Check("max_length", f"max_length {bound}", test)


def _subset_of(values: Sequence[Any]) -> Check:
    keys = frozenset(_key(v) for v in values)
    listed = _list_preview(values)

    def test(value: Any) -> str | None:
        if isinstance(value, dict):
            value = list(value)  # an object's keys: which fields a patch may touch
        if not isinstance(value, list | tuple):
            return f"is not a list or object (subset_of [{listed}])"
        outside = [item for item in value if _key(item) not in keys]
        return f"has items outside subset_of: {_list_preview(outside)}" if outside else None

    return Check("subset_of", f"subset_of [{listed}]", test)


def _properties(properties: Mapping[str, Constraint]) -> Check:
    members = tuple(compile_constraint(name, c) for name, c in properties.items())
    described = "; ".join(f"{m.arg}: {m.describe()}" for m in members)

    def test(value: Any) -> str | None:
        if not isinstance(value, dict):
            return "is not an object (properties)"
        failures: list[str] = []
        for member in members:
            if member.arg not in value:
                if member.required:
                    failures.append(f"`{member.arg}` is required but absent")
                continue
            failures.extend(
                f"`{member.arg}` = {preview(value[member.arg])} {why}"
                for check in member.checks
                if (why := check.test(value[member.arg])) is not None
            )
        return "has " + "; ".join(failures) if failures else None

    return Check("properties", f"properties {{{described}}}", test)


def compile_constraint(arg: str, constraint: Constraint) -> CompiledConstraint:
    """Turn one argument's schema constraint into checks, in a fixed order."""
    checks: list[Check] = []
    if constraint.in_ is not None:
        checks.append(_in(constraint.in_))
    if constraint.not_in is not None:
        checks.append(_not_in(constraint.not_in))
    if constraint.pattern is not None:
        checks.append(_pattern(constraint.pattern))
    if constraint.min is not None:
        checks.append(_min(constraint.min))
    if constraint.max is not None:
        checks.append(_max(constraint.max))
    if constraint.max_length is not None:
        checks.append(_max_length(constraint.max_length))
    if constraint.subset_of is not None:
        checks.append(_subset_of(constraint.subset_of))
    if constraint.properties:
        checks.append(_properties(constraint.properties))
    return CompiledConstraint(
        arg=arg, required=constraint.required, checks=tuple(checks), sensitive=constraint.sensitive
    )


def default_grant_id(agent: str, tool: str, index: int) -> str:
    """The id of a grant written without one: ``<agent>/<tool>#<index among the agent's grants>``."""
    return f"{agent}/{tool}#{index}"


def compile_grant(
    agent: str,
    index: int,
    grant: Grant,
    *,
    source: str = "",
    deny_sources: Sequence[str] = (),
) -> CompiledGrant:
    """Compile one grant, filling in default ids (deny rules: ``<grant id>/deny#<index>``).

    Args:
        agent: the agent the grant belongs to.
        index: the grant's position among all of the agent's grants (for the default id).
        grant: the validated schema grant.
        source: ``file:line`` of the grant, for errors and ``explain``.
        deny_sources: ``file:line`` of each deny rule, in order.
    """
    grant_id = grant.id or default_grant_id(agent, grant.tool, index)
    deny_rules = tuple(
        CompiledDenyRule(
            id=rule.id or f"{grant_id}/deny#{i}",
            conditions=tuple(compile_constraint(arg, c) for arg, c in rule.args.items()),
            reason=rule.reason,
            source=deny_sources[i] if i < len(deny_sources) else source,
        )
        for i, rule in enumerate(grant.deny)
    )
    return CompiledGrant(
        id=grant_id,
        agent=agent,
        tool=grant.tool,
        constraints=tuple(compile_constraint(arg, c) for arg, c in grant.args.items()),
        deny_rules=deny_rules,
        source=source,
        scopes=frozenset(grant.scopes),
        governance=compile_governance(grant, grant_id, source),
    )


def compile_rates(rates: Sequence[str]) -> tuple[tuple[str, int, int], ...]:
    """``["3/hour"]`` → ``(("3/hour", 3, 3600),)`` (already validated by the schema)."""
    return tuple((text, *parse_rate(text)) for text in rates)


def compile_governance(grant: Grant, grant_id: str, source: str) -> GrantGovernance:
    """The row cap, approval conditions and quotas of one grant."""
    approval = grant.approval
    rules: list[CompiledDenyRule] = []
    tool_conditions: list[Mapping[str, Any]] = []
    if approval is not None:
        for i, condition in enumerate(approval.when):
            if condition.change_factor is not None:
                tool_conditions.append({"change_factor": condition.change_factor.model_dump()})
            else:
                rules.append(
                    CompiledDenyRule(
                        id=f"{grant_id}/approval#{i}",
                        conditions=tuple(compile_constraint(arg, c) for arg, c in condition.args.items()),
                        reason="needs approval",
                        source=source,
                    )
                )
    return GrantGovernance(
        max_rows=grant.max_rows,
        approval_required=approval is not None and approval.required,
        approval_rules=tuple(rules),
        tool_conditions=tuple(tool_conditions),
        approval_ttl=approval.ttl_seconds if approval is not None else None,
        approval_min_approvers=approval.min_approvers if approval is not None else None,
        rates=compile_rates(grant.rate),
        read=grant.read,
    )
