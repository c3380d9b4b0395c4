"""Reads from an Iceberg lake for the read tools: pyiceberg scans, and DuckDB over them for queries.

A table reads the head snapshot of the branch (or main's current snapshot). ``sample`` is a pyiceberg
scan with the predicates as a row filter, only the asked columns and a limit: no SQL is involved.
``run_query`` scans each table of a checked plan (only its readable columns: a dropped column is never
loaded), registers the Arrow data in an in-memory DuckDB under the plan's physical name, and runs the
plan there with external access off and the configuration locked (no files, no network, no
extensions), interrupted at the timeout. A table over ``MAX_SCAN_ROWS`` rows is refused for queries:
DuckDB reads it whole into memory.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mcp_gateway.connectors.warehouse.base import (
    Predicate,
    QueryRefused,
    UnknownTable,
    WarehouseError,
    check_branch,
    check_columns,
)
from mcp_gateway.connectors.warehouse.iceberg import to_expression
from mcp_gateway.connectors.warehouse.metrics import plain
from mcp_gateway.connectors.warehouse.reading import Rows
from mcp_gateway.connectors.warehouse.sqlcheck import QueryPlan, TableRef

if TYPE_CHECKING:
    import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow ships no type stubs
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.table import Table

MAX_SCAN_ROWS = 1_000_000


class IcebergReader:
    """The ``Reader`` for tables in a pyiceberg SQL catalog.

    Args:
        catalog: an open ``SqlCatalog``.
        default_timeout_ms: the query timeout when the grant sets none.
    """

    dialect = "duckdb"

    def __init__(self, catalog: SqlCatalog, default_timeout_ms: int = 5000) -> None:
        self._catalog = catalog
        self.default_timeout_ms = default_timeout_ms

    @classmethod
    def connect(cls, catalog_uri: str, warehouse: str, catalog_name: str) -> IcebergReader:
        """Open the SQL catalog at ``catalog_uri``."""
        from pyiceberg.catalog.sql import SqlCatalog

        return cls(SqlCatalog(catalog_name, uri=catalog_uri, warehouse=warehouse))

    def close(self) -> None:
        self._catalog.engine.dispose()

    def _load(self, ref: TableRef) -> Table:
        from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

        try:
            return self._catalog.load_table((ref.namespace, ref.name))
        except (NoSuchTableError, NoSuchNamespaceError) as exc:
            raise UnknownTable(f"no table `{ref}`") from exc

    @staticmethod
    def _snapshot(tbl: Table, ref: TableRef, branch: str | None) -> int | None:
        if branch is None:
            snap = tbl.current_snapshot()
            return None if snap is None else snap.snapshot_id
        found = tbl.metadata.refs.get(check_branch(branch))
        if found is None:
            raise UnknownTable(f"table `{ref}` has no branch `{branch}`")
        return found.snapshot_id

    def physical(self, ref: TableRef, branch: str | None) -> list[str]:
        del branch  # each query gets its own DuckDB, holding only the snapshot it reads
        return [f"{ref.namespace}__{ref.name}"]

    def columns(self, refs: Sequence[TableRef], branch: str | None) -> dict[TableRef, list[str]]:
        out: dict[TableRef, list[str]] = {}
        for ref in refs:
            tbl = self._load(ref)
            self._snapshot(tbl, ref, branch)
            out[ref] = list(tbl.schema().column_names)
        return out

    def _scan(
        self,
        ref: TableRef,
        branch: str | None,
        columns: Sequence[str],
        where: Sequence[Predicate] = (),
        limit: int | None = None,
    ) -> pa.Table:
        tbl = self._load(ref)
        snapshot_id = self._snapshot(tbl, ref, branch)
        check_columns([*columns, *(p.column for p in where)], tbl.schema().column_names, str(ref))
        if snapshot_id is None:
            return tbl.schema().as_arrow().empty_table().select(list(columns))
        if limit is None:
            snap = tbl.metadata.snapshot_by_id(snapshot_id)
            summary = None if snap is None else snap.summary
            total = None if summary is None else summary.additional_properties.get("total-records")
            if total is not None and str(total).isdigit() and int(total) > MAX_SCAN_ROWS:
                raise QueryRefused(
                    "row_cap",
                    f"`{ref}` has {total} rows, over the {MAX_SCAN_ROWS} data.query reads on iceberg: "
                    "use data.sample_rows",
                )
        scan = tbl.scan(
            row_filter=to_expression(where),
            selected_fields=tuple(columns),
            snapshot_id=snapshot_id,
            limit=limit,
        )
        return scan.to_arrow()

    def sample(
        self,
        ref: TableRef,
        branch: str | None,
        where: Sequence[Predicate],
        columns: Sequence[str],
        max_rows: int,
        timeout_ms: int,
    ) -> Rows:
        del timeout_ms  # a bounded scan with a limit: it stops after max_rows matching rows
        data = self._scan(ref, branch, columns, where, limit=max_rows)
        rows = [tuple(plain(row[c]) for c in columns) for row in data.to_pylist()[:max_rows]]
        return Rows(tuple(columns), rows)

    def run_query(
        self,
        plan: QueryPlan,
        branch: str | None,
        columns: Mapping[TableRef, Sequence[str]],
        max_rows: int,
        timeout_ms: int,
    ) -> Rows:
        import duckdb

        data = {self.physical(ref, branch)[0]: self._scan(ref, branch, columns[ref]) for ref in plan.tables}
        con = duckdb.connect(":memory:", config={"threads": 1, "memory_limit": "512MB"})
        timer = threading.Timer(timeout_ms / 1000, con.interrupt)
        try:
            for name, table in data.items():
                con.register(name, table)
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
            timer.start()
            cur = con.execute(plan.sql)
            names = tuple(str(d[0]) for d in cur.description or ())
            fetched: list[Any] = cur.fetchmany(max_rows)
        except duckdb.InterruptException as exc:
            raise QueryRefused("timeout", f"the query hit the timeout of {timeout_ms} ms") from exc
        except duckdb.Error as exc:
            # DuckDB messages can quote values; name only the error class.
            raise WarehouseError(f"the query failed ({type(exc).__name__})") from exc
        finally:
            timer.cancel()
            con.close()
        return Rows(names, [tuple(plain(v) for v in row) for row in fetched])
