"""Versioned PostgreSQL migrations (``storage/migrate.py``, ``app/databases.py``), on the real server."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from mcp_gateway.app.databases import migrate_all, postgres_components, schema_status
from mcp_gateway.approvals.sql import PostgresApprovalStore
from mcp_gateway.audit.postgres import PostgresAuditSink
from mcp_gateway.cli import app
from mcp_gateway.config import Settings, load_settings
from mcp_gateway.errors import StoreError
from mcp_gateway.identity.agents import PostgresAgentStore
from mcp_gateway.storage.migrate import Migration, migrate, versions
from mcp_gateway.types import AuditEvent
from mcp_gateway.vault.store import PostgresSecretStore

DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
COMPONENTS = {
    "audit",
    "vault",
    "approvals",
    "agent_tokens",
    "admin_tokens",
    "pins",
    "rerun_keys",
    "request_states",
    "incidents",
    "siem_cursor",
}


def shared(schema: str) -> Settings:
    return Settings.model_validate({"store": {"url": DSN, "schema": schema}})


def version_rows(schema: str) -> list[tuple[str, int]]:
    with psycopg.connect(DSN) as conn:
        rows = conn.execute(
            sql.SQL("SELECT component, version FROM {} ORDER BY component, version").format(
                sql.Identifier(schema, "schema_version")
            )
        ).fetchall()
    return [(str(c), int(v)) for c, v in rows]


def test_migrating_an_empty_database_creates_every_store_at_its_latest_version(pg_schema: str) -> None:
    done = migrate_all(shared(pg_schema))
    assert {c.name for c, _ in done} == COMPONENTS
    assert all(applied == list(range(1, c.latest + 1)) for c, applied in done)
    assert {c.name: v for c, v in schema_status(shared(pg_schema))} == {c.name: c.latest for c, _ in done}


def test_migrating_twice_changes_nothing(pg_schema: str) -> None:
    migrate_all(shared(pg_schema))
    before = version_rows(pg_schema)
    assert all(applied == [] for _, applied in migrate_all(shared(pg_schema)))
    assert version_rows(pg_schema) == before
    assert len(before) == len(set(before))


def test_a_database_made_before_migrations_is_recognised_and_upgraded_with_its_data(pg_schema: str) -> None:
    # The tables as the gateway created them before versioned migrations (the approvals table from
    # before the two-person rule, a vault from before key checks), holding data.
    ident = sql.Identifier
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident(pg_schema)))
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (id TEXT PRIMARY KEY, agent TEXT NOT NULL, tool TEXT NOT NULL,"
                " args_hash TEXT NOT NULL, args TEXT NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL,"
                " created_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION NOT NULL,"
                " ttl_seconds DOUBLE PRECISION NOT NULL, status TEXT NOT NULL, decided_by TEXT,"
                " decided_at DOUBLE PRECISION, note TEXT, used_at DOUBLE PRECISION, used_call_id TEXT)"
            ).format(ident(pg_schema, "approvals"))
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {} VALUES ('a1', 'bot', 'db.drop', 'h', '{{}}', 'why', '{{}}', 1, 9e12, 60,"
                " 'pending', NULL, NULL, NULL, NULL, NULL)"
            ).format(ident(pg_schema, "approvals"))
        )
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (name TEXT PRIMARY KEY, envelope BYTEA NOT NULL, key_id TEXT NOT NULL,"
                " created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL)"
            ).format(ident(pg_schema, "secrets"))
        )
        conn.execute(
            sql.SQL("CREATE TABLE {} (key TEXT PRIMARY KEY, value BIGINT NOT NULL)").format(
                ident(pg_schema, "meta")
            )
        )
        conn.execute(sql.SQL("INSERT INTO {} VALUES ('generation', 7)").format(ident(pg_schema, "meta")))
    # The audit table exactly as the old code made it: its own set-up, then one record.
    old_audit = PostgresAuditSink(DSN, schema=pg_schema)
    (record,) = old_audit.append([AuditEvent(kind="intent", agent="bot", tool="db.drop")])
    old_audit.close()
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE {}").format(ident(pg_schema, "schema_version")))
    with psycopg.connect(DSN, autocommit=True) as conn:
        assert versions(conn, pg_schema) is None

    migrate_all(shared(pg_schema))

    assert {c for c, _ in version_rows(pg_schema)} == COMPONENTS
    approvals = PostgresApprovalStore(DSN, schema=pg_schema)
    old = approvals.get("a1")
    assert old is not None and old.status == "pending" and old.min_approvers == 1 and old.approvers == ()
    approvals.close()
    vault = PostgresSecretStore(DSN, schema=pg_schema)
    assert vault.generation() == 7 and vault.key_checks() == {}
    vault.close()
    with PostgresAuditSink(DSN, schema=pg_schema, create=False) as audit:
        assert audit.records() == [record]


def test_two_migrations_racing_apply_each_step_once(pg_schema: str) -> None:
    settings = [shared(pg_schema) for _ in range(3)]
    start = threading.Barrier(3)
    failures: list[BaseException] = []
    applied: list[list[int]] = []

    def run(s: Settings) -> None:
        try:
            start.wait(timeout=10)
            applied.extend(a for _, a in migrate_all(s))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in settings]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not failures
    assert sum(len(a) for a in applied) == sum(c.latest for c in postgres_components(settings[0]))
    rows = version_rows(pg_schema)
    assert len(rows) == len(set(rows))


def test_a_schema_newer_than_this_gateway_is_refused_and_left_alone(pg_schema: str) -> None:
    migrate_all(shared(pg_schema))
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(
            sql.SQL("INSERT INTO {} VALUES ('agent_tokens', 2, 'from the future', 0)").format(
                sql.Identifier(pg_schema, "schema_version")
            )
        )
    with pytest.raises(StoreError, match="newer than this gateway"):
        PostgresAgentStore(DSN, pg_schema)
    assert ("agent_tokens", 2) in version_rows(pg_schema)


def test_later_migrations_run_once_in_order() -> None:
    steps = (
        Migration(1, "one", ("CREATE TABLE {t} (n INTEGER)",), {"t": "counter"}),
        Migration(2, "two", ("INSERT INTO {t} VALUES (2)",), {"t": "counter"}),
    )
    schema = "store_test_order_" + str(threading.get_ident())
    try:
        with psycopg.connect(DSN, autocommit=True) as conn:
            assert migrate(conn, schema, "counter", steps[:1]) == [1]
            assert migrate(conn, schema, "counter", steps) == [2]
            assert migrate(conn, schema, "counter", steps) == []
            count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "counter")))
            assert count.fetchone() == (1,)
    finally:
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def test_db_commands_migrate_then_report_and_status_creates_nothing(pg_schema: str, tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(f"store: {{url: '{DSN}', schema: {pg_schema}}}\n")
    runner = CliRunner()
    status = runner.invoke(app, ["db", "status", "-c", str(config)])
    assert status.exit_code == 1 and "not set up" in status.output
    with psycopg.connect(DSN) as conn:
        assert conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (pg_schema,)).fetchone() is None
    migrated = runner.invoke(app, ["db", "migrate", "-c", str(config)])
    assert migrated.exit_code == 0, migrated.output
    assert "applied 1" in migrated.output
    again = runner.invoke(app, ["db", "migrate", "-c", str(config)])
    assert again.exit_code == 0 and "applied" not in again.output
    status = runner.invoke(app, ["db", "status", "-c", str(config)])
    assert status.exit_code == 0 and status.output.count("up to date") == len(COMPONENTS)
    assert load_settings(config).store is not None
