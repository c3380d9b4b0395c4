"""Apache Iceberg through a pyiceberg SQL catalog: branches are Iceberg refs (zero copy).

Writes go to a branch ref (``overwrite``/``delete`` with ``branch=``); reads of a branch scan the
branch's head snapshot. Switch-in fast-forwards ``main`` to the branch head, and only when the branch
descends from main's current snapshot (pyiceberg has no fast-forward, so ancestry is walked here).
Every ref change is committed with pyiceberg's "ref still points where I read it" requirement, so a
concurrent writer makes the commit fail instead of being overwritten.
"""

from __future__ import annotations

import datetime as dt
import functools
import operator
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from mcp_gateway.connectors.warehouse.base import (
    MAIN_BRANCH,
    Capabilities,
    Check,
    LaterCommit,
    LaterCommitsFound,
    NamedMetric,
    Predicate,
    ProductionWriteRefused,
    RowCapExceeded,
    SwitchConflict,
    SwitchResult,
    UnknownTable,
    WarehouseError,
    check_branch,
    check_columns,
    split_table,
)
from mcp_gateway.connectors.warehouse.metrics import arrow_metric, run_named_over_arrow

if TYPE_CHECKING:
    import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow ships no type stubs
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.expressions import BooleanExpression
    from pyiceberg.table import Table
    from pyiceberg.table.snapshots import Summary


def to_expression(where: Sequence[Predicate]) -> BooleanExpression:
    """The pyiceberg expression for ``where`` (all predicates must hold; empty matches every row)."""
    from pyiceberg import expressions as ex

    # pyiceberg's expression classes are typed for keyword construction only; build them dynamically.
    def one(p: Predicate) -> BooleanExpression:
        simple: dict[str, Any] = {
            "=": ex.EqualTo,
            "!=": ex.NotEqualTo,
            "<": ex.LessThan,
            "<=": ex.LessThanOrEqual,
            ">": ex.GreaterThan,
            ">=": ex.GreaterThanOrEqual,
        }
        if p.op in simple:
            result: BooleanExpression = simple[p.op](p.column, p.value)
            return result
        unary: dict[str, Any] = {"is_null": ex.IsNull, "not_null": ex.NotNull}
        if p.op == "in":
            made: BooleanExpression = cast(Any, ex.In)(p.column, tuple(p.value))
        else:
            made = unary[p.op](p.column)
        return made

    if not where:
        return ex.AlwaysTrue()
    return functools.reduce(operator.and_, [one(p) for p in where])


class IcebergWarehouse:
    """The ``Warehouse`` adapter for Iceberg tables in a SQL catalog.

    Args:
        catalog: an open pyiceberg ``SqlCatalog``.
    """

    capabilities = Capabilities(zero_copy=True, atomic_switch=True, time_travel=True)

    def __init__(self, catalog: SqlCatalog) -> None:
        self._catalog = catalog

    @classmethod
    def connect(cls, catalog_uri: str, warehouse: str, catalog_name: str) -> IcebergWarehouse:
        """Open (creating its tables if needed) the SQL catalog at ``catalog_uri``."""
        from pyiceberg.catalog.sql import SqlCatalog

        return cls(SqlCatalog(catalog_name, uri=catalog_uri, warehouse=warehouse))

    def close(self) -> None:
        self._catalog.engine.dispose()

    def _load(self, table: str) -> Table:
        from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

        namespace, name = split_table(table)
        try:
            return self._catalog.load_table((namespace, name))
        except (NoSuchTableError, NoSuchNamespaceError) as exc:
            raise UnknownTable(f"no table `{table}`") from exc

    @staticmethod
    def _head(tbl: Table, branch: str, table: str) -> int:
        ref = tbl.metadata.refs.get(branch)
        if ref is None:
            raise UnknownTable(f"table `{table}` has no branch `{branch}`")
        return ref.snapshot_id

    def current_snapshot(self, table: str) -> str | None:
        snap = self._load(table).current_snapshot()
        return None if snap is None else str(snap.snapshot_id)

    def clone(self, table: str, branch: str) -> str:
        check_branch(branch)
        tbl = self._load(table)
        if branch in tbl.metadata.refs:
            raise WarehouseError(f"table `{table}` already has a branch `{branch}`")
        snap = tbl.current_snapshot()
        if snap is None:
            raise WarehouseError(f"table `{table}` has no snapshot yet: nothing to branch from")
        with _committing(table):
            tbl.manage_snapshots().create_branch(snap.snapshot_id, branch).commit()
        return str(snap.snapshot_id)

    def _read(self, tbl: Table, branch: str | None, table: str, where: Sequence[Predicate] = ()) -> pa.Table:
        check_columns([p.column for p in where], tbl.schema().column_names, table)
        if branch is None:
            snap = tbl.current_snapshot()
            if snap is None:
                return tbl.schema().as_arrow().empty_table()
            snapshot_id = snap.snapshot_id
        else:
            snapshot_id = self._head(tbl, branch, table)
        return tbl.scan(row_filter=to_expression(where), snapshot_id=snapshot_id).to_arrow()

    def update_rows(
        self, table: str, branch: str, where: Sequence[Predicate], values: Mapping[str, Any], max_rows: int
    ) -> int:
        check_branch(branch)
        tbl = self._load(table)
        check_columns(list(values), tbl.schema().column_names, table)
        matched = self._read(tbl, branch, table, where)
        if matched.num_rows > max_rows:
            raise RowCapExceeded(matched.num_rows, max_rows)
        if matched.num_rows == 0:
            return 0
        updated = matched
        for column, value in values.items():
            index = updated.schema.get_field_index(column)
            field = updated.schema.field(index)
            updated = updated.set_column(index, field, _constant(value, field.type, matched.num_rows, column))
        with _committing(table):
            with tbl.transaction() as tx:
                tx.overwrite(updated, overwrite_filter=to_expression(where), branch=branch)
        return int(matched.num_rows)

    def delete_rows(self, table: str, branch: str, where: Sequence[Predicate], max_rows: int) -> int:
        check_branch(branch)
        tbl = self._load(table)
        matched = int(self._read(tbl, branch, table, where).num_rows)
        if matched > max_rows:
            raise RowCapExceeded(matched, max_rows)
        if matched:
            with _committing(table):
                tbl.delete(to_expression(where), branch=branch)
        return matched

    def metrics(
        self, table: str, branch: str | None, checks: Sequence[Check], named: Mapping[str, NamedMetric]
    ) -> list[Any]:
        tbl = self._load(table)
        data = self._read(tbl, branch, table)
        return [
            run_named_over_arrow(named[str(c.name)], data) if c.metric == "named" else arrow_metric(c, data)
            for c in checks
        ]

    def _fast_forward(self, tbl: Table, table: str, branch: str) -> tuple[int | None, int]:
        """(main's snapshot, the branch head) if main is an ancestor of the head, else ``SwitchConflict``."""
        check_branch(branch)
        head = self._head(tbl, branch, table)
        main = tbl.current_snapshot()
        main_id = None if main is None else main.snapshot_id
        lineage = _ancestry(tbl, head)
        if main_id is not None and main_id not in lineage:
            main_history = set(_ancestry(tbl, main_id))
            base = next((s for s in lineage if s in main_history), None)
            raise SwitchConflict(
                f"main moved since branch `{branch}` was cut: main is now at snapshot {main_id}, "
                f"the branch is based on snapshot {base}; clone again and redo the fix"
            )
        return main_id, head

    def check_fast_forward(self, table: str, branch: str) -> None:
        self._fast_forward(self._load(table), table, branch)

    def switch_in(self, table: str, branch: str) -> SwitchResult:
        tbl = self._load(table)
        main_id, head = self._fast_forward(tbl, table, branch)
        if head != main_id:
            with _committing(table):
                tbl.manage_snapshots().set_current_snapshot(snapshot_id=head).commit()
        return SwitchResult(before=str(main_id), after=str(head))

    def rollback(self, table: str, to_snapshot: str, discard_later_commits: bool = False) -> SwitchResult:
        tbl = self._load(table)
        main = tbl.current_snapshot()
        lineage = [] if main is None else _ancestry(tbl, main.snapshot_id)
        if not to_snapshot.isdigit() or int(to_snapshot) not in lineage:
            raise WarehouseError(f"snapshot `{to_snapshot}` is not in the history of `{table}` main")
        assert main is not None  # noqa: S101 - the target is in main's (non-empty) lineage
        later = later_commits(tbl, lineage, int(to_snapshot))
        if later and not discard_later_commits:
            raise LaterCommitsFound(table, to_snapshot, later)
        if int(to_snapshot) != main.snapshot_id:
            # The commit requires main still at the head read above: a pipeline committing after this
            # check fails the rollback (SwitchConflict) instead of being discarded unseen.
            with _committing(table):
                tbl.manage_snapshots().rollback_to_snapshot(int(to_snapshot)).commit()
        return SwitchResult(before=str(main.snapshot_id), after=to_snapshot, discarded=tuple(later))

    def discard_branch(self, table: str, branch: str) -> None:
        if branch == MAIN_BRANCH:
            raise ProductionWriteRefused("branch `main` is production and cannot be discarded")
        tbl = self._load(table)
        self._head(tbl, branch, table)
        with _committing(table):
            tbl.manage_snapshots().remove_branch(branch).commit()


@contextmanager
def _committing(table: str) -> Iterator[None]:
    """Map pyiceberg's commit and write errors to the agent-readable ones."""
    from pyiceberg.exceptions import CommitFailedException

    try:
        yield
    except CommitFailedException as exc:
        raise SwitchConflict(f"`{table}` changed while this operation ran; read it again and retry") from exc
    except ValueError as exc:
        raise WarehouseError(f"pyiceberg refused the change to `{table}` ({type(exc).__name__})") from exc


def later_commits(tbl: Table, lineage: Sequence[int], target: int) -> list[LaterCommit]:
    """The commits on main after the switch-in that left ``target``, newest first.

    Rolling back to ``target`` drops every snapshot above it in main's ``lineage``. What the rollback
    is for is the switch-in that moved main away from ``target``: per the snapshot log, main's next
    move after it last stood at ``target``, when that move went to a snapshot that already existed
    (a branch head: its log time is later than its own commit time; a commit made on main itself is
    logged at its commit time). That snapshot and its ancestors are the switch-in's; every dropped
    snapshot above it was committed to production afterwards. When no such switch-in can be found
    (``target`` never was main's head, the log was expired, or main's next move was a plain commit),
    every dropped snapshot counts.
    """
    dropped = list(lineage[: lineage.index(target)])
    log = list(tbl.metadata.snapshot_log)
    last = max((i for i, entry in enumerate(log) if entry.snapshot_id == target), default=None)
    if last is not None and last + 1 < len(log):
        moved = log[last + 1]
        snap = tbl.metadata.snapshot_by_id(moved.snapshot_id)
        switched_in = snap is not None and moved.timestamp_ms > snap.timestamp_ms
        if switched_in and moved.snapshot_id in dropped:
            dropped = dropped[: dropped.index(moved.snapshot_id)]
    out: list[LaterCommit] = []
    for snapshot_id in dropped:
        snap = tbl.metadata.snapshot_by_id(snapshot_id)
        summary = snap.summary if snap is not None else None
        out.append(
            LaterCommit(
                id=str(snapshot_id),
                at=None
                if snap is None
                else dt.datetime.fromtimestamp(snap.timestamp_ms / 1000, dt.UTC).isoformat(),
                operation="unknown" if summary is None else str(summary.operation.value),
                rows_added=_count(summary, "added-records"),
                rows_removed=_count(summary, "deleted-records"),
                rows_total=_count(summary, "total-records"),
            )
        )
    return out


def _count(summary: Summary | None, key: str) -> int | None:
    value = None if summary is None else summary.additional_properties.get(key)
    return int(value) if value is not None and str(value).isdigit() else None


def _ancestry(tbl: Table, snapshot_id: int) -> list[int]:
    """``snapshot_id`` and its parents, newest first."""
    out: list[int] = []
    current: int | None = snapshot_id
    while current is not None and current not in out:
        out.append(current)
        snap = tbl.metadata.snapshot_by_id(current)
        current = None if snap is None else snap.parent_snapshot_id
    return out


def _constant(value: Any, arrow_type: pa.DataType, length: int, column: str) -> pa.Array:
    """``value`` repeated ``length`` times as ``arrow_type``.

    Raises:
        WarehouseError: the value does not convert to the column's type.
    """
    import pyarrow as pa

    try:
        if pa.types.is_decimal(arrow_type) and value is not None:
            value = Decimal(str(value))
        if value is None or not isinstance(value, str) or pa.types.is_string(arrow_type):
            return pa.array([value] * length, type=arrow_type)
        # JSON carries dates and timestamps as text: let Arrow parse them.
        return pa.array([value] * length, type=pa.string()).cast(arrow_type)
    except (pa.ArrowException, ValueError, TypeError, ArithmeticError) as exc:
        raise WarehouseError(f"value for column `{column}` does not fit its type {arrow_type}") from exc
