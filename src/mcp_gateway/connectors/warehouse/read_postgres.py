"""Reads from PostgreSQL for the read tools: a READ ONLY transaction with a statement timeout.

Production is ``<schema>.<table>``, a branch is its ``<table>__branch__<branch>`` copy (``postgres.py``);
the gateway's own bookkeeping tables and backups are never readable. Every statement runs with
``SET TRANSACTION READ ONLY``, ``SET LOCAL statement_timeout`` and ``SET LOCAL search_path =
pg_catalog``; identifiers go through ``psycopg.sql.Identifier`` (samples) or are quoted by sqlglot
(checked queries). Server messages can quote row values, so errors name only their class.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from mcp_gateway.connectors.warehouse.base import (
    Predicate,
    QueryRefused,
    UnknownTable,
    WarehouseError,
    check_branch,
    check_columns,
)
from mcp_gateway.connectors.warehouse.metrics import plain
from mcp_gateway.connectors.warehouse.pg_swaps import SWAPS_TABLE
from mcp_gateway.connectors.warehouse.postgres import BACKUP_MARK, BRANCH_MARK, META_TABLE, where_sql
from mcp_gateway.connectors.warehouse.reading import Rows
from mcp_gateway.connectors.warehouse.sqlcheck import QueryPlan, TableRef

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql


class PostgresReader:
    """The ``Reader`` for tables in one PostgreSQL schema.

    Args:
        dsn: connection string (already resolved; never logged).
        schema: the exposed schema.
        default_timeout_ms: the statement timeout when the grant sets none.
    """

    dialect = "postgres"

    def __init__(self, dsn: str, schema: str = "public", default_timeout_ms: int = 5000) -> None:
        self._dsn = dsn
        self._schema = schema
        self.default_timeout_ms = default_timeout_ms

    def __repr__(self) -> str:
        return f"PostgresReader(schema={self._schema!r})"

    def close(self) -> None:
        """Nothing pooled: every read opens and closes its own connection."""

    def _name(self, ref: TableRef, branch: str | None) -> str:
        name = ref.name
        hidden = BRANCH_MARK in name or BACKUP_MARK in name or name in (META_TABLE, SWAPS_TABLE)
        if ref.namespace != self._schema or hidden:
            raise UnknownTable(f"no table `{ref}`")
        return name if branch is None else f"{name}{BRANCH_MARK}{check_branch(branch)}"

    def physical(self, ref: TableRef, branch: str | None) -> list[str]:
        return [self._schema, self._name(ref, branch)]

    @contextmanager
    def _read_only(self, timeout_ms: int) -> Iterator[psycopg.Cursor[Any]]:
        import psycopg
        from psycopg import sql

        try:
            with (
                psycopg.connect(self._dsn, autocommit=True) as conn,
                conn.transaction(),
                conn.cursor() as cur,
            ):
                cur.execute("SET TRANSACTION READ ONLY")
                cur.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(int(timeout_ms))))
                cur.execute("SET LOCAL search_path = pg_catalog")
                yield cur
        except psycopg.errors.QueryCanceled as exc:
            raise QueryRefused("timeout", f"the query hit the statement timeout of {timeout_ms} ms") from exc
        except psycopg.errors.ReadOnlySqlTransaction as exc:
            raise QueryRefused("write", "the database refused a write in a read-only transaction") from exc
        except psycopg.OperationalError as exc:
            # The libpq message can echo the DSN's host/user; say only what kind of failure it was.
            raise WarehouseError(f"postgresql unavailable ({type(exc).__name__})") from exc
        except psycopg.Error as exc:
            # Server messages can quote row values (masked ones too); name only the error class.
            raise WarehouseError(f"postgresql refused the query ({type(exc).__name__})") from exc

    def columns(self, refs: Sequence[TableRef], branch: str | None) -> dict[TableRef, list[str]]:
        out: dict[TableRef, list[str]] = {}
        with self._read_only(self.default_timeout_ms) as cur:
            for ref in refs:
                name = self._name(ref, branch)
                cur.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
                    [self._schema, name],
                )
                out[ref] = [str(r[0]) for r in cur.fetchall()]
                if not out[ref]:
                    has = f"has no branch `{branch}`" if branch is not None else "does not exist"
                    raise UnknownTable(f"table `{ref}` {has}")
        return out

    @staticmethod
    def _fetch(cur: psycopg.Cursor[Any], max_rows: int) -> Rows:
        names = tuple(d.name for d in cur.description or ())
        rows = [tuple(plain(v) for v in row) for row in cur.fetchmany(max_rows)]
        return Rows(names, rows)

    def run_query(
        self,
        plan: QueryPlan,
        branch: str | None,
        columns: Mapping[TableRef, Sequence[str]],
        max_rows: int,
        timeout_ms: int,
    ) -> Rows:
        from psycopg import sql

        del branch, columns  # the plan already names the physical relations
        with self._read_only(timeout_ms) as cur:
            # Generated by sqlglot from the checked tree; no bind parameters, so `%` is literal.
            cur.execute(sql.SQL(plan.sql))
            return self._fetch(cur, max_rows)

    def sample_sql(
        self,
        ref: TableRef,
        branch: str | None,
        where: Sequence[Predicate],
        columns: Sequence[str],
        limit: int,
    ) -> tuple[sql.Composed, list[Any]]:
        """The sample's statement and bind parameters."""
        from psycopg import sql

        cond, params = where_sql(where)
        statement = sql.SQL("SELECT {} FROM {} WHERE {} LIMIT {}").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in columns),
            sql.Identifier(*self.physical(ref, branch)),
            cond,
            sql.Literal(int(limit)),
        )
        return statement, params

    def sample(
        self,
        ref: TableRef,
        branch: str | None,
        where: Sequence[Predicate],
        columns: Sequence[str],
        max_rows: int,
        timeout_ms: int,
    ) -> Rows:
        known = self.columns([ref], branch)[ref]
        check_columns([*columns, *(p.column for p in where)], known, str(ref))
        statement, params = self.sample_sql(ref, branch, where, columns, max_rows)
        with self._read_only(timeout_ms) as cur:
            cur.execute(statement, params)
            return self._fetch(cur, max_rows)
