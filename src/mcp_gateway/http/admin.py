"""The admin HTTP API (approvals), guarded by admin tokens (``identity/admin_tokens.py``).

The two kinds of token never cross: ``/mcp`` authenticates with the agent store only, and the
routes here with the admin store only, so an agent token is refused here (401) and an admin token
is refused on ``/mcp``. Every refused attempt is audited (``admin_auth_failure``: the reason and the
token's public id, never the token) and so is every decision (``approval``), before it is made: no
audit, no decision.

    GET  /admin/approvals?status=pending&limit=100   newest first
    GET  /admin/approvals/{id}
    POST /admin/approvals/{id}/approve         body (optional): {"note": "..."}
    POST /admin/approvals/{id}/deny            body (optional): {"note": "..."}
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mcp_gateway.approvals.model import (
    STATUSES,
    ApprovalError,
    ApprovalNotFound,
    decide_refusal,
    decision_event,
)
from mcp_gateway.approvals.store import ApprovalStore, ApprovalStoreUnavailable
from mcp_gateway.audit.log import AuditLog
from mcp_gateway.errors import AuditUnavailable, AuthError, GatewayError
from mcp_gateway.identity.admin_tokens import AdminPrincipal, admin_token_id_of
from mcp_gateway.identity.agents import token_id_of
from mcp_gateway.types import AuditEvent, Clock, system_clock

logger = logging.getLogger(__name__)


class _DecisionBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    note: str | None = Field(default=None, max_length=2000)


def _error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"error": kind, "message": message}, status_code=status)


def _refusal_response(exc: GatewayError) -> JSONResponse:
    if isinstance(exc, ApprovalNotFound):
        return _error(404, exc.kind, str(exc))
    if isinstance(exc, ApprovalError):
        return _error(409, exc.kind, str(exc))
    if isinstance(exc, ApprovalStoreUnavailable | AuditUnavailable):
        return _error(503, exc.kind, "the approval or audit store is unavailable")
    return _error(400, "bad_request", str(exc))


VerifyAdmin = Callable[[str], AdminPrincipal]
Handler = Callable[[Request, AdminPrincipal], Awaitable[Response]]


def create_admin_routes(
    store: ApprovalStore,
    audit_log: AuditLog,
    verify_admin: VerifyAdmin,
    *,
    prefix: str = "/admin",
    clock: Clock = system_clock,
) -> list[Route]:
    """The admin API's routes, guarded by admin tokens.

    Args:
        store: the approval store (the one the call path consumes from).
        audit_log: where decisions and refused attempts are recorded.
        verify_admin: token → admin (``SQLiteAdminStore.verify``); raises ``AuthError``.
        prefix: the path the routes sit under (``""`` when the caller mounts them at ``/admin``).
        clock: the time source for pre-checks (the store decides with its own clock).
    """

    async def audit_failure(request: Request, reason: str, token: str) -> None:
        client = request.client
        detail: dict[str, Any] = {
            "reason": reason,
            "path": request.url.path,
            "client": client.host if client else "",
        }
        if (token_id := admin_token_id_of(token)) is not None:
            detail["token_kind"], detail["token_id"] = "admin", token_id
        elif (token_id := token_id_of(token)) is not None:
            # An agent token here is an agent reaching for admin powers: worth telling apart.
            detail["token_kind"], detail["token_id"] = "agent", token_id
        event = AuditEvent(
            kind="admin_auth_failure", decision="deny", status="unauthenticated", detail=detail
        )
        try:
            await audit_log.append(event)
        except AuditUnavailable:
            logger.error("audit unavailable while recording an admin authentication failure")

    def guarded(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            token = token.strip()
            try:
                if scheme.lower() != "bearer" or not token:
                    raise AuthError("missing bearer token")
                admin = await anyio.to_thread.run_sync(verify_admin, token)
            except AuthError as exc:
                await audit_failure(request, str(exc), token)
                response = _error(401, "unauthenticated", str(exc))
                response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
                return response
            try:
                return await handler(request, admin)
            except GatewayError as exc:
                return _refusal_response(exc)

        return endpoint

    async def list_approvals(request: Request, _: AdminPrincipal) -> Response:
        status = request.query_params.get("status") or None
        if status is not None and status not in STATUSES:
            return _error(400, "bad_request", f"unknown status `{status}` (one of {', '.join(STATUSES)})")
        raw_limit = request.query_params.get("limit", "100")
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 1000:
            return _error(400, "bad_request", "limit must be a whole number from 1 to 1000")
        approvals = await anyio.to_thread.run_sync(lambda: store.list(status, limit=int(raw_limit)))
        return JSONResponse({"approvals": [a.to_dict() for a in approvals]})

    async def show_approval(request: Request, _: AdminPrincipal) -> Response:
        approval_id = request.path_params["approval_id"]
        approval = await anyio.to_thread.run_sync(store.get, approval_id)
        if approval is None:
            raise ApprovalNotFound(f"no approval `{approval_id}`", approval_id)
        return JSONResponse(approval.to_dict())

    async def decide(request: Request, admin: AdminPrincipal, approve: bool) -> Response:
        approval_id = request.path_params["approval_id"]
        raw = await request.body()
        try:
            body = _DecisionBody.model_validate_json(raw) if raw.strip() else _DecisionBody()
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                for e in exc.errors(include_input=False)
            )
            return _error(400, "bad_request", f"invalid body: {problems}")
        current = await anyio.to_thread.run_sync(store.get, approval_id)

        def event(error: ApprovalError | None = None) -> AuditEvent:
            return decision_event(
                approval_id,
                current,
                approve=approve,
                approver=admin.name,
                note=body.note,
                via="api",
                error=error,
                admin_token_id=admin.token_id,
            )

        refusal = decide_refusal(current, approval_id, now=clock())
        if refusal is not None:
            await audit_log.append(event(refusal))
            raise refusal
        await audit_log.append(event())  # audit before act: if this fails, nothing is decided
        try:
            decided = await anyio.to_thread.run_sync(
                lambda: store.decide(approval_id, approve=approve, approver=admin.name, note=body.note)
            )
        except ApprovalError as exc:  # lost a race with another approver, or expired meanwhile
            await audit_log.append(event(exc))
            raise
        return JSONResponse(decided.to_dict())

    async def approve(request: Request, admin: AdminPrincipal) -> Response:
        return await decide(request, admin, True)

    async def deny(request: Request, admin: AdminPrincipal) -> Response:
        return await decide(request, admin, False)

    base = f"{prefix.rstrip('/')}/approvals"
    return [
        Route(base, guarded(list_approvals), methods=["GET"]),
        Route(base + "/{approval_id}", guarded(show_approval), methods=["GET"]),
        Route(base + "/{approval_id}/approve", guarded(approve), methods=["POST"]),
        Route(base + "/{approval_id}/deny", guarded(deny), methods=["POST"]),
    ]
