"""What leaves for a SIEM: one audit record as an OCSF event, a JSON line, or a CSV row.

Every form is made from the record after it passed the redactor once more (records are redacted
when written, but a secret stored in the vault since then is caught here too). CSV cells that a
spreadsheet would read as a formula (starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
return) are prefixed with ``'``, the OWASP "CSV injection" rule, so an argument an agent chose cannot
run in the analyst's spreadsheet.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from mcp_gateway.audit.export import record_to_dict
from mcp_gateway.connectors.siem.ocsf import event_id, reasons_text, to_ocsf
from mcp_gateway.redact import EMPTY, Redactor
from mcp_gateway.types import AuditRecord

ExportFormat = Literal["ocsf", "jsonl", "csv"]
FORMATS: tuple[str, ...] = ("ocsf", "jsonl", "csv")

CSV_COLUMNS = (
    "seq",
    "time",
    "kind",
    "agent",
    "tool",
    "decision",
    "status",
    "reason",
    "client",
    "token_id",
    "approver",
    "call_id",
    "event_id",
    "args",
    "detail",
    "hash",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def scrubbed(record: AuditRecord, redactor: Redactor = EMPTY) -> AuditRecord:
    """``record`` with its strings passed through ``redactor`` (the same record when nothing matched)."""
    fields = {"agent": record.agent, "tool": record.tool, "args": record.args, "detail": record.detail}
    clean, count = redactor.scrub_json(fields)
    if not count:
        return record
    return AuditRecord(
        seq=record.seq,
        ts=record.ts,
        kind=record.kind,
        call_id=record.call_id,
        agent=clean["agent"],
        tool=clean["tool"],
        decision=record.decision,
        status=record.status,
        args=clean["args"],
        detail=clean["detail"],
        prev_hash=record.prev_hash,
        hash=record.hash,
    )


def to_event(record: AuditRecord, fmt: Literal["ocsf", "jsonl"]) -> dict[str, Any]:
    """The JSON object sent for ``record``: its OCSF event, or the audit record itself."""
    return to_ocsf(record) if fmt == "ocsf" else record_to_dict(record)


def to_json(record: AuditRecord, fmt: Literal["ocsf", "jsonl"], redactor: Redactor = EMPTY) -> str:
    """``record`` (redacted again) as one line of compact JSON, no trailing newline."""
    event = to_event(scrubbed(record, redactor), fmt)
    return json.dumps(event, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)


def neutralize_cell(value: str) -> str:
    """A CSV cell a spreadsheet shows as text: a leading formula character gets a ``'`` before it."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)


def csv_row(record: AuditRecord) -> list[str]:
    """The ``CSV_COLUMNS`` cells of ``record``, each neutralised."""
    detail = record.detail
    cells: list[Any] = [
        record.seq,
        dt.datetime.fromtimestamp(record.ts, dt.UTC).isoformat(timespec="milliseconds"),
        record.kind,
        record.agent,
        record.tool,
        record.decision,
        record.status,
        reasons_text(detail),
        detail.get("client", ""),
        detail.get("token_id") or detail.get("admin_token_id") or "",
        detail.get("approver", ""),
        record.call_id,
        event_id(record),
        dict(record.args),
        dict(detail),
        record.hash,
    ]
    return [neutralize_cell(_text(cell)) for cell in cells]


def export_lines(
    records: Iterable[AuditRecord], fmt: ExportFormat, redactor: Redactor = EMPTY
) -> Iterator[str]:
    """Each record in ``fmt``, as text lines ending in a newline (CSV: a header line first)."""
    if fmt == "csv":
        buffer = io.StringIO()
        # Every cell quoted: a CR or LF an agent put in a value can never end a row early.
        writer = csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_ALL)
        writer.writerow(CSV_COLUMNS)
        yield buffer.getvalue()
        for record in records:
            buffer.seek(0)
            buffer.truncate()
            writer.writerow(csv_row(scrubbed(record, redactor)))
            yield buffer.getvalue()
        return
    for record in records:
        yield to_json(record, fmt, redactor) + "\n"
