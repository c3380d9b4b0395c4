"""Which sealed ``requestState`` tokens were used already (``request_state.py``): each is good once.

A token's nonce is recorded when it is first opened, with the token's expiry; recording it again
fails, so the same token is refused on its second use, by this replica or any other sharing the
store. A row is kept until its token has expired (plus ``CLOCK_SKEW_SECONDS``, so a replica whose
clock is a little behind cannot accept it again) and is deleted by the next use after that.

Stores: ``MemorySpentStates`` (one process: tests and a gateway built without one), SQLite in the data
dir (``request-states.db``: replicas on one host, and restarts) or the ``request_states`` table of the
PostgreSQL schema of the top-level ``store:`` setting (replicas anywhere; migration 1 of the
``request_states`` component).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import anyio

from mcp_gateway.storage.database import Database, PostgresDatabase, open_sqlite
from mcp_gateway.storage.migrate import Migration

__all__ = [
    "MIGRATIONS",
    "STORE_FILE",
    "MemorySpentStates",
    "PostgresSpentStates",
    "SQLSpentStates",
    "SQLiteSpentStates",
    "SpentStates",
    "open_spent_states",
]

STORE_FILE = "request-states.db"
"""The SQLite file in the data dir (without a shared ``store:``)."""
CLOCK_SKEW_SECONDS = 60.0
"""How long past its expiry a used nonce is still remembered."""

_CREATE = (
    "CREATE TABLE IF NOT EXISTS {t} (nonce TEXT PRIMARY KEY, expires_at {real} NOT NULL)",
    "CREATE INDEX IF NOT EXISTS {i} ON {t} (expires_at)",
)
_QUERIES = {
    "purge": "DELETE FROM {t} WHERE expires_at < %s",
    # Both dialects: a nonce already present inserts nothing, and rowcount says so.
    "spend": "INSERT INTO {t} (nonce, expires_at) VALUES (%s, %s) ON CONFLICT (nonce) DO NOTHING",
}
_TABLES = {"t": "request_states"}
_NAMES = {"i": "request_states_expires_at"}
MIGRATIONS = (Migration(1, "create request_states", _CREATE, _TABLES, _NAMES),)
"""The PostgreSQL migrations of the ``request_states`` component."""


class SharedStoreSetting(Protocol):
    """The top-level ``store:`` setting (``config.SharedStore``): a PostgreSQL URL and schema."""

    @property
    def url(self) -> str: ...

    @property
    def schema_name(self) -> str: ...


def open_spent_states(data_dir: Path, store: SharedStoreSetting | None) -> SQLSpentStates:
    """The store the running gateway uses: PostgreSQL when ``store:`` is set, else SQLite in ``data_dir``.

    Raises:
        StoreError: it cannot be opened or set up.
    """
    if store is not None:
        return PostgresSpentStates(store.url, store.schema_name)
    return SQLiteSpentStates(data_dir / STORE_FILE)


class SpentStates(Protocol):
    """Records each token's first use."""

    async def spend(self, nonce: str, expires: float) -> bool:
        """Record ``nonce`` (of a token valid until ``expires``); False if it was recorded before.

        Raises:
            StoreError: the store failed (the token is then refused: never used twice).
        """
        ...

    def close(self) -> None: ...


@dataclass
class MemorySpentStates:
    """Used nonces in this process only (a restart, or another replica, does not know them)."""

    clock: Callable[[], float] = time.time
    _spent: dict[str, float] = field(default_factory=dict, repr=False)

    async def spend(self, nonce: str, expires: float) -> bool:
        now = self.clock()
        self._spent = {n: e for n, e in self._spent.items() if e + CLOCK_SKEW_SECONDS >= now}
        if nonce in self._spent:
            return False
        self._spent[nonce] = expires
        return True

    def close(self) -> None:
        self._spent.clear()


class SQLSpentStates:
    """Used nonces in a ``request_states`` table (SQLite or PostgreSQL), one statement per use in a
    worker thread (the event loop never waits on the database).

    Args:
        db: where the table lives.
        clock: epoch seconds now (tests pass a fake one).
    """

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock
        self._q = db.prepare(_QUERIES, _TABLES)

    def _spend(self, nonce: str, expires: float) -> bool:
        with self._db.tx() as cur:
            cur.execute(self._q["purge"], (self._clock() - CLOCK_SKEW_SECONDS,))
            cur.execute(self._q["spend"], (nonce, expires))
            return cur.rowcount == 1

    async def spend(self, nonce: str, expires: float) -> bool:
        return await anyio.to_thread.run_sync(self._spend, nonce, expires)

    def close(self) -> None:
        """Close the connection; idempotent."""
        self._db.close()


class SQLiteSpentStates(SQLSpentStates):
    """Used nonces in a SQLite file, created (0600) with its folder if missing.

    Raises:
        StoreError: it cannot be opened.
    """

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        db = open_sqlite(path, what="request state", statements=_CREATE, tables=_TABLES, names=_NAMES)
        super().__init__(db, clock)


class PostgresSpentStates(SQLSpentStates):
    """Used nonces in a PostgreSQL schema, shared by replicas; migrated on open.

    Raises:
        StoreError: the database cannot be reached or set up.
    """

    def __init__(self, dsn: str, schema: str = "mcp_gateway", clock: Callable[[], float] = time.time) -> None:
        db = PostgresDatabase(dsn, schema, what="request state")
        db.setup("request_states", MIGRATIONS, create=True)
        super().__init__(db, clock)
