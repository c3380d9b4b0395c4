"""What a starting gateway checks before it extends the chain it inherits, and the alarm it raises.

Anyone who can write the audit store can append records with a correct chain, or rewrite the ones
after the newest signed checkpoint. Before this process writes a record (and so before it signs a
checkpoint that would cover what is there), it checks the records after its newest trusted
checkpoint: the chain must continue from it and every record must carry a valid seal. When something
does not, it says so once in the log and writes an ``audit_alarm`` record naming the ranges it could
not authenticate. The alarm is sealed and, from then on, inside every checkpoint this gateway signs:
a later checkpoint never vouches for those records without the signed chain also saying they are
unauthenticated (``audit verify`` reports them from the alarm, even with the public key alone).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from mcp_gateway.audit.checkpoint import signature_valid
from mcp_gateway.audit.checkpointer import read_mirror
from mcp_gateway.audit.record import GENESIS, content_hash
from mcp_gateway.audit.seal import ALARM_KIND, AuditSeal, Sealer, alarm_detail, check_since
from mcp_gateway.audit.verify import Problem
from mcp_gateway.errors import AuditError
from mcp_gateway.types import AuditEvent, AuditSink

logger = logging.getLogger(__name__)


@runtime_checkable
class SealedSink(Protocol):
    """An ``AuditSink`` that seals its batches and can read the seals back."""

    sealer: Sealer | None

    def seals(self, *, after_seq: int = 0) -> list[AuditSeal]: ...


def inspect(
    sink: AuditSink, sealer: Sealer, public_key: Ed25519PublicKey, mirror: Path | None
) -> tuple[list[Problem], int]:
    """The problems in the records after the newest trusted checkpoint, and that checkpoint's seq.

    Raises:
        AuditError: the store or the mirror file cannot be read.
    """
    if not isinstance(sink, SealedSink):
        return [], 0
    mirrored = read_mirror(mirror) if mirror is not None else []
    trusted = sorted(
        {cp for cp in (*sink.checkpoints(), *mirrored) if signature_valid(cp, public_key)},
        key=lambda cp: cp.seq,
        reverse=True,
    )
    head = sink.head()
    end = head[0] if head is not None else 0
    problems: list[Problem] = []
    anchor = (0, GENESIS)
    for cp in trusted:
        if cp.seq > end:
            why = f"the log ends at seq {end} but a signed checkpoint covers seq {cp.seq}"
            problems.append(Problem(end + 1, "truncated", why))
            continue
        found = sink.records(after_seq=cp.seq - 1, limit=1)
        record = found[0] if found else None
        if record is not None and record.seq == cp.seq and record.hash == cp.hash == content_hash(record):
            anchor = (cp.seq, cp.hash)
            break
        why = f"record {cp.seq} does not match its signed checkpoint"
        problems.append(Problem(cp.seq, "modified", why))
    records = sink.records(after_seq=anchor[0])
    problems.extend(check_since(records, sink.seals(after_seq=anchor[0]), sealer, anchor))
    problems.sort(key=lambda problem: problem.seq)
    return problems, anchor[0]


def raise_alarm(sink: AuditSink, problems: Sequence[Problem], anchor: int) -> str:
    """Log one line and append (sealed) the ``audit_alarm`` record; return the alarm's summary.

    Raises:
        AuditWriteError: the alarm record could not be written.
    """
    first = problems[0]
    summary = (
        f"{len(problems)} audit problem(s) after the newest trusted checkpoint (seq {anchor}); first:"
        f" seq {first.seq}: {first.kind}: {first.message}"
    )
    logger.error("audit alarm: %s; not vouching for those records (run `mcp-gateway audit verify`)", summary)
    event = AuditEvent(
        kind=ALARM_KIND,
        decision="deny",
        status="unauthenticated",
        detail=alarm_detail(problems, anchor_seq=anchor),
    )
    sink.append([event])
    return summary


def check_inherited(
    sink: AuditSink, sealer: Sealer, public_key: Ed25519PublicKey, mirror: Path | None
) -> str | None:
    """Inspect what this process inherits and raise the alarm if needed; the alarm's summary or None.

    A store that cannot be read is itself an alarm (the first append will then fail closed anyway).
    """
    try:
        problems, anchor = inspect(sink, sealer, public_key, mirror)
        if not problems:
            return None
        return raise_alarm(sink, problems, anchor)
    except AuditError as exc:
        logger.error("audit alarm: the inherited log could not be checked: %s", exc)
        return f"the inherited log could not be checked: {exc}"
