"""Each SIEM sink's durable cursor: the seq of the last record the sink accepted.

Written (committed, fsynced) after every batch the sink accepted and before the next is read, so a
gateway that restarts resumes after the last accepted record: nothing is skipped, and the only
record a crash can resend is a batch in flight when the process died (same event ids, see
``ocsf.event_id``). A graceful stop finishes the batch in flight and its cursor write first.

Two stores, one set of statements (``storage.Database``): a SQLite file in the data dir
(``siem.cursor_path``), or the ``siem_cursor`` table of the shared PostgreSQL schema when the top-level
``store:`` is set (migration 1 of the ``siem_cursor`` component), so the replica that takes the export
over (``storage/lease.py``) resumes where the last one stopped. A batch moves the cursor only from the
seq it was read after (``move``): a replica that lost its lease and finishes a batch late cannot move
a cursor its successor has moved already.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from mcp_gateway.errors import StoreError
from mcp_gateway.storage.database import Database, PostgresDatabase, open_sqlite
from mcp_gateway.storage.migrate import Migration

__all__ = [
    "MIGRATIONS",
    "CursorMoved",
    "CursorStore",
    "PostgresCursorStore",
    "SQLCursorStore",
    "SQLiteCursorStore",
]

_TABLES = {"t": "siem_cursor"}
_CREATE = (
    "CREATE TABLE IF NOT EXISTS {t} (sink TEXT PRIMARY KEY, seq BIGINT NOT NULL, updated_at {real} NOT NULL)",
)
_QUERIES = {
    "get": "SELECT seq FROM {t} WHERE sink = %s",
    "all": "SELECT sink, seq FROM {t}",
    "set": "INSERT INTO {t} (sink, seq, updated_at) VALUES (%s, %s, %s)"
    " ON CONFLICT (sink) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at",
    "move": "UPDATE {t} SET seq = %s, updated_at = %s WHERE sink = %s AND seq = %s",
}
MIGRATIONS = (Migration(1, "create siem_cursor", _CREATE, _TABLES),)
"""The PostgreSQL migrations of the ``siem_cursor`` component."""


class CursorMoved(StoreError):
    """The stored cursor is not where this exporter read from: another replica exported meanwhile."""


class CursorStore(Protocol):
    """Each sink's last accepted seq. Blocking calls: run them in a worker thread.

    Every method raises ``StoreError`` when the store cannot be read or written.
    """

    def get(self, sink: str) -> int | None:
        """The last seq ``sink`` accepted, or None when it has no cursor yet."""
        ...

    def set(self, sink: str, seq: int) -> None:
        """Durably record ``seq`` as ``sink``'s cursor, whatever it was."""
        ...

    def move(self, sink: str, before: int, after: int) -> None:
        """Durably move ``sink``'s cursor from ``before`` to ``after``.

        Raises:
            CursorMoved: the cursor is not at ``before`` (nothing was written).
        """
        ...

    def all(self) -> dict[str, int]:
        """Every sink's cursor."""
        ...

    def close(self) -> None: ...


class SQLCursorStore:
    """Cursors in a ``siem_cursor`` table (SQLite or PostgreSQL).

    Args:
        db: where the table lives.
        clock: epoch seconds (the ``updated_at`` column).
    """

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock
        self._q = db.prepare(_QUERIES, _TABLES)
        self.where = db.where

    def get(self, sink: str) -> int | None:
        rows = self._db.read(self._q["get"], (sink,))
        return int(rows[0][0]) if rows else None

    def set(self, sink: str, seq: int) -> None:
        with self._db.tx() as cur:
            cur.execute(self._q["set"], (sink, seq, self._clock()))

    def move(self, sink: str, before: int, after: int) -> None:
        with self._db.tx() as cur:
            cur.execute(self._q["move"], (after, self._clock(), sink, before))
            moved = cur.rowcount == 1
        if not moved:
            raise CursorMoved(
                f"the siem cursor of sink `{sink}` ({self.where}) is no longer at seq {before}:"
                " another replica exported meanwhile"
            )

    def all(self) -> dict[str, int]:
        return {str(sink): int(seq) for sink, seq in self._db.read(self._q["all"])}

    def close(self) -> None:
        """Close the connection; idempotent."""
        self._db.close()


class SQLiteCursorStore(SQLCursorStore):
    """Cursors in a SQLite file (WAL, ``synchronous=FULL``), created 0600 with its folder if missing.

    Raises:
        StoreError: the file cannot be opened or set up.
    """

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        db = open_sqlite(path, what="siem cursor", statements=_CREATE, tables=_TABLES)
        super().__init__(db, clock)


class PostgresCursorStore(SQLCursorStore):
    """Cursors in a PostgreSQL schema, shared by replicas; migrated on open.

    Raises:
        StoreError: the database cannot be reached or set up.
    """

    def __init__(self, dsn: str, schema: str = "mcp_gateway", clock: Callable[[], float] = time.time) -> None:
        db = PostgresDatabase(dsn, schema, what="siem cursor")
        db.setup("siem_cursor", MIGRATIONS, create=True)
        super().__init__(db, clock)
