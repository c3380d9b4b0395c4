"""Signed checkpoints of the audit chain: canonical payload, Ed25519 sign/verify, and the combined check.

The hash chain (``record.py``) shows any edit *inside* a log, but a log cut short is still a valid
chain, and so is a log rewritten from some point on with every hash recomputed. A checkpoint closes
both holes the way CloudTrail's signed digest files do: it is the statement "the chain had record
``seq`` with hash ``hash``", signed with the gateway's audit-signing key. Whoever edits the store
without that key cannot make a checkpoint agree with a rewritten chain, nor forge one that would.
``verify_with_checkpoints`` then demands that every correctly signed checkpoint matches the chain and
that the chain reaches the newest one; removing records it covers is reported as ``truncated``.

What stays undetectable: removing the records written *after* the newest checkpoint (together with
any checkpoint rows about them). Only a head kept elsewhere catches that.

The signed bytes are a domain tag followed by the canonical JSON of ``{"hash", "key_id", "seq",
"ts"}``; the key id is part of the payload so a signature cannot be re-attributed to another key.
A key id is the first 16 hex digits of SHA-256 over the raw 32-byte public key.

No I/O happens here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)

from mcp_gateway.audit.record import canonical
from mcp_gateway.audit.verify import Problem, verify
from mcp_gateway.errors import AuditError
from mcp_gateway.types import AuditCheckpoint, AuditRecord

DOMAIN = b"mcp-gateway audit checkpoint v1\n"
_HASH = re.compile(r"[0-9a-f]{64}")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_SIGNATURE = re.compile(r"[0-9a-f]{128}")
_PEM_BLOCK = re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----\s*", re.DOTALL)


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """The key id of ``public_key``: 16 hex digits of SHA-256 over its raw bytes."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def payload(seq: int, head_hash: str, ts: float, key_id: str) -> bytes:
    """The exact bytes a checkpoint's signature covers."""
    return DOMAIN + canonical({"hash": head_hash, "key_id": key_id, "seq": seq, "ts": ts})


def sign_checkpoint(private_key: Ed25519PrivateKey, seq: int, head_hash: str, ts: float) -> AuditCheckpoint:
    """Sign the statement that record ``seq`` has hash ``head_hash``.

    Args:
        private_key: the audit-signing key.
        seq: the seq of the record covered (and, through the chain, every record before it).
        head_hash: that record's hash.
        ts: the signing time, epoch seconds.
    """
    key_id = key_id_of(private_key.public_key())
    signature = private_key.sign(payload(seq, head_hash, float(ts), key_id))
    return AuditCheckpoint(seq=seq, hash=head_hash, ts=float(ts), key_id=key_id, signature=signature.hex())


def signature_valid(checkpoint: AuditCheckpoint, public_key: Ed25519PublicKey) -> bool:
    """Whether ``checkpoint`` is well formed and signed by ``public_key``. Never raises."""
    if (
        checkpoint.key_id != key_id_of(public_key)
        or not _SIGNATURE.fullmatch(checkpoint.signature)
        or not _HASH.fullmatch(checkpoint.hash)
    ):
        return False
    try:
        data = payload(checkpoint.seq, checkpoint.hash, checkpoint.ts, checkpoint.key_id)
        public_key.verify(bytes.fromhex(checkpoint.signature), data)
    except (InvalidSignature, TypeError, ValueError):
        return False
    return True


def public_key_pem(public_key: Ed25519PublicKey) -> bytes:
    """``public_key`` as a PEM ``PUBLIC KEY`` block (SubjectPublicKeyInfo)."""
    return public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def parse_public_keys(pem: bytes) -> dict[str, Ed25519PublicKey]:
    """Every Ed25519 public key in ``pem`` (one or more PEM blocks), by key id.

    Raises:
        AuditError: a block is not an Ed25519 public key, or there is none.
    """
    keys: dict[str, Ed25519PublicKey] = {}
    for number, block in enumerate(_PEM_BLOCK.findall(pem), start=1):
        try:
            key = load_pem_public_key(block)
        except ValueError:
            raise AuditError(f"public key block {number} is not valid PEM") from None
        if not isinstance(key, Ed25519PublicKey):
            raise AuditError(f"public key block {number} is not an Ed25519 key")
        keys[key_id_of(key)] = key
    if not keys:
        raise AuditError("no PEM public key found")
    return keys


def checkpoint_to_dict(checkpoint: AuditCheckpoint) -> dict[str, Any]:
    """``checkpoint`` as a JSON-ready dict (one line of the mirror file)."""
    return dataclasses.asdict(checkpoint)


def checkpoint_from_dict(data: Any) -> AuditCheckpoint:
    """Rebuild a checkpoint from ``checkpoint_to_dict`` output, checking every field's type and form.

    Raises:
        AuditError: a field is missing, unknown or malformed (names the field).
    """
    fields = [f.name for f in dataclasses.fields(AuditCheckpoint)]
    if not isinstance(data, Mapping) or set(data) != set(fields):
        raise AuditError(f"a checkpoint must be a json object with exactly the fields {', '.join(fields)}")
    seq, ts = data["seq"], data["ts"]
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise AuditError("invalid checkpoint field `seq`")
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        raise AuditError("invalid checkpoint field `ts`")
    for name, pattern in (("hash", _HASH), ("key_id", _KEY_ID), ("signature", _SIGNATURE)):
        if not isinstance(data[name], str) or not pattern.fullmatch(data[name]):
            raise AuditError(f"invalid checkpoint field `{name}`")
    return AuditCheckpoint(
        seq=seq, hash=data["hash"], ts=float(ts), key_id=data["key_id"], signature=data["signature"]
    )


@dataclasses.dataclass(frozen=True, slots=True)
class CheckpointReport:
    """The outcome of ``verify_with_checkpoints``; ``ok`` is true exactly when ``problems`` is empty.

    Attributes:
        checked: records checked.
        checkpoints: distinct checkpoints whose signature was checked and found valid.
        newest: the newest valid checkpoint, or None.
        key_ids: the key ids that signed the valid checkpoints.
    """

    ok: bool
    checked: int
    checkpoints: int
    newest: AuditCheckpoint | None
    key_ids: tuple[str, ...]
    problems: list[Problem]


def verify_with_checkpoints(
    records: Iterable[AuditRecord],
    checkpoints: Iterable[AuditCheckpoint],
    public_keys: Mapping[str, Ed25519PublicKey],
    *,
    mirrored: Iterable[AuditCheckpoint] = (),
    expected_head: tuple[int, str] | None = None,
) -> CheckpointReport:
    """Check the chain and every signed checkpoint against it.

    Args:
        records: the whole log in stored order.
        checkpoints: the checkpoints kept in the audit store.
        public_keys: the trusted audit-signing public keys, by key id.
        mirrored: the checkpoints of the append-only mirror file; one missing from the store means
            the store's checkpoint table was edited.
        expected_head: ``(seq, hash)`` of a record kept elsewhere (``audit verify --expect-head``),
            trusted like a checkpoint.

    Reports, besides what ``verify`` finds: a checkpoint signed by an unknown key or with a
    bad signature (``forged_checkpoint``); a correctly signed one absent from the store
    (``missing_checkpoint``); records the newest checkpoint covers that are gone (``truncated``);
    a record that differs from what its checkpoint signed (``modified``) or is gone (``deleted``).
    """
    recs = list(records)
    stored = list(dict.fromkeys(checkpoints))
    mirror = list(dict.fromkeys(mirrored))
    problems: list[Problem] = []
    valid: list[AuditCheckpoint] = []
    for cp in dict.fromkeys([*stored, *mirror]):
        key = public_keys.get(cp.key_id)
        if key is None:
            why = f"the checkpoint at seq {cp.seq} is signed by unknown key `{cp.key_id}`"
            problems.append(Problem(cp.seq, "forged_checkpoint", why))
        elif not signature_valid(cp, key):
            problems.append(Problem(cp.seq, "forged_checkpoint", f"the checkpoint at seq {cp.seq} is forged"))
        else:
            valid.append(cp)
    in_store, trusted = set(stored), set(valid)
    for cp in mirror:
        if cp in trusted and cp not in in_store:
            why = f"the signed checkpoint at seq {cp.seq} is in the mirror file but not in the audit store"
            problems.append(Problem(cp.seq, "missing_checkpoint", why))
    newest = max(valid, key=lambda cp: cp.seq, default=None)
    heads = [(cp.seq, cp.hash) for cp in valid]
    if expected_head is not None:
        heads.append(expected_head)
    newest_head = max(heads, default=None)
    report = verify(recs, expected_head=newest_head)
    problems.extend(report.problems)
    seen = {problem.seq for problem in report.problems}
    end = max((r.seq for r in recs), default=0)
    by_seq: dict[int, str] = {}
    for record in recs:
        by_seq.setdefault(record.seq, record.hash)
    for seq, head_hash in sorted(set(heads)):
        if (seq, head_hash) == newest_head or seq in seen or seq > end:
            continue  # the chain check already judged it (the newest is its expected head)
        stored_hash = by_seq.get(seq)
        if stored_hash is None:
            if report.problems:
                continue  # a gap the chain check has already reported (as a range)
            problems.append(Problem(seq, "deleted", f"record {seq}, covered by a checkpoint, is missing"))
        elif stored_hash != head_hash:
            why = f"record {seq} was modified: it does not match its signed checkpoint"
            problems.append(Problem(seq, "modified", why))
        else:
            continue
        seen.add(seq)
    problems.sort(key=lambda problem: problem.seq)
    return CheckpointReport(
        ok=not problems,
        checked=report.checked,
        checkpoints=len(valid),
        newest=newest,
        key_ids=tuple(sorted({cp.key_id for cp in valid})),
        problems=problems,
    )
