"""Key check values: a well-formed master key that is not the vault's leaves it sealed, saying so once."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

# The stores, each test in a fresh SQLite file or PostgreSQL schema: the same fixtures as the store tests.
from test_vault_store import Store, postgres_store, sqlite_store, store

from mcp_gateway.errors import VaultSealed, WrongMasterKey
from mcp_gateway.vault.crypto import Keyring, MasterKey, key_check, verify_key_check
from mcp_gateway.vault.keycheck import admit
from mcp_gateway.vault.service import NO_MASTER_KEY, Vault
from mcp_gateway.vault.store import SQLiteSecretStore

__all__ = ["postgres_store", "sqlite_store", "store"]  # fixtures, re-exported for pytest

KEY_A = MasterKey.from_bytes(bytes(range(32)))
KEY_B = MasterKey.from_bytes(bytes(range(1, 33)))


@given(seed=st.binary(min_size=32, max_size=32), other=st.binary(min_size=32, max_size=32))
def test_a_key_check_opens_under_its_own_key_only(seed: bytes, other: bytes) -> None:
    key, stranger = MasterKey.from_bytes(seed), MasterKey.from_bytes(other)
    check = key_check(key)
    assert verify_key_check(key, check)
    assert verify_key_check(stranger, check) == (key.key_id == stranger.key_id)


@given(data=st.data())
def test_any_altered_key_check_fails(data: st.DataObject) -> None:
    check = bytearray(key_check(KEY_A))
    i = data.draw(st.integers(0, len(check) - 1))
    check[i] ^= data.draw(st.integers(1, 255))
    assert not verify_key_check(KEY_A, bytes(check))
    assert not verify_key_check(KEY_A, bytes(check[:-1]))


def test_a_new_vault_records_its_first_key_and_refuses_another_well_formed_key(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    first = Vault(store, Keyring(KEY_A), check_keys=True)
    first.put("db-password", b"hunter2")
    assert set(store.key_checks()) == {KEY_A.key_id}
    caplog.set_level(logging.DEBUG)
    wrong = Vault(store, Keyring(KEY_B), check_keys=True)
    assert wrong.sealed and wrong.keyring is None
    reason = wrong.seal_reason or ""
    assert f"`{KEY_B.key_id}`" in reason and f"expects `{KEY_A.key_id}`" in reason
    assert "MCP_GATEWAY_MASTER_KEY" in reason and "vault.key_file" in reason
    with pytest.raises(VaultSealed, match=KEY_A.key_id):
        wrong.resolve("db-password")
    assert set(store.key_checks()) == {KEY_A.key_id}  # the wrong key was not recorded
    # One line, no traceback.
    assert [r.getMessage() for r in caplog.records] == [reason]
    assert all(r.exc_info is None for r in caplog.records)


def test_the_right_key_still_unseals_and_a_missing_key_is_reported_as_missing(store: Store) -> None:
    Vault(store, Keyring(KEY_A), check_keys=True).put("s", b"v")
    assert Vault(store, Keyring(KEY_A), check_keys=True).resolve("s").reveal() == b"v"
    none = Vault(store, None, check_keys=True)
    assert none.sealed and none.seal_reason == NO_MASTER_KEY


def test_a_vault_made_before_key_checks_gets_them_from_the_first_key_that_opens_an_envelope(
    store: Store,
) -> None:
    legacy = Vault(store, Keyring(KEY_A))  # unchecked: writes envelopes but no key check
    legacy.put("audit-hmac-key", b"k1")
    legacy.put("zz-other", b"k2")
    assert store.key_checks() == {}
    # A well-formed key that opens nothing is refused, and the refusal records nothing.
    wrong = Vault(store, Keyring(KEY_B), check_keys=True)
    assert wrong.sealed and f"expects `{KEY_A.key_id}`" in (wrong.seal_reason or "")
    assert store.key_checks() == {}
    right = Vault(store, Keyring(KEY_A), check_keys=True)
    assert not right.sealed and right.resolve("zz-other").reveal() == b"k2"
    assert set(store.key_checks()) == {KEY_A.key_id}
    assert Vault(store, Keyring(KEY_B), check_keys=True).sealed


def test_an_altered_key_check_seals_the_vault(sqlite_store: SQLiteSecretStore, tmp_path: Path) -> None:
    Vault(sqlite_store, Keyring(KEY_A), check_keys=True).put("s", b"v")
    with sqlite3.connect(tmp_path / "vault.db") as db:
        db.execute("UPDATE key_checks SET key_check = ?", (key_check(KEY_B),))
    with pytest.raises(WrongMasterKey, match="altered"):
        admit(sqlite_store, Keyring(KEY_A))
    assert Vault(sqlite_store, Keyring(KEY_A), check_keys=True).sealed


def test_two_first_keys_racing_for_a_new_vault_cannot_both_be_recorded(store: Store) -> None:
    assert store.add_key_checks({KEY_A.key_id: key_check(KEY_A)}, only_if_none=True)
    assert not store.add_key_checks({KEY_B.key_id: key_check(KEY_B)}, only_if_none=True)
    assert set(store.key_checks()) == {KEY_A.key_id}
    with pytest.raises(WrongMasterKey):
        admit(store, Keyring(KEY_B))


def test_after_rotation_the_new_key_unseals_and_the_retired_key_is_refused(store: Store) -> None:
    vault = Vault(store, Keyring(KEY_A), check_keys=True)
    for i in range(3):
        vault.put(f"s{i}", f"value-{i}".encode())
    # Mid-rotation readers hold the new key first and the old one besides: admitted.
    assert not Vault(store, Keyring(KEY_B, (KEY_A,)), check_keys=True).sealed
    assert vault.rotate_master(KEY_B) == 3
    assert set(store.key_checks()) == {KEY_B.key_id}
    assert Vault(store, Keyring(KEY_B), check_keys=True).resolve("s1").reveal() == b"value-1"
    old_only = Vault(store, Keyring(KEY_A), check_keys=True)
    assert old_only.sealed and f"expects `{KEY_B.key_id}`" in (old_only.seal_reason or "")


def test_reloading_a_wrong_key_seals_a_running_vault(store: Store) -> None:
    vault = Vault(store, Keyring(KEY_A), check_keys=True)
    vault.put("s", b"v")
    vault.reload_keyring(Keyring(KEY_B))
    assert vault.sealed
    with pytest.raises(VaultSealed):
        vault.put("t", b"w")
    vault.reload_keyring(Keyring(KEY_A))
    assert vault.resolve("s").reveal() == b"v"
