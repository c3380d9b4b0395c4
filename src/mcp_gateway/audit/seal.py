"""Seals: a MAC over every committed batch of audit records, made with a key only the gateway holds.

The hash chain (``record.py``) shows edits *inside* the log, but anyone who can write the store can
append a record with the right ``prev_hash`` and SHA-256, or rewrite the records after the newest
signed checkpoint and recompute the chain: no key is needed for either. A seal closes that hole. The
sink writes one in the same transaction as each batch: HMAC-SHA256, keyed with the vault's
``audit-seal-key``, over the batch's first and last seq, the hash before it and its head hash.
Because the records in between are bound by the chain, a valid seal authenticates every one of them;
a record no valid seal covers was written by someone without the key (or by a process that had no
key: a gateway started with its vault sealed).

``authenticate`` says which records the seals vouch for; ``check_since`` is the gateway's start-up
check of the tail it inherits (``checkpoint.py`` covers the signed checkpoints).

No I/O happens here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
from collections.abc import Iterable, Sequence
from typing import Any

from mcp_gateway.audit.record import GENESIS, canonical, content_hash
from mcp_gateway.audit.verify import Problem, verify
from mcp_gateway.errors import AuditError
from mcp_gateway.types import AuditRecord

DOMAIN = b"mcp-gateway audit seal v1\n"
ALARM_KIND = "audit_alarm"
"""The kind of the record a gateway writes when it inherits records it cannot authenticate."""
VOUCHES_FOR = "vouches_for"
"""A sealed record's ``detail`` key listing ``[seq, hash]`` of earlier records its own writer made
before any seal key existed (``vault init``'s first record); they stand authenticated by it."""
VOUCHING_KINDS = frozenset({"vault_init"})
"""The only kinds whose ``VOUCHES_FOR`` counts: the one command that writes before the vault has a
seal key. Other records' details can carry text from agents or upstreams, and a key an agent could
fill in must never authenticate a forged record."""
_HEX = re.compile(r"[0-9a-f]+")


@dataclasses.dataclass(frozen=True, slots=True)
class AuditSeal:
    """The gateway's MAC over records ``first_seq..last_seq`` (one committed batch).

    Attributes:
        first_seq: the batch's first record.
        last_seq: its last record.
        prev_hash: the hash of the record before ``first_seq`` (``GENESIS`` for seq 1).
        head_hash: the hash of record ``last_seq``.
        key_id: which seal key made the MAC (16 hex digits, not the key).
        mac: HMAC-SHA256 over ``DOMAIN`` and the canonical JSON of the other fields, hex.
    """

    first_seq: int
    last_seq: int
    prev_hash: str
    head_hash: str
    key_id: str
    mac: str


SEAL_COLUMNS = ("first_seq", "last_seq", "prev_hash", "head_hash", "key_id", "mac")


def seal_to_row(seal: AuditSeal) -> tuple[Any, ...]:
    # In ``SEAL_COLUMNS`` order (a test pins it).
    return (seal.first_seq, seal.last_seq, seal.prev_hash, seal.head_hash, seal.key_id, seal.mac)


def seal_from_row(row: Sequence[Any]) -> AuditSeal:
    first, last, prev_hash, head_hash, key_id, mac = row
    return AuditSeal(int(first), int(last), str(prev_hash), str(head_hash), str(key_id), str(mac))


class Sealer:
    """Makes and checks seals with one key; ``repr`` shows only the key id.

    Args:
        key: the 32-byte seal key (the vault's ``audit-seal-key``).
    """

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise AuditError("an audit seal key must be at least 32 bytes")
        self._key = key
        self.key_id = hashlib.sha256(b"mcp-gateway audit seal key id\n" + key).hexdigest()[:16]
        # The HMAC state after the key and ``DOMAIN``: each MAC copies it (a fifth cheaper than anew).
        self._keyed = hmac.new(key, DOMAIN, hashlib.sha256)

    def __repr__(self) -> str:
        return f"Sealer(key_id={self.key_id!r})"

    def _mac(self, first_seq: int, last_seq: int, prev_hash: str, head_hash: str, key_id: str) -> str:
        body = {"first": first_seq, "head": head_hash, "key_id": key_id, "last": last_seq, "prev": prev_hash}
        mac = self._keyed.copy()
        mac.update(canonical(body))
        return mac.hexdigest()

    def seal(self, records: Sequence[AuditRecord]) -> AuditSeal:
        """The seal of one batch of consecutive, chained records."""
        first, last = records[0], records[-1]
        mac = self._mac(first.seq, last.seq, first.prev_hash, last.hash, self.key_id)
        return AuditSeal(first.seq, last.seq, first.prev_hash, last.hash, self.key_id, mac)

    def valid(self, seal: AuditSeal) -> bool:
        """Whether ``seal`` was made with this key. Never raises."""
        if seal.key_id != self.key_id or not _HEX.fullmatch(seal.mac):
            return False
        expected = self._mac(seal.first_seq, seal.last_seq, seal.prev_hash, seal.head_hash, seal.key_id)
        return hmac.compare_digest(expected, seal.mac)


@dataclasses.dataclass(frozen=True, slots=True)
class SealReport:
    """Which records the seals authenticate.

    Attributes:
        authenticated: how many of the records given a valid seal covers.
        unauthenticated: the seq ranges ``(first, last)`` no valid seal covers, ascending.
        problems: forged seals, sealed records that changed, and every unauthenticated range.
    """

    authenticated: int
    unauthenticated: list[tuple[int, int]]
    problems: list[Problem]


def _ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for seq in sorted(seqs):
        if out and seq == out[-1][1] + 1:
            out[-1] = (out[-1][0], seq)
        else:
            out.append((seq, seq))
    return out


def describe(first: int, last: int) -> str:
    return f"record {first}" if first == last else f"records {first} to {last}"


def authenticate(
    records: Sequence[AuditRecord], seals: Iterable[AuditSeal], sealer: Sealer, *, vouched: int = 0
) -> SealReport:
    """Check every seal against ``records`` and say which records stand authenticated.

    A record is authenticated when a seal with a valid MAC covers it and every record of that seal's
    batch is present, unmodified (its hash matches its content) and linked as when it was sealed.

    Args:
        records: records in stored order (the whole log, or every record after some seq).
        seals: the seals kept in the store.
        sealer: the seal key.
        vouched: the newest seq a valid signed checkpoint covers (the chain check holds those
            records to it); they need no seal, so records written before seals existed still verify.
    """
    by_seq: dict[int, AuditRecord] = {}
    intact: dict[int, bool] = {}
    for record in records:
        if record.seq not in by_seq:
            by_seq[record.seq] = record
            intact[record.seq] = content_hash(record) == record.hash
    problems: list[Problem] = []
    covered: set[int] = set()
    low = min(by_seq, default=0)
    for seal in dict.fromkeys(seals):
        if seal.last_seq < low or seal.first_seq > seal.last_seq:
            continue  # about records before the ones given
        if not sealer.valid(seal):
            why = (
                f"the seal over {describe(seal.first_seq, seal.last_seq)} was not made with the gateway's key"
            )
            problems.append(Problem(seal.first_seq, "forged_seal", why))
            continue
        span = range(seal.first_seq, seal.last_seq + 1)
        ok = all(seq in by_seq and intact[seq] for seq in span)
        if ok:
            ok = (
                by_seq[seal.first_seq].prev_hash == seal.prev_hash
                and by_seq[seal.last_seq].hash == seal.head_hash
            )
            ok = ok and all(by_seq[seq].prev_hash == by_seq[seq - 1].hash for seq in span[1:])
        if ok:
            covered.update(span)
        elif any(seq in by_seq for seq in span):
            differ = "differs" if seal.first_seq == seal.last_seq else "differ"
            why = f"{describe(seal.first_seq, seal.last_seq)} {differ} from what the gateway sealed"
            problems.append(Problem(seal.first_seq, "modified", why))
    for seq in sorted(covered):
        if by_seq[seq].kind not in VOUCHING_KINDS:
            continue
        for pair in by_seq[seq].detail.get(VOUCHES_FOR, ()):
            if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], int) and pair[0] < seq:
                earlier = by_seq.get(pair[0])
                if earlier is not None and intact[pair[0]] and earlier.hash == pair[1]:
                    covered.add(pair[0])
    missing = _ranges(seq for seq in by_seq if seq not in covered and seq > vouched)
    for first, last in missing:
        carry = "carries" if first == last else "carry"
        why = f"{describe(first, last)} {carry} no valid seal: written without the gateway's key"
        problems.append(Problem(first, "unauthenticated", why, end=last))
    problems.sort(key=lambda problem: problem.seq)
    return SealReport(len(covered | {seq for seq in by_seq if seq <= vouched}), missing, problems)


def flagged(records: Iterable[AuditRecord]) -> list[Problem]:
    """The ranges earlier gateways flagged as unauthenticated (their ``audit_alarm`` records)."""
    problems: list[Problem] = []
    for record in records:
        if record.kind != ALARM_KIND:
            continue
        for span in record.detail.get("unauthenticated", ()):
            if isinstance(span, list) and len(span) == 2 and all(isinstance(n, int) for n in span):
                were = "was" if span[0] == span[1] else "were"
                why = (
                    f"{describe(span[0], span[1])} {were} found unauthenticated by the gateway"
                    f" (its alarm is record {record.seq})"
                )
                problems.append(Problem(span[0], "unauthenticated", why, end=span[1]))
    return problems


def check_since(
    records: Sequence[AuditRecord],
    seals: Iterable[AuditSeal],
    sealer: Sealer,
    anchor: tuple[int, str] = (0, GENESIS),
) -> list[Problem]:
    """What a starting gateway finds wrong in the records after ``anchor`` (its newest trusted checkpoint).

    The chain must continue from the anchor, and every record must be authenticated by a seal.
    """
    report = verify(records, anchor=anchor)
    return sorted([*report.problems, *authenticate(records, seals, sealer).problems], key=lambda p: p.seq)


def alarm_detail(problems: Sequence[Problem], **found: Any) -> dict[str, Any]:
    """The ``detail`` of an ``audit_alarm`` record: the unauthenticated ranges and what was found."""
    return {
        **found,
        "unauthenticated": [
            [p.seq, p.end if p.end is not None else p.seq] for p in problems if p.kind == "unauthenticated"
        ],
        "problems": [f"seq {p.seq}: {p.kind}: {p.message}" for p in problems[:20]],
        "problem_count": len(problems),
    }
