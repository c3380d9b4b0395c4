"""Bearer authentication for ``/mcp``: agent tokens or OAuth access tokens, every failure audited.

``AuthMiddleware`` sits in front of the MCP app (both front doors, ``modern.py`` and ``legacy.py``).
On success the caller is in ``scope["state"][PRINCIPAL_KEY]``; on failure the answer
is 401 (or 403 for missing scopes) with ``WWW-Authenticate: Bearer ... resource_metadata=...`` (RFC 9728).
"""

from __future__ import annotations

import json
import logging
from typing import Final

import anyio
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_gateway.audit.log import AuditLog
from mcp_gateway.errors import AuditUnavailable, AuthError, StoreError
from mcp_gateway.http.headers import headers_of
from mcp_gateway.identity.agents import AgentStore, PostgresAgentStore, token_id_of
from mcp_gateway.identity.oauth import OAuthVerifier, VerifiedToken, is_agent_token, token_fingerprint
from mcp_gateway.types import AuditEvent, Principal

logger = logging.getLogger(__name__)

PRINCIPAL_KEY: Final = "mcp_gateway.principal"
"""Where ``AuthMiddleware`` leaves the authenticated ``Principal`` in ``scope["state"]``."""
_USERS_KEPT: Final = 1024


class AuthMiddleware:
    """Bearer authentication for ``/mcp``; every failure is audited and answered with 401.

    ``mgw_`` tokens go to the agent store; any other token goes to the OAuth verifier when one is
    configured (else it is refused). An OAuth token without ``oauth.required_scopes`` is answered
    with 403 ``insufficient_scope``. On success it sets ``scope["user"]`` to the SDK's
    ``AuthenticatedUser`` so the session table (``session.py``) binds each ``Mcp-Session-Id`` to the
    credential that opened it: an agent token by its id, an OAuth token by (agent, issuer, subject),
    so a refreshed token keeps its session and another caller's does not.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        agents: AgentStore,
        audit: AuditLog,
        metadata_url: str,
        oauth: OAuthVerifier | None = None,
    ) -> None:
        self.app = app
        self.agents = agents
        # A store across the network is asked off the event loop (a slow or unreachable database must
        # not stall every other request); a verification it remembers is answered at once.
        self._remote = agents if isinstance(agents, PostgresAgentStore) else None
        self.audit = audit
        self.metadata_url = metadata_url
        self.oauth = oauth
        # The SDK's user of each agent-token credential (a pydantic model built per request otherwise).
        # Filled only after the token verified, so a revoked token is refused before this is read.
        self._users: dict[tuple[str, str], AuthenticatedUser] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = headers_of(scope)
        header = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        oauth = self.oauth if token and not is_agent_token(token) else None
        verified: VerifiedToken | None = None
        try:
            if scheme.lower() != "bearer" or not token:
                raise AuthError("missing bearer token")
            if oauth is not None:
                verified = await oauth.verify(token)
                principal = verified.principal
            elif self._remote is not None:
                remembered = self._remote.verify_remembered(token)
                if remembered is None:
                    remembered = await anyio.to_thread.run_sync(self._remote.verify, token)
                principal = remembered
            else:
                principal = self.agents.verify(token)
        except AuthError as exc:
            # An OAuth token is named by a one-way fingerprint: never the token, never its unverified claims.
            token_id = token_fingerprint(token) if oauth is not None else token_id_of(token) or ""
            await self._audit_failure(str(exc), token_id, scope, oauth=oauth is not None)
            await self._unauthorized(send, str(exc))
            return
        except StoreError as exc:
            # The token store cannot answer (a shared database down): nobody is let in, and the caller
            # is told to retry rather than that its token is bad.
            logger.error("agent token store unavailable: %s", exc)
            await self._unavailable(send)
            return
        if verified is not None and oauth is not None:
            if not oauth.required_scopes <= principal.scopes:
                # Authenticated but short of the required scopes: forbidden, not unauthenticated.
                await self._audit_failure(
                    "insufficient scope",
                    principal.token_id,
                    scope,
                    oauth=True,
                    agent=principal.agent,
                    status="forbidden",
                )
                await self._insufficient_scope(send, oauth)
                return
            access = AccessToken(
                token=principal.token_id,
                client_id=principal.agent,
                scopes=sorted(principal.scopes),
                expires_at=verified.expires_at,
                resource=oauth.audience,
                subject=verified.subject,
                claims={"iss": verified.issuer},
            )
            scope["user"] = AuthenticatedUser(access)
        else:
            scope["user"] = self._agent_user(principal)
        scope.setdefault("state", {})[PRINCIPAL_KEY] = principal
        if b"mcp-session-id" not in headers:
            await self.app(scope, receive, send)
            return
        # A session this credential did not open (or that ended) is answered 404 before any handler
        # runs; watch for it so a replayed session id is on the record before the answer goes.

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 404:
                await self._audit_failure(
                    "session not found for this credential",
                    principal.token_id,
                    scope,
                    agent=principal.agent,
                    status="session_refused",
                )
            await send(message)

        await self.app(scope, receive, watch)

    def _agent_user(self, principal: Principal) -> AuthenticatedUser:
        key = (principal.token_id, principal.agent)
        user = self._users.get(key)
        if user is None:
            if len(self._users) >= _USERS_KEPT:
                self._users.clear()
            access = AccessToken(
                token=principal.token_id, client_id=principal.agent, scopes=[], subject=principal.token_id
            )
            user = self._users[key] = AuthenticatedUser(access)
        return user

    async def _audit_failure(
        self,
        reason: str,
        token_id: str,
        scope: Scope,
        *,
        oauth: bool = False,
        agent: str = "",
        status: str = "unauthenticated",
    ) -> None:
        client = scope.get("client")
        detail = {"reason": reason, "token_id": token_id, "client": client[0] if client else ""}
        if oauth:
            detail["source"] = "oauth"
        event = AuditEvent(
            kind="auth_failure",
            agent=agent,
            decision="deny",
            status=status,
            detail=detail,
        )
        try:
            await self.audit.failures.record(event, detail["client"])
        except AuditUnavailable:
            logger.error("audit unavailable while recording an authentication failure")

    def _scope_param(self, oauth: OAuthVerifier | None) -> str:
        # Scope tokens are validated at config load (no quotes or spaces), so they are safe here.
        required = " ".join(sorted(oauth.required_scopes)) if oauth is not None else ""
        return f'scope="{required}", ' if required else ""

    async def _insufficient_scope(self, send: Send, oauth: OAuthVerifier) -> None:
        body = json.dumps({"error": "insufficient_scope", "error_description": "insufficient scope"}).encode()
        challenge = (
            f'Bearer error="insufficient_scope", {self._scope_param(oauth)}'
            f'resource_metadata="{self.metadata_url}"'
        )
        await self._send_challenge(send, 403, body, challenge)

    async def _unauthorized(self, send: Send, description: str) -> None:
        body = json.dumps({"error": "invalid_token", "error_description": description}).encode()
        challenge = f'Bearer error="invalid_token", error_description="{description}", ' + (
            f'{self._scope_param(self.oauth)}resource_metadata="{self.metadata_url}"'
        )
        await self._send_challenge(send, 401, body, challenge)

    async def _unavailable(self, send: Send) -> None:
        body = json.dumps(
            {"error": "temporarily_unavailable", "error_description": "the token store cannot be reached"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", b"5"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _send_challenge(self, send: Send, status: int, body: bytes, challenge: str) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", challenge.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
