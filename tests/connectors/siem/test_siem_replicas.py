"""Two replicas sharing one PostgreSQL store export the audit log once, and the standby takes over.

Each "replica" here is what a gateway process registers (``app.monitoring.leader_service`` around a
``SiemService``), with connections of its own: audit store, cursor store, lease. They run in one
process, against the real local PostgreSQL and a real HTTP (HEC) collector.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import anyio
import psycopg
import pytest
import siem_receivers
from siem_receivers import Collector

from conftest import CONSTRAINED_ECHO, PG_DSN, GatewayFactory, connect, grants_policy
from mcp_gateway.app.monitoring import leader_service
from mcp_gateway.audit.log import AuditLog
from mcp_gateway.audit.postgres import PostgresAuditSink
from mcp_gateway.connectors.siem.config import SiemSettings
from mcp_gateway.connectors.siem.cursor import PostgresCursorStore
from mcp_gateway.connectors.siem.exporter import SiemService
from mcp_gateway.storage.lease import PostgresLease
from mcp_gateway.types import AuditEvent, SecretValue

collector = siem_receivers.collector  # the fixture, by its name here

pytestmark = pytest.mark.anyio

POLICY = grants_policy({"agent-a": [CONSTRAINED_ECHO]})
LEASE_TIMING = {"retry_seconds": 0.2, "check_seconds": 0.2, "check_timeout": 2.0}


@dataclass
class Replica:
    name: str
    sink: PostgresAuditSink
    audit: AuditLog
    lease: PostgresLease
    siem: SiemService

    def delivered(self) -> int:
        return sum(exporter.delivered for exporter in self.siem.exporters)


def _replica(name: str, schema: str, tmp_path: Path, collector: Collector) -> Replica:
    settings = SiemSettings.model_validate(
        {
            "sinks": {
                "splunk": {
                    "type": "http",
                    "url": collector.url,
                    "token": "secret://hec_token",
                    "allow_private_network": True,
                }
            },
            "batch_size": 4,
            "poll_seconds": 0.02,
            "retry_initial_seconds": 0.02,
            "retry_max_seconds": 0.2,
        }
    )
    sink = PostgresAuditSink(PG_DSN, schema=schema)
    lease = PostgresLease(PG_DSN, schema, "siem", replica=name, **LEASE_TIMING)  # type: ignore[arg-type]
    siem = SiemService(
        settings,
        tmp_path / name,
        sink,
        resolve_secret=lambda secret: SecretValue(secret, collector.token.encode()),
        open_cursors=partial(PostgresCursorStore, PG_DSN, schema),
        confirm=lease.confirm,
    )
    return Replica(name, sink, AuditLog(sink), lease, siem)


async def _until(predicate: Callable[[], bool], timeout: float = 20) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)


async def test_only_the_lease_holder_exports_and_the_standby_resumes_from_the_shared_cursor_when_it_dies(
    tmp_path: Path, collector: Collector, pg_schema: str
) -> None:
    r1, r2 = (_replica(name, pg_schema, tmp_path, collector) for name in ("r1", "r2"))
    written = 0
    stop_writing, traffic_done = anyio.Event(), anyio.Event()

    async def traffic() -> None:
        """Agents keep calling, half of them on each replica, the whole time."""
        nonlocal written
        while not stop_writing.is_set():
            for replica in (r1, r2):
                await replica.audit.append(AuditEvent(kind="denied", agent="a", tool="t", decision="deny"))
                written += 1
            await anyio.sleep(0.01)
        traffic_done.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(traffic)
            tg.start_soon(leader_service(r1.lease, r1.siem.run, r1.audit))
            await _until(lambda: r1.lease.backend_pid is not None)
            tg.start_soon(leader_service(r2.lease, r2.siem.run, r2.audit))
            await _until(lambda: len(collector.events) >= 40)
            # r2 has tried for the lease several times by now and never started its export
            assert r2.siem.exporters == [] and r2.lease.backend_pid is None
            assert r1.delivered() > 0

            killed = time.monotonic()
            with psycopg.connect(PG_DSN, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (r1.lease.backend_pid,))
            await _until(lambda: r2.lease.backend_pid is not None, timeout=10)
            took_over = time.monotonic() - killed
            await _until(lambda: r2.delivered() > 0, timeout=10)
            resumed = time.monotonic() - killed
            stop_at = written + 40
            await _until(lambda: written >= stop_at)
            stop_writing.set()
            await _until(lambda: any(r.status == "lost" for r in r1.sink.query(kind="leader", limit=10)))
            every: list[int] = []

            def caught_up() -> bool:
                every[:] = [record.seq for record in r1.sink.records()]
                return collector.seqs()[-1:] == every[-1:]

            await _until(lambda: traffic_done.is_set() and caught_up())
            tg.cancel_scope.cancel()

        # Exactly the audit log, in order: nothing lost, nothing sent twice, across the takeover.
        assert collector.seqs() == every
        assert len({event["fields"]["event_id"] for event in collector.events}) == len(every)
        assert r2.delivered() > 0 and r1.lease.backend_pid is None  # r1 stands by now
        # the shared cursor says where the export stands
        cursors = PostgresCursorStore(PG_DSN, pg_schema)
        assert cursors.all() == {"splunk": every[-1]}
        cursors.close()
        # each takeover audited (which service, which replica), and the lost lease too
        leaders = [(r.status, r.detail["replica"]) for r in r1.sink.query(kind="leader", limit=10)]
        assert sorted(leaders) == [("acquired", "r1"), ("acquired", "r2"), ("lost", "r1")]
        assert {r.detail["service"] for r in r1.sink.query(kind="leader", limit=10)} == {"siem"}
        # bounded takeover: standby retry 0.2 s + holder check 0.2 s, with room for a loaded machine
        assert took_over < 3.0 and resumed < 5.0, (took_over, resumed)
        print(
            f"\ntakeover: lease {took_over:.3f}s, first batch from the standby {resumed:.3f}s after the kill"
        )
    finally:
        for replica in (r1, r2):
            replica.sink.close()


@pytest.mark.e2e  # a gateway with its stdio upstream
async def test_a_single_gateway_on_sqlite_exports_under_a_local_lease_and_records_no_takeover(
    make_gateway: GatewayFactory, collector: Collector
) -> None:
    config = {
        "siem": {
            "sinks": {
                "splunk": {
                    "type": "http",
                    "url": collector.url,
                    "token": "secret://hec_token",
                    "allow_private_network": True,
                }
            },
            "poll_seconds": 0.05,
        }
    }
    gw = make_gateway(POLICY, config=config, secrets={"hec_token": collector.token})
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        assert not (await client.call_tool("leaky.echo", {"text": "hello"})).is_error
    every = [record.seq for record in gw.audit()]
    await _until(lambda: collector.seqs()[-1:] == every[-1:])
    assert collector.seqs() == every
    assert [r for r in gw.audit() if r.kind == "leader"] == []
