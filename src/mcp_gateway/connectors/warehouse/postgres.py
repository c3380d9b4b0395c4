"""PostgreSQL tables: a branch is a full copy ``<table>__branch__<branch>`` (no zero-copy clone).

Clone records a content checksum of production in ``_gateway_branches``; switch-in locks production,
compares the checksum (the fast-forward check: production unchanged since the clone), and swaps the
tables by renaming in one transaction. The old production table stays as
``<table>__backup__<timestamp>``, the "before" handle that ``rollback`` swaps back. Every swap (switch-in
or rollback) records production's checksum, row count and transaction id in ``_gateway_swaps``, so a
rollback can tell that a pipeline wrote production after the swap (checksum changed) and say how much
(rows whose ``xmin`` is newer than the swap's transaction) instead of discarding it unseen.
Identifiers go through ``psycopg.sql.Identifier``; values are bind parameters.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from mcp_gateway.connectors.warehouse.base import (
    MAIN_BRANCH,
    Capabilities,
    Check,
    LaterCommitsFound,
    NamedMetric,
    NotSupported,
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
from mcp_gateway.connectors.warehouse.metrics import finish_metric, metric_sql, named_sql, plain, quoted_table
from mcp_gateway.connectors.warehouse.pg_swaps import SWAPS_TABLE, record_swap, writes_since_swap

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

META_TABLE = "_gateway_branches"
BRANCH_MARK = "__branch__"
BACKUP_MARK = "__backup__"
_PG_NAME_MAX = 63


def where_sql(where: Sequence[Predicate]) -> tuple[sql.Composable, list[Any]]:
    """The ``WHERE`` condition for ``where`` and its bind parameters (``TRUE`` when empty)."""
    from psycopg import sql

    parts: list[sql.Composable] = []
    params: list[Any] = []
    for p in where:
        col = sql.Identifier(p.column)
        if p.op == "is_null":
            parts.append(sql.SQL("{} IS NULL").format(col))
        elif p.op == "not_null":
            parts.append(sql.SQL("{} IS NOT NULL").format(col))
        elif p.op == "in":
            marks = sql.SQL(", ").join(sql.Placeholder() for _ in p.value)
            parts.append(sql.SQL("{} IN ({})").format(col, marks))
            params.extend(p.value)
        else:
            # p.op is one of the six comparison literals the Predicate model allows, never agent text.
            op = "<>" if p.op == "!=" else p.op
            parts.append(sql.SQL("{} " + op + " {}").format(col, sql.Placeholder()))
            params.append(p.value)
    return (sql.SQL(" AND ").join(parts) if parts else sql.SQL("TRUE")), params


class PostgresWarehouse:
    """The ``Warehouse`` adapter for tables in one PostgreSQL schema.

    Args:
        dsn: connection string (already resolved; never logged).
        schema: the exposed schema; table names must be ``<schema>.<table>``.
        statement_timeout_ms: bound on each metric query.
    """

    capabilities = Capabilities(zero_copy=False, atomic_switch=True, time_travel=False)

    def __init__(self, dsn: str, schema: str = "public", statement_timeout_ms: int = 5000) -> None:
        self._dsn = dsn
        self._schema = schema
        self._timeout_ms = statement_timeout_ms

    def __repr__(self) -> str:
        return f"PostgresWarehouse(schema={self._schema!r})"

    def close(self) -> None:
        """Nothing pooled: every operation opens and closes its own connection."""

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Cursor[Any]]:
        import psycopg

        try:
            with (
                psycopg.connect(self._dsn, autocommit=True) as conn,
                conn.transaction(),
                conn.cursor() as cur,
            ):
                yield cur
        except psycopg.errors.QueryCanceled as exc:
            raise WarehouseError("postgresql query hit the statement timeout") from exc
        except psycopg.DataError as exc:
            raise WarehouseError(f"a value does not fit its column's type ({type(exc).__name__})") from exc
        except psycopg.OperationalError as exc:
            # The libpq message can echo the DSN's host/user; say only what kind of failure it was.
            raise WarehouseError(f"postgresql unavailable ({type(exc).__name__})") from exc
        except psycopg.Error as exc:
            # Server messages can quote row values; name only the error class.
            raise WarehouseError(f"postgresql refused the statement ({type(exc).__name__})") from exc

    def _id(self, name: str) -> sql.Identifier:
        from psycopg import sql

        return sql.Identifier(self._schema, name)

    def _production(self, table: str) -> str:
        namespace, name = split_table(table)
        if (
            namespace != self._schema
            or BRANCH_MARK in name
            or BACKUP_MARK in name
            or name in (META_TABLE, SWAPS_TABLE)
        ):
            raise UnknownTable(f"no table `{table}`")
        return name

    @staticmethod
    def _branch_table(name: str, branch: str) -> str:
        full = f"{name}{BRANCH_MARK}{check_branch(branch)}"
        if len(full.encode()) > _PG_NAME_MAX:
            raise WarehouseError(f"branch table name `{full}` is longer than postgresql allows")
        return full

    def _columns(self, cur: psycopg.Cursor[Any], name: str, table: str) -> list[str]:
        cur.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
            [self._schema, name],
        )
        columns = [str(r[0]) for r in cur.fetchall()]
        if not columns:
            raise UnknownTable(f"no table `{table}`")
        return columns

    def _digest(self, cur: psycopg.Cursor[Any], name: str) -> tuple[int, str]:
        """(row count, checksum text) of a table."""
        from psycopg import sql

        # Order-independent digest of every row's text form: equal iff the content is equal.
        cur.execute(
            sql.SQL(
                "SELECT count(*), md5(coalesce(string_agg(md5(t::text), ',' ORDER BY md5(t::text)), '')) "
                "FROM {} AS t"
            ).format(self._id(name))
        )
        row = cur.fetchone()
        assert row is not None  # noqa: S101 - an aggregate always returns one row
        return int(row[0]), f"rows={row[0]}:md5={row[1]}"

    def _checksum(self, cur: psycopg.Cursor[Any], name: str) -> str:
        return self._digest(cur, name)[1]

    def _ensure_meta(self, cur: psycopg.Cursor[Any]) -> None:
        from psycopg import sql

        cur.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (tbl text NOT NULL, branch text NOT NULL, "
                "checksum text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), "
                "PRIMARY KEY (tbl, branch))"
            ).format(self._id(META_TABLE))
        )

    def _base_checksum(self, cur: psycopg.Cursor[Any], name: str, branch: str, table: str) -> str:
        from psycopg import sql

        self._ensure_meta(cur)
        cur.execute(
            sql.SQL("SELECT checksum FROM {} WHERE tbl = %s AND branch = %s FOR UPDATE").format(
                self._id(META_TABLE)
            ),
            [name, branch],
        )
        row = cur.fetchone()
        if row is None:
            raise UnknownTable(f"table `{table}` has no branch `{branch}`")
        return str(row[0])

    def current_snapshot(self, table: str) -> str | None:
        name = self._production(table)
        with self._tx() as cur:
            self._columns(cur, name, table)
            return self._checksum(cur, name)

    def clone(self, table: str, branch: str) -> str:
        from psycopg import sql

        name = self._production(table)
        target = self._branch_table(name, branch)
        with self._tx() as cur:
            self._columns(cur, name, table)
            self._ensure_meta(cur)
            cur.execute("SELECT to_regclass(%s)", [quoted_table([self._schema, target], "postgres")])
            if cur.fetchone() != (None,):
                raise WarehouseError(f"table `{table}` already has a branch `{branch}`")
            # SHARE mode: writers wait until the copy and its checksum are taken from the same state.
            cur.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(self._id(name)))
            cur.execute(
                sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(self._id(target), self._id(name))
            )
            cur.execute(sql.SQL("INSERT INTO {} SELECT * FROM {}").format(self._id(target), self._id(name)))
            cur.execute(
                sql.SQL("INSERT INTO {} (tbl, branch, checksum) VALUES (%s, %s, %s)").format(
                    self._id(META_TABLE)
                ),
                [name, branch, self._checksum(cur, name)],
            )
        return f"{self._schema}.{target}"

    def _write_target(self, cur: psycopg.Cursor[Any], table: str, branch: str, columns: Sequence[str]) -> str:
        name = self._production(table)
        target = self._branch_table(name, branch)
        self._base_checksum(cur, name, branch, table)
        check_columns(columns, self._columns(cur, target, table), table)
        return target

    def _count(self, cur: psycopg.Cursor[Any], target: str, cond: sql.Composable, params: list[Any]) -> int:
        from psycopg import sql

        cur.execute(sql.SQL("SELECT count(*) FROM {} WHERE {}").format(self._id(target), cond), params)
        row = cur.fetchone()
        return int(row[0]) if row else 0

    def update_rows(
        self, table: str, branch: str, where: Sequence[Predicate], values: Mapping[str, Any], max_rows: int
    ) -> int:
        from psycopg import sql

        if not values:
            raise WarehouseError("`set` names no column")
        with self._tx() as cur:
            target = self._write_target(cur, table, branch, [*(p.column for p in where), *values])
            cond, params = where_sql(where)
            matched = self._count(cur, target, cond, params)
            if matched > max_rows:
                raise RowCapExceeded(matched, max_rows)
            assignments = sql.SQL(", ").join(
                sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder()) for c in values
            )
            cur.execute(
                sql.SQL("UPDATE {} SET {} WHERE {}").format(self._id(target), assignments, cond),
                [*values.values(), *params],
            )
            return cur.rowcount

    def delete_rows(self, table: str, branch: str, where: Sequence[Predicate], max_rows: int) -> int:
        from psycopg import sql

        with self._tx() as cur:
            target = self._write_target(cur, table, branch, [p.column for p in where])
            cond, params = where_sql(where)
            matched = self._count(cur, target, cond, params)
            if matched > max_rows:
                raise RowCapExceeded(matched, max_rows)
            cur.execute(sql.SQL("DELETE FROM {} WHERE {}").format(self._id(target), cond), params)
            return cur.rowcount

    def metrics(
        self, table: str, branch: str | None, checks: Sequence[Check], named: Mapping[str, NamedMetric]
    ) -> list[Any]:
        name = self._production(table)
        source = name if branch is None else self._branch_table(name, branch)
        ref = [self._schema, source]
        out: list[Any] = []
        with self._tx() as cur:
            cur.execute("SET TRANSACTION READ ONLY")
            cur.execute("SELECT set_config('statement_timeout', %s, true)", [str(self._timeout_ms)])
            try:
                columns = self._columns(cur, source, table)
            except UnknownTable:
                if branch is None:
                    raise
                raise UnknownTable(f"table `{table}` has no branch `{branch}`") from None
            for check in checks:
                check_columns(
                    [*(check.columns or ()), *([check.column] if check.column else [])], columns, table
                )
                if check.metric == "named":
                    cur.execute(named_sql(named[str(check.name)], quoted_table(ref, "postgres")))
                    row = cur.fetchone()
                    out.append(None if row is None else plain(row[0]))
                else:
                    cur.execute(metric_sql(check, ref, "postgres"))
                    out.append(finish_metric(check, cur.fetchone() or (None,)))
        return out

    def _swap(self, cur: psycopg.Cursor[Any], name: str, incoming: str) -> tuple[str, str]:
        """Make ``incoming`` production; (the backup name of the old one, production's new checksum)."""
        from psycopg import sql

        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S%f")
        backup = f"{name}{BACKUP_MARK}{stamp}"
        if len(backup.encode()) > _PG_NAME_MAX:
            raise NotSupported(f"table name `{name}` is too long to keep a backup beside it")
        cur.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(self._id(name)))
        cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(self._id(name), sql.Identifier(backup)))
        cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(self._id(incoming), sql.Identifier(name)))
        rows, after = self._digest(cur, name)
        record_swap(cur, self._schema, name, backup, after, rows)
        return backup, after

    def _unchanged_since_clone(self, cur: psycopg.Cursor[Any], name: str, branch: str, table: str) -> None:
        base = self._base_checksum(cur, name, branch, table)
        now = self._checksum(cur, name)
        if now != base:
            raise SwitchConflict(
                f"production `{table}` changed since branch `{branch}` was cut "
                f"(now {now}, branch based on {base}); clone again and redo the fix"
            )

    def check_fast_forward(self, table: str, branch: str) -> None:
        name = self._production(table)
        self._branch_table(name, branch)
        with self._tx() as cur:
            self._columns(cur, name, table)
            self._unchanged_since_clone(cur, name, branch, table)

    def switch_in(self, table: str, branch: str) -> SwitchResult:
        from psycopg import sql

        name = self._production(table)
        target = self._branch_table(name, branch)
        with self._tx() as cur:
            self._columns(cur, name, table)
            cur.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(self._id(name)))
            self._unchanged_since_clone(cur, name, branch, table)
            backup, after = self._swap(cur, name, target)
            cur.execute(
                sql.SQL("DELETE FROM {} WHERE tbl = %s AND branch = %s").format(self._id(META_TABLE)),
                [name, branch],
            )
        return SwitchResult(before=f"{self._schema}.{backup}", after=after)

    def rollback(self, table: str, to_snapshot: str, discard_later_commits: bool = False) -> SwitchResult:
        from psycopg import sql

        name = self._production(table)
        prefix = f"{self._schema}.{name}{BACKUP_MARK}"
        if not to_snapshot.startswith(prefix):
            raise NotSupported(
                "postgresql has no time travel: rollback accepts only a backup handle returned by switch_in "
                f"(`{prefix}...`)"
            )
        backup = to_snapshot.removeprefix(f"{self._schema}.")
        with self._tx() as cur:
            self._columns(cur, backup, to_snapshot)
            self._columns(cur, name, table)
            # Locked before the check: no write can land between the check and the swap.
            cur.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(self._id(name)))
            later = writes_since_swap(cur, self._schema, name, self._digest(cur, name))
            if later and not discard_later_commits:
                raise LaterCommitsFound(table, to_snapshot, later)
            previous, after = self._swap(cur, name, backup)
            return SwitchResult(before=f"{self._schema}.{previous}", after=after, discarded=tuple(later))

    def discard_branch(self, table: str, branch: str) -> None:
        from psycopg import sql

        if branch == MAIN_BRANCH:
            raise ProductionWriteRefused("branch `main` is production and cannot be discarded")
        name = self._production(table)
        target = self._branch_table(name, branch)
        with self._tx() as cur:
            self._base_checksum(cur, name, branch, table)
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self._id(target)))
            cur.execute(
                sql.SQL("DELETE FROM {} WHERE tbl = %s AND branch = %s").format(self._id(META_TABLE)),
                [name, branch],
            )
