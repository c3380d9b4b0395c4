"""The compiled, evaluation-ready policy and its semantics.

The schema admins write lives in ``schema.py`` (re-exported here); ``compile.py`` turns it into
``Check``, ``CompiledConstraint``, ``CompiledDenyRule``, ``CompiledGrant`` (with its ``GrantGovernance``:
row cap, approval conditions, quotas) and ``Policy``. Regexes are compiled and value sets built once,
and each agent's grants are indexed by exact tool name with globs kept apart, so a decision is a dict
lookup plus a few function calls.

Semantics (``evaluate.py`` applies them):

- Only arguments named under ``args`` are restricted; any other argument passes unchecked.
- An absent argument violates nothing unless its constraint says ``required: true``.
- Values compare by JSON type: ``1`` equals ``1.0``, but ``true`` is not ``1`` and bools are not numbers.
  A value of the wrong type for a constraint (``min`` on a string) violates it.
- A deny-rule condition matches only a present argument that satisfies it, so a wrong-typed value
  does not fire a deny rule: deny rules refine grants, the grant's own constraints bound the type.
- ``sensitive: true`` on an argument limits nothing: it tells the gateway to audit the value only as a
  keyed HMAC (``policy/sensitive.py`` answers which arguments are sensitive; the evaluator ignores it).
- ``tool`` globs are fnmatch, case-sensitive; ``*`` also matches dots (``everything.*`` ⊇ ``everything.a.b``).
- A grant's ``scopes`` bind only callers with OAuth tokens: for them the grant applies (shows the tool,
  can allow a call) only when the token carries every listed scope. Gateway agent tokens carry no
  scopes and are not filtered. Deny rules fire whatever the scopes: a scope can narrow what is
  allowed, never lift a deny.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from mcp_gateway.policy.schema import (
    NAME_PATTERN,
    SCOPE_TOKEN,
    AgentPolicy,
    Approval,
    ApprovalCondition,
    ApprovalSchema,
    ChangeFactor,
    Constraint,
    DenyRule,
    Grant,
    NamedMetric,
    PolicyDocument,
    QualityCheck,
    RateLimit,
    ReadLimits,
    TableRule,
    parse_rate,
)

__all__ = [
    "NAME_PATTERN",
    "SCOPE_TOKEN",
    "AgentPolicy",
    "Approval",
    "ApprovalCondition",
    "ApprovalSchema",
    "ChangeFactor",
    "Constraint",
    "DenyRule",
    "Grant",
    "NamedMetric",
    "PolicyDocument",
    "QualityCheck",
    "RateLimit",
    "ReadLimits",
    "TableRule",
    "parse_rate",
]

PREVIEW_CHARS = 64

# --- compiled form -------------------------------------------------------------------------------------

TestFn = Callable[[Any], str | None]


@dataclass(frozen=True, slots=True)
class Check:
    """One compiled limit. ``test(value)`` is ``None`` when the value satisfies it, else why it does not."""

    kind: str
    describe: str
    test: TestFn = field(repr=False)


@dataclass(frozen=True, slots=True)
class CompiledConstraint:
    """The checks on one argument."""

    arg: str
    required: bool
    checks: tuple[Check, ...]
    sensitive: bool = False
    """Audited as an HMAC only; read by ``policy/sensitive.py``, never by the evaluator."""

    def describe(self) -> str:
        parts = [c.describe for c in self.checks]
        if self.required:
            parts.insert(0, "required")
        if self.sensitive:
            parts.append("sensitive")
        return ", ".join(parts) or "any value"


@dataclass(frozen=True, slots=True)
class CompiledDenyRule:
    """A deny rule ready to evaluate; ``source`` is ``file:line``."""

    id: str
    conditions: tuple[CompiledConstraint, ...]
    reason: str | None
    source: str = ""


@dataclass(frozen=True, slots=True)
class CompiledGrant:
    """A grant ready to evaluate; ``source`` is ``file:line``."""

    id: str
    agent: str
    tool: str
    constraints: tuple[CompiledConstraint, ...]
    deny_rules: tuple[CompiledDenyRule, ...] = ()
    source: str = ""
    scopes: frozenset[str] = frozenset()
    """OAuth scopes required for the grant to apply to an OAuth caller; empty: none."""
    governance: GrantGovernance = field(default_factory=lambda: GrantGovernance())
    """Row caps, approval and quotas of this grant."""


@dataclass(frozen=True, slots=True)
class GrantGovernance:
    """What a grant asks of the call path beyond allow/deny.

    Attributes:
        max_rows: the most rows one data call may change; None: the tool's default.
        approval_required: every call waits for a human.
        approval_rules: argument conditions (deny-rule semantics) any of which sends a call to a human.
        tool_conditions: conditions the tool evaluates against current state (``change_factor``).
        approval_ttl: seconds an approval stays usable; None: the gateway's default.
        approval_min_approvers: distinct approvers a call needs (2: the two-person rule); None: the
            gateway's ``approvals.min_approvers`` (which also applies when it is larger).
        rates: ``(limit text, count, window seconds)`` quotas per agent on the grant's tools.
        read: what the read tools may read (tables, production or branches, timeout); None: nothing.
    """

    max_rows: int | None = None
    approval_required: bool = False
    approval_rules: tuple[CompiledDenyRule, ...] = ()
    tool_conditions: tuple[Mapping[str, Any], ...] = ()
    approval_ttl: int | None = None
    approval_min_approvers: int | None = None
    rates: tuple[tuple[str, int, int], ...] = ()
    read: ReadLimits | None = None

    def limits(self) -> dict[str, Any]:
        """What a built-in tool reads as ``ToolContext.grant_limits``: ``max_rows``, ``read``."""
        out: dict[str, Any] = {} if self.max_rows is None else {"max_rows": self.max_rows}
        if self.read is not None:
            out["read"] = self.read.model_dump()
        return out


def is_glob(tool: str) -> bool:
    """Whether a grant's ``tool`` is an fnmatch pattern rather than an exact name."""
    return any(ch in tool for ch in "*?[")


def preview(value: Any) -> str:
    """Show an argument value in a reason: backticked, cut to ~64 characters (numbers, bools bare)."""
    if value is None or isinstance(value, bool | int | float):
        return json.dumps(value)
    if isinstance(value, str):
        text = value
    else:
        if isinstance(value, list | tuple):
            value = list(value[:16])  # bound the work on huge arguments; only a prefix is shown
        text = json.dumps(value, ensure_ascii=False, default=repr)
    if len(text) > PREVIEW_CHARS:
        text = text[: PREVIEW_CHARS - 1] + "…"
    return f"`{text}`"


@dataclass(frozen=True, slots=True)
class AgentIndex:
    """One agent's grants split for lookup: exact names in a dict, globs (precompiled) in a list."""

    exact: Mapping[str, tuple[CompiledGrant, ...]]
    globs: tuple[tuple[Callable[[str], object], CompiledGrant], ...]

    @classmethod
    def build(cls, grants: Sequence[CompiledGrant]) -> AgentIndex:
        exact: dict[str, list[CompiledGrant]] = {}
        globs: list[tuple[Callable[[str], object], CompiledGrant]] = []
        for grant in grants:
            if is_glob(grant.tool):
                # fnmatch.translate is case-sensitive and anchored; tool names are case-sensitive.
                globs.append((re.compile(fnmatch.translate(grant.tool)).match, grant))
            else:
                exact.setdefault(grant.tool, []).append(grant)
        return cls(MappingProxyType({k: tuple(v) for k, v in exact.items()}), tuple(globs))

    def matching(self, tool: str) -> tuple[CompiledGrant, ...]:
        """Grants whose tool matches: exact ones first, then globs, each in declaration order."""
        found = self.exact.get(tool, ())
        if self.globs:
            extra = tuple(grant for match, grant in self.globs if match(tool))
            if extra:
                return found + extra
        return found


@dataclass(frozen=True, slots=True, eq=False)
class Policy:
    """The merged, compiled policy of every file: agent name → grants in declaration order.

    Attributes:
        agents: each agent's compiled grants.
        descriptions: each agent's description, where one was written.
        sources: the files the policy was loaded from, in load order.
        version: ``policy_version`` of those files ("" when built from text); each call's audit
            records name the version that decided it.
    """

    agents: Mapping[str, tuple[CompiledGrant, ...]] = field(default_factory=dict)
    descriptions: Mapping[str, str] = field(default_factory=dict)
    sources: tuple[str, ...] = ()
    tables: Mapping[str, TableRule] = field(default_factory=dict)
    metrics: Mapping[str, NamedMetric] = field(default_factory=dict)
    runbooks: Mapping[str, str] = field(default_factory=dict)
    agent_rates: Mapping[str, tuple[tuple[str, int, int], ...]] = field(default_factory=dict)
    version: str = ""
    _index: Mapping[str, AgentIndex] = field(init=False, repr=False)
    _grants: Mapping[str, CompiledGrant] = field(init=False, repr=False)
    _extra: Mapping[str, Any] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        agents = MappingProxyType({name: tuple(grants) for name, grants in self.agents.items()})
        object.__setattr__(self, "agents", agents)
        object.__setattr__(self, "descriptions", MappingProxyType(dict(self.descriptions)))
        index = {name: AgentIndex.build(grants) for name, grants in agents.items()}
        object.__setattr__(self, "_index", MappingProxyType(index))
        grants = {grant.id: grant for grants in agents.values() for grant in grants}
        object.__setattr__(self, "_grants", MappingProxyType(grants))
        # Built-in tools read these as plain data (``ToolContext.policy_extra``); built once per load.
        extra = {
            "tables": {name: rule.model_dump(exclude_none=True) for name, rule in self.tables.items()},
            "metrics": {name: m.model_dump(exclude_none=True) for name, m in self.metrics.items()},
            "runbooks": dict(self.runbooks),
        }
        object.__setattr__(self, "_extra", MappingProxyType(extra))

    def grant(self, grant_id: str) -> CompiledGrant | None:
        """The grant with id ``grant_id`` (the id an ``allow`` decision names), or None."""
        return self._grants.get(grant_id)

    @property
    def extra(self) -> Mapping[str, Any]:
        """``tables``, ``metrics`` and ``runbooks`` as plain JSON-ready data."""
        return self._extra

    def matching_grants(self, agent: str, tool: str) -> tuple[CompiledGrant, ...]:
        """The agent's grants whose tool matches ``tool`` (exact first, then globs); empty if none."""
        index = self._index.get(agent)
        return index.matching(tool) if index is not None else ()

    @property
    def rule_ids(self) -> frozenset[str]:
        """Every grant and deny-rule id in the policy."""
        return frozenset(
            rule_id
            for grants in self.agents.values()
            for grant in grants
            for rule_id in (grant.id, *(rule.id for rule in grant.deny_rules))
        )

    @property
    def scopes(self) -> frozenset[str]:
        """Every OAuth scope some grant asks for (what the gateway advertises as supported)."""
        return frozenset(
            scope for grants in self.agents.values() for grant in grants for scope in grant.scopes
        )
