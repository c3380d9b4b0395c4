"""Where approvals live: SQLite in the data directory (default) or PostgreSQL (replicas share it).

The statements and the logic both share are in ``sqlcore.py``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcp_gateway.approvals.settings import ApprovalSettings
from mcp_gateway.approvals.sqlcore import ADDED_COLUMNS, FIELDS, QUERIES, Cursor, SQLApprovalStore
from mcp_gateway.approvals.store import ApprovalStore, ApprovalStoreUnavailable
from mcp_gateway.errors import ConfigError
from mcp_gateway.storage.database import describe_pg_error
from mcp_gateway.storage.migrate import Migration, connect_migrated
from mcp_gateway.types import Clock, system_clock

if TYPE_CHECKING:
    import psycopg

__all__ = ["MIGRATIONS", "PostgresApprovalStore", "SQLiteApprovalStore", "open_approval_store"]

MIGRATIONS = (
    Migration(
        1,
        "create approvals",
        (
            QUERIES["create_table"],
            QUERIES["create_index"],
            # A table made before the two-person rule gets its columns.
            *(f"ALTER TABLE {{t}} ADD COLUMN IF NOT EXISTS {c} {ddl}" for c, ddl in ADDED_COLUMNS.items()),
        ),
        {"t": "approvals"},
        {"i": "approvals_status"},
    ),
)
"""The PostgreSQL migrations of the ``approvals`` component (1: the table made before migrations existed)."""


class SQLiteApprovalStore(SQLApprovalStore):
    """Approvals in a SQLite file (WAL, ``synchronous=FULL``), shared by the gateway and the CLI.

    Args:
        path: the database file (``approvals.db`` in the data directory); created 0600 if missing.
        clock: the time source for creation, decisions and expiry.

    Raises:
        ApprovalStoreUnavailable: the file cannot be opened or initialised.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, clock: Clock = system_clock, min_approvers: int = 1
    ) -> None:
        self._path = Path(path)
        self._clock = clock
        self._min_approvers = min_approvers
        self._lock = threading.Lock()
        self._q = {
            k: v.format(t="approvals", i="approvals_status", real="REAL").replace("%s", "?")
            for k, v in QUERIES.items()
        }
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            # Requests carry (redacted) arguments and before-images: readable by the owner only.
            os.close(os.open(self._path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600))
            self._db = sqlite3.connect(
                self._path, timeout=10.0, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
        except (OSError, sqlite3.Error) as exc:
            raise ApprovalStoreUnavailable(f"cannot open the approval store: {type(exc).__name__}") from exc
        with self._tx() as cur:
            cur.execute(self._q["create_table"])
            cur.execute(self._q["create_index"])
            # A table made before the two-person rule: add its columns (SQLite has no IF NOT EXISTS).
            have = {row[1] for row in cur.execute("PRAGMA table_info(approvals)").fetchall()}
            for column, ddl in ADDED_COLUMNS.items():
                if column not in have:
                    cur.execute(f"ALTER TABLE approvals ADD COLUMN {column} {ddl}")

    def __repr__(self) -> str:
        return f"SQLiteApprovalStore({str(self._path)!r})"

    def _list_query(self, where: str) -> Any:
        # `where` is one of the constant _LIST_WHERE texts; values are parameters.
        query = f"SELECT {FIELDS} FROM approvals WHERE {where} ORDER BY created_at DESC LIMIT %s"  # noqa: S608 - constants
        return query.replace("%s", "?")

    @contextmanager
    def _tx(self) -> Iterator[Cursor]:
        # BEGIN IMMEDIATE takes the write lock first, so the update and the read after it see one state.
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db.cursor()
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise ApprovalStoreUnavailable(f"the approval store failed: {type(exc).__name__}") from exc

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()


class PostgresApprovalStore(SQLApprovalStore):
    """Approvals in PostgreSQL, so replicas share them; the schema and table are created if missing.

    Args:
        dsn: a libpq connection string (never shown in errors).
        schema: the schema holding the ``approvals`` table.
        clock: the time source for creation, decisions and expiry.

    Raises:
        ApprovalStoreUnavailable: the database cannot be reached or initialised.
    """

    def __init__(
        self,
        dsn: str,
        schema: str = "mcp_gateway",
        *,
        clock: Clock = system_clock,
        connect_timeout: int = 5,
        min_approvers: int = 1,
    ) -> None:
        # Imported here because psycopg is the optional `postgres` extra.
        import psycopg
        from psycopg import sql

        self._psycopg = psycopg
        self._sql = sql
        self._dsn = dsn
        self._schema = schema
        self._clock = clock
        self._min_approvers = min_approvers
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._table = sql.Identifier(schema, "approvals")
        names = {
            "t": self._table,
            "i": sql.Identifier("approvals_status"),
            "real": sql.SQL("DOUBLE PRECISION"),
        }
        self._q = {k: sql.SQL(v).format(**names) for k, v in QUERIES.items()}
        with self._lock:
            try:
                # Versioned, under an advisory lock: replicas starting together migrate once.
                self._conn = connect_migrated(
                    dsn, schema, "approvals", MIGRATIONS, connect_timeout=connect_timeout
                )
            except psycopg.Error as exc:
                why = describe_pg_error(exc, dsn)
                raise ApprovalStoreUnavailable(
                    f"the approval store (postgres schema `{schema}`) cannot be set up: {why}"
                ) from exc

    def __repr__(self) -> str:
        return f"PostgresApprovalStore(schema={self._schema!r})"

    def _list_query(self, where: str) -> Any:
        sql = self._sql
        return sql.SQL("SELECT {fields} FROM {t} WHERE {where} ORDER BY created_at DESC LIMIT %s").format(
            fields=sql.SQL(FIELDS), t=self._table, where=sql.SQL(where)
        )

    @contextmanager
    def _tx(self) -> Iterator[Cursor]:
        with self._lock:
            try:
                # Reconnect after a dropped connection instead of failing every later call.
                if self._conn is None or self._conn.closed or self._conn.broken:
                    self._conn = self._psycopg.connect(
                        self._dsn, autocommit=True, connect_timeout=self._connect_timeout
                    )
                with self._conn.transaction(), self._conn.cursor() as cur:
                    # A returned decision or use is durable even if the server relaxed commits.
                    cur.execute("SET LOCAL synchronous_commit = on")
                    yield cur
            except self._psycopg.Error as exc:
                # Server messages may quote values or the connection string: name the class only.
                state = f", sqlstate {exc.sqlstate}" if exc.sqlstate else ""
                why = f"{type(exc).__name__}{state}"
                raise ApprovalStoreUnavailable(
                    f"the approval store (postgres schema `{self._schema}`) failed: {why}"
                ) from exc

    def close(self) -> None:
        """Close the connection, if open."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()


def open_approval_store(
    settings: ApprovalSettings, data_dir: Path, *, clock: Clock = system_clock
) -> ApprovalStore:
    """The configured approval store (the gateway and the CLI open the same one).

    Args:
        settings: the ``approvals:`` section.
        data_dir: where a relative SQLite ``path`` lives.
        clock: the time source (tests pass a fake one).

    Raises:
        ApprovalStoreUnavailable: it cannot be opened.
        ConfigError: postgres without a dsn.
    """
    if settings.store == "postgres":
        if settings.dsn is None:
            raise ConfigError("approvals: store `postgres` needs a `dsn`")
        return PostgresApprovalStore(
            settings.dsn, schema=settings.schema_name, clock=clock, min_approvers=settings.min_approvers
        )
    path = settings.path if settings.path.is_absolute() else data_dir / settings.path
    return SQLiteApprovalStore(path, clock=clock, min_approvers=settings.min_approvers)
