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
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mcp_gateway.errors import AuthError, GatewayError
from mcp_gateway.types import Clock, Principal, system_clock

AGENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TOKEN = re.compile(r"^mgw_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$")


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


class SQLiteTokenStore:
    """Bearer tokens ``<prefix>_<id>_<secret>`` for named holders, as salted hashes in one SQLite table
    (WAL), safe to share between the CLI and a running gateway. ``SQLiteAgentStore`` and the admin
    store (``admin.py``) are this with their own prefix and table.

    Args:
        path: the database file.
        clock: the time source for creation, expiry and revocation.
    """

    prefix = ""
    table = ""
    holder = "holder"
    """What a token names, in messages (``agent``, ``admin``)."""
    malformed = "malformed token"

    def __init__(self, path: Path, *, clock: Clock = system_clock) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._token = re.compile(rf"^{self.prefix}_([a-z0-9]{{12}})_([A-Za-z0-9_-]{{43}})$")
        self._clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=2000")
        # The table name is a class constant, never input.
        self._db.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} ("
            " token_id TEXT PRIMARY KEY, name TEXT NOT NULL, salt BLOB NOT NULL, hash BLOB NOT NULL,"
            " created_at REAL NOT NULL, expires_at REAL, revoked_at REAL)"
        )
        self._db.execute(f"CREATE INDEX IF NOT EXISTS {self.table}_name ON {self.table}(name)")

    def issue(self, name: str, expires_at: float | None) -> tuple[AgentRecord, str]:
        """Store a new token for ``name``; returns its record and the token (shown once).

        Raises:
            GatewayError: the name is invalid or the expiry is in the past.
        """
        if not AGENT_NAME.match(name):
            raise GatewayError(f"{self.holder} name `{name}` must match {AGENT_NAME.pattern}")
        now = self._clock()
        if expires_at is not None and expires_at <= now:
            raise GatewayError("expiry must be in the future")
        token_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        with self._lock:
            self._db.execute(
                f"INSERT INTO {self.table} VALUES (?, ?, ?, ?, ?, ?, NULL)",  # noqa: S608 - constant table
                (token_id, name, salt, _hash(salt, secret), now, expires_at),
            )
        return AgentRecord(name, token_id, now, expires_at, None), f"{self.prefix}_{token_id}_{secret}"

    def _check(self, token: str) -> tuple[str, str]:
        """``(name, token_id)`` of a live token.

        Raises:
            AuthError: malformed, unknown, expired or revoked (the message says which, never the token).
        """
        match = self._token.match(token)
        if match is None:
            raise AuthError(self.malformed)
        token_id, secret = match.groups()
        with self._lock:
            row = self._db.execute(
                f"SELECT name, salt, hash, expires_at, revoked_at FROM {self.table} WHERE token_id = ?",  # noqa: S608
                (token_id,),
            ).fetchone()
        # Compare even for unknown ids so timing does not reveal which ids exist.
        salt, stored = (row[1], row[2]) if row else (b"\0" * 16, b"\0" * 32)
        if not hmac.compare_digest(_hash(salt, secret), stored) or row is None:
            raise AuthError("unknown token")
        name, _, _, expires_at, revoked_at = row
        if revoked_at is not None:
            raise AuthError("revoked token")
        if expires_at is not None and expires_at <= self._clock():
            raise AuthError("expired token")
        return name, token_id

    def list(self) -> list[AgentRecord]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT name, token_id, created_at, expires_at, revoked_at FROM {self.table}"  # noqa: S608
                " ORDER BY name, created_at"
            ).fetchall()
        return [AgentRecord(*row) for row in rows]

    def revoke(self, name_or_token_id: str) -> int:
        """Revoke every live token of a holder, or one token by id; returns how many were revoked."""
        with self._lock:
            cursor = self._db.execute(
                f"UPDATE {self.table} SET revoked_at = ?"  # noqa: S608 - constant table
                " WHERE (name = ? OR token_id = ?) AND revoked_at IS NULL",
                (self._clock(), name_or_token_id, name_or_token_id),
            )
        return cursor.rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()


class SQLiteAgentStore(SQLiteTokenStore):
    """Agent tokens (``mgw_...``)."""

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
        """
        name, token_id = self._check(token)
        return Principal(agent=name, token_id=token_id)
