"""The audit store for several gateway replicas: one table in a PostgreSQL schema.

Each append is one transaction that first takes a transaction-scoped advisory lock keyed on the
schema, then reads the newest record, chains and inserts. Replicas therefore append one at a time
and keep a single valid chain; the lock is released by COMMIT or ROLLBACK, so a crashed replica
cannot leave it held. ``synchronous_commit`` is forced on for these transactions: a returned
append is durable even if the server default was relaxed.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from mcp_gateway.audit.record import chain_encoded
from mcp_gateway.audit.rows import (
    CHECKPOINT_COLUMNS,
    COLUMN_NAMES,
    COLUMNS,
    REPLACED_INDEXES,
    SEARCH_INDEXES,
    checkpoint_from_row,
    from_row,
    hmac_marker_text,
    to_row,
)
from mcp_gateway.audit.seal import SEAL_COLUMNS, AuditSeal, Sealer, seal_from_row, seal_to_row
from mcp_gateway.audit.search import AuditPage, AuditSearch, run_search
from mcp_gateway.errors import AuditError, AuditWriteError
from mcp_gateway.storage.migrate import Migration, migrate
from mcp_gateway.types import AuditCheckpoint, AuditEvent, AuditRecord, Clock, system_clock

CHAIN_LOCK_CLASS = 0x6D637067
"""First key of the advisory lock (``pg_advisory_xact_lock(CHAIN_LOCK_CLASS, hashtext(schema))``)."""

_COLUMNS = sql.SQL(", ").join(sql.Identifier(name) for name in COLUMN_NAMES)
_TABLE = """CREATE TABLE IF NOT EXISTS {audit} (
    seq bigint PRIMARY KEY,
    ts double precision NOT NULL,
    kind text NOT NULL,
    call_id text NOT NULL,
    agent text NOT NULL,
    tool text NOT NULL,
    decision text NOT NULL,
    status text NOT NULL,
    args text NOT NULL,
    detail text NOT NULL,
    prev_hash text NOT NULL,
    hash text NOT NULL
)"""
# args/detail are kept as the exact JSON text that was hashed: jsonb would reorder keys and
# normalise numbers, and a record must read back byte-for-byte to verify.
_CHECKPOINT_TABLE = """CREATE TABLE IF NOT EXISTS {checkpoints} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    seq bigint NOT NULL,
    hash text NOT NULL,
    ts double precision NOT NULL,
    key_id text NOT NULL,
    signature text NOT NULL
)"""
_SEAL_TABLE = """CREATE TABLE IF NOT EXISTS {seals} (
    first_seq bigint NOT NULL,
    last_seq bigint NOT NULL,
    prev_hash text NOT NULL,
    head_hash text NOT NULL,
    key_id text NOT NULL,
    mac text NOT NULL
)"""
_INDEXED = ("agent", "tool", "ts", "call_id")
MIGRATIONS = (
    Migration(
        1,
        "create audit, checkpoints, seals",
        (
            _TABLE,
            _CHECKPOINT_TABLE,
            _SEAL_TABLE,
            "CREATE INDEX IF NOT EXISTS {seals_last_seq} ON {seals} (last_seq)",
            *(f"CREATE INDEX IF NOT EXISTS {{audit_{c}}} ON {{audit}} ({c})" for c in _INDEXED),
        ),
        {"audit": "audit", "checkpoints": "checkpoints", "seals": "seals"},
        {"seals_last_seq": "seals_last_seq", **{f"audit_{c}": f"audit_{c}" for c in _INDEXED}},
    ),
    Migration(
        2,
        "search indexes: each filter column, then seq",
        (
            *(
                # text_pattern_ops: a tool glob's literal prefix (`data.%`) becomes an index range.
                f"CREATE INDEX IF NOT EXISTS {{{name}}} ON {{audit}}"
                f" ({cols[0]}{' text_pattern_ops' if cols[0] == 'tool' else ''}, {cols[1]})"
                for name, cols in SEARCH_INDEXES.items()
            ),
            *(f"DROP INDEX IF EXISTS {{{name}}}" for name in REPLACED_INDEXES),
        ),
        {"audit": "audit", **{name: name for name in REPLACED_INDEXES}},
        {name: name for name in SEARCH_INDEXES},
    ),
)
"""The PostgreSQL migrations of the ``audit`` component (1: the tables made before migrations existed;
2: the search indexes, ``rows.SEARCH_INDEXES``)."""
_SEAL_COLUMNS = sql.SQL(", ").join(sql.Identifier(name) for name in SEAL_COLUMNS)
_CHECKPOINT_COLUMNS = sql.SQL(", ").join(sql.Identifier(name) for name in CHECKPOINT_COLUMNS.split(", "))


def _why(exc: psycopg.Error) -> str:
    # Server messages can quote values (a DETAIL line, a connection string): give the class only.
    state = f", sqlstate {exc.sqlstate}" if exc.sqlstate else ""
    return f"{type(exc).__name__}{state}"


class PostgresAuditSink:
    """An ``AuditSink`` in PostgreSQL, shared safely by several gateway replicas.

    Args:
        dsn: a libpq connection string or URI (never shown in errors).
        schema: the schema holding the ``audit`` table; created if missing.
        clock: the time source for ``ts``.
        lock_timeout: seconds to wait for another replica's append before failing (fail closed).
        connect_timeout: seconds to wait for a connection.
        sealer: seals every batch in its transaction (``seal.py``); None writes no seals.
        create: create the schema and tables if missing; False (read-only commands) refuses a
            schema without an audit table instead.

    Raises:
        AuditWriteError: the database cannot be reached or the table cannot be set up.
    """

    def __init__(
        self,
        dsn: str,
        schema: str = "mcp_gateway",
        clock: Clock = system_clock,
        *,
        lock_timeout: float = 5.0,
        connect_timeout: int = 5,
        sealer: Sealer | None = None,
        create: bool = True,
    ) -> None:
        self.schema = schema
        self.sealer = sealer
        self._dsn = dsn
        self._clock = clock
        self._lock_timeout = f"{max(1, int(lock_timeout * 1000))}ms"
        self._connect_timeout = connect_timeout
        self._table = sql.Identifier(schema, "audit")
        self._checkpoints = sql.Identifier(schema, "checkpoints")
        self._seals = sql.Identifier(schema, "seals")
        self._has_seals = True
        # One connection shared by the gateway's worker threads; the lock serialises its use.
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        if not create:
            self._require_table()
            return
        with self._lock:
            try:
                # Versioned, under an advisory lock: replicas starting together migrate once.
                migrate(self._connection(), schema, "audit", MIGRATIONS)
            except psycopg.Error as exc:
                self._discard()
                raise AuditWriteError(
                    f"audit store (postgres schema `{schema}`) cannot be set up: {_why(exc)}"
                ) from exc

    def _require_table(self) -> None:
        with self._lock:
            try:
                conn = self._connection()
                names = (self._table.as_string(conn), self._seals.as_string(conn))
                row = conn.execute("SELECT to_regclass(%s), to_regclass(%s)", names).fetchone()
            except psycopg.Error as exc:
                self._discard()
                raise AuditError(
                    f"audit store (postgres schema `{self.schema}`) cannot be read: {_why(exc)}"
                ) from exc
        if row is None or row[0] is None:
            self._discard()
            raise AuditError(f"no audit store in postgres schema `{self.schema}`")
        self._has_seals = row[1] is not None

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._discard()
            self._conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=self._connect_timeout)
        return self._conn

    def _discard(self) -> None:
        # A broken connection is dropped; the next call connects afresh instead of failing forever.
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _lock_chain(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        conn.execute(
            "SELECT set_config('lock_timeout', %s, true), set_config('synchronous_commit', 'on', true)",
            (self._lock_timeout,),
        )
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (CHAIN_LOCK_CLASS, self.schema))

    def append(self, events: Sequence[AuditEvent]) -> list[AuditRecord]:
        """Chain ``events`` after the newest record and commit them durably, in one transaction.

        Raises:
            AuditWriteError: nothing was written (unreachable, lock timeout, refused by the server).
        """
        if not events:
            return []
        insert = sql.SQL("INSERT INTO {table} ({columns}) VALUES ({values})").format(
            table=self._table,
            columns=_COLUMNS,
            values=sql.SQL(", ").join(sql.Placeholder() * len(COLUMN_NAMES)),
        )
        with self._lock:
            try:
                conn = self._connection()
                with conn.transaction():
                    self._lock_chain(conn)
                    last = conn.execute(
                        sql.SQL("SELECT seq, hash FROM {} ORDER BY seq DESC LIMIT 1").format(self._table)
                    ).fetchone()
                    encoded = chain_encoded(last, events, self._clock())
                    with conn.cursor() as cursor:
                        cursor.executemany(insert, [to_row(r, (a, d)) for r, a, d in encoded])
                    records = [record for record, _, _ in encoded]
                    if self.sealer is not None:
                        conn.execute(
                            sql.SQL("INSERT INTO {} ({}) VALUES (%s, %s, %s, %s, %s, %s)").format(
                                self._seals, _SEAL_COLUMNS
                            ),
                            seal_to_row(self.sealer.seal(records)),
                        )
            except psycopg.Error as exc:
                if self._conn is not None and self._conn.broken:
                    self._discard()
                raise AuditWriteError(
                    f"audit store (postgres schema `{self.schema}`) refused the append: {_why(exc)}"
                ) from exc
        return records

    def records(self, *, after_seq: int = 0, limit: int | None = None) -> list[AuditRecord]:
        """Records with ``seq > after_seq`` in seq order, at most ``limit`` of them."""
        query = sql.SQL("SELECT {columns} FROM {table} WHERE seq > %s ORDER BY seq LIMIT %s").format(
            columns=_COLUMNS, table=self._table
        )
        return [from_row(row) for row in self._read(query, (after_seq, limit))]

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
        filters = {"agent": agent, "tool": tool, "decision": decision, "kind": kind, "call_id": call_id}
        where: list[sql.Composable] = [
            sql.SQL("{} = %s").format(sql.Identifier(c)) for c, v in filters.items() if v is not None
        ]
        params: list[Any] = [v for v in filters.values() if v is not None]
        if since is not None:
            where.append(sql.SQL("ts >= %s"))
            params.append(since)
        if arg_hmac is not None:
            # args is the exact JSON text written by to_row, so the marker's compact form is a substring.
            where.append(sql.SQL("strpos(args, %s) > 0"))
            params.append(hmac_marker_text(arg_hmac))
        query = sql.SQL(
            "SELECT {columns} FROM (SELECT {columns} FROM {table} WHERE {where} ORDER BY seq DESC LIMIT %s)"
            " AS newest ORDER BY seq"
        ).format(
            columns=_COLUMNS,
            table=self._table,
            where=sql.SQL(" AND ").join(where) if where else sql.SQL("TRUE"),
        )
        return [from_row(row) for row in self._read(query, (*params, limit))]

    def search(self, query: AuditSearch) -> AuditPage:
        """One page of the records matching ``query`` (``audit/search.py``).

        Raises:
            AuditSearchError: the query is invalid.
            AuditError: the store cannot be read.
        """
        # The text holds only constant SQL (values are bound); `{audit}` becomes the quoted table.
        return run_search(
            query,
            "postgres",
            COLUMNS,
            lambda text, params: [
                from_row(row) for row in self._read(sql.SQL(text).format(audit=self._table), params)
            ],
            self.head,
        )

    def head(self) -> tuple[int, str] | None:
        """``(seq, hash)`` of the newest record, or None when the log is empty."""
        rows = self._read(
            sql.SQL("SELECT seq, hash FROM {} ORDER BY seq DESC LIMIT 1").format(self._table), ()
        )
        return (int(rows[0][0]), str(rows[0][1])) if rows else None

    def write_checkpoint(self, checkpoint: AuditCheckpoint) -> None:
        """Store a signed checkpoint durably.

        Raises:
            AuditWriteError: it was not stored.
        """
        insert = sql.SQL("INSERT INTO {table} ({columns}) VALUES (%s, %s, %s, %s, %s)").format(
            table=self._checkpoints, columns=_CHECKPOINT_COLUMNS
        )
        row = (checkpoint.seq, checkpoint.hash, checkpoint.ts, checkpoint.key_id, checkpoint.signature)
        with self._lock:
            try:
                conn = self._connection()
                with conn.transaction():
                    conn.execute("SELECT set_config('synchronous_commit', 'on', true)")
                    conn.execute(insert, row)
            except psycopg.Error as exc:
                if self._conn is not None and self._conn.broken:
                    self._discard()
                raise AuditWriteError(
                    f"audit store (postgres schema `{self.schema}`) refused a checkpoint: {_why(exc)}"
                ) from exc

    def checkpoints(self) -> list[AuditCheckpoint]:
        """Every stored checkpoint, in the order written."""
        query = sql.SQL("SELECT {columns} FROM {table} ORDER BY id").format(
            columns=_CHECKPOINT_COLUMNS, table=self._checkpoints
        )
        return [checkpoint_from_row(row) for row in self._read(query, ())]

    def seals(self, *, after_seq: int = 0, limit: int | None = None) -> list[AuditSeal]:
        """The stored seals covering a record with ``seq > after_seq``, by ``last_seq``, at most ``limit``."""
        query = sql.SQL(
            "SELECT {columns} FROM {table} WHERE last_seq > %s ORDER BY last_seq LIMIT %s"
        ).format(columns=_SEAL_COLUMNS, table=self._seals)
        if not self._has_seals:
            return []  # a store written before seals existed, opened read-only
        return [seal_from_row(row) for row in self._read(query, (after_seq, limit))]

    def _read(self, query: sql.Composed, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._connection().execute(query, params).fetchall()
            except psycopg.Error as exc:
                if self._conn is not None and self._conn.broken:
                    self._discard()
                raise AuditError(
                    f"audit store (postgres schema `{self.schema}`) cannot be read: {_why(exc)}"
                ) from exc

    def close(self) -> None:
        """Close the connection; idempotent."""
        with self._lock:
            self._discard()

    def __enter__(self) -> PostgresAuditSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
