"""The admin HTTP API (approvals), guarded by admin tokens (``identity/admin_tokens.py``).

The two kinds of token never cross: ``/mcp`` authenticates with the agent store only, and the
routes here with the admin store only, so an agent token is refused here (401) and an admin token
is refused on ``/mcp``. Every refused attempt is audited (``admin_auth_failure``: the reason and the
token's public id, never the token; for a decision also the approval id and the decision asked for)
and so is every decision (``approval``), before it is made: no audit, no decision.

The approver is the admin token's holder (``AdminPrincipal.name``), never a name in the body (a body
with any field but ``note`` is refused). ``approvals/decide.py`` refuses self-approval and a second
approval by the same admin, and counts distinct approvers under the two-person rule; the CLI decides
through the same function.

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

from mcp_gateway.approvals.decide import Approver
from mcp_gateway.approvals.decide import decide as decide_audited
from mcp_gateway.approvals.model import (
    STATUSES,
    ApprovalBadRequest,
    ApprovalError,
    ApprovalNotFound,
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


async def record_admin_failure(
    audit_log: AuditLog, request: Request, reason: str, token: str, **extra: Any
) -> None:
    """Audit a refused admin request (``admin_auth_failure``): the reason and the token's public id,
    never the token; past the flood threshold per client it is counted (``audit/flood.py``)."""
    client = request.client
    detail: dict[str, Any] = {
        "reason": reason,
        "path": request.url.path,
        "client": client.host if client else "",
        **extra,
    }
    if (token_id := admin_token_id_of(token)) is not None:
        detail["token_kind"], detail["token_id"] = "admin", token_id
    elif (token_id := token_id_of(token)) is not None:
        # An agent token here is an agent reaching for admin powers: worth telling apart.
        detail["token_kind"], detail["token_id"] = "agent", token_id
    event = AuditEvent(kind="admin_auth_failure", decision="deny", status="unauthenticated", detail=detail)
    try:
        await audit_log.failures.record(event, detail["client"])
    except AuditUnavailable:
        logger.error("audit unavailable while recording an admin authentication failure")


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
        extra: dict[str, Any] = {}
        if approval_id := request.path_params.get("approval_id"):
            extra["approval_id"] = approval_id
        if request.method == "POST":
            extra["decision"] = request.url.path.rsplit("/", 1)[-1]
        await record_admin_failure(audit_log, request, reason, token, **extra)

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
            # An attempt all the same (e.g. a body naming another approver): audited under the token holder.
            refused = ApprovalBadRequest(f"invalid body: {problems}", approval_id)
            await audit_log.append(
                decision_event(
                    approval_id,
                    None,
                    approve=approve,
                    approver=admin.name,
                    note=None,
                    via="api",
                    error=refused,
                    admin_token_id=admin.token_id,
                )
            )
            return _error(400, "bad_request", str(refused))
        approver = Approver(admin.name, admin.token_id)

        def record(event: AuditEvent) -> None:
            anyio.from_thread.run(audit_log.append, event)

        decided = await anyio.to_thread.run_sync(
            lambda: decide_audited(
                store,
                approval_id,
                approver=approver,
                approve=approve,
                note=body.note,
                via="api",
                record=record,
                clock=clock,
            )
        )
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
