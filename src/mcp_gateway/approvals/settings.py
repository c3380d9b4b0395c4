"""``approvals:`` in gateway.yaml (a model only: importing it opens no store)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ApprovalSettings(BaseModel):
    """``approvals:`` in gateway.yaml.

    Attributes:
        store: ``sqlite`` (a file in the data directory) or ``postgres`` (replicas share it).
        path: the SQLite file, relative to ``data_dir``.
        dsn: the PostgreSQL connection string (required for ``postgres``; may be long-lived config,
            so keep it out of logs: errors never show it).
        schema_name: the PostgreSQL schema (``schema:`` in YAML).
        ttl_seconds: how long a pending request, then a granted approval, stays usable (a policy
            grant's ``approval.ttl_seconds`` overrides it).
        webhook_url: a Slack-compatible incoming webhook told about each new request; ``secret://NAME``
            keeps the URL (a credential) in the vault. None: no notification.
        allow_private_network: let the webhook reach loopback/private addresses (off: SSRF guard).
        notify_timeout_seconds: per attempt; a failed notification is retried once, then logged.
        min_approvers: distinct admins who must approve a call before it runs (2: the two-person
            rule). A grant's ``approval.min_approvers`` can ask for more, never fewer. The requesting
            agent never counts, and one admin counts once.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    store: Literal["sqlite", "postgres"] = "sqlite"
    path: Path = Path("approvals.db")
    dsn: str | None = None
    schema_name: str = Field(default="mcp_gateway", alias="schema")
    ttl_seconds: float = Field(default=3600, gt=0)
    webhook_url: str | None = None
    allow_private_network: bool = False
    notify_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    min_approvers: int = Field(default=1, ge=1, le=10, strict=True)

    @model_validator(mode="after")
    def _dsn_for_postgres(self) -> ApprovalSettings:
        if self.store == "postgres" and not self.dsn:
            raise ValueError("approvals: store `postgres` needs a `dsn`")
        if self.webhook_url is not None and not self.webhook_url.startswith(
            ("https://", "http://", "secret://")
        ):
            raise ValueError("approvals: webhook_url must be an http(s) URL or a secret://NAME reference")
        return self
