"""Shared fixtures: a real gateway under uvicorn on 127.0.0.1, real upstreams, the official SDK client."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
import uvicorn
import yaml
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mcp_gateway.app.runner import http_protocol, proxy_header_options
from mcp_gateway.app.wiring import Runtime, build_runtime, key_file_path, open_agents, open_vault
from mcp_gateway.config import Settings
from mcp_gateway.http.app import create_app
from mcp_gateway.telemetry import TelemetrySettings, configure_tracing
from mcp_gateway.tools.base import Toolset
from mcp_gateway.types import AuditSink
from mcp_gateway.vault.keys import init_key_file

FIXTURES = Path(__file__).parent / "fixtures"
LEAKY = FIXTURES / "leaky_upstream.py"
ERAS = ["legacy", "auto"]
ERA_VERSION = {"legacy": "2025-11-25", "auto": "2026-07-28"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


_SPAN_EXPORTER: InMemorySpanExporter | None = None


@pytest.fixture
def span_exporter() -> InMemorySpanExporter:
    """Every span the gateway exports in this process (OpenTelemetry allows one provider per process)."""
    return fresh_span_exporter()


def fresh_span_exporter() -> InMemorySpanExporter:
    """The process's in-memory span exporter, emptied (for fixtures wider than a function)."""
    global _SPAN_EXPORTER
    if _SPAN_EXPORTER is None:
        _SPAN_EXPORTER = InMemorySpanExporter()
        configure_tracing(TelemetrySettings(exporter="console"), exporter=_SPAN_EXPORTER)
    _SPAN_EXPORTER.clear()
    return _SPAN_EXPORTER


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Poll ``predicate`` until true; fail after ``timeout`` seconds (a bounded wait, not a sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class RunningGateway:
    url: str
    base: str
    runtime: Runtime
    settings: Settings
    tokens: dict[str, str]
    call_log: Path
    server: uvicorn.Server
    thread: threading.Thread
    secrets: dict[str, str] = field(default_factory=dict)
    admin_token: str | None = None

    @property
    def config_path(self) -> Path:
        return self.settings.data_dir.parent / "gateway.yaml"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        self.runtime.close()

    def audit(self) -> list[Any]:
        return self.runtime.sink.records()

    def readiness(self) -> dict[str, Any]:
        """The detailed ``/readyz`` answer, which needs an admin token (one is made on first use)."""
        if self.admin_token is None:
            assert self.runtime.admins is not None
            self.admin_token = self.runtime.admins.create("readyz-reader")[1]
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        body: dict[str, Any] = httpx.get(f"{self.base}/readyz", headers=headers, timeout=5).json()
        return body

    def layer(self, kind: type[Any]) -> Any:
        """The ASGI layer of type ``kind`` in this gateway's app (each layer keeps the next as ``app``
        and the MCP route's as ``mcp``)."""
        app: Any = self.server.config.app
        while app is not None and not isinstance(app, kind):
            app = getattr(app, "mcp", None) or getattr(app, "app", None)
        assert app is not None, f"no {kind.__name__} layer"
        return app


@contextlib.asynccontextmanager
async def connect(url: str, token: str | None, mode: str = "auto") -> AsyncIterator[Client]:
    async with connect_with(url, token, mode) as client:
        yield client


@contextlib.asynccontextmanager
async def connect_with(
    url: str, token: str | None, mode: str = "auto", **options: Any
) -> AsyncIterator[Client]:
    """``connect`` with further ``mcp.Client`` options (sampling / elicitation callbacks, ...)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(transport, mode=mode, **options) as client:  # type: ignore[arg-type]
            yield client


@pytest.fixture
def http_upstream(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The leaky upstream served over Streamable HTTP in its own process; yields (url, call log)."""
    port = free_port()
    call_log = tmp_path / "http-upstream-calls.log"
    proc = subprocess.Popen(
        [sys.executable, str(LEAKY), "http", str(port)],
        env={"LEAKY_CALL_LOG": str(call_log), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _port_open(port), what="http upstream")
        yield f"http://127.0.0.1:{port}/mcp", call_log
    finally:
        # Not terminate(): a graceful uvicorn shutdown waits for open streams, and a gateway still
        # running holds one (its subscriptions/listen stream). The process has nothing to flush.
        proc.kill()
        proc.wait(timeout=10)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


GatewayFactory = Callable[..., RunningGateway]


@pytest.fixture
def make_gateway(tmp_path: Path) -> Iterator[GatewayFactory]:
    """Build and start gateways; each is stopped at teardown."""
    with gateways(tmp_path) as factory:
        yield factory


@contextlib.contextmanager
def gateways(tmp_path: Path) -> Iterator[GatewayFactory]:
    """Build and start gateways under ``tmp_path``; each is stopped on exit (for wider-scoped fixtures)."""
    started: list[RunningGateway] = []

    def factory(
        policy: str,
        *,
        agents: tuple[str, ...] = ("agent-a",),
        secrets: dict[str, str] | None = None,
        upstreams: dict[str, Any] | None = None,
        sealed: bool = False,
        sink: AuditSink | None = None,
        name: str = "gw",
        oauth: dict[str, Any] | None = None,
        audit: dict[str, Any] | None = None,
        watch_policy: bool = True,
        toolsets: Sequence[Toolset] = (),
        config: dict[str, Any] | None = None,
        server_options: dict[str, Any] | None = None,
    ) -> RunningGateway:
        root = tmp_path / name
        (root / "policies").mkdir(parents=True, exist_ok=True)
        (root / "policies" / "policy.yaml").write_text(policy, encoding="utf-8")
        call_log = root / "upstream-calls.log"
        port = free_port()
        ups = upstreams if upstreams is not None else {"leaky": leaky_stdio(call_log)}
        raw = {
            "data_dir": str(root / "data"),
            "policies": str(root / "policies"),
            # Without the file watch a gateway stops in milliseconds instead of seconds.
            "server": {
                "host": "127.0.0.1",
                "port": port,
                "watch_policy": watch_policy,
                **(server_options or {}),
            },
            "upstreams": ups,
        }
        if oauth is not None:
            raw["oauth"] = oauth
        if audit is not None:
            raw["audit"] = audit
        raw.update(config or {})  # further gateway.yaml sections (warehouses, orchestrators, ...)
        # The same settings on disk, so tests can point the admin CLI at this gateway's stores.
        (root / "gateway.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
        settings = Settings.model_validate(raw)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        if not sealed:
            key_file = key_file_path(settings)
            assert key_file is not None
            init_key_file(key_file)
            vault = open_vault(settings, master_key_env=None)
            for secret_name, value in (secrets or {}).items():
                vault.put(secret_name, value.encode())
        store = open_agents(settings)
        tokens = {agent: store.create(agent)[1] for agent in agents}
        store.close()
        runtime = build_runtime(settings, master_key_env=None, sink=sink, toolsets=toolsets)
        app = create_app(
            settings,
            runtime.gateway,
            runtime.agents,
            approvals=runtime.approvals,
            verify_admin=runtime.admins.verify if runtime.admins is not None else None,
        )
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=port,
                log_level="warning",
                lifespan="on",
                http=http_protocol(),  # what `mcp-gateway serve` runs
                server_header=False,
                **proxy_header_options(settings.server),
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        base = f"http://127.0.0.1:{port}"
        # Startup finished (uvicorn sets `started` after the lifespan's startup): /readyz alone would
        # never say 200 for a gateway started sealed on purpose.
        wait_until(lambda: server.started and _http_ok(f"{base}/healthz"), what="gateway startup")
        gw = RunningGateway(
            f"{base}/mcp", base, runtime, settings, tokens, call_log, server, thread, dict(secrets or {})
        )
        started.append(gw)
        return gw

    try:
        yield factory
    finally:
        for gw in started:
            gw.stop()


Grant = str | tuple[str, dict[str, Any]]
"""A tool pattern, or a pattern with its argument constraints."""

CONSTRAINED_ECHO: Grant = ("leaky.echo", {"text": {"max_length": 40, "not_in": ["forbidden"]}})
"""``leaky.echo`` with a limit a test can break (a long text) and a value it can send to be denied."""


def grants_policy(grants: dict[str, list[Grant]]) -> str:
    """A policy giving each agent its grants (for tests whose subject is not the policy)."""
    agents: dict[str, Any] = {}
    for agent, entries in grants.items():
        rules = []
        for i, entry in enumerate(entries):
            tool, args = (entry, None) if isinstance(entry, str) else entry
            rules.append({"id": f"{agent}-{i}", "tool": tool, **({"args": args} if args else {})})
        agents[agent] = {"grants": rules}
    return yaml.safe_dump({"version": 1, "agents": agents}, sort_keys=False)


def leaky_stdio(call_log: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "transport": "stdio",
        "command": sys.executable,
        "args": [str(LEAKY), "stdio"],
        "env": {"LEAKY_CALL_LOG": str(call_log), **(env or {})},
    }


SUMMARY: list[str] = []
"""Lines tests want in the run's output whatever its verbosity (the conformance pass sets)."""


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SUMMARY:
        terminalreporter.section("recorded results")
        for line in SUMMARY:
            terminalreporter.write_line(line)


PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
"""The local PostgreSQL (trust auth) that store tests use, each in a schema of its own."""


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema name for one test; the schema is dropped at teardown."""
    import uuid

    import psycopg
    from psycopg import sql

    name = f"store_test_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


REDIS_URL = "redis://127.0.0.1:6379/0"
"""The local Redis the quota tests use, each under a key prefix of its own."""


@contextlib.contextmanager
def quota_stores(backend: str, folder: Path) -> Iterator[Callable[[], Any]]:
    """Opens the same quota store again on each call (a restart, or another replica): SQLite in
    ``folder`` or the real Redis under a fresh prefix; every store closed and the keys removed after.

    The prefix holds glob characters: Redis SCAN must match it literally, never a neighbour's keys.
    """
    import uuid

    from mcp_gateway.quotas.store import RedisQuotaStore, SQLiteQuotaStore

    prefix = f"mgw-test:[{uuid.uuid4().hex}]*?:"
    opened: list[SQLiteQuotaStore | RedisQuotaStore] = []

    def open_store() -> SQLiteQuotaStore | RedisQuotaStore:
        store: SQLiteQuotaStore | RedisQuotaStore
        if backend == "sqlite":
            store = SQLiteQuotaStore(folder / "quotas.db")
        else:
            store = RedisQuotaStore(REDIS_URL, key_prefix=prefix)
        opened.append(store)
        return store

    try:
        yield open_store
    finally:
        for store in opened:
            store.close()
        if backend == "redis":
            clean_redis_prefix(prefix)


def clean_redis_prefix(prefix: str) -> None:
    """Delete every Redis key under ``prefix``, matched literally (glob characters escaped)."""
    import redis

    literal = "".join(f"\\{ch}" if ch in "*?[]\\" else ch for ch in prefix)
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{literal}*"))
    if keys:
        client.delete(*keys)
    client.close()
