"""The pure audit chain: canonical form, chaining, and verify's detection and classification."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcp_gateway.audit.export import from_jsonl, record_from_dict, record_to_dict, to_jsonl
from mcp_gateway.audit.record import (
    GENESIS,
    canonical,
    chain,
    chain_encoded,
    content_hash,
    digest,
    normalize_event,
)
from mcp_gateway.audit.verify import verify
from mcp_gateway.errors import AuditError, AuditWriteError
from mcp_gateway.types import AuditEvent, AuditRecord

# Text the stores keep verbatim (no NUL, no lone surrogates: those are normalised, tested apart).
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=6)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
OBJECTS = st.dictionaries(TEXT, JSON, max_size=3)
HEX64 = st.text("0123456789abcdef", min_size=64, max_size=64)
EVENTS = st.builds(
    AuditEvent,
    kind=st.sampled_from(["intent", "outcome", "denied", "auth_failure", "admin"]),
    call_id=TEXT,
    agent=TEXT,
    tool=TEXT,
    decision=st.sampled_from(["", "allow", "deny"]),
    status=st.sampled_from(["", "ok", "error", "refused"]),
    args=OBJECTS,
    detail=OBJECTS,
)
FIELDS = [f.name for f in dataclasses.fields(AuditRecord)]
TAMPER = settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def logs(draw: st.DrawFn, min_size: int = 1) -> list[AuditRecord]:
    """A valid log appended in batches of one to three events, each batch at its own time."""
    records: list[AuditRecord] = []
    target = draw(st.integers(min_size, 9))
    while len(records) < target:
        batch = draw(st.lists(EVENTS, min_size=1, max_size=min(3, target - len(records))))
        ts = draw(st.floats(0, 2e9, allow_nan=False))
        records += chain(records[-1] if records else None, batch, ts)
    return records


def head_of(records: list[AuditRecord]) -> tuple[int, str]:
    return records[-1].seq, records[-1].hash


def found(records: list[AuditRecord], **kwargs: Any) -> list[tuple[str, int]]:
    return [(p.kind, p.seq) for p in verify(records, **kwargs).problems]


def other_value(field: str, old: Any) -> st.SearchStrategy[Any]:
    """Any value of ``field``'s type whose canonical form differs from ``old``."""
    base: st.SearchStrategy[Any]
    if field == "seq":
        base = st.integers(-3, 30)
    elif field == "ts":
        base = st.floats(allow_nan=False, allow_infinity=False)
    elif field in ("args", "detail"):
        base = OBJECTS
    elif field in ("prev_hash", "hash"):
        base = HEX64
    else:
        base = TEXT
    return base.filter(lambda new: canonical(new) != canonical(old))


# ---- chain and canonical form ------------------------------------------------------------------


def test_chain_numbers_links_and_hashes_every_record_of_a_batch() -> None:
    first = chain(None, [AuditEvent(kind="intent", args={"b": 1, "a": [1, 2]})], 10.0)
    more = chain(first[-1], [AuditEvent(kind="outcome"), AuditEvent(kind="admin")], 11)
    log = first + more
    assert [r.seq for r in log] == [1, 2, 3]
    assert [r.ts for r in log] == [10.0, 11.0, 11.0]
    assert log[0].prev_hash == GENESIS
    assert [r.prev_hash for r in log[1:]] == [r.hash for r in log[:-1]]
    assert all(r.hash == content_hash(r) for r in log)
    assert chain((log[-1].seq, log[-1].hash), [AuditEvent(kind="x")], 12.0)[0].seq == 4
    assert verify(log, expected_head=head_of(log)).ok


# Any text at all, lone surrogates and NUL included (the log normalises them before hashing).
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=6)
ODD_EVENTS = st.builds(
    AuditEvent,
    kind=ANY_TEXT,
    call_id=ANY_TEXT,
    agent=ANY_TEXT,
    tool=ANY_TEXT,
    decision=ANY_TEXT,
    status=ANY_TEXT,
    args=st.dictionaries(ANY_TEXT, JSON | st.integers() | st.floats(), max_size=3),
    detail=OBJECTS,
)


@given(
    st.lists(EVENTS | ODD_EVENTS, min_size=1, max_size=4),
    st.floats(0, 2e12, allow_nan=False) | st.sampled_from([0.0, 1e16, 1.5e-7, 1767225600.123456]),
    st.none() | st.tuples(st.integers(0, 2**62), HEX64),
)
def test_the_hash_assembled_from_stored_texts_is_the_canonical_content_hash(
    events: list[AuditEvent], ts: float, prev: tuple[int, str] | None
) -> None:
    # Sinks store the texts chain_encoded made and the hash it assembled from them; both must be
    # exactly what verify recomputes from the record, or a store would hold a chain that fails.
    encoded = chain_encoded(prev, events, ts)
    assert [record for record, _, _ in encoded] == chain(prev, events, ts)
    for record, args_json, detail_json in encoded:
        assert record.hash == content_hash(record)
        assert args_json.encode("utf-8", "surrogatepass") == canonical(record.args)
        assert detail_json.encode("utf-8", "surrogatepass") == canonical(record.detail)
        assert json.loads(args_json) == json.loads(canonical(record.args))
    assert verify([record for record, _, _ in encoded], anchor=prev or (0, GENESIS)).ok


def test_canonical_form_sorts_keys_drops_whitespace_and_keeps_unicode() -> None:
    assert canonical({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()
    assert digest({"a": 1, "b": 2}) == digest({"b": 2, "a": 1})
    assert len(digest([])) == 64


def test_events_are_normalised_into_storable_json_without_losing_what_they_said() -> None:
    event = AuditEvent(
        kind="intent",
        tool="bad\x00name\ud800",
        args={"n": math.nan, "i": -math.inf, "t": (1, 2), 3: "int key", "s": "\udfff"},
    )
    clean = normalize_event(event)
    assert clean.tool == "bad\ufffdname\ufffd"
    assert clean.args == {"n": "NaN", "i": "-Infinity", "t": [1, 2], "3": "int key", "s": "\ufffd"}
    assert normalize_event(clean) == clean
    (record,) = chain(None, [event], 1.0)
    assert record.args == clean.args and verify([record]).ok


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (AuditEvent(kind="x", args={"when": object()}), "args"),
        (AuditEvent(kind="x", detail={"raw": b"bytes"}), "detail"),
        (AuditEvent(kind="x", args={("a", "b"): 1}), "args"),
        (AuditEvent(kind=None), "kind"),  # type: ignore[arg-type]
    ],
)
def test_an_event_json_cannot_hold_is_refused_naming_the_field(event: AuditEvent, field: str) -> None:
    with pytest.raises(AuditWriteError, match=f"`{field}`"):
        chain(None, [event], 1.0)


@given(st.lists(EVENTS, min_size=1, max_size=5), st.floats(0, 2e9))
def test_a_chain_survives_a_round_trip_through_json_lines(events: list[AuditEvent], ts: float) -> None:
    records = chain(None, events, ts)
    back = list(from_jsonl(list(to_jsonl(records))))
    assert back == records
    assert verify(back, expected_head=head_of(records)).ok


def test_record_dicts_are_checked_strictly_and_name_the_bad_field() -> None:
    (record,) = chain(None, [AuditEvent(kind="intent", args={"a": [1, None]})], 5.0)
    data = record_to_dict(record)
    assert json.loads(json.dumps(data)) == data and record_from_dict(data) == record
    for bad, field in [({"seq": "1"}, "seq"), ({"args": []}, "args"), ({"extra": 1}, "extra")]:
        with pytest.raises(AuditError, match=f"`{field}`"):
            record_from_dict({**data, **bad})
    with pytest.raises(AuditError, match="line 2: not valid json"):
        list(from_jsonl([*to_jsonl([record]), "{oops"]))


# ---- verify: untouched logs -------------------------------------------------------------------


@given(logs(min_size=0))
def test_an_untouched_log_verifies(records: list[AuditRecord]) -> None:
    report = verify(records, expected_head=head_of(records) if records else None)
    assert report.ok and report.problems == [] and report.checked == len(records)


@given(logs(min_size=2), st.data())
def test_a_slice_verifies_against_the_record_before_it(
    records: list[AuditRecord], data: st.DataObject
) -> None:
    k = data.draw(st.integers(1, len(records) - 1))
    anchor = (records[k - 1].seq, records[k - 1].hash)
    assert verify(records[k:], anchor=anchor, expected_head=head_of(records)).ok
    assert not verify(records[k:]).ok  # without the anchor the missing start is a deletion


# ---- verify: every single alteration is detected and classified -------------------------------


@TAMPER
@given(logs(), st.data())
def test_any_single_edit_is_reported_as_modified_at_its_seq(
    records: list[AuditRecord], data: st.DataObject
) -> None:
    k = data.draw(st.integers(0, len(records) - 1), label="index")
    field = data.draw(st.sampled_from(FIELDS), label="field")
    # Recomputing the hash after editing the hash itself would undo the edit.
    rehash = field != "hash" and data.draw(st.booleans(), label="rehash")
    value = data.draw(other_value(field, getattr(records[k], field)), label="value")
    edited = dataclasses.replace(records[k], **{field: value})
    if rehash:
        edited = dataclasses.replace(edited, hash=content_hash(edited))
    tampered = [*records[:k], edited, *records[k + 1 :]]
    assert found(tampered, expected_head=head_of(records)) == [("modified", records[k].seq)]
    if not (rehash and k == len(records) - 1):  # a rewritten newest record needs the head to show
        assert found(tampered) == [("modified", records[k].seq)]


@TAMPER
@given(logs(min_size=2), st.data())
def test_any_deletion_before_the_newest_record_is_reported_as_deleted(
    records: list[AuditRecord], data: st.DataObject
) -> None:
    k = data.draw(st.integers(0, len(records) - 2))
    tampered = records[:k] + records[k + 1 :]
    assert found(tampered) == [("deleted", records[k].seq)]
    assert found(tampered, expected_head=head_of(records)) == [("deleted", records[k].seq)]


@given(logs(), st.data())
def test_removing_the_newest_records_is_caught_only_against_the_expected_head(
    records: list[AuditRecord], data: st.DataObject
) -> None:
    cut = data.draw(st.integers(1, len(records)))
    tampered = records[: len(records) - cut]
    assert verify(tampered).ok  # a shorter chain is a valid chain: this is why the head is kept
    first_missing = records[len(records) - cut].seq
    assert found(tampered, expected_head=head_of(records)) == [("truncated", first_missing)]


@TAMPER
@given(logs(), st.data())
def test_any_forged_record_inserted_before_a_genuine_one_is_reported_as_inserted(
    records: list[AuditRecord], data: st.DataObject
) -> None:
    q = data.draw(st.integers(0, len(records) - 1), label="before index")
    seqs = [records[q].seq, *([records[q - 1].seq] if q else [])]
    seq = data.draw(st.sampled_from(seqs) | st.integers(1, 40), label="claimed seq")
    link = records[q - 1].hash if q else GENESIS
    prev_hash = data.draw(st.just(link) | HEX64, label="prev_hash")
    event = normalize_event(data.draw(EVENTS, label="content"))
    forged = AuditRecord(
        seq=seq,
        ts=data.draw(st.floats(0, 2e9), label="ts"),
        kind=event.kind,
        call_id=event.call_id,
        agent=event.agent,
        tool=event.tool,
        decision=event.decision,
        status=event.status,
        args=event.args,
        detail=event.detail,
        prev_hash=prev_hash,
        hash="",
    )
    forged = dataclasses.replace(forged, hash=data.draw(st.just(content_hash(forged)) | HEX64, label="hash"))
    tampered = [*records[:q], forged, *records[q:]]
    assert found(tampered, expected_head=head_of(records)) == [("inserted", seq)]
    assert not verify(tampered).ok


@TAMPER
@given(logs(min_size=2), st.data())
def test_any_swap_of_two_records_is_reported_as_reordered_at_both_seqs(
    records: list[AuditRecord], data: st.DataObject
) -> None:
    i = data.draw(st.integers(0, len(records) - 2))
    j = data.draw(st.integers(i + 1, len(records) - 1))
    tampered = list(records)
    tampered[i], tampered[j] = records[j], records[i]
    expected = [("reordered", records[i].seq), ("reordered", records[j].seq)]
    assert found(tampered) == expected
    assert found(tampered, expected_head=head_of(records)) == expected


@TAMPER
@given(logs(min_size=2), st.data())
def test_swapping_two_rows_of_a_seq_keyed_table_is_reported_as_reordered_at_both_seqs(
    records: list[AuditRecord], data: st.DataObject
) -> None:
    # In a table keyed by seq, rows are reordered by rewriting their seq; reads come back by seq.
    i = data.draw(st.integers(0, len(records) - 2))
    j = data.draw(st.integers(i + 1, len(records) - 1))
    tampered = list(records)
    tampered[i] = dataclasses.replace(records[j], seq=records[i].seq)
    tampered[j] = dataclasses.replace(records[i], seq=records[j].seq)
    assert found(tampered) == [("reordered", records[i].seq), ("reordered", records[j].seq)]


@given(logs(min_size=2), st.data())
def test_moving_a_row_to_a_free_seq_is_reported_as_reordered_at_its_real_seq(
    records: list[AuditRecord], data: st.DataObject
) -> None:
    to_front = data.draw(st.booleans())
    # Moving the first record to the front, or the newest to the end, changes no order.
    k = data.draw(st.integers(1, len(records) - 1) if to_front else st.integers(0, len(records) - 2))
    moved = dataclasses.replace(
        records[k], seq=data.draw(st.sampled_from([-1, 0]) if to_front else st.just(99))
    )
    rest = records[:k] + records[k + 1 :]
    tampered = [moved, *rest] if to_front else [*rest, moved]
    expected = {("reordered", records[k].seq)}
    if k == (1 if to_front else len(records) - 2):
        # A move by one place is a swap of neighbours: both are out of place.
        expected.add(("reordered", records[0 if to_front else -1].seq))
    assert sorted(found(tampered)) == sorted(expected)


def test_problem_messages_are_lowercase_and_name_the_seq() -> None:
    records = chain(None, [AuditEvent(kind="intent", call_id=str(i)) for i in range(6)], 1.0)
    edited = dataclasses.replace(records[2], agent="mallory")
    swapped = [records[0], records[4], records[2], records[3], records[1], records[5]]
    cases = [
        ([*records[:2], edited, *records[3:]], "record 3 was modified"),
        (records[:3] + records[4:], "record 4 is missing"),
        (swapped, "record 2 is stored out of order"),
        (records[:4], "the log ends at seq 4 but the expected head is seq 6"),
    ]
    for tampered, message in cases:
        problems = verify(tampered, expected_head=head_of(records)).problems
        assert any(p.message.startswith(message) for p in problems), problems
        assert all(p.message == p.message.lower() and not p.message.endswith(".") for p in problems)


def test_several_alterations_are_each_reported() -> None:
    records = chain(None, [AuditEvent(kind="intent", call_id=str(i)) for i in range(12)], 1.0)
    tampered = list(records)
    tampered[2] = dataclasses.replace(records[2], status="ok")
    del tampered[6]
    tampered[9], tampered[10] = tampered[10], tampered[9]
    assert found(tampered) == [("modified", 3), ("deleted", 7), ("reordered", 11), ("reordered", 12)]
