"""Policy schema (what admins write) and its compiled, evaluation-ready form.

Two layers:

- schema: ``Constraint``, ``DenyRule``, ``Grant``, ``AgentPolicy``, ``PolicyDocument``. Frozen pydantic
  models with ``extra="forbid"``: a misspelt key must be an error, because an ignored ``mx:`` is a limit
  the admin believes in and the gateway does not enforce.
- compiled: ``Check``, ``CompiledConstraint``, ``CompiledDenyRule``, ``CompiledGrant``, ``Policy``.
  Regexes are compiled and value sets built once, and each agent's grants are indexed by exact tool
  name with globs kept apart, so a decision is a dict lookup plus a few function calls.

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
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    field_validator,
    model_validator,
)

PREVIEW_CHARS = 64
# RFC 6749 3.3 scope-token: printable ASCII without space, `"` or `\`.
SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")


def _scalar(value: object) -> object:
    if value is None or isinstance(value, str | bool | int | float):
        return value
    raise ValueError("must be a string, number, boolean or null")


def _number(value: object) -> object:
    # bool is an int subclass in Python; an admin writing `max: true` made a mistake.
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError("must be a number")
    return value


def _length(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("must be a non-negative integer")
    return value


Scalar = Annotated[str | bool | int | float | None, BeforeValidator(_scalar)]
Number = Annotated[int | float, BeforeValidator(_number)]
Length = Annotated[int, BeforeValidator(_length)]


class _Schema(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Constraint(_Schema):
    """Typed limits on one argument; every limit given must hold."""

    in_: tuple[Scalar, ...] | None = Field(default=None, alias="in")
    not_in: tuple[Scalar, ...] | None = None
    pattern: str | None = None
    min: Number | None = None
    max: Number | None = None
    max_length: Length | None = None
    subset_of: tuple[Scalar, ...] | None = None
    required: StrictBool = False
    sensitive: StrictBool = False
    """Audit the value only as a keyed HMAC (``{"hmac": ...}``), never in clear; limits nothing."""

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regex `{value}`: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _bounds_ordered(self) -> Constraint:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        return self


class DenyRule(_Schema):
    """Refuses a call when every condition matches (argument present and satisfying the constraint)."""

    id: str | None = Field(default=None, min_length=1)
    args: dict[str, Constraint] = Field(default_factory=dict)
    reason: str | None = None


class Grant(_Schema):
    """Lets an agent call the tools matching ``tool`` (a name or fnmatch glob) within ``args``."""

    id: str | None = Field(default=None, min_length=1)
    tool: str = Field(min_length=1)
    args: dict[str, Constraint] = Field(default_factory=dict)
    deny: tuple[DenyRule, ...] = ()
    scopes: tuple[str, ...] = ()
    """OAuth scopes a token must all carry for this grant to apply (agent tokens are not filtered)."""

    @field_validator("scopes")
    @classmethod
    def _scope_tokens(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for scope in value:
            if not SCOPE_TOKEN.match(scope):
                raise ValueError(
                    f"scope `{scope}` must be one scope token (no spaces, quotes or backslashes)"
                )
        return value


class AgentPolicy(_Schema):
    """Everything one agent may do."""

    description: str | None = None
    grants: tuple[Grant, ...] = ()


class PolicyDocument(_Schema):
    """One policy file."""

    version: Literal[1]
    agents: dict[Annotated[str, StringConstraints(min_length=1)], AgentPolicy] = Field(default_factory=dict)


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
        if not isinstance(value, list | tuple):
            return f"is not a list (subset_of [{listed}])"
        outside = [item for item in value if _key(item) not in keys]
        return f"has items outside subset_of: {_list_preview(outside)}" if outside else None

    return Check("subset_of", f"subset_of [{listed}]", test)


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
    )


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
    """

    agents: Mapping[str, tuple[CompiledGrant, ...]] = field(default_factory=dict)
    descriptions: Mapping[str, str] = field(default_factory=dict)
    sources: tuple[str, ...] = ()
    _index: Mapping[str, AgentIndex] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        agents = MappingProxyType({name: tuple(grants) for name, grants in self.agents.items()})
        object.__setattr__(self, "agents", agents)
        object.__setattr__(self, "descriptions", MappingProxyType(dict(self.descriptions)))
        index = {name: AgentIndex.build(grants) for name, grants in agents.items()}
        object.__setattr__(self, "_index", MappingProxyType(index))

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
