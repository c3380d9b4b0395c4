"""The console's state changes, each audited before it acts (no audit, no change):

- approve / deny a parked call (role ``approver``): through ``approvals/decide.py``, the same path as
  the CLI and the admin API, so the requester never approves its own call and each person counts once;
- revoke an agent's token (``admin``): ``token_revoke`` records before and after;
- approve a changed or new pinned definition (``admin``): an ``admin`` record before, as the CLI does;
- run verify now (``admin``).

The person acting is the logged-in one, never a name in the form.
"""

from __future__ import annotations

from typing import Any

import anyio
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from mcp_gateway.approvals.decide import Approver
from mcp_gateway.approvals.decide import decide as decide_audited
from mcp_gateway.console.sessions import Session
from mcp_gateway.console.web import Console, form
from mcp_gateway.errors import GatewayError
from mcp_gateway.pins.model import parse_pin_name
from mcp_gateway.types import AuditEvent

MAX_NOTE = 2000


def action_routes(console: Console) -> list[Route]:
    ctx = console.ctx

    async def record(kind: str, session: Session, status: str, **detail: Any) -> None:
        who = {"by": session.person, "via": "console", "token_id": session.token_id}
        await ctx.gateway.audit.append(AuditEvent(kind=kind, status=status, detail={**who, **detail}))

    async def done(session: Session, path: str, message: str, ok: bool = True) -> Response:
        await console.flash(session, message, ok)
        return RedirectResponse(console.url(path), status_code=303)

    async def decide(request: Request, session: Session) -> Response:
        if ctx.approvals is None:
            return console.refuse(request, session, 404, "approvals are not configured")
        store = ctx.approvals
        approval_id = request.path_params["approval_id"]
        verb = request.path_params["verb"]
        if verb not in ("approve", "deny"):
            return console.refuse(request, session, 404, "no such action")
        approve = verb == "approve"
        note = ((await form(request)).get("note") or "").strip()[:MAX_NOTE] or None
        approver = Approver(session.person, session.token_id)

        def write(event: AuditEvent) -> None:
            anyio.from_thread.run(ctx.gateway.audit.append, event)

        try:
            decided = await anyio.to_thread.run_sync(
                lambda: decide_audited(
                    store,
                    approval_id,
                    approver=approver,
                    approve=approve,
                    note=note,
                    via="console",
                    record=write,
                    clock=ctx.clock,
                )
            )
        except GatewayError as exc:
            return await done(session, "/approvals", str(exc), ok=False)
        return await done(session, "/approvals", f"{decided.id} is {decided.status}")

    async def revoke(request: Request, session: Session) -> Response:
        token_id = ((await form(request)).get("token_id") or "").strip()
        if not token_id or len(token_id) > 64:
            return await done(session, "/agents", "no token named", ok=False)
        try:
            await record("token_revoke", session, "requested", holder_kind="agent", target=token_id)
            count = await anyio.to_thread.run_sync(ctx.agents.revoke, token_id)
            await record(
                "token_revoke", session, "ok" if count else "none_matched", target=token_id, revoked=count
            )
        except GatewayError as exc:
            return await done(session, "/agents", str(exc), ok=False)
        return await done(session, "/agents", f"revoked {count} token(s) `{token_id}`", ok=count > 0)

    async def approve_pin(request: Request, session: Session) -> Response:
        fields = await form(request)
        name, expected = fields.get("name", ""), fields.get("hash", "")
        parsed = parse_pin_name(name)
        if ctx.pins is None or parsed is None or len(expected) < 8:
            return await done(session, "/pins", "unknown pin or missing definition hash", ok=False)
        kind, upstream, tool = parsed
        store = ctx.pins
        facts = {
            "action": f"approve_{kind}",
            "upstream": upstream,
            "tool": tool,
            "kind": kind,
            "new_hash": expected,
        }
        try:
            # Audit before act; the store approves only the hash the admin reviewed (and audited).
            await ctx.gateway.audit.append(
                AuditEvent(
                    kind="admin",
                    tool=name,
                    status="ok",
                    detail={**facts, "by": session.person, "via": "console"},
                )
            )
            await anyio.to_thread.run_sync(
                lambda: store.approve(upstream, tool, kind=kind, expected_hash=expected)
            )
        except GatewayError as exc:
            await record("admin", session, "error", **facts, error=str(exc))
            return await done(session, "/pins", str(exc), ok=False)
        return await done(session, "/pins", f"approved {name}")

    async def verify_now(request: Request, session: Session) -> Response:
        live, new = console.verifier.begin(session.person)
        # The run goes on after this answer (a background task of this request); its outcome is
        # the ``audit_verify`` record it ends with. A second click reports the run going.
        task = BackgroundTask(console.verifier.run, live) if new else None
        return JSONResponse(live.view(), status_code=202, background=task)

    async def verify_progress(request: Request, session: Session) -> Response:
        last = console.verifier.last
        return JSONResponse(last.view() if last is not None else {"phase": "never"})

    return [
        Route(
            console.url("/approvals/{approval_id}/{verb:str}"),
            console.guard("approver", decide),
            methods=["POST"],
        ),
        Route(console.url("/agents/revoke"), console.guard("admin", revoke), methods=["POST"]),
        Route(console.url("/pins/approve"), console.guard("admin", approve_pin), methods=["POST"]),
        Route(console.url("/chain/verify"), console.guard("admin", verify_now), methods=["POST"]),
        Route(console.url("/chain/verify"), console.guard("viewer", verify_progress), methods=["GET"]),
    ]
