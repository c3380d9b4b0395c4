"""A durable idempotency-key → run store, so the same rerun reason does not launch twice in a window.

The key is a hash of (job, mode, normalised reason). The toolset looks the key up before it asks the
orchestrator to launch and records the run the orchestrator answered with. The store is SQLite in the
gateway's data dir, so a restart does not forget what was launched, or the ``rerun_keys`` table of a
PostgreSQL schema (the top-level ``store:`` setting), so a key one replica launched holds on all of them.
Both run the statements of ``SQLIdempotencyStore``.

A key deduplicates only for a window (the job's ``idempotency_window_seconds``, 24 h by default) from
the launch it recorded: after that the same reason launches again. A reason like "nightly schedule"
otherwise returned the same old (failed) run forever.

The orchestrator is handed a *launch key* (Prefect ``idempotency_key``, Airflow ``dag_run_id``, Dagster
tag): the key itself for a key's first launch, and a hash of (key, generation) for each launch after
an expiry. The orchestrator then deduplicates within one generation (a crash between launch and
record still returns the first run of that generation) but never answers a new window with the run
of an expired one.

SQLite schema versions (``PRAGMA user_version``; PostgreSQL starts at 1, as migration 1 of the
``rerun_keys`` component in ``storage/migrate.py``):
    0  ``rerun_keys(key, job, mode, run_id, created_at)``: every row has ``created_at`` (NOT NULL,
       written at record time since the first release), so rows are aged from their real launch time.
    1  adds ``generation`` (existing rows: 0, which is what their launch key was). A row whose
       ``created_at`` is not a plausible epoch time (not a number, not positive, or in the future)
       cannot be shown to be inside any window and is made expired (``created_at = 0``): the worst
       case is one more run of a job whose rerun is routine, where stamping it "now" would keep a
       possibly stale key (the bug this fixes) deduplicating for another full window.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mcp_gateway.errors import ConfigError
from mcp_gateway.storage.database import Database, PostgresDatabase, SQLiteDatabase
from mcp_gateway.storage.migrate import Migration

SCHEMA_VERSION = 1
DEFAULT_WINDOW_SECONDS = 86_400
CLOCK_SKEW_SECONDS = 60.0
"""A record this far in the future still counts as live (a wall clock stepped back a little)."""

_CREATE = """
CREATE TABLE IF NOT EXISTS rerun_keys (
    key TEXT PRIMARY KEY,
    job TEXT NOT NULL,
    mode TEXT NOT NULL,
    run_id TEXT NOT NULL,
    created_at REAL NOT NULL
)
"""
# One text per statement for both dialects: {t} is the table, %s the parameters.
_QUERIES = {
    "get": "SELECT key, job, mode, run_id, created_at, generation FROM {t} WHERE key = %s",
    # A record of the same or a later generation already present is kept (its first run wins).
    "record": "INSERT INTO {t} (key, job, mode, run_id, created_at, generation)"
    " VALUES (%s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (key) DO UPDATE SET job = excluded.job, mode = excluded.mode,"
    " run_id = excluded.run_id, created_at = excluded.created_at,"
    " generation = excluded.generation WHERE rerun_keys.generation < excluded.generation",
}
MIGRATIONS = (
    Migration(
        1,
        "create rerun_keys",
        (
            "CREATE TABLE IF NOT EXISTS {t} (key TEXT PRIMARY KEY, job TEXT NOT NULL, mode TEXT NOT NULL,"
            " run_id TEXT NOT NULL, created_at {real} NOT NULL, generation INTEGER NOT NULL DEFAULT 0)",
        ),
        {"t": "rerun_keys"},
    ),
)
"""The PostgreSQL migrations of the ``rerun_keys`` component."""


def normalise_reason(reason: str) -> str:
    """Case-folded, whitespace-collapsed reason: trivially different spellings are the same reason."""
    return " ".join(reason.split()).casefold()


def rerun_key(job: str, mode: str, reason: str) -> str:
    """The idempotency key of one rerun request (hex sha256 of job, mode and the normalised reason)."""
    payload = json.dumps([job, mode, normalise_reason(reason)], separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def launch_key(key: str, generation: int) -> str:
    """The key handed to the orchestrator: ``key`` itself first, then one per expiry (hex sha256)."""
    if generation == 0:
        return key
    return hashlib.sha256(f"{key}:{generation}".encode()).hexdigest()


def iso(epoch: float) -> str:
    """``epoch`` seconds as an ISO 8601 UTC time."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class LaunchRecord:
    """A launched rerun: the job, mode, the run id the orchestrator answered with, when, which generation."""

    key: str
    job: str
    mode: str
    run_id: str
    created_at: float
    generation: int = 0

    @property
    def launch_key(self) -> str:
        return launch_key(self.key, self.generation)

    def expires_at(self, window_seconds: float) -> float:
        """When this record stops deduplicating (epoch seconds)."""
        return self.created_at + window_seconds

    def live(self, now: float, window_seconds: float) -> bool:
        """Whether the record still deduplicates at ``now``."""
        return self.created_at - CLOCK_SKEW_SECONDS <= now < self.expires_at(window_seconds)


def migrate(conn: sqlite3.Connection, now: float) -> None:
    """Bring the store's schema to ``SCHEMA_VERSION`` in one transaction (see the module docstring).

    Raises:
        ConfigError: the file was written by a newer gateway.
    """
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise ConfigError(f"the rerun idempotency store has schema {version}, newer than this gateway's")
    if version == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_CREATE)
        columns = {str(row[1]) for row in conn.execute("PRAGMA table_info(rerun_keys)")}
        if "generation" not in columns:
            conn.execute("ALTER TABLE rerun_keys ADD COLUMN generation INTEGER NOT NULL DEFAULT 0")
        conn.execute(
            "UPDATE rerun_keys SET created_at = 0 WHERE typeof(created_at) NOT IN ('real', 'integer')"
            " OR created_at <= 0 OR created_at > ?",
            (now + CLOCK_SKEW_SECONDS,),
        )
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


class SQLIdempotencyStore:
    """The key → run store over either database (thread-safe; one connection, serialised by a lock).

    Args:
        db: where the ``rerun_keys`` table lives.
        clock: epoch seconds now, for records made without an explicit ``now``.
    """

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock
        self._q = db.prepare(_QUERIES, {"t": "rerun_keys"})

    def get(self, key: str) -> LaunchRecord | None:
        """The record for ``key`` (live or expired), or None if that key never launched."""
        rows = self._db.read(self._q["get"], (key,))
        if not rows:
            return None
        row = rows[0]
        return LaunchRecord(str(row[0]), str(row[1]), str(row[2]), str(row[3]), float(row[4]), int(row[5]))

    def record(
        self, key: str, job: str, mode: str, run_id: str, *, now: float | None = None, generation: int = 0
    ) -> LaunchRecord:
        """Remember that ``key`` launched ``run_id`` at ``now`` (default: the clock) in ``generation``.

        A record of the same or a later generation already present is kept (its first run wins); an
        older generation's (expired) record is replaced. Returns the record that stands.
        """
        params = (key, job, mode, run_id, self._clock() if now is None else now, generation)
        with self._db.tx() as cur:
            cur.execute(self._q["record"], params)
            rows = cur.execute(self._q["get"], (key,)).fetchall()
        row = rows[0]
        return LaunchRecord(str(row[0]), str(row[1]), str(row[2]), str(row[3]), float(row[4]), int(row[5]))

    def close(self) -> None:
        """Close the connection."""
        self._db.close()


class IdempotencyStore(SQLIdempotencyStore):
    """The key → run store in a SQLite file (the embedded default).

    Args:
        path: the database file (its parent is created).
        clock: epoch seconds now (tests inject one), for records made without an explicit ``now``
            and to check timestamps when migrating.

    Raises:
        ConfigError: the file was written by a newer gateway.
        StoreError: it cannot be opened.
    """

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        db = SQLiteDatabase(path, what="rerun idempotency")
        try:
            migrate(db.connection, clock())
        except BaseException:
            db.close()
            raise
        super().__init__(db, clock)


class PostgresIdempotencyStore(SQLIdempotencyStore):
    """The key → run store in a PostgreSQL schema, shared by replicas; migrated on open.

    Args:
        dsn: a libpq connection string (never shown in messages).
        schema: the schema holding ``rerun_keys``.
        clock: epoch seconds now.

    Raises:
        StoreError: the database cannot be reached or set up.
    """

    def __init__(self, dsn: str, schema: str = "mcp_gateway", clock: Callable[[], float] = time.time) -> None:
        db = PostgresDatabase(dsn, schema, what="rerun idempotency")
        db.setup("rerun_keys", MIGRATIONS, create=True)
        super().__init__(db, clock)
