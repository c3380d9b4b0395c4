"""A named lease that one replica holds at a time, for services that must run once per deployment.

The SIEM export, the alert service and the quality monitors follow the shared audit log: run by every
replica, they would export each record, raise each alert and measure each table once per replica.
``run_as_leader`` runs such a service only while this process holds the service's lease.

- ``PostgresLease`` (replicas sharing the ``store:`` schema): a session-level advisory lock,
  ``pg_try_advisory_lock(LEASE_LOCK_CLASS, hashtext('<schema>/<name>'))``, taken on a connection of its
  own (``application_name`` says which lease and replica, for ``pg_stat_activity``). A standby tries
  again every ``retry_seconds``. The holder checks its connection every ``check_seconds`` and
  ``confirm`` checks it before an act that must not be doubled; a check that fails or hangs longer
  than ``check_timeout`` is a lost lease, and the service is cancelled. The server frees the lock when
  the session ends: the connection closed or killed, the process gone, or (TCP keepalive and user
  timeout are set on both ends of the connection) the network between them gone for ~15 s.
- ``LocalLease`` (one machine, SQLite stores): this process is always the holder.

What a takeover can double: after the holder's session ends, a standby may start before the old
holder's next check (at most ``check_seconds``). A service must therefore fence what it writes (the
SIEM cursor moves only from where the batch was read, ``connectors/siem/cursor.py``) and ``confirm``
before it acts; what stays is one batch the old holder had in flight (same event ids: a SIEM dedupes).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Literal, Protocol

import anyio

from mcp_gateway.errors import StoreError
from mcp_gateway.storage.database import describe_pg_error

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "LEASE_LOCK_CLASS",
    "Lease",
    "LeaseLost",
    "LocalLease",
    "PostgresLease",
    "replica_name",
    "run_as_leader",
]

logger = logging.getLogger(__name__)

LEASE_LOCK_CLASS = 0x6D636C73
"""First key of every lease's advisory lock (``mcls``; the migration lock's is ``mcmg``)."""

# Both ends drop a session whose peer is gone: idle 5 s, then 3 probes 2 s apart; unacknowledged
# data for 10 s. These server settings may be set by any role, per session.
_KEEPALIVE: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}
_SERVER_OPTIONS = (
    "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3"
    " -c tcp_user_timeout=10000"
)

Service = Callable[[], Coroutine[Any, Any, None]]


def replica_name() -> str:
    """This process as leases and their audit records name it (``host:pid``)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class LeaseLost(StoreError):
    """This replica no longer holds (or cannot show that it holds) a lease."""


class Lease(Protocol):
    """One named lease as this replica sees it."""

    name: str
    replica: str
    retry_seconds: float

    @property
    def kind(self) -> Literal["local", "postgres"]:
        """``local`` (always held by this process) or ``postgres`` (an advisory lock)."""
        ...

    async def acquire(self) -> None:
        """Return once this replica holds the lease (waits as long as another one does)."""
        ...

    async def confirm(self) -> None:
        """Raise ``LeaseLost`` unless this replica still holds the lease."""
        ...

    async def watch(self) -> None:
        """Raise ``LeaseLost`` when the lease is lost (never returns while it is held)."""
        ...

    async def release(self) -> None:
        """Give the lease up (idempotent; never raises)."""
        ...


class LocalLease:
    """The lease of a deployment of one process: always held."""

    kind: Literal["local"] = "local"
    retry_seconds = 1.0

    def __init__(self, name: str, *, replica: str | None = None) -> None:
        self.name = name
        self.replica = replica or replica_name()

    async def acquire(self) -> None:
        return

    async def confirm(self) -> None:
        return

    async def watch(self) -> None:
        await anyio.sleep_forever()

    async def release(self) -> None:
        return


class PostgresLease:
    """A lease held as a session-level advisory lock (see the module docstring).

    Args:
        dsn: the shared store's connection string (never shown in messages).
        schema: the shared schema (leases of other schemas in the same database are other leases).
        name: the service's lease name (``siem``, ``alerts``, ``monitors``).
        replica: this replica's name (default ``host:pid``).
        retry_seconds: how often a standby tries to take the lease.
        check_seconds: how often the holder checks its connection.
        check_timeout: how long a check may take before the lease counts as lost.
        connect_timeout: seconds to wait for a connection.
    """

    kind: Literal["postgres"] = "postgres"

    def __init__(
        self,
        dsn: str,
        schema: str,
        name: str,
        *,
        replica: str | None = None,
        retry_seconds: float = 2.0,
        check_seconds: float = 1.0,
        check_timeout: float = 5.0,
        connect_timeout: int = 5,
    ) -> None:
        self._dsn = dsn
        self.schema = schema
        self.name = name
        self.replica = replica or replica_name()
        self.retry_seconds = retry_seconds
        self.check_seconds = check_seconds
        self.check_timeout = check_timeout
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._held = False
        self._told_standby = False
        self._told_down = False
        self.backend_pid: int | None = None
        """The server process of the connection that holds the lease (None while not held)."""

    def __repr__(self) -> str:
        return f"PostgresLease(schema={self.schema!r}, name={self.name!r}, replica={self.replica!r})"

    @property
    def key(self) -> str:
        return f"{self.schema}/{self.name}"

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        given = str(conninfo_to_dict(self._dsn).get("options") or "")
        return psycopg.connect(
            self._dsn,
            autocommit=True,
            connect_timeout=self._connect_timeout,
            application_name=f"mcp-gateway lease {self.name} {self.replica}"[:63],
            options=f"{given} {_SERVER_OPTIONS}".strip(),
            **_KEEPALIVE,
        )

    def _drop(self) -> None:
        self._held = False
        self.backend_pid = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _try(self) -> bool:
        import psycopg

        with self._lock:
            try:
                if self._conn is None or self._conn.closed or self._conn.broken:
                    self._drop()
                    self._conn = self._connect()
                row = self._conn.execute(
                    "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (LEASE_LOCK_CLASS, self.key)
                ).fetchone()
            except psycopg.Error as exc:
                self._drop()
                if not self._told_down:  # once per outage, not at every retry
                    self._told_down = True
                    why = describe_pg_error(exc, self._dsn)
                    logger.warning("lease `%s`: cannot reach the shared store: %s", self.name, why)
                return False
            self._told_down = False
            self._held = bool(row and row[0])
            self.backend_pid = self._conn.info.backend_pid if self._held else None
            return self._held

    async def acquire(self) -> None:
        while not await anyio.to_thread.run_sync(self._try):
            if not self._told_standby:
                self._told_standby = True
                logger.info("lease `%s`: another replica holds it; %s stands by", self.name, self.replica)
            await anyio.sleep(self.retry_seconds)
        self._told_standby = False

    def _check(self) -> None:
        import psycopg

        with self._lock:
            if not self._held or self._conn is None:
                raise LeaseLost(f"lease `{self.name}` is not held by {self.replica}")
            try:
                self._conn.execute("SELECT 1").fetchone()
            except psycopg.Error as exc:
                self._drop()
                why = describe_pg_error(exc, self._dsn)
                raise LeaseLost(f"lease `{self.name}` lost: its connection failed ({why})") from None

    async def confirm(self) -> None:
        try:
            with anyio.fail_after(self.check_timeout):
                await anyio.to_thread.run_sync(self._check, abandon_on_cancel=True)
        except TimeoutError:
            self._held = False
            raise LeaseLost(
                f"lease `{self.name}` lost: its connection did not answer within {self.check_timeout:g}s"
            ) from None

    async def watch(self) -> None:
        while True:
            await anyio.sleep(self.check_seconds)
            await self.confirm()

    def _release(self) -> None:
        with self._lock:
            self._drop()  # the session's end frees its advisory locks

    async def release(self) -> None:
        with anyio.move_on_after(self.check_timeout, shield=True):
            await anyio.to_thread.run_sync(self._release, abandon_on_cancel=True)


Hook = Callable[[Lease], Awaitable[None]]


async def _serve(lease: Lease, service: Service, what: str) -> Literal["ended", "failed", "lost"]:
    """Run ``service`` until it ends or the lease is lost (then it is cancelled)."""
    outcome: Literal["ended", "failed", "lost"] = "ended"
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            nonlocal outcome
            try:
                await service()
            except Exception:  # a service must never take the gateway down with it
                logger.exception("%s failed while this replica held its lease", what)
                outcome = "failed"
            tg.cancel_scope.cancel()

        tg.start_soon(run)
        try:
            await lease.watch()
        except LeaseLost as exc:
            outcome = "lost"
            logger.error("%s stops on %s: %s", what, lease.replica, exc)
            tg.cancel_scope.cancel()
    return outcome


async def run_as_leader(
    lease: Lease, service: Service, *, what: str, on_acquired: Hook | None = None, on_lost: Hook | None = None
) -> None:
    """Run ``service`` whenever this replica holds ``lease``, until cancelled (a gateway service).

    Args:
        lease: the service's lease.
        service: started on each takeover, cancelled when the lease is lost.
        what: the service in log lines.
        on_acquired: called after each takeover, before the service starts (it audits the takeover);
            when it raises, the lease is given up and taken again later.
        on_lost: called after the service was cancelled for a lost lease (best effort).

    A service that ends by itself ends this too (its lease is given up); one that fails is started
    again after ``lease.retry_seconds`` if this replica can take the lease again.
    """
    try:
        while True:
            await lease.acquire()
            if on_acquired is not None:
                try:
                    await on_acquired(lease)
                except Exception:
                    logger.exception(
                        "%s: the takeover by %s could not be recorded; giving it up", what, lease.replica
                    )
                    await lease.release()
                    await anyio.sleep(lease.retry_seconds)
                    continue
            logger.info("%s runs on %s (lease `%s`, %s)", what, lease.replica, lease.name, lease.kind)
            outcome = await _serve(lease, service, what)
            await lease.release()
            if outcome == "ended":
                return
            if outcome == "lost" and on_lost is not None:
                try:
                    await on_lost(lease)
                except Exception as exc:
                    logger.warning("%s: the lost lease could not be recorded (%s)", what, type(exc).__name__)
            await anyio.sleep(lease.retry_seconds)
    finally:
        await lease.release()
