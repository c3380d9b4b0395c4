"""Logging in and out of the console: an admin token, or an OAuth access token from the configured
identity provider; the person's role from ``console.roles``.

Every attempt is audited: a refusal as ``admin_auth_failure`` (as the admin API records one) with its
reason and the token's public id (never the token), through the audit log's failure recorder
(counted past the flood threshold per client); a login as ``console_login`` with the person, role
and how. The login form carries a one-time value also set
as a SameSite=Strict cookie, so no other site can log a browser in under its own token.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from mcp_gateway.console.sessions import Session
from mcp_gateway.console.web import COOKIE, PRE_COOKIE, Console, form, same_origin
from mcp_gateway.errors import AuditUnavailable, AuthError, GatewayError
from mcp_gateway.identity.admin_tokens import admin_token_id_of
from mcp_gateway.identity.agents import token_id_of
from mcp_gateway.identity.console import ConsoleRole
from mcp_gateway.identity.oauth import token_fingerprint
from mcp_gateway.types import AuditEvent

logger = logging.getLogger(__name__)
MAX_TOKEN_CHARS = 8192


class LoginRefused(Exception):
    """Why a login was refused (audited; the page shows one generic line)."""

    def __init__(self, reason: str, token_kind: str = "", token_id: str = "") -> None:
        super().__init__(reason)
        self.token_kind = token_kind
        self.token_id = token_id


def login_routes(console: Console) -> list[Route]:
    """``GET/POST {path}/login`` and ``POST {path}/logout``."""
    ctx = console.ctx

    async def identify(token: str) -> tuple[str, ConsoleRole, str, str]:
        """(person, role, via, token id) for ``token``; raises ``LoginRefused``."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise LoginRefused("missing or oversized token")
        if (admin_id := admin_token_id_of(token)) is not None:
            try:
                admin = await anyio.to_thread.run_sync(ctx.verify_admin, token)
            except AuthError as exc:
                raise LoginRefused(str(exc), "admin", admin_id) from None
            person, via, token_id = admin.name, "admin_token", admin.token_id
        elif token_id_of(token) is not None:
            raise LoginRefused(
                "an agent token cannot log in to the console", "agent", token_id_of(token) or ""
            )
        elif ctx.oauth is not None:
            try:
                verified = await ctx.oauth.verify(token)
            except AuthError as exc:
                raise LoginRefused(str(exc), "oauth", token_fingerprint(token)) from None
            person, via, token_id = verified.subject, "oauth", verified.principal.token_id
        else:
            raise LoginRefused("not an admin token (and no OAuth provider is configured)")
        role = ctx.settings.roles.get(person)
        if role is None:
            raise LoginRefused(f"`{person}` has no console role", via, token_id)
        return person, role, via, token_id

    async def audit_refusal(request: Request, refused: LoginRefused) -> None:
        client = request.client.host if request.client else ""
        detail: dict[str, Any] = {
            "reason": str(refused),
            "client": client,
            "path": request.url.path,
            "via": "console",
        }
        if refused.token_id:
            detail["token_kind"], detail["token_id"] = refused.token_kind, refused.token_id
        # The admin API's kind: one name for a refused admin login, counted by the flood recorder and
        # the ``auth_failures`` alert rule alike.
        event = AuditEvent(
            kind="admin_auth_failure", decision="deny", status="unauthenticated", detail=detail
        )
        try:
            await ctx.gateway.audit.failures.record(event, client)
        except AuditUnavailable:
            logger.error("audit unavailable while recording a refused console login")

    def login_page(request: Request, status: int = 200, message: str = "") -> Response:
        nonce = secrets.token_urlsafe(24)
        response = console.render(
            request,
            "login.html",
            None,
            status=status,
            nonce=nonce,
            message=message,
            oauth=ctx.oauth is not None,
        )
        console.set_cookie(request, response, PRE_COOKIE, nonce, 600)
        return response

    async def show(request: Request) -> Response:
        if await console.session_of(request) is not None:
            return RedirectResponse(console.url("/audit"), status_code=303)
        return login_page(request)

    async def submit(request: Request) -> Response:
        fields = await form(request)
        nonce = request.cookies.get(PRE_COOKIE, "")
        if (
            not same_origin(request)
            or not nonce
            or not secrets.compare_digest(nonce, fields.get("nonce", ""))
        ):
            await audit_refusal(request, LoginRefused("login form without its one-time value (cross-site?)"))
            return login_page(request, 403, "The login form expired; try again.")
        try:
            person, role, via, token_id = await identify(fields.get("token", "").strip())
        except LoginRefused as refused:
            await audit_refusal(request, refused)
            return login_page(request, 401, "Login refused.")
        client = request.client.host if request.client else ""
        detail = {"person": person, "role": role, "via": via, "token_id": token_id, "client": client}
        try:
            await ctx.gateway.audit.append(AuditEvent(kind="console_login", status="ok", detail=detail))
        except GatewayError:
            return login_page(request, 503, "The audit log is unavailable; nobody can log in meanwhile.")
        try:
            session_id, _ = await anyio.to_thread.run_sync(
                lambda: console.sessions.create(person, role, via=via, token_id=token_id)
            )
        except GatewayError:
            logger.exception("console session store failed at login")
            return login_page(request, 503, "The session store is unavailable; try again later.")
        response = RedirectResponse(console.url("/audit"), status_code=303)
        console.set_cookie(request, response, COOKIE, session_id, ctx.settings.session_seconds)
        response.delete_cookie(PRE_COOKIE, path=console.prefix)
        return response

    async def logout(request: Request, session: Session) -> Response:
        await anyio.to_thread.run_sync(console.sessions.end, request.cookies.get(COOKIE))
        response = RedirectResponse(console.url("/login"), status_code=303)
        response.delete_cookie(COOKIE, path=console.prefix)
        return response

    return [
        Route(console.url("/login"), show, methods=["GET"]),
        Route(console.url("/login"), submit, methods=["POST"]),
        Route(console.url("/logout"), console.guard("viewer", logout), methods=["POST"]),
    ]
