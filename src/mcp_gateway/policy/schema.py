"""Policy schema: what admins write, validated by frozen pydantic models with ``extra="forbid"``.

A misspelt key must be an error, because an ignored ``mx:`` is a limit the admin believes in and the
gateway does not enforce. ``model.py`` holds the compiled form and the semantics.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal

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

from mcp_gateway.policy.masking import ColumnMask, MaskMode

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
    properties: dict[str, Constraint] | None = None
    """Constraints on the members of an object argument (``fields: {properties: {Amount: {max: 5e6}}}``);
    ``subset_of`` on an object limits its keys."""

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


NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
_RATE = re.compile(r"^\s*(\d+)\s*(?:/|per)\s*(second|minute|hour|day)s?\s*$")
RATE_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def _rate(value: object) -> object:
    if not isinstance(value, str) or not (match := _RATE.match(value)) or int(match.group(1)) < 1:
        raise ValueError(f"rate `{value}` must look like `3/hour` (units: second, minute, hour, day)")
    return f"{int(match.group(1))}/{match.group(2)}"


RateLimit = Annotated[str, BeforeValidator(_rate)]


def parse_rate(text: str) -> tuple[int, int]:
    """``"3/hour"`` → ``(3, 3600)``: at most 3 calls in any 3,600 seconds. Raises ``ValueError``."""
    match = _RATE.match(text)
    if match is None:
        raise ValueError(f"not a rate: {text!r}")
    return int(match.group(1)), RATE_UNITS[match.group(2)]


class QualityCheck(_Schema):
    """A data-quality check; passes when the metric's value lies within [min, max]."""

    metric: Literal["row_count", "null_rate", "duplicate_count", "freshness_seconds", "min", "max", "named"]
    column: str | None = None
    columns: tuple[str, ...] | None = None
    name: str | None = None
    min: Number | None = None
    max: Number | None = None

    @model_validator(mode="after")
    def _complete(self) -> QualityCheck:
        needs_column = {"null_rate", "freshness_seconds", "min", "max"}
        if self.metric in needs_column and not self.column:
            raise ValueError(f"check `{self.metric}` needs `column`")
        if self.metric == "duplicate_count" and not self.columns:
            raise ValueError("check `duplicate_count` needs `columns` (the key)")
        if self.metric == "named" and not self.name:
            raise ValueError("check `named` needs `name` (a metric under `metrics`)")
        if self.min is None and self.max is None:
            raise ValueError(f"check `{self.metric}` needs `min` or `max`")
        return self


class DbtGateRule(_Schema):
    """dbt tests that must pass on a branch before it is switched in (run by dbt Core on the branch)."""

    project: str = Field(min_length=1)
    """A ``dbt_core`` orchestrator in ``gateway.yaml``."""
    select: str = Field(min_length=1, pattern=r"^[^-\s][^\n]*$")
    """A dbt selector, e.g. ``source:sales.opportunities+`` (the source's tests and all built on it)."""


class TableRule(_Schema):
    """How a table (or tables matching a pattern) is governed."""

    switch_in_checks: tuple[QualityCheck, ...] = ()
    """Checks run on the branch; any failure refuses the switch-in."""
    switch_in_approval: StrictBool = False
    """A switch-in of this table waits for a human's approval."""
    metrics: tuple[str, ...] = ()
    """Named metrics agents may compute on this table."""
    switch_in_dbt: DbtGateRule | None = None
    """dbt tests run on the branch before a switch-in (PostgreSQL warehouses); a failing one refuses it."""
    mask: dict[str, MaskMode | ColumnMask] = Field(default_factory=dict)
    """Columns the read tools mask: ``drop``, ``hash`` or ``partial`` (``policy/masking.py``)."""


class NamedMetric(_Schema):
    """Admin-written SQL returning one value; ``{table}`` is replaced by the quoted table reference."""

    sql: str = Field(min_length=1)
    description: str | None = None

    @field_validator("sql")
    @classmethod
    def _has_table(cls, value: str) -> str:
        if "{table}" not in value:
            raise ValueError("metric sql must name the table as `{table}`")
        return value


class ChangeFactor(_Schema):
    """Approval when a numeric field changes by more than ``over`` times (either direction)."""

    field: str = Field(min_length=1)
    over: Number

    @field_validator("over")
    @classmethod
    def _above_one(cls, value: float) -> float:
        if value <= 1:
            raise ValueError("`over` must be greater than 1")
        return value


class ApprovalCondition(_Schema):
    """One condition that sends a call to a human: argument conditions (as in deny rules) or a change
    factor the tool evaluates against the current state."""

    args: dict[str, Constraint] = Field(default_factory=dict)
    change_factor: ChangeFactor | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> ApprovalCondition:
        if bool(self.args) == (self.change_factor is not None):
            raise ValueError("an approval condition needs exactly one of `args` or `change_factor`")
        return self


def _approval(value: object) -> object:
    if value == "required":
        return {"required": True}
    return value


class ApprovalSchema(_Schema):
    required: StrictBool = False
    when: tuple[ApprovalCondition, ...] = ()
    ttl_seconds: Length | None = None
    """How long an approval stays usable once granted (default from gateway.yaml)."""
    min_approvers: Annotated[int, Field(ge=1, le=10, strict=True)] | None = None
    """Distinct admins who must approve (2: the two-person rule, for what this grant makes critical);
    ``approvals.min_approvers`` in gateway.yaml applies when it is larger."""

    @model_validator(mode="after")
    def _says_something(self) -> ApprovalSchema:
        if not self.required and not self.when:
            raise ValueError("approval needs `required` or `when` (or write `approval: required`)")
        return self


Approval = Annotated[ApprovalSchema, BeforeValidator(_approval)]


class DenyRule(_Schema):
    """Refuses a call when every condition matches (argument present and satisfying the constraint)."""

    id: str | None = Field(default=None, min_length=1)
    args: dict[str, Constraint] = Field(default_factory=dict)
    reason: str | None = None


class ReadLimits(_Schema):
    """What the read tools (``data.sample_rows``, ``data.query``) may read under a grant."""

    tables: tuple[str, ...] = ()
    """fnmatch patterns of ``<warehouse>.<namespace>.<table>`` names; none: nothing is readable."""
    production: StrictBool = False
    """Whether production (``main``) may be read; branches are readable when ``branches`` is true."""
    branches: StrictBool = True
    timeout_ms: Annotated[int, Field(ge=1, le=30000, strict=True)] | None = None
    """Statement timeout of one read (default: the warehouse's ``statement_timeout_ms``, max 30 s)."""


class Grant(_Schema):
    """Lets an agent call the tools matching ``tool`` (a name or fnmatch glob) within ``args``."""

    id: str | None = Field(default=None, min_length=1)
    tool: str = Field(min_length=1)
    args: dict[str, Constraint] = Field(default_factory=dict)
    deny: tuple[DenyRule, ...] = ()
    scopes: tuple[str, ...] = ()
    """OAuth scopes a token must all carry for this grant to apply (agent tokens are not filtered)."""
    max_rows: Length | None = None
    """For data tools: the most rows one call may change or read (default 100; reads at most 1,000)."""
    read: ReadLimits | None = None
    """For the read tools: the tables, production or branches, and timeout this grant allows."""
    approval: Approval | None = None
    """``required`` (every call waits for a human) or ``{when: [conditions]}``."""
    rate: tuple[RateLimit, ...] = ()
    """Quotas for this agent on the tools this grant matches, e.g. ``["3/hour", "20/day"]``."""

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
    rate: tuple[RateLimit, ...] = ()
    """Quotas on all of this agent's calls together."""


class PolicyDocument(_Schema):
    """One policy file."""

    version: Literal[1]
    agents: dict[Annotated[str, StringConstraints(min_length=1)], AgentPolicy] = Field(default_factory=dict)
    tables: dict[Annotated[str, StringConstraints(min_length=1)], TableRule] = Field(default_factory=dict)
    """Governance of data tables by name or fnmatch pattern (``lake.sales.*``)."""
    metrics: dict[Annotated[str, StringConstraints(pattern=NAME_PATTERN)], NamedMetric] = Field(
        default_factory=dict
    )
    """Named SQL metrics admins define; agents choose them by name and never send SQL."""
    runbooks: dict[Annotated[str, StringConstraints(min_length=1)], str] = Field(default_factory=dict)
    """Human-written notes per job, shown by ``ops.get_failure_context`` and as MCP resources."""
