"""The SIEM export to a Splunk-HEC-compatible HTTP collector (a real HTTP server in the test)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
import siem_receivers
from siem_receivers import Collector

from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.connectors.siem.config import HttpSink, SiemSettings
from mcp_gateway.connectors.siem.cursor import SQLiteCursorStore
from mcp_gateway.connectors.siem.exporter import SiemExporter
from mcp_gateway.connectors.siem.hec import HecDelivery
from mcp_gateway.connectors.siem.ocsf import event_id
from mcp_gateway.errors import SecretNotFound
from mcp_gateway.redact import Redactor
from mcp_gateway.types import AuditEvent, SecretValue

collector = siem_receivers.collector  # the fixture, by its name here

pytestmark = pytest.mark.anyio

FAST = SiemSettings(poll_seconds=0.02, retry_initial_seconds=0.02, retry_max_seconds=0.2, batch_size=4)


def _vault(values: dict[str, str]) -> Callable[[str], SecretValue]:
    def resolve(name: str) -> SecretValue:
        if name not in values:
            raise SecretNotFound(f"secret `{name}` not found")
        return SecretValue(name, values[name].encode())

    return resolve


def _exporter(tmp_path: Path, sink: SQLiteAuditSink, http: HttpSink, vault: dict[str, str]) -> SiemExporter:
    delivery = HecDelivery("splunk", http, _vault(vault))
    redactor = Redactor.from_secrets(SecretValue(k, v.encode()) for k, v in vault.items())
    cursors = SQLiteCursorStore(tmp_path / "cursor.db")
    return SiemExporter(
        "splunk", delivery, http.format, sink, cursors, redactor=lambda: redactor, settings=FAST
    )


async def _until(predicate: Callable[[], bool], timeout: float = 20) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.02)


def _http(collector: Collector, **more: object) -> HttpSink:
    return HttpSink(
        url=collector.url,
        token="secret://hec_token",
        allow_private_network=True,
        index="security",
        **more,  # type: ignore[arg-type]
    )


async def test_the_collector_gets_hec_envelopes_authorized_with_the_vault_token(
    tmp_path: Path, collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sink = SQLiteAuditSink(tmp_path / "audit.db")
    sink.append([AuditEvent(kind="denied", agent="a", tool="t", decision="deny") for _ in range(10)])
    exporter = _exporter(tmp_path, sink, _http(collector), {"hec_token": collector.token})
    async with anyio.create_task_group() as tg:
        tg.start_soon(exporter.run)
        await _until(lambda: len(collector.events) >= 10)
        tg.cancel_scope.cancel()
    records = sink.records()
    assert collector.seqs() == [r.seq for r in records]
    first = collector.events[0]
    assert first["index"] == "security" and first["sourcetype"] == "mcp:gateway:ocsf"
    assert first["fields"]["event_id"] == event_id(records[0]) == first["event"]["metadata"]["uid"]
    assert first["event"]["class_uid"] == 6003
    assert len(collector.headers) == 3  # batches of 4: 4 + 4 + 2
    assert collector.token not in caplog.text
    sink.close()


async def test_a_collector_that_refuses_then_recovers_gets_everything_once_and_the_token_is_never_logged(
    tmp_path: Path, collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sink = SQLiteAuditSink(tmp_path / "audit.db")
    sink.append([AuditEvent(kind="outcome", agent="a", tool="t", status="ok") for _ in range(6)])
    collector.down = True
    exporter = _exporter(tmp_path, sink, _http(collector, format="jsonl"), {"hec_token": collector.token})
    async with anyio.create_task_group() as tg:
        tg.start_soon(exporter.run)
        await _until(lambda: exporter.failures >= 3)
        assert collector.events == [] and exporter.cursors.get("splunk") == 0
        collector.down = False
        await _until(lambda: len(collector.events) >= 6)
        tg.cancel_scope.cancel()
    assert collector.seqs() == [1, 2, 3, 4, 5, 6]
    assert collector.events[0]["event"]["hash"] == sink.records()[0].hash  # jsonl: the record itself
    assert "HTTP 503" in caplog.text and collector.token not in caplog.text
    sink.close()


async def test_a_secret_in_a_record_never_reaches_the_collector(tmp_path: Path, collector: Collector) -> None:
    leaked = "pg-password-8c1d5e9f2a"
    sink = SQLiteAuditSink(tmp_path / "audit.db")
    # A record written before the value was in the vault: the export's own pass must catch it.
    sink.append([AuditEvent(kind="outcome", agent="a", tool="t", detail={"error": f"auth {leaked}"})])
    vault = {"hec_token": collector.token, "pg_password": leaked}
    exporter = _exporter(tmp_path, sink, _http(collector), vault)
    async with anyio.create_task_group() as tg:
        tg.start_soon(exporter.run)
        await _until(lambda: len(collector.events) >= 1)
        tg.cancel_scope.cancel()
    assert leaked not in repr(collector.events)
    assert "[REDACTED:pg_password]" in repr(collector.events)
    sink.close()


async def test_a_wrong_token_is_retried_not_skipped(tmp_path: Path, collector: Collector) -> None:
    sink = SQLiteAuditSink(tmp_path / "audit.db")
    sink.append([AuditEvent(kind="outcome", agent="a", tool="t")])
    exporter = _exporter(tmp_path, sink, _http(collector), {"hec_token": "not-the-token-0000"})
    async with anyio.create_task_group() as tg:
        tg.start_soon(exporter.run)
        await _until(lambda: exporter.failures >= 2)
        tg.cancel_scope.cancel()
    assert "HTTP 403" in exporter.last_error and "not-the-token" not in exporter.last_error
    assert collector.events == [] and exporter.cursors.get("splunk") == 0
    sink.close()
