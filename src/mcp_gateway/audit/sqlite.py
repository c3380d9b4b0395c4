"""The embedded audit store: one SQLite file, WAL mode, fsynced on every commit.

Several processes may append to the same file: ``BEGIN IMMEDIATE`` takes SQLite's write lock before
the last record is read, so chaining and inserting happen as one step and the chain stays valid.
A store that stays locked longer than ``busy_timeout`` fails the append (fail closed) instead of
blocking the gateway forever.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mcp_gateway.audit.busy import try_begin, when_free
from mcp_gateway.audit.record import chain_encoded
from mcp_gateway.audit.rows import (
    CHECKPOINT_COLUMNS,
    COLUMNS,
    checkpoint_from_row,
    from_row,
    hmac_marker_text,
    search_index_script,
    to_row,
    where_clause,
)
from mcp_gateway.audit.seal import SEAL_COLUMNS, AuditSeal, Sealer, seal_from_row, seal_to_row
from mcp_gateway.audit.search import AuditPage, AuditSearch, run_search
from mcp_gateway.errors import AuditError, AuditWriteError
from mcp_gateway.types import AuditCheckpoint, AuditEvent, AuditRecord, Clock, system_clock

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    call_id TEXT NOT NULL,
    agent TEXT NOT NULL,
    tool TEXT NOT NULL,
    decision TEXT NOT NULL,
    status TEXT NOT NULL,
    args TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts);
CREATE INDEX IF NOT EXISTS audit_call_id ON audit (call_id);
CREATE TABLE IF NOT EXISTS checkpoints (
    id INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL,
    ts REAL NOT NULL,
    key_id TEXT NOT NULL,
    signature TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS seals (
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    prev_hash TEXT NOT NULL,
    head_hash TEXT NOT NULL,
    key_id TEXT NOT NULL,
    mac TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS seals_last_seq ON seals (last_seq);
"""
SCHEMA_VERSION = 2
"""``PRAGMA user_version``: 0 the tables above; 2 with the search indexes (``rows.SEARCH_INDEXES``)."""
_SEAL_INSERT = f"INSERT INTO seals ({', '.join(SEAL_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?)"  # noqa: S608 - constant columns


def _why(exc: sqlite3.Error | OSError) -> str:
    # SQLite's messages name the problem ("database is locked"), never a bound value.
    return f"{exc} ({getattr(exc, 'sqlite_errorname', type(exc).__name__)})"


class SQLiteAuditSink:
    """An ``AuditSink`` in a SQLite file.

    Args:
        path: the database file (created if missing; its directory must exist).
        clock: the time source for ``ts``.
        busy_timeout: seconds to wait for another writer before failing an append.
        sealer: seals every batch in its transaction (``seal.py``); None writes no seals (a process
            without the vault's key, whose records then stand unauthenticated).
        read_only: open an existing store for reading only: never create the file or its tables.

    Raises:
        AuditWriteError: the file cannot be opened or set up for writing.
    """

    def __init__(
        self,
        path: str | Path,
        clock: Clock = system_clock,
        *,
        busy_timeout: float = 2.0,
        sealer: Sealer | None = None,
        read_only: bool = False,
    ) -> None:
        self.path = Path(path)
        self.sealer = sealer
        self.read_only = read_only
        if read_only and not self.path.is_file():
            raise AuditError(f"no audit store at `{self.path}`")
        self._clock = clock
        self._busy_timeout = busy_timeout
        # One connection shared by the gateway's worker threads; the lock serialises its use.
        self._lock = threading.Lock()
        self._file = None if str(self.path) == ":memory:" else str(self.path)
        # The newest record as of this connection's last append, and SQLite's ``data_version`` then:
        # while it is unchanged nobody else has committed, so the next append need not read the head.
        self._head: tuple[int, str] | None = None
        self._head_version: int | None = None
        try:
            # No SQLite busy handler: ``busy.when_free`` does all waiting (see there).
            target = f"{self.path.resolve().as_uri()}?mode=ro" if read_only else str(self.path)
            self._conn = sqlite3.connect(
                target, timeout=0, isolation_level=None, check_same_thread=False, uri=read_only
            )
        except sqlite3.Error as exc:
            raise AuditWriteError(
                f"audit store `{self.path}` cannot be opened: {_why(exc)}",
                reason=f"audit store cannot be opened: {_why(exc)}",
            ) from exc
        try:
            if not read_only:
                when_free(self._set_up, busy_timeout)
            self._identity = self._file_identity()
        except (sqlite3.Error, OSError) as exc:
            self._conn.close()
            raise AuditWriteError(
                f"audit store `{self.path}` cannot be set up: {_why(exc)}",
                reason=f"audit store cannot be set up: {_why(exc)}",
            ) from exc

    def _set_up(self) -> None:
        # Idempotent, so a retry after SQLITE_BUSY (another process setting up the same file) is safe.
        self._conn.execute("PRAGMA journal_mode = WAL")
        # FULL: the WAL is fsynced on every commit, so a returned append survives power loss.
        self._conn.execute("PRAGMA synchronous = FULL")
        self._conn.executescript(SCHEMA)
        if int(self._conn.execute("PRAGMA user_version").fetchone()[0]) < SCHEMA_VERSION:
            # One transaction: another process setting up the same file waits, then finds it done.
            self._conn.executescript(
                f"BEGIN IMMEDIATE; {search_index_script()} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            )

    def _file_identity(self) -> tuple[int, int] | None:
        if self._file is None:
            return None
        stat = os.stat(self._file)
        return stat.st_dev, stat.st_ino

    def append(self, events: Sequence[AuditEvent]) -> list[AuditRecord]:
        """Chain ``events`` after the newest record and commit them durably, in one transaction.

        Raises:
            AuditWriteError: nothing was written (locked, read-only, moved, full, or broken store).
        """
        records = self._append(events, wait=True)
        if records is None:  # only for the type checker: a waiting append raises or writes
            raise AuditWriteError(f"audit store `{self.path}` was busy", reason="audit store was busy")
        return records

    def append_nowait(self, events: Sequence[AuditEvent]) -> list[AuditRecord] | None:
        """``append`` if the store is free now, else None (nothing written, nothing waited for).

        Busy means another thread of this process is using the connection, or another process holds
        SQLite's write lock. Raises ``AuditWriteError`` as ``append`` does.
        """
        return self._append(events, wait=False)

    def _append(self, events: Sequence[AuditEvent], *, wait: bool) -> list[AuditRecord] | None:
        if not events:
            return []
        if not self._lock.acquire(blocking=wait):
            return None
        try:
            # In WAL mode SQLite keeps writing to a file that was deleted or replaced under it;
            # records would then vanish unseen. Refuse instead (one stat per batch).
            if self._file_identity() != self._identity:
                raise AuditWriteError(
                    f"audit store `{self.path}` was moved, replaced or deleted",
                    reason="audit store was moved, replaced or deleted",
                )
            # Taking the write lock before reading the newest record means no other process can
            # append between our read and our insert.
            if not try_begin(self._conn):
                if not wait:
                    return None
                when_free(lambda: self._conn.execute("BEGIN IMMEDIATE"), self._busy_timeout)
            # ``data_version`` changes when another connection commits (cheaper than the SELECT).
            version = self._conn.execute("PRAGMA data_version").fetchone()[0]
            if version != self._head_version:
                row = self._newest()
                self._head = (row[0], row[1]) if row else None
            encoded = chain_encoded(self._head, events, self._clock())
            self._conn.executemany(
                f"INSERT INTO audit ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608 - constant columns
                [to_row(r, (a, d)) for r, a, d in encoded],
            )
            records = [record for record, _, _ in encoded]
            if self.sealer is not None:
                self._conn.execute(_SEAL_INSERT, seal_to_row(self.sealer.seal(records)))
            self._conn.execute("COMMIT")
            self._head, self._head_version = (records[-1].seq, records[-1].hash), version
        except BaseException as exc:
            self._head_version = None  # read the head again next time
            self._rollback()  # whatever failed: a transaction left open would refuse every later append
            if isinstance(exc, AuditWriteError) or not isinstance(exc, sqlite3.Error | OSError):
                raise
            if isinstance(exc, OSError):
                raise AuditWriteError(
                    f"audit store `{self.path}` is gone: {exc.strerror}",
                    reason=f"audit store is gone: {exc.strerror}",
                ) from exc
            raise AuditWriteError(
                f"audit store `{self.path}` refused the append: {_why(exc)}",
                reason=f"audit store refused the append: {_why(exc)}",
            ) from exc
        finally:
            self._lock.release()
        return records

    def _newest(self) -> Any:
        return self._conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()

    def _rollback(self) -> None:
        # The failed transaction may already be gone (SQLite rolls back on some errors itself).
        with contextlib.suppress(sqlite3.Error):
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")

    def records(self, *, after_seq: int = 0, limit: int | None = None) -> list[AuditRecord]:
        """Records with ``seq > after_seq`` in seq order, at most ``limit`` of them."""
        return self._select(
            f"SELECT {COLUMNS} FROM audit WHERE seq > ? ORDER BY seq LIMIT ?",  # noqa: S608 - constant columns
            (after_seq, -1 if limit is None else limit),
        )

    def query(
        self,
        *,
        agent: str | None = None,
        tool: str | None = None,
        decision: str | None = None,
        kind: str | None = None,
        call_id: str | None = None,
        since: float | None = None,
        limit: int = 100,
        arg_hmac: str | None = None,
    ) -> list[AuditRecord]:
        """The newest ``limit`` records matching every given filter, returned in seq order.

        ``since`` is a time in epoch seconds (records with ``ts >= since``); ``arg_hmac`` matches
        records holding an argument stored as ``{"hmac": arg_hmac}``.
        """
        where, params = where_clause(agent=agent, tool=tool, decision=decision, kind=kind, call_id=call_id)
        if since is not None:
            where.append("ts >= ?")
            params.append(since)
        if arg_hmac is not None:
            # args is the exact JSON text written by to_row, so the marker's compact form is a substring.
            where.append("instr(args, ?) > 0")
            params.append(hmac_marker_text(arg_hmac))
        condition = " AND ".join(where) or "1"
        sql = (
            f"SELECT * FROM (SELECT {COLUMNS} FROM audit WHERE {condition} ORDER BY seq DESC LIMIT ?)"  # noqa: S608 - built from constants
            " ORDER BY seq"
        )
        return self._select(sql, (*params, limit))

    def search(self, query: AuditSearch) -> AuditPage:
        """One page of the records matching ``query`` (``audit/search.py``).

        Raises:
            AuditSearchError: the query is invalid.
            AuditError: the store cannot be read.
        """
        return run_search(
            query,
            "sqlite",
            COLUMNS,
            lambda text, params: self._select(text.format(audit="audit").replace("%s", "?"), params),
            self.head,
        )

    def head(self) -> tuple[int, str] | None:
        """``(seq, hash)`` of the newest record, or None when the log is empty."""
        with self._lock:
            try:
                row = when_free(self._newest, self._busy_timeout)
            except sqlite3.Error as exc:
                raise AuditError(f"audit store `{self.path}` cannot be read: {_why(exc)}") from exc
        return (int(row[0]), str(row[1])) if row else None

    def write_checkpoint(self, checkpoint: AuditCheckpoint) -> None:
        """Store a signed checkpoint durably.

        Raises:
            AuditWriteError: it was not stored.
        """
        with self._lock:
            try:
                if self._file_identity() != self._identity:
                    raise AuditWriteError(
                        f"audit store `{self.path}` was moved, replaced or deleted",
                        reason="audit store was moved, replaced or deleted",
                    )
                when_free(lambda: self._conn.execute("BEGIN IMMEDIATE"), self._busy_timeout)
                self._conn.execute(
                    f"INSERT INTO checkpoints ({CHECKPOINT_COLUMNS}) VALUES (?, ?, ?, ?, ?)",  # noqa: S608 - constant columns
                    (checkpoint.seq, checkpoint.hash, checkpoint.ts, checkpoint.key_id, checkpoint.signature),
                )
                self._conn.execute("COMMIT")
            except (sqlite3.Error, OSError, AuditWriteError) as exc:
                self._rollback()
                if isinstance(exc, AuditWriteError):
                    raise
                raise AuditWriteError(
                    f"audit store `{self.path}` refused a checkpoint: {_why(exc)}",
                    reason=f"audit store refused a checkpoint: {_why(exc)}",
                ) from exc

    def checkpoints(self) -> list[AuditCheckpoint]:
        """Every stored checkpoint, in the order written."""
        sql = f"SELECT {CHECKPOINT_COLUMNS} FROM checkpoints ORDER BY id"  # noqa: S608 - constant columns
        with self._lock:
            try:
                rows = when_free(lambda: self._conn.execute(sql).fetchall(), self._busy_timeout)
            except sqlite3.Error as exc:
                raise AuditError(f"audit store `{self.path}` cannot be read: {_why(exc)}") from exc
        return [checkpoint_from_row(row) for row in rows]

    def seals(self, *, after_seq: int = 0, limit: int | None = None) -> list[AuditSeal]:
        """The stored seals covering a record with ``seq > after_seq``, by ``last_seq``, at most ``limit``."""
        sql = f"SELECT {', '.join(SEAL_COLUMNS)} FROM seals WHERE last_seq > ? ORDER BY last_seq LIMIT ?"  # noqa: S608 - constant columns
        params = (after_seq, -1 if limit is None else limit)
        with self._lock:
            try:
                rows = when_free(lambda: self._conn.execute(sql, params).fetchall(), self._busy_timeout)
            except sqlite3.OperationalError as exc:
                if self.read_only and "no such table" in str(exc):
                    return []  # a store written before seals existed, opened read-only
                raise AuditError(f"audit store `{self.path}` cannot be read: {_why(exc)}") from exc
            except sqlite3.Error as exc:
                raise AuditError(f"audit store `{self.path}` cannot be read: {_why(exc)}") from exc
        return [seal_from_row(row) for row in rows]

    def _select(self, sql: str, params: Sequence[Any]) -> list[AuditRecord]:
        with self._lock:
            try:
                rows = when_free(lambda: self._conn.execute(sql, params).fetchall(), self._busy_timeout)
            except sqlite3.Error as exc:
                raise AuditError(f"audit store `{self.path}` cannot be read: {_why(exc)}") from exc
        return [from_row(row) for row in rows]

    def close(self) -> None:
        """Close the connection; idempotent."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SQLiteAuditSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
