"""Is this keyring the vault's? The key check values that tell, before any secret is touched.

A master key's id is derived from the key, so any well-formed key "works" until an envelope fails to
open, and then every secret fails at once, naming whichever came first. Instead, the vault keeps one
key check value per master key id (``crypto.key_check``: a known constant sealed under that key) in
its store, and a keyring is admitted only if at least one of its keys opens its recorded check.
Otherwise the vault stays sealed with one message saying which key was given and which is expected.

Where the checks come from:

- a new vault (no checks, no envelopes): the first keyring to open it is recorded, in one
  transaction that records nothing if another process got there first;
- a vault made before key checks existed (envelopes, no checks): the first keyring that opens one of
  its envelopes is recorded; a keyring that opens none is refused and nothing is written;
- an admitted keyring's other keys (a rotation's new key) are recorded as they are met, and a
  finished rotation forgets the checks of keys no envelope uses any more (``Vault.rotate_master``).
"""

from __future__ import annotations

from collections.abc import Iterable

from mcp_gateway.errors import IntegrityError, WrongMasterKey
from mcp_gateway.vault.crypto import Keyring, MasterKey, key_check, unseal, verify_key_check
from mcp_gateway.vault.store import KeyCheckStore

__all__ = ["admit", "key_ids_in_use"]

_ATTEMPTS = 3


def _keys(keyring: Keyring) -> tuple[MasterKey, ...]:
    return (keyring.current, *keyring.others)


def _ids(key_ids: Iterable[str]) -> str:
    return ", ".join(f"`{kid}`" for kid in sorted(key_ids))


def _mismatch(keyring: Keyring, expected: set[str]) -> WrongMasterKey:
    return WrongMasterKey(
        f"master key {_ids(keyring.key_ids)} is not this vault's key (it expects {_ids(expected)}):"
        f" the vault stays sealed; give the key with id {_ids(expected)} in MCP_GATEWAY_MASTER_KEY or"
        " vault.key_file and restart"
    )


def key_ids_in_use(store: KeyCheckStore) -> set[str]:
    """The ids of the master keys the stored envelopes are wrapped with."""
    return {str(meta["key_id"]) for meta in store.metadata()}


def _proven_by_checks(keyring: Keyring, checks: dict[str, bytes]) -> bool:
    proven = False
    for key in _keys(keyring):
        check = checks.get(key.key_id)
        if check is None:
            continue
        if not verify_key_check(key, check):
            # Key ids derive from the keys, so a recorded id whose check fails means an altered check.
            raise WrongMasterKey(
                f"the key check value of master key `{key.key_id}` does not verify: it was altered;"
                " the vault stays sealed"
            )
        proven = True
    return proven


def _opens_an_envelope(store: KeyCheckStore, keyring: Keyring) -> bool:
    held = set(keyring.key_ids)
    for meta in store.metadata():
        name, kid = str(meta["name"]), str(meta["key_id"])
        if kid not in held:
            continue
        envelope = store.get(name)
        if envelope is None:
            continue
        try:
            unseal(keyring, name, envelope)
        except IntegrityError:
            continue  # a damaged envelope proves nothing either way: try the next one
        return True
    return False


def admit(store: KeyCheckStore, keyring: Keyring) -> None:
    """Admit ``keyring`` if it is this vault's, recording the check values it may add.

    Raises:
        WrongMasterKey: no key of ``keyring`` opens the vault's key checks (or, for a vault without
            checks yet, any of its envelopes); nothing is recorded. The message names key ids only.
        VaultError: the store failed.
    """
    fresh = {key.key_id: key_check(key) for key in _keys(keyring)}
    for _ in range(_ATTEMPTS):
        checks = store.key_checks()
        if checks:
            if not _proven_by_checks(keyring, checks):
                raise _mismatch(keyring, set(checks))
            missing = {kid: check for kid, check in fresh.items() if kid not in checks}
            if missing:
                store.add_key_checks(missing)
            return
        in_use = key_ids_in_use(store)
        if in_use:
            # Made before key checks: an envelope that opens is the proof; then record the keyring.
            if not _opens_an_envelope(store, keyring):
                raise _mismatch(keyring, in_use)
            store.add_key_checks(fresh)
            return
        if store.add_key_checks(fresh, only_if_none=True):
            return
        # Another process recorded its key first: check against that on the next pass.
    raise WrongMasterKey("the vault's key checks kept changing while unsealing; try again")
