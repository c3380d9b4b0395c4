"""The incident store: one ``incidents`` table in SQLite (data dir) or the shared PostgreSQL schema.

One statement text per operation for both databases (``storage/``). Failing checks and fixes are
stored as JSON text. At most one open incident per monitor is kept by a partial unique index, so two
replicas running the same monitor cannot open two (the second's insert fails and it adds to the
first instead).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mcp_gateway.errors import StoreError
from mcp_gateway.incidents.model import Fix, Incident
from mcp_gateway.storage.database import Database, PostgresDatabase, open_sqlite
from mcp_gateway.storage.migrate import Migration

_COLUMNS = (
    "id, monitor, tbl, job, status, opened_at, updated_at, closed_at, occurrences, failing, opened_seq, fixes"
)
_CREATE = (
    "CREATE TABLE IF NOT EXISTS {t} (id TEXT PRIMARY KEY, monitor TEXT NOT NULL, tbl TEXT NOT NULL,"
    " job TEXT, status TEXT NOT NULL, opened_at {real} NOT NULL, updated_at {real} NOT NULL,"
    " closed_at {real}, occurrences INTEGER NOT NULL, failing TEXT NOT NULL,"
    " opened_seq BIGINT NOT NULL, fixes TEXT NOT NULL DEFAULT '[]')",
    "CREATE UNIQUE INDEX IF NOT EXISTS {one_open} ON {t} (monitor) WHERE status = 'open'",
    "CREATE INDEX IF NOT EXISTS {by_table} ON {t} (tbl, opened_at)",
    "CREATE INDEX IF NOT EXISTS {by_job} ON {t} (job, opened_at)",
)
_TABLES = {"t": "incidents"}
_NAMES = {"one_open": "incidents_one_open", "by_table": "incidents_by_table", "by_job": "incidents_by_job"}
MIGRATIONS = (Migration(1, "create incidents", _CREATE, _TABLES, _NAMES),)
"""The PostgreSQL migrations of the ``incidents`` component."""

_TEMPLATES = {
    "insert": "INSERT INTO {t} ({cols}) VALUES (%s, %s, %s, %s, 'open', %s, %s, NULL, 1, %s, %s, '[]')",
    "open_of": "SELECT {cols} FROM {t} WHERE monitor = %s AND status = 'open'",
    "touch": "UPDATE {t} SET updated_at = %s, occurrences = occurrences + 1, failing = %s"
    " WHERE id = %s AND status = 'open'",
    "close": "UPDATE {t} SET status = 'recovered', closed_at = %s, fixes = %s"
    " WHERE id = %s AND status = 'open'",
    "get": "SELECT {cols} FROM {t} WHERE id = %s",
    "of_table": "SELECT {cols} FROM {t} WHERE tbl = %s ORDER BY opened_at DESC LIMIT %s",
    "of_job": "SELECT {cols} FROM {t} WHERE job = %s ORDER BY opened_at DESC LIMIT %s",
    "recent": "SELECT {cols} FROM {t} ORDER BY opened_at DESC LIMIT %s",
}
# The column list is a constant; only {t} (the table) is filled per database by ``Database.prepare``.
_QUERIES = {key: text.replace("{cols}", _COLUMNS) for key, text in _TEMPLATES.items()}


def new_id() -> str:
    """A fresh incident id (``inc_`` + 16 hex characters)."""
    return f"inc_{secrets.token_hex(8)}"


def _incident(row: Sequence[Any]) -> Incident:
    fixes = tuple(
        Fix(str(f["call_id"]), str(f["agent"]), str(f["tool"]), int(f["audit_seq"]))
        for f in json.loads(row[11])
    )
    return Incident(
        id=str(row[0]),
        monitor=str(row[1]),
        table=str(row[2]),
        job=None if row[3] is None else str(row[3]),
        status="open" if row[4] == "open" else "recovered",
        opened_at=float(row[5]),
        updated_at=float(row[6]),
        closed_at=None if row[7] is None else float(row[7]),
        occurrences=int(row[8]),
        failing=tuple(json.loads(row[9])),
        opened_seq=int(row[10]),
        fixes=fixes,
    )


class IncidentStore:
    """Incidents over either database (thread-safe: the database serialises its connection).

    Args:
        db: where the ``incidents`` table lives (already created: use ``open_incident_store``).
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._q = db.prepare(_QUERIES, _TABLES)

    def open_of(self, monitor: str) -> Incident | None:
        """The monitor's open incident, if it has one."""
        rows = self._db.read(self._q["open_of"], (monitor,))
        return _incident(rows[0]) if rows else None

    def raise_or_add(
        self,
        incident_id: str,
        *,
        monitor: str,
        table: str,
        job: str | None,
        failing: Sequence[Mapping[str, Any]],
        opened_seq: int,
        now: float,
    ) -> tuple[Incident, bool]:
        """Open incident ``incident_id`` for ``monitor``, or add this failing run to its open one.

        Returns the incident and whether it is new.
        """
        text = json.dumps([dict(c) for c in failing], default=str)
        args = (incident_id, monitor, table, job, text, opened_seq, now)
        try:
            return self._raise_or_add(*args)
        except StoreError:
            # Another replica opened one between our read and our insert (the unique index refused
            # ours): this run adds to theirs. A second failure is a real one.
            return self._raise_or_add(*args)

    def _raise_or_add(
        self,
        incident_id: str,
        monitor: str,
        table: str,
        job: str | None,
        text: str,
        opened_seq: int,
        now: float,
    ) -> tuple[Incident, bool]:
        with self._db.tx() as cur:
            existing = cur.execute(self._q["open_of"], (monitor,)).fetchall()
            if existing:
                cur.execute(self._q["touch"], (now, text, existing[0][0]))
                row_id, new = str(existing[0][0]), False
            else:
                cur.execute(self._q["insert"], (incident_id, monitor, table, job, now, now, text, opened_seq))
                row_id, new = incident_id, True
            rows = cur.execute(self._q["get"], (row_id,)).fetchall()
        return _incident(rows[0]), new

    def recover(self, incident_id: str, fixes: Sequence[Fix], *, now: float) -> Incident:
        """Close the open incident ``incident_id`` as recovered, keeping ``fixes`` as its resolution.

        Raises:
            StoreError: no such open incident.
        """
        text = json.dumps([fix.as_dict() for fix in fixes])
        with self._db.tx() as cur:
            cur.execute(self._q["close"], (now, text, incident_id))
            rows = cur.execute(self._q["get"], (incident_id,)).fetchall()
        if not rows:
            raise StoreError(f"no incident `{incident_id}`")
        return _incident(rows[0])

    def get(self, incident_id: str) -> Incident | None:
        rows = self._db.read(self._q["get"], (incident_id,))
        return _incident(rows[0]) if rows else None

    def history(self, *, table: str | None = None, job: str | None = None, limit: int = 20) -> list[Incident]:
        """Incidents of ``table`` or of ``job`` (or all), newest first."""
        if table is not None:
            rows = self._db.read(self._q["of_table"], (table, limit))
        elif job is not None:
            rows = self._db.read(self._q["of_job"], (job, limit))
        else:
            rows = self._db.read(self._q["recent"], (limit,))
        return [_incident(row) for row in rows]

    def close(self) -> None:
        self._db.close()


def open_incident_store(
    *, path: Path | None = None, dsn: str | None = None, schema: str = "mcp_gateway", create: bool = True
) -> IncidentStore:
    """The store in SQLite file ``path``, or in PostgreSQL ``dsn``/``schema`` (migrated when ``create``)."""
    if dsn is not None:
        pg = PostgresDatabase(dsn, schema, what="incident")
        pg.setup("incidents", MIGRATIONS, create=create)
        return IncidentStore(pg)
    if path is None:
        raise StoreError("the incident store needs a file or a PostgreSQL database")
    return IncidentStore(open_sqlite(path, what="incident", statements=_CREATE, tables=_TABLES, names=_NAMES))
