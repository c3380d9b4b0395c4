"""The SIEM export against a real rsyslog (imtcp, octet-counted RFC 5424, plain and TLS)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
import siem_receivers
from siem_certs import make_pki
from siem_receivers import Rsyslog

from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.connectors.siem.config import SiemSettings, SyslogSink, SyslogTls
from mcp_gateway.connectors.siem.cursor import SQLiteCursorStore
from mcp_gateway.connectors.siem.exporter import SiemExporter
from mcp_gateway.connectors.siem.ocsf import event_id
from mcp_gateway.connectors.siem.syslog import SyslogDelivery
from mcp_gateway.types import AuditEvent

rsyslog = siem_receivers.rsyslog  # the fixture, by its name here
rsyslog_tls = siem_receivers.rsyslog_tls  # the fixture, by its name here

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

FAST = SiemSettings(poll_seconds=0.02, retry_initial_seconds=0.02, retry_max_seconds=0.2, batch_size=7)


def _sink(tmp_path: Path, count: int) -> SQLiteAuditSink:
    sink = SQLiteAuditSink(tmp_path / "audit.db")
    sink.append(
        [
            AuditEvent(kind="denied", agent="a", tool=f"data.t{i}", decision="deny", status="denied")
            for i in range(count)
        ]
    )
    return sink


def _exporter(
    tmp_path: Path, sink: SQLiteAuditSink, syslog: SyslogSink, settings: SiemSettings = FAST
) -> SiemExporter:
    cursors = SQLiteCursorStore(tmp_path / "cursor.db")
    return SiemExporter("soc", SyslogDelivery("soc", syslog), syslog.format, sink, cursors, settings=settings)


async def _until(predicate: Callable[[], bool], timeout: float = 20) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.02)


async def test_audit_records_reach_a_real_rsyslog_as_octet_counted_rfc5424_ocsf_events(
    tmp_path: Path, rsyslog: Rsyslog
) -> None:
    sink = _sink(tmp_path, 20)
    exporter = _exporter(tmp_path, sink, SyslogSink(host="127.0.0.1", port=rsyslog.port))
    async with anyio.create_task_group() as tg:
        tg.start_soon(exporter.run)
        await _until(lambda: len(rsyslog.seqs()) >= 20)
        tg.cancel_scope.cancel()
    records = sink.records()
    messages = rsyslog.messages()
    assert [seq for seq, _, _ in messages] == [r.seq for r in records]
    for (seq, eid, body), record in zip(messages, records, strict=True):
        assert eid == event_id(record) == body["metadata"]["uid"]
        assert body["class_uid"] == 6003 and body["metadata"]["sequence"] == seq
    assert exporter.cursors.get("soc") == records[-1].seq
    # MSGID is the record's kind, parsed as such by rsyslog.
    assert rsyslog.out.read_text().splitlines()[0].startswith("denied [mcpgw@32473 ")
    sink.close()


async def test_tls_syslog_delivers_to_a_receiver_signed_by_the_configured_ca(
    tmp_path: Path, rsyslog_tls: Rsyslog
) -> None:
    assert rsyslog_tls.pki is not None
    sink = _sink(tmp_path, 3)
    syslog = SyslogSink(
        host="127.0.0.1",
        port=rsyslog_tls.port,
        format="jsonl",
        tls=SyslogTls(ca_file=rsyslog_tls.pki.ca_file),
    )
    exporter = _exporter(tmp_path, sink, syslog)
    async with anyio.create_task_group() as tg:
        tg.start_soon(exporter.run)
        await _until(lambda: len(rsyslog_tls.seqs()) >= 3)
        tg.cancel_scope.cancel()
    assert rsyslog_tls.seqs() == [1, 2, 3]
    assert rsyslog_tls.messages()[0][2]["hash"] == sink.records()[0].hash  # jsonl: the record itself
    sink.close()


async def test_tls_refuses_a_receiver_whose_certificate_another_ca_signed(
    tmp_path: Path, rsyslog_tls: Rsyslog
) -> None:
    stranger = make_pki(tmp_path / "other-ca")
    sink = _sink(tmp_path, 2)
    syslog = SyslogSink(host="127.0.0.1", port=rsyslog_tls.port, tls=SyslogTls(ca_file=stranger.ca_file))
    exporter = _exporter(tmp_path, sink, syslog)
    async with anyio.create_task_group() as tg:
        tg.start_soon(exporter.run)
        await _until(lambda: exporter.failures >= 2)
        tg.cancel_scope.cancel()
    assert "CERTIFICATE_VERIFY_FAILED" in exporter.last_error or "SSL" in exporter.last_error
    assert rsyslog_tls.seqs() == []
    assert exporter.cursors.get("soc") == 0  # nothing counted as delivered
    sink.close()


async def test_a_receiver_down_then_up_gets_every_record_once_after(tmp_path: Path, rsyslog: Rsyslog) -> None:
    sink = _sink(tmp_path, 10)
    exporter = _exporter(tmp_path, sink, SyslogSink(host="127.0.0.1", port=rsyslog.port))
    async with anyio.create_task_group() as tg:
        tg.start_soon(exporter.run)
        await _until(lambda: len(rsyslog.seqs()) >= 10)
        rsyslog.stop()
        # Written while the receiver is down: the exporter must keep them until it is back.
        sink.append([AuditEvent(kind="denied", agent="b", tool="x", decision="deny") for _ in range(15)])
        await _until(lambda: exporter.failures >= 2)
        rsyslog.start()
        await _until(lambda: len(rsyslog.seqs()) >= 25)
        tg.cancel_scope.cancel()
    assert rsyslog.seqs() == list(range(1, 26))
    sink.close()


async def test_a_stopped_exporter_resumes_after_its_cursor_without_resending(
    tmp_path: Path, rsyslog: Rsyslog
) -> None:
    sink = _sink(tmp_path, 30)
    syslog = SyslogSink(host="127.0.0.1", port=rsyslog.port)
    first = _exporter(tmp_path, sink, syslog)
    async with anyio.create_task_group() as tg:
        tg.start_soon(first.run)
        await _until(lambda: len(rsyslog.seqs()) >= 8)  # mid-stream: batches of 7
        tg.cancel_scope.cancel()
    first.cursors.close()
    stopped_at = len(rsyslog.seqs())
    assert stopped_at < 30
    second = _exporter(tmp_path, sink, syslog)
    async with anyio.create_task_group() as tg:
        tg.start_soon(second.run)
        await _until(lambda: len(rsyslog.seqs()) >= 30)
        tg.cancel_scope.cancel()
    assert rsyslog.seqs() == list(range(1, 31))
    sink.close()
