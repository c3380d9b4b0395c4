"""Serve the security console beside the gateway (``console.enabled``), from the runtime's parts."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
from starlette.types import ASGIApp

from mcp_gateway.app.wiring import Runtime, checkpoint_mirror_path, public_key_path
from mcp_gateway.config import Settings
from mcp_gateway.console.app import ConsoleMount, create_console
from mcp_gateway.console.context import ConsoleContext
from mcp_gateway.console.sessions import SessionStore, open_session_store
from mcp_gateway.errors import GatewayError
from mcp_gateway.http.egress import EgressScrubber
from mcp_gateway.identity.oauth import OAuthVerifier

logger = logging.getLogger(__name__)
PRUNE_SECONDS = 300.0
"""How often expired console sessions are deleted from the store."""


def console_verifier(settings: Settings) -> OAuthVerifier | None:
    """The verifier of people's identity-provider tokens (None without ``oauth:``).

    The same issuer, keys and algorithms as the ``/mcp`` verifier; the audience is
    ``console.oauth_audience`` (default: the ``/mcp`` resource's), and the person is the token's ``sub``:
    no agent claim, no ``oauth.agents`` mapping (those name agents, not people).
    """
    if settings.oauth is None:
        return None
    agents = OAuthVerifier.from_settings(settings.oauth, settings.resource_url)
    return OAuthVerifier(
        issuer=agents.issuer,
        audience=settings.console.oauth_audience or agents.audience,
        jwks=agents.jwks,
        algorithms=agents.algorithms,
        agent_claim="sub",
        leeway=agents.leeway,
    )


def keep_sessions(
    sessions: SessionStore, every: float = PRUNE_SECONDS
) -> Callable[[], Coroutine[Any, Any, None]]:
    """The gateway service that deletes expired sessions now and then, and closes the store at shutdown."""

    async def run() -> None:
        try:
            while True:
                try:
                    await anyio.to_thread.run_sync(sessions.prune)
                except GatewayError as exc:
                    logger.warning("console sessions not pruned: %s", exc)
                await anyio.sleep(every)
        finally:
            sessions.close()

    return run


def with_console(app: ASGIApp, settings: Settings, runtime: Runtime) -> ASGIApp:
    """``app`` with the console served under ``console.path`` (``app`` itself when it is off).

    The console's pages pass the same egress scrubber as every other answer of the gateway. Its
    session store is opened here and closed when the gateway's services stop.

    Raises:
        StoreError: the session store cannot be opened.
    """
    if not settings.console.enabled or runtime.admins is None:
        return app
    gateway = runtime.gateway
    sessions = open_session_store(
        settings.data_dir,
        settings.store,
        lifetime=settings.console.session_seconds,
        max_sessions=settings.console.max_sessions,
    )
    gateway.services.append(keep_sessions(sessions))
    usage = getattr(runtime.quotas, "usage", None)
    ctx = ConsoleContext(
        settings=settings.console,
        gateway=gateway,
        sink=runtime.sink,
        agents=runtime.agents,
        verify_admin=runtime.admins.verify,
        sessions=sessions,
        approvals=runtime.approvals,
        pins=runtime.pins,
        quota_usage=usage,
        oauth=console_verifier(settings),
        public_key_path=public_key_path(settings),
        mirror_path=checkpoint_mirror_path(settings),
        alerts=runtime.alerts,
        admin_token_live=runtime.admins.live,
    )
    console = EgressScrubber(create_console(ctx), gateway.secrets.current_redactor)
    return ConsoleMount(app, console, settings.console.path)
