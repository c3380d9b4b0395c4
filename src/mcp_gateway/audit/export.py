"""Audit records to and from JSON: one object per record, one record per line (JSON Lines).

The dict form has exactly the fields of ``AuditRecord`` and is what ``hash`` covers, so an exported
log can be checked with ``verify.verify`` anywhere, without the gateway's stores.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from mcp_gateway.errors import AuditError
from mcp_gateway.types import AuditRecord

_FIELDS = tuple(f.name for f in dataclasses.fields(AuditRecord))


class _RecordModel(BaseModel):
    # Strict: "5" is not a seq. Lax coercion would let a cosmetically edited export verify as intact.
    model_config = ConfigDict(strict=True, extra="forbid")

    seq: int
    ts: float
    kind: str
    call_id: str
    agent: str
    tool: str
    decision: str
    status: str
    args: dict[str, Any]
    detail: dict[str, Any]
    prev_hash: str
    hash: str


def record_to_dict(record: AuditRecord) -> dict[str, Any]:
    """``record`` as a JSON-ready dict with every field (``args``/``detail`` as plain dicts)."""
    out = {name: getattr(record, name) for name in _FIELDS}
    out["args"] = dict(record.args)
    out["detail"] = dict(record.detail)
    return out


def record_from_dict(data: Mapping[str, Any]) -> AuditRecord:
    """Rebuild a record from ``record_to_dict`` output (e.g. a parsed JSONL line).

    Raises:
        AuditError: a field is missing, unknown or of the wrong type (names the field, not its value).
    """
    if not isinstance(data, Mapping):
        raise AuditError(f"an audit record must be a json object, not `{type(data).__name__}`")
    try:
        return AuditRecord(**dict(_RecordModel.model_validate(dict(data))))
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"][:1]) or "record"
        raise AuditError(f"invalid audit record field `{where}`: {error['type']}") from None


def to_jsonl(records: Iterable[AuditRecord]) -> Iterator[str]:
    """One JSON line per record, each ending in a newline (ready for ``writelines``)."""
    for record in records:
        yield json.dumps(record_to_dict(record), sort_keys=True, ensure_ascii=False) + "\n"


def from_jsonl(lines: Iterable[str]) -> Iterator[AuditRecord]:
    """Parse ``to_jsonl`` output; blank lines are skipped.

    Raises:
        AuditError: a line is not JSON or not a record (names the line number).
    """
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield record_from_dict(json.loads(line))
        except json.JSONDecodeError:
            raise AuditError(f"line {number}: not valid json") from None
        except AuditError as exc:
            raise AuditError(f"line {number}: {exc}") from None
