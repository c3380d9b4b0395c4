"""Run a gateway under uvicorn: build the runtime, wire telemetry, serve until signalled."""

from __future__ import annotations

import logging
from typing import Any

import uvicorn

from mcp_gateway.app.wiring import build_runtime
from mcp_gateway.config import ServerSettings, Settings
from mcp_gateway.http.app import create_app
from mcp_gateway.telemetry import configure_tracing
from mcp_gateway.vault.service import NO_MASTER_KEY

logger = logging.getLogger(__name__)


def proxy_header_options(server: ServerSettings) -> dict[str, Any]:
    """uvicorn's forwarded-header handling for ``server.trusted_proxies``.

    uvicorn believes ``X-Forwarded-For`` from 127.0.0.1 unless told otherwise, so any local process
    could name the client address an audit record carries. Only the configured proxies are believed.
    """
    proxies = list(server.trusted_proxies)
    return {"proxy_headers": bool(proxies), "forwarded_allow_ips": proxies or None}


def run_gateway(settings: Settings, *, master_key_env: str | None) -> None:
    """Serve until SIGINT/SIGTERM. Raises ``GatewayError`` if the gateway cannot start."""
    runtime = build_runtime(settings, master_key_env=master_key_env)
    provider = configure_tracing(settings.telemetry)
    vault = runtime.gateway.secrets.vault
    if vault.sealed and vault.seal_reason == NO_MASTER_KEY:
        # A key that is not the vault's was already reported, once, by the vault itself.
        logger.warning("vault is sealed (no master key): calls that need secrets will be refused")
    app = create_app(
        settings,
        runtime.gateway,
        runtime.agents,
        approvals=runtime.approvals,
        verify_admin=runtime.admins.verify if runtime.admins is not None else None,
    )
    config = uvicorn.Config(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_level="warning",
        access_log=False,
        # Logging is configured by telemetry.py; uvicorn must not replace it.
        log_config=None,
        lifespan="on",
        # uvloop and httptools when installed (they are dependencies on Linux and macOS).
        loop="auto",
        http="auto",
        **proxy_header_options(settings.server),
    )
    try:
        uvicorn.Server(config).run()
    finally:
        runtime.close()
        if provider is not None:
            provider.shutdown()
