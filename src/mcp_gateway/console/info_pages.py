"""The console's read-only pages besides audit: chain health, approvals queue, agents and grants,
policy history, pins, quota usage, the quality monitors' incidents."""

from __future__ import annotations

from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mcp_gateway.audit.health import read_chain_health
from mcp_gateway.audit.search import AuditSearch
from mcp_gateway.console.audit_pages import search
from mcp_gateway.console.chain import public_keys
from mcp_gateway.console.sessions import Session
from mcp_gateway.console.web import Console
from mcp_gateway.errors import GatewayError
from mcp_gateway.pins.model import definition_diff
from mcp_gateway.policy.history import PolicyLoadEvent
from mcp_gateway.policy.history_store import SQLPolicyHistory
from mcp_gateway.policy.model import CompiledGrant

LAST_USE_SCAN = 200
INCIDENTS_SHOWN = 100
"""The newest incidents the incidents page lists."""


def grant_view(grant: CompiledGrant) -> dict[str, Any]:
    gov = grant.governance
    return {
        "id": grant.id,
        "tool": grant.tool,
        "constraints": [
            {
                "arg": c.arg,
                "required": c.required,
                "sensitive": c.sensitive,
                "checks": ", ".join(check.describe for check in c.checks),
            }
            for c in grant.constraints
        ],
        "deny_rules": [r.id for r in grant.deny_rules],
        "approval": gov.approval_required or bool(gov.approval_rules),
        "rates": [text for text, _count, _seconds in gov.rates],
        "source": grant.source,
    }


def info_routes(console: Console) -> list[Route]:
    ctx = console.ctx

    async def chain_page(request: Request, session: Session) -> Response:
        keys = public_keys(ctx.public_key_path)
        health = await anyio.to_thread.run_sync(read_chain_health, ctx.sink, ctx.mirror_path, keys)
        live = console.verifier.last
        return console.render(
            request, "chain.html", session, health=health, live=live.view() if live else None
        )

    async def approvals_page(request: Request, session: Session) -> Response:
        if ctx.approvals is None:
            return console.render(
                request, "approvals.html", session, pending=[], decided=[], configured=False
            )
        store = ctx.approvals
        now = ctx.clock()
        pending = [
            a.as_of(now) for a in await anyio.to_thread.run_sync(lambda: store.list("pending", limit=200))
        ]
        recent = await anyio.to_thread.run_sync(lambda: store.list(None, limit=50))
        return console.render(
            request,
            "approvals.html",
            session,
            pending=[a for a in pending if a.status == "pending"],
            decided=[a.as_of(now) for a in recent if a.status != "pending"],
            configured=True,
        )

    async def agents_page(request: Request, session: Session) -> Response:
        policy = ctx.gateway.policy.policy

        def load() -> list[dict[str, Any]]:
            tokens = []
            for rec in ctx.agents.list():
                recent = search(ctx.sink, AuditSearch(agent=rec.name, limit=LAST_USE_SCAN)).records
                used = next((r.ts for r in recent if r.detail.get("token_id") == rec.token_id), None)
                tokens.append({"record": rec, "last_use": used})
            return tokens

        tokens = await anyio.to_thread.run_sync(load)
        now = ctx.clock()
        for token in tokens:
            rec = token["record"]
            token["state"] = (
                "revoked"
                if rec.revoked_at
                else "expired"
                if rec.expires_at and rec.expires_at <= now
                else "live"
            )
        agents = {name: [grant_view(g) for g in grants] for name, grants in sorted(policy.agents.items())}
        return console.render(request, "agents.html", session, agents=agents, tokens=tokens)

    async def policy_page(request: Request, session: Session) -> Response:
        holder = ctx.gateway.policy
        history = holder.history
        if not isinstance(history, SQLPolicyHistory):
            return console.render(request, "policy.html", session, holder=holder, loads=None, diff=None)
        old, new = request.query_params.get("from", ""), request.query_params.get("to", "")

        def load() -> tuple[list[PolicyLoadEvent], PolicyLoadEvent | None, str | None, str]:
            loads = history.loads(limit=100)
            if not (old and new):
                return loads, history.last_failure(), None, ""
            try:
                return loads, history.last_failure(), history.diff(old, new), ""
            except GatewayError as exc:
                return loads, history.last_failure(), None, str(exc)

        loads, failure, diff, error = await anyio.to_thread.run_sync(load)
        versions = list(dict.fromkeys(e.version for e in loads if e.ok and e.version))
        return console.render(
            request,
            "policy.html",
            session,
            holder=holder,
            loads=loads,
            failure=failure,
            versions=versions,
            diff=diff,
            error=error,
            chosen=(old, new),
            status=400 if error else 200,
        )

    async def pins_page(request: Request, session: Session) -> Response:
        store = ctx.pins
        pins = await anyio.to_thread.run_sync(store.all) if store is not None else []
        blocked = [
            {
                "pin": pin,
                "diff": definition_diff(pin.definition, pin.presented_definition, label=pin.name),
            }
            for pin in pins
            if pin.status != "pinned"
        ]
        return console.render(
            request, "pins.html", session, blocked=blocked, pinned=[p for p in pins if p.status == "pinned"]
        )

    async def quotas_page(request: Request, session: Session) -> Response:
        usage = ctx.quota_usage
        rows = await anyio.to_thread.run_sync(usage, ctx.clock()) if usage is not None else []
        return console.render(
            request, "quotas.html", session, usage=sorted(rows, key=lambda u: (u.agent, u.tool, u.limit))
        )

    async def incidents_page(request: Request, session: Session) -> Response:
        store = ctx.gateway.incidents
        found = await anyio.to_thread.run_sync(lambda: store.history(limit=INCIDENTS_SHOWN)) if store else []
        # Open ones first (someone should act), each group newest first.
        shown = sorted(found, key=lambda i: (i.status != "open", -i.updated_at))
        return console.render(
            request, "incidents.html", session, incidents=shown, configured=store is not None
        )

    return [
        Route(console.url("/incidents"), console.guard("viewer", incidents_page), methods=["GET"]),
        Route(console.url("/chain"), console.guard("viewer", chain_page), methods=["GET"]),
        Route(console.url("/approvals"), console.guard("viewer", approvals_page), methods=["GET"]),
        Route(console.url("/agents"), console.guard("viewer", agents_page), methods=["GET"]),
        Route(console.url("/policy"), console.guard("viewer", policy_page), methods=["GET"]),
        Route(console.url("/pins"), console.guard("viewer", pins_page), methods=["GET"]),
        Route(console.url("/quotas"), console.guard("viewer", quotas_page), methods=["GET"]),
    ]
