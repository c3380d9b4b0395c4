"""Chain health for the console: the newest checkpoint, the mirror, what is not yet covered, the last
verify run; a verify that reports its progress; and where one record stands in the chain.

Each verify run's outcome is itself an audit record (kind ``audit_verify``), not a row in a side
table: it is then chained, sealed and covered by the next checkpoint like everything else (a failed
verify cannot be quietly deleted), every replica sharing the store sees the same last run, and the
SIEM export and the alert rules ("a failed verify") read it from the one stream they already follow.
The record says who ran it, how far it checked (``through_seq``/``through_hash``) and the first
problems, never a record's content.

``chain_health``, ``record_coverage``, ``verify_event`` and ``VerifyRun.from_record`` are pure;
``read_chain_health`` reads the store (blocking); ``verify_with_progress`` (``progress.py``, re-exported
here) verifies in batches with progress.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from mcp_gateway.audit.checkpoint import signature_valid
from mcp_gateway.audit.checkpointer import read_mirror
from mcp_gateway.audit.progress import VerifyOutcome, VerifyProgress, verify_with_progress
from mcp_gateway.audit.verify import Problem
from mcp_gateway.errors import AuditError
from mcp_gateway.types import AuditCheckpoint, AuditEvent, AuditRecord, AuditSink

__all__ = [
    "VERIFY_KIND",
    "ChainHealth",
    "MirrorStatus",
    "RecordCoverage",
    "VerifyOutcome",
    "VerifyProgress",
    "VerifyRun",
    "chain_health",
    "read_chain_health",
    "record_coverage",
    "verify_event",
    "verify_with_progress",
]

VERIFY_KIND = "audit_verify"
"""The kind of the audit record each verify run leaves."""
_SHOWN_PROBLEMS = 5


@dataclasses.dataclass(frozen=True, slots=True)
class VerifyRun:
    """One verify run, as its ``audit_verify`` record tells it.

    Attributes:
        seq, ts: the record's place and time.
        ok: no problem found.
        checked: records checked.
        through_seq, through_hash: the newest record checked (0, "" for an empty log).
        problems: how many problems.
        first_problem_seq: the lowest seq a problem is about, None when ``ok``.
        shown: the first few problems as ``{"seq", "kind", "message"}``.
        unauthenticated_after: records after this seq were authenticated by nothing (no seal key,
            no checkpoint); None when every record was.
        by: who ran it (a console user, ``cli``, ``schedule``).
        seconds: how long it took.
    """

    seq: int
    ts: float
    ok: bool
    checked: int
    through_seq: int
    through_hash: str
    problems: int
    first_problem_seq: int | None
    shown: tuple[Mapping[str, Any], ...]
    unauthenticated_after: int | None
    by: str
    seconds: float

    @classmethod
    def from_record(cls, record: AuditRecord) -> VerifyRun | None:
        """The run ``record`` tells of; None if it is not a well-formed ``audit_verify`` record."""
        d = record.detail
        if record.kind != VERIFY_KIND:
            return None
        try:
            first = d.get("first_problem_seq")
            after = d.get("unauthenticated_after")
            return cls(
                seq=record.seq,
                ts=record.ts,
                ok=record.status == "ok",
                checked=int(d["checked"]),
                through_seq=int(d["through_seq"]),
                through_hash=str(d["through_hash"]),
                problems=int(d["problems"]),
                first_problem_seq=None if first is None else int(first),
                shown=tuple(dict(p) for p in d.get("shown", ())),
                unauthenticated_after=None if after is None else int(after),
                by=str(d.get("by", "")),
                seconds=float(d.get("seconds", 0.0)),
            )
        except (KeyError, TypeError, ValueError):
            return None


def verify_event(outcome: VerifyOutcome, *, by: str) -> AuditEvent:
    """The ``audit_verify`` record of a run (append it through the ``AuditLog``: durable, chained)."""
    problems: Sequence[Problem] = outcome.assessment.problems
    after = outcome.unauthenticated_after
    status = "failed" if problems else "unauthenticated" if after is not None else "ok"
    detail = {
        "by": by,
        "checked": outcome.assessment.checkpoints.checked,
        "through_seq": outcome.through[0],
        "through_hash": outcome.through[1],
        "problems": len(problems),
        "first_problem_seq": min((p.seq for p in problems), default=None),
        "shown": [{"seq": p.seq, "kind": p.kind, "message": p.message} for p in problems[:_SHOWN_PROBLEMS]],
        "unauthenticated_after": after,
        "seconds": round(outcome.seconds, 3),
    }
    return AuditEvent(
        kind=VERIFY_KIND, decision="deny" if problems else "allow", status=status, detail=detail
    )


@dataclasses.dataclass(frozen=True, slots=True)
class MirrorStatus:
    """The append-only checkpoint mirror file against the store's checkpoints.

    ``state``: ``off`` (no mirror configured), ``ok`` (its newest is the store's newest), ``behind``
    (the store has newer checkpoints: a mirror write failed), ``missing_in_store`` (the mirror holds
    a checkpoint the store lacks: the store's checkpoint table was edited), ``unreadable``.
    """

    state: Literal["off", "ok", "behind", "missing_in_store", "unreadable"]
    newest: AuditCheckpoint | None
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class ChainHealth:
    """The chain at a glance.

    Attributes:
        head: ``(seq, hash)`` of the newest record, None when empty.
        newest_checkpoint: the newest checkpoint (with ``public_keys``: the newest correctly signed).
        forged_checkpoints: checkpoints whose signature did not check (0 without ``public_keys``).
        uncovered: records newer than the newest checkpoint.
        mirror: the mirror file's status.
        last_verify: the newest verify run, None if none was recorded.
        keep_head: ``SEQ:HASH`` to keep elsewhere for ``audit verify --expect-head`` (None: empty log).
    """

    head: tuple[int, str] | None
    newest_checkpoint: AuditCheckpoint | None
    forged_checkpoints: int
    uncovered: int
    mirror: MirrorStatus
    last_verify: VerifyRun | None
    keep_head: str | None


def _trusted(
    checkpoints: Sequence[AuditCheckpoint], public_keys: Mapping[str, Ed25519PublicKey] | None
) -> tuple[list[AuditCheckpoint], int]:
    if public_keys is None:
        return list(checkpoints), 0
    good = [
        cp
        for cp in checkpoints
        if (key := public_keys.get(cp.key_id)) is not None and signature_valid(cp, key)
    ]
    return good, len(set(checkpoints)) - len(set(good))


def mirror_status(
    stored: Sequence[AuditCheckpoint], mirrored: Sequence[AuditCheckpoint] | None, error: str | None = None
) -> MirrorStatus:
    """Compare the mirror file's checkpoints (None: no mirror configured) with the store's."""
    if error is not None:
        return MirrorStatus("unreadable", None, error)
    if mirrored is None:
        return MirrorStatus("off", None, "no checkpoint mirror file is configured")
    newest = max(mirrored, key=lambda cp: cp.seq, default=None)
    missing = sorted(set(mirrored) - set(stored), key=lambda cp: cp.seq)
    if missing:
        why = (
            f"{len(missing)} checkpoint(s) of the mirror file are not in the audit store"
            f" (first at seq {missing[0].seq})"
        )
        return MirrorStatus("missing_in_store", newest, why)
    store_newest = max((cp.seq for cp in stored), default=0)
    if newest is None and store_newest == 0:
        return MirrorStatus("ok", None, "no checkpoint yet")
    if newest is None or newest.seq < store_newest:
        at = newest.seq if newest is not None else 0
        return MirrorStatus(
            "behind", newest, f"the mirror file ends at seq {at}, the store at seq {store_newest}"
        )
    return MirrorStatus("ok", newest, f"the mirror file agrees with the store up to seq {newest.seq}")


def chain_health(
    head: tuple[int, str] | None,
    checkpoints: Sequence[AuditCheckpoint],
    mirror: MirrorStatus,
    last_verify: VerifyRun | None,
    public_keys: Mapping[str, Ed25519PublicKey] | None = None,
) -> ChainHealth:
    """Put the pieces together (pure)."""
    good, forged = _trusted(checkpoints, public_keys)
    newest = max(good, key=lambda cp: cp.seq, default=None)
    end = head[0] if head is not None else 0
    uncovered = max(0, end - (newest.seq if newest is not None else 0))
    keep = f"{head[0]}:{head[1]}" if head is not None else None
    return ChainHealth(head, newest, forged, uncovered, mirror, last_verify, keep)


def last_verify_run(sink: AuditSink) -> VerifyRun | None:
    """The newest ``audit_verify`` record's run (one indexed read on a searchable store)."""
    search = getattr(sink, "search", None)
    if search is not None:
        from mcp_gateway.audit.search import AuditSearch

        found = search(AuditSearch(kind=VERIFY_KIND, limit=1)).records
    else:
        found = sink.query(kind=VERIFY_KIND, limit=1)
    return VerifyRun.from_record(found[-1]) if found else None


def read_chain_health(
    sink: AuditSink, mirror: Path | None, public_keys: Mapping[str, Ed25519PublicKey] | None = None
) -> ChainHealth:
    """``chain_health`` of a store (blocking: run it in a worker thread).

    Raises:
        AuditError: the store cannot be read (an unreadable mirror is reported in ``mirror``).
    """
    head = sink.head()
    stored = sink.checkpoints()
    try:
        status = mirror_status(stored, read_mirror(mirror) if mirror is not None else None)
    except AuditError as exc:
        status = mirror_status(stored, None, str(exc))
    return chain_health(head, stored, status, last_verify_run(sink), public_keys)


@dataclasses.dataclass(frozen=True, slots=True)
class RecordCoverage:
    """Where one record stands.

    Attributes:
        seq: the record.
        checkpoint: the first checkpoint at or after it (it vouches for the record through the
            chain), None when no checkpoint covers it yet.
        verified: whether the last verify run found the chain intact up to that checkpoint (up
            to the record when none covers it): True, False (a problem at or before it), or None
            (no run reached that far).
        run: the verify run ``verified`` comes from.
        message: one lowercase sentence for the page.
    """

    seq: int
    checkpoint: AuditCheckpoint | None
    verified: bool | None
    run: VerifyRun | None
    message: str


def record_coverage(
    seq: int,
    checkpoints: Sequence[AuditCheckpoint],
    last_verify: VerifyRun | None,
    public_keys: Mapping[str, Ed25519PublicKey] | None = None,
) -> RecordCoverage:
    """Which signed checkpoint covers record ``seq``, and whether the chain up to it verified (pure)."""
    good, _ = _trusted(checkpoints, public_keys)
    checkpoint = min((cp for cp in good if cp.seq >= seq), key=lambda cp: cp.seq, default=None)
    upto = checkpoint.seq if checkpoint is not None else seq
    verified: bool | None = None
    if last_verify is not None and last_verify.through_seq >= upto:
        first = last_verify.first_problem_seq
        verified = last_verify.ok or (first is not None and first > upto)
    covered = (
        f"covered by the checkpoint at seq {checkpoint.seq} (key {checkpoint.key_id})"
        if checkpoint is not None
        else "not yet covered by a signed checkpoint"
    )
    if verified is None:
        state = "no verify run has reached it yet"
    elif verified:
        state = f"the chain up to seq {upto} verified (run at seq {last_verify.seq})"  # type: ignore[union-attr]
    else:
        state = f"the last verify run found a problem at or before seq {upto}"
    return RecordCoverage(seq, checkpoint, verified, last_verify, f"{covered}; {state}")
