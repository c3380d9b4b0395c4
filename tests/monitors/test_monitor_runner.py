"""Quality monitors on a real Iceberg table: a failing run raises an incident, audited first; passing
again closes it with the governed calls that fixed it; no audit, no incident."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from mcp_gateway.audit.log import AuditLog
from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.connectors.warehouse.base import Check, Predicate
from mcp_gateway.connectors.warehouse.config import IcebergSettings
from mcp_gateway.connectors.warehouse.registry import WarehouseRegistry
from mcp_gateway.errors import AuditUnavailable
from mcp_gateway.incidents.store import IncidentStore, open_incident_store
from mcp_gateway.monitors.config import MonitorSettings
from mcp_gateway.monitors.measure import ProductionMeasure
from mcp_gateway.monitors.runner import MonitorService
from mcp_gateway.types import AuditEvent, SecretValue

pytestmark = pytest.mark.anyio

SCHEMA = pa.schema([("id", pa.int64()), ("cur", pa.string())])
TABLE = "lake.s.revenue"
NULL_FREE = MonitorSettings(
    table=TABLE, checks=(Check(metric="null_rate", column="cur", max=0),), job="nightly"
)


def no_secrets(name: str) -> SecretValue:
    raise AssertionError(f"no secret expected, asked for {name}")


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[WarehouseRegistry]:
    settings = IcebergSettings(
        catalog_uri=f"sqlite:///{tmp_path / 'c.db'}", warehouse=(tmp_path / "w").as_uri(), catalog_name="unit"
    )
    reg = WarehouseRegistry({"lake": settings}, no_secrets)
    catalog = reg.get("lake")._catalog  # type: ignore[attr-defined]
    catalog.create_namespace("s")
    table = catalog.create_table(("s", "revenue"), schema=SCHEMA)
    table.append(pa.table({"id": [1, 2, 3], "cur": ["USD", None, "USD"]}, schema=SCHEMA))
    yield reg
    reg.close()


@pytest.fixture
async def audit(tmp_path: Path) -> AsyncIterator[AuditLog]:
    sink = SQLiteAuditSink(tmp_path / "audit.db")
    async with AuditLog(sink) as log:
        yield log
    sink.close()


@pytest.fixture
def incidents(tmp_path: Path) -> Iterator[IncidentStore]:
    store = open_incident_store(path=tmp_path / "incidents.db")
    yield store
    store.close()


class Told:
    def __init__(self) -> None:
        self.lines: list[str] = []

    async def __call__(self, text: str) -> None:
        self.lines.append(text)


def service(
    registry: WarehouseRegistry, incidents: IncidentStore, audit: AuditLog, told: Told
) -> MonitorService:
    measure = ProductionMeasure(registry, dict)
    return MonitorService(
        {"revenue_nulls": NULL_FREE}, measure=measure, incidents=incidents, audit=audit, notify=told
    )


def fix_production(registry: WarehouseRegistry) -> None:
    wh = registry.get("lake")
    wh.clone("s.revenue", "fix")
    wh.update_rows("s.revenue", "fix", [Predicate(column="cur", op="is_null")], {"cur": "USD"}, 10)
    wh.switch_in("s.revenue", "fix")


async def record_call(audit: AuditLog, call_id: str, tool: str, args: dict[str, Any], status: str) -> int:
    await audit.append(
        AuditEvent(kind="intent", call_id=call_id, agent="healer", tool=tool, decision="allow", args=args)
    )
    done = await audit.append(
        AuditEvent(
            kind="outcome", call_id=call_id, agent="healer", tool=tool, decision="allow", status=status
        )
    )
    return done.seq


async def test_a_failing_run_opens_one_incident_recorded_before_it_and_notifies_once(
    registry: WarehouseRegistry, incidents: IncidentStore, audit: AuditLog
) -> None:
    told = Told()
    monitors = service(registry, incidents, audit, told)
    first = await monitors.run_once("revenue_nulls")
    second = await monitors.run_once("revenue_nulls")
    assert first is not None and second is not None
    assert second.id == first.id and second.occurrences == 2 and second.status == "open"
    assert first.failing[0]["check"] == "null_rate(cur)" and first.failing[0]["passed"] is False
    records = audit.sink.query(kind="incident")
    assert [(r.status, r.detail["incident"]) for r in records] == [("open", first.id), ("failing", first.id)]
    assert first.opened_seq == records[0].seq
    assert records[0].args == {"monitor": "revenue_nulls", "table": TABLE}
    assert len(told.lines) == 1 and first.id in told.lines[0] and "null_rate(cur)" in told.lines[0]


async def test_passing_again_recovers_with_the_calls_that_fixed_it(
    registry: WarehouseRegistry, incidents: IncidentStore, audit: AuditLog
) -> None:
    told = Told()
    monitors = service(registry, incidents, audit, told)
    opened = await monitors.run_once("revenue_nulls")
    assert opened is not None
    # What the governed path records for the agent's calls: a fix on this table, a failed try, a
    # call on another table, and a rerun of the monitor's job.
    switch_seq = await record_call(audit, "c1", "data.switch_in", {"table": TABLE, "branch": "fix"}, "ok")
    await record_call(audit, "c2", "data.switch_in", {"table": TABLE, "branch": "bad"}, "error")
    await record_call(audit, "c3", "data.switch_in", {"table": "lake.s.other", "branch": "x"}, "ok")
    rerun_seq = await record_call(audit, "c4", "ops.rerun_job", {"job": "nightly", "mode": "full"}, "ok")
    fix_production(registry)
    closed = await monitors.run_once("revenue_nulls")
    assert closed is not None and closed.id == opened.id and closed.status == "recovered"
    assert [(f.call_id, f.tool, f.audit_seq) for f in closed.fixes] == [
        ("c1", "data.switch_in", switch_seq),
        ("c4", "ops.rerun_job", rerun_seq),
    ]
    recovered = audit.sink.query(kind="incident")[-1]
    assert recovered.status == "recovered" and [f["call_id"] for f in recovered.detail["resolution"]] == [
        "c1",
        "c4",
    ]
    assert "healer" in told.lines[-1] and "passes again" in told.lines[-1]
    # Failure memory: the table's and the job's history show it with its resolution.
    assert [i.id for i in incidents.history(table=TABLE)] == [opened.id]
    assert incidents.history(job="nightly")[0].as_dict()["resolution"][0]["call_id"] == "c1"
    # A passing run with nothing open changes nothing and records nothing.
    before = len(audit.sink.query(kind="incident"))
    assert await monitors.run_once("revenue_nulls") is None
    assert len(audit.sink.query(kind="incident")) == before


async def test_a_rerun_whose_run_failed_is_not_in_the_resolution(
    registry: WarehouseRegistry, incidents: IncidentStore, audit: AuditLog
) -> None:
    monitors = service(registry, incidents, audit, Told())
    assert await monitors.run_once("revenue_nulls") is not None
    # The call ended `ok` (the gateway ran it) but the dbt run it launched failed: it fixed nothing.
    for call_id, state in (("r1", "failed"), ("r2", "success")):
        args = {"job": "nightly", "mode": "full"}
        await audit.append(
            AuditEvent(
                kind="intent",
                call_id=call_id,
                agent="healer",
                tool="ops.rerun_job",
                decision="allow",
                args=args,
            )
        )
        await audit.append(
            AuditEvent(
                kind="outcome",
                call_id=call_id,
                agent="healer",
                tool="ops.rerun_job",
                decision="allow",
                status="ok",
                detail={"facts": {"run_id": call_id, "state": state}},
            )
        )
    fix_production(registry)
    closed = await monitors.run_once("revenue_nulls")
    assert closed is not None and [f.call_id for f in closed.fixes] == ["r2"]


async def test_a_table_it_cannot_measure_is_recorded_as_an_error_and_opens_nothing(
    registry: WarehouseRegistry, incidents: IncidentStore, audit: AuditLog
) -> None:
    missing = MonitorSettings(table="lake.s.nope", checks=(Check(metric="row_count", min=1),))
    measure = ProductionMeasure(registry, dict)
    monitors = MonitorService({"gone": missing}, measure=measure, incidents=incidents, audit=audit)
    assert await monitors.run_once("gone") is None
    (record,) = audit.sink.query(kind="incident")
    assert record.status == "error" and record.args["monitor"] == "gone"
    assert incidents.open_of("gone") is None


async def test_no_audit_no_incident(
    registry: WarehouseRegistry, incidents: IncidentStore, tmp_path: Path
) -> None:
    sink = SQLiteAuditSink(tmp_path / "closed.db")
    log = AuditLog(sink)
    await log.aclose()  # a log that can no longer record
    told = Told()
    monitors = service(registry, incidents, log, told)
    with pytest.raises(AuditUnavailable):
        await monitors.run_once("revenue_nulls")
    assert incidents.open_of("revenue_nulls") is None and told.lines == []
    sink.close()


async def test_a_measured_value_holding_a_vault_secret_is_scrubbed_before_it_is_recorded_stored_or_told(
    registry: WarehouseRegistry, incidents: IncidentStore, audit: AuditLog
) -> None:
    from mcp_gateway.redact import Redactor

    secret = "sk-live-0a1b2c3d4e5f"
    table = registry.get("lake")._catalog.load_table(("s", "revenue"))  # type: ignore[attr-defined]
    table.append(pa.table({"id": [9], "cur": [secret]}, schema=SCHEMA))
    redactor = Redactor.from_secrets([SecretValue("fx-key", secret.encode())])
    told = Told()
    leaky = MonitorSettings(table=TABLE, checks=(Check(metric="max", column="cur", max=0),))
    monitors = MonitorService(
        {"max_cur": leaky},
        measure=ProductionMeasure(registry, dict),
        incidents=incidents,
        audit=audit,
        notify=told,
        redactor=lambda: redactor,
    )
    incident = await monitors.run_once("max_cur")
    assert incident is not None and incident.failing[0]["value"] == "[REDACTED:fx-key]"
    (record,) = audit.sink.query(kind="incident")
    written = repr(record) + repr(incidents.get(incident.id)) + " ".join(told.lines)
    assert secret not in written and "[REDACTED:fx-key]" in written
