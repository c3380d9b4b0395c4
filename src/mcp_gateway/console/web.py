"""The console's HTTP plumbing: templates, security headers, sessions in cookies, CSRF, role checks.

Every page is rendered by Jinja2 with autoescaping on (no ``|safe`` anywhere), under a strict
Content-Security-Policy: scripts and styles only from the console's own static files (no inline
script or style), no framing, no plugins, forms posting only to the console. A state change is a
POST that carries the session's CSRF token (a form field, or ``X-CSRF-Token`` from ``fetch``); the
session cookie is HttpOnly, SameSite=Strict, and Secure when the request came over https. Every
request reads its session from the store (``sessions.py``), so a logout or an expiry holds on every
replica at once, and the role is the one ``console.roles`` gives the person now.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import anyio
import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_gateway.console.chain import Verifier
from mcp_gateway.console.context import ConsoleContext
from mcp_gateway.console.sessions import Session, SessionStore
from mcp_gateway.errors import GatewayError
from mcp_gateway.identity.console import ConsoleRole

logger = logging.getLogger(__name__)
HERE = Path(__file__).parent
COOKIE = "mgw_console"
PRE_COOKIE = "mgw_console_login"
MAX_FORM_BYTES = 64 * 1024

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self';"
    " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: Mapping[bytes, bytes] = {
    b"content-security-policy": CSP.encode(),
    b"x-frame-options": b"DENY",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"same-origin",
    b"cross-origin-opener-policy": b"same-origin",
    b"cache-control": b"no-store",
}


class SecurityHeaders:
    """Sets the console's security headers on every response (pages, static files, errors)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in SECURITY_HEADERS]
                message = {**message, "headers": kept + list(SECURITY_HEADERS.items())}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def when(ts: float | None) -> str:
    """Epoch seconds as ``2026-01-02 03:04:05Z`` (empty for None)."""
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def pretty(value: Any) -> str:
    """A JSON value as indented text (escaped by the template like any other text)."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def environment() -> jinja2.Environment:
    """The template environment: the package's templates, autoescaped, undefined names an error."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["when"] = when
    env.filters["pretty"] = pretty
    return env


class Forbidden(Exception):
    """A logged-in person lacks the role for an action (403)."""


Page = Callable[[Request, Session], Awaitable[Response]]


class Console:
    """Shared by every page: the gateway's parts, the sessions, the templates."""

    def __init__(self, ctx: ConsoleContext) -> None:
        self.ctx = ctx
        self.prefix = ctx.settings.path
        self.sessions: SessionStore = ctx.sessions
        self.env = environment()
        self.verifier = Verifier(
            ctx.sink, ctx.public_key_path, ctx.mirror_path, ctx.gateway.audit.append, ctx.clock
        )

    async def flash(self, session: Session, message: str, ok: bool) -> None:
        """A one-line outcome the person's next page shows once (on whichever replica serves it)."""
        await anyio.to_thread.run_sync(self.sessions.set_flash, session, message, ok)

    def url(self, path: str = "") -> str:
        return f"{self.prefix}{path}"

    def render(
        self, request: Request, template: str, session: Session | None, status: int = 200, **values: Any
    ) -> HTMLResponse:
        board = self.ctx.alerts
        alerts = board.active() if board is not None and session is not None else []
        flash = session.flash if session is not None else None
        html = self.env.get_template(template).render(
            base=self.prefix,
            session=session,
            alerts=alerts,
            flash=flash,
            page=template.removesuffix(".html"),
            **values,
        )
        return HTMLResponse(html, status_code=status)

    async def session_of(self, request: Request) -> Session | None:
        """The request's live session, its role as ``console.roles`` says now: a person taken out of
        the roles since logging in, or whose admin token was revoked or expired since, has no session
        any more (also after a restart)."""
        session = await anyio.to_thread.run_sync(self.sessions.get, request.cookies.get(COOKIE))
        if session is None:
            return None
        role = self.ctx.settings.roles.get(session.person)
        if role is None:
            return None
        live = self.ctx.admin_token_live
        if session.via == "admin_token" and live is not None:
            # The admin token the person logged in with was revoked or expired: so is the session.
            if not await anyio.to_thread.run_sync(live, session.token_id):
                return None
        return session if role == session.role else dataclasses.replace(session, role=role)

    def set_cookie(self, request: Request, response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path=self.prefix,
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )

    def guard(self, role: ConsoleRole, page: Page) -> Callable[[Request], Awaitable[Response]]:
        """``page`` for a session of ``role`` or above; a POST must carry the session's CSRF token.

        No session: a GET is sent to the login page, anything else gets 401. The session store
        failing: 503. A missing or wrong CSRF
        token, or a cross-site ``Origin``: 403, nothing done.
        """

        async def endpoint(request: Request) -> Response:
            try:
                session = await self.session_of(request)
            except GatewayError as exc:  # the session store failed: nobody is let in meanwhile
                logger.error("console session store failed: %s", exc)
                return self.refuse(request, None, 503, "the session store is unavailable; try again later")
            if session is None:
                if request.method == "GET" and "text/event-stream" not in request.headers.get("accept", ""):
                    return RedirectResponse(self.url("/login"), status_code=303)
                return self.refuse(request, None, 401, "not logged in, or the session ended")
            if request.method == "POST":
                if not same_origin(request):
                    return self.refuse(request, session, 403, "cross-site request refused")
                presented = request.headers.get("x-csrf-token") or (await form(request)).get("csrf")
                if not session.csrf_ok(presented):
                    return self.refuse(request, session, 403, "missing or wrong CSRF token")
            if not session.may(role):
                return self.refuse(request, session, 403, f"this needs the {role} role")
            if session.flash is not None and request.method == "GET" and shows_page(request):
                # This page shows the outcome line: no later page shows it again.
                await anyio.to_thread.run_sync(self.sessions.take_flash, session)
            try:
                return await page(request, session)
            except Forbidden as exc:
                return self.refuse(request, session, 403, str(exc))

        return endpoint

    def refuse(self, request: Request, session: Session | None, status: int, message: str) -> Response:
        if wants_json(request):
            return JSONResponse({"error": message}, status_code=status)
        return self.render(request, "error.html", session, status=status, message=message)


def shows_page(request: Request) -> bool:
    """Whether a GET is for a page (not a poll for JSON, a live stream or a download)."""
    accept = request.headers.get("accept", "")
    return (
        "application/json" not in accept
        and "text/event-stream" not in accept
        and (not request.url.path.endswith("/export"))
    )


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "") or bool(
        request.headers.get("x-csrf-token")
    )


def same_origin(request: Request) -> bool:
    """False when the browser says the request came from another origin (absent: not a browser's
    cross-site request, which always carries ``Origin`` on a POST)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] == host


async def form(request: Request) -> dict[str, str]:
    """The URL-encoded form of a POST (first value of each field; bounded in size), cached per request."""
    cached = request.scope.get("mgw_console_form")
    if cached is not None:
        return dict(cached)
    body = await request.body()
    fields: dict[str, str] = {}
    if len(body) <= MAX_FORM_BYTES and "json" not in request.headers.get("content-type", ""):
        parsed = parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=50)
        fields = {name: values[0] for name, values in parsed.items()}
    request.scope["mgw_console_form"] = fields
    return dict(fields)
