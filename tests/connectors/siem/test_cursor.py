"""The SIEM cursor store, SQLite and the shared PostgreSQL schema, through the same statements."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import psycopg
import pytest
import siem_receivers
from psycopg import sql
from siem_receivers import Collector

from conftest import PG_DSN
from mcp_gateway.app.databases import migrate_all, postgres_components
from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.config import Settings
from mcp_gateway.connectors.siem.config import HttpSink, SiemSettings
from mcp_gateway.connectors.siem.cursor import (
    CursorMoved,
    PostgresCursorStore,
    SQLCursorStore,
    SQLiteCursorStore,
)
from mcp_gateway.connectors.siem.exporter import SiemExporter
from mcp_gateway.connectors.siem.hec import HecDelivery
from mcp_gateway.storage.lease import LeaseLost, PostgresLease
from mcp_gateway.types import AuditEvent, SecretValue

collector = siem_receivers.collector  # the fixture, by its name here

FAST = SiemSettings(poll_seconds=0.02, retry_initial_seconds=0.02, retry_max_seconds=0.2, batch_size=4)


@pytest.fixture(params=["sqlite", "postgres"])
def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], SQLCursorStore]]:
    """Opens the same cursor store again on each call (a restart, or another replica)."""
    opened: list[SQLCursorStore] = []
    if request.param == "postgres":
        schema = request.getfixturevalue("pg_schema")

        def open_store() -> SQLCursorStore:
            opened.append(PostgresCursorStore(PG_DSN, schema))
            return opened[-1]
    else:

        def open_store() -> SQLCursorStore:
            opened.append(SQLiteCursorStore(tmp_path / "siem-cursor.db"))
            return opened[-1]

    yield open_store
    for store in opened:
        store.close()


def test_a_cursor_written_by_one_store_is_read_by_the_next_one_opened(
    reopen: Callable[[], SQLCursorStore],
) -> None:
    first = reopen()
    assert first.get("splunk") is None
    first.set("splunk", 7)
    first.set("soc", 3)
    first.close()
    assert reopen().all() == {"splunk": 7, "soc": 3}


def test_a_cursor_moves_only_from_where_the_batch_was_read(reopen: Callable[[], SQLCursorStore]) -> None:
    store, other = reopen(), reopen()
    store.set("splunk", 4)
    store.move("splunk", 4, 8)
    # a replica that read after seq 4 and finishes late cannot move the cursor back under another one
    with pytest.raises(CursorMoved, match=r"sink `splunk` .* no longer at seq 4: another replica"):
        other.move("splunk", 4, 6)
    assert other.get("splunk") == 8


def test_the_shared_store_migrates_the_siem_cursor_component(pg_schema: str) -> None:
    settings = Settings.model_validate({"store": {"url": PG_DSN, "schema": pg_schema}})
    [cursor] = [c for c in postgres_components(settings) if c.name == "siem_cursor"]
    assert (cursor.dsn, cursor.schema, cursor.latest) == (PG_DSN, pg_schema, 1)
    done = dict((c.name, applied) for c, applied in migrate_all(settings))
    assert done["siem_cursor"] == [1]
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        table = sql.Identifier(pg_schema, "siem_cursor")
        assert conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone() == (0,)
    PostgresCursorStore(PG_DSN, pg_schema).close()  # opens the migrated table as it is


def _exporter(tmp_path: Path, collector: Collector, cursors: SQLCursorStore, **more: object) -> SiemExporter:
    http = HttpSink(url=collector.url, token="secret://hec_token", allow_private_network=True)
    delivery = HecDelivery("splunk", http, lambda name: SecretValue(name, collector.token.encode()))
    sink = SQLiteAuditSink(tmp_path / "audit.db")
    sink.append([AuditEvent(kind="denied", agent="a", tool="t", decision="deny") for _ in range(10)])
    return SiemExporter("splunk", delivery, "ocsf", sink, cursors, settings=FAST, **more)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_a_batch_whose_cursor_another_replica_moved_does_not_move_it_back(
    tmp_path: Path, collector: Collector, pg_schema: str
) -> None:
    cursors = PostgresCursorStore(PG_DSN, pg_schema)
    exporter = _exporter(tmp_path, collector, cursors)
    try:
        assert await exporter._start() == 0
        cursors.set("splunk", 8)  # meanwhile another replica exported up to seq 8
        with pytest.raises(CursorMoved):
            await exporter._step(0)
        assert cursors.get("splunk") == 8
    finally:
        cursors.close()
        exporter.sink.close()


@pytest.mark.anyio
async def test_an_exporter_that_lost_its_lease_sends_nothing(
    tmp_path: Path, collector: Collector, pg_schema: str
) -> None:
    lease = PostgresLease(PG_DSN, pg_schema, "siem", replica="r1", check_timeout=2)
    await lease.acquire()
    cursors = PostgresCursorStore(PG_DSN, pg_schema)
    exporter = _exporter(tmp_path, collector, cursors, confirm=lease.confirm)
    try:
        await exporter._start()
        with psycopg.connect(PG_DSN, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (lease.backend_pid,))
        with pytest.raises(LeaseLost):
            await exporter._step(0)
        assert collector.events == [] and cursors.get("splunk") == 0
        with anyio.fail_after(1):
            await lease.release()
    finally:
        cursors.close()
        exporter.sink.close()
