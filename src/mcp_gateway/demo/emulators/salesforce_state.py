"""The Salesforce emulator's state: the orgs it hosts, the tokens it issued, the token requests it saw.

A TEST/DEMO DOUBLE, not Salesforce; ``salesforce.py`` serves it over HTTP.
"""

from __future__ import annotations

import copy
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mcp_gateway.connectors.salesforce.ids import to_id18
from mcp_gateway.demo.emulators.salesforce_data import seed_records


@dataclass
class EmulatedOrg:
    """One org the emulator hosts, with the connected app that may get tokens for it.

    Attributes:
        client_id: the connected app's consumer key.
        client_secret: consumer secret for client_credentials (None: that flow is refused).
        username: the user JWT-bearer assertions must name in ``sub``.
        public_key_pem: verifies JWT-bearer assertions (None: that flow is refused).
        org_id: 18-character organization id (appears in tokens and the identity URL).
        token_ttl_seconds: how long an issued token stays valid.
        api_limit: daily API request limit; exceeding it gives 403 REQUEST_LIMIT_EXCEEDED.
        records: object → id → record; defaults to the seed data.
        api_usage: REST requests served so far (reported in ``Sforce-Limit-Info``).
    """

    client_id: str
    client_secret: str | None = None
    username: str | None = None
    public_key_pem: bytes | None = None
    org_id: str = to_id18("00D000000000001")
    token_ttl_seconds: float = 7200.0
    api_limit: int = 15000
    records: dict[str, dict[str, dict[str, Any]]] = field(default_factory=seed_records)
    api_usage: int = 0


@dataclass
class _Session:
    org: EmulatedOrg
    expires_at: float


class SalesforceEmulator:
    """The emulator's state; its methods are safe to call from the test thread while it serves."""

    def __init__(self, orgs: tuple[EmulatedOrg, ...], clock: Callable[[], float] = time.time) -> None:
        self.orgs = orgs
        self.clock = clock
        self.lock = threading.Lock()
        self.sessions: dict[str, _Session] = {}
        self.token_requests: list[dict[str, str]] = []
        """One entry per token request: grant_type, client_id, outcome (``ok`` or the OAuth error)."""

    def expire_tokens(self) -> None:
        """Invalidate every issued token (the next REST call gets 401 INVALID_SESSION_ID)."""
        with self.lock:
            self.sessions.clear()

    def record(self, sobject: str, record_id: str, org: int = 0) -> dict[str, Any]:
        """A copy of a stored record."""
        with self.lock:
            return copy.deepcopy(self.orgs[org].records[sobject][to_id18(record_id)])

    def set_fields(self, sobject: str, record_id: str, values: dict[str, Any], org: int = 0) -> None:
        """Change a record directly, as another Salesforce user would (no checks)."""
        with self.lock:
            self.orgs[org].records[sobject][to_id18(record_id)].update(values)

    def issue(self, org: EmulatedOrg) -> str:
        token = f"{org.org_id[:15]}!{secrets.token_urlsafe(48)}"
        with self.lock:
            self.sessions[token] = _Session(org, self.clock() + org.token_ttl_seconds)
        return token
