"""Properties of the pure envelope format: round trips, and every kind of tampering fails."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_gateway.errors import IntegrityError, VaultError
from mcp_gateway.types import SecretValue
from mcp_gateway.vault.crypto import (
    Keyring,
    MasterKey,
    decode_key,
    encode_key,
    envelope_key_id,
    rewrap,
    seal,
    unseal,
)

KEY = MasterKey.generate()
OTHER = MasterKey.generate()
names = st.text(min_size=1, max_size=64)
plaintexts = st.binary(max_size=512)


def _fields(envelope: bytes) -> dict[str, object]:
    doc: dict[str, object] = json.loads(envelope)
    return doc


def _dump(doc: dict[str, object]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _key_forms(key: MasterKey) -> list[str]:
    raw = base64.urlsafe_b64decode(encode_key(key))
    return [raw.hex(), encode_key(key), base64.b64encode(raw).decode(), repr(raw)[2:-1]]


@given(name=names, plaintext=plaintexts)
def test_seal_then_unseal_returns_the_plaintext_for_any_bytes_and_name(name: str, plaintext: bytes) -> None:
    assert unseal(KEY, name, seal(KEY, name, plaintext)) == plaintext


@given(name=names, plaintext=plaintexts, data=st.data())
def test_any_single_bit_flip_in_the_serialized_envelope_fails_to_unseal(
    name: str, plaintext: bytes, data: st.DataObject
) -> None:
    envelope = bytearray(seal(KEY, name, plaintext))
    bit = data.draw(st.integers(0, len(envelope) * 8 - 1), label="bit")
    envelope[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(IntegrityError):
        unseal(KEY, name, bytes(envelope))


@given(name=names, plaintext=plaintexts, field=st.sampled_from(["wdek", "n", "ct"]), data=st.data())
def test_any_bit_flip_inside_a_decoded_field_fails_to_unseal(
    name: str, plaintext: bytes, field: str, data: st.DataObject
) -> None:
    doc = _fields(seal(KEY, name, plaintext))
    raw = bytearray(base64.b64decode(str(doc[field])))
    bit = data.draw(st.integers(0, len(raw) * 8 - 1), label="bit")
    raw[bit // 8] ^= 1 << (bit % 8)
    doc[field] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(IntegrityError):
        unseal(KEY, name, _dump(doc))


@given(first=names, second=names, plaintext=plaintexts)
def test_a_ciphertext_swapped_between_two_names_fails_to_unseal(
    first: str, second: str, plaintext: bytes
) -> None:
    if first == second:
        second = first + "x"
    with pytest.raises(IntegrityError):
        unseal(KEY, second, seal(KEY, first, plaintext))


def test_a_data_ciphertext_moved_under_another_names_wrapped_key_fails_to_unseal() -> None:
    a, b = _fields(seal(KEY, "a", b"alpha")), _fields(seal(KEY, "b", b"bravo"))
    spliced = {**b, "n": a["n"], "ct": a["ct"]}
    with pytest.raises(IntegrityError):
        unseal(KEY, "b", _dump(spliced))


def test_an_envelope_opened_with_the_wrong_master_key_fails() -> None:
    envelope = seal(KEY, "db", b"hunter2")
    with pytest.raises(IntegrityError, match="unknown key id"):
        unseal(OTHER, "db", envelope)


def test_an_envelope_relabelled_with_another_known_key_id_fails() -> None:
    doc = _fields(seal(KEY, "db", b"hunter2"))
    doc["kid"] = OTHER.key_id
    with pytest.raises(IntegrityError, match="failed authentication"):
        unseal(Keyring(KEY, (OTHER,)), "db", _dump(doc))


@pytest.mark.parametrize(
    "envelope",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b"{}",
        b"null",
        b'{"v":1}',
        b'{"v":2,"kid":"0000000000000000","wdek":"","n":"","ct":""}',
    ],
)
def test_a_malformed_envelope_fails_with_integrity_error(envelope: bytes) -> None:
    with pytest.raises(IntegrityError, match="malformed"):
        unseal(KEY, "db", envelope)


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _set_spare_bits(envelope: bytes) -> bytes:
    """Spell ``ct`` with a spare bit set in its last base64 digit: same bytes, different text."""
    doc = _fields(envelope)
    text = str(doc["ct"])
    assert text.endswith("=") and not text.endswith("==")
    last = text[-2]
    doc["ct"] = text[:-2] + _B64[_B64.index(last) ^ 1] + "="
    assert base64.b64decode(str(doc["ct"])) == base64.b64decode(text)
    return _dump(doc)


NON_CANONICAL_EDITS = {
    "truncated": lambda e: e[:-1],
    "trailing space": lambda e: e + b" ",
    "leading space": lambda e: b" " + e,
    "space after comma": lambda e: e.replace(b'"v":1,', b'"v":1, '),
    "version as true": lambda e: e.replace(b'"v":1', b'"v":true'),
    "version as float": lambda e: e.replace(b'"v":1', b'"v":1.0'),
    "duplicate key": lambda e: e.replace(b'{"v":1,', b'{"v":1,"v":1,'),
    "escaped key": lambda e: e.replace(b'"kid"', b'"\\u006bid"'),
    "extra field": lambda e: e.replace(b',"ct"', b',"x":0,"ct"'),
    "base64 spare bits": _set_spare_bits,
}


@pytest.mark.parametrize("edit", NON_CANONICAL_EDITS.values(), ids=NON_CANONICAL_EDITS.keys())
def test_a_non_canonical_spelling_of_a_valid_envelope_is_refused(edit: Callable[[bytes], bytes]) -> None:
    envelope = seal(KEY, "db", b"hunter2")  # 7 + 16 bytes of ciphertext: one "=" and 2 spare bits
    edited = edit(envelope)
    assert edited != envelope
    with pytest.raises(IntegrityError):
        unseal(KEY, "db", edited)


def test_each_seal_uses_a_fresh_data_key_and_nonces() -> None:
    first, second = _fields(seal(KEY, "db", b"same")), _fields(seal(KEY, "db", b"same"))
    for field in ("wdek", "n", "ct"):
        assert first[field] != second[field]


def test_rewrap_keeps_the_plaintext_and_the_data_ciphertext_and_changes_the_key_id() -> None:
    envelope = seal(KEY, "db", b"hunter2")
    moved = rewrap(KEY, OTHER, "db", envelope)
    assert envelope_key_id(envelope) == KEY.key_id
    assert envelope_key_id(moved) == OTHER.key_id
    assert unseal(OTHER, "db", moved) == b"hunter2"
    before, after = _fields(envelope), _fields(moved)
    assert (after["n"], after["ct"]) == (before["n"], before["ct"])
    assert after["wdek"] != before["wdek"]
    with pytest.raises(IntegrityError):
        unseal(KEY, "db", moved)


def test_rewrap_refuses_an_envelope_whose_data_ciphertext_was_tampered_with() -> None:
    doc = _fields(seal(KEY, "db", b"hunter2"))
    raw = bytearray(base64.b64decode(str(doc["ct"])))
    raw[0] ^= 1
    doc["ct"] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(IntegrityError):
        rewrap(KEY, OTHER, "db", _dump(doc))


def test_a_keyring_unseals_envelopes_of_its_current_and_older_keys() -> None:
    old, new = seal(KEY, "a", b"old"), seal(OTHER, "b", b"new")
    keyring = Keyring(OTHER, (KEY,))
    assert (unseal(keyring, "a", old), unseal(keyring, "b", new)) == (b"old", b"new")
    assert envelope_key_id(seal(keyring, "c", b"x")) == OTHER.key_id


def test_a_keyring_with_a_new_current_key_keeps_the_old_one_for_reading() -> None:
    rotated = Keyring(KEY).with_current(OTHER)
    assert rotated.current == OTHER
    assert rotated.key_ids == (OTHER.key_id, KEY.key_id)
    assert rotated.get(KEY.key_id) == KEY
    assert rotated.get("0" * 16) is None


def test_the_key_id_is_stable_and_is_the_documented_hmac_of_the_key() -> None:
    raw = base64.urlsafe_b64decode(encode_key(KEY))
    expected = hmac.new(raw, b"mcp-gateway key id", hashlib.sha256).digest()[:8].hex()
    assert MasterKey.from_bytes(raw).key_id == KEY.key_id == expected
    assert decode_key(encode_key(KEY)).key_id == KEY.key_id
    assert KEY.key_id != OTHER.key_id
    assert KEY.key_id not in raw.hex()


def test_a_master_key_given_a_key_id_that_is_not_its_own_is_refused() -> None:
    raw = base64.urlsafe_b64decode(encode_key(KEY))
    with pytest.raises(VaultError, match="does not belong"):
        MasterKey(OTHER.key_id, raw)


@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
def test_a_master_key_of_the_wrong_length_is_refused(length: int) -> None:
    with pytest.raises(VaultError, match="32 bytes"):
        MasterKey.from_bytes(b"k" * length)


def test_repr_of_master_key_and_keyring_contains_no_key_bytes() -> None:
    shown = repr(KEY) + str(KEY) + repr(Keyring(KEY, (OTHER,)))
    assert KEY.key_id in shown
    for form in _key_forms(KEY) + _key_forms(OTHER):
        assert form not in shown


def test_repr_of_a_secret_value_contains_no_value() -> None:
    value = SecretValue("db", b"hunter2-very-secret")
    assert "hunter2" not in repr(value)
    assert "hunter2" not in str(value)
    assert "hunter2" not in repr({"db": value})
    assert value.reveal() == b"hunter2-very-secret"


@pytest.mark.parametrize("attack", ["tamper", "swap", "wrong key"])
def test_a_failed_unseal_message_names_the_secret_and_carries_no_plaintext_or_chained_error(
    attack: str,
) -> None:
    plaintext = b"PLAINTEXT-hunter2"
    envelope = seal(KEY, "db", plaintext)
    name = "db"
    keys: Keyring | MasterKey = KEY
    if attack == "tamper":
        envelope = envelope.replace(b'"ct":"', b'"ct":"AAAA')
    elif attack == "swap":
        name = "other"
    else:
        keys = Keyring(OTHER)
    with pytest.raises(IntegrityError) as info:
        unseal(keys, name, envelope)
    message = str(info.value)
    assert f"`{name}`" in message
    assert "PLAINTEXT" not in message and "hunter2" not in message
    assert info.value.__cause__ is None and info.value.__context__ is None


@pytest.mark.parametrize("strip_padding", [False, True])
def test_a_key_survives_encoding_and_decoding(strip_padding: bool) -> None:
    text = encode_key(KEY)
    if strip_padding:
        text = text.rstrip("=")
    assert decode_key(f" {text}\n") == KEY


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "32 bytes"),
        ("c2hvcnQ", "got 5 bytes"),
        (base64.urlsafe_b64encode(b"s" * 48).decode(), "got 48 bytes"),
        ("not base64 at all!!", "not valid urlsafe base64"),
        ("ü" * 43, "not valid urlsafe base64"),
    ],
)
def test_a_malformed_key_is_refused_with_a_clear_message_that_does_not_echo_it(
    text: str, message: str
) -> None:
    with pytest.raises(VaultError, match=message) as info:
        decode_key(text)
    assert not text or text not in str(info.value)


def test_envelope_key_id_reads_the_key_id_and_refuses_a_malformed_envelope() -> None:
    assert envelope_key_id(seal(KEY, "db", b"x")) == KEY.key_id
    with pytest.raises(IntegrityError):
        envelope_key_id(b"{}")
