"""The audit's own keys: an Ed25519 checkpoint-signing key, an HMAC key for sensitive arguments, and
the key that seals every batch of records (``seal.py``).

All live sealed in the vault like any other secret (``audit-signing-key``, ``audit-hmac-key``,
``audit-seal-key``), as
URL-safe base64 text of 32 random bytes, and are created on the first start with an unsealed vault.
Being vault values, they are also scrubbed from every result like any other secret.
The signing key's public half is exported next to the stores (``audit-signing.pub``), so anyone can
check checkpoints without a secret. The export keeps the public keys already in the file: checkpoints
signed before the key was replaced still verify.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from mcp_gateway.audit.checkpoint import key_id_of, parse_public_keys, public_key_pem
from mcp_gateway.errors import AuditError, SecretNotFound
from mcp_gateway.types import SecretValue

logger = logging.getLogger(__name__)

SIGNING_KEY_NAME = "audit-signing-key"
HMAC_KEY_NAME = "audit-hmac-key"
SEAL_KEY_NAME = "audit-seal-key"
PUBLIC_KEY_FILE = "audit-signing.pub"
_KEY_BYTES = 32


class KeyVault(Protocol):
    """The part of ``vault.service.Vault`` the audit keys need."""

    @property
    def sealed(self) -> bool: ...

    def resolve(self, name: str) -> SecretValue: ...

    def add(self, name: str, value: bytes) -> bool: ...


@dataclass(frozen=True, slots=True)
class AuditKeys:
    """The deployment's audit keys; ``repr`` shows only the signing key's id."""

    signing_key: Ed25519PrivateKey = field(repr=False)
    hmac_key: bytes = field(repr=False)
    key_id: str
    seal_key: bytes = field(repr=False, default=b"")

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.signing_key.public_key()


def _decode(secret: SecretValue) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(secret.reveal() + b"=" * (-len(secret.reveal()) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != _KEY_BYTES:
        # Named, never shown: the stored text is key material.
        raise AuditError(f"vault secret `{secret.name}` is not a {_KEY_BYTES}-byte audit key")
    return raw


def _get_or_create(vault: KeyVault, name: str) -> bytes:
    try:
        return _decode(vault.resolve(name))
    except SecretNotFound:
        pass
    text = base64.urlsafe_b64encode(secrets.token_bytes(_KEY_BYTES)).rstrip(b"=")
    # Insert only if absent, then read back: of replicas starting together on a new shared vault, the
    # first writer's key wins and every replica uses it (a plain put would let each keep its own).
    if vault.add(name, text):
        logger.info("created audit key `%s` in the vault", name)
    return _decode(vault.resolve(name))


def ensure_audit_keys(vault: KeyVault) -> AuditKeys:
    """Load the audit keys from the vault, creating any that is missing.

    Raises:
        VaultSealed: the vault has no master key.
        VaultError: the store failed or an envelope failed authentication.
        AuditError: a stored key is not 32 bytes of URL-safe base64.
    """
    signing = Ed25519PrivateKey.from_private_bytes(_get_or_create(vault, SIGNING_KEY_NAME))
    hmac_key = _get_or_create(vault, HMAC_KEY_NAME)
    seal_key = _get_or_create(vault, SEAL_KEY_NAME)
    return AuditKeys(signing, hmac_key, key_id_of(signing.public_key()), seal_key)


def load_hmac_key(vault: KeyVault) -> bytes:
    """The audit HMAC key, without creating one (for ``mcp-gateway audit hash``).

    Raises:
        VaultSealed: the vault has no master key.
        SecretNotFound: no gateway has started with an unsealed vault yet.
        AuditError: the stored key is malformed.
    """
    return _decode(vault.resolve(HMAC_KEY_NAME))


def load_seal_key(vault: KeyVault) -> bytes:
    """The audit seal key, without creating one (for the CLI's audit writers and ``audit verify``).

    Raises:
        VaultSealed: the vault has no master key.
        SecretNotFound: no gateway has started with an unsealed vault yet.
        AuditError: the stored key is malformed.
    """
    return _decode(vault.resolve(SEAL_KEY_NAME))


def read_public_keys(path: Path) -> dict[str, Ed25519PublicKey]:
    """The public keys in ``path`` by key id; empty when the file does not exist.

    Raises:
        AuditError: the file cannot be read or holds something other than Ed25519 PEM keys.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise AuditError(f"cannot read public key file `{path}`: {exc.strerror}") from None
    try:
        return parse_public_keys(data)
    except AuditError as exc:
        raise AuditError(f"public key file `{path}`: {exc}") from None


def export_public_key(path: Path, public_key: Ed25519PublicKey) -> bool:
    """Add ``public_key`` to the PEM file at ``path`` unless it is there; True if the file changed.

    The file is replaced atomically (temp file, fsync, rename) and is world-readable: it is public.

    Raises:
        AuditError: the file cannot be read or written.
    """
    known = read_public_keys(path)
    if key_id_of(public_key) in known:
        return False
    data = b"".join(public_key_pem(key) for key in known.values()) + public_key_pem(public_key)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise AuditError(f"cannot write public key file `{path}`: {exc.strerror}") from None
    return True
