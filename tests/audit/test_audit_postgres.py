"""The PostgreSQL audit store, against the real server on 127.0.0.1:5432 (db ``test``)."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from mcp_gateway.audit.postgres import CHAIN_LOCK_CLASS, PostgresAuditSink
from mcp_gateway.audit.verify import verify
from mcp_gateway.errors import AuditWriteError
from mcp_gateway.types import AuditEvent, AuditRecord

DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"


@pytest.fixture
def schema() -> Iterator[str]:
    """A fresh schema name per test; the schema is dropped at teardown."""
    name = f"audit_test_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(DSN, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def intact(store: PostgresAuditSink) -> list[AuditRecord]:
    records = store.records()
    report = verify(records, expected_head=store.head())
    assert report.ok, report.problems
    return records


def test_appended_records_are_chained_and_read_back_exactly(schema: str) -> None:
    with PostgresAuditSink(DSN, schema=schema, clock=lambda: 1700000000.123456) as store:
        assert store.head() is None
        first = store.append(
            [
                AuditEvent(
                    kind="intent", call_id="c1", agent="a", tool="t", args={"q": "é", "n": [1, 2.5e-9]}
                ),
                AuditEvent(
                    kind="outcome", call_id="c1", agent="a", tool="t", status="ok", detail={"b": 1, "a": 2}
                ),
            ]
        )
        (third,) = store.append([AuditEvent(kind="denied", agent="b", tool="t", decision="deny")])
        assert [r.seq for r in [*first, third]] == [1, 2, 3] and third.prev_hash == first[1].hash
    with PostgresAuditSink(DSN, schema=schema) as reopened:
        assert intact(reopened) == [*first, third]  # byte-exact: the hashes still match
        assert reopened.head() == (3, third.hash)
        assert [r.seq for r in reopened.records(after_seq=1, limit=1)] == [2]
        assert [r.seq for r in reopened.query(agent="a")] == [1, 2]
        assert [r.seq for r in reopened.query(agent="a", limit=1)] == [2]
        assert [r.seq for r in reopened.query(decision="deny", tool="t")] == [3]
        assert [r.seq for r in reopened.query(kind="outcome", call_id="c1", since=1700000000.0)] == [2]
        assert reopened.query(since=1800000000.0) == []


def test_a_schema_name_is_quoted_never_spliced_into_sql(schema: str) -> None:
    odd = f'{schema} "x"; drop'
    try:
        with PostgresAuditSink(DSN, schema=odd) as store:
            store.append([AuditEvent(kind="intent")])
            assert len(intact(store)) == 1
    finally:
        with psycopg.connect(DSN, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(odd)))


def test_two_replicas_appending_concurrently_keep_one_valid_chain(schema: str) -> None:
    sinks = [PostgresAuditSink(DSN, schema=schema) for _ in range(2)]
    start = threading.Barrier(2)
    failures: list[BaseException] = []

    def replica(store: PostgresAuditSink, name: str) -> None:
        try:
            start.wait(timeout=10)
            for i in range(100):
                store.append([AuditEvent(kind="intent", call_id=f"{name}-{i}")])
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=replica, args=(s, n)) for s, n in zip(sinks, "ab", strict=True)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert failures == [] and not any(t.is_alive() for t in threads)
        records = intact(sinks[0])
    finally:
        for store in sinks:
            store.close()
    assert [r.seq for r in records] == list(range(1, 201))
    for name in "ab":
        assert [r.call_id for r in records if r.call_id[0] == name] == [f"{name}-{i}" for i in range(100)]


def test_a_chain_lock_held_too_long_fails_the_append_within_the_lock_timeout(schema: str) -> None:
    with PostgresAuditSink(DSN, schema=schema, lock_timeout=0.3) as store, psycopg.connect(DSN) as other:
        store.append([AuditEvent(kind="intent", call_id="before")])
        other.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (CHAIN_LOCK_CLASS, schema))
        started = time.monotonic()
        with pytest.raises(AuditWriteError, match="LockNotAvailable"):
            store.append([AuditEvent(kind="intent", call_id="stuck")])
        assert time.monotonic() - started < 10
        other.rollback()  # releases the lock
        store.append([AuditEvent(kind="intent", call_id="after")])
        assert [r.call_id for r in intact(store)] == ["before", "after"]


def test_an_unreachable_database_raises_audit_write_error_without_the_dsn() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(AuditWriteError, match="cannot be set up") as caught:
        PostgresAuditSink(f"host=127.0.0.1 port={port} user=postgres password=s3cret dbname=test")
    assert "s3cret" not in str(caught.value)


def test_a_dropped_connection_fails_one_append_then_reconnects(schema: str) -> None:
    dsn = f"{DSN} application_name={schema}"
    with PostgresAuditSink(dsn, schema=schema) as store:
        store.append([AuditEvent(kind="intent", call_id="before")])
        with psycopg.connect(DSN, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
                (schema,),
            ).fetchone()
        assert killed == (1,)
        with pytest.raises(AuditWriteError):
            store.append([AuditEvent(kind="intent", call_id="lost")])
        store.append([AuditEvent(kind="intent", call_id="after")])
        assert [r.call_id for r in intact(store)] == ["before", "after"]


def test_checkpoints_and_hmac_searches_work_in_postgres_as_in_sqlite(schema: str) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from mcp_gateway.audit.checkpoint import key_id_of, sign_checkpoint, verify_with_checkpoints

    key = Ed25519PrivateKey.generate()
    mac = "ab" * 32
    with PostgresAuditSink(DSN, schema=schema) as store:
        records = store.append(
            [
                AuditEvent(kind="intent", call_id="1", args={"password": {"hmac": mac}}),
                AuditEvent(kind="intent", call_id="2", args={"password": {"hmac": "cd" * 32}}),
            ]
        )
        assert store.checkpoints() == []
        first = sign_checkpoint(key, 1, records[0].hash, 1700000000.123456789)
        second = sign_checkpoint(key, 2, records[1].hash, 1700000001.5)
        store.write_checkpoint(first)
        store.write_checkpoint(second)
        assert [r.call_id for r in store.query(arg_hmac=mac)] == ["1"]
    with PostgresAuditSink(DSN, schema=schema) as reopened:
        assert reopened.checkpoints() == [first, second]  # ts reads back exactly: signatures still hold
        report = verify_with_checkpoints(
            reopened.records(), reopened.checkpoints(), {key_id_of(key.public_key()): key.public_key()}
        )
        assert report.ok and report.checkpoints == 2
