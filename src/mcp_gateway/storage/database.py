"""One store's connection, SQLite or PostgreSQL, behind one small interface (``Database``).

Both hand out a write transaction (``tx``) and a one-statement read (``read``), serialise use of
their single connection with a lock (the gateway's worker threads share it), and turn driver errors
into ``StoreError`` naming the store and where it lives, never a DSN or a value from a row.
PostgreSQL reconnects after a dropped connection instead of failing every later call.
"""

from __future__ import annotations

import builtins
import os
import re
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from mcp_gateway.errors import StoreError

if TYPE_CHECKING:
    import psycopg

    from mcp_gateway.storage.migrate import Migration

__all__ = ["Cursor", "Database", "PostgresDatabase", "SQLiteDatabase", "describe_pg_error"]

_TYPES = {
    "sqlite": {"real": "REAL", "blob": "BLOB"},
    "postgres": {"real": "DOUBLE PRECISION", "blob": "BYTEA"},
}
_USERINFO = re.compile(r"//[^/@\s]*@")


class Cursor(Protocol):
    """The part of a DB-API cursor the stores use (``sqlite3.Cursor`` and ``psycopg.Cursor`` both fit)."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, query: Any, params: Any = ..., /) -> Any: ...

    def fetchall(self) -> builtins.list[Any]: ...


class Database(Protocol):
    """A store's connection: statements prepared once, write transactions, one-statement reads."""

    @property
    def dialect(self) -> Literal["sqlite", "postgres"]: ...

    @property
    def where(self) -> str:
        """Where the store lives, for messages (a file path or a PostgreSQL schema; never a DSN)."""

    def prepare(
        self, queries: Mapping[str, str], tables: Mapping[str, str], names: Mapping[str, str] = ...
    ) -> dict[str, Any]: ...

    def tx(self) -> AbstractContextManager[Cursor]: ...

    def read(self, query: Any, params: Sequence[Any] = ()) -> builtins.list[tuple[Any, ...]]: ...

    def close(self) -> None: ...


class SQLiteDatabase:
    """A SQLite file (WAL, ``synchronous=FULL``), created 0600 with its folder if missing.

    Args:
        path: the database file.
        what: the store's name in messages (``agent token``, ``pin``).
        timeout: seconds to wait for another process's write lock.

    Raises:
        StoreError: the file cannot be opened.
    """

    dialect: Literal["sqlite"] = "sqlite"

    def __init__(self, path: Path, *, what: str, timeout: float = 10.0) -> None:
        self.path = path
        self.what = what
        self.where = f"`{path}`"
        self._lock = threading.Lock()
        self._closed = False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Stores hold hashes, definitions and keys of their own: readable by the owner only.
            os.close(os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600))
            self.connection = sqlite3.connect(
                path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
            self.connection.execute("PRAGMA journal_mode=WAL")
            self.connection.execute("PRAGMA synchronous=FULL")
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the {what} store `{path}`: {exc}") from exc

    def prepare(
        self, queries: Mapping[str, str], tables: Mapping[str, str], names: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """The statements with table/type placeholders filled in and ``?`` parameters."""
        fill = {**tables, **(names or {}), **_TYPES["sqlite"]}
        return {key: text.format(**fill).replace("%s", "?") for key, text in queries.items()}

    @contextmanager
    def tx(self) -> Iterator[Cursor]:
        """A write transaction: ``BEGIN IMMEDIATE`` (the write lock first), committed on success."""
        with self._lock:
            try:
                self.connection.execute("BEGIN IMMEDIATE")
                try:
                    yield self.connection.cursor()
                except BaseException:
                    self.connection.execute("ROLLBACK")
                    raise
                self.connection.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(f"the {self.what} store `{self.path}` failed: {exc}") from exc

    def read(self, query: Any, params: Sequence[Any] = ()) -> builtins.list[tuple[Any, ...]]:
        """The rows of one statement (its own implicit transaction)."""
        with self._lock:
            try:
                return self.connection.execute(query, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"the {self.what} store `{self.path}` failed: {exc}") from exc

    def close(self) -> None:
        """Close the connection; idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self.connection.close()


def open_sqlite(
    path: Path,
    *,
    what: str,
    statements: Sequence[str],
    tables: Mapping[str, str],
    names: Mapping[str, str] | None = None,
) -> SQLiteDatabase:
    """A store's SQLite file with its tables: ``statements`` (its migration text, ``IF NOT EXISTS``)
    run in one transaction; the connection is closed again if they fail.

    Raises:
        StoreError: the file cannot be opened or set up.
    """
    db = SQLiteDatabase(path, what=what)
    try:
        with db.tx() as cur:
            for text in db.prepare({str(i): q for i, q in enumerate(statements)}, tables, names).values():
                cur.execute(text)
    except BaseException:
        db.close()
        raise
    return db


def describe_pg_error(exc: Exception, dsn: str) -> str:
    """What went wrong, fit for a message: the error class and SQLSTATE; for a connection failure also
    libpq's first line (which says why: refused, unknown host, authentication), with the DSN's
    password and any URL user info cut out. Server messages about statements can quote row values,
    so those are never included."""
    state = getattr(exc, "sqlstate", None)
    text = type(exc).__name__ + (f", sqlstate {state}" if state else "")
    if type(exc).__name__ != "OperationalError" or (state is not None and not state.startswith("08")):
        return text
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else ""
    try:
        from psycopg.conninfo import conninfo_to_dict

        password = conninfo_to_dict(dsn).get("password")
    except Exception:
        return text
    if password:
        first = first.replace(str(password), "***")
    return f"{text}: {_USERINFO.sub('//***@', first)}" if first else text


class PostgresDatabase:
    """A schema in PostgreSQL, reached through one connection opened on first use.

    Args:
        dsn: a libpq connection string or URI (never shown in messages).
        schema: the schema holding the store's tables.
        what: the store's name in messages.
        connect_timeout: seconds to wait for a connection.
    """

    dialect: Literal["postgres"] = "postgres"

    def __init__(self, dsn: str, schema: str, *, what: str, connect_timeout: int = 5) -> None:
        # Imported here because psycopg is the optional `postgres` extra.
        import psycopg
        from psycopg import sql

        self._psycopg = psycopg
        self._sql = sql
        self._dsn = dsn
        self.schema = schema
        self.what = what
        self.where = f"postgres schema `{schema}`"
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None

    def __repr__(self) -> str:
        return f"PostgresDatabase(schema={self.schema!r}, what={self.what!r})"

    def prepare(
        self, queries: Mapping[str, str], tables: Mapping[str, str], names: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """The statements with quoted, schema-qualified tables and the dialect's types."""
        sql = self._sql
        fill: dict[str, Any] = {k: sql.Identifier(self.schema, v) for k, v in tables.items()}
        fill |= {k: sql.Identifier(v) for k, v in (names or {}).items()}
        fill |= {k: sql.SQL(v) for k, v in _TYPES["postgres"].items()}
        return {key: sql.SQL(text).format(**fill) for key, text in queries.items()}

    def _failure(self, exc: Exception) -> StoreError:
        return StoreError(f"the {self.what} store ({self.where}) failed: {describe_pg_error(exc, self._dsn)}")

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            self._conn = self._psycopg.connect(
                self._dsn, autocommit=True, connect_timeout=self._connect_timeout
            )
        return self._conn

    @contextmanager
    def tx(self) -> Iterator[Cursor]:
        """A write transaction, durable on return even if the server relaxed ``synchronous_commit``."""
        with self._lock:
            try:
                conn = self._connection()
                with conn.transaction(), conn.cursor() as cur:
                    cur.execute("SET LOCAL synchronous_commit = on")
                    yield cur
            except self._psycopg.Error as exc:
                raise self._failure(exc) from exc

    def read(self, query: Any, params: Sequence[Any] = ()) -> builtins.list[tuple[Any, ...]]:
        """The rows of one statement (autocommit: its own transaction, one round trip)."""
        with self._lock:
            try:
                return self._connection().execute(query, params).fetchall()
            except self._psycopg.Error as exc:
                raise self._failure(exc) from exc

    def setup(self, component: str, migrations: Sequence[Migration], *, create: bool) -> None:
        """Bring the schema's ``component`` up to date (``create``), or only check that it is.

        Raises:
            StoreError: unreachable; a migration failed; the schema is newer than this gateway; or
                (``create`` false) the component was never set up or needs ``mcp-gateway db migrate``.
        """
        from mcp_gateway.storage.migrate import migrate, require

        with self._lock:
            try:
                conn = self._connection()
                if create:
                    migrate(conn, self.schema, component, migrations)
                else:
                    require(conn, self.schema, component, migrations)
            except BaseException as exc:
                # The store is not handed out: leave no connection behind.
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                if isinstance(exc, self._psycopg.Error):
                    raise StoreError(
                        f"the {self.what} store ({self.where}) cannot be set up:"
                        f" {describe_pg_error(exc, self._dsn)}"
                    ) from exc
                raise

    def close(self) -> None:
        """Close the connection, if open; idempotent."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
