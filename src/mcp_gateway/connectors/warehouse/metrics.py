"""Quality metrics: SQL for SQL warehouses, Arrow compute for Iceberg, and judging checks.

The built-in metrics are generated with sqlglot (identifiers always quoted) so one builder serves
PostgreSQL, Snowflake and DuckDB. Named metrics are admin-trusted SQL from policy; ``{table}`` is
replaced by the quoted reference to the table or branch being measured.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlglot import exp

from mcp_gateway.connectors.warehouse.base import Check, NamedMetric, UnknownTable, WarehouseError

if TYPE_CHECKING:
    import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow ships no type stubs


def quoted_table(parts: Sequence[str], dialect: str) -> str:
    """``"a"."b"`` for the given dialect, every part quoted (quotes inside names are escaped)."""
    return ".".join(exp.to_identifier(p, quoted=True).sql(dialect=dialect) for p in parts)


def _table_expr(parts: Sequence[str]) -> exp.Table:
    ids = [exp.to_identifier(p, quoted=True) for p in parts]
    if len(ids) == 1:
        return exp.Table(this=ids[0])
    if len(ids) == 2:
        return exp.Table(this=ids[1], db=ids[0])
    return exp.Table(this=ids[2], db=ids[1], catalog=ids[0])


def _col(name: str) -> exp.Column:
    return exp.column(name, quoted=True)


def metric_sql(check: Check, table: Sequence[str], dialect: str) -> str:
    """The SELECT computing the raw value(s) of a built-in metric; post-process with ``finish_metric``.

    Raises:
        WarehouseError: ``check`` is a named metric (those are SQL from policy).
    """
    source = _table_expr(table)
    select: exp.Select
    if check.metric == "row_count":
        select = exp.select(exp.Count(this=exp.Star())).from_(source)
    elif check.metric == "null_rate":
        select = exp.select(exp.Count(this=exp.Star()), exp.Count(this=_col(str(check.column)))).from_(source)
    elif check.metric == "duplicate_count":
        keys = [_col(c) for c in check.columns or ()]
        groups = (
            exp.select(exp.alias_(exp.Count(this=exp.Star()), "n", quoted=True))
            .from_(source)
            .group_by(*keys)
            .having(exp.GT(this=exp.Count(this=exp.Star()), expression=exp.Literal.number(1)))
        )
        excess = exp.Sub(this=exp.column("n", quoted=True), expression=exp.Literal.number(1))
        select = exp.select(
            exp.Coalesce(this=exp.Sum(this=excess), expressions=[exp.Literal.number(0)])
        ).from_(groups.subquery("d", copy=False))
    elif check.metric in ("freshness_seconds", "max"):
        select = exp.select(exp.Max(this=_col(str(check.column)))).from_(source)
    elif check.metric == "min":
        select = exp.select(exp.Min(this=_col(str(check.column)))).from_(source)
    else:
        raise WarehouseError(f"metric `{check.metric}` has no built-in SQL")
    return select.sql(dialect=dialect)


def finish_metric(check: Check, row: Sequence[Any], now: dt.datetime | None = None) -> Any:
    """Turn the row ``metric_sql`` returned into the metric's value."""
    if check.metric == "null_rate":
        total, non_null = int(row[0]), int(row[1])
        return 0.0 if total == 0 else (total - non_null) / total
    if check.metric == "freshness_seconds":
        return age_seconds(row[0], now)
    return plain(row[0])


def age_seconds(newest: Any, now: dt.datetime | None = None) -> float | None:
    """Seconds since ``newest`` (a datetime or date); None when the column is empty.

    Raises:
        WarehouseError: the column does not hold timestamps.
    """
    if newest is None:
        return None
    if isinstance(newest, dt.datetime):
        when = newest if newest.tzinfo else newest.replace(tzinfo=dt.UTC)
    elif isinstance(newest, dt.date):
        when = dt.datetime(newest.year, newest.month, newest.day, tzinfo=dt.UTC)
    else:
        raise WarehouseError("freshness needs a timestamp or date column")
    return ((now or dt.datetime.now(dt.UTC)) - when).total_seconds()


def plain(value: Any) -> Any:
    """A JSON-ready form of a database value (Decimal → float, dates → ISO text)."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value


def named_sql(metric: NamedMetric, table_ref: str) -> str:
    """The admin's SQL with ``{table}`` replaced by ``table_ref`` (already quoted)."""
    return metric.sql.replace("{table}", table_ref)


def arrow_metric(check: Check, data: pa.Table, now: dt.datetime | None = None) -> Any:
    """A built-in metric computed over an Arrow table (Iceberg branch or snapshot data)."""
    import pyarrow.compute as pc  # type: ignore[import-untyped]  # pyarrow ships no type stubs

    for column in [*(check.columns or ()), *([check.column] if check.column else [])]:
        if column not in data.column_names:
            raise UnknownTable(f"no column `{column}`")
    if check.metric == "row_count":
        return data.num_rows
    if check.metric == "null_rate":
        column = data.column(str(check.column))
        return 0.0 if data.num_rows == 0 else column.null_count / data.num_rows
    if check.metric == "duplicate_count":
        keys = list(check.columns or ())
        groups = data.select(keys).group_by(keys).aggregate([])
        return data.num_rows - groups.num_rows
    column = data.column(str(check.column))
    if check.metric == "min":
        return plain(pc.min(column).as_py())
    value = pc.max(column).as_py()
    if check.metric == "freshness_seconds":
        return age_seconds(value, now)
    return plain(value)


def run_named_over_arrow(metric: NamedMetric, data: pa.Table) -> Any:
    """Run a named metric's SQL with DuckDB over ``data`` (exposed as ``"branch_data"``).

    Raises:
        WarehouseError: the SQL failed or returned no row.
    """
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        con.register("branch_data", data)
        # Admin-trusted SQL still gets no file or network access from inside the gateway.
        con.execute("SET enable_external_access = false")
        row = con.execute(named_sql(metric, '"branch_data"')).fetchone()
    except duckdb.Error as exc:
        raise WarehouseError(f"named metric `{metric.name}` failed: {type(exc).__name__}") from exc
    finally:
        con.close()
    if row is None:
        raise WarehouseError(f"named metric `{metric.name}` returned no row")
    return plain(row[0])


def judge(check: Check, value: Any) -> dict[str, Any]:
    """A check's result: the value and whether it lies within [min, max].

    A missing value (e.g. the max of an empty column) passes only when the check sets no bounds.
    """
    bounded = check.min is not None or check.max is not None
    passed = True
    if bounded:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(float(value)):
            passed = False
        else:
            passed = (check.min is None or value >= check.min) and (check.max is None or value <= check.max)
    return {"check": check.label(), "value": value, "min": check.min, "max": check.max, "passed": passed}


def resolve_named(checks: Sequence[Check], defined: Mapping[str, NamedMetric]) -> dict[str, NamedMetric]:
    """The named metrics ``checks`` refer to.

    Raises:
        WarehouseError: a check names a metric policy does not define.
    """
    out: dict[str, NamedMetric] = {}
    for check in checks:
        if check.metric == "named":
            name = str(check.name)
            if name not in defined:
                raise WarehouseError(f"no named metric `{name}` is defined in policy")
            out[name] = defined[name]
    return out
