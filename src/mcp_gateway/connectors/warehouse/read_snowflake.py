"""Reads from Snowflake for the read tools (not reachable here: the SQL text is what the tests pin).

``SnowflakeReadSql`` generates the text: the session's statement timeout, the column listing and a
sample with ``?`` bind parameters (identifiers quoted by sqlglot). A checked query's text is
``sqlcheck.plan_query``'s, in the ``snowflake`` dialect. Snowflake has no read-only transaction: the
checks in ``sqlcheck.py`` and the role in the connection settings are what keep a query a read.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from mcp_gateway.connectors.warehouse.base import (
    NotSupported,
    Predicate,
    QueryRefused,
    UnknownTable,
    WarehouseError,
    check_branch,
    check_columns,
)
from mcp_gateway.connectors.warehouse.metrics import plain
from mcp_gateway.connectors.warehouse.reading import Rows
from mcp_gateway.connectors.warehouse.snowflake import (
    BACKUP_MARK,
    BRANCH_MARK,
    META_TABLE,
    SWAPS_TABLE,
    SnowflakeSql,
    ident,
)
from mcp_gateway.connectors.warehouse.sqlcheck import QueryPlan, TableRef

TIMEOUT_ERRNO = 604  # "Statement reached its statement or warehouse timeout" / cancelled


class SnowflakeReadSql(SnowflakeSql):
    """The read side's SQL text for one database and schema."""

    def timeout(self, timeout_ms: int) -> str:
        return f"ALTER SESSION SET STATEMENT_TIMEOUT_IN_SECONDS = {max(1, math.ceil(timeout_ms / 1000))}"

    def ordered_columns(self) -> str:
        return f"{self.columns()} ORDER BY ORDINAL_POSITION"

    def sample(
        self, name: str, where: Sequence[Predicate], columns: Sequence[str], limit: int
    ) -> tuple[str, list[Any]]:
        cond, params = self.where(where)
        listed = ", ".join(ident(c) for c in columns)
        return f"SELECT {listed} FROM {self.ref(name)} WHERE {cond} LIMIT {int(limit)}", params  # noqa: S608 - identifiers quoted by sqlglot, values bound


class SnowflakeReader:
    """The ``Reader`` for one Snowflake schema (needs the ``snowflake`` extra).

    Args:
        connect_args: arguments for ``snowflake.connector.connect`` (password already resolved).
    """

    dialect = "snowflake"
    default_timeout_ms = 5000

    def __init__(self, database: str, schema: str, connect_args: Mapping[str, Any]) -> None:
        self.sql = SnowflakeReadSql(database, schema)
        self._connect_args = dict(connect_args)

    def __repr__(self) -> str:
        return f"SnowflakeReader(database={self.sql.database!r}, schema={self.sql.schema!r})"

    def close(self) -> None:
        """Nothing pooled: every read opens and closes its own connection."""

    def _name(self, ref: TableRef, branch: str | None) -> str:
        name = ref.name
        hidden = BRANCH_MARK in name or BACKUP_MARK in name or name in (META_TABLE, SWAPS_TABLE)
        if ref.namespace != self.sql.schema or hidden:
            raise UnknownTable(f"no table `{ref}`")
        return name if branch is None else f"{name}{BRANCH_MARK}{check_branch(branch)}"

    def physical(self, ref: TableRef, branch: str | None) -> list[str]:
        return self.sql.parts(self._name(ref, branch))

    @contextmanager
    def _cursor(self, timeout_ms: int) -> Iterator[Any]:
        try:
            connector = importlib.import_module("snowflake.connector")
        except ImportError as exc:
            raise NotSupported("snowflake support needs the `snowflake` extra installed") from exc
        conn = connector.connect(**self._connect_args, paramstyle="qmark")
        try:
            with conn.cursor() as cur:
                cur.execute(self.sql.timeout(timeout_ms))
                yield cur
        except connector.errors.Error as exc:
            if getattr(exc, "errno", None) == TIMEOUT_ERRNO:
                raise QueryRefused(
                    "timeout", f"the query hit the statement timeout of {timeout_ms} ms"
                ) from exc
            raise WarehouseError(f"snowflake refused the query ({type(exc).__name__})") from exc
        finally:
            conn.close()

    def columns(self, refs: Sequence[TableRef], branch: str | None) -> dict[TableRef, list[str]]:
        out: dict[TableRef, list[str]] = {}
        with self._cursor(self.default_timeout_ms) as cur:
            for ref in refs:
                cur.execute(self.sql.ordered_columns(), [self.sql.schema, self._name(ref, branch)])
                out[ref] = [str(r[0]) for r in cur.fetchall()]
                if not out[ref]:
                    raise UnknownTable(f"no table `{ref}`" if branch is None else f"no branch `{branch}`")
        return out

    def run_query(
        self,
        plan: QueryPlan,
        branch: str | None,
        columns: Mapping[TableRef, Sequence[str]],
        max_rows: int,
        timeout_ms: int,
    ) -> Rows:
        del branch, columns
        with self._cursor(timeout_ms) as cur:
            cur.execute(plan.sql)
            names = tuple(str(d[0]) for d in cur.description or ())
            return Rows(names, [tuple(plain(v) for v in r) for r in cur.fetchmany(max_rows)])

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
        text, params = self.sql.sample(self._name(ref, branch), where, columns, max_rows)
        with self._cursor(timeout_ms) as cur:
            cur.execute(text, params)
            return Rows(tuple(columns), [tuple(plain(v) for v in r) for r in cur.fetchmany(max_rows)])
