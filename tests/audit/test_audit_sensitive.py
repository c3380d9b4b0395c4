"""Sensitive argument values as keyed HMACs, and the audit keys that live in the vault."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_gateway.audit.checkpoint import key_id_of, public_key_pem
from mcp_gateway.audit.keys import (
    HMAC_KEY_NAME,
    SIGNING_KEY_NAME,
    ensure_audit_keys,
    export_public_key,
    load_hmac_key,
    read_public_keys,
)
from mcp_gateway.audit.sensitive import arg_hmac, hmac_marker, marker_matches, mask_sensitive
from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.errors import AuditError, SecretNotFound, VaultSealed
from mcp_gateway.types import AuditEvent, SecretValue
from mcp_gateway.vault.crypto import Keyring, MasterKey
from mcp_gateway.vault.service import Vault
from mcp_gateway.vault.store import SQLiteSecretStore

KEY = b"k" * 32


def test_the_hmac_depends_on_the_key_and_on_the_json_type_of_the_value() -> None:
    mac = arg_hmac(KEY, "hunter2")
    assert len(mac) == 64 and mac == arg_hmac(KEY, "hunter2")
    assert mac != arg_hmac(b"j" * 32, "hunter2")
    assert arg_hmac(KEY, 7) != arg_hmac(KEY, "7")
    assert arg_hmac(KEY, {"a": 1, "b": 2}) == arg_hmac(KEY, {"b": 2, "a": 1})  # canonical JSON


@given(value=st.text(min_size=1))
def test_no_sensitive_value_survives_masking(value: str) -> None:
    masked = mask_sensitive(
        {"password": value, "user": "ann"}, {"password"}, KEY, values={"password": value, "user": "ann"}
    )
    assert masked == {"password": {"hmac": arg_hmac(KEY, value)}, "user": "ann"}
    assert marker_matches(masked, arg_hmac(KEY, value))


def test_without_a_key_the_value_is_withheld_entirely() -> None:
    assert mask_sensitive({"pin": "1234"}, {"pin"}, None, values={"pin": "1234"}) == {"pin": {"hmac": None}}
    assert hmac_marker(KEY, object()) == {"hmac": None}


def test_the_hmac_is_taken_over_what_the_agent_sent_not_over_the_scrubbed_copy() -> None:
    masked = mask_sensitive({"p": "[REDACTED:x]"}, {"p"}, KEY, values={"p": "real-value"})
    assert masked["p"] == {"hmac": arg_hmac(KEY, "real-value")}


def test_the_sqlite_store_finds_records_by_the_hmac_of_an_argument(tmp_path: Path) -> None:
    mac = arg_hmac(KEY, "hunter2")
    with SQLiteAuditSink(tmp_path / "audit.db") as sink:
        sink.append(
            [
                AuditEvent(kind="intent", call_id="1", args={"password": {"hmac": mac}}),
                AuditEvent(kind="intent", call_id="2", args={"password": {"hmac": arg_hmac(KEY, "other")}}),
                AuditEvent(kind="intent", call_id="3", args={"note": json.dumps({"hmac": mac})}),
            ]
        )
        assert [r.call_id for r in sink.query(arg_hmac=mac)] == ["1"]
        assert sink.query(arg_hmac=mac, agent="nobody") == []


# ---- keys in the vault ---------------------------------------------------------------------------


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    return Vault(SQLiteSecretStore(tmp_path / "vault.db"), Keyring(MasterKey.generate()))


def test_audit_keys_are_created_once_sealed_in_the_vault_and_then_reused(vault: Vault) -> None:
    first = ensure_audit_keys(vault)
    again = ensure_audit_keys(vault)
    assert first.key_id == again.key_id == key_id_of(first.public_key)
    assert first.hmac_key == again.hmac_key == load_hmac_key(vault) and len(first.hmac_key) == 32
    assert {SIGNING_KEY_NAME, HMAC_KEY_NAME} <= {m["name"] for m in vault.list()}
    assert repr(first) == f"AuditKeys(key_id='{first.key_id}')"  # no key material in a repr


class _LateReplica:
    """A vault seen by a replica that read "no keys yet" just before another replica created them:
    its first lookup of each name misses, and the other replica's ``ensure_audit_keys`` runs then."""

    def __init__(self, vault: Vault, other: Vault) -> None:
        self._vault, self._other = vault, other
        self._missed: set[str] = set()

    @property
    def sealed(self) -> bool:
        return self._vault.sealed

    def resolve(self, name: str) -> SecretValue:
        if name not in self._missed:
            self._missed.add(name)
            ensure_audit_keys(self._other)
            raise SecretNotFound(name)
        return self._vault.resolve(name)

    def add(self, name: str, value: bytes) -> bool:
        return self._vault.add(name, value)


def test_replicas_creating_audit_keys_together_end_with_the_same_keys(tmp_path: Path) -> None:
    key = Keyring(MasterKey.generate())
    first = Vault(SQLiteSecretStore(tmp_path / "vault.db"), key)
    second = Vault(SQLiteSecretStore(tmp_path / "vault.db"), key)
    late = ensure_audit_keys(_LateReplica(second, first))
    early = ensure_audit_keys(first)
    # The late replica's own keys lost the race: it uses the stored ones, so both sign and seal alike.
    assert late.key_id == early.key_id
    assert (late.hmac_key, late.seal_key) == (early.hmac_key, early.seal_key)


def test_a_sealed_vault_has_no_audit_keys_and_none_are_made(tmp_path: Path) -> None:
    sealed = Vault(SQLiteSecretStore(tmp_path / "vault.db"), None)
    with pytest.raises(VaultSealed):
        ensure_audit_keys(sealed)
    unsealed_later = Vault(SQLiteSecretStore(tmp_path / "vault.db"), Keyring(MasterKey.generate()))
    with pytest.raises(SecretNotFound):
        load_hmac_key(unsealed_later)


@pytest.mark.parametrize("stored", [b"short", b"!!" * 30])
def test_a_malformed_stored_key_is_refused_without_showing_it(vault: Vault, stored: bytes) -> None:
    vault.put(HMAC_KEY_NAME, stored)
    with pytest.raises(AuditError, match=HMAC_KEY_NAME) as info:
        load_hmac_key(vault)
    assert stored.decode() not in str(info.value)


def test_exporting_a_new_public_key_keeps_the_ones_already_exported(tmp_path: Path, vault: Vault) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = tmp_path / "audit-signing.pub"
    old, new = Ed25519PrivateKey.generate().public_key(), ensure_audit_keys(vault).public_key
    assert export_public_key(path, old) and not export_public_key(path, old)
    assert export_public_key(path, new)
    assert set(read_public_keys(path)) == {key_id_of(old), key_id_of(new)}
    assert path.read_bytes().startswith(public_key_pem(old))
    assert read_public_keys(tmp_path / "absent.pub") == {}
