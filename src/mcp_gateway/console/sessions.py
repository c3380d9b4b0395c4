"""Console sessions: server-side rows keyed by a hash of the random id in the cookie, each with its own
CSRF token; kept in a database so they survive a restart and hold on every replica.

The cookie holds only the session id (256 random bits); the person, role, CSRF token and times stay
in the ``console_sessions`` table, keyed by the id's SHA-256 (a copy of the table yields no usable
cookie). A session ends at its expiry (no sliding renewal) or at logout, which deletes its row on
every replica at once: a copy of the cookie replayed anywhere is refused. Expired rows are deleted
by the next login and by ``prune`` (the console runs it every few minutes).

Stores: SQLite in the data dir (``console-sessions.db``: restarts, and replicas on one host) or the
``console_sessions`` table of the PostgreSQL schema of the top-level ``store:`` setting (replicas
anywhere; migration 1 of the ``console_sessions`` component). One statement text per operation for
both (``storage/``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mcp_gateway.identity.console import ROLE_RANK, ConsoleRole
from mcp_gateway.storage.database import Database, PostgresDatabase, open_sqlite
from mcp_gateway.storage.migrate import Migration
from mcp_gateway.types import Clock, system_clock

__all__ = ["MIGRATIONS", "STORE_FILE", "Session", "SessionStore", "open_session_store"]

STORE_FILE = "console-sessions.db"
"""The SQLite file in the data dir (without a shared ``store:``)."""
MAX_ID_CHARS = 128
_COLUMNS = "id_hash, person, role, via, token_id, csrf, created_at, expires_at, flash"
_CREATE = (
    "CREATE TABLE IF NOT EXISTS {t} (id_hash TEXT PRIMARY KEY, person TEXT NOT NULL,"
    " role TEXT NOT NULL, via TEXT NOT NULL, token_id TEXT NOT NULL, csrf TEXT NOT NULL,"
    " created_at {real} NOT NULL, expires_at {real} NOT NULL, flash TEXT)",
    "CREATE INDEX IF NOT EXISTS {by_expiry} ON {t} (expires_at)",
    "CREATE INDEX IF NOT EXISTS {by_created} ON {t} (created_at)",
)
_TEMPLATES = {
    "purge": "DELETE FROM {t} WHERE expires_at <= %s",
    "insert": "INSERT INTO {t} ({cols}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, NULL)",
    # Past the bound, the oldest go (ties on created_at all stay: the bound is approximate).
    "trim": "DELETE FROM {t} WHERE created_at <"
    " (SELECT created_at FROM {t} ORDER BY created_at DESC LIMIT 1 OFFSET %s)",
    "get": "SELECT {cols} FROM {t} WHERE id_hash = %s AND expires_at > %s",
    "end": "DELETE FROM {t} WHERE id_hash = %s",
    "set_flash": "UPDATE {t} SET flash = %s WHERE id_hash = %s",
    "take_flash": "UPDATE {t} SET flash = NULL WHERE id_hash = %s",
    "count": "SELECT COUNT(*) FROM {t}",
}
# The column list is a constant; only {t} (the table) is filled per database by ``Database.prepare``.
_QUERIES = {key: text.replace("{cols}", _COLUMNS) for key, text in _TEMPLATES.items()}
_TABLES = {"t": "console_sessions"}
_NAMES = {"by_expiry": "console_sessions_expires_at", "by_created": "console_sessions_created_at"}
MIGRATIONS = (Migration(1, "create console_sessions", _CREATE, _TABLES, _NAMES),)
"""The PostgreSQL migrations of the ``console_sessions`` component."""


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in person.

    Attributes:
        person: the admin token's holder name, or the OAuth subject.
        role: from ``console.roles``.
        via: ``admin_token`` or ``oauth``.
        token_id: the public id of the token used to log in (decisions are recorded with it).
        csrf: the token every state-changing request must carry.
        created_at: epoch seconds.
        expires_at: epoch seconds.
        key: the SHA-256 of the session id (the row's key; not the id).
        flash: a one-line outcome (ok, message) the next page shows once, or None.
    """

    person: str
    role: ConsoleRole
    via: str
    token_id: str
    csrf: str
    created_at: float
    expires_at: float
    key: str
    flash: tuple[bool, str] | None = None

    def may(self, role: ConsoleRole) -> bool:
        """Whether this session's role is ``role`` or above."""
        return ROLE_RANK[self.role] >= ROLE_RANK[role]

    def csrf_ok(self, presented: str | None) -> bool:
        """Whether ``presented`` is this session's CSRF token (compared in constant time)."""
        return presented is not None and hmac.compare_digest(presented.encode(), self.csrf.encode())


def session_key(session_id: str) -> str:
    """The row key of ``session_id``: its SHA-256, hex."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def _flash(text: Any) -> tuple[bool, str] | None:
    if not isinstance(text, str):
        return None
    try:
        ok, message = json.loads(text)
    except (ValueError, TypeError):
        return None
    return bool(ok), str(message)


def _session(row: Sequence[Any]) -> Session | None:
    role = str(row[2])
    if role not in ROLE_RANK:
        return None  # a row this gateway did not write: no session
    return Session(
        person=str(row[1]),
        role=role,  # type: ignore[arg-type]  # checked against ROLE_RANK just above
        via=str(row[3]),
        token_id=str(row[4]),
        csrf=str(row[5]),
        created_at=float(row[6]),
        expires_at=float(row[7]),
        key=str(row[0]),
        flash=_flash(row[8]),
    )


class SessionStore:
    """Live sessions in a ``console_sessions`` table, bounded (the oldest dropped past ``max_sessions``).

    Methods block (one or two statements): call them from a worker thread on the event loop.

    Args:
        db: where the table lives (already created: use ``open_session_store``).
        lifetime: seconds a session lasts.
        max_sessions: the most kept at once.
        clock: the time source.
    """

    def __init__(
        self, db: Database, lifetime: float, max_sessions: int = 1000, clock: Clock = system_clock
    ) -> None:
        self._db = db
        self._q = db.prepare(_QUERIES, _TABLES)
        self.lifetime = lifetime
        self.max_sessions = max_sessions
        self._clock = clock

    def create(self, person: str, role: ConsoleRole, *, via: str, token_id: str) -> tuple[str, Session]:
        """Start a session; returns its id (for the cookie only) and the session.

        Raises:
            StoreError: the store failed (nobody is logged in then).
        """
        session_id = secrets.token_urlsafe(32)
        now = self._clock()
        session = Session(
            person,
            role,
            via,
            token_id,
            secrets.token_urlsafe(32),
            now,
            now + self.lifetime,
            session_key(session_id),
        )
        row = (session.key, person, role, via, token_id, session.csrf, now, session.expires_at)
        with self._db.tx() as cur:
            cur.execute(self._q["purge"], (now,))
            cur.execute(self._q["insert"], row)
            cur.execute(self._q["trim"], (self.max_sessions - 1,))
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of ``session_id``; None when unknown, ended or expired.

        Raises:
            StoreError: the store failed.
        """
        if not session_id or len(session_id) > MAX_ID_CHARS:
            return None
        rows = self._db.read(self._q["get"], (session_key(session_id), self._clock()))
        return _session(rows[0]) if rows else None

    def end(self, session_id: str | None) -> None:
        """End a session (logout) on every replica; its id is refused from now on."""
        if session_id and len(session_id) <= MAX_ID_CHARS:
            with self._db.tx() as cur:
                cur.execute(self._q["end"], (session_key(session_id),))

    def set_flash(self, session: Session, message: str, ok: bool) -> None:
        """Keep a one-line outcome for the session's next page (whichever replica serves it)."""
        with self._db.tx() as cur:
            cur.execute(self._q["set_flash"], (json.dumps([ok, message[:500]]), session.key))

    def take_flash(self, session: Session) -> None:
        """Forget the session's outcome line (its page is showing it)."""
        with self._db.tx() as cur:
            cur.execute(self._q["take_flash"], (session.key,))

    def prune(self) -> int:
        """Delete expired sessions; returns how many."""
        with self._db.tx() as cur:
            cur.execute(self._q["purge"], (self._clock(),))
            return max(cur.rowcount, 0)

    def count(self) -> int:
        """Sessions in the table (expired ones not yet pruned included)."""
        return int(self._db.read(self._q["count"])[0][0])

    def close(self) -> None:
        """Close the connection; idempotent."""
        self._db.close()


class SharedStoreSetting(Protocol):
    """The top-level ``store:`` setting (``config.SharedStore``): a PostgreSQL URL and schema."""

    @property
    def url(self) -> str: ...

    @property
    def schema_name(self) -> str: ...


def open_session_store(
    data_dir: Path,
    store: SharedStoreSetting | None,
    *,
    lifetime: float,
    max_sessions: int = 1000,
    clock: Clock = system_clock,
) -> SessionStore:
    """The store the console uses: PostgreSQL when ``store:`` is set (migrated), else SQLite in
    ``data_dir``.

    Raises:
        StoreError: it cannot be opened or set up.
    """
    db: Database
    if store is not None:
        pg = PostgresDatabase(store.url, store.schema_name, what="console session")
        pg.setup("console_sessions", MIGRATIONS, create=True)
        db = pg
    else:
        where = data_dir / STORE_FILE
        db = open_sqlite(where, what="console session", statements=_CREATE, tables=_TABLES, names=_NAMES)
    return SessionStore(db, lifetime, max_sessions, clock)
