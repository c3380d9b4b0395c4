"""The gateway's own ``requestState`` for 2026-07-28 multi-round-trip requests.

When an upstream answers ``input_required``, the agent gets the upstream's input requests and a
``requestState`` the gateway sealed itself; the upstream's own state is inside it, never shown. The
seal is the MCP SDK's AES-256-GCM codec (``AESGCMRequestStateCodec``); what it binds is ours:

- the agent and its credential (another agent, or another token, cannot use it);
- the exchange (method and target) and a digest of its arguments (a retry must be the same request);
- an expiry (``ttl`` seconds);
- a nonce, spent on first use: each state is good for one retry, enforced here, not by the client.

Keys live in this process (a fresh one per start): a retry after a restart, or on another replica,
is refused with the same error as a forged one, and the agent starts the call again.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mcp.server.request_state import AESGCMRequestStateCodec
from mcp.server.request_state import InvalidRequestState as _Unsealable

from mcp_gateway.audit.record import digest
from mcp_gateway.errors import InvalidRequestState
from mcp_gateway.types import Principal

_INVALID = "invalid or expired requestState"


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
    """

    ttl: float = 600.0
    clock: Callable[[], float] = time.time
    _codec: AESGCMRequestStateCodec = field(init=False, repr=False)
    _spent: dict[str, float] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._codec = AESGCMRequestStateCodec([os.urandom(32)])

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

    def open(
        self, token: str, principal: Principal, method: str, target: str, arguments: Mapping[str, Any]
    ) -> str | None:
        """The upstream's state inside ``token``, if the token is this exchange's, live and unspent;
        it is spent by this call.

        Raises:
            InvalidRequestState: anything else (one message for every reason: nothing to probe).
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
        self._spent = {n: e for n, e in self._spent.items() if e > now}
        if nonce in self._spent:
            raise InvalidRequestState(_INVALID)
        self._spent[nonce] = float(expires)
        upstream = claims.get("u")
        return upstream if isinstance(upstream, str) else None
