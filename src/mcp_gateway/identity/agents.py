"""Agent identities: bearer tokens the gateway issues, stored only as salted hashes.

A token reads ``mgw_<id>_<secret>``. The id is public (it names the credential in the audit log and
in ``agents list``); the 256-bit secret is shown once at creation and stored as
SHA-256(salt || secret). A slow KDF buys nothing for a uniformly random 256-bit secret, and a fast
hash keeps authentication off the hot path's budget.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mcp_gateway.errors import AuthError, GatewayError
from mcp_gateway.storage.database import Database, PostgresDatabase, SQLiteDatabase
from mcp_gateway.storage.migrate import Migration
from mcp_gateway.types import Clock, Principal, system_clock

AGENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TOKEN = re.compile(r"^mgw_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$")
DEFAULT_CACHE_SECONDS = 0.5
"""How long a PostgreSQL token store reuses a positive verification (revocation reaches every replica
within this; the issue asks for under one second)."""
_CACHE_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class AgentRecord:
    """An issued credential, as ``agents list`` shows it (no secret, no hash)."""

    name: str
    token_id: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None


class AgentStore(Protocol):
    """Issues, verifies and revokes agent tokens."""

    def create(self, name: str, *, expires_at: float | None = None) -> tuple[AgentRecord, str]: ...

    def verify(self, token: str) -> Principal: ...

    def list(self) -> list[AgentRecord]: ...

    def revoke(self, name_or_token_id: str) -> int: ...


def token_id_of(token: str) -> str | None:
    """The public id inside a well-formed token, else None (for audit records of failures)."""
    match = _TOKEN.match(token)
    return match.group(1) if match else None


def _hash(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode("ascii")).digest()


# One text per statement for both dialects: {t} is the table, {i} its name index, %s the parameters.
TOKEN_QUERIES = {
    "create_table": "CREATE TABLE IF NOT EXISTS {t} (token_id TEXT PRIMARY KEY, name TEXT NOT NULL,"
    " salt {blob} NOT NULL, hash {blob} NOT NULL, created_at {real} NOT NULL, expires_at {real},"
    " revoked_at {real})",
    "create_index": "CREATE INDEX IF NOT EXISTS {i} ON {t} (name)",
    "insert": "INSERT INTO {t} (token_id, name, salt, hash, created_at, expires_at, revoked_at)"
    " VALUES (%s, %s, %s, %s, %s, %s, NULL)",
    "check": "SELECT name, salt, hash, expires_at, revoked_at FROM {t} WHERE token_id = %s",
    "list": "SELECT name, token_id, created_at, expires_at, revoked_at FROM {t} ORDER BY name, created_at",
    "revoke": "UPDATE {t} SET revoked_at = %s WHERE (name = %s OR token_id = %s) AND revoked_at IS NULL",
}


def token_migrations(table: str) -> tuple[Migration, ...]:
    """The PostgreSQL migrations of a token table (``agent_tokens`` or ``admin_tokens``)."""
    names = {"t": table}, {"i": f"{table}_name"}
    return (
        Migration(
            1,
            f"create {table}",
            (TOKEN_QUERIES["create_table"], TOKEN_QUERIES["create_index"]),
            tables=names[0],
            names=names[1],
        ),
    )


def _check_cache(cache_seconds: float) -> None:
    if not 0 <= cache_seconds < 1:
        raise GatewayError("a token verification may be cached for less than one second only")


class TokenStore:
    """Bearer tokens ``<prefix>_<id>_<secret>`` for named holders, as salted hashes in one table of a
    ``Database`` (a SQLite file or a PostgreSQL schema), safe to share between the CLI, a running
    gateway and its replicas. The agent and admin stores are this with their own prefix and table.

    A positive verification may be remembered for ``cache_seconds`` (< 1 s), so a busy gateway on
    PostgreSQL asks the database about each token at most about once a second: a revocation through
    another process or replica is refused everywhere within that time, and one through this store
    at once. Expiry is checked on every call. The cache is keyed by a hash of the token, never the
    token itself.

    Args:
        db: where the table lives (its table is created on a SQLite file; PostgreSQL is migrated by
            the caller, see the ``Postgres*Store`` classes).
        clock: the time source for creation, expiry and revocation.
        cache_seconds: how long a positive verification is reused (0: never; must be < 1).
    """

    prefix = ""
    table = ""
    holder = "holder"
    """What a token names, in messages (``agent``, ``admin``)."""
    malformed = "malformed token"

    def __init__(self, db: Database, *, clock: Clock = system_clock, cache_seconds: float = 0.0) -> None:
        _check_cache(cache_seconds)
        self._db = db
        self._token = re.compile(rf"^{self.prefix}_([a-z0-9]{{12}})_([A-Za-z0-9_-]{{43}})$")
        self._clock = clock
        self._q = db.prepare(TOKEN_QUERIES, {"t": self.table}, {"i": f"{self.table}_name"})
        self._cache_seconds = cache_seconds
        self._cache: dict[bytes, tuple[float, str, str, float | None]] = {}
        self._cache_lock = threading.Lock()

    def _create_tables(self) -> None:
        with self._db.tx() as cur:
            cur.execute(self._q["create_table"])
            cur.execute(self._q["create_index"])

    def issue(self, name: str, expires_at: float | None) -> tuple[AgentRecord, str]:
        """Store a new token for ``name``; returns its record and the token (shown once).

        Raises:
            GatewayError: the name is invalid or the expiry is in the past.
            StoreError: the store cannot be written.
        """
        if not AGENT_NAME.match(name):
            raise GatewayError(f"{self.holder} name `{name}` must match {AGENT_NAME.pattern}")
        now = self._clock()
        if expires_at is not None and expires_at <= now:
            raise GatewayError("expiry must be in the future")
        token_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        with self._db.tx() as cur:
            cur.execute(self._q["insert"], (token_id, name, salt, _hash(salt, secret), now, expires_at))
        return AgentRecord(name, token_id, now, expires_at, None), f"{self.prefix}_{token_id}_{secret}"

    def _remembered(self, token: str) -> tuple[str, str] | None:
        """``(name, token_id)`` from a verification younger than ``cache_seconds``, without asking the
        database; None when there is none.

        Raises:
            AuthError: the remembered token has expired since.
        """
        if not self._cache_seconds or not token.isascii():
            return None
        key = hashlib.sha256(token.encode("ascii")).digest()
        with self._cache_lock:
            hit = self._cache.get(key)
        if hit is None or time.monotonic() >= hit[0]:
            return None
        if hit[3] is not None and hit[3] <= self._clock():
            raise AuthError("expired token")
        return hit[1], hit[2]

    def _check(self, token: str) -> tuple[str, str]:
        """``(name, token_id)`` of a live token.

        Raises:
            AuthError: malformed, unknown, expired or revoked (the message says which, never the token).
            StoreError: the store cannot be read.
        """
        hit = self._remembered(token)
        if hit is not None:
            return hit
        name, token_id, expires_at = self._lookup(token)
        if self._cache_seconds:
            key = hashlib.sha256(token.encode("ascii")).digest()
            with self._cache_lock:
                if len(self._cache) >= _CACHE_LIMIT:
                    self._cache.clear()
                self._cache[key] = (time.monotonic() + self._cache_seconds, name, token_id, expires_at)
        return name, token_id

    def _lookup(self, token: str) -> tuple[str, str, float | None]:
        """``(name, token_id, expires_at)`` of a live token, asked of the database.

        Raises:
            AuthError: malformed, unknown, expired or revoked (the message says which, never the token).
            StoreError: the store cannot be read.
        """
        match = self._token.match(token)
        if match is None:
            raise AuthError(self.malformed)
        token_id, secret = match.groups()
        rows = self._db.read(self._q["check"], (token_id,))
        row = rows[0] if rows else None
        # Compare even for unknown ids so timing does not reveal which ids exist.
        salt, stored = (bytes(row[1]), bytes(row[2])) if row else (b"\0" * 16, b"\0" * 32)
        if not hmac.compare_digest(_hash(salt, secret), stored) or row is None:
            raise AuthError("unknown token")
        name, _, _, expires_at, revoked_at = row
        if revoked_at is not None:
            raise AuthError("revoked token")
        if expires_at is not None and expires_at <= self._clock():
            raise AuthError("expired token")
        return name, token_id, expires_at

    def live(self, token_id: str) -> bool:
        """Whether token ``token_id`` was issued and is neither revoked nor expired (a session opened
        with it, such as a console login, ends with it).

        Raises:
            StoreError: the store cannot be read.
        """
        rows = self._db.read(self._q["check"], (token_id,))
        if not rows:
            return False
        expires_at, revoked_at = rows[0][3], rows[0][4]
        return revoked_at is None and (expires_at is None or expires_at > self._clock())

    def list(self) -> list[AgentRecord]:
        """Every token issued (ids and dates; never a secret or a hash), by name then age."""
        return [AgentRecord(*row) for row in self._db.read(self._q["list"])]

    def revoke(self, name_or_token_id: str) -> int:
        """Revoke every live token of a holder, or one token by id; returns how many were revoked.

        Raises:
            StoreError: the store cannot be written.
        """
        with self._db.tx() as cur:
            cur.execute(self._q["revoke"], (self._clock(), name_or_token_id, name_or_token_id))
            count = cur.rowcount
        with self._cache_lock:
            self._cache.clear()  # this process's own revocation counts at once
        return count

    def close(self) -> None:
        self._db.close()


class SQLiteTokenStore(TokenStore):
    """A ``TokenStore`` in a SQLite file (WAL), created with its table if missing.

    Args:
        path: the database file.
        clock: the time source for creation, expiry and revocation.
    """

    def __init__(self, path: Path, *, clock: Clock = system_clock) -> None:
        super().__init__(SQLiteDatabase(path, what=f"{self.holder} token"), clock=clock)
        self._create_tables()
        # Verified tokens (by a hash of the token, never the token), each with the stamp it is good
        # for: the file's ``PRAGMA data_version`` (moves when any other connection or process
        # commits, e.g. ``agents revoke``) and this store's own revocations.
        self._verified: dict[bytes, tuple[tuple[int, int], str, str, float | None]] = {}
        self._revocations = 0

    def _check(self, token: str) -> tuple[str, str]:
        # One `PRAGMA data_version` instead of a SELECT and a salted hash per request; a revocation
        # anywhere is still refused on the very next request, and expiry is checked every time.
        key = hashlib.sha256(token.encode("ascii")).digest() if token.isascii() else None
        stamp = (self._db.read("PRAGMA data_version")[0][0], self._revocations)
        hit = self._verified.get(key) if key is not None else None
        if hit is not None and hit[0] == stamp:
            if hit[3] is not None and hit[3] <= self._clock():
                raise AuthError("expired token")
            return hit[1], hit[2]
        name, token_id, expires_at = self._lookup(token)
        if key is not None:
            if len(self._verified) >= _CACHE_LIMIT:
                self._verified.clear()
            # Stamped as read before the lookup: a revocation committed since makes this a miss.
            self._verified[key] = (stamp, name, token_id, expires_at)
        return name, token_id

    def revoke(self, name_or_token_id: str) -> int:
        count = super().revoke(name_or_token_id)
        # After the commit: a verification stamped before it (its lookup maybe older) is not reused.
        self._revocations += 1
        self._verified.clear()
        return count


class PostgresTokenStore(TokenStore):
    """A ``TokenStore`` in a PostgreSQL schema, shared by replicas; migrated on open.

    Args:
        dsn: a libpq connection string (never shown in messages).
        schema: the schema holding the table.
        clock: the time source for creation, expiry and revocation.
        create: migrate the schema (create it and the table if missing); False (read-only commands)
            refuses a schema that was never set up instead.
        cache_seconds: how long a positive verification is reused (< 1 s; see ``TokenStore``).

    Raises:
        StoreError: the database cannot be reached or set up, or (``create`` false) has no such store.
    """

    def __init__(
        self,
        dsn: str,
        schema: str = "mcp_gateway",
        *,
        clock: Clock = system_clock,
        create: bool = True,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
    ) -> None:
        _check_cache(cache_seconds)  # before a connection is opened
        db = PostgresDatabase(dsn, schema, what=f"{self.holder} token")
        db.setup(self.table, token_migrations(self.table), create=create)
        super().__init__(db, clock=clock, cache_seconds=cache_seconds)


class AgentTokens(TokenStore):
    """Agent tokens (``mgw_...``): the ``AgentStore`` over either database."""

    prefix = "mgw"
    table = "agent_tokens"
    holder = "agent"

    def create(self, name: str, *, expires_at: float | None = None) -> tuple[AgentRecord, str]:
        """Issue a token for agent ``name``; returns the record and the token (shown once).

        Raises:
            GatewayError: the name is invalid or the expiry is in the past.
        """
        return self.issue(name, expires_at)

    def verify(self, token: str) -> Principal:
        """Return the principal for ``token``.

        Raises:
            AuthError: malformed, unknown, expired or revoked (the message says which, never the token).
            StoreError: the store cannot be read.
        """
        name, token_id = self._check(token)
        return Principal(agent=name, token_id=token_id)

    def verify_remembered(self, token: str) -> Principal | None:
        """The principal of a token verified less than ``cache_seconds`` ago, without touching the
        database (None: ask ``verify``). Lets a caller on an event loop keep a database round trip off
        the loop.

        Raises:
            AuthError: the remembered token has expired since.
        """
        hit = self._remembered(token)
        return Principal(agent=hit[0], token_id=hit[1]) if hit is not None else None


class SQLiteAgentStore(AgentTokens, SQLiteTokenStore):
    """Agent tokens in ``agents.db`` (the embedded default)."""


class PostgresAgentStore(AgentTokens, PostgresTokenStore):
    """Agent tokens in PostgreSQL (``agent_tokens`` in the schema), shared by replicas."""
