"""Agent and admin token stores on SQLite and on the real PostgreSQL (each test in its own schema)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from conftest import GatewayFactory
from mcp_gateway.app.wiring import open_admins, open_agents
from mcp_gateway.config import Settings
from mcp_gateway.errors import AuthError, GatewayError, StoreError
from mcp_gateway.identity.admin_tokens import AdminTokens, PostgresAdminStore, SQLiteAdminStore
from mcp_gateway.identity.agents import (
    AgentTokens,
    PostgresAgentStore,
    SQLiteAgentStore,
    TokenStore,
)

DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


Opener = Callable[..., AgentTokens]


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path, pg_schema: str) -> Iterator[Opener]:
    """Opens agent-token stores that share one database (a file, or a PostgreSQL schema)."""
    opened: list[TokenStore] = []

    def make(**kwargs: object) -> AgentTokens:
        store: AgentTokens
        if request.param == "sqlite":
            kwargs.pop("cache_seconds", None)
            store = SQLiteAgentStore(tmp_path / "agents.db", **kwargs)  # type: ignore[arg-type]
        else:
            store = PostgresAgentStore(DSN, pg_schema, **kwargs)  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def wait_until_refused(verify: Callable[[], object], deadline: float) -> float:
    """Seconds until ``verify`` raises AuthError (fails the test past ``deadline`` seconds)."""
    start = time.monotonic()
    while time.monotonic() - start < deadline:
        try:
            verify()
        except AuthError:
            return time.monotonic() - start
    pytest.fail(f"still accepted after {deadline} s")


def test_an_issued_token_verifies_and_only_its_exact_secret_does(open_store: Opener) -> None:
    store = open_store()
    record, token = store.create("etl-bot")
    principal = store.verify(token)
    assert (principal.agent, principal.token_id) == ("etl-bot", record.token_id)
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    with pytest.raises(AuthError, match="unknown token"):
        store.verify(forged)
    with pytest.raises(AuthError, match="malformed"):
        store.verify("mgw_short")
    unknown = "mgw_" + "z" * 12 + "_" + "A" * 43
    with pytest.raises(AuthError, match="unknown token"):
        store.verify(unknown)


def test_the_store_keeps_a_salted_hash_never_the_secret(
    open_store: Opener, tmp_path: Path, pg_schema: str
) -> None:
    store = open_store()
    _, token = store.create("etl-bot")
    secret = token.rsplit("_", 1)[1].encode()
    if isinstance(store, PostgresAgentStore):
        with psycopg.connect(DSN) as conn:
            rows = conn.execute(f'SELECT salt, hash FROM "{pg_schema}".agent_tokens').fetchall()  # noqa: S608
        assert all(secret not in bytes(salt) + bytes(digest) for salt, digest in rows)
    else:
        assert secret not in (tmp_path / "agents.db").read_bytes()


def test_expired_and_revoked_tokens_are_refused(open_store: Opener) -> None:
    clock = Clock()
    store = open_store(clock=clock)
    _, expiring = store.create("a", expires_at=clock.now + 60)
    _, revoked = store.create("b")
    store.verify(expiring)
    clock.now += 61
    with pytest.raises(AuthError, match="expired"):
        store.verify(expiring)  # expiry is checked even on a cached verification
    assert store.revoke("b") == 1
    with pytest.raises(AuthError, match="revoked"):
        store.verify(revoked)
    assert store.revoke("b") == 0
    assert [(r.name, r.revoked_at is not None) for r in store.list()] == [("a", False), ("b", True)]
    with pytest.raises(GatewayError, match="expiry must be in the future"):
        store.create("c", expires_at=clock.now - 1)
    with pytest.raises(GatewayError, match="must match"):
        store.create("bad name!")


def test_a_token_issued_by_one_instance_verifies_on_another_and_a_revocation_there_lands_within_a_second(
    open_store: Opener,
) -> None:
    replica_a, replica_b = open_store(), open_store(cache_seconds=0.9)
    _, token = replica_a.create("etl-bot")
    assert replica_b.verify(token).agent == "etl-bot"  # now cached on B
    replica_a.revoke("etl-bot")
    assert wait_until_refused(lambda: replica_b.verify(token), deadline=1.0) < 1.0


def test_a_revocation_through_the_same_instance_is_refused_at_once(open_store: Opener) -> None:
    store = open_store(cache_seconds=0.9)
    record, token = store.create("etl-bot")
    store.verify(token)
    store.revoke(record.token_id)
    with pytest.raises(AuthError, match="revoked"):
        store.verify(token)


def test_a_verification_cache_of_a_second_or_more_is_refused(pg_schema: str) -> None:
    with pytest.raises(GatewayError, match="less than one second"):
        PostgresAgentStore(DSN, pg_schema, cache_seconds=1.0)


def test_an_admin_token_from_the_cli_verifies_on_a_gateway_store_and_its_revocation_lands_within_a_second(
    tmp_path: Path, pg_schema: str
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(f"data_dir: data\nstore: {{url: '{DSN}', schema: {pg_schema}}}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
    cli = [sys.executable, "-c", "from mcp_gateway.cli import main; main()"]
    created = subprocess.run(
        [*cli, "admin", "create", "alice", "-c", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    settings = Settings.model_validate(
        {"data_dir": str(tmp_path / "data"), "store": {"url": DSN, "schema": pg_schema}}
    )
    gateway_side = open_admins(settings)
    try:
        assert isinstance(gateway_side, PostgresAdminStore)
        assert gateway_side.verify(token).name == "alice"
        assert not (tmp_path / "data" / "admins.db").exists()
        revoked = subprocess.run(
            [*cli, "admin", "revoke", "alice", "-c", str(config)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert revoked.returncode == 0, revoked.stderr
        assert wait_until_refused(lambda: gateway_side.verify(token), deadline=1.0) < 1.0
        listed = subprocess.run(
            [*cli, "admin", "list", "-c", str(config)], capture_output=True, text=True, env=env, timeout=60
        )
        assert "alice" in listed.stdout and "revoked" in listed.stdout
    finally:
        gateway_side.close()


def test_an_agent_token_is_never_an_admin_token(pg_schema: str) -> None:
    agents, admins = PostgresAgentStore(DSN, pg_schema), PostgresAdminStore(DSN, pg_schema)
    try:
        _, agent_token = agents.create("bot")
        with pytest.raises(AuthError, match="not an admin token"):
            admins.verify(agent_token)
        _, admin_token = admins.create("bot")
        with pytest.raises(AuthError, match="malformed"):
            agents.verify(admin_token)
    finally:
        agents.close()
        admins.close()


def test_read_only_commands_do_not_create_a_postgres_token_store(pg_schema: str) -> None:
    settings = Settings.model_validate({"store": {"url": DSN, "schema": pg_schema}})
    with pytest.raises(StoreError, match="no agent_tokens store"):
        open_agents(settings, read_only=True)
    with psycopg.connect(DSN) as conn:
        assert conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (pg_schema,)).fetchone() is None


def test_an_unreachable_database_is_a_store_error_without_the_password() -> None:
    dsn = "postgresql://postgres:hunter2-secret@127.0.0.1:1/test?connect_timeout=5"
    with pytest.raises(StoreError) as info:
        PostgresAgentStore(dsn, "whatever")
    message = str(info.value)
    assert "hunter2-secret" not in message and "agent token store" in message and "refused" in message


def test_the_sqlite_stores_stay_the_default(tmp_path: Path) -> None:
    settings = Settings.model_validate({"data_dir": str(tmp_path)})
    agents, admins = open_agents(settings), open_admins(settings)
    try:
        assert isinstance(agents, SQLiteAgentStore) and isinstance(admins, SQLiteAdminStore)
        assert isinstance(admins, AdminTokens)
        assert (tmp_path / "agents.db").is_file() and (tmp_path / "admins.db").is_file()
    finally:
        agents.close()
        admins.close()


def test_a_sqlite_verification_is_reused_only_while_nothing_else_wrote_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    gateway_side = SQLiteAgentStore(tmp_path / "agents.db", clock=clock)
    cli_side = SQLiteAgentStore(tmp_path / "agents.db", clock=clock)  # another connection
    try:
        _, token = cli_side.create("etl-bot", expires_at=clock.now + 60)
        _, other = cli_side.create("other-bot")
        assert gateway_side.verify(token).agent == "etl-bot"
        lookups: list[str] = []
        lookup = gateway_side._lookup
        monkeypatch.setattr(gateway_side, "_lookup", lambda t: lookups.append(t) or lookup(t))
        assert gateway_side.verify(token).agent == "etl-bot"
        assert lookups == []  # remembered: no SELECT, no salted hash
        cli_side.revoke("etl-bot")
        with pytest.raises(AuthError, match="revoked"):  # the very next verification
            gateway_side.verify(token)
        assert gateway_side.verify(other).agent == "other-bot"
        clock.now += 3600
        _, fresh = cli_side.create("late-bot", expires_at=clock.now + 60)
        assert gateway_side.verify(fresh).agent == "late-bot"
        clock.now += 61
        with pytest.raises(AuthError, match="expired"):  # expiry is checked on a remembered one too
            gateway_side.verify(fresh)
    finally:
        gateway_side.close()
        cli_side.close()


def test_a_revocation_by_the_cli_process_refuses_the_next_request_and_is_audited(
    make_gateway: GatewayFactory,
) -> None:
    gw = make_gateway("version: 1\nagents: {}\n")
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    headers = {
        "Accept": "application/json, text/event-stream",
        "Authorization": f"Bearer {gw.tokens['agent-a']}",
    }

    def status() -> int:
        return httpx.post(gw.url, json=body, headers=headers, timeout=10).status_code

    assert status() == 200
    assert status() == 200  # remembered now
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
    cli = [sys.executable, "-c", "from mcp_gateway.cli import main; main()"]
    revoked = subprocess.run(
        [*cli, "agents", "revoke", "agent-a", "-c", str(gw.config_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert revoked.returncode == 0, revoked.stderr
    assert status() == 401
    failure = gw.audit()[-1]
    assert failure.kind == "auth_failure" and failure.detail["reason"] == "revoked token"
