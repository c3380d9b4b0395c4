"""Quotas: at most N calls in any sliding window (``3/hour``), per (agent, tool) and per agent overall.

A call is checked against every quota that applies to it and counted against all of them only if
none refuses: a refused call uses up nothing. Each store does that check-then-count atomically, so
concurrent calls (threads, processes, replicas) cannot slip past a quota together.

Windows slide (a log of call times per key), so ``3/hour`` means three calls in any 3,600 seconds,
not three per clock hour. Each (scope, quota) pair has its own key: changing a quota's text in policy
starts it afresh.

    SQLiteQuotaStore  default; a file in the data directory, so a restart resets nothing
    RedisQuotaStore   replicas share one count; one Lua script per call makes check-and-count atomic

Both also answer an admin (``QuotaAdmin``): how much of each quota is used, and a reset of chosen
quotas (``mcp-gateway quota show`` / ``quota reset``). ``open_quota_admin(..., read_only=True)``
never creates a store.

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

from mcp_gateway.quotas.model import QuotaCheck, QuotaUnavailable, QuotaUsage, usage_of
from mcp_gateway.quotas.settings import QuotaSettings
from mcp_gateway.storage.secret_file import SecretFileError, read_secret_file

__all__ = [
    "QuotaAdmin",
    "QuotaStore",
    "RedisQuotaStore",
    "SQLiteQuotaStore",
    "open_quota_admin",
    "open_quota_store",
]


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


class QuotaAdmin(QuotaStore, Protocol):
    """A quota store as an admin sees it."""

    def usage(self, now: float) -> list[QuotaUsage]:
        """Every quota with a call in its window at ``now``, by key.

        Raises:
            QuotaUnavailable: the store cannot be read.
        """
        ...

    def reset(self, keys: Sequence[str]) -> int:
        """Forget every counted call of the quotas ``keys``; how many of them held any.

        Raises:
            QuotaUnavailable: the store cannot be written.
        """
        ...


class SQLiteQuotaStore:
    """A sliding-window log of call times in SQLite (WAL, ``synchronous=FULL``).

    At most ``amount`` times are kept per key (a refused call adds none), so the table stays small.

    Args:
        path: the database file (``quotas.db`` in the data directory).
        read_only: open an existing file for reading only (never create or change it).

    Raises:
        QuotaUnavailable: the file cannot be opened or initialised (``read_only``: or does not exist).
    """

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()
        if read_only:
            if not self._path.is_file():
                raise QuotaUnavailable(
                    f"no quota store at `{self._path}`: no call was counted against a quota with this config"
                )
            try:
                self._db = sqlite3.connect(
                    f"{self._path.resolve().as_uri()}?mode=ro",
                    uri=True,
                    timeout=10.0,
                    check_same_thread=False,
                )
            except sqlite3.Error as exc:
                raise QuotaUnavailable(f"cannot open the quota store: {type(exc).__name__}") from exc
            return
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

    def usage(self, now: float) -> list[QuotaUsage]:
        """See ``QuotaAdmin.usage``."""
        times: dict[str, list[float]] = {}
        with self._lock:
            try:
                rows = self._db.execute("SELECT key, ts FROM quota_hits ORDER BY key").fetchall()
            except sqlite3.Error as exc:
                raise QuotaUnavailable(f"cannot read the quota store: {type(exc).__name__}") from exc
        for key, ts in rows:
            times.setdefault(key, []).append(ts)
        found = (usage_of(key, hits, now) for key, hits in times.items())
        return [usage for usage in found if usage is not None]

    def reset(self, keys: Sequence[str]) -> int:
        """See ``QuotaAdmin.reset``."""
        held = 0
        with self._tx() as db:
            for key in keys:
                held += db.execute("DELETE FROM quota_hits WHERE key = ?", (key,)).rowcount > 0
        return held

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
        url: ``redis://127.0.0.1:6379/0`` (never logged: it may hold a password).
        password: the Redis password (from ``quotas.redis_password_file``), or None.
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
        password: str | None = None,
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
            url, password=password, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout
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

    def usage(self, now: float) -> list[QuotaUsage]:
        """See ``QuotaAdmin.usage`` (reads only: SCAN, then each key's calls still in its window)."""
        found: list[QuotaUsage] = []
        try:
            for raw in self._client.scan_iter(match=_glob_escape(self._prefix) + "*", count=500):
                name = raw.decode() if isinstance(raw, bytes) else str(raw)
                hits: Any = self._client.zrange(name, 0, -1, withscores=True)  # [(member, score)]
                usage = usage_of(name[len(self._prefix) :], [float(score) for _, score in hits], now)
                if usage is not None:
                    found.append(usage)
        except self._redis_error as exc:
            raise QuotaUnavailable(f"the quota store (redis) cannot be read: {type(exc).__name__}") from exc
        return sorted(found, key=lambda usage: usage.key)

    def reset(self, keys: Sequence[str]) -> int:
        """See ``QuotaAdmin.reset``."""
        if not keys:
            return 0
        try:
            return int(self._client.delete(*[self._prefix + key for key in keys]))
        except self._redis_error as exc:
            raise QuotaUnavailable(f"the quota store (redis) failed: {type(exc).__name__}") from exc

    def close(self) -> None:
        self._client.close()


def _glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis glob (``SCAN MATCH``)."""
    return "".join(f"\\{ch}" if ch in "*?[]\\" else ch for ch in text)


def open_quota_admin(settings: QuotaSettings, data_dir: Path, *, read_only: bool = False) -> QuotaAdmin:
    """The configured quota store, for an admin.

    Args:
        read_only: never create the store (SQLite: open an existing file read-only).

    Raises:
        QuotaUnavailable: it cannot be opened (``read_only``: or there is none yet).
    """
    if settings.store == "redis":
        return _redis_store(settings, data_dir)
    path = settings.path if settings.path.is_absolute() else data_dir / settings.path
    return SQLiteQuotaStore(path, read_only=read_only)


def open_quota_store(settings: QuotaSettings, data_dir: Path) -> QuotaStore:
    """The configured quota store.

    Raises:
        QuotaUnavailable: it cannot be opened (or the ``redis`` package is missing).
    """
    if settings.store == "redis":
        return _redis_store(settings, data_dir)
    path = settings.path if settings.path.is_absolute() else data_dir / settings.path
    return SQLiteQuotaStore(path)


def _redis_store(settings: QuotaSettings, data_dir: Path) -> RedisQuotaStore:
    password = None
    if (file := settings.redis_password_file) is not None:
        password = read_password_file(file if file.is_absolute() else data_dir / file)
    return RedisQuotaStore(settings.redis_url, password=password, key_prefix=settings.key_prefix)


def read_password_file(path: Path) -> str:
    """The password in ``path`` (``quotas.redis_password_file``; ``storage/secret_file.py``).

    Raises:
        QuotaUnavailable: the file is unreadable, not a regular file, open to other users (mode
            beyond 0640) or empty. The message names the path and mode, never the content.
    """
    try:
        return read_secret_file(path, "quotas.redis_password_file")
    except SecretFileError as exc:
        raise QuotaUnavailable(str(exc)) from None
