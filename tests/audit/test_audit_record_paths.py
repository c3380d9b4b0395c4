"""The audit record's fast paths write exactly what the general ones write, byte for byte."""

from __future__ import annotations

import dataclasses
import json
import math
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcp_gateway.audit.record import (
    _TEXT_FIELDS,
    _canonical_text,
    _clean,
    _clean_text,
    chain_encoded,
    content_hash,
    normalize_event,
)
from mcp_gateway.audit.verify import verify
from mcp_gateway.errors import AuditWriteError
from mcp_gateway.types import AuditEvent, AuditRecord


class Text(str):
    pass


class Number(int):
    pass


class Real(float):
    pass


# Any text: non-ASCII, lone surrogates, NUL, JSON escapes.
TEXT = st.text(st.characters(exclude_categories=()), max_size=6) | st.sampled_from(
    ["", "plain", "é✓", "a\x00b", "\ud800", "x\udfffy", '"q"\\', "tab\tnl\n"]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(2**80), 2**80)
    | st.floats()
    | st.sampled_from([math.inf, -math.inf, math.nan, -0.0, 1e300, 5e-324])
    | TEXT
    | TEXT.map(Text)
    | st.integers(-3, 3).map(Number)
    | st.floats().map(Real)
)
KEYS = TEXT | TEXT.map(Text) | st.integers(-3, 3) | st.booleans() | st.none() | st.floats()
TREES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(KEYS, inner, max_size=3)
        | st.dictionaries(TEXT, inner, max_size=2).map(MappingProxyType)
    ),
    max_leaves=12,
)
# Plain JSON of exact types: what the fast path takes.
PLAIN = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=12,
)
STORABLE_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=6)
STORABLE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | STORABLE_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(STORABLE_TEXT, inner, max_size=3),
    max_leaves=12,
)
OBJECTS = st.dictionaries(KEYS, TREES, max_size=4) | st.dictionaries(TEXT, PLAIN, max_size=4)
EVENTS = st.builds(
    AuditEvent,
    kind=TEXT | TEXT.map(Text),
    call_id=TEXT,
    agent=TEXT,
    tool=TEXT | TEXT.map(Text),
    decision=TEXT,
    status=TEXT,
    args=OBJECTS,
    detail=OBJECTS,
)
SETTINGS = settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])


def shape(value: Any) -> Any:
    """``value`` with every type and every key order spelled out (``1 == 1.0 == True`` in Python)."""
    if isinstance(value, dict):
        return ("dict", type(value), [(type(k), k, shape(v)) for k, v in value.items()])
    if isinstance(value, list | tuple):
        return ("list", type(value), [shape(v) for v in value])
    return (type(value), repr(value))


def cleaned(clean: Any, value: Any) -> Any:
    try:
        return shape(clean(value))
    except AuditWriteError as exc:
        return ("error", str(exc))


def fast(value: Any) -> Any:
    """What the log stores of ``value`` as an event's ``args`` (the fast path, where it applies)."""
    return normalize_event(AuditEvent(kind="x", args=value)).args


@SETTINGS
@given(st.one_of(TREES, PLAIN, STORABLE, OBJECTS))
def test_the_fast_clean_gives_what_the_general_clean_gives(value: Any) -> None:
    for tree in (value, {"nested": value}, {"in a list": [value, value]}):
        assert cleaned(fast, tree) == cleaned(lambda v: _clean(v, "args"), tree)


@SETTINGS
@given(STORABLE.filter(lambda v: isinstance(v, dict)))
def test_a_clean_copy_shares_no_container_with_the_event(value: Any) -> None:
    copy = fast(value)

    def containers(tree: Any) -> list[int]:
        if not isinstance(tree, dict | list):
            return []
        items = tree.values() if isinstance(tree, dict) else tree
        return [id(tree), *(i for item in items for i in containers(item))]

    assert copy == value and not set(containers(copy)) & set(containers(value))


@SETTINGS
@given(EVENTS)
def test_normalizing_an_event_gives_what_cleaning_each_field_gives(event: AuditEvent) -> None:
    try:
        clean: Any = normalize_event(event)
    except AuditWriteError as exc:
        clean = str(exc)
    try:
        expected: Any = [_clean_text(getattr(event, name)) for name in _TEXT_FIELDS]
        expected += [_clean(event.args, "args"), _clean(event.detail, "detail")]
    except AuditWriteError as exc:
        expected = str(exc)
    if isinstance(expected, str):
        assert clean == expected
        return
    fields = [getattr(clean, f.name) for f in dataclasses.fields(AuditEvent)]
    assert [shape(v) for v in fields] == [shape(v) for v in expected]


@SETTINGS
@given(st.one_of(TREES, PLAIN, OBJECTS))
def test_the_canonical_encoder_writes_what_json_dumps_writes(value: Any) -> None:
    def dumps(encode: Any) -> Any:
        try:
            return encode(value)
        except (TypeError, ValueError) as exc:
            return type(exc)

    expected = dumps(lambda v: json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False))
    assert dumps(_canonical_text) == expected


def test_the_canonical_encoder_refuses_a_circular_value_as_json_dumps_does() -> None:
    loop: list[Any] = []
    loop.append({"again": loop})
    with pytest.raises(ValueError, match="Circular reference detected"):
        _canonical_text(loop)
    assert _canonical_text({"b": [1, 2.5, None], "a": "é"}) == '{"a":"é","b":[1,2.5,null]}'


@SETTINGS
@given(st.lists(EVENTS, min_size=1, max_size=3), st.floats(0, 2e12, allow_nan=False))
def test_every_stored_text_and_hash_is_the_canonical_one(events: list[AuditEvent], ts: float) -> None:
    try:
        encoded = chain_encoded((7, "ab" * 32), events, ts)
    except AuditWriteError:
        return  # an event JSON cannot hold (a bytes value, a tuple key): refused, tested apart
    for record, args_json, detail_json in encoded:
        assert record.hash == content_hash(record)
        assert args_json == json.dumps(record.args, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert detail_json == _canonical_text(record.detail)
    assert verify([record for record, _, _ in encoded], anchor=(7, "ab" * 32)).ok


def test_every_field_of_an_event_lands_in_the_same_field_of_its_record() -> None:
    # The record is built positionally; distinct values show any field out of place.
    event = AuditEvent("kind", "call", "agent", "tool", "decision", "status", {"a": 1}, {"d": 2})
    clean = normalize_event(event)
    assert [getattr(clean, name) for name in _TEXT_FIELDS] == [getattr(event, name) for name in _TEXT_FIELDS]
    assert (clean.args, clean.detail) == ({"a": 1}, {"d": 2})
    ((record, _, _),) = chain_encoded((4, "f" * 64), [event], 9.5)
    expected = {name: getattr(event, name) for name in (*_TEXT_FIELDS, "args", "detail")}
    fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(AuditRecord)}
    assert fields == {**expected, "seq": 5, "ts": 9.5, "prev_hash": "f" * 64, "hash": record.hash}


# Written by the code before its fast paths (non-ASCII, escapes, a big int, floats, nesting, NUL,
# lone surrogates, non-finite floats, a tuple, an int key): logs already stored must still verify.
GOLDEN_EVENTS = [
    AuditEvent(
        kind="intent",
        call_id="c-1",
        agent="agent-\u03b1",
        tool="up.echo",
        decision="allow",
        args={
            "text": 'héllo "q" \\ \n\t wörld ✓',
            "n": 2**70,
            "f": 0.1,
            "neg": -0.0,
            "nested": {"b": [1, None, True, 1e300], "a": "x"},
        },
        detail={"rule_ids": ["r1", "r2"], "token_id": "tok"},
    ),
    AuditEvent(
        kind="outcome",
        call_id="c-1",
        agent="agent-\u03b1",
        tool="up.echo",
        decision="allow",
        status="ok",
        detail={
            "latency_ms": 0.412,
            "result_digest": "ab" * 32,
            "redactions": 0,
            "redacted": False,
            "truncated": False,
        },
    ),
    AuditEvent(
        kind="denied",
        call_id="c\x002",
        agent="a\ud800b",
        tool="t",
        decision="deny",
        status="refused",
        args={"k\x00": "v\udfff", 3: math.nan, "t": (1, 2), "inf": -math.inf},
    ),
]
GOLDEN = [
    (
        "4dad512eccedbaf3a6a22d7ecbb269280c52be7546294ecb67b13436b3157afd",
        '{"f":0.1,"n":1180591620717411303424,"neg":-0.0,"nested":{"a":"x","b":[1,null,true,1e+300]},'
        '"text":"héllo \\"q\\" \\\\ \\n\\t wörld ✓"}',
        '{"rule_ids":["r1","r2"],"token_id":"tok"}',
    ),
    (
        "a5d1432bcb3cd79b5bc4738a7095d252c1e1654787c9d94242d1c2e7a82d9339",
        "{}",
        '{"latency_ms":0.412,"redacted":false,"redactions":0,"result_digest":"'
        + "ab" * 32
        + '","truncated":false}',
    ),
    (
        "44a29a75cf82c55cd5171d3bbd55fac6ab2c43f30c1203089a42ce006f079454",
        '{"3":"NaN","inf":"-Infinity","k\ufffd":"v\ufffd","t":[1,2]}',
        "{}",
    ),
]


def test_records_hash_and_encode_exactly_as_the_log_always_has() -> None:
    encoded = chain_encoded((41, "cd" * 32), GOLDEN_EVENTS, 1767225600.123456)
    assert [(record.hash, args, detail) for record, args, detail in encoded] == GOLDEN
