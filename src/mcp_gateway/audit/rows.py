"""How audit records, checkpoints and query filters map to SQL rows; shared by SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from mcp_gateway.types import AuditCheckpoint, AuditRecord

# The columns are the record's fields, in order.
COLUMN_NAMES = tuple(f.name for f in dataclasses.fields(AuditRecord))
COLUMNS = ", ".join(COLUMN_NAMES)
CHECKPOINT_COLUMNS = "seq, hash, ts, key_id, signature"
SEARCH_INDEXES = {
    "audit_agent_seq": ("agent", "seq"),
    "audit_tool_seq": ("tool", "seq"),
    "audit_decision_seq": ("decision", "seq"),
    "audit_status_seq": ("status", "seq"),
    "audit_kind_seq": ("kind", "seq"),
}
"""The indexes of audit search (``search.py``): each filter column, then ``seq``, so a filtered page in
seq order reads only its own entries. ``ts`` and ``call_id`` keep their single-column indexes."""
REPLACED_INDEXES = ("audit_agent", "audit_tool")
"""The single-column indexes the search indexes make redundant (dropped by the same migration)."""


def search_index_script() -> str:
    """SQLite statements creating ``SEARCH_INDEXES`` and dropping ``REPLACED_INDEXES`` (idempotent)."""
    create = [f"CREATE INDEX IF NOT EXISTS {n} ON audit ({', '.join(c)});" for n, c in SEARCH_INDEXES.items()]
    return "".join([*create, *(f"DROP INDEX IF EXISTS {name};" for name in REPLACED_INDEXES)])


def to_row(record: AuditRecord, texts: tuple[str, str] | None = None) -> tuple[Any, ...]:
    """``record`` as a row of ``COLUMNS``; shared with PostgreSQL.

    ``args``/``detail`` are stored as JSON text: ``texts`` when given (the canonical texts
    ``chain_encoded`` already made), else encoded here.
    """
    if texts is not None:
        args_json, detail_json = texts
    else:
        args_json = json.dumps(record.args, ensure_ascii=False, separators=(",", ":"))
        detail_json = json.dumps(record.detail, ensure_ascii=False, separators=(",", ":"))
    return (
        record.seq,
        record.ts,
        record.kind,
        record.call_id,
        record.agent,
        record.tool,
        record.decision,
        record.status,
        args_json,
        detail_json,
        record.prev_hash,
        record.hash,
    )


def from_row(row: Sequence[Any]) -> AuditRecord:
    """A row of ``COLUMNS`` back into a record."""
    seq, ts, kind, call_id, agent, tool, decision, status, args, detail, prev_hash, hash_ = row
    return AuditRecord(
        seq=int(seq),
        ts=float(ts),
        kind=kind,
        call_id=call_id,
        agent=agent,
        tool=tool,
        decision=decision,
        status=status,
        args=json.loads(args),
        detail=json.loads(detail),
        prev_hash=prev_hash,
        hash=hash_,
    )


def checkpoint_from_row(row: Sequence[Any]) -> AuditCheckpoint:
    """A row of ``CHECKPOINT_COLUMNS`` back into a checkpoint; shared with PostgreSQL."""
    seq, hash_, ts, key_id, signature = row
    return AuditCheckpoint(seq=int(seq), hash=hash_, ts=float(ts), key_id=key_id, signature=signature)


def hmac_marker_text(mac: str) -> str:
    """How ``{"hmac": mac}`` appears inside a stored ``args`` column (the compact JSON of ``to_row``)."""
    return json.dumps({"hmac": mac}, separators=(",", ":"))


def where_clause(**filters: str | None) -> tuple[list[str], list[Any]]:
    """Equality conditions (``column = ?``) for the filters that are set; keys are trusted column names."""
    where = [f"{column} = ?" for column, value in filters.items() if value is not None]
    return where, [value for value in filters.values() if value is not None]
