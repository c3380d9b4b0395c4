"""The embedded pin store: one SQLite file (``pins.db`` in the data dir), WAL, fsynced on commit.

A running gateway writes pins and presented definitions; the admin CLI reads them and approves
changes. Every write bumps one generation counter in the same transaction, so the gateway can tell
with a single-row read whether an approval happened in another process.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from mcp_gateway.errors import PinError
from mcp_gateway.pins.model import Pin
from mcp_gateway.types import Clock, system_clock

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS tool_pins ("
    " upstream TEXT NOT NULL, tool TEXT NOT NULL,"
    " hash TEXT NOT NULL, definition TEXT NOT NULL,"
    " presented_hash TEXT NOT NULL DEFAULT '', presented_definition TEXT NOT NULL DEFAULT '',"
    " pinned_at REAL NOT NULL, changed_at REAL,"
    " PRIMARY KEY (upstream, tool))",
    "CREATE TABLE IF NOT EXISTS pin_generation"
    " (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO pin_generation VALUES (1, 0)",
)
_COLUMNS = "upstream, tool, hash, definition, presented_hash, presented_definition, pinned_at, changed_at"
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

    def get(self, upstream: str, tool: str) -> Pin | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM tool_pins WHERE upstream = ? AND tool = ?",  # noqa: S608 (constant columns)
                (upstream, tool),
            ).fetchone()
        return Pin(*row) if row else None

    def all(self) -> list[Pin]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM tool_pins ORDER BY upstream, tool"  # noqa: S608 (constant columns)
            ).fetchall()
        return [Pin(*row) for row in rows]

    def has_pins(self, upstream: str) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM tool_pins WHERE upstream = ? AND hash != '' LIMIT 1", (upstream,)
            ).fetchone()
        return row is not None

    def pin(self, upstream: str, tool: str, hash: str, definition: str) -> None:
        """Approve ``hash`` for a tool that has no approved definition yet (first sight)."""
        self._write(
            "INSERT INTO tool_pins (upstream, tool, hash, definition, pinned_at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (upstream, tool) DO UPDATE SET hash = excluded.hash,"
            " definition = excluded.definition, presented_hash = '', presented_definition = '',"
            " pinned_at = excluded.pinned_at, changed_at = NULL",
            (upstream, tool, hash, definition, self._clock()),
        )

    def present(self, upstream: str, tool: str, hash: str, definition: str) -> None:
        """Record a presented definition that is not the approved one (a new row has no approved one)."""
        now = self._clock()
        self._write(
            "INSERT INTO tool_pins VALUES (?, ?, '', '', ?, ?, ?, ?)"
            " ON CONFLICT (upstream, tool) DO UPDATE SET presented_hash = excluded.presented_hash,"
            " presented_definition = excluded.presented_definition, changed_at = excluded.changed_at",
            (upstream, tool, hash, definition, now, now),
        )

    def clear_presented(self, upstream: str, tool: str) -> None:
        self._write(
            "UPDATE tool_pins SET presented_hash = '', presented_definition = '', changed_at = NULL"
            " WHERE upstream = ? AND tool = ? AND hash != ''",
            (upstream, tool),
        )

    def approve(self, upstream: str, tool: str, *, expected_hash: str | None = None) -> Pin:
        """Make the definition the upstream presents the approved one.

        Args:
            upstream: the upstream's name.
            tool: the tool's name at the upstream.
            expected_hash: the presented hash (or a prefix of at least 8 characters) the admin
                reviewed; the approval fails if the upstream has presented something else since.

        Raises:
            PinError: no such tool, nothing to approve, or the presented definition is not the one expected.
        """
        name = f"{upstream}.{tool}"
        if expected_hash is not None and len(expected_hash) < _MIN_PREFIX:
            raise PinError(f"--expect-hash needs at least {_MIN_PREFIX} characters")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    f"SELECT {_COLUMNS} FROM tool_pins WHERE upstream = ? AND tool = ?",  # noqa: S608 (constant columns)
                    (upstream, tool),
                ).fetchone()
                current = Pin(*row) if row else None
                if current is None:
                    raise PinError(f"no pinned tool `{name}`")
                if not current.presented_hash or current.presented_hash == current.hash:
                    raise PinError(f"tool `{name}` has no changed definition to approve")
                if expected_hash is not None and not current.presented_hash.startswith(expected_hash):
                    raise PinError(
                        f"tool `{name}` now presents definition {current.presented_hash[:12]},"
                        f" not `{expected_hash}`; review it again"
                    )
                now = self._clock()
                self._db.execute(
                    "UPDATE tool_pins SET hash = presented_hash, definition = presented_definition,"
                    " presented_hash = '', presented_definition = '', pinned_at = ?, changed_at = NULL"
                    " WHERE upstream = ? AND tool = ?",
                    (now, upstream, tool),
                )
                self._db.execute("UPDATE pin_generation SET value = value + 1 WHERE id = 1")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return Pin(upstream, tool, current.presented_hash, current.presented_definition, pinned_at=now)

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
