"""The lean path's JSON (wire.py) accepts exactly what ``json`` accepts and means the same by it."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_gateway import wire

VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**80), 2**80)  # past 64 bits too: orjson refuses those, json takes them
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=())),  # lone surrogates included
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


@given(VALUES)
def test_what_wire_writes_parses_back_to_the_same_value(value: Any) -> None:
    assert json.loads(wire.dumps(value)) == value
    assert wire.loads(wire.dumps(value)) == value


@given(VALUES)
def test_wire_reads_what_json_writes_as_json_does(value: Any) -> None:
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False)):
        assert wire.loads(text.encode("utf-8", "surrogatepass")) == json.loads(text)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": 1, "a": 2}',  # the last duplicate wins
        b'{"n": NaN, "i": -Infinity}',
        b'"\\ud800"',
        b'{"big": 123456789012345678901234567890}',  # orjson would read a float
        b"[-9223372036854775809, 18446744073709551616, 1000000000000000000]",
        '{"utf16": "caf\u00e9"}'.encode("utf-16"),
        b"\xef\xbb\xbf{}",  # json takes a UTF-8 byte order mark in bytes
    ],
    ids=["duplicate-keys", "non-finite", "lone-surrogate", "big-int", "64-bit-edges", "utf-16", "bom"],
)
def test_input_orjson_refuses_is_decided_by_json(raw: bytes) -> None:
    got, expected = wire.loads(raw), json.loads(raw)
    assert json.dumps(got) == json.dumps(expected)  # same values, same types (an int stays an int)
    if isinstance(expected, dict) and "n" in expected:
        assert math.isnan(got["n"])


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b'{"a": ', ValueError),
        (b"\xef\xbb\xbf", ValueError),
        (b"[" * 100_000 + b"]" * 100_000, RecursionError),
    ],
    ids=["truncated", "only-a-bom", "too-deep"],
)
def test_what_json_refuses_wire_refuses_the_same_way(raw: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        json.loads(raw)
    with pytest.raises(error):
        wire.loads(raw)


def test_values_orjson_cannot_encode_are_encoded_as_json_encodes_them() -> None:
    assert wire.dumps({1: "int key"}) == b'{"1":"int key"}'
    assert json.loads(wire.dumps("a\ud800b")) == "a\ud800b"
