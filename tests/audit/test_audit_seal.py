"""Seals: every committed batch carries a MAC only the gateway can make (``audit/seal.py``)."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import sqlite3
from pathlib import Path

import pytest

from mcp_gateway.audit.record import chain, content_hash
from mcp_gateway.audit.seal import (
    ALARM_KIND,
    DOMAIN,
    SEAL_COLUMNS,
    VOUCHES_FOR,
    AuditSeal,
    Sealer,
    alarm_detail,
    authenticate,
    check_since,
    flagged,
    seal_from_row,
    seal_to_row,
)
from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.errors import AuditWriteError
from mcp_gateway.types import AuditEvent, AuditRecord

SEALER = Sealer(secrets.token_bytes(32))


def _events(n: int, tag: str = "e") -> list[AuditEvent]:
    return [AuditEvent(kind="intent", call_id=f"{tag}{i}", agent="a", tool="t.x") for i in range(n)]


def _sealed_log(batches: list[int]) -> tuple[list[AuditRecord], list[AuditSeal]]:
    records: list[AuditRecord] = []
    seals: list[AuditSeal] = []
    for size in batches:
        batch = chain(records[-1] if records else None, _events(size), 1_700_000_000.0)
        seals.append(SEALER.seal(batch))
        records.extend(batch)
    return records, seals


def _forged_tail(records: list[AuditRecord]) -> AuditRecord:
    # What anyone with write access to the store can make: right seq, right prev_hash, right SHA-256.
    forged = dataclasses.replace(
        records[-1], seq=records[-1].seq + 1, call_id="forged", prev_hash=records[-1].hash
    )
    return dataclasses.replace(forged, hash=content_hash(forged))


def test_every_record_of_a_sealed_batch_is_authenticated() -> None:
    records, seals = _sealed_log([3, 1, 4])
    report = authenticate(records, seals, SEALER)
    assert report.authenticated == 8 and report.unauthenticated == [] and report.problems == []


def test_a_forged_record_appended_with_a_correct_chain_is_unauthenticated() -> None:
    records, seals = _sealed_log([2, 2])
    report = authenticate([*records, _forged_tail(records)], seals, SEALER)
    assert report.unauthenticated == [(5, 5)]
    assert [(p.seq, p.kind) for p in report.problems] == [(5, "unauthenticated")]


def test_a_seal_made_without_the_key_is_reported_forged_and_vouches_for_nothing() -> None:
    records, seals = _sealed_log([2])
    tail = _forged_tail(records)
    forger = Sealer(secrets.token_bytes(32))
    fake = dataclasses.replace(forger.seal([tail]), key_id=SEALER.key_id)
    report = authenticate([*records, tail], [*seals, fake], SEALER)
    assert {p.kind for p in report.problems} == {"forged_seal", "unauthenticated"}
    assert report.unauthenticated == [(3, 3)]


def test_records_rewritten_with_the_chain_recomputed_no_longer_match_their_seal() -> None:
    records, seals = _sealed_log([3])
    edited = dataclasses.replace(records[1], agent="someone-else")
    edited = dataclasses.replace(edited, hash=content_hash(edited))
    after = dataclasses.replace(records[2], prev_hash=edited.hash)
    after = dataclasses.replace(after, hash=content_hash(after))
    report = authenticate([records[0], edited, after], seals, SEALER)
    assert [p.kind for p in report.problems] == ["modified", "unauthenticated"]
    assert report.unauthenticated == [(1, 3)]


def test_a_replayed_seal_authenticates_only_the_records_it_was_made_for() -> None:
    records, seals = _sealed_log([1, 1])
    tail = _forged_tail(records)
    replay = dataclasses.replace(seals[-1])  # a valid seal, copied for the forged record
    report = authenticate([*records, tail], [*seals, replay], SEALER)
    assert report.unauthenticated == [(3, 3)]


def test_check_since_an_anchor_needs_the_chain_to_continue_from_it() -> None:
    records, seals = _sealed_log([2, 2])
    assert check_since(records[2:], seals, SEALER, anchor=(2, records[1].hash)) == []
    problems = check_since(records[2:], seals, SEALER, anchor=(2, "f" * 64))
    assert problems and problems[0].seq == 3


def test_the_ranges_an_alarm_record_names_are_reported_from_the_chain_alone() -> None:
    records, _ = _sealed_log([2])
    problems = authenticate([*records, _forged_tail(records)], [], SEALER).problems
    alarm = chain(
        records[-1], [AuditEvent(kind=ALARM_KIND, detail=alarm_detail(problems, anchor_seq=0))], 1.0
    )[0]
    found = flagged([*records, alarm])
    assert [(p.seq, p.end, p.kind) for p in found] == [(1, 3, "unauthenticated")]
    assert f"record {alarm.seq}" in found[0].message


def test_the_sqlite_sink_writes_one_seal_per_batch_in_the_same_transaction(tmp_path: Path) -> None:
    with SQLiteAuditSink(tmp_path / "audit.db", sealer=SEALER) as sink:
        sink.append(_events(3))
        sink.append(_events(1))
        records, seals = sink.records(), sink.seals()
    assert [(s.first_seq, s.last_seq) for s in seals] == [(1, 3), (4, 4)]
    assert authenticate(records, seals, SEALER).authenticated == 4


def test_a_failed_append_leaves_neither_records_nor_a_seal(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with SQLiteAuditSink(path, sealer=SEALER) as sink:
        sink.append(_events(1))
    db = sqlite3.connect(path)
    db.execute("CREATE TRIGGER no_seals BEFORE INSERT ON seals BEGIN SELECT RAISE(ABORT, 'refused'); END")
    db.commit()
    db.close()
    with SQLiteAuditSink(path, sealer=SEALER) as sink:
        with pytest.raises(AuditWriteError, match="refused"):
            sink.append(_events(2))
        assert len(sink.records()) == 1 and len(sink.seals()) == 1


def test_a_sealer_repr_shows_no_key_material() -> None:
    assert repr(SEALER) == f"Sealer(key_id='{SEALER.key_id}')"


def test_vouches_for_counts_only_on_vault_init_so_text_an_agent_writes_cannot_authenticate_a_forgery() -> (
    None
):
    records, seals = _sealed_log([2])
    forged = _forged_tail(records)
    claim = {VOUCHES_FOR: [[forged.seq, forged.hash]]}
    for kind, authenticated in (("outcome", False), ("vault_init", True)):
        (voucher,) = chain(forged, [AuditEvent(kind=kind, detail=claim)], 1.0)
        report = authenticate([*records, forged, voucher], [*seals, SEALER.seal([voucher])], SEALER)
        assert (report.unauthenticated == []) is authenticated, kind


def test_seals_are_made_and_stored_exactly_as_the_log_always_has() -> None:
    # Seals already stored must stay valid: a MAC computed by the code before its keyed-state copy.
    sealer = Sealer(bytes(range(32)))
    mac = sealer._mac(42, 44, "cd" * 32, "ef" * 32, sealer.key_id)
    body = f'{{"first":42,"head":"{"ef" * 32}","key_id":"{sealer.key_id}","last":44,"prev":"{"cd" * 32}"}}'
    assert mac == hmac.new(bytes(range(32)), DOMAIN + body.encode(), hashlib.sha256).hexdigest()
    assert sealer._mac(42, 44, "cd" * 32, "ef" * 32, sealer.key_id) == mac  # the keyed state is reused
    seal = AuditSeal(1, 3, "a" * 64, "b" * 64, sealer.key_id, mac)
    assert seal_to_row(seal) == tuple(getattr(seal, column) for column in SEAL_COLUMNS)
    assert seal_from_row(seal_to_row(seal)) == seal
