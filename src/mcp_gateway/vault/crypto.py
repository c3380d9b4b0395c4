"""Envelope encryption for vault secrets (pure: no I/O, no environment).

Each secret gets its own random 256-bit data key (DEK). The plaintext is sealed with the DEK under
AES-256-GCM, and the DEK is wrapped by a master key, also with AES-256-GCM. Both layers bind the
secret's name as associated data, and the wrap also binds the master key id, so an envelope copied
to another name, or relabelled with another key id, fails to open. Rotating the master key only
re-wraps the DEK; the data ciphertext is never touched.

An envelope is compact JSON with a fixed field order::

    {"v":1,"kid":"<16 hex>","wdek":"<b64 nonce+wrapped DEK>","n":"<b64 nonce>","ct":"<b64 ciphertext>"}

Parsing is canonical: the bytes must be exactly what ``seal`` would write for the parsed fields, so
no edit to an envelope, however small, is ever accepted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mcp_gateway.errors import IntegrityError, VaultError

__all__ = [
    "ENVELOPE_VERSION",
    "KEY_BYTES",
    "Keyring",
    "MasterKey",
    "decode_key",
    "encode_key",
    "envelope_key_id",
    "key_check",
    "rewrap",
    "seal",
    "unseal",
    "verify_key_check",
]

ENVELOPE_VERSION = 1
KEY_BYTES = 32
_NONCE_BYTES = 12
_TAG_BYTES = 16
_KEY_ID_LABEL = b"mcp-gateway key id"
# Versioned so a future envelope format can never be confused with this one.
_CONTEXT = b"mcp-gateway/vault/v1"
_FIELDS = ("v", "kid", "wdek", "n", "ct")
_KEY_ID_RE = re.compile(r"[0-9a-f]{16}")
# What a key check value seals: a known constant, so opening it proves the key, and nothing else.
_CHECK_PLAINTEXT = b"mcp-gateway vault key check v1"


def _derive_key_id(key: bytes) -> str:
    # An HMAC under the key itself names the key without revealing anything about it.
    return hmac.new(key, _KEY_ID_LABEL, hashlib.sha256).digest()[:8].hex()


@dataclass(frozen=True, slots=True)
class MasterKey:
    """A 256-bit master key. ``repr`` shows only its public id; equality compares ids.

    Build one with ``MasterKey.generate()``, ``MasterKey.from_bytes()`` or ``decode_key()``.
    """

    key_id: str
    _key: bytes = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self._key) != KEY_BYTES:
            raise VaultError(f"master key must be {KEY_BYTES} bytes, got {len(self._key)}")
        if self.key_id != _derive_key_id(self._key):
            raise VaultError(f"key id `{self.key_id}` does not belong to this master key")

    @classmethod
    def generate(cls) -> MasterKey:
        """A fresh random master key."""
        return cls.from_bytes(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def from_bytes(cls, key: bytes) -> MasterKey:
        """Wrap raw key bytes.

        Raises:
            VaultError: ``key`` is not exactly 32 bytes.
        """
        if len(key) != KEY_BYTES:
            raise VaultError(f"master key must be {KEY_BYTES} bytes, got {len(key)}")
        return cls(_derive_key_id(key), bytes(key))

    def __str__(self) -> str:
        return f"MasterKey(key_id={self.key_id!r})"

    __repr__ = __str__


@dataclass(frozen=True, slots=True)
class Keyring:
    """The current master key (used to seal) plus older keys (kept to unseal during rotation).

    Args:
        current: the key new envelopes are wrapped with.
        others: older keys, looked up by id when an envelope names them.
    """

    current: MasterKey
    others: tuple[MasterKey, ...] = ()

    def get(self, key_id: str) -> MasterKey | None:
        """The key with id ``key_id``, or ``None`` if this keyring does not hold it."""
        for key in (self.current, *self.others):
            if key.key_id == key_id:
                return key
        return None

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Ids of every key held, current first."""
        return tuple(key.key_id for key in (self.current, *self.others))

    def with_current(self, key: MasterKey) -> Keyring:
        """A keyring sealing with ``key`` that still opens everything this one opens."""
        older = (k for k in (self.current, *self.others) if k.key_id != key.key_id)
        return Keyring(key, tuple(older))


@dataclass(frozen=True, slots=True)
class _Envelope:
    kid: str
    wdek: bytes
    nonce: bytes
    ct: bytes


def _aad(purpose: bytes, *parts: bytes) -> bytes:
    # Length-prefix every part so no two (name, key id) pairs can produce the same AAD.
    out = bytearray(_CONTEXT)
    out += b"\x00" + purpose
    for part in parts:
        out += len(part).to_bytes(4, "big") + part
    return bytes(out)


def _data_aad(name: str) -> bytes:
    return _aad(b"data", name.encode("utf-8"))


def _wrap_aad(name: str, key_id: str) -> bytes:
    return _aad(b"dek", name.encode("utf-8"), key_id.encode("ascii"))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _serialize(env: _Envelope) -> bytes:
    doc = {
        "v": ENVELOPE_VERSION,
        "kid": env.kid,
        "wdek": _b64(env.wdek),
        "n": _b64(env.nonce),
        "ct": _b64(env.ct),
    }
    return json.dumps(doc, separators=(",", ":")).encode("ascii")


def _parse(envelope: bytes) -> _Envelope | None:
    """The envelope's fields, or ``None`` if it is not exactly what ``seal`` writes."""
    try:
        doc: Any = json.loads(envelope)
        if not isinstance(doc, dict) or tuple(doc) != _FIELDS:
            return None
        kid, wdek, nonce, ct = doc["kid"], doc["wdek"], doc["n"], doc["ct"]
        if type(doc["v"]) is not int or doc["v"] != ENVELOPE_VERSION:
            return None
        if not all(isinstance(v, str) for v in (kid, wdek, nonce, ct)):
            return None
        env = _Envelope(
            kid=kid,
            wdek=base64.b64decode(wdek, validate=True),
            nonce=base64.b64decode(nonce, validate=True),
            ct=base64.b64decode(ct, validate=True),
        )
    except (ValueError, TypeError, RecursionError, binascii.Error):
        return None
    # Re-serializing must give back the same bytes: this rejects non-canonical base64 (spare bits),
    # escapes, duplicate keys and any other way two byte strings could mean the same envelope.
    if _serialize(env) != bytes(envelope):
        return None
    if (
        not _KEY_ID_RE.fullmatch(env.kid)
        or len(env.nonce) != _NONCE_BYTES
        or len(env.wdek) != _NONCE_BYTES + KEY_BYTES + _TAG_BYTES
    ):
        return None
    return env


def _open(key: bytes, nonce: bytes, ct: bytes, aad: bytes) -> bytes | None:
    try:
        return AESGCM(key).decrypt(nonce, ct, aad)
    except InvalidTag:
        return None


def _wrap(master: MasterKey, name: str, dek: bytes) -> bytes:
    nonce = secrets.token_bytes(_NONCE_BYTES)
    return nonce + AESGCM(master._key).encrypt(nonce, dek, _wrap_aad(name, master.key_id))


def _unwrap(keyring: Keyring, name: str, env: _Envelope) -> bytes:
    """The envelope's DEK. Raises ``IntegrityError`` outside any ``except`` block, so no context chains."""
    master = keyring.get(env.kid)
    if master is None:
        raise IntegrityError(f"secret `{name}` is sealed by unknown key id `{env.kid}`")
    dek = _open(master._key, env.wdek[:_NONCE_BYTES], env.wdek[_NONCE_BYTES:], _wrap_aad(name, env.kid))
    if dek is None:
        raise IntegrityError(f"secret `{name}` failed authentication")
    return dek


def _as_keyring(keys: Keyring | MasterKey) -> Keyring:
    return keys if isinstance(keys, Keyring) else Keyring(keys)


def _parse_or_raise(name: str, envelope: bytes) -> _Envelope:
    env = _parse(envelope)
    if env is None:
        raise IntegrityError(f"secret `{name}` has a malformed envelope")
    return env


def seal(keys: Keyring | MasterKey, name: str, plaintext: bytes) -> bytes:
    """Encrypt ``plaintext`` as the secret ``name`` under the current master key.

    Args:
        keys: a keyring (its current key wraps the DEK) or a single master key.
        name: the secret's name; bound into both layers, so the envelope opens under this name only.
        plaintext: the secret value.

    Returns:
        The serialized envelope.
    """
    master = keys.current if isinstance(keys, Keyring) else keys
    dek = AESGCM.generate_key(bit_length=256)
    nonce = secrets.token_bytes(_NONCE_BYTES)
    ct = AESGCM(dek).encrypt(nonce, plaintext, _data_aad(name))
    return _serialize(_Envelope(master.key_id, _wrap(master, name, dek), nonce, ct))


def unseal(keys: Keyring | MasterKey, name: str, envelope: bytes) -> bytes:
    """Decrypt the envelope of secret ``name``.

    Args:
        keys: the keyring holding the key the envelope was wrapped with (or that single key).
        name: the name the envelope was sealed under.
        envelope: bytes produced by ``seal`` or ``rewrap``.

    Raises:
        IntegrityError: the envelope is malformed, names an unknown key, was tampered with, or was
            sealed under another name. The message names the secret only; no exception is chained.
    """
    keyring = _as_keyring(keys)
    env = _parse_or_raise(name, envelope)
    dek = _unwrap(keyring, name, env)
    plaintext = _open(dek, env.nonce, env.ct, _data_aad(name))
    if plaintext is None:
        raise IntegrityError(f"secret `{name}` failed authentication")
    return plaintext


def rewrap(keys: Keyring | MasterKey, new_key: MasterKey, name: str, envelope: bytes) -> bytes:
    """Re-wrap the envelope's DEK under ``new_key``, leaving the data ciphertext as it is.

    The data ciphertext is authenticated first, so a tampered envelope is never blessed with a new wrap.

    Args:
        keys: a keyring holding the key the envelope is wrapped with now.
        new_key: the key to wrap the DEK with.
        name: the secret's name.
        envelope: the current envelope.

    Raises:
        IntegrityError: as for ``unseal``.
    """
    keyring = _as_keyring(keys)
    env = _parse_or_raise(name, envelope)
    dek = _unwrap(keyring, name, env)
    if _open(dek, env.nonce, env.ct, _data_aad(name)) is None:
        raise IntegrityError(f"secret `{name}` failed authentication")
    return _serialize(_Envelope(new_key.key_id, _wrap(new_key, name, dek), env.nonce, env.ct))


def envelope_key_id(envelope: bytes) -> str:
    """The id of the master key an envelope is wrapped with (not authenticated: a hint for lookup).

    Raises:
        IntegrityError: the envelope is malformed.
    """
    env = _parse(envelope)
    if env is None:
        raise IntegrityError("envelope is malformed")
    return env.kid


def key_check(key: MasterKey) -> bytes:
    """A key check value for ``key``: a known constant sealed under it (nonce + AES-GCM ciphertext).

    Stored beside the envelopes, it lets a vault tell at unseal time whether a well-formed key is the
    vault's key, before any secret is touched. It reveals no more about the key than an envelope does.
    """
    nonce = secrets.token_bytes(_NONCE_BYTES)
    return nonce + AESGCM(key._key).encrypt(nonce, _CHECK_PLAINTEXT, _aad(b"check", key.key_id.encode()))


def verify_key_check(key: MasterKey, check: bytes) -> bool:
    """``True`` when ``check`` was made by ``key_check(key)`` (and is unaltered)."""
    if len(check) != _NONCE_BYTES + len(_CHECK_PLAINTEXT) + _TAG_BYTES:
        return False
    aad = _aad(b"check", key.key_id.encode())
    opened = _open(key._key, check[:_NONCE_BYTES], check[_NONCE_BYTES:], aad)
    return opened is not None and hmac.compare_digest(opened, _CHECK_PLAINTEXT)


def encode_key(key: MasterKey) -> str:
    """The key as urlsafe base64 text, for a key file or an environment variable."""
    return base64.urlsafe_b64encode(key._key).decode("ascii")


def decode_key(text: str) -> MasterKey:
    """Parse a key written by ``encode_key`` (padding optional, surrounding whitespace ignored).

    Raises:
        VaultError: the text is not urlsafe base64 of exactly 32 bytes. The text is never echoed.
    """
    raw = text.strip()
    raw += "=" * (-len(raw) % 4)
    key: bytes | None
    try:
        key = base64.b64decode(raw.encode("ascii"), altchars=b"-_", validate=True)
    except (ValueError, binascii.Error):
        key = None
    # Checked outside the except block so the offending text never rides along as exception context.
    if key is None:
        raise VaultError("master key is not valid urlsafe base64")
    if len(key) != KEY_BYTES:
        raise VaultError(f"master key must be {KEY_BYTES} bytes of urlsafe base64, got {len(key)} bytes")
    return MasterKey.from_bytes(key)
