"""Run a gateway under uvicorn: build the runtime, wire telemetry, serve until signalled.

The heavy imports (the runtime, the app, uvicorn) wait inside ``run_gateway``, so ``serve`` can
check its port (``bind_listener``) at once and fail in well under a second on a busy one.
"""

from __future__ import annotations

import gc
import logging
import socket
from typing import Any

from mcp_gateway.config import ServerSettings, Settings
from mcp_gateway.errors import GatewayError

logger = logging.getLogger(__name__)

GC_YOUNG_THRESHOLD = 20_000
"""Net new tracked objects (allocations less frees) between two young collections (default 700)."""


def settle_heap() -> None:
    """Take what start-up built out of the cyclic collector's way, and collect less often.

    A call leaves some objects in reference cycles (tasks, futures, cancel scopes, exceptions with
    their tracebacks) that only the collector frees. At Python's default threshold the collections
    they triggered, each walking the objects start-up built (models, schemas, the SDK's types), took
    about 5 % of the gateway's CPU under load (``perf`` at C=8, diet notes); after this, about 1 %.
    Freezing moves the start-up objects to a generation no collection walks; the higher threshold
    makes the young collections rarer. Garbage in cycles is still collected, later; nothing here
    changes what is kept alive.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def http_protocol() -> Any:
    """uvicorn's ``http`` setting: the one-write httptools protocol, or uvicorn's choice without httptools."""
    try:
        from mcp_gateway.app.one_write import OneWriteHttpTools
    except ImportError:  # no httptools on this platform: uvicorn falls back to h11
        return "auto"
    return OneWriteHttpTools


def proxy_header_options(server: ServerSettings) -> dict[str, Any]:
    """uvicorn's forwarded-header handling for ``server.trusted_proxies``.

    uvicorn believes ``X-Forwarded-For`` from 127.0.0.1 unless told otherwise, so any local process
    could name the client address an audit record carries. Only the configured proxies are believed.
    """
    proxies = list(server.trusted_proxies)
    return {"proxy_headers": bool(proxies), "forwarded_allow_ips": proxies or None}


def bind_listener(host: str, port: int) -> socket.socket:
    """The listening address, bound before anything else starts (as uvicorn would bind it).

    Raises:
        GatewayError: the address is taken, not local, or not allowed (one line, naming it).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        raise GatewayError(f"cannot listen on {shown}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def run_gateway(
    settings: Settings, *, master_key_env: str | None, listener: socket.socket | None = None
) -> None:
    """Serve until SIGINT/SIGTERM. Raises ``GatewayError`` if the gateway cannot start.

    The port is bound first: on a busy port nothing starts (no store opened, no upstream spawned).

    Args:
        listener: the socket ``bind_listener`` bound for ``settings.server`` (bound here if None);
            served, then closed.
    """
    import uvicorn

    from mcp_gateway.app.observed import watched
    from mcp_gateway.app.wiring import build_runtime
    from mcp_gateway.http.app import create_app
    from mcp_gateway.telemetry import apply_config_level, configure_telemetry, watch_gateway
    from mcp_gateway.vault.service import NO_MASTER_KEY

    apply_config_level(settings.telemetry.log_level)
    if listener is None:
        listener = bind_listener(settings.server.host, settings.server.port)
    try:
        runtime = build_runtime(settings, master_key_env=master_key_env)
    except BaseException:
        listener.close()
        raise
    telemetry = configure_telemetry(settings.telemetry)
    unwatch = watch_gateway(watched(runtime))
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
    if settings.console.enabled:
        from mcp_gateway.app.console import with_console

        app = with_console(app, settings, runtime)
    config = uvicorn.Config(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_level="warning",
        access_log=False,
        server_header=False,  # no `server: uvicorn` advertised (and four calls fewer per answer)
        timeout_keep_alive=settings.server.keep_alive_seconds,
        # Logging is configured by telemetry.py; uvicorn must not replace it.
        log_config=None,
        lifespan="on",
        # uvloop and httptools when installed (they are dependencies on Linux and macOS); with
        # httptools, one socket write per answer (``one_write.py``).
        loop="auto",
        http=http_protocol(),
        **proxy_header_options(settings.server),
    )
    settle_heap()
    try:
        uvicorn.Server(config).run(sockets=[listener])
    finally:
        listener.close()
        unwatch()
        runtime.close()
        telemetry.shutdown()
