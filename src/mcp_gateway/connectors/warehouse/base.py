"""The warehouse adapter interface: capabilities, structured predicates and checks, errors.

An adapter gives the ``data`` toolset "git for data" on one warehouse: clone a production table to a
branch, change rows only on that branch, measure the branch, then switch it in (a fast-forward only)
or discard it. Production (``main``) is never written in place.

    WarehouseError              base of every adapter error (a ``GatewayError``)
    ├── UnknownTable            no such table, column or branch
    ├── ProductionWriteRefused  a write, clone target or discard aimed at production
    ├── RowCapExceeded          more rows match than the grant allows; nothing was written
    ├── SwitchConflict          production moved since the branch was cut (not a fast-forward)
    ├── LaterCommitsFound       a rollback would discard production commits made after the switch-in
    ├── QueryRefused            a read (``data.query``/``data.sample_rows``) refused before it ran
    └── NotSupported            the warehouse cannot do this (e.g. rollback without time travel)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, model_validator

from mcp_gateway.errors import GatewayError

MAIN_BRANCH = "main"
# Branch names become part of table names (PostgreSQL, Snowflake) and Iceberg refs: keep them plain.
BRANCH_NAME = re.compile(r"[a-z0-9][a-z0-9_]{0,39}")

Op = Literal["=", "!=", "<", "<=", ">", ">=", "in", "is_null", "not_null"]
MetricKind = Literal["row_count", "null_rate", "duplicate_count", "freshness_seconds", "min", "max", "named"]


class WarehouseError(GatewayError):
    """An adapter refused or failed an operation; the message is safe to show to the agent."""


class UnknownTable(WarehouseError):
    """The table, column or branch does not exist."""


class ProductionWriteRefused(WarehouseError):
    """The operation would write production in place."""


class RowCapExceeded(WarehouseError):
    """More rows match than allowed; nothing was written.

    Args:
        matched: how many rows the predicate matched.
        max_rows: the cap.
    """

    def __init__(self, matched: int, max_rows: int) -> None:
        super().__init__(f"{matched} rows match, over the cap of {max_rows}: nothing was written")
        self.matched = matched
        self.max_rows = max_rows


class SwitchConflict(WarehouseError):
    """The branch does not descend from production's current state; switching would lose changes."""


class NotSupported(WarehouseError):
    """The warehouse has no way to do this operation."""


class QueryRefused(WarehouseError):
    """A read was refused before it ran; ``kind`` names the rule (for the audit record).

    Kinds: ``syntax``, ``multiple_statements``, ``not_a_select``, ``write``, ``locking``, ``session``,
    ``parameter``, ``lateral``, ``recursive``, ``denied_function``, ``unknown_function``,
    ``table_function``, ``unqualified_table``, ``table_not_granted``, ``column``, ``masked_column``,
    ``row_cap``, ``production_not_granted``, ``branch_not_granted``, ``timeout``.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class LaterCommit:
    """A production change a rollback would discard: made after the switch-in being rolled back.

    Attributes:
        id: the Iceberg snapshot id, or (PostgreSQL, Snowflake) production's content digest now.
        at: ISO 8601 time of the commit (Iceberg) or of the switch-in the writes followed (else None).
        operation: Iceberg's snapshot operation (``append``, ``overwrite``, ``delete``), or ``writes``.
        rows_added / rows_removed: rows the commit added / removed (an update counts in both).
        rows_total: production's row count after the commit (Iceberg) or now.
        rows_at_switch_in: production's row count right after the switch-in (PostgreSQL, Snowflake).
    """

    id: str
    at: str | None
    operation: str
    rows_added: int | None = None
    rows_removed: int | None = None
    rows_total: int | None = None
    rows_at_switch_in: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready facts for the answer and the audit record."""
        return {key: value for key, value in asdict(self).items() if value is not None}

    def describe(self) -> str:
        """One line, e.g. ``snapshot 42 (append at 2026-11-24T02:00:00+00:00, +1 rows, total 6)``."""
        when = f" at {self.at}" if self.at else ""
        if self.operation == "unrecorded":
            return (
                f"production as it is now ({self.rows_total} rows): its last swap predates swap records, "
                "so later writes cannot be ruled out"
            )
        if self.operation == "writes":
            head, facts = f"writes since the switch-in{when}", []
        else:
            head, facts = f"snapshot {self.id}", [f"{self.operation}{when}"]
        for sign, n in (("+", self.rows_added), ("-", self.rows_removed)):
            if n:
                facts.append(f"{sign}{n} rows")
        if self.rows_at_switch_in is not None:
            facts.append(f"{self.rows_at_switch_in} rows at switch-in")
        if self.rows_total is not None:
            facts.append(f"total {self.rows_total}")
        return f"{head} ({', '.join(facts)})" if facts else head


class LaterCommitsFound(WarehouseError):
    """Rolling back would silently discard production commits made after the switch-in; nothing changed.

    Args:
        table: the table as the agent named it (inside the warehouse).
        to_snapshot: the rollback target.
        commits: what would be discarded, newest first.
    """

    def __init__(self, table: str, to_snapshot: str, commits: Sequence[LaterCommit]) -> None:
        listed = "; ".join(c.describe() for c in commits)
        super().__init__(
            f"rollback of `{table}` to `{to_snapshot}` refused: it would discard {len(commits)} later "
            f"production commit(s) made after the switch-in: {listed}; pass `discard_later_commits: true` "
            "to discard them anyway"
        )
        self.commits = tuple(commits)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Predicate(_Frozen):
    """One condition on one column; a ``where`` is a list of them, all of which must hold."""

    column: str
    op: Op
    value: Any = None

    @model_validator(mode="after")
    def _value_fits_op(self) -> Predicate:
        if self.op in ("is_null", "not_null"):
            if self.value is not None:
                raise ValueError(f"`{self.op}` takes no value")
        elif self.op == "in":
            if not isinstance(self.value, list) or not self.value:
                raise ValueError("`in` needs a non-empty list value")
            if any(v is None or isinstance(v, (dict, list)) for v in self.value):
                raise ValueError("`in` values must be scalars")
        elif self.value is None or isinstance(self.value, (dict, list)):
            raise ValueError(f"`{self.op}` needs a scalar value (use `is_null` for nulls)")
        return self


class Check(_Frozen):
    """A quality check: a metric and the closed range [min, max] its value must fall in."""

    metric: MetricKind
    column: str | None = None
    columns: tuple[str, ...] | None = None
    name: str | None = None
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _has_its_arguments(self) -> Check:
        if self.metric in ("null_rate", "freshness_seconds", "min", "max") and not self.column:
            raise ValueError(f"metric `{self.metric}` needs `column`")
        if self.metric == "duplicate_count" and not self.columns:
            raise ValueError("metric `duplicate_count` needs `columns`")
        if self.metric == "named" and not self.name:
            raise ValueError("metric `named` needs `name`")
        return self

    def label(self) -> str:
        """A short human name, e.g. ``null_rate(amount)``."""
        if self.metric == "named":
            return f"named({self.name})"
        if self.columns:
            return f"{self.metric}({', '.join(self.columns)})"
        return f"{self.metric}({self.column})" if self.column else self.metric


@dataclass(frozen=True)
class NamedMetric:
    """An admin-defined SQL metric; ``{table}`` in ``sql`` is replaced by the quoted table reference."""

    name: str
    sql: str


@dataclass(frozen=True)
class Capabilities:
    """What the warehouse really does (the toolset reports these to agents as they are)."""

    zero_copy: bool
    atomic_switch: bool
    time_travel: bool


@dataclass(frozen=True)
class SwitchResult:
    """Production's state handle before and after a switch-in or rollback.

    ``discarded`` lists the later production commits a rollback discarded (only ever non-empty when
    the caller passed ``discard_later_commits``); ``before`` still reaches them.
    """

    before: str
    after: str
    discarded: tuple[LaterCommit, ...] = ()


class Warehouse(Protocol):
    """One warehouse. Methods are synchronous (the toolset runs them in a worker thread).

    ``table`` is ``<namespace>.<table>`` (the warehouse prefix already stripped). Every method raises
    ``WarehouseError`` subclasses for refusals the agent should read.
    """

    capabilities: Capabilities

    def clone(self, table: str, branch: str) -> str:
        """Cut ``branch`` from production; return its handle (snapshot id or branch table name)."""
        ...

    def update_rows(
        self, table: str, branch: str, where: Sequence[Predicate], values: Mapping[str, Any], max_rows: int
    ) -> int:
        """Set ``values`` on branch rows matching ``where``; refuse (writing nothing) over ``max_rows``."""
        ...

    def delete_rows(self, table: str, branch: str, where: Sequence[Predicate], max_rows: int) -> int:
        """Delete the branch rows matching ``where``; refuse (writing nothing) over ``max_rows``."""
        ...

    def metrics(
        self, table: str, branch: str | None, checks: Sequence[Check], named: Mapping[str, NamedMetric]
    ) -> list[Any]:
        """The value of each check's metric on the branch (production when ``branch`` is None)."""
        ...

    def check_fast_forward(self, table: str, branch: str) -> None:
        """Raise ``SwitchConflict`` if production moved since the branch was cut (changes nothing);
        ``switch_in`` checks again under its own lock, so this only spares a doomed approval."""
        ...

    def switch_in(self, table: str, branch: str) -> SwitchResult:
        """Make the branch production if production has not moved since the branch was cut."""
        ...

    def rollback(self, table: str, to_snapshot: str, discard_later_commits: bool = False) -> SwitchResult:
        """Set production back to an earlier state handle.

        Production commits made after the switch-in being rolled back (a pipeline's append, say) are
        refused with ``LaterCommitsFound`` naming them, unless ``discard_later_commits``; the result
        then lists them in ``discarded``.
        """
        ...

    def discard_branch(self, table: str, branch: str) -> None:
        """Drop the branch; production is untouched."""
        ...

    def current_snapshot(self, table: str) -> str | None:
        """Production's current state handle (None for an Iceberg table without snapshots)."""
        ...

    def close(self) -> None:
        """Release pooled connections (the adapter may be used again afterwards)."""
        ...


def check_branch(branch: str) -> str:
    """Validate a branch name for a write or clone target.

    Raises:
        ProductionWriteRefused: the branch is ``main``.
        WarehouseError: the name is not lowercase letters, digits and underscores (max 40).
    """
    if branch == MAIN_BRANCH:
        raise ProductionWriteRefused(
            "branch `main` is production and is never written in place: clone to a branch first"
        )
    if not BRANCH_NAME.fullmatch(branch):
        raise WarehouseError(f"invalid branch name `{branch}`: use lowercase letters, digits, underscores")
    return branch


def split_table(table: str) -> tuple[str, str]:
    """Split ``namespace.table`` into its two parts.

    Raises:
        UnknownTable: not exactly two non-empty dot-separated parts.
    """
    parts = table.split(".")
    if len(parts) != 2 or not all(parts):
        raise UnknownTable(f"table `{table}` is not `<namespace>.<table>`")
    return parts[0], parts[1]


def check_columns(names: Sequence[str], known: Sequence[str], table: str) -> None:
    """Raise ``UnknownTable`` naming the first column not in ``known``."""
    for name in names:
        if name not in known:
            raise UnknownTable(f"table `{table}` has no column `{name}`")
