"""The gateway's own ``requestState`` for 2026-07-28 multi-round-trip requests.

When an upstream answers ``input_required``, the agent gets the upstream's input requests and a
``requestState`` the gateway sealed itself; the upstream's own state is inside it, never shown. The
seal is the MCP SDK's AES-256-GCM codec (``AESGCMRequestStateCodec``); what it binds is ours:

- the agent and its credential (another agent, or another token, cannot use it);
- the exchange (method and target) and a digest of its arguments (a retry must be the same request);
- an expiry (``ttl`` seconds);
- a nonce, spent on first use: each state is good for one retry, enforced here, not by the client.

The sealing key is the vault secret ``request-state-key`` (``state_key``: created on the first start
with an unsealed vault, insert-if-absent, then read back, as the audit keys are), so every replica
sharing the vault opens what another sealed, and a restart keeps them good. Used nonces are recorded
in a ``SpentStates`` store (``spent_states.py``) the replicas share, so a token is good once across
all of them. With a sealed vault the key is the process's own (a retry that lands elsewhere or after a
restart is refused like a forged one, and the agent starts the call again).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mcp.server.request_state import AESGCMRequestStateCodec
from mcp.server.request_state import InvalidRequestState as _Unsealable

from mcp_gateway.audit.keys import KeyVault
from mcp_gateway.audit.record import digest
from mcp_gateway.core.spent_states import (
    MemorySpentStates,
    SharedStoreSetting,
    SpentStates,
    open_spent_states,
)
from mcp_gateway.errors import GatewayError, InvalidRequestState, SecretNotFound, StoreError, VaultError
from mcp_gateway.types import Principal

logger = logging.getLogger(__name__)

STATE_KEY_NAME = "request-state-key"
PREVIOUS_STATE_KEY_NAME = "request-state-key.previous"
"""The key ``rotate_state_key`` replaced: still opens the tokens sealed before the rotation."""
_KEY_BYTES = 32
_INVALID = "invalid or expired requestState"


def _new_key_text() -> bytes:
    return base64.urlsafe_b64encode(secrets.token_bytes(_KEY_BYTES)).rstrip(b"=")


def _key_of(name: str, stored: bytes) -> bytes:
    try:
        key = base64.urlsafe_b64decode(stored + b"=" * (-len(stored) % 4))
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != _KEY_BYTES:
        # Named, never shown: the stored text is key material.
        raise VaultError(f"vault secret `{name}` is not a {_KEY_BYTES}-byte key")
    return key


def state_key(vault: KeyVault) -> bytes:
    """The deployment's ``requestState`` sealing key from the vault, created if missing (insert only
    if absent, then read back: of replicas starting together, the first writer's key wins).

    Raises:
        VaultSealed: the vault has no master key.
        VaultError: the store failed, or the stored key is not 32 bytes of URL-safe base64.
    """
    try:
        secret = vault.resolve(STATE_KEY_NAME)
    except SecretNotFound:
        if vault.add(STATE_KEY_NAME, _new_key_text()):
            logger.info("created `%s` in the vault", STATE_KEY_NAME)
        secret = vault.resolve(STATE_KEY_NAME)
    return _key_of(STATE_KEY_NAME, secret.reveal())


def state_keys(vault: KeyVault) -> list[bytes]:
    """The sealing key (``state_key``), then the one a rotation replaced, if the vault holds it (a
    previous key that is not a key is logged and left out: it only opens old tokens).

    Raises:
        as ``state_key``.
    """
    keys = [state_key(vault)]
    try:
        keys.append(_key_of(PREVIOUS_STATE_KEY_NAME, vault.resolve(PREVIOUS_STATE_KEY_NAME).reveal()))
    except SecretNotFound:
        pass
    except VaultError as exc:
        logger.error("ignoring the previous request state key: %s", exc)
    return keys


def rotate_state_key(vault: RotatingVault) -> None:
    """Make a new sealing key; the current one becomes the previous (the one before is dropped).

    A gateway reads the keys when it starts: restart each replica after a rotation. Until then a
    replica seals with the old key, which the restarted ones still open; a token sealed with the new
    key is refused by a replica not yet restarted (the agent starts its call again).

    Raises:
        VaultSealed: the vault has no master key.
        VaultError: the store failed.
    """
    current = state_key(vault)  # created first if it never was: there is then nothing to keep
    vault.put(PREVIOUS_STATE_KEY_NAME, base64.urlsafe_b64encode(current).rstrip(b"="))
    vault.put(STATE_KEY_NAME, _new_key_text())


class RotatingVault(KeyVault, Protocol):
    """What ``rotate_state_key`` needs of the vault: also replacing a secret."""

    def put(self, name: str, value: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class Resume:
    """What the agent sent back: its answers to the input requests and the gateway's sealed state."""

    input_responses: Mapping[str, Any] | None
    request_state: str | None


@dataclass
class RequestStates:
    """Seals and opens the gateway's ``requestState`` tokens (see the module doc).

    Args:
        ttl: seconds a token stays usable.
        clock: the time source (tests pass a fake one).
        keys: the sealing key first, then older ones that still open (``state_key``); empty: a
            fresh key of this process's own.
        spent: where first uses are recorded (default: this process's memory).
    """

    ttl: float = 600.0
    clock: Callable[[], float] = time.time
    keys: Sequence[bytes] = field(default=(), repr=False)
    spent: SpentStates = field(default_factory=MemorySpentStates, repr=False)
    _codec: AESGCMRequestStateCodec = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._codec = AESGCMRequestStateCodec(list(self.keys) or [os.urandom(_KEY_BYTES)])

    def seal(
        self,
        principal: Principal,
        method: str,
        target: str,
        arguments: Mapping[str, Any],
        upstream: str | None,
    ) -> str:
        """A token binding ``upstream`` (the upstream's own state, or None) to this exchange."""
        claims = {
            "a": principal.agent,
            "k": principal.token_id,
            "m": method,
            "t": target,
            "d": digest(dict(arguments)),
            "e": self.clock() + self.ttl,
            "n": secrets.token_urlsafe(16),
            "u": upstream,
        }
        return self._codec.seal(json.dumps(claims, separators=(",", ":")).encode())

    async def open(
        self, token: str, principal: Principal, method: str, target: str, arguments: Mapping[str, Any]
    ) -> str | None:
        """The upstream's state inside ``token``, if the token is this exchange's, live and unspent
        (on any replica sharing the store); it is spent by this call.

        Raises:
            InvalidRequestState: anything else, a failing store included (one message for every
                reason: nothing to probe).
        """
        try:
            claims = json.loads(self._codec.unseal(token))
        except (_Unsealable, ValueError, TypeError):
            raise InvalidRequestState(_INVALID) from None
        now = self.clock()
        expected = (principal.agent, principal.token_id, method, target, digest(dict(arguments)))
        if (
            not isinstance(claims, dict)
            or (
                claims.get("a"),
                claims.get("k"),
                claims.get("m"),
                claims.get("t"),
                claims.get("d"),
            )
            != expected
        ):
            raise InvalidRequestState(_INVALID)
        expires, nonce = claims.get("e"), claims.get("n")
        if not isinstance(expires, int | float) or expires <= now or not isinstance(nonce, str):
            raise InvalidRequestState(_INVALID)
        try:
            first = await self.spent.spend(nonce, float(expires))
        except StoreError as exc:
            # Refused, never possibly used twice; the reason goes to the log, not to the agent.
            logger.error("request state store failed, a retry was refused: %s", exc)
            raise InvalidRequestState(_INVALID) from None
        if not first:
            raise InvalidRequestState(_INVALID)
        upstream = claims.get("u")
        return upstream if isinstance(upstream, str) else None


def open_request_states(vault: KeyVault, data_dir: Path, store: SharedStoreSetting | None) -> RequestStates:
    """The running gateway's ``RequestStates``: the vault's key and the shared store of used tokens
    (``store:``, else SQLite in ``data_dir``). With a sealed vault, or a key that cannot be had, the
    key is the process's own, with a warning: retries elsewhere or after a restart are then refused.

    Raises:
        StoreError: the store of used tokens cannot be opened.
    """
    keys: list[bytes] = []
    if vault.sealed:
        logger.warning("vault is sealed: requestState is sealed with a key of this process only")
    else:
        try:
            keys.extend(state_keys(vault))
        except GatewayError as exc:
            logger.error("request state key unavailable, using a key of this process only: %s", exc)
    return RequestStates(keys=keys, spent=open_spent_states(data_dir, store))
