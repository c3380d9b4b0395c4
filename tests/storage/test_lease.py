"""Leases on the real local PostgreSQL: one holder at a time, lost with its connection, taken over."""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import psycopg
import pytest

from conftest import PG_DSN
from mcp_gateway.storage.lease import LEASE_LOCK_CLASS, LeaseLost, LocalLease, PostgresLease, run_as_leader

pytestmark = pytest.mark.anyio

FAST = {"retry_seconds": 0.1, "check_seconds": 0.1, "check_timeout": 2.0}


def _lease(schema: str, replica: str, name: str = "siem") -> PostgresLease:
    return PostgresLease(PG_DSN, schema, name, replica=replica, **FAST)  # type: ignore[arg-type]


def _kill(pid: int | None) -> None:
    """End a server session as a crash or a network cut would: the server terminates the backend."""
    assert pid is not None
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)


def _holders(schema: str, name: str) -> list[str]:
    """The ``application_name`` of every session holding the lease's advisory lock."""
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s::oid"
            " AND l.objid = (hashtext(%s)::bigint & 4294967295)::oid",
            (LEASE_LOCK_CLASS, f"{schema}/{name}"),
        ).fetchall()
    return [str(row[0]) for row in rows]


async def _until(predicate: Callable[[], bool], timeout: float = 10) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.02)


async def test_only_one_replica_holds_a_lease_and_the_other_takes_it_when_the_holders_session_dies(
    pg_schema: str,
) -> None:
    first, second = _lease(pg_schema, "r1"), _lease(pg_schema, "r2")
    await first.acquire()
    taken = anyio.Event()
    try:
        async with anyio.create_task_group() as tg:

            async def standby() -> None:
                await second.acquire()
                taken.set()

            tg.start_soon(standby)
            with anyio.move_on_after(0.5):  # five standby attempts
                await taken.wait()
            assert not taken.is_set()
            assert _holders(pg_schema, "siem") == ["mcp-gateway lease siem r1"]

            _kill(first.backend_pid)
            with pytest.raises(LeaseLost, match="lease `siem` lost"):
                await first.confirm()
            with anyio.fail_after(5):
                await taken.wait()
        assert _holders(pg_schema, "siem") == ["mcp-gateway lease siem r2"]
        await second.confirm()
    finally:
        await first.release()
        await second.release()


async def test_a_released_lease_is_taken_by_the_standby_at_its_next_attempt(pg_schema: str) -> None:
    first, second = _lease(pg_schema, "r1"), _lease(pg_schema, "r2")
    await first.acquire()
    await first.release()
    try:
        with anyio.fail_after(2):
            await second.acquire()
        assert _holders(pg_schema, "siem") == ["mcp-gateway lease siem r2"]
        with pytest.raises(LeaseLost, match="not held by r1"):
            await first.confirm()
    finally:
        await second.release()


async def test_leases_of_other_names_or_other_schemas_do_not_block_each_other(pg_schema: str) -> None:
    leases = [
        _lease(pg_schema, "r1", "siem"),
        _lease(pg_schema, "r2", "alerts"),
        _lease(f"{pg_schema}_other", "r3", "siem"),
    ]
    try:
        with anyio.fail_after(5):
            for lease in leases:
                await lease.acquire()
        for lease in leases:
            await lease.confirm()
    finally:
        for lease in leases:
            await lease.release()


async def test_the_service_is_cancelled_when_the_lease_is_lost_and_runs_on_the_standby(
    pg_schema: str,
) -> None:
    running: dict[str, bool] = {"r1": False, "r2": False}
    events: list[tuple[str, str]] = []

    def service(replica: str) -> Callable[[], Coroutine[Any, Any, None]]:
        async def run() -> None:
            running[replica] = True
            try:
                await anyio.sleep_forever()
            finally:
                running[replica] = False

        return run

    async def acquired(lease: object) -> None:
        events.append(("acquired", getattr(lease, "replica", "")))

    async def lost(lease: object) -> None:
        events.append(("lost", getattr(lease, "replica", "")))

    first, second = _lease(pg_schema, "r1"), _lease(pg_schema, "r2")
    async with anyio.create_task_group() as tg:
        tg.start_soon(
            lambda: run_as_leader(first, service("r1"), what="t", on_acquired=acquired, on_lost=lost)
        )
        await _until(lambda: running["r1"])
        tg.start_soon(
            lambda: run_as_leader(second, service("r2"), what="t", on_acquired=acquired, on_lost=lost)
        )
        with anyio.move_on_after(0.4):
            await _until(lambda: running["r2"])
        assert running == {"r1": True, "r2": False}

        killed = time.monotonic()
        _kill(first.backend_pid)
        await _until(lambda: running["r2"] and not running["r1"], timeout=5)
        takeover = time.monotonic() - killed
        tg.cancel_scope.cancel()
    assert events[0] == ("acquired", "r1")
    assert sorted(events) == [("acquired", "r1"), ("acquired", "r2"), ("lost", "r1")]
    # retry every 0.1 s, check every 0.1 s: well inside a second even on a loaded machine
    assert takeover < 2.0, takeover
    assert _holders(pg_schema, "siem") == []  # cancelled: every session ended


async def test_a_takeover_that_cannot_be_recorded_gives_the_lease_up(pg_schema: str) -> None:
    started = False

    async def never() -> None:
        nonlocal started
        started = True

    async def refuse(lease: object) -> None:
        raise RuntimeError("the audit log cannot write")

    first, second = _lease(pg_schema, "r1"), _lease(pg_schema, "r2")
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: run_as_leader(first, never, what="t", on_acquired=refuse))
        # r1 keeps taking the lease and giving it up: r2 gets it in one of the gaps
        with anyio.fail_after(5):
            await second.acquire()
        tg.cancel_scope.cancel()
    await second.release()
    assert not started


async def test_a_local_lease_is_always_held_and_a_service_that_ends_ends_its_runner() -> None:
    lease = LocalLease("siem", replica="solo")
    ran: list[str] = []

    async def once() -> None:
        ran.append("ran")

    with anyio.fail_after(2):
        await run_as_leader(lease, once, what="t")
    await lease.confirm()
    assert ran == ["ran"] and lease.kind == "local"


async def test_a_standby_that_cannot_reach_the_store_keeps_trying_and_says_so_once_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dsn = f"host=127.0.0.1 port={port} user=postgres password=sekrit-lease-pw dbname=test"
    lease = PostgresLease(dsn, "gw", "siem", replica="r1", retry_seconds=0.05, connect_timeout=1)
    with anyio.move_on_after(0.5) as scope:
        await lease.acquire()
    assert scope.cancelled_caught and lease.backend_pid is None
    said = [r.getMessage() for r in caplog.records if "cannot reach the shared store" in r.getMessage()]
    assert len(said) == 1 and "Connection refused" in said[0]
    assert "sekrit-lease-pw" not in caplog.text
    await lease.release()
