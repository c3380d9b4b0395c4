"""Quotas: at most N calls in any sliding window (``3/hour``), per (agent, tool) and per agent overall.

A call is checked against every quota that applies to it and counted against all of them only if
none refuses: a refused call uses up nothing. Each store does that check-then-count atomically, so
concurrent calls (threads, processes, replicas) cannot slip past a quota together.

Windows slide (a log of call times per key), so ``3/hour`` means three calls in any 3,600 seconds,
not three per clock hour. Each (scope, quota) pair has its own key: changing a quota's text in policy
starts it afresh.

    SQLiteQuotaStore  default; a file in the data directory, so a restart resets nothing
    RedisQuotaStore   replicas share one count; one Lua script per call makes check-and-count atomic

Why not the ``limits`` library's moving window: it tests and hits one key at a time and reads the
clock itself, so "check every quota, then count all of them" could not be one atomic step. The
window arithmetic here is small and tested; the quota text is parsed by the same ``parse_rate`` that
validates policy, so what policy accepts is exactly what is enforced.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from mcp_gateway.quotas.model import QuotaCheck, QuotaUnavailable
from mcp_gateway.quotas.settings import QuotaSettings

__all__ = ["QuotaStore", "RedisQuotaStore", "SQLiteQuotaStore", "open_quota_store"]


class QuotaStore(Protocol):
    """Counts calls against quotas. Blocking: call it from a worker thread on the async call path."""

    def check_and_hit(self, checks: Sequence[QuotaCheck], now: float) -> None:
        """Count one call at ``now`` against every check, or against none if any refuses.

        Raises:
            QuotaExceeded: for the refusing check with the longest wait (so retrying then can succeed).
            QuotaUnavailable: the store failed (nothing may be assumed counted or not).
        """
        ...

    def close(self) -> None: ...


class SQLiteQuotaStore:
    """A sliding-window log of call times in SQLite (WAL, ``synchronous=FULL``).

    At most ``amount`` times are kept per key (a refused call adds none), so the table stays small.

    Args:
        path: the database file (``quotas.db`` in the data directory).

    Raises:
        QuotaUnavailable: the file cannot be opened or initialised.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self._path, timeout=10.0, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
        except (OSError, sqlite3.Error) as exc:
            raise QuotaUnavailable(f"cannot open the quota store: {type(exc).__name__}") from exc
        with self._tx() as db:
            db.execute("CREATE TABLE IF NOT EXISTS quota_hits (key TEXT NOT NULL, ts REAL NOT NULL)")
            db.execute("CREATE INDEX IF NOT EXISTS quota_hits_key_ts ON quota_hits (key, ts)")

    def __repr__(self) -> str:
        return f"SQLiteQuotaStore({str(self._path)!r})"

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        # BEGIN IMMEDIATE: the check and the hit happen under one write lock, across processes too.
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise QuotaUnavailable(f"the quota store failed: {type(exc).__name__}") from exc

    def check_and_hit(self, checks: Sequence[QuotaCheck], now: float) -> None:
        """See ``QuotaStore.check_and_hit``."""
        if not checks:
            return
        refusals: list[tuple[float, QuotaCheck]] = []
        with self._tx() as db:
            for check in checks:
                start = now - check.seconds
                db.execute("DELETE FROM quota_hits WHERE key = ? AND ts <= ?", (check.key, start))
                (count,) = db.execute(
                    "SELECT COUNT(*) FROM quota_hits WHERE key = ? AND ts > ?", (check.key, start)
                ).fetchone()
                if count >= check.amount:
                    # Room opens when the hit that is `amount`-th from the newest leaves the window.
                    (oldest,) = db.execute(
                        "SELECT ts FROM quota_hits WHERE key = ? AND ts > ? ORDER BY ts LIMIT 1 OFFSET ?",
                        (check.key, start, count - check.amount),
                    ).fetchone()
                    refusals.append((oldest + check.seconds - now, check))
            if not refusals:
                db.executemany(
                    "INSERT INTO quota_hits (key, ts) VALUES (?, ?)", [(c.key, now) for c in checks]
                )
        if refusals:
            wait, check = max(refusals, key=lambda item: item[0])
            raise check.exceeded(wait)

    def close(self) -> None:
        with self._lock:
            self._db.close()


# KEYS: one sorted set per check (member: a unique id per call; score: the call time).
# ARGV: now, the call's member id, then amount and window seconds for each key.
# Returns {0, "0"} when counted, else {index of the refusing key with the longest wait, wait}.
_CHECK_AND_HIT = """
local now = tonumber(ARGV[1])
local member = ARGV[2]
local worst, worst_wait = 0, -1
for i, key in ipairs(KEYS) do
  local amount = tonumber(ARGV[1 + 2 * i])
  local window = tonumber(ARGV[2 + 2 * i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local count = redis.call('ZCARD', key)
  if count >= amount then
    local entry = redis.call('ZRANGE', key, count - amount, count - amount, 'WITHSCORES')
    local wait = tonumber(entry[2]) + window - now
    if wait > worst_wait then
      worst, worst_wait = i, wait
    end
  end
end
if worst > 0 then
  return {worst, tostring(worst_wait)}
end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, member)
  redis.call('EXPIRE', key, tonumber(ARGV[2 + 2 * i]) + 1)
end
return {0, "0"}
"""


class RedisQuotaStore:
    """Sliding-window quotas in Redis, shared by every replica that uses the same server and prefix.

    Check-and-count is one Lua script, which Redis runs atomically. ``now`` comes from the caller, so
    replicas need synchronised clocks (NTP); a skew of seconds shifts a window by that much. Keys
    expire on their own one window after their last call. (With Redis Cluster, every key of a call
    must hash to one slot; this store targets a single server or a primary with replicas.)

    Args:
        url: ``redis://127.0.0.1:6379/0`` (a password belongs in the URL; it is never logged).
        key_prefix: prepended to every key, so several gateways (or tests) can share a server.
        client: a ready ``redis.Redis`` instead of ``url`` (tests).
        socket_timeout: seconds per command.

    Raises:
        QuotaUnavailable: the ``redis`` package is not installed.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        key_prefix: str = "mcp-gateway:quota:",
        client: Any = None,
        socket_timeout: float = 2.0,
    ) -> None:
        try:
            import redis
        except ImportError:
            raise QuotaUnavailable(
                "quotas in redis need the `redis` extra (pip install mcp-gateway[redis])"
            ) from None
        self._redis_error: type[Exception] = redis.RedisError
        self._client = client or redis.Redis.from_url(
            url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout
        )
        self._prefix = key_prefix
        self._script = self._client.register_script(_CHECK_AND_HIT)

    def __repr__(self) -> str:
        return f"RedisQuotaStore(prefix={self._prefix!r})"

    def check_and_hit(self, checks: Sequence[QuotaCheck], now: float) -> None:
        """See ``QuotaStore.check_and_hit``."""
        if not checks:
            return
        args: list[str] = [repr(float(now)), secrets.token_hex(12)]
        for check in checks:
            args += [str(check.amount), str(check.seconds)]
        try:
            worst, wait = self._script(keys=[self._prefix + c.key for c in checks], args=args)
        except self._redis_error as exc:
            # Error text can include the server address; the class says enough.
            raise QuotaUnavailable(f"the quota store (redis) failed: {type(exc).__name__}") from exc
        if int(worst) > 0:
            raise checks[int(worst) - 1].exceeded(float(wait))

    def close(self) -> None:
        self._client.close()


def open_quota_store(settings: QuotaSettings, data_dir: Path) -> QuotaStore:
    """The configured quota store.

    Raises:
        QuotaUnavailable: it cannot be opened (or the ``redis`` package is missing).
    """
    if settings.store == "redis":
        return RedisQuotaStore(settings.redis_url, key_prefix=settings.key_prefix)
    path = settings.path if settings.path.is_absolute() else data_dir / settings.path
    return SQLiteQuotaStore(path)
