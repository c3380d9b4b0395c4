"""Signed checkpoints: the pure sign/verify core, the combined check against the chain, and storage."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcp_gateway.audit.checkpoint import (
    checkpoint_from_dict,
    checkpoint_to_dict,
    key_id_of,
    parse_public_keys,
    public_key_pem,
    sign_checkpoint,
    signature_valid,
    verify_with_checkpoints,
)
from mcp_gateway.audit.checkpointer import Checkpointer, append_mirror, read_mirror
from mcp_gateway.audit.log import AuditLog
from mcp_gateway.audit.record import chain
from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.errors import AuditError, AuditWriteError
from mcp_gateway.types import AuditCheckpoint, AuditEvent, AuditRecord

# Fixed keys keep hypothesis examples reproducible; they are test keys, never deployed.
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
KEYS = {key_id_of(KEY.public_key()): KEY.public_key()}


def make_log(n: int, start: int = 0) -> list[AuditRecord]:
    events = [AuditEvent(kind="intent", call_id=str(i), agent="a", args={"i": i}) for i in range(start, n)]
    return chain(None, events, 1700000000.5) if events else []


def checkpoint_of(records: list[AuditRecord], seq: int, key: Ed25519PrivateKey = KEY) -> AuditCheckpoint:
    record = records[seq - 1]
    return sign_checkpoint(key, record.seq, record.hash, 1700000001.25)


def kinds(report: Any) -> list[tuple[str, int]]:
    return [(p.kind, p.seq) for p in report.problems]


# ---- pure sign / verify -------------------------------------------------------------------------


def test_a_signed_checkpoint_verifies_with_its_public_key_and_round_trips_through_json() -> None:
    cp = sign_checkpoint(KEY, 7, "ab" * 32, 1700000000.125)
    assert cp.key_id == key_id_of(KEY.public_key()) and len(cp.key_id) == 16
    assert signature_valid(cp, KEY.public_key())
    again = checkpoint_from_dict(json.loads(json.dumps(checkpoint_to_dict(cp))))
    assert again == cp and signature_valid(again, KEY.public_key())


@pytest.mark.parametrize(
    "change",
    [
        {"seq": 8},
        {"hash": "cd" * 32},
        {"ts": 1700000000.126},
        {"key_id": "0" * 16},
        {"signature": "00" * 64},
    ],
    ids=lambda change: next(iter(change)),
)
def test_a_checkpoint_with_any_field_changed_fails_verification(change: dict[str, Any]) -> None:
    cp = sign_checkpoint(KEY, 7, "ab" * 32, 1700000000.125)
    assert not signature_valid(dataclasses.replace(cp, **change), KEY.public_key())


@given(position=st.integers(0, 63), bit=st.integers(0, 7))
def test_any_flipped_bit_of_the_signature_fails_verification(position: int, bit: int) -> None:
    cp = sign_checkpoint(KEY, 7, "ab" * 32, 1700000000.125)
    raw = bytearray(bytes.fromhex(cp.signature))
    raw[position] ^= 1 << bit
    assert not signature_valid(dataclasses.replace(cp, signature=raw.hex()), KEY.public_key())


def test_a_checkpoint_does_not_verify_under_another_key_even_if_it_claims_that_keys_id() -> None:
    cp = sign_checkpoint(OTHER, 7, "ab" * 32, 1700000000.125)
    assert not signature_valid(cp, KEY.public_key())
    relabelled = dataclasses.replace(cp, key_id=key_id_of(KEY.public_key()))
    assert not signature_valid(relabelled, KEY.public_key())


@pytest.mark.parametrize(
    ("field", "value"),
    [("seq", "7"), ("seq", True), ("seq", 0), ("ts", "x"), ("hash", "AB" * 32), ("signature", "zz")],
)
def test_a_malformed_checkpoint_is_refused_naming_the_field(field: str, value: Any) -> None:
    data = checkpoint_to_dict(sign_checkpoint(KEY, 7, "ab" * 32, 1.0))
    data[field] = value
    with pytest.raises(AuditError, match=f"`{field}`"):
        checkpoint_from_dict(data)
    with pytest.raises(AuditError, match="exactly the fields"):
        checkpoint_from_dict({**checkpoint_to_dict(sign_checkpoint(KEY, 7, "ab" * 32, 1.0)), "extra": 1})


def test_a_public_key_file_may_hold_several_keys_and_nothing_else() -> None:
    pem = public_key_pem(KEY.public_key()) + public_key_pem(OTHER.public_key())
    keys = parse_public_keys(pem)
    assert set(keys) == {key_id_of(KEY.public_key()), key_id_of(OTHER.public_key())}
    assert all(isinstance(k, Ed25519PublicKey) for k in keys.values())
    with pytest.raises(AuditError):
        parse_public_keys(b"not a key")


# ---- checkpoints against the chain --------------------------------------------------------------


def test_an_intact_log_with_checkpoints_verifies_and_counts_them() -> None:
    log = make_log(10)
    report = verify_with_checkpoints(log, [checkpoint_of(log, 4), checkpoint_of(log, 8)], KEYS)
    assert report.ok and report.checked == 10 and report.checkpoints == 2
    assert report.newest is not None and report.newest.seq == 8


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_truncation_of_the_tail_at_or_before_the_newest_checkpoint_is_detected(
    data: st.DataObject,
) -> None:
    n = data.draw(st.integers(1, 25), label="records")
    log = make_log(n)
    seqs = data.draw(st.lists(st.integers(1, n), min_size=1, max_size=4, unique=True), label="checkpoints")
    checkpoints = [checkpoint_of(log, seq) for seq in seqs]
    keep = data.draw(st.integers(0, max(seqs) - 1), label="records kept")
    if data.draw(st.booleans(), label="checkpoint rows dropped too"):
        # Whoever truncated the records dropped the store's checkpoints about them as well; the
        # mirror file still has them.
        stored, mirrored = [cp for cp in checkpoints if cp.seq <= keep], checkpoints
    else:
        stored, mirrored = checkpoints, []
    report = verify_with_checkpoints(log[:keep], stored, KEYS, mirrored=mirrored)
    assert not report.ok
    assert ("truncated", keep + 1) in kinds(report)


@settings(max_examples=60)
@given(n=st.integers(2, 20), data=st.data())
def test_a_truncation_after_the_newest_checkpoint_is_not_detectable_without_an_external_head(
    n: int, data: st.DataObject
) -> None:
    log = make_log(n)
    seq = data.draw(st.integers(1, n - 1))
    keep = data.draw(st.integers(seq, n - 1))
    # The documented limit: the checkpoints vouch for nothing after the newest of them.
    assert verify_with_checkpoints(log[:keep], [checkpoint_of(log, seq)], KEYS).ok


def test_a_chain_rewritten_after_a_deletion_with_every_hash_recomputed_fails_its_checkpoint() -> None:
    log = make_log(10)
    checkpoints = [checkpoint_of(log, 5), checkpoint_of(log, 9)]
    # Drop record 3 and re-chain the rest: a perfectly valid chain, one record shorter.
    survivors = [dataclasses.asdict(r) for r in log if r.seq != 3]
    events = [
        AuditEvent(**{k: v for k, v in r.items() if k not in ("seq", "ts", "prev_hash", "hash")})
        for r in survivors
    ]
    rewritten = chain(None, events, 1700000000.5)
    assert verify_with_checkpoints(rewritten, [], KEYS).ok
    report = verify_with_checkpoints(rewritten, checkpoints, KEYS)
    # Record 9 exists again (renumbered), but it is not the record the checkpoint signed.
    assert kinds(report) == [("modified", 5), ("modified", 9)]


def test_a_forged_checkpoint_is_reported_and_does_not_vouch_for_anything() -> None:
    log = make_log(6)
    good = checkpoint_of(log, 3)
    forged = dataclasses.replace(checkpoint_of(log, 6), seq=9)  # claims the log went further
    unknown = checkpoint_of(log, 6, key=OTHER)
    report = verify_with_checkpoints(log, [good, forged, unknown], KEYS)
    assert kinds(report) == [("forged_checkpoint", 6), ("forged_checkpoint", 9)]
    assert "unknown key" in report.problems[0].message
    assert report.checkpoints == 1  # the forgery did not make the log look truncated either


def test_a_checkpoint_dropped_from_the_store_but_kept_in_the_mirror_is_reported() -> None:
    log = make_log(6)
    first, second = checkpoint_of(log, 3), checkpoint_of(log, 6)
    report = verify_with_checkpoints(log, [second], KEYS, mirrored=[first, second])
    assert kinds(report) == [("missing_checkpoint", 3)]
    assert verify_with_checkpoints(log, [first, second], KEYS, mirrored=[first]).ok


def test_an_edited_record_at_a_checkpoint_is_named_once() -> None:
    log = make_log(6)
    checkpoints = [checkpoint_of(log, 3), checkpoint_of(log, 6)]
    log[2] = dataclasses.replace(log[2], args={"i": 99})
    assert kinds(verify_with_checkpoints(log, checkpoints, KEYS)) == [("modified", 3)]


# ---- the checkpointer and its mirror file --------------------------------------------------------


@pytest.mark.parametrize(
    ("every", "first", "last", "due"),
    [
        (10, 1, 9, False),
        (10, 1, 10, True),
        (10, 10, 10, True),
        (10, 11, 19, False),
        (10, 9, 12, True),
        (10, 15, 31, True),
        (1, 5, 5, True),
        (0, 1, 10_000, False),
    ],
)
def test_a_checkpoint_is_due_when_a_batch_crosses_a_multiple_of_every(
    tmp_path: Path, every: int, first: int, last: int, due: bool
) -> None:
    with SQLiteAuditSink(tmp_path / "audit.db") as sink:
        assert Checkpointer(sink, KEY, every=every).due(first, last) is due


def test_checkpoints_are_stored_in_the_sink_and_appended_to_the_mirror(tmp_path: Path) -> None:
    mirror = tmp_path / "elsewhere" / "checkpoints.jsonl"
    with SQLiteAuditSink(tmp_path / "audit.db") as sink:
        records = sink.append([AuditEvent(kind="intent", call_id=str(i)) for i in range(3)])
        writer = Checkpointer(sink, KEY, every=2, mirror=mirror, clock=lambda: 5.0)
        first = writer.write(2, records[1].hash)
        second = writer.write(3, records[2].hash)
        assert sink.checkpoints() == [first, second]
    assert read_mirror(mirror) == [first, second]
    assert mirror.read_text().count("\n") == 2
    with SQLiteAuditSink(tmp_path / "audit.db") as reopened:
        assert reopened.checkpoints() == [first, second]
        assert verify_with_checkpoints(reopened.records(), reopened.checkpoints(), KEYS).ok


def test_a_checkpoint_still_reaches_the_mirror_when_the_store_refuses_it(tmp_path: Path) -> None:
    mirror = tmp_path / "checkpoints.jsonl"
    sink = SQLiteAuditSink(tmp_path / "audit.db")
    (record,) = sink.append([AuditEvent(kind="intent")])
    (tmp_path / "audit.db").unlink()  # the store is gone from under the process
    try:
        with pytest.raises(AuditWriteError, match="seq 1 not fully stored"):
            Checkpointer(sink, KEY, mirror=mirror).write(1, record.hash)
    finally:
        sink.close()
    assert [cp.seq for cp in read_mirror(mirror)] == [1]


def test_a_mirror_line_that_is_not_a_checkpoint_is_named_by_line(tmp_path: Path) -> None:
    mirror = tmp_path / "checkpoints.jsonl"
    append_mirror(mirror, sign_checkpoint(KEY, 1, "ab" * 32, 1.0))
    with mirror.open("a") as fh:
        fh.write('{"seq": 2}\n')
    with pytest.raises(AuditError, match=r"checkpoints.jsonl:2: "):
        read_mirror(mirror)
    assert read_mirror(tmp_path / "absent.jsonl") == []


@pytest.mark.anyio
async def test_the_audit_log_signs_after_each_multiple_of_every_and_once_more_at_close(
    tmp_path: Path,
) -> None:
    mirror = tmp_path / "checkpoints.jsonl"
    with SQLiteAuditSink(tmp_path / "audit.db") as sink:
        log = AuditLog(sink, checkpointer=Checkpointer(sink, KEY, every=5, mirror=mirror))
        for i in range(12):
            await log.append(AuditEvent(kind="intent", call_id=str(i)))
        assert [cp.seq for cp in sink.checkpoints()] == [5, 10]
        await log.aclose()
        await log.aclose()  # idempotent: no second checkpoint of the same record
        assert [cp.seq for cp in sink.checkpoints()] == [5, 10, 12]
        assert sink.checkpoints() == read_mirror(mirror)
        mirrored = read_mirror(mirror)
        report = verify_with_checkpoints(sink.records(), sink.checkpoints(), KEYS, mirrored=mirrored)
        assert report.ok and report.checkpoints == 3


@pytest.mark.anyio
async def test_a_failing_checkpoint_does_not_fail_the_append(tmp_path: Path) -> None:
    class NoCheckpoints(SQLiteAuditSink):
        def write_checkpoint(self, checkpoint: AuditCheckpoint) -> None:
            raise AuditWriteError("checkpoint table is read-only")

    with NoCheckpoints(tmp_path / "audit.db") as sink:
        log = AuditLog(sink, checkpointer=Checkpointer(sink, KEY, every=1))
        with anyio.fail_after(10):
            record = await log.append(AuditEvent(kind="intent"))
            await log.aclose()
        assert record.seq == 1 and sink.records() == [record]
