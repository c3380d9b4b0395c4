"""The console's ASGI app, and the dispatcher that serves it beside the gateway's own routes."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from mcp_gateway.console.actions import action_routes
from mcp_gateway.console.alert_pages import alert_routes
from mcp_gateway.console.audit_pages import audit_routes
from mcp_gateway.console.context import ConsoleContext
from mcp_gateway.console.export import export_routes
from mcp_gateway.console.info_pages import info_routes
from mcp_gateway.console.login import login_routes
from mcp_gateway.console.web import HERE, Console, SecurityHeaders


def create_console(ctx: ConsoleContext) -> ASGIApp:
    """The console app; its routes sit under ``ctx.settings.path`` (full paths, so it is mounted by
    prefix dispatch: ``ConsoleMount``)."""
    console = Console(ctx)

    async def home(_: Request) -> Response:
        return RedirectResponse(console.url("/audit"), status_code=303)

    routes = [
        Route(console.prefix, home, methods=["GET"]),
        Route(console.url("/"), home, methods=["GET"]),
        *login_routes(console),
        *export_routes(console),
        *audit_routes(console),
        *info_routes(console),
        *action_routes(console),
        *alert_routes(console),
        Mount(console.url("/static"), StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return SecurityHeaders(Starlette(routes=routes))


class ConsoleMount:
    """Sends requests under ``prefix`` to the console and everything else (lifespan too) to ``app``."""

    def __init__(self, app: ASGIApp, console: ASGIApp, prefix: str) -> None:
        self.app = app
        self.console = console
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path == self.prefix or path.startswith(self.prefix + "/"):
                await self.console(scope, receive, send)
                return
        await self.app(scope, receive, send)
