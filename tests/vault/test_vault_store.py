"""The vault service over real SQLite and PostgreSQL stores, and the master-key sources."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from mcp_gateway.errors import IntegrityError, SecretNotFound, VaultError, VaultSealed
from mcp_gateway.vault.crypto import Keyring, MasterKey, encode_key, envelope_key_id
from mcp_gateway.vault.keys import init_key_file, load_keyring, write_key_file
from mcp_gateway.vault.service import Vault
from mcp_gateway.vault.store import PostgresSecretStore, SQLiteSecretStore

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
Store = SQLiteSecretStore | PostgresSecretStore


@pytest.fixture
def keyring() -> Keyring:
    return Keyring(MasterKey.generate())


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SQLiteSecretStore]:
    store = SQLiteSecretStore(tmp_path / "vault.db")
    yield store
    store.close()


@pytest.fixture
def postgres_store() -> Iterator[PostgresSecretStore]:
    schema = f"test_vault_{uuid.uuid4().hex}"
    store = PostgresSecretStore(PG_DSN, schema=schema)
    yield store
    store.close()
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest) -> Store:
    result: Store = request.getfixturevalue(f"{request.param}_store")
    return result


def test_a_secret_put_into_the_vault_resolves_to_the_same_bytes_after_reopening(
    tmp_path: Path, keyring: Keyring
) -> None:
    first = SQLiteSecretStore(tmp_path / "vault.db")
    Vault(first, keyring).put("warehouse.password", b"\x00hunter2\xff")
    first.close()
    second = SQLiteSecretStore(tmp_path / "vault.db")
    try:
        assert Vault(second, keyring).resolve("warehouse.password").reveal() == b"\x00hunter2\xff"
    finally:
        second.close()


def test_a_secret_round_trips_through_each_backend_and_is_stored_only_as_an_envelope(
    store: Store, keyring: Keyring
) -> None:
    vault = Vault(store, keyring)
    vault.put("salesforce_token", b"tok-123-secret")
    vault.put("salesforce_token", b"tok-456-secret")
    assert vault.resolve("salesforce_token").reveal() == b"tok-456-secret"
    envelope = store.get("salesforce_token")
    assert envelope is not None and b"tok-456" not in envelope
    assert envelope_key_id(envelope) == keyring.current.key_id
    assert store.names() == ["salesforce_token"]


def test_deleting_a_secret_removes_it_and_reports_whether_it_existed(store: Store, keyring: Keyring) -> None:
    vault = Vault(store, keyring)
    vault.put("a", b"1")
    assert vault.delete("a") is True
    assert vault.delete("a") is False
    with pytest.raises(SecretNotFound, match="`a`"):
        vault.resolve("a")


def test_the_generation_changes_on_every_write_and_not_on_reads(store: Store, keyring: Keyring) -> None:
    vault = Vault(store, keyring)
    seen = [store.generation()]
    vault.put("a", b"1")
    assert vault.generation() == store.generation()
    seen.append(store.generation())
    vault.put("a", b"2")
    seen.append(store.generation())
    vault.resolve("a")
    vault.list()
    assert store.generation() == seen[-1]
    vault.delete("missing")
    assert store.generation() == seen[-1]
    vault.delete("a")
    seen.append(store.generation())
    assert len(set(seen)) == len(seen)


def test_a_running_gateways_sqlite_generation_sees_every_write_another_process_makes(
    tmp_path: Path, keyring: Keyring
) -> None:
    # The gateway's store answers repeated generation() calls without a transaction while the file is
    # unchanged; a write by the CLI (another connection) or by hand must still move it at once.
    gateway = SQLiteSecretStore(tmp_path / "vault.db")
    cli = SQLiteSecretStore(tmp_path / "vault.db")
    try:
        start = gateway.generation()
        assert gateway.generation() == start
        Vault(cli, keyring).put("token", b"v1")
        after_put = gateway.generation()
        assert after_put != start
        Vault(gateway, keyring).put("token", b"v2")  # its own write: data_version does not move
        after_own = gateway.generation()
        assert after_own != after_put
        with sqlite3.connect(tmp_path / "vault.db") as raw:
            raw.execute("UPDATE meta SET value = value + 5 WHERE key = 'generation'")
        assert gateway.generation() == after_own + 5
        assert cli.generation() == gateway.generation()
    finally:
        gateway.close()
        cli.close()


def test_list_shows_names_key_ids_and_times_but_no_values(store: Store, keyring: Keyring) -> None:
    times = iter([100.0, 200.0])
    store._clock = lambda: next(times)
    vault = Vault(store, keyring)
    vault.put("a", b"VALUE-ONE")
    vault.put("a", b"VALUE-TWO")
    listing = vault.list()
    assert listing == [
        {"name": "a", "key_id": keyring.current.key_id, "created_at": 100.0, "updated_at": 200.0}
    ]
    assert "VALUE" not in repr(listing) and "VALUE" not in repr(store.metadata())


def test_a_sealed_vault_refuses_to_resolve_or_write_but_still_lists_and_deletes(
    sqlite_store: SQLiteSecretStore, keyring: Keyring
) -> None:
    Vault(sqlite_store, keyring).put("a", b"1")
    sealed = Vault(sqlite_store, None)
    assert sealed.sealed
    with pytest.raises(VaultSealed):
        sealed.resolve("a")
    with pytest.raises(VaultSealed):
        sealed.resolve_all()
    with pytest.raises(VaultSealed):
        sealed.put("b", b"2")
    assert [m["name"] for m in sealed.list()] == ["a"]
    assert sealed.delete("a") is True


def test_reloading_a_keyring_unseals_the_vault(sqlite_store: SQLiteSecretStore, keyring: Keyring) -> None:
    Vault(sqlite_store, keyring).put("a", b"1")
    vault = Vault(sqlite_store, None)
    vault.reload_keyring(keyring)
    assert not vault.sealed
    assert vault.resolve("a").reveal() == b"1"


@pytest.mark.parametrize("name", ["", "a/b", "x" * 129, "a\n", "with space", "ü", "../etc"])
def test_an_invalid_secret_name_is_refused_without_echoing_it(
    sqlite_store: SQLiteSecretStore, keyring: Keyring, name: str
) -> None:
    vault = Vault(sqlite_store, keyring)
    for call in (lambda: vault.put(name, b"v"), lambda: vault.resolve(name), lambda: vault.delete(name)):
        with pytest.raises(VaultError, match="invalid secret name") as info:
            call()
        assert not name.strip() or name not in str(info.value)


def _tamper_row(path: Path, sql_text: str, params: tuple[Any, ...] = ()) -> None:
    with sqlite3.connect(path) as db:
        db.execute(sql_text, params)
    db.close()


def test_a_tampered_database_row_is_rejected(tmp_path: Path, keyring: Keyring) -> None:
    store = SQLiteSecretStore(tmp_path / "vault.db")
    vault = Vault(store, keyring)
    vault.put("a", b"secret-a")
    envelope = store.get("a")
    assert envelope is not None
    doc = json.loads(envelope)
    doc["ct"] = ("B" if doc["ct"][0] == "A" else "A") + doc["ct"][1:]
    tampered = json.dumps(doc, separators=(",", ":")).encode()
    _tamper_row(tmp_path / "vault.db", "UPDATE secrets SET envelope = ? WHERE name = 'a'", (tampered,))
    with pytest.raises(IntegrityError, match="`a`"):
        vault.resolve("a")
    store.close()


def test_envelopes_swapped_between_rows_are_rejected(tmp_path: Path, keyring: Keyring) -> None:
    store = SQLiteSecretStore(tmp_path / "vault.db")
    vault = Vault(store, keyring)
    vault.put("a", b"secret-a")
    vault.put("b", b"secret-b")
    envelope_a, envelope_b = store.get("a"), store.get("b")
    assert envelope_a is not None and envelope_b is not None
    _tamper_row(tmp_path / "vault.db", "UPDATE secrets SET envelope = ? WHERE name = 'a'", (envelope_b,))
    _tamper_row(tmp_path / "vault.db", "UPDATE secrets SET envelope = ? WHERE name = 'b'", (envelope_a,))
    for name in ("a", "b"):
        with pytest.raises(IntegrityError, match=f"`{name}`"):
            vault.resolve(name)
    store.close()


def test_resolve_all_raises_for_a_bad_envelope_instead_of_skipping_it(
    sqlite_store: SQLiteSecretStore, keyring: Keyring
) -> None:
    vault = Vault(sqlite_store, keyring)
    vault.put("good", b"1")
    assert {k: v.reveal() for k, v in vault.resolve_all().items()} == {"good": b"1"}
    Vault(sqlite_store, Keyring(MasterKey.generate())).put("foreign", b"2")
    with pytest.raises(IntegrityError, match="`foreign`"):
        vault.resolve_all()


def test_rotate_master_rewraps_every_envelope_and_old_and_new_keyrings_both_read(
    store: Store, keyring: Keyring
) -> None:
    old, new = keyring.current, MasterKey.generate()
    vault = Vault(store, keyring)
    values = {f"s{i}": f"value-{i}".encode() for i in range(3)}
    for name, value in values.items():
        vault.put(name, value)
    # A replica already holding the new key as current reads envelopes still under the old key.
    assert Vault(store, Keyring(new, (old,))).resolve("s0").reveal() == values["s0"]
    before = {m["name"]: m["updated_at"] for m in store.metadata()}

    assert vault.rotate_master(new) == 3

    assert {m["key_id"] for m in store.metadata()} == {new.key_id}
    assert {m["name"]: m["updated_at"] for m in store.metadata()} == before
    assert vault.keyring == Keyring(new, (old,))
    for reader in (vault, Vault(store, Keyring(new)), Vault(store, Keyring(old, (new,)))):
        assert {k: v.reveal() for k, v in reader.resolve_all().items()} == values
    with pytest.raises(IntegrityError, match="unknown key id"):
        Vault(store, Keyring(old)).resolve("s0")
    vault.put("later", b"x")
    assert envelope_key_id(store.get("later") or b"") == new.key_id
    assert vault.rotate_master(new) == 0


class _RacingStore:
    """Delegates to a real store; the first read of ``name`` is followed by another writer's put."""

    def __init__(self, inner: SQLiteSecretStore, name: str, racer: Vault) -> None:
        self.inner, self.name, self.racer, self.raced = inner, name, racer, False

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)

    def get(self, name: str) -> bytes | None:
        envelope = self.inner.get(name)
        if name == self.name and not self.raced:
            self.raced = True
            self.racer.put(name, b"written-during-rotation")
        return envelope


def test_a_put_racing_a_rotation_is_not_overwritten_by_the_older_value(
    sqlite_store: SQLiteSecretStore, keyring: Keyring
) -> None:
    old, new = keyring.current, MasterKey.generate()
    Vault(sqlite_store, keyring).put("a", b"original")
    racer = Vault(sqlite_store, keyring)  # a replica that has not reloaded: still seals with the old key
    racing = _RacingStore(sqlite_store, "a", racer)
    vault = Vault(racing, keyring)

    assert vault.rotate_master(new) == 1

    assert racing.raced
    assert Vault(sqlite_store, Keyring(new, (old,))).resolve("a").reveal() == b"written-during-rotation"
    assert [m["key_id"] for m in sqlite_store.metadata()] == [new.key_id]


def test_concurrent_writers_on_one_store_lose_no_update(
    sqlite_store: SQLiteSecretStore, keyring: Keyring
) -> None:
    vault = Vault(sqlite_store, keyring)
    start = sqlite_store.generation()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda i: vault.put(f"s{i}", str(i).encode()), range(64)))
    assert sqlite_store.generation() == start + 64
    assert {k: v.reveal() for k, v in vault.resolve_all().items()} == {
        f"s{i}": str(i).encode() for i in range(64)
    }


def test_the_sqlite_store_is_a_0600_wal_file_with_full_sync(
    sqlite_store: SQLiteSecretStore, tmp_path: Path
) -> None:
    path = tmp_path / "vault.db"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()
    assert sqlite_store._db.execute("PRAGMA synchronous").fetchone() == (2,)  # 2 = FULL


def test_reprs_of_the_vault_and_stores_show_no_key_or_value(store: Store, keyring: Keyring) -> None:
    vault = Vault(store, keyring)
    vault.put("a", b"VALUE-hunter2")
    shown = repr(vault) + repr(store) + repr(vault.resolve("a")) + repr(keyring)
    assert keyring.current.key_id in shown
    assert "hunter2" not in shown and encode_key(keyring.current) not in shown
    assert "password" not in shown.lower() and PG_DSN not in shown


def test_a_key_file_is_written_0600_and_reads_back_the_same_keyring(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "master.json"
    keyring = Keyring(MasterKey.generate(), (MasterKey.generate(),))
    old_umask = os.umask(0)  # even a wide-open umask must not widen the file
    try:
        write_key_file(path, keyring)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_keyring(env_value=None, key_file=path) == keyring
    assert [p.name for p in path.parent.iterdir()] == ["master.json"]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o700, 0o4600])
def test_a_key_file_readable_or_writable_by_others_is_refused_as_too_permissive(
    tmp_path: Path, mode: int
) -> None:
    path = tmp_path / "master.json"
    keyring = Keyring(MasterKey.generate())
    write_key_file(path, keyring)
    path.chmod(mode)
    with pytest.raises(VaultError, match="too permissive") as info:
        load_keyring(env_value=None, key_file=path)
    assert str(path) in str(info.value) and f"{mode:04o}" in str(info.value)
    assert encode_key(keyring.current) not in str(info.value)


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_key_file_private_to_its_owner_is_accepted(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "master.json"
    keyring = Keyring(MasterKey.generate())
    write_key_file(path, keyring)
    path.chmod(mode)
    assert load_keyring(env_value=None, key_file=path) == keyring


def test_a_key_file_owned_by_another_user_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "master.json"
    write_key_file(path, Keyring(MasterKey.generate()))
    owner = path.stat().st_uid
    monkeypatch.setattr(os, "geteuid", lambda: owner + 1)
    with pytest.raises(VaultError, match=f"owned by uid {owner}"):
        load_keyring(env_value=None, key_file=path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json {SECRETKEY", "not valid"),
        ('{"current": "x", "keys": {}}', "not valid"),
        ('{"current": "x", "keys": {"0000000000000000": "SECRETKEY"}}', "key `0000000000000000` is invalid"),
        ("mismatch", "has id"),
        ("key as id", "16 lowercase hex"),
        ("no current", "`current` must name"),
    ],
)
def test_a_bad_key_file_is_refused_with_a_message_that_carries_no_key(
    tmp_path: Path, content: str, message: str
) -> None:
    key = MasterKey.generate()
    if content == "mismatch":
        content = json.dumps({"current": "0" * 16, "keys": {"0" * 16: encode_key(key)}})
    elif content == "key as id":
        content = json.dumps({"current": encode_key(key), "keys": {encode_key(key): encode_key(key)}})
    elif content == "no current":
        content = json.dumps({"current": "nope", "keys": {key.key_id: encode_key(key)}})
    path = tmp_path / "master.json"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(VaultError, match=message) as info:
        load_keyring(env_value=None, key_file=path)
    assert "SECRETKEY" not in str(info.value) and encode_key(key) not in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or "SECRETKEY" not in repr(info.value.__context__)


def test_an_unreachable_postgres_is_a_vault_error() -> None:
    with pytest.raises(VaultError, match=r"postgres secret store .*cannot be set up.*Connection refused"):
        PostgresSecretStore("host=127.0.0.1 port=1 user=postgres dbname=test connect_timeout=5")


def test_a_missing_key_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(VaultError, match="cannot read key file"):
        load_keyring(env_value=None, key_file=tmp_path / "absent.json")


def test_no_key_source_means_a_sealed_vault() -> None:
    assert load_keyring(env_value=None, key_file=None) is None
    assert load_keyring(env_value="  ", key_file=None) is None


def test_an_env_key_list_makes_its_first_key_current_and_keeps_the_rest() -> None:
    first, second = MasterKey.generate(), MasterKey.generate()
    keyring = load_keyring(env_value=f"{encode_key(first)}, {encode_key(second)}", key_file=None)
    assert keyring == Keyring(first, (second,))


def test_env_and_file_keys_combine_with_the_env_key_current(tmp_path: Path) -> None:
    env_key, file_key = MasterKey.generate(), MasterKey.generate()
    path = tmp_path / "master.json"
    write_key_file(path, Keyring(file_key, (env_key,)))
    assert load_keyring(env_value=encode_key(env_key), key_file=path) == Keyring(env_key, (file_key,))


def test_a_malformed_env_key_is_refused_without_echoing_it() -> None:
    with pytest.raises(VaultError, match="environment") as info:
        load_keyring(env_value="SECRETISH-but-short", key_file=None)
    assert "SECRETISH" not in str(info.value)


def test_init_key_file_creates_a_key_once_and_then_keeps_it(tmp_path: Path) -> None:
    path = tmp_path / "data" / "master.json"
    assert init_key_file(path) is True
    created = load_keyring(env_value=None, key_file=path)
    assert created is not None and created.others == ()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert init_key_file(path) is False
    assert load_keyring(env_value=None, key_file=path) == created
    assert [p.name for p in path.parent.iterdir()] == ["master.json"]


def test_init_key_file_checks_an_existing_file_instead_of_trusting_it(tmp_path: Path) -> None:
    path = tmp_path / "master.json"
    write_key_file(path, Keyring(MasterKey.generate()))
    path.chmod(0o644)
    with pytest.raises(VaultError, match="too permissive"):
        init_key_file(path)
