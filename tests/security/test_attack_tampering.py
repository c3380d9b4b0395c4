"""Attack 5: 1,000 random trials each of modify, delete, insert, reorder and truncate on the audit log.

Each trial builds a fresh chain with a signed checkpoint at its head, lets an attacker (who can write
the store but does not hold the signing key) alter it one way, and requires ``verify`` to say so.
``MCP_GATEWAY_TAMPER_TRIALS`` raises the count for a local soak.
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mcp_gateway.audit.checkpoint import key_id_of, sign_checkpoint, verify_with_checkpoints
from mcp_gateway.audit.record import chain, content_hash
from mcp_gateway.types import AuditEvent, AuditRecord

TRIALS = int(os.environ.get("MCP_GATEWAY_TAMPER_TRIALS", "1000"))
KEY = Ed25519PrivateKey.generate()
PUBLIC = {key_id_of(KEY.public_key()): KEY.public_key()}
FIELDS = ["kind", "call_id", "agent", "tool", "decision", "status", "args", "detail", "ts"]

Records = list[AuditRecord]


def _log(rng: random.Random) -> Records:
    events = [
        AuditEvent(
            kind=rng.choice(["intent", "outcome", "denied"]),
            call_id=f"c{i // 2}",
            agent=rng.choice(["a", "b"]),
            tool="t.x",
            decision="allow",
            status="ok",
            args={"n": i},
        )
        for i in range(rng.randint(4, 12))
    ]
    return chain(None, events, 1_700_000_000.0)


def _modify(rng: random.Random, log: Records) -> Records:
    i = rng.randrange(len(log))
    field = rng.choice(FIELDS)
    old = getattr(log[i], field)
    new = old + 1.0 if field == "ts" else ({"forged": True} if isinstance(old, dict) else f"{old}-forged")
    edited = dataclasses.replace(log[i], **{field: new})
    if rng.random() < 0.5:
        # A careful attacker also recomputes the edited record's own hash.
        edited = dataclasses.replace(edited, hash=content_hash(edited))
    return [*log[:i], edited, *log[i + 1 :]]


def _delete(rng: random.Random, log: Records) -> Records:
    i = rng.randrange(len(log))
    return [*log[:i], *log[i + 1 :]]


def _insert(rng: random.Random, log: Records) -> Records:
    i = rng.randrange(1, len(log))
    forged = dataclasses.replace(log[i - 1], call_id="forged", seq=log[i - 1].seq + 1)
    forged = dataclasses.replace(forged, prev_hash=log[i - 1].hash)
    forged = dataclasses.replace(forged, hash=content_hash(forged))
    return [*log[:i], forged, *log[i:]]


def _reorder(rng: random.Random, log: Records) -> Records:
    i, j = sorted(rng.sample(range(len(log)), 2))
    out = list(log)
    out[i], out[j] = out[j], out[i]
    return out


def _truncate(rng: random.Random, log: Records) -> Records:
    return log[: rng.randrange(0, len(log))]


ATTACKS: dict[str, Callable[[random.Random, Records], Records]] = {
    "modify": _modify,
    "delete": _delete,
    "insert": _insert,
    "reorder": _reorder,
    "truncate": _truncate,
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_every_random_tampering_of_the_audit_log_is_detected(attack: str) -> None:
    rng = random.Random(f"tamper-{attack}")  # noqa: S311 - reproducible trials, not cryptography
    detected = 0
    for _ in range(TRIALS):
        log = _log(rng)
        head = sign_checkpoint(KEY, log[-1].seq, log[-1].hash, 1_700_000_100.0)
        assert verify_with_checkpoints(log, [head], PUBLIC).ok
        tampered = ATTACKS[attack](rng, log)
        report = verify_with_checkpoints(tampered, [head], PUBLIC)
        detected += not report.ok
    assert detected == TRIALS, f"{attack}: detected {detected} of {TRIALS}"
