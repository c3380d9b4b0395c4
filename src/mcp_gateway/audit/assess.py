"""The whole check ``audit verify`` makes: chain, signed checkpoints, seals and earlier alarms.

No I/O happens here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from mcp_gateway.audit.checkpoint import CheckpointReport, verify_with_checkpoints
from mcp_gateway.audit.seal import AuditSeal, Sealer, SealReport, authenticate, flagged
from mcp_gateway.audit.verify import Problem
from mcp_gateway.types import AuditCheckpoint, AuditRecord


@dataclasses.dataclass(frozen=True, slots=True)
class Assessment:
    """What ``assess`` found; ``ok`` exactly when ``problems`` is empty.

    Attributes:
        checkpoints: the chain and checkpoint check.
        seals: the MAC check, or None when it was not made (no seal key).
        problems: every problem of both, and the ranges earlier gateways flagged, by seq.
    """

    checkpoints: CheckpointReport
    seals: SealReport | None
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems


def assess(
    records: Sequence[AuditRecord],
    checkpoints: Iterable[AuditCheckpoint],
    public_keys: Mapping[str, Ed25519PublicKey],
    *,
    mirrored: Iterable[AuditCheckpoint] = (),
    seals: Iterable[AuditSeal] = (),
    sealer: Sealer | None = None,
    expected_head: tuple[int, str] | None = None,
) -> Assessment:
    """Check the log every way there is a key for.

    Args:
        records: the whole log in stored order.
        checkpoints: the checkpoints kept in the audit store.
        public_keys: the trusted audit-signing public keys, by key id.
        mirrored: the checkpoints of the mirror file.
        seals: the seals kept in the audit store.
        sealer: the seal key; None checks no MAC (a verifier holding only public keys).
        expected_head: ``(seq, hash)`` kept elsewhere; the log must hold it.
    """
    report = verify_with_checkpoints(
        records, checkpoints, public_keys, mirrored=mirrored, expected_head=expected_head
    )
    vouched = report.newest.seq if report.newest is not None else 0
    sealed = authenticate(records, seals, sealer, vouched=vouched) if sealer is not None else None
    problems = [*report.problems, *flagged(records), *(sealed.problems if sealed is not None else ())]
    problems.sort(key=lambda problem: problem.seq)
    return Assessment(report, sealed, problems)
