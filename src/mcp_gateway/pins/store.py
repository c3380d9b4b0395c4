"""The embedded pin store: one SQLite file (``pins.db`` in the data dir), WAL, fsynced on commit.

A running gateway writes pins and presented definitions; the admin CLI reads them and approves
changes. Every write bumps one generation counter in the same transaction, so the gateway can tell
with a single-row read whether an approval happened in another process.

Schema 2 (``PRAGMA user_version``) keys pins by (kind, upstream, name) and records each pin's format;
a schema-1 file (``tool_pins``) is migrated on open, in one transaction: its rows become format-1
tool pins, and each upstream that had one counts as listed (no re-trust on first use).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from mcp_gateway.errors import PinError
from mcp_gateway.pins.model import PIN_VERSION, Kind, Pin, pin_name
from mcp_gateway.types import Clock, system_clock

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS pins ("
    " kind TEXT NOT NULL, upstream TEXT NOT NULL, name TEXT NOT NULL,"
    " hash TEXT NOT NULL, definition TEXT NOT NULL,"
    " presented_hash TEXT NOT NULL DEFAULT '', presented_definition TEXT NOT NULL DEFAULT '',"
    " pinned_at REAL NOT NULL, changed_at REAL, version INTEGER NOT NULL,"
    " PRIMARY KEY (kind, upstream, name))",
    "CREATE TABLE IF NOT EXISTS pin_listed"
    " (kind TEXT NOT NULL, upstream TEXT NOT NULL, PRIMARY KEY (kind, upstream))",
    "CREATE TABLE IF NOT EXISTS pin_generation"
    " (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO pin_generation VALUES (1, 0)",
)
_MIGRATE_1 = (
    "INSERT OR IGNORE INTO pins SELECT 'tool', upstream, tool, hash, definition, presented_hash,"
    " presented_definition, pinned_at, changed_at, 1 FROM tool_pins",
    "INSERT OR IGNORE INTO pin_listed SELECT DISTINCT 'tool', upstream FROM tool_pins WHERE hash != ''",
    "DROP TABLE tool_pins",
)
_SCHEMA_VERSION = 2
_COLUMNS = (
    "upstream, name, hash, definition, presented_hash, presented_definition, pinned_at, changed_at,"
    " kind, version"
)
# A hash prefix shorter than this would let a careless `--expect-hash` match almost anything.
_MIN_PREFIX = 8


class SQLitePinStore:
    """Pins in SQLite, safe to share between the CLI and a running gateway.

    Args:
        path: the database file; its directory is created if missing.
        clock: the time source for ``pinned_at``/``changed_at``.
    """

    def __init__(self, path: Path, *, clock: Clock = system_clock) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._lock = threading.Lock()
        self._closed = False
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=2000")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA:
                    self._db.execute(statement)
                legacy = self._db.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tool_pins'"
                ).fetchone()
                if legacy is not None:
                    for statement in _MIGRATE_1:
                        self._db.execute(statement)
                    self._db.execute("UPDATE pin_generation SET value = value + 1 WHERE id = 1")
                self._db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _write(self, sql: str, params: tuple[object, ...]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(sql, params)
                self._db.execute("UPDATE pin_generation SET value = value + 1 WHERE id = 1")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _row(self, kind: Kind, upstream: str, name: str) -> Pin | None:
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM pins WHERE kind = ? AND upstream = ? AND name = ?",  # noqa: S608 (constant columns)
            (kind, upstream, name),
        ).fetchone()
        return Pin(*row) if row else None

    def get(self, upstream: str, tool: str, kind: Kind = "tool") -> Pin | None:
        with self._lock:
            return self._row(kind, upstream, tool)

    def all(self) -> list[Pin]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM pins ORDER BY upstream, kind, name"  # noqa: S608 (constant columns)
            ).fetchall()
        return [Pin(*row) for row in rows]

    def was_listed(self, upstream: str, kind: Kind) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM pin_listed WHERE kind = ? AND upstream = ?", (kind, upstream)
            ).fetchone()
        return row is not None

    def mark_listed(self, upstream: str, kind: Kind) -> None:
        self._write("INSERT OR IGNORE INTO pin_listed VALUES (?, ?)", (kind, upstream))

    def pin(self, upstream: str, tool: str, hash: str, definition: str, kind: Kind = "tool") -> None:
        """Approve ``hash`` for an item that has no approved definition yet (first sight)."""
        self._write(
            "INSERT INTO pins (kind, upstream, name, hash, definition, pinned_at, version)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (kind, upstream, name) DO UPDATE SET hash = excluded.hash,"
            " definition = excluded.definition, presented_hash = '', presented_definition = '',"
            " pinned_at = excluded.pinned_at, changed_at = NULL, version = excluded.version",
            (kind, upstream, tool, hash, definition, self._clock(), PIN_VERSION),
        )

    def upgrade(
        self, upstream: str, tool: str, kind: Kind, old_hash: str, hash: str, definition: str
    ) -> None:
        """Re-pin an older-format pin in the current format; only while it still holds ``old_hash``
        (an approval in between wins)."""
        self._write(
            "UPDATE pins SET hash = ?, definition = ?, version = ?, presented_hash = '',"
            " presented_definition = '', changed_at = NULL"
            " WHERE kind = ? AND upstream = ? AND name = ? AND hash = ?",
            (hash, definition, PIN_VERSION, kind, upstream, tool, old_hash),
        )

    def present(self, upstream: str, tool: str, hash: str, definition: str, kind: Kind = "tool") -> None:
        """Record a presented definition that is not the approved one (a new row has no approved one)."""
        now = self._clock()
        self._write(
            "INSERT INTO pins VALUES (?, ?, ?, '', '', ?, ?, ?, ?, ?)"
            " ON CONFLICT (kind, upstream, name) DO UPDATE SET presented_hash = excluded.presented_hash,"
            " presented_definition = excluded.presented_definition, changed_at = excluded.changed_at",
            (kind, upstream, tool, hash, definition, now, now, PIN_VERSION),
        )

    def clear_presented(self, upstream: str, tool: str, kind: Kind = "tool") -> None:
        self._write(
            "UPDATE pins SET presented_hash = '', presented_definition = '', changed_at = NULL"
            " WHERE kind = ? AND upstream = ? AND name = ? AND hash != ''",
            (kind, upstream, tool),
        )

    def approve(
        self, upstream: str, tool: str, *, kind: Kind = "tool", expected_hash: str | None = None
    ) -> Pin:
        """Make the definition the upstream presents the approved one.

        Args:
            upstream: the upstream's name.
            tool: the item's name at the upstream.
            kind: what the item is.
            expected_hash: the presented hash (or a prefix of at least 8 characters) the admin
                reviewed; the approval fails if the upstream has presented something else since.

        Raises:
            PinError: no such item, nothing to approve, or the presented definition is not the one expected.
        """
        name = pin_name(kind, upstream, tool)
        if expected_hash is not None and len(expected_hash) < _MIN_PREFIX:
            raise PinError(f"--expect-hash needs at least {_MIN_PREFIX} characters")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                current = self._row(kind, upstream, tool)
                if current is None:
                    raise PinError(f"no pinned {kind} `{name}`")
                if not current.presented_hash or current.presented_hash == current.hash:
                    raise PinError(f"{kind} `{name}` has no changed definition to approve")
                if expected_hash is not None and not current.presented_hash.startswith(expected_hash):
                    raise PinError(
                        f"{kind} `{name}` now presents definition {current.presented_hash[:12]},"
                        f" not `{expected_hash}`; review it again"
                    )
                now = self._clock()
                self._db.execute(
                    "UPDATE pins SET hash = presented_hash, definition = presented_definition,"
                    " presented_hash = '', presented_definition = '', pinned_at = ?, changed_at = NULL,"
                    " version = ? WHERE kind = ? AND upstream = ? AND name = ?",
                    (now, PIN_VERSION, kind, upstream, tool),
                )
                self._db.execute("UPDATE pin_generation SET value = value + 1 WHERE id = 1")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return Pin(
            upstream, tool, current.presented_hash, current.presented_definition, pinned_at=now, kind=kind
        )

    def generation(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM pin_generation WHERE id = 1").fetchone()
        return int(row[0])

    def close(self) -> None:
        """Close the connection; idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()
