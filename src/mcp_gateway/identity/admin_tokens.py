"""Admin tokens: ``mga_<id>_<secret>`` in their own store (``admins.db``, or the ``admin_tokens``
table of a PostgreSQL schema), hashed like agent tokens (SHA-256 over a per-token salt and a 256-bit
secret, compared in constant time). They guard the admin API (``http/admin.py``) and the CLI's
approval decisions, and nothing else.
"""

from __future__ import annotations

import builtins
import re
from dataclasses import astuple, dataclass
from pathlib import Path

from mcp_gateway.identity.agents import PostgresTokenStore, SQLiteTokenStore, TokenStore

_TOKEN = re.compile(r"^mga_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True, slots=True)
class AdminPrincipal:
    """An authenticated admin: the name decisions are recorded under, and the token's public id."""

    name: str
    token_id: str


@dataclass(frozen=True, slots=True)
class AdminRecord:
    """An issued admin token, as ``admin list`` shows it (no secret, no hash)."""

    name: str
    token_id: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None


def admin_token_id_of(token: str) -> str | None:
    """The public id inside a well-formed admin token, else None."""
    match = _TOKEN.match(token)
    return match.group(1) if match else None


class AdminTokens(TokenStore):
    """Admin tokens (``mga_...``) over either database, shared by ``mcp-gateway admin`` and every
    running gateway (see ``TokenStore``)."""

    prefix = "mga"
    table = "admin_tokens"
    holder = "admin"
    malformed = "not an admin token"

    def create(self, name: str, *, expires_at: float | None = None) -> tuple[AdminRecord, str]:
        """Issue an admin token for ``name``; returns the record and the token (shown once).

        Raises:
            GatewayError: the name is invalid or the expiry is in the past.
        """
        record, token = self.issue(name, expires_at)
        return AdminRecord(*astuple(record)), token

    def verify(self, token: str) -> AdminPrincipal:
        """The admin holding ``token``.

        Raises:
            AuthError: malformed (an agent token is malformed here), unknown, expired or revoked.
            StoreError: the store cannot be read.
        """
        name, token_id = self._check(token)
        return AdminPrincipal(name=name, token_id=token_id)

    def list(self) -> builtins.list[AdminRecord]:  # type: ignore[override]
        return [AdminRecord(*astuple(record)) for record in super().list()]


class SQLiteAdminStore(AdminTokens, SQLiteTokenStore):
    """Admin tokens in ``admins.db`` in the data directory (the embedded default).

    Args:
        path: the database file.
        clock: the time source for creation, expiry and revocation.
    """


class PostgresAdminStore(AdminTokens, PostgresTokenStore):
    """Admin tokens in PostgreSQL (``admin_tokens`` in the schema), shared by replicas."""


def admin_store_path(data_dir: Path) -> Path:
    """Where admin tokens live: ``admins.db`` in the data directory."""
    return data_dir / "admins.db"
