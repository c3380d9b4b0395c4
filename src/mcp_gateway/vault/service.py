"""The ``Vault`` service: seals, stores and resolves secrets over a ``SecretStore`` (``store.py``).

It also owns the rule for secret names (``validate_name``) and master-key rotation, and, when opened
with ``check_keys``, refuses a well-formed master key that is not the vault's (``keycheck.py``).
"""

from __future__ import annotations

import builtins
import logging
import re
import threading
from typing import Any

from mcp_gateway.errors import IntegrityError, SecretNotFound, VaultError, VaultSealed, WrongMasterKey
from mcp_gateway.types import SecretStore, SecretValue
from mcp_gateway.vault.crypto import (
    Keyring,
    MasterKey,
    envelope_key_id,
    key_check,
    rewrap,
    seal,
    unseal,
)
from mcp_gateway.vault.keycheck import admit, key_ids_in_use
from mcp_gateway.vault.store import METADATA_FIELDS, KeyCheckStore, SwappableStore

__all__ = ["NO_MASTER_KEY", "Vault", "validate_name"]

logger = logging.getLogger(__name__)

_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_SWAP_ATTEMPTS = 5
NO_MASTER_KEY = "no master key is configured"
"""The ``seal_reason`` of a vault given no key (as opposed to a key that is not its own)."""


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid secret name (``[A-Za-z0-9_.-]{1,128}``).

    Raises:
        VaultError: the name is invalid. The rejected text is not echoed: a value pasted where a
            name belongs must not end up in a log.
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise VaultError("invalid secret name: use 1-128 characters from A-Z a-z 0-9 _ . -")
    return name


class Vault:
    """Seals, stores and resolves secrets.

    Args:
        store: where envelopes live.
        keyring: the master keys, or ``None`` for a sealed vault (metadata and deletes still work).
        check_keys: admit a keyring only if it opens the vault's key check values (``keycheck.py``);
            one that does not leaves the vault sealed, logged once. The store must keep key checks.

    Raises:
        VaultError: ``check_keys`` with a store that keeps no key checks, or the store failed.
    """

    def __init__(self, store: SecretStore, keyring: Keyring | None, *, check_keys: bool = False) -> None:
        if check_keys and not isinstance(store, KeyCheckStore):
            raise VaultError(f"secret store {store!r} keeps no key check values")
        self._store = store
        self._checks = store if check_keys and isinstance(store, KeyCheckStore) else None
        self._keyring: Keyring | None = None
        self.seal_reason: str | None = NO_MASTER_KEY
        """Why the vault is sealed (``None`` when it is not): no key, or the key given is not its key."""
        self._rotate_lock = threading.Lock()
        self.unseal(keyring)

    def __repr__(self) -> str:
        keys = self._keyring.key_ids if self._keyring else ()
        return f"Vault(store={self._store!r}, sealed={self.sealed}, key_ids={keys!r})"

    @property
    def sealed(self) -> bool:
        """``True`` when no master key is loaded (none was given, or it is not this vault's)."""
        return self._keyring is None

    @property
    def keyring(self) -> Keyring | None:
        """The keyring in use (after ``rotate_master``, the new key is current)."""
        return self._keyring

    def _keys(self) -> Keyring:
        keyring = self._keyring
        if keyring is None:
            raise VaultSealed(f"the vault is sealed: {self.seal_reason or NO_MASTER_KEY}")
        return keyring

    def unseal(self, keyring: Keyring | None) -> bool:
        """Load ``keyring`` (``None`` seals the vault); ``True`` if the vault is now unsealed.

        With ``check_keys``, a keyring that is not the vault's leaves it sealed: ``seal_reason`` says
        which key was given and which is expected, and one error line is logged (no traceback).

        Raises:
            VaultError: the store failed while checking the keys.
        """
        if keyring is not None and self._checks is not None:
            try:
                admit(self._checks, keyring)
            except WrongMasterKey as exc:
                self._keyring, self.seal_reason = None, str(exc)
                logger.error("%s", exc)
                return False
        self._keyring = keyring
        self.seal_reason = None if keyring is not None else NO_MASTER_KEY
        return keyring is not None

    def put(self, name: str, value: bytes) -> None:
        """Seal ``value`` under the current master key and store it as ``name``.

        Raises:
            VaultError: the name is invalid, or the store failed.
            VaultSealed: no master key is loaded.
        """
        validate_name(name)
        self._store.put(name, seal(self._keys(), name, value))

    def add(self, name: str, value: bytes) -> bool:
        """Seal and store ``value`` as ``name`` only if nothing is stored under it yet (atomic in the
        store); ``True`` if this call stored it.

        Raises:
            VaultError: the name is invalid, the store cannot add atomically, or the store failed.
            VaultSealed: no master key is loaded.
        """
        validate_name(name)
        if not isinstance(self._store, SwappableStore):
            raise VaultError("this secret store cannot add a secret atomically")
        return self._store.add(name, seal(self._keys(), name, value))

    def resolve(self, name: str) -> SecretValue:
        """The plaintext of secret ``name``.

        Raises:
            VaultError: the name is invalid, or the store failed.
            VaultSealed: no master key is loaded.
            SecretNotFound: nothing is stored under ``name``.
            IntegrityError: the envelope failed authentication.
        """
        validate_name(name)
        keyring = self._keys()
        envelope = self._store.get(name)
        if envelope is None:
            raise SecretNotFound(f"no secret named `{name}`")
        return SecretValue(name, unseal(keyring, name, envelope))

    def delete(self, name: str) -> bool:
        """Remove secret ``name``; ``True`` if it existed. Raises ``VaultError`` for an invalid name."""
        return self._store.delete(validate_name(name))

    def resolve_all(self) -> dict[str, SecretValue]:
        """Every secret's plaintext by name (for the redactor).

        Raises:
            VaultSealed: no master key is loaded.
            IntegrityError: any envelope fails authentication; none is skipped.
        """
        keyring = self._keys()
        out: dict[str, SecretValue] = {}
        for name in self._store.names():
            envelope = self._store.get(name)
            if envelope is not None:  # deleted since names() was read: gone, not bad
                out[name] = SecretValue(name, unseal(keyring, name, envelope))
        return out

    def rotate_master(self, new_key: MasterKey) -> int:
        """Make ``new_key`` current and re-wrap every envelope under it; return how many were re-wrapped.

        Old keys stay in the keyring, so readers keep working whichever envelope they meet mid-rotation.
        Save the new keyring (``write_key_file(path, keyring.with_current(new_key))``) *before*
        calling this, so a crash cannot leave envelopes under a key that exists nowhere else.
        Envelopes already under ``new_key`` are left alone, so an interrupted rotation can be re-run.

        Raises:
            VaultSealed: no master key is loaded.
            IntegrityError: an envelope failed authentication (the rotation stops; run it again after
                fixing or deleting that secret).
        """
        with self._rotate_lock:
            keyring = self._keys().with_current(new_key)
            checked = self._checks
            if checked is not None:
                # Known to the vault before any envelope uses it.
                checked.add_key_checks({new_key.key_id: key_check(new_key)})
            # New writes use the new key from now on.
            self._keyring = keyring
            count = sum(self._rewrap_one(keyring, new_key, name) for name in self._store.names())
            if checked is not None:
                # A retired key must not pass the check any more: it opens nothing now.
                in_use = key_ids_in_use(checked) | {new_key.key_id}
                checked.remove_key_checks(kid for kid in checked.key_checks() if kid not in in_use)
        logger.info("re-wrapped %d secrets under master key %s", count, new_key.key_id)
        return count

    def close(self) -> None:
        """Close the store's connection (a store without one has nothing to close)."""
        close = getattr(self._store, "close", None)
        if callable(close):
            close()

    def _rewrap_one(self, keyring: Keyring, new_key: MasterKey, name: str) -> bool:
        for _ in range(_SWAP_ATTEMPTS):
            envelope = self._store.get(name)
            if envelope is None:
                return False
            try:
                kid: str | None = envelope_key_id(envelope)
            except IntegrityError:
                kid = None  # rewrap below raises the error that names the secret
            if kid == new_key.key_id:
                return False
            fresh = rewrap(keyring, new_key, name, envelope)
            if not isinstance(self._store, SwappableStore):
                self._store.put(name, fresh)
                return True
            # Compare-and-swap: a put racing the rotation must not be overwritten by the older value.
            if self._store.swap(name, envelope, fresh):
                return True
        raise VaultError(f"secret `{name}` kept changing during rotation; run the rotation again")

    def generation(self) -> int:
        """The store's change counter: when it is unchanged, ``resolve_all`` would return the same."""
        return self._store.generation()

    def reload_keyring(self, keyring: Keyring | None) -> None:
        """Swap in a new keyring (``None`` seals the vault); checked like ``unseal``."""
        self.unseal(keyring)

    def list(self) -> builtins.list[dict[str, Any]]:
        """Name, key id and timestamps of every secret; never values or envelopes."""
        return [{k: m[k] for k in METADATA_FIELDS if k in m} for m in self._store.metadata()]
