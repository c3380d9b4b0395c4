"""Where approvals live: SQLite in the data directory (default) or PostgreSQL (replicas share it).

Deciding and using are each one conditional ``UPDATE`` inside one transaction: the row changes only
if it is still in the state the operation needs (``pending`` and unexpired to decide; ``approved``,
unexpired and bound to this agent, tool and argument hash to use). Two calls racing to use the same
approval therefore cannot both succeed, on one process or on several replicas. When the update
matches nothing, the row is read in the same transaction to say exactly why.
"""

from __future__ import annotations

import builtins
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mcp_gateway.approvals.model import (
    STATUSES,
    Approval,
    ApprovalError,
    ApprovalStatus,
    consume_refusal,
    decide_refusal,
    new_approval_id,
)
from mcp_gateway.approvals.settings import ApprovalSettings
from mcp_gateway.approvals.store import ApprovalStore, ApprovalStoreUnavailable
from mcp_gateway.errors import ConfigError, GatewayError
from mcp_gateway.types import Clock, system_clock

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresApprovalStore", "SQLiteApprovalStore", "open_approval_store"]


class _Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def execute(self, query: Any, params: Any = ..., /) -> Any: ...

    def fetchall(self) -> builtins.list[Any]: ...


_FIELDS = (
    "id, agent, tool, args_hash, args, reason, detail, created_at, expires_at, ttl_seconds, status,"
    " decided_by, decided_at, note, used_at, used_call_id"
)
# One text per statement for both dialects: {t} is the table, %s the parameters.
_QUERIES = {
    "create_table": "CREATE TABLE IF NOT EXISTS {t} (id TEXT PRIMARY KEY, agent TEXT NOT NULL,"
    " tool TEXT NOT NULL, args_hash TEXT NOT NULL, args TEXT NOT NULL, reason TEXT NOT NULL,"
    " detail TEXT NOT NULL, created_at {real} NOT NULL, expires_at {real} NOT NULL,"
    " ttl_seconds {real} NOT NULL, status TEXT NOT NULL, decided_by TEXT, decided_at {real}, note TEXT,"
    " used_at {real}, used_call_id TEXT)",
    "create_index": "CREATE INDEX IF NOT EXISTS {i} ON {t} (status, created_at)",
    # Constant text only: the table is a quoted identifier, values are always parameters.
    "insert": f"INSERT INTO {{t}} ({_FIELDS}) VALUES ({', '.join(['%s'] * 16)})",  # noqa: S608 - constants
    "get": f"SELECT {_FIELDS} FROM {{t}} WHERE id = %s",  # noqa: S608 - constants only
    "approve": "UPDATE {t} SET status = 'approved', decided_by = %s, decided_at = %s, note = %s,"
    " expires_at = %s + ttl_seconds WHERE id = %s AND status = 'pending' AND expires_at > %s",
    "deny": "UPDATE {t} SET status = 'denied', decided_by = %s, decided_at = %s, note = %s"
    " WHERE id = %s AND status = 'pending' AND expires_at > %s",
    "consume": "UPDATE {t} SET status = 'used', used_at = %s, used_call_id = %s WHERE id = %s"
    " AND agent = %s AND tool = %s AND args_hash = %s AND status = 'approved' AND expires_at > %s",
}
# ``list`` filters: the effective status, with expiry applied at read time.
_LIST_WHERE = {
    None: ("TRUE", 0),
    "pending": ("status = 'pending' AND expires_at > %s", 1),
    "approved": ("status = 'approved' AND expires_at > %s", 1),
    "denied": ("status = 'denied'", 0),
    "used": ("status = 'used'", 0),
    "expired": ("(status = 'expired' OR (status IN ('pending', 'approved') AND expires_at <= %s))", 1),
}


def _json(value: Mapping[str, Any]) -> str:
    # ASCII-escaped JSON stores anything (lone surrogates, NUL) in TEXT on both databases and reads
    # back equal; values JSON cannot hold (a datetime in a before-image) are kept as their text.
    return json.dumps(dict(value), ensure_ascii=True, sort_keys=True, default=str)


def _from_row(row: Any) -> Approval:
    values = list(row)
    values[4], values[6] = json.loads(values[4]), json.loads(values[6])
    return Approval(*values)


class _SQLApprovalStore:
    """The ``ApprovalStore`` logic shared by the SQL backends; each supplies ``_tx`` and ``_q``."""

    _q: dict[str, Any]
    _clock: Clock

    def _tx(self) -> AbstractContextManager[_Cursor]:
        """A write transaction (committed on success, rolled back on error)."""
        raise NotImplementedError

    def _list_query(self, where: str) -> Any:
        raise NotImplementedError

    def create(
        self,
        *,
        agent: str,
        tool: str,
        args_hash: str,
        args: Mapping[str, Any],
        reason: str,
        detail: Mapping[str, Any],
        ttl_seconds: float,
    ) -> Approval:
        """Record a pending request for a human decision on this exact call.

        Raises:
            GatewayError: empty agent or tool, or a ttl that is not positive.
            ApprovalStoreUnavailable: the store cannot be written.
        """
        if not agent or not tool:
            raise GatewayError("an approval needs an agent and a tool")
        if not ttl_seconds > 0:
            raise GatewayError("approval ttl_seconds must be positive")
        now = self._clock()
        approval = Approval(
            id=new_approval_id(),
            agent=agent,
            tool=tool,
            args_hash=args_hash,
            args=dict(args),
            reason=reason,
            detail=dict(detail),
            created_at=now,
            expires_at=now + ttl_seconds,
            ttl_seconds=float(ttl_seconds),
        )
        row = list(approval.to_dict().values())
        row[4], row[6] = _json(approval.args), _json(approval.detail)
        with self._tx() as cur:
            cur.execute(self._q["insert"], row)
        return approval

    def get(self, approval_id: str) -> Approval | None:
        """The approval with its effective status now, or None."""
        with self._tx() as cur:
            rows = cur.execute(self._q["get"], (approval_id,)).fetchall()
        return _from_row(rows[0]).as_of(self._clock()) if rows else None

    def list(self, status: ApprovalStatus | None = None, *, limit: int = 100) -> builtins.list[Approval]:
        """The newest ``limit`` approvals whose effective status is ``status`` (any when None).

        Raises:
            GatewayError: an unknown status.
        """
        if status is not None and status not in STATUSES:
            raise GatewayError(f"unknown approval status `{status}` (one of {', '.join(STATUSES)})")
        where, uses_now = _LIST_WHERE[status]
        now = self._clock()
        with self._tx() as cur:
            rows = cur.execute(self._list_query(where), (*([now] * uses_now), limit)).fetchall()
        return [_from_row(row).as_of(now) for row in rows]

    def decide(self, approval_id: str, *, approve: bool, approver: str, note: str | None = None) -> Approval:
        """Approve or deny a pending, unexpired request; returns it as decided.

        An approval stays usable for its ``ttl_seconds`` from now.

        Raises:
            ApprovalNotFound, ApprovalExpired, ApprovalNotPending: it cannot be decided (nothing changed).
            GatewayError: no approver name.
        """
        if not approver:
            raise GatewayError("a decision needs the approver's name")
        now = self._clock()
        with self._tx() as cur:
            if approve:
                cur.execute(self._q["approve"], (approver, now, note, now, approval_id, now))
            else:
                cur.execute(self._q["deny"], (approver, now, note, approval_id, now))
            changed = cur.rowcount == 1
            rows = cur.execute(self._q["get"], (approval_id,)).fetchall()
        current = _from_row(rows[0]) if rows else None
        if changed and current is not None:
            return current
        refusal = decide_refusal(current, approval_id, now=now)
        raise refusal or ApprovalError(f"approval `{approval_id}` could not be decided", approval_id)

    def consume(
        self,
        approval_id: str,
        *,
        agent: str,
        tool: str,
        args_hash: str,
        call_id: str,
        now: float | None = None,
    ) -> Approval:
        """Use an approval for this call, at most once, atomically; returns it marked ``used``.

        Raises:
            ApprovalNotFound, ApprovalOtherAgent, ApprovalOtherTool, ApprovalArgsChanged,
            ApprovalPending, ApprovalDenied, ApprovalExpired, ApprovalUsed: it may not be used (nothing
            changed).
        """
        now = self._clock() if now is None else now
        with self._tx() as cur:
            cur.execute(self._q["consume"], (now, call_id, approval_id, agent, tool, args_hash, now))
            used = cur.rowcount == 1
            rows = cur.execute(self._q["get"], (approval_id,)).fetchall()
        current = _from_row(rows[0]) if rows else None
        if used and current is not None:
            return current
        refusal = consume_refusal(current, approval_id, agent=agent, tool=tool, args_hash=args_hash, now=now)
        raise refusal or ApprovalError(f"approval `{approval_id}` could not be used", approval_id)


class SQLiteApprovalStore(_SQLApprovalStore):
    """Approvals in a SQLite file (WAL, ``synchronous=FULL``), shared by the gateway and the CLI.

    Args:
        path: the database file (``approvals.db`` in the data directory); created 0600 if missing.
        clock: the time source for creation, decisions and expiry.

    Raises:
        ApprovalStoreUnavailable: the file cannot be opened or initialised.
    """

    def __init__(self, path: str | os.PathLike[str], *, clock: Clock = system_clock) -> None:
        self._path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._q = {
            k: v.format(t="approvals", i="approvals_status", real="REAL").replace("%s", "?")
            for k, v in _QUERIES.items()
        }
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            # Requests carry (redacted) arguments and before-images: readable by the owner only.
            os.close(os.open(self._path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600))
            self._db = sqlite3.connect(
                self._path, timeout=10.0, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
        except (OSError, sqlite3.Error) as exc:
            raise ApprovalStoreUnavailable(f"cannot open the approval store: {type(exc).__name__}") from exc
        with self._tx() as cur:
            cur.execute(self._q["create_table"])
            cur.execute(self._q["create_index"])

    def __repr__(self) -> str:
        return f"SQLiteApprovalStore({str(self._path)!r})"

    def _list_query(self, where: str) -> Any:
        # `where` is one of the constant _LIST_WHERE texts; values are parameters.
        query = f"SELECT {_FIELDS} FROM approvals WHERE {where} ORDER BY created_at DESC LIMIT %s"  # noqa: S608 - constants
        return query.replace("%s", "?")

    @contextmanager
    def _tx(self) -> Iterator[_Cursor]:
        # BEGIN IMMEDIATE takes the write lock first, so the update and the read after it see one state.
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db.cursor()
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise ApprovalStoreUnavailable(f"the approval store failed: {type(exc).__name__}") from exc

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()


class PostgresApprovalStore(_SQLApprovalStore):
    """Approvals in PostgreSQL, so replicas share them; the schema and table are created if missing.

    Args:
        dsn: a libpq connection string (never shown in errors).
        schema: the schema holding the ``approvals`` table.
        clock: the time source for creation, decisions and expiry.

    Raises:
        ApprovalStoreUnavailable: the database cannot be reached or initialised.
    """

    def __init__(
        self, dsn: str, schema: str = "mcp_gateway", *, clock: Clock = system_clock, connect_timeout: int = 5
    ) -> None:
        # Imported here because psycopg is the optional `postgres` extra.
        import psycopg
        from psycopg import sql

        self._psycopg = psycopg
        self._sql = sql
        self._dsn = dsn
        self._schema = schema
        self._clock = clock
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._table = sql.Identifier(schema, "approvals")
        names = {
            "t": self._table,
            "i": sql.Identifier("approvals_status"),
            "real": sql.SQL("DOUBLE PRECISION"),
        }
        self._q = {k: sql.SQL(v).format(**names) for k, v in _QUERIES.items()}
        with self._tx() as cur:
            # Replicas starting together would race on CREATE SCHEMA IF NOT EXISTS without this lock.
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"mcp_gateway.approvals:{schema}",))
            cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            cur.execute(self._q["create_table"])
            cur.execute(self._q["create_index"])

    def __repr__(self) -> str:
        return f"PostgresApprovalStore(schema={self._schema!r})"

    def _list_query(self, where: str) -> Any:
        sql = self._sql
        return sql.SQL("SELECT {fields} FROM {t} WHERE {where} ORDER BY created_at DESC LIMIT %s").format(
            fields=sql.SQL(_FIELDS), t=self._table, where=sql.SQL(where)
        )

    @contextmanager
    def _tx(self) -> Iterator[_Cursor]:
        with self._lock:
            try:
                # Reconnect after a dropped connection instead of failing every later call.
                if self._conn is None or self._conn.closed or self._conn.broken:
                    self._conn = self._psycopg.connect(
                        self._dsn, autocommit=True, connect_timeout=self._connect_timeout
                    )
                with self._conn.transaction(), self._conn.cursor() as cur:
                    # A returned decision or use is durable even if the server relaxed commits.
                    cur.execute("SET LOCAL synchronous_commit = on")
                    yield cur
            except self._psycopg.Error as exc:
                # Server messages may quote values or the connection string: name the class only.
                state = f", sqlstate {exc.sqlstate}" if exc.sqlstate else ""
                why = f"{type(exc).__name__}{state}"
                raise ApprovalStoreUnavailable(
                    f"the approval store (postgres schema `{self._schema}`) failed: {why}"
                ) from exc

    def close(self) -> None:
        """Close the connection, if open."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()


def open_approval_store(
    settings: ApprovalSettings, data_dir: Path, *, clock: Clock = system_clock
) -> ApprovalStore:
    """The configured approval store (the gateway and the CLI open the same one).

    Args:
        settings: the ``approvals:`` section.
        data_dir: where a relative SQLite ``path`` lives.
        clock: the time source (tests pass a fake one).

    Raises:
        ApprovalStoreUnavailable: it cannot be opened.
        ConfigError: postgres without a dsn.
    """
    if settings.store == "postgres":
        if settings.dsn is None:
            raise ConfigError("approvals: store `postgres` needs a `dsn`")
        return PostgresApprovalStore(settings.dsn, schema=settings.schema_name, clock=clock)
    path = settings.path if settings.path.is_absolute() else data_dir / settings.path
    return SQLiteApprovalStore(path, clock=clock)
