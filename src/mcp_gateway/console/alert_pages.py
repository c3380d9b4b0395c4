"""The alerts page (recent alerts, active first in the banner) and acknowledging one.

An approver or admin acknowledges an alert from the banner or the list (a POST with the session's
CSRF token); ``AlertBoard.acknowledge`` records it as an ``alert_ack`` audit record naming the
logged-in person, and the alert leaves the banner. The board is the gateway's (each replica keeps
its own, rebuilt from the audit log at start).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from mcp_gateway.alerts.board import UnknownAlert
from mcp_gateway.console.sessions import Session
from mcp_gateway.console.web import Console, form
from mcp_gateway.errors import AuditUnavailable

RECENT = 100
PAGES = frozenset(
    {"audit", "chain", "approvals", "agents", "policy", "pins", "quotas", "incidents", "alerts"}
)
"""Where an acknowledgement may send the browser back to (nothing else: no open redirect)."""


def alert_routes(console: Console) -> list[Route]:
    ctx = console.ctx

    async def alerts_page(request: Request, session: Session) -> Response:
        board = ctx.alerts
        recent = board.recent(RECENT) if board is not None else []
        return console.render(request, "alerts.html", session, recent=recent, configured=board is not None)

    async def acknowledge(request: Request, session: Session) -> Response:
        back = (await form(request)).get("back", "")
        target = console.url("/" + (back if back in PAGES else "alerts"))
        board = ctx.alerts
        if board is None:
            return console.refuse(request, session, 404, "alerts are not configured")
        try:
            alert = await board.acknowledge(request.path_params["alert_id"][:64], by=session.person)
        except UnknownAlert as exc:
            await console.flash(session, str(exc), False)
        except AuditUnavailable:
            # Audit first: not recorded, not acknowledged (the alert stays active).
            await console.flash(session, "not acknowledged: the audit log cannot record it now", False)
        else:
            await console.flash(
                session, f"{alert.rule} · {alert.subject}: acknowledged by {alert.acknowledged_by}", True
            )
        return RedirectResponse(target, status_code=303)

    return [
        Route(console.url("/alerts"), console.guard("viewer", alerts_page), methods=["GET"]),
        Route(
            console.url("/alerts/{alert_id}/acknowledge"),
            console.guard("approver", acknowledge),
            methods=["POST"],
        ),
    ]
