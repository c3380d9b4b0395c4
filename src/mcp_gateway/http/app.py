"""The HTTP face: Starlette and the gateway's own MCP dispatch, both protocol eras on one ``/mcp``.

``/mcp`` is ``AuthMiddleware`` (``auth.py``: bearer → ``Principal``, 401/403 with
``WWW-Authenticate``) in front of ``EraRouter``: 2026-07-28 requests go to ``modern.py`` (stateless),
the rest to ``legacy.py`` (2025-11-25 sessions, ``session.py``). Both dispatch through ``methods.py``
(the SDK's types for validation and result shapes; no SDK server transport) to the governed core.
Gateway errors become protocol answers in ``errors.py``, ``calls.py`` and ``methods.py``:

- ``ToolNotGranted`` → JSON-RPC ``-32602`` naming only the tool asked for;
- other ``CallRefused`` (policy denial, sealed vault, audit unavailable) → a tool result with
  ``isError: true`` and a clear message;
- ``AuthError`` → HTTP 401 with ``WWW-Authenticate: Bearer resource_metadata=...`` (RFC 9728).

Every byte toward an agent passes the one egress scrubber (``egress.py``), which wraps the whole app.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from mcp_gateway.approvals.store import ApprovalStore
from mcp_gateway.config import Settings
from mcp_gateway.core.federation import Federation
from mcp_gateway.core.gateway import Gateway
from mcp_gateway.errors import AuditUnavailable
from mcp_gateway.http.admin import VerifyAdmin, create_admin_routes
from mcp_gateway.http.auth import AuthMiddleware
from mcp_gateway.http.egress import EgressScrubber
from mcp_gateway.http.health import readyz_endpoint
from mcp_gateway.http.legacy import LegacyDoor
from mcp_gateway.http.modern import EraRouter, ModernDoor
from mcp_gateway.http.session import SessionTable
from mcp_gateway.identity.agents import AgentStore
from mcp_gateway.identity.oauth import OAuthVerifier
from mcp_gateway.policy.history import Trigger
from mcp_gateway.types import AuditEvent

logger = logging.getLogger(__name__)

WELL_KNOWN = "/.well-known/oauth-protected-resource"


def _resource_metadata_url(settings: Settings) -> str:
    return f"{settings.resource_url}{WELL_KNOWN}/mcp"


def transport_security(settings: Settings) -> TransportSecuritySettings:
    """Host/Origin allow-lists against DNS rebinding: loopback plus what the config adds."""
    port = settings.server.port
    hosts = [f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", *settings.server.allowed_hosts]
    origins = [f"http://{h}" for h in hosts[:3]] + list(settings.server.allowed_origins)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )


@dataclass
class AppState:
    """What the lifespan and the health routes share."""

    gateway: Gateway
    ready: bool = False


async def _watch_policy(state: AppState, stop: anyio.Event) -> None:
    """Reload policy on file change; a broken file keeps the last good policy (logged and audited)."""
    from watchfiles import awatch

    holder = state.gateway.policy
    target = holder.path if holder.path.is_dir() else holder.path.parent
    # The watcher runs in a thread that only notices cancellation through `stop` (else ~4 s to exit).
    async for _changes in awatch(target, debounce=200, step=50, stop_event=stop):
        await reload_policy(state.gateway, "watch")


async def reload_policy(gateway: Gateway, trigger: Trigger = "reload") -> bool:
    """Reload the policy; audit the outcome. Returns True when the new policy is in force.

    ``trigger`` says what asked (``watch``: a file changed; ``sighup``), for the policy history.
    """
    # A large policy takes seconds to parse; the event loop keeps serving meanwhile.
    holder = gateway.policy
    previous = holder.version
    error = await anyio.to_thread.run_sync(holder.reload, trigger)
    # `version`: the policy in force after this reload (on error, still the previous one), so
    # every replica's record says which policy it serves (``policy/version.py``).
    where = {"path": str(holder.path), "version": holder.version}
    if error is None:
        logger.info("policy reloaded from %s: version %s (was %s)", holder.path, holder.version, previous)
        event = AuditEvent(kind="policy_reload", status="ok", detail={**where, "previous_version": previous})
    else:
        logger.error("policy reload failed, keeping the last good policy: %s", error)
        event = AuditEvent(
            kind="policy_reload", status="error", detail={**where, "problems": list(error.problems)}
        )
    with contextlib.suppress(AuditUnavailable):
        await gateway.audit.append(event)
    return error is None


def create_app(
    settings: Settings,
    gateway: Gateway,
    agents: AgentStore,
    *,
    oauth: OAuthVerifier | None = None,
    approvals: ApprovalStore | None = None,
    verify_admin: VerifyAdmin | None = None,
) -> ASGIApp:
    """Build the ASGI app.

    Args:
        settings: validated settings.
        gateway: the governed call path (owns policy, vault view, audit log, upstreams).
        agents: the agent-token store used to authenticate callers.
        oauth: the JWT verifier; default: built from ``settings.oauth`` when that is set, else none
            (then only agent tokens are accepted).
        approvals, verify_admin: the approval store and the admin-token check; with both, the admin
            API is served under ``/admin`` (its own tokens; agent tokens are refused there).
    """
    state = AppState(gateway)
    if oauth is None and settings.oauth is not None:
        oauth = OAuthVerifier.from_settings(settings.oauth, settings.resource_url)
    # One federation per gateway: it holds the resource subscriptions the upstreams report to.
    federation = Federation(gateway)
    security = transport_security(settings)
    max_body = settings.server.max_body_bytes
    sessions = SessionTable()
    # Both eras on the gateway's own dispatch: 2026-07-28 stateless, 2025-11-25 with sessions.
    modern = ModernDoor(gateway, federation, security=security, max_body=max_body)
    legacy = LegacyDoor(gateway, federation, security=security, max_body=max_body, sessions=sessions)
    mcp_app = AuthMiddleware(
        EraRouter(modern, legacy),
        agents=agents,
        audit=gateway.audit,
        metadata_url=_resource_metadata_url(settings),
        oauth=oauth,
    )

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    # Unauthenticated: ready or not, nothing else; the reasons need an admin token (health.py).
    readyz = readyz_endpoint(gateway, lambda: state.ready, verify_admin)

    async def resource_metadata(_: Request) -> Response:
        body: dict[str, Any] = {
            "resource": f"{settings.resource_url}/mcp",
            "bearer_methods_supported": ["header"],
            "resource_name": "MCP Gateway",
            "authorization_servers": [],
        }
        if oauth is not None:
            body["authorization_servers"] = [oauth.issuer]
            # What a client may ask for: the required scopes plus every scope the running policy uses.
            body["scopes_supported"] = sorted(oauth.required_scopes | gateway.policy.policy.scopes)
        return JSONResponse(body)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            tg.start_soon(sessions.run)
            for upstream in gateway.upstreams.values():
                tg.start_soon(upstream.run)
            for service in gateway.services:
                tg.start_soon(service)
            stop_watching = anyio.Event()
            if settings.server.watch_policy:
                tg.start_soon(_watch_policy, state, stop_watching)
            with contextlib.suppress(ValueError, RuntimeError):
                # Only possible in the main thread; embedded servers (tests) rely on the file watch.
                import asyncio

                loop = asyncio.get_running_loop()
                reloads: set[asyncio.Task[bool]] = set()

                def on_sighup() -> None:
                    # A signal callback runs outside any task, where anyio (through sniffio) cannot
                    # tell which event loop it is on: start a plain asyncio task, which can.
                    task = loop.create_task(reload_policy(gateway, "sighup"))
                    reloads.add(task)
                    task.add_done_callback(reloads.discard)

                loop.add_signal_handler(signal.SIGHUP, on_sighup)
            with anyio.move_on_after(20):
                for upstream in gateway.upstreams.values():
                    await upstream.wait_ready()
            await gateway.start_toolsets()
            state.ready = True
            try:
                yield
            finally:
                state.ready = False
                with anyio.CancelScope(shield=True):
                    await gateway.stop_toolsets()
                for upstream in gateway.upstreams.values():
                    upstream.stop()
                stop_watching.set()
                tg.cancel_scope.cancel()
                # Drains the queue, then signs a checkpoint of the newest record (if the key is there).
                await gateway.audit.aclose()

    routes = [
        Route("/mcp", mcp_app, methods=["GET", "POST", "DELETE"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route(WELL_KNOWN, resource_metadata, methods=["GET"]),
        Route(f"{WELL_KNOWN}/mcp", resource_metadata, methods=["GET"]),
    ]
    if approvals is not None and verify_admin is not None:
        routes.extend(create_admin_routes(approvals, gateway.audit, verify_admin))
    # The one egress scrubber: every answer of every route and protocol path, whole, on its way out.
    # The redactor as last refreshed (no store query per response): the view refreshes before any
    # upstream can hold a new value (resolving it refreshes), so every value an upstream holds is known.
    return EgressScrubber(
        _McpFirst(Starlette(routes=routes, lifespan=lifespan), mcp_app), gateway.secrets.current_redactor
    )


class _McpFirst:
    """Sends ``POST /mcp`` straight to the MCP app; everything else (and lifespan) to Starlette.

    The MCP route has no Starlette middleware, so routing each agent call through Starlette's error,
    exception and router layers only costs CPU. Starlette keeps every other route, ``/mcp``'s other
    methods and its 405, and the lifespan. Mounted under a ``root_path``, all goes through Starlette.
    """

    def __init__(self, app: Starlette, mcp: ASGIApp) -> None:
        self.app = app
        self.mcp = mcp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] == "/mcp"
            and not scope.get("root_path")
        ):
            await self.mcp(scope, receive, send)
        else:
            await self.app(scope, receive, send)
