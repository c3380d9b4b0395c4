"""Snowflake: zero-copy ``CLONE``, atomic ``SWAP WITH``, ``AT (...)`` time travel.

``SnowflakeSql`` only generates SQL text (identifiers quoted by sqlglot, values as ``?`` bind
parameters for the connector's ``qmark`` style), so its output is pinned by golden tests.
``SnowflakeWarehouse`` executes it through ``snowflake.connector``, imported only when first used
(the ``snowflake`` extra). Snowflake DDL commits on its own, so clone and switch-in are a sequence of
atomic statements rather than one transaction; the swap itself is atomic.
"""

from __future__ import annotations

import datetime as dt
import importlib
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlglot import exp

from mcp_gateway.connectors.warehouse.base import (
    MAIN_BRANCH,
    Capabilities,
    Check,
    LaterCommit,
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
from mcp_gateway.connectors.warehouse.metrics import finish_metric, metric_sql, named_sql, plain

META_TABLE = "_GATEWAY_BRANCHES"
SWAPS_TABLE = "_GATEWAY_SWAPS"
BRANCH_MARK = "__branch__"
BACKUP_MARK = "__backup__"
QUERY_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def ident(name: str) -> str:
    """``name`` as a quoted Snowflake identifier (embedded quotes doubled)."""
    return exp.to_identifier(name, quoted=True).sql(dialect="snowflake")


class SnowflakeSql:
    """SQL text for one database and schema."""

    def __init__(self, database: str, schema: str) -> None:
        self.database = database
        self.schema = schema

    def ref(self, name: str) -> str:
        """The fully qualified, quoted table reference."""
        return ".".join(ident(p) for p in (self.database, self.schema, name))

    def parts(self, name: str) -> list[str]:
        return [self.database, self.schema, name]

    def clone(self, target: str, source: str) -> str:
        return f"CREATE TABLE {self.ref(target)} CLONE {self.ref(source)}"

    def clone_at(
        self, target: str, source: str, *, offset_seconds: int | None = None, statement: str | None = None
    ) -> str:
        """A clone of ``source`` as it was ``offset_seconds`` ago or at a statement (time travel).

        Raises:
            WarehouseError: neither or both given, a positive offset, or a malformed query id.
        """
        if (offset_seconds is None) == (statement is None):
            raise WarehouseError("give exactly one of an offset or a statement id")
        if statement is not None:
            if not QUERY_ID.fullmatch(statement):
                raise WarehouseError(f"`{statement}` is not a snowflake query id")
            at = f"STATEMENT => {exp.Literal.string(statement).sql(dialect='snowflake')}"
        else:
            if offset_seconds is None or offset_seconds > 0:
                raise WarehouseError("a time-travel offset must be zero or negative seconds")
            at = f"OFFSET => {int(offset_seconds)}"
        return f"{self.clone(target, source)} AT ({at})"

    def swap(self, table: str, other: str) -> str:
        return f"ALTER TABLE {self.ref(table)} SWAP WITH {self.ref(other)}"

    def rename(self, table: str, new_name: str) -> str:
        return f"ALTER TABLE {self.ref(table)} RENAME TO {self.ref(new_name)}"

    def drop(self, table: str) -> str:
        return f"DROP TABLE IF EXISTS {self.ref(table)}"

    def checksum(self, table: str) -> str:
        return f"SELECT COUNT(*), HASH_AGG(*) FROM {self.ref(table)}"  # noqa: S608 - identifiers quoted by sqlglot, values bound

    def columns(self) -> str:
        return (
            f"SELECT COLUMN_NAME FROM {ident(self.database)}.INFORMATION_SCHEMA.COLUMNS "  # noqa: S608 - identifiers quoted by sqlglot, values bound
            "WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?"
        )

    def where(self, where: Sequence[Predicate]) -> tuple[str, list[Any]]:
        """The condition text and its bind parameters (``TRUE`` when empty)."""
        parts: list[str] = []
        params: list[Any] = []
        for p in where:
            col = ident(p.column)
            if p.op == "is_null":
                parts.append(f"{col} IS NULL")
            elif p.op == "not_null":
                parts.append(f"{col} IS NOT NULL")
            elif p.op == "in":
                parts.append(f"{col} IN ({', '.join('?' for _ in p.value)})")
                params.extend(p.value)
            else:
                parts.append(f"{col} {'<>' if p.op == '!=' else p.op} ?")
                params.append(p.value)
        return (" AND ".join(parts) if parts else "TRUE"), params

    def count(self, table: str, where: Sequence[Predicate]) -> tuple[str, list[Any]]:
        cond, params = self.where(where)
        return f"SELECT COUNT(*) FROM {self.ref(table)} WHERE {cond}", params  # noqa: S608 - identifiers quoted by sqlglot, values bound

    def update(
        self, table: str, where: Sequence[Predicate], values: Mapping[str, Any]
    ) -> tuple[str, list[Any]]:
        cond, params = self.where(where)
        sets = ", ".join(f"{ident(c)} = ?" for c in values)
        return f"UPDATE {self.ref(table)} SET {sets} WHERE {cond}", [*values.values(), *params]  # noqa: S608 - identifiers quoted by sqlglot, values bound

    def delete(self, table: str, where: Sequence[Predicate]) -> tuple[str, list[Any]]:
        cond, params = self.where(where)
        return f"DELETE FROM {self.ref(table)} WHERE {cond}", params  # noqa: S608 - identifiers quoted by sqlglot, values bound


class SnowflakeWarehouse:
    """The ``Warehouse`` adapter for Snowflake (not reachable from this test environment).

    Args:
        connect_args: arguments for ``snowflake.connector.connect`` (password already resolved).
    """

    capabilities = Capabilities(zero_copy=True, atomic_switch=True, time_travel=True)

    def __init__(self, database: str, schema: str, connect_args: Mapping[str, Any]) -> None:
        self.sql = SnowflakeSql(database, schema)
        self._connect_args = dict(connect_args)

    def __repr__(self) -> str:
        return f"SnowflakeWarehouse(database={self.sql.database!r}, schema={self.sql.schema!r})"

    def close(self) -> None:
        """Nothing pooled: every operation opens and closes its own connection."""

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        try:
            connector = importlib.import_module("snowflake.connector")
        except ImportError as exc:
            raise NotSupported("snowflake support needs the `snowflake` extra installed") from exc
        conn = connector.connect(**self._connect_args, paramstyle="qmark")
        try:
            with conn.cursor() as cur:
                yield cur
        finally:
            conn.close()

    def _production(self, table: str) -> str:
        namespace, name = split_table(table)
        if (
            namespace != self.sql.schema
            or BRANCH_MARK in name
            or BACKUP_MARK in name
            or name in (META_TABLE, SWAPS_TABLE)
        ):
            raise UnknownTable(f"no table `{table}`")
        return name

    def _branch(self, name: str, branch: str) -> str:
        return f"{name}{BRANCH_MARK}{check_branch(branch)}"

    def _columns(self, cur: Any, name: str, table: str) -> list[str]:
        cur.execute(self.sql.columns(), [self.sql.schema, name])
        columns = [str(r[0]) for r in cur.fetchall()]
        if not columns:
            raise UnknownTable(f"no table `{table}`")
        return columns

    def _checksum(self, cur: Any, name: str) -> str:
        cur.execute(self.sql.checksum(name))
        rows, digest = cur.fetchone()
        return f"rows={rows}:hash={digest}"

    def _meta(self, cur: Any) -> str:
        meta = self.sql.ref(META_TABLE)
        cur.execute(f"CREATE TABLE IF NOT EXISTS {meta} (TBL STRING, BRANCH STRING, CHECKSUM STRING)")
        return meta

    def _swaps(self, cur: Any) -> str:
        swaps = self.sql.ref(SWAPS_TABLE)
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {swaps} (TBL STRING, BACKUP STRING, CHECKSUM STRING, ROWS NUMBER, "
            "SWAPPED_AT TIMESTAMP_TZ)"
        )
        return swaps

    def _record_swap(self, cur: Any, name: str, backup: str) -> str:
        """Record production's state right after a swap (what a later rollback compares against)."""
        swaps = self._swaps(cur)
        cur.execute(self.sql.checksum(name))
        rows, digest = cur.fetchone()
        after = f"rows={rows}:hash={digest}"
        cur.execute(
            f"INSERT INTO {swaps} SELECT ?, ?, ?, ?, CURRENT_TIMESTAMP()",
            [name, backup, after, int(rows)],
        )
        return after

    def _writes_since_swap(self, cur: Any, name: str) -> list[LaterCommit]:
        """Production's change since its last recorded swap (checksum and row counts), empty if none."""
        swaps = self._swaps(cur)
        cur.execute(
            f"SELECT CHECKSUM, ROWS, SWAPPED_AT FROM {swaps} WHERE TBL = ? ORDER BY SWAPPED_AT DESC LIMIT 1",  # noqa: S608 - identifiers quoted by sqlglot, values bound
            [name],
        )
        swap = cur.fetchone()
        cur.execute(self.sql.checksum(name))
        rows_now, digest = cur.fetchone()
        now = f"rows={rows_now}:hash={digest}"
        if swap is None:
            return [LaterCommit(id=now, at=None, operation="unrecorded", rows_total=int(rows_now))]
        checksum, rows_then, swapped_at = swap
        if checksum == now:
            return []
        at = swapped_at.isoformat() if isinstance(swapped_at, dt.datetime) else str(swapped_at)
        return [
            LaterCommit(
                id=now,
                at=at,
                operation="writes",
                rows_total=int(rows_now),
                rows_at_switch_in=int(rows_then),
            )
        ]

    def current_snapshot(self, table: str) -> str | None:
        with self._cursor() as cur:
            return self._checksum(cur, self._production(table))

    def clone(self, table: str, branch: str) -> str:
        name = self._production(table)
        target = self._branch(name, branch)
        with self._cursor() as cur:
            self._columns(cur, name, table)
            meta = self._meta(cur)
            cur.execute(self.sql.clone(target, name))
            cur.execute(f"SELECT COUNT(*), HASH_AGG(*) FROM {self.sql.ref(target)}")  # noqa: S608 - identifiers quoted by sqlglot, values bound
            rows, digest = cur.fetchone()
            cur.execute(f"INSERT INTO {meta} VALUES (?, ?, ?)", [name, branch, f"rows={rows}:hash={digest}"])  # noqa: S608 - identifiers quoted by sqlglot, values bound
        return target

    def update_rows(
        self, table: str, branch: str, where: Sequence[Predicate], values: Mapping[str, Any], max_rows: int
    ) -> int:
        name = self._production(table)
        target = self._branch(name, branch)
        with self._cursor() as cur:
            check_columns([*(p.column for p in where), *values], self._columns(cur, target, table), table)
            cur.execute("BEGIN")
            text, params = self.sql.count(target, where)
            cur.execute(text, params)
            matched = int(cur.fetchone()[0])
            if matched > max_rows:
                cur.execute("ROLLBACK")
                raise RowCapExceeded(matched, max_rows)
            cur.execute(*self.sql.update(target, where, values))
            cur.execute("COMMIT")
            return matched

    def delete_rows(self, table: str, branch: str, where: Sequence[Predicate], max_rows: int) -> int:
        name = self._production(table)
        target = self._branch(name, branch)
        with self._cursor() as cur:
            check_columns([p.column for p in where], self._columns(cur, target, table), table)
            cur.execute("BEGIN")
            text, params = self.sql.count(target, where)
            cur.execute(text, params)
            matched = int(cur.fetchone()[0])
            if matched > max_rows:
                cur.execute("ROLLBACK")
                raise RowCapExceeded(matched, max_rows)
            cur.execute(*self.sql.delete(target, where))
            cur.execute("COMMIT")
            return matched

    def metrics(
        self, table: str, branch: str | None, checks: Sequence[Check], named: Mapping[str, NamedMetric]
    ) -> list[Any]:
        name = self._production(table)
        source = name if branch is None else self._branch(name, branch)
        out: list[Any] = []
        with self._cursor() as cur:
            for check in checks:
                if check.metric == "named":
                    cur.execute(named_sql(named[str(check.name)], self.sql.ref(source)))
                    row = cur.fetchone()
                    out.append(None if row is None else plain(row[0]))
                else:
                    cur.execute(metric_sql(check, self.sql.parts(source), "snowflake"))
                    out.append(finish_metric(check, cur.fetchone() or (None,)))
        return out

    def _unchanged_since_clone(self, cur: Any, name: str, branch: str, table: str) -> str:
        """Production's checksum, if it is the one recorded when the branch was cut."""
        meta = self._meta(cur)
        cur.execute(f"SELECT CHECKSUM FROM {meta} WHERE TBL = ? AND BRANCH = ?", [name, branch])  # noqa: S608 - identifiers quoted by sqlglot, values bound
        row = cur.fetchone()
        if row is None:
            raise UnknownTable(f"table `{table}` has no branch `{branch}`")
        now = self._checksum(cur, name)
        if now != row[0]:
            raise SwitchConflict(
                f"production `{table}` changed since branch `{branch}` was cut "
                f"(now {now}, branch based on {row[0]}); clone again and redo the fix"
            )
        return now

    def check_fast_forward(self, table: str, branch: str) -> None:
        name = self._production(table)
        self._branch(name, branch)
        with self._cursor() as cur:
            self._unchanged_since_clone(cur, name, branch, table)

    def switch_in(self, table: str, branch: str) -> SwitchResult:
        name = self._production(table)
        target = self._branch(name, branch)
        with self._cursor() as cur:
            now = self._unchanged_since_clone(cur, name, branch, table)
            meta = self.sql.ref(META_TABLE)
            backup = f"{name}{BACKUP_MARK}{dt.datetime.now(dt.UTC).strftime('%Y%m%d%H%M%S%f')}"
            cur.execute(self.sql.swap(name, target))
            cur.execute(self.sql.rename(target, backup))
            cur.execute(f"DELETE FROM {meta} WHERE TBL = ? AND BRANCH = ?", [name, branch])  # noqa: S608 - identifiers quoted by sqlglot, values bound
            self._record_swap(cur, name, backup)
        return SwitchResult(before=backup, after=now)

    def rollback(self, table: str, to_snapshot: str, discard_later_commits: bool = False) -> SwitchResult:
        name = self._production(table)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S%f")
        backup = f"{name}{BACKUP_MARK}{stamp}"
        with self._cursor() as cur:
            if to_snapshot.startswith(f"{name}{BACKUP_MARK}"):
                incoming = to_snapshot
            else:
                # Time travel: `statement:<query id>` or `offset:<-seconds>` restores that past state.
                kind, _, value = to_snapshot.partition(":")
                incoming = f"{name}__restore__{stamp}"
                if kind == "statement":
                    cur.execute(self.sql.clone_at(incoming, name, statement=value))
                elif kind == "offset" and value.lstrip("-").isdigit():
                    cur.execute(self.sql.clone_at(incoming, name, offset_seconds=int(value)))
                else:
                    raise WarehouseError(
                        f"`{to_snapshot}` is not a backup table, `statement:<id>` or `offset:<s>`"
                    )
            self._columns(cur, incoming, to_snapshot)
            # Snowflake DDL cannot hold a lock across statements: a write landing between this check
            # and the (atomic) swap is kept in the backup table, not lost, but is not named here.
            later = self._writes_since_swap(cur, name)
            if later and not discard_later_commits:
                if incoming != to_snapshot:
                    cur.execute(self.sql.drop(incoming))
                raise LaterCommitsFound(table, to_snapshot, later)
            cur.execute(self.sql.swap(name, incoming))
            cur.execute(self.sql.rename(incoming, backup))
            after = self._record_swap(cur, name, backup)
            return SwitchResult(before=backup, after=after, discarded=tuple(later))

    def discard_branch(self, table: str, branch: str) -> None:
        if branch == MAIN_BRANCH:
            raise ProductionWriteRefused("branch `main` is production and cannot be discarded")
        name = self._production(table)
        with self._cursor() as cur:
            meta = self._meta(cur)
            cur.execute(self.sql.drop(self._branch(name, branch)))
            cur.execute(f"DELETE FROM {meta} WHERE TBL = ? AND BRANCH = ?", [name, branch])  # noqa: S608 - identifiers quoted by sqlglot, values bound
