"""Where pins live: one SQLite file (``pins.db`` in the data dir, WAL, fsynced on commit) by default,
or three tables in a PostgreSQL schema that replicas share (``pinning.backend: postgres`` or the
top-level ``store:``). Both run the same statements through ``SQLPinStore``.

A running gateway writes pins and presented definitions; the admin CLI reads them and approves
changes. Every write bumps one generation counter in the same transaction, so the gateway can tell
with a single-row read whether an approval happened in another process (or on another replica).

SQLite schema 2 (``PRAGMA user_version``) keys pins by (kind, upstream, name) and records each pin's
format; a schema-1 file (``tool_pins``) is migrated on open, in one transaction: its rows become
format-1 tool pins, and each upstream that had one counts as listed (no re-trust on first use).
PostgreSQL starts at that schema, as migration 1 of the ``pins`` component (``storage/migrate.py``).
"""

from __future__ import annotations

from pathlib import Path

from mcp_gateway.errors import PinError
from mcp_gateway.pins.model import PIN_VERSION, Kind, Pin, pin_name
from mcp_gateway.storage.database import Database, PostgresDatabase, SQLiteDatabase
from mcp_gateway.storage.migrate import Migration
from mcp_gateway.types import Clock, system_clock

_COLUMNS = (
    "upstream, name, hash, definition, presented_hash, presented_definition, pinned_at, changed_at,"
    " kind, version"
)
_TABLES = {"p": "pins", "l": "pin_listed", "g": "pin_generation"}
# One text per statement for both dialects: {p}/{l}/{g} are the tables, %s the parameters.
_QUERIES = {
    "create_pins": "CREATE TABLE IF NOT EXISTS {p} ("
    " kind TEXT NOT NULL, upstream TEXT NOT NULL, name TEXT NOT NULL,"
    " hash TEXT NOT NULL, definition TEXT NOT NULL,"
    " presented_hash TEXT NOT NULL DEFAULT '', presented_definition TEXT NOT NULL DEFAULT '',"
    " pinned_at {real} NOT NULL, changed_at {real}, version INTEGER NOT NULL,"
    " PRIMARY KEY (kind, upstream, name))",
    "create_listed": "CREATE TABLE IF NOT EXISTS {l}"
    " (kind TEXT NOT NULL, upstream TEXT NOT NULL, PRIMARY KEY (kind, upstream))",
    "create_generation": "CREATE TABLE IF NOT EXISTS {g}"
    " (id INTEGER PRIMARY KEY CHECK (id = 1), value BIGINT NOT NULL)",
    "init_generation": "INSERT INTO {g} (id, value) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
    "bump": "UPDATE {g} SET value = value + 1 WHERE id = 1",
    "generation": "SELECT value FROM {g} WHERE id = 1",
    "get": f"SELECT {_COLUMNS} FROM {{p}} WHERE kind = %s AND upstream = %s AND name = %s",  # noqa: S608 - constants
    "all": f"SELECT {_COLUMNS} FROM {{p}} ORDER BY upstream, kind, name",  # noqa: S608 - constants
    "was_listed": "SELECT 1 FROM {l} WHERE kind = %s AND upstream = %s",
    "mark_listed": "INSERT INTO {l} (kind, upstream) VALUES (%s, %s) ON CONFLICT (kind, upstream) DO NOTHING",
    "pin": "INSERT INTO {p} (kind, upstream, name, hash, definition, pinned_at, version)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (kind, upstream, name) DO UPDATE SET hash = excluded.hash,"
    " definition = excluded.definition, presented_hash = '', presented_definition = '',"
    " pinned_at = excluded.pinned_at, changed_at = NULL, version = excluded.version",
    "upgrade": "UPDATE {p} SET hash = %s, definition = %s, version = %s, presented_hash = '',"
    " presented_definition = '', changed_at = NULL"
    " WHERE kind = %s AND upstream = %s AND name = %s AND hash = %s",
    "present": "INSERT INTO {p} (kind, upstream, name, hash, definition, presented_hash,"
    " presented_definition, pinned_at, changed_at, version) VALUES (%s, %s, %s, '', '', %s, %s, %s, %s, %s)"
    " ON CONFLICT (kind, upstream, name) DO UPDATE SET presented_hash = excluded.presented_hash,"
    " presented_definition = excluded.presented_definition, changed_at = excluded.changed_at",
    "clear_presented": "UPDATE {p} SET presented_hash = '', presented_definition = '', changed_at = NULL"
    " WHERE kind = %s AND upstream = %s AND name = %s AND hash != ''",
    # Compare-and-set on the presented hash read in the same transaction (replicas may present anew).
    "approve": "UPDATE {p} SET hash = presented_hash, definition = presented_definition,"
    " presented_hash = '', presented_definition = '', pinned_at = %s, changed_at = NULL,"
    " version = %s WHERE kind = %s AND upstream = %s AND name = %s AND presented_hash = %s",
}
_SCHEMA_STEPS = ("create_pins", "create_listed", "create_generation", "init_generation")
MIGRATIONS = (
    Migration(
        1, "create pins, pin_listed, pin_generation", tuple(_QUERIES[k] for k in _SCHEMA_STEPS), _TABLES
    ),
)
"""The PostgreSQL migrations of the ``pins`` component."""

_LEGACY_SQLITE = (
    "INSERT OR IGNORE INTO pins SELECT 'tool', upstream, tool, hash, definition, presented_hash,"
    " presented_definition, pinned_at, changed_at, 1 FROM tool_pins",
    "INSERT OR IGNORE INTO pin_listed SELECT DISTINCT 'tool', upstream FROM tool_pins WHERE hash != ''",
    "DROP TABLE tool_pins",
)
_SQLITE_SCHEMA_VERSION = 2
# A hash prefix shorter than this would let a careless `--expect-hash` match almost anything.
_MIN_PREFIX = 8


class SQLPinStore:
    """The pin store's logic over either database.

    Args:
        db: where the tables live.
        clock: the time source for ``pinned_at``/``changed_at``.

    Every method raises ``StoreError`` when the database cannot be read or written.
    """

    def __init__(self, db: Database, *, clock: Clock = system_clock) -> None:
        self._db = db
        self._clock = clock
        self._q = db.prepare(_QUERIES, _TABLES)

    def _write(self, name: str, params: tuple[object, ...]) -> None:
        with self._db.tx() as cur:
            cur.execute(self._q[name], params)
            cur.execute(self._q["bump"])

    def get(self, upstream: str, tool: str, kind: Kind = "tool") -> Pin | None:
        rows = self._db.read(self._q["get"], (kind, upstream, tool))
        return Pin(*rows[0]) if rows else None

    def all(self) -> list[Pin]:
        return [Pin(*row) for row in self._db.read(self._q["all"])]

    def was_listed(self, upstream: str, kind: Kind) -> bool:
        return bool(self._db.read(self._q["was_listed"], (kind, upstream)))

    def mark_listed(self, upstream: str, kind: Kind) -> None:
        self._write("mark_listed", (kind, upstream))

    def pin(self, upstream: str, tool: str, hash: str, definition: str, kind: Kind = "tool") -> None:
        """Approve ``hash`` for an item that has no approved definition yet (first sight)."""
        self._write("pin", (kind, upstream, tool, hash, definition, self._clock(), PIN_VERSION))

    def upgrade(
        self, upstream: str, tool: str, kind: Kind, old_hash: str, hash: str, definition: str
    ) -> None:
        """Re-pin an older-format pin in the current format; only while it still holds ``old_hash``
        (an approval in between wins)."""
        self._write("upgrade", (hash, definition, PIN_VERSION, kind, upstream, tool, old_hash))

    def present(self, upstream: str, tool: str, hash: str, definition: str, kind: Kind = "tool") -> None:
        """Record a presented definition that is not the approved one (a new row has no approved one)."""
        now = self._clock()
        self._write("present", (kind, upstream, tool, hash, definition, now, now, PIN_VERSION))

    def clear_presented(self, upstream: str, tool: str, kind: Kind = "tool") -> None:
        self._write("clear_presented", (kind, upstream, tool))

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
            PinError: no such item, nothing to approve, or the presented definition is not the one
                expected (or changed while this approval ran).
        """
        name = pin_name(kind, upstream, tool)
        if expected_hash is not None and len(expected_hash) < _MIN_PREFIX:
            raise PinError(f"--expect-hash needs at least {_MIN_PREFIX} characters")
        with self._db.tx() as cur:
            rows = cur.execute(self._q["get"], (kind, upstream, tool)).fetchall()
            current = Pin(*rows[0]) if rows else None
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
            params = (now, PIN_VERSION, kind, upstream, tool, current.presented_hash)
            cur.execute(self._q["approve"], params)
            if cur.rowcount != 1:
                raise PinError(f"{kind} `{name}` presented another definition meanwhile; review it again")
            cur.execute(self._q["bump"])
        return Pin(
            upstream, tool, current.presented_hash, current.presented_definition, pinned_at=now, kind=kind
        )

    def generation(self) -> int:
        return int(self._db.read(self._q["generation"])[0][0])

    def close(self) -> None:
        """Close the connection; idempotent."""
        self._db.close()


class SQLitePinStore(SQLPinStore):
    """Pins in SQLite, safe to share between the CLI and a running gateway.

    Args:
        path: the database file; its directory is created if missing.
        clock: the time source for ``pinned_at``/``changed_at``.
    """

    def __init__(self, path: Path, *, clock: Clock = system_clock) -> None:
        super().__init__(SQLiteDatabase(path, what="pin"), clock=clock)
        with self._db.tx() as cur:
            for step in _SCHEMA_STEPS:
                cur.execute(self._q[step])
            legacy = cur.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tool_pins'"
            ).fetchall()
            if legacy:
                for statement in _LEGACY_SQLITE:
                    cur.execute(statement)
                cur.execute(self._q["bump"])
            cur.execute(f"PRAGMA user_version = {_SQLITE_SCHEMA_VERSION}")


class PostgresPinStore(SQLPinStore):
    """Pins in a PostgreSQL schema, shared by replicas and the CLI; migrated on open.

    Args:
        dsn: a libpq connection string (never shown in messages).
        schema: the schema holding the tables.
        clock: the time source for ``pinned_at``/``changed_at``.
        create: migrate the schema; False (read-only commands) refuses one never set up instead.

    Raises:
        StoreError: the database cannot be reached or set up.
    """

    def __init__(
        self, dsn: str, schema: str = "mcp_gateway", *, clock: Clock = system_clock, create: bool = True
    ) -> None:
        db = PostgresDatabase(dsn, schema, what="pin")
        db.setup("pins", MIGRATIONS, create=create)
        super().__init__(db, clock=clock)
