"""Where policy history lives: SQLite in the data directory, or the audit store's PostgreSQL schema.

Two tables: ``policy_versions`` (each version's files, once) and ``policy_loads`` (each load, good or
failed). Both stores run the same statements through ``storage.Database``; on PostgreSQL they are
the ``policy_history`` component's migrations, so replicas sharing a schema share one history.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mcp_gateway.errors import StoreError
from mcp_gateway.policy.history import PolicyFiles, PolicyHistoryError, PolicyLoadEvent, policy_diff
from mcp_gateway.storage.database import Database, PostgresDatabase, SQLiteDatabase
from mcp_gateway.storage.lease import replica_name
from mcp_gateway.storage.migrate import Migration

__all__ = ["MIGRATIONS", "REPLICA", "SQLPolicyHistory", "open_postgres_history", "open_sqlite_history"]

REPLICA = replica_name()
"""This process, as its policy loads name it (``host:pid``)."""

_TABLES = {"v": "policy_versions", "l": "policy_loads"}
_LOAD_COLUMNS = "id, at, ok, version, previous, path, trigger_, replica, problems"
_VERSIONS = (
    "CREATE TABLE IF NOT EXISTS {v}"
    " (version TEXT PRIMARY KEY, files TEXT NOT NULL, first_seen {real} NOT NULL)"
)
_LOADS = (
    "CREATE TABLE IF NOT EXISTS {l} ({id}, at {real} NOT NULL, ok INTEGER NOT NULL, version TEXT NOT NULL,"
    " previous TEXT NOT NULL, path TEXT NOT NULL, trigger_ TEXT NOT NULL, replica TEXT NOT NULL,"
    " problems TEXT NOT NULL)"
)
_LOADS_INDEX = "CREATE INDEX IF NOT EXISTS {ok_index} ON {l} (ok, id)"
_QUERIES = {
    "add_version": "INSERT INTO {v} (version, files, first_seen) VALUES (%s, %s, %s)"
    " ON CONFLICT (version) DO NOTHING",
    "add_load": "INSERT INTO {l} (at, ok, version, previous, path, trigger_, replica, problems)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
    "loads": f"SELECT {_LOAD_COLUMNS} FROM {{l}} WHERE id < %s ORDER BY id DESC LIMIT %s",  # noqa: S608 - constants
    "last_failure": f"SELECT {_LOAD_COLUMNS} FROM {{l}} WHERE ok = 0 ORDER BY id DESC LIMIT 1",  # noqa: S608 - constants
    "files": "SELECT files FROM {v} WHERE version = %s",
}
MIGRATIONS = (
    Migration(
        1,
        "create policy_versions, policy_loads",
        (
            _VERSIONS,
            _LOADS.replace("{id}", "id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"),
            _LOADS_INDEX,
        ),
        _TABLES,
        {"ok_index": "policy_loads_ok"},
    ),
)
"""The PostgreSQL migrations of the ``policy_history`` component."""
_NEWEST = 2**62


class SQLPolicyHistory:
    """Policy loads and the files of each version, over either database.

    Every method raises ``StoreError`` when the database cannot be read or written.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._q = db.prepare(_QUERIES, _TABLES)

    def __repr__(self) -> str:
        return f"SQLPolicyHistory({self._db.where})"

    def record(self, event: PolicyLoadEvent) -> None:
        """Store one load and, if new, its version's files, in one transaction."""
        with self._db.tx() as cur:
            if event.files is not None:
                files = json.dumps([list(f) for f in event.files.files], ensure_ascii=False)
                cur.execute(self._q["add_version"], (event.files.version, files, event.at))
            cur.execute(
                self._q["add_load"],
                (
                    event.at,
                    int(event.ok),
                    event.version,
                    event.previous,
                    event.path,
                    event.trigger,
                    event.replica,
                    json.dumps(list(event.problems), ensure_ascii=False),
                ),
            )

    def loads(self, *, limit: int = 50, before_id: int | None = None) -> list[PolicyLoadEvent]:
        """Loads newest first, ``before_id`` the keyset cursor (the previous page's last ``id``)."""
        rows = self._db.read(self._q["loads"], (before_id if before_id is not None else _NEWEST, limit))
        return [_load(row) for row in rows]

    def last_failure(self) -> PolicyLoadEvent | None:
        """The newest failed load (its ``problems`` say why), or None."""
        rows = self._db.read(self._q["last_failure"])
        return _load(rows[0]) if rows else None

    def files(self, version: str) -> PolicyFiles | None:
        """The files of ``version``, or None if this history never saw it load."""
        rows = self._db.read(self._q["files"], (version,))
        if not rows:
            return None
        return PolicyFiles(version, tuple((str(name), str(text)) for name, text in json.loads(rows[0][0])))

    def diff(self, old: str, new: str, *, context: int = 3) -> str:
        """The unified diff from version ``old`` to version ``new`` (``policy_diff``).

        Raises:
            PolicyHistoryError: a version this history does not hold.
        """
        before, after = self.files(old), self.files(new)
        for version, found in ((old, before), (new, after)):
            if found is None:
                raise PolicyHistoryError(f"no policy version `{version}` in the policy history")
        assert before is not None and after is not None  # noqa: S101 - narrowed by the loop above
        return policy_diff(before, after, context=context)

    def close(self) -> None:
        self._db.close()


def _load(row: tuple[Any, ...]) -> PolicyLoadEvent:
    id_, at, ok, version, previous, path, trigger, replica, problems = row
    return PolicyLoadEvent(
        at=float(at),
        ok=bool(ok),
        version=version,
        previous=previous,
        path=path,
        trigger=trigger,
        replica=replica,
        problems=tuple(json.loads(problems)),
        id=int(id_),
    )


def open_sqlite_history(path: Path) -> SQLPolicyHistory:
    """The history in a SQLite file (created 0600 with its folder if missing).

    Raises:
        StoreError: the file cannot be opened or set up.
    """
    db = SQLiteDatabase(path, what="policy history")
    try:
        with db.tx() as cur:
            for statement in (_VERSIONS, _LOADS.replace("{id}", "id INTEGER PRIMARY KEY"), _LOADS_INDEX):
                cur.execute(statement.format(**_TABLES, ok_index="policy_loads_ok", real="REAL"))
    except StoreError:
        db.close()
        raise
    return SQLPolicyHistory(db)


def open_postgres_history(dsn: str, schema: str, *, create: bool = True) -> SQLPolicyHistory:
    """The history in a PostgreSQL schema (migrated on open unless ``create`` is false).

    Raises:
        StoreError: unreachable, or the schema cannot be set up (or, ``create`` false, was never).
    """
    db = PostgresDatabase(dsn, schema, what="policy history")
    db.setup("policy_history", MIGRATIONS, create=create)
    return SQLPolicyHistory(db)
