"""Where sealed envelopes live: the SQLite and PostgreSQL secret stores (the ``Vault`` over them:
``service.py``; master keys: ``keys.py``).

Backends store only envelopes (see ``crypto``) plus public metadata, so a stolen database yields
ciphertext, secret names and key ids. SQLite is the embedded default; PostgreSQL lets replicas share
one vault. Both keep a ``generation`` counter that changes on every write, so readers can tell when
to refresh what they have cached.

Beside the envelopes, a ``key_checks`` table holds one key check value per master key id (see
``crypto.key_check`` and ``keycheck.py``), so a vault knows its own keys. It is a table of its own,
not rows of ``meta`` (whose values are counters), and ``CREATE TABLE IF NOT EXISTS`` adds it to a
vault made before it existed; such a vault gets its first checks on the first unseal that opens an
envelope.
"""

from __future__ import annotations

import builtins
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from mcp_gateway.errors import VaultError
from mcp_gateway.storage.database import describe_pg_error
from mcp_gateway.storage.migrate import Migration, connect_migrated
from mcp_gateway.types import Clock, system_clock
from mcp_gateway.vault.crypto import envelope_key_id

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "METADATA_FIELDS",
    "KeyCheckStore",
    "PostgresSecretStore",
    "SQLiteSecretStore",
    "SwappableStore",
]

METADATA_FIELDS = ("name", "key_id", "created_at", "updated_at")
"""What ``metadata()`` reports of each secret; never its envelope."""


@runtime_checkable
class SwappableStore(Protocol):
    """A store that can replace an envelope only if it is still the one read (compare-and-swap), and
    store one only if the name is free."""

    def swap(self, name: str, expected: bytes, envelope: bytes) -> bool: ...

    def add(self, name: str, envelope: bytes) -> bool: ...


@runtime_checkable
class KeyCheckStore(Protocol):
    """A store that keeps the key check value of each master key id beside the envelopes."""

    def key_checks(self) -> dict[str, bytes]: ...

    def add_key_checks(self, checks: Mapping[str, bytes], *, only_if_none: bool = False) -> bool: ...

    def remove_key_checks(self, key_ids: Iterable[str]) -> None: ...

    def metadata(self) -> builtins.list[dict[str, Any]]: ...

    def get(self, name: str) -> bytes | None: ...


class _Cursor(Protocol):
    """The part of a DB-API cursor the stores use (``sqlite3.Cursor`` and ``psycopg.Cursor`` both fit)."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, query: Any, params: Any = ..., /) -> Any: ...

    def fetchall(self) -> builtins.list[Any]: ...


# One text per statement for both dialects: {t}/{m}/{k} are the tables, %s the parameters.
_QUERIES = {
    "get": "SELECT envelope FROM {t} WHERE name = %s",
    "put": "INSERT INTO {t} (name, envelope, key_id, created_at, updated_at) VALUES (%s, %s, %s, %s, %s)"
    " ON CONFLICT (name) DO UPDATE SET envelope = excluded.envelope, key_id = excluded.key_id,"
    " updated_at = excluded.updated_at",
    "add": "INSERT INTO {t} (name, envelope, key_id, created_at, updated_at) VALUES (%s, %s, %s, %s, %s)"
    " ON CONFLICT (name) DO NOTHING",
    "swap": "UPDATE {t} SET envelope = %s, key_id = %s WHERE name = %s AND envelope = %s",
    "delete": "DELETE FROM {t} WHERE name = %s",
    "bump": "UPDATE {m} SET value = value + 1 WHERE key = 'generation'",
    "names": "SELECT name FROM {t} ORDER BY name",
    "metadata": "SELECT name, key_id, created_at, updated_at FROM {t} ORDER BY name",
    "generation": "SELECT value FROM {m} WHERE key = 'generation'",
    "create_secrets": "CREATE TABLE IF NOT EXISTS {t} (name TEXT PRIMARY KEY, envelope {blob} NOT NULL,"
    " key_id TEXT NOT NULL, created_at {real} NOT NULL, updated_at {real} NOT NULL)",
    "create_meta": "CREATE TABLE IF NOT EXISTS {m} (key TEXT PRIMARY KEY, value BIGINT NOT NULL)",
    "init_generation": "INSERT INTO {m} (key, value) VALUES ('generation', 0) ON CONFLICT (key) DO NOTHING",
    "create_checks": "CREATE TABLE IF NOT EXISTS {k} (key_id TEXT PRIMARY KEY, key_check {blob} NOT NULL,"
    " created_at {real} NOT NULL)",
    "checks": "SELECT key_id, key_check FROM {k} ORDER BY key_id",
    "count_checks": "SELECT count(*) FROM {k}",
    "add_check": "INSERT INTO {k} (key_id, key_check, created_at) VALUES (%s, %s, %s)"
    " ON CONFLICT (key_id) DO NOTHING",
    "remove_check": "DELETE FROM {k} WHERE key_id = %s",
}
_SCHEMA_STEPS = ("create_secrets", "create_meta", "init_generation", "create_checks")
MIGRATIONS = (
    Migration(
        1,
        "create secrets, meta, key_checks",
        tuple(_QUERIES[step] for step in _SCHEMA_STEPS),
        {"t": "secrets", "m": "meta", "k": "key_checks"},
    ),
)
"""The PostgreSQL migrations of the ``vault`` component (1: the tables made before migrations existed)."""


class _SQLSecretStore:
    """The ``SecretStore`` logic shared by the SQL backends; each supplies ``_tx`` and ``_q``."""

    _q: dict[str, Any]
    _clock: Clock

    def _tx(self, *, write: bool) -> AbstractContextManager[_Cursor]:
        """A transaction (committed on success, rolled back on error) mapping driver errors to VaultError."""
        raise NotImplementedError

    def get(self, name: str) -> bytes | None:
        """The envelope stored under ``name``, or ``None``."""
        with self._tx(write=False) as cur:
            rows = cur.execute(self._q["get"], (name,)).fetchall()
        return bytes(rows[0][0]) if rows else None

    def put(self, name: str, envelope: bytes) -> None:
        """Insert or replace the envelope of ``name``. Raises ``IntegrityError`` for a malformed envelope."""
        key_id, now = envelope_key_id(envelope), self._clock()
        with self._tx(write=True) as cur:
            cur.execute(self._q["put"], (name, envelope, key_id, now, now))
            cur.execute(self._q["bump"])

    def add(self, name: str, envelope: bytes) -> bool:
        """Store ``envelope`` as ``name`` only if nothing is stored under it; ``True`` if it was stored.

        One statement, so two writers racing (replicas starting together on a new shared vault) end with
        one value that both read back, never one each.
        """
        key_id, now = envelope_key_id(envelope), self._clock()
        with self._tx(write=True) as cur:
            cur.execute(self._q["add"], (name, envelope, key_id, now, now))
            added = cur.rowcount == 1
            if added:
                cur.execute(self._q["bump"])
        return added

    def swap(self, name: str, expected: bytes, envelope: bytes) -> bool:
        """Replace the envelope of ``name`` only if it is still ``expected``; ``updated_at`` is kept."""
        key_id = envelope_key_id(envelope)
        with self._tx(write=True) as cur:
            cur.execute(self._q["swap"], (envelope, key_id, name, expected))
            swapped = cur.rowcount == 1
            if swapped:
                cur.execute(self._q["bump"])
        return swapped

    def delete(self, name: str) -> bool:
        """Remove ``name``; ``True`` if it existed."""
        with self._tx(write=True) as cur:
            cur.execute(self._q["delete"], (name,))
            deleted = cur.rowcount == 1
            if deleted:
                cur.execute(self._q["bump"])
        return deleted

    def names(self) -> builtins.list[str]:
        """Every stored name, sorted."""
        with self._tx(write=False) as cur:
            return [row[0] for row in cur.execute(self._q["names"]).fetchall()]

    def metadata(self) -> builtins.list[dict[str, Any]]:
        """Name, key id and timestamps of every secret, sorted by name; never envelopes or values."""
        with self._tx(write=False) as cur:
            rows = cur.execute(self._q["metadata"]).fetchall()
        return [dict(zip(METADATA_FIELDS, row, strict=True)) for row in rows]

    def generation(self) -> int:
        """A counter bumped by every put, swap and successful delete."""
        with self._tx(write=False) as cur:
            return int(cur.execute(self._q["generation"]).fetchall()[0][0])

    def key_checks(self) -> dict[str, bytes]:
        """The key check value of each recorded master key id."""
        with self._tx(write=False) as cur:
            return {row[0]: bytes(row[1]) for row in cur.execute(self._q["checks"]).fetchall()}

    def add_key_checks(self, checks: Mapping[str, bytes], *, only_if_none: bool = False) -> bool:
        """Record key check values (an id already recorded keeps its value).

        Args:
            checks: check value by key id.
            only_if_none: record nothing if any check is recorded already, decided in the same
                transaction, so two processes opening a new vault with different keys cannot both win.

        Returns:
            ``False`` when ``only_if_none`` found checks recorded (nothing written), else ``True``.
        """
        now = self._clock()
        with self._tx(write=True) as cur:
            cur.execute(self._q["lock_checks"])
            if only_if_none and int(cur.execute(self._q["count_checks"]).fetchall()[0][0]):
                return False
            for key_id, check in checks.items():
                cur.execute(self._q["add_check"], (key_id, check, now))
        return True

    def remove_key_checks(self, key_ids: Iterable[str]) -> None:
        """Forget the check values of ``key_ids`` (keys retired by a finished rotation)."""
        with self._tx(write=True) as cur:
            for key_id in key_ids:
                cur.execute(self._q["remove_check"], (key_id,))


class SQLiteSecretStore(_SQLSecretStore):
    """Envelopes in a SQLite file (WAL, ``synchronous=FULL``); safe to share between threads.

    Args:
        path: the database file; created 0600 (with its parent directories) if missing.
        clock: source of the ``created_at``/``updated_at`` timestamps.

    Raises:
        VaultError: the database cannot be opened or initialised (every method maps SQLite errors so).
    """

    def __init__(self, path: str | os.PathLike[str], *, clock: Clock = system_clock) -> None:
        self._path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._writes = 0  # write transactions this connection ran (``PRAGMA data_version`` skips them)
        self._known: tuple[tuple[int, int], int] | None = None  # ((data_version, writes), generation)
        self._q = {
            k: v.format(t="secrets", m="meta", k="key_checks", blob="BLOB", real="REAL").replace("%s", "?")
            for k, v in _QUERIES.items()
        }
        # BEGIN IMMEDIATE already holds the write lock for the whole transaction.
        self._q["lock_checks"] = "SELECT 1"
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            # Names and key ids are nobody else's business; SQLite gives -wal/-shm the file's mode.
            os.close(os.open(self._path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600))
            self._db = sqlite3.connect(
                self._path, timeout=10.0, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
        except (OSError, sqlite3.Error) as exc:
            raise VaultError(f"cannot open secret store `{self._path}`: {exc}") from exc
        with self._tx(write=True) as cur:
            for step in _SCHEMA_STEPS:
                cur.execute(self._q[step])

    def __repr__(self) -> str:
        return f"SQLiteSecretStore({str(self._path)!r})"

    @contextmanager
    def _tx(self, *, write: bool) -> Iterator[_Cursor]:
        # BEGIN IMMEDIATE takes the write lock up front, so a write and its generation bump are one step.
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield self._db.cursor()
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise VaultError(f"secret store `{self._path}` failed: {exc}") from exc
            finally:
                if write:
                    self._writes += 1  # committed or not: the next ``generation`` asks the file

    def generation(self) -> int:
        """A counter bumped by every put, swap and successful delete.

        Read from the file only when it may have moved: ``PRAGMA data_version`` changes when another
        connection (the CLI, another gateway process) commits, and this connection counts its own
        write transactions. Every governed call asks twice, so this saves a transaction each time.
        """
        with self._lock:
            try:
                version = self._db.execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.Error as exc:
                raise VaultError(f"secret store `{self._path}` failed: {exc}") from exc
            stamp = (int(version), self._writes)
            known = self._known
            if known is not None and known[0] == stamp:
                return known[1]
        # Read after the stamp: a commit in between only makes the next call read the file again.
        generation = super().generation()
        self._known = (stamp, generation)
        return generation

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()


class PostgresSecretStore(_SQLSecretStore):
    """Envelopes in PostgreSQL, so replicas share one vault; the schema and tables are created if missing.

    Args:
        dsn: a libpq connection string.
        schema: the schema holding the ``secrets`` and ``meta`` tables.
        clock: source of the ``created_at``/``updated_at`` timestamps.

    Raises:
        VaultError: the database cannot be reached or initialised (every method maps psycopg errors so).
    """

    def __init__(self, dsn: str, schema: str = "mcp_gateway", *, clock: Clock = system_clock) -> None:
        # Imported here because psycopg is the optional `postgres` extra.
        import psycopg
        from psycopg import sql

        self._psycopg = psycopg
        self._dsn = dsn
        self._schema = schema
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        names = {
            "t": sql.Identifier(schema, "secrets"),
            "m": sql.Identifier(schema, "meta"),
            "k": sql.Identifier(schema, "key_checks"),
        }
        types = {"blob": sql.SQL("BYTEA"), "real": sql.SQL("DOUBLE PRECISION")}
        self._q = {k: sql.SQL(v).format(**names, **types) for k, v in _QUERIES.items()}
        # Self-conflicting, so a count and the inserts after it are one step across replicas.
        self._q["lock_checks"] = sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(names["k"])
        with self._lock:
            try:
                # Versioned, under an advisory lock: replicas starting together migrate once.
                self._conn = connect_migrated(dsn, schema, "vault", MIGRATIONS)
            except psycopg.Error as exc:
                why = describe_pg_error(exc, dsn)
                raise VaultError(
                    f"postgres secret store (schema `{schema}`) cannot be set up: {why}"
                ) from exc

    def __repr__(self) -> str:
        return f"PostgresSecretStore(schema={self._schema!r})"

    @contextmanager
    def _tx(self, *, write: bool) -> Iterator[_Cursor]:
        with self._lock:
            try:
                # Reconnect after a dropped connection instead of failing every later call.
                if self._conn is None or self._conn.closed or self._conn.broken:
                    self._conn = self._psycopg.connect(self._dsn, autocommit=True)
                with self._conn.transaction(), self._conn.cursor() as cur:
                    yield cur
            except self._psycopg.Error as exc:
                why = describe_pg_error(exc, self._dsn)
                raise VaultError(f"postgres secret store (schema `{self._schema}`) failed: {why}") from exc

    def close(self) -> None:
        """Close the connection, if open."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()


def stored_names_sqlite(path: Path) -> builtins.list[str] | None:
    """The secret names in the SQLite store at ``path``, read without creating or changing anything;
    None when there is no store there yet.

    Raises:
        VaultError: the file exists but cannot be read as a secret store.
    """
    if not path.is_file():
        return None
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
        try:
            return [row[0] for row in db.execute(_QUERIES["names"].format(t="secrets")).fetchall()]
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise VaultError(f"cannot read secret store `{path}`: {exc}") from exc


def stored_names_postgres(dsn: str, schema: str) -> builtins.list[str] | None:
    """The secret names in the PostgreSQL store of ``schema``, read-only; None when it has no
    ``secrets`` table yet.

    Raises:
        VaultError: the database cannot be reached or read (the message carries no password).
    """
    import psycopg
    from psycopg import sql

    try:
        with psycopg.connect(dsn, connect_timeout=5, autocommit=True) as conn:
            table = sql.Identifier(schema, "secrets")
            exists = conn.execute("SELECT to_regclass(%s)", (table.as_string(conn),)).fetchone()
            if exists is None or exists[0] is None:
                return None
            query = sql.SQL(_QUERIES["names"]).format(t=table)
            return [row[0] for row in conn.execute(query).fetchall()]
    except psycopg.Error as exc:
        why = describe_pg_error(exc, dsn)
        raise VaultError(f"cannot read the postgres secret store (schema `{schema}`): {why}") from None
