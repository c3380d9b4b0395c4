"""The PostgreSQL adapter's record of swaps, so a rollback sees what was written after a switch-in.

Every swap (switch-in or rollback) records, in ``_gateway_swaps`` and in the swap's own transaction,
production's checksum and row count right after the swap and the swap's transaction id. A later
rollback compares production's checksum now with the last one recorded: equal means nothing was
written since; otherwise the rows whose ``xmin`` is newer than the swap's transaction are the ones
inserted or updated since, and the row counts give what was deleted (or replaced by an update).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mcp_gateway.connectors.warehouse.base import LaterCommit

if TYPE_CHECKING:
    import psycopg

SWAPS_TABLE = "_gateway_swaps"


def _ensure(cur: psycopg.Cursor[Any], schema: str) -> None:
    from psycopg import sql

    cur.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, tbl text NOT NULL, "
            "backup text NOT NULL, checksum text NOT NULL, rows bigint NOT NULL, xid text NOT NULL, "
            "swapped_at timestamptz NOT NULL DEFAULT clock_timestamp())"
        ).format(sql.Identifier(schema, SWAPS_TABLE))
    )


def record_swap(
    cur: psycopg.Cursor[Any], schema: str, name: str, backup: str, checksum: str, rows: int
) -> None:
    """Record that ``name`` was just swapped in (call inside the swap's transaction)."""
    from psycopg import sql

    _ensure(cur, schema)
    cur.execute(
        sql.SQL(
            "INSERT INTO {} (tbl, backup, checksum, rows, xid) "
            "VALUES (%s, %s, %s, %s, pg_current_xact_id()::text)"
        ).format(sql.Identifier(schema, SWAPS_TABLE)),
        [name, backup, checksum, rows],
    )


def writes_since_swap(
    cur: psycopg.Cursor[Any], schema: str, name: str, digest: tuple[int, str]
) -> list[LaterCommit]:
    """Production's changes since it was last swapped in, empty if none.

    Call with production locked (``ACCESS EXCLUSIVE``), so nothing lands between this and the swap.

    Args:
        digest: production's (row count, checksum) now.
    """
    from psycopg import sql

    _ensure(cur, schema)
    cur.execute(
        sql.SQL(
            "SELECT checksum, rows, xid, swapped_at FROM {} WHERE tbl = %s ORDER BY id DESC LIMIT 1"
        ).format(sql.Identifier(schema, SWAPS_TABLE)),
        [name],
    )
    swap = cur.fetchone()
    rows_now, now = digest
    if swap is None:
        # Swapped in before swaps were recorded: later writes cannot be ruled out.
        return [LaterCommit(id=now, at=None, operation="unrecorded", rows_total=rows_now)]
    checksum, rows_then, xid, swapped_at = swap
    if now == checksum:
        return []
    cur.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE age(xmin) < age(xid(%s::xid8))").format(
            sql.Identifier(schema, name)
        ),
        [xid],
    )
    found = cur.fetchone()
    written = int(found[0]) if found else 0
    return [
        LaterCommit(
            id=now,
            at=swapped_at.isoformat(),
            operation="writes",
            rows_added=written,
            rows_removed=int(rows_then) - (rows_now - written),
            rows_total=rows_now,
            rows_at_switch_in=int(rows_then),
        )
    ]
