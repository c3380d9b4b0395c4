"""What the console reads and changes: the running gateway's parts, passed in by the composition root."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mcp_gateway.alerts.board import AlertBoard
from mcp_gateway.approvals.store import ApprovalStore
from mcp_gateway.console.sessions import SessionStore
from mcp_gateway.core.gateway import Gateway
from mcp_gateway.identity.admin_tokens import AdminPrincipal
from mcp_gateway.identity.agents import AgentStore
from mcp_gateway.identity.console import ConsoleSettings
from mcp_gateway.identity.oauth import OAuthVerifier
from mcp_gateway.pins.model import PinStore
from mcp_gateway.quotas.model import QuotaUsage
from mcp_gateway.types import AuditSink, Clock, system_clock


@dataclass
class ConsoleContext:
    """The parts of a running gateway the console pages use.

    Attributes:
        settings: the ``console:`` section.
        gateway: the governed call path (its audit log, policy holder and pin guard).
        sink: the audit store (read for pages; written through ``gateway.audit``).
        agents: the agent-token store (listed; revoked by admins).
        verify_admin: admin token → admin (``AdminTokens.verify``); raises ``AuthError``.
        admin_token_live: admin token id → still live (``AdminTokens.live``): a session opened with a
            token that was revoked or expired since ends; None: not checked.
        sessions: the console's session store (shared by replicas when ``store:`` is set).
        approvals: the approval store, or None (then the approvals page says so).
        pins: the pin store, or None.
        quota_usage: now → usage of every quota with calls in its window, or None.
        oauth: the OAuth verifier for people's logins with an identity provider's token (audience
            ``console.oauth_audience``, no agent claim needed), or None.
        public_key_path: the exported audit-signing public keys (for checkpoint signatures).
        mirror_path: the append-only checkpoint mirror file, or None.
        alerts: the gateway's alert board (banner, alerts page, acknowledge), or None.
        clock: the time source.
    """

    settings: ConsoleSettings
    gateway: Gateway
    sink: AuditSink
    agents: AgentStore
    verify_admin: Callable[[str], AdminPrincipal]
    sessions: SessionStore
    approvals: ApprovalStore | None = None
    pins: PinStore | None = None
    quota_usage: Callable[[float], Sequence[QuotaUsage]] | None = None
    oauth: OAuthVerifier | None = None
    public_key_path: Path | None = None
    mirror_path: Path | None = None
    alerts: AlertBoard | None = None
    admin_token_live: Callable[[str], bool] | None = None
    clock: Clock = field(default=system_clock)
