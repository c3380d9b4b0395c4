"""Verifying the log in batches, with progress and bounded memory: what ``audit verify`` checks, for a
console button that must not hold a million records in the gateway's memory.

``audit verify`` (``assess``) reads the whole log and checks it at once. Here the same checks run on
one batch at a time, each anchored on the last record of the one before, so at most about two batches
are held whatever the log's size:

- the chain (``verify`` with ``anchor``): any edited, deleted, inserted or reordered record breaks a
  content hash or a link inside a batch or across its first link;
- the signed checkpoints and the mirror: signatures as ``verify_with_checkpoints`` judges them; the
  record at each trusted checkpoint's seq must carry its hash, and the log must reach the newest;
- the seals (``authenticate``): a batch is cut before the first seal that runs past its end, whose
  records then start the next batch, so every seal is checked against all of its records; a
  ``vault_init`` record vouching for an earlier batch's record is honoured as ``authenticate`` does;
- the ranges earlier gateways flagged (``flagged``).

It finds a problem exactly when ``assess`` finds one; near a batch boundary it may name a problem
differently (``audit verify`` gives the full account).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any, Literal

import anyio.to_thread
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from mcp_gateway.audit.assess import Assessment
from mcp_gateway.audit.checkpoint import CheckpointReport, signature_valid, verify_with_checkpoints
from mcp_gateway.audit.checkpointer import read_mirror
from mcp_gateway.audit.record import GENESIS
from mcp_gateway.audit.seal import (
    VOUCHES_FOR,
    VOUCHING_KINDS,
    AuditSeal,
    Sealer,
    SealReport,
    authenticate,
    flagged,
)
from mcp_gateway.audit.verify import Problem, verify
from mcp_gateway.types import AuditRecord, AuditSink

__all__ = ["VerifyOutcome", "VerifyProgress", "verify_with_progress"]

_SIGNATURE_KINDS = frozenset({"forged_checkpoint", "missing_checkpoint"})


@dataclasses.dataclass(frozen=True, slots=True)
class VerifyOutcome:
    """What ``verify_with_progress`` found, in the shape ``assess`` reports it."""

    assessment: Assessment
    through: tuple[int, str]
    seconds: float

    @property
    def ok(self) -> bool:
        return self.assessment.ok

    @property
    def unauthenticated_after(self) -> int | None:
        """Records after this seq are authenticated by nothing this run held (no seal key, no checkpoint)."""
        if self.assessment.seals is not None:
            return None
        newest = self.assessment.checkpoints.newest
        covered = newest.seq if newest is not None else 0
        return covered if self.through[0] > covered else None


@dataclasses.dataclass(frozen=True, slots=True)
class VerifyProgress:
    """A step of ``verify_with_progress``: ``done`` of ``total`` records checked; the last step
    (``phase == "done"``) carries the ``outcome``."""

    done: int
    total: int
    phase: Literal["checking", "done"]
    outcome: VerifyOutcome | None = None


class _Run:
    """The state carried from one batch to the next."""

    def __init__(self, heads: dict[int, str], sealer: Sealer | None, vouched: int) -> None:
        self.heads, self.sealer, self.vouched = heads, sealer, vouched
        self.anchor = (0, GENESIS)
        self.problems: list[Problem] = []
        self.checked = 0
        self.authenticated = 0
        self.unauthenticated: dict[int, str] = {}  # seq -> hash, of records no seal covered (yet)
        self.vouches: list[tuple[int, str]] = []

    def check(self, part: list[AuditRecord], seals: list[AuditSeal]) -> None:
        report = verify(part, anchor=self.anchor)
        self.problems.extend(report.problems)
        seen = {p.seq for p in report.problems}
        by_seq = {r.seq: r.hash for r in reversed(part)}
        for seq in range(part[0].seq, part[-1].seq + 1):
            if seq in self.heads and seq not in seen:
                stored = by_seq.get(seq)
                if stored is None:
                    self.problems.append(
                        Problem(seq, "deleted", f"record {seq}, covered by a checkpoint, is missing")
                    )
                elif stored != self.heads[seq]:
                    why = f"record {seq} was modified: it does not match its signed checkpoint"
                    self.problems.append(Problem(seq, "modified", why))
        self.problems.extend(flagged(part))
        if self.sealer is not None:
            sealed = authenticate(part, seals, self.sealer, vouched=self.vouched)
            self.authenticated += sealed.authenticated
            missing = {seq for first, last in sealed.unauthenticated for seq in range(first, last + 1)}
            self.problems.extend(p for p in sealed.problems if p.kind != "unauthenticated")
            self.unauthenticated.update((r.seq, r.hash) for r in part if r.seq in missing)
            for record in part:
                if record.kind in VOUCHING_KINDS and record.seq not in missing and record.seq > self.vouched:
                    pairs = record.detail.get(VOUCHES_FOR, ())
                    self.vouches.extend((p[0], p[1]) for p in pairs if isinstance(p, list) and len(p) == 2)
        self.checked += len(part)
        self.anchor = (part[-1].seq, part[-1].hash)

    def seal_report(self) -> SealReport | None:
        if self.sealer is None:
            return None
        for seq, hash_ in self.vouches:
            if self.unauthenticated.get(seq) == hash_:
                del self.unauthenticated[seq]
                self.authenticated += 1
        ranges: list[tuple[int, int]] = []
        for seq in sorted(self.unauthenticated):
            if ranges and seq == ranges[-1][1] + 1:
                ranges[-1] = (ranges[-1][0], seq)
            else:
                ranges.append((seq, seq))
        problems = [
            Problem(a, "unauthenticated", f"records {a} to {b} carry no valid seal", end=b) for a, b in ranges
        ]
        self.problems.extend(problems)
        return SealReport(self.authenticated, ranges, problems)


async def verify_with_progress(
    sink: AuditSink,
    public_keys: Mapping[str, Ed25519PublicKey],
    *,
    mirror: Path | None = None,
    sealer: Sealer | None = None,
    expected_head: tuple[int, str] | None = None,
    batch: int = 20_000,
) -> AsyncIterator[VerifyProgress]:
    """Verify the log up to the head found at the start, a batch at a time, yielding a ``checking``
    step after each batch and a last ``done`` step with the outcome.

    Records appended meanwhile wait for the next run. Store reads run in worker threads.

    Raises:
        AuditError: the store or the mirror cannot be read.
    """
    started = time.perf_counter()

    def snapshot() -> tuple[CheckpointReport, dict[int, str], int]:
        # Checkpoints first, then the head: each was signed over a record written before it, so a
        # checkpoint beyond this head means records were removed, never that they came later.
        stored = sink.checkpoints()
        mirrored = read_mirror(mirror) if mirror is not None else []
        head = sink.head()
        # Signatures only: with no records given, what it says about the chain is dropped below.
        signed = verify_with_checkpoints([], stored, public_keys, mirrored=mirrored)
        heads = {
            cp.seq: cp.hash
            for cp in dict.fromkeys((*stored, *mirrored))
            if (key := public_keys.get(cp.key_id)) is not None and signature_valid(cp, key)
        }
        return signed, heads, head[0] if head is not None else 0

    signed, heads, total = await anyio.to_thread.run_sync(snapshot)
    newest = signed.newest
    if expected_head is not None:
        heads[expected_head[0]] = expected_head[1]
    run = _Run(heads, sealer, newest.seq if newest is not None else 0)
    run.problems.extend(p for p in signed.problems if p.kind in _SIGNATURE_KINDS)
    read_seals = getattr(sink, "seals", None)
    pending: list[AuditSeal] = []
    seal_cursor = 0
    buffer: list[AuditRecord] = []
    after = 0
    while True:
        chunk: list[Any] = await anyio.to_thread.run_sync(partial(sink.records, after_seq=after, limit=batch))
        chunk = [r for r in chunk if r.seq <= total]
        buffer.extend(chunk)
        if chunk:
            after = chunk[-1].seq
        last = not chunk or after >= total
        if not buffer:
            break
        end = buffer[-1].seq
        seals: list[AuditSeal] = []
        if sealer is not None and read_seals is not None:
            while seal_cursor >= 0 and (not pending or pending[-1].last_seq <= end):
                more = await anyio.to_thread.run_sync(partial(read_seals, after_seq=seal_cursor, limit=1000))
                pending.extend(more)
                seal_cursor = more[-1].last_seq if len(more) == 1000 else -1
            spanning = [s for s in pending if s.first_seq <= end < s.last_seq]
            cut = end if last or not spanning else min(s.first_seq for s in spanning) - 1
            # The last batch takes every seal left: one reaching past the log's end is checked too.
            taken = [s.last_seq <= cut or (last and s.first_seq <= cut) for s in pending]
            seals = [s for s, take in zip(pending, taken, strict=True) if take]
            pending = [s for s, take in zip(pending, taken, strict=True) if not take]
        else:
            cut = end
        part = [r for r in buffer if r.seq <= cut]
        if not part:
            continue  # one sealed batch longer than ``batch``: read on
        buffer = [r for r in buffer if r.seq > cut]
        await anyio.to_thread.run_sync(partial(run.check, part, seals))
        yield VerifyProgress(min(run.checked, total), total, "checking")
        if last and not buffer:
            break
    through = run.anchor if run.checked else (0, "")
    newest_head = max(heads, default=0)
    if newest_head > through[0]:
        why = f"the log ends at seq {through[0]} but the expected head is seq {newest_head}"
        run.problems.append(Problem(through[0] + 1, "truncated", why))
    sealed = run.seal_report()
    problems = sorted(run.problems, key=lambda p: p.seq)
    chain = CheckpointReport(
        ok=not [p for p in problems if p.kind not in ("unauthenticated", "forged_seal")],
        checked=run.checked,
        checkpoints=signed.checkpoints,
        newest=newest,
        key_ids=signed.key_ids,
        problems=[p for p in problems if p.kind not in ("unauthenticated", "forged_seal")],
    )
    outcome = VerifyOutcome(Assessment(chain, sealed, problems), through, time.perf_counter() - started)
    yield VerifyProgress(run.checked, total, "done", outcome)
