"""Sensitive argument values as keyed HMACs, after HashiCorp Vault's HMAC'd audit values.

An argument the policy marks ``sensitive: true`` is stored in an audit record as
``{"hmac": "<hex>"}``: HMAC-SHA256, under a per-deployment key kept in the vault, of the value's
canonical JSON. The value itself never reaches the audit store, yet security can still answer
"which calls carried this value?" by computing the HMAC of a candidate (``mcp-gateway audit hash``)
and searching for it. A plain hash would not do: a short value (a PIN, an account number) is found
from its unsalted hash by trying every candidate; without the key that is not possible.

No I/O happens here.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from typing import Any

from mcp_gateway.audit.record import canonical

HMAC_FIELD = "hmac"
HMAC_HEX = re.compile(r"[0-9a-f]{64}")
# Domain separation: this key must never produce a MAC that means something in another protocol.
_DOMAIN = b"mcp-gateway audit argument v1\x00"


def arg_hmac(key: bytes, value: Any) -> str:
    """The hex HMAC-SHA256 of ``value`` (its canonical JSON) under ``key``.

    The argument's name is not mixed in, so one search finds a value under whatever argument carried it.

    Args:
        key: the deployment's audit HMAC key (32 random bytes).
        value: a decoded JSON value; the text ``"hunter2"`` and the number ``7`` differ.

    Raises:
        TypeError: ``value`` is not representable as JSON.
    """
    return hmac.new(key, _DOMAIN + canonical(value), hashlib.sha256).hexdigest()


def hmac_marker(key: bytes | None, value: Any) -> dict[str, str | None]:
    """What an audit record holds in place of a sensitive value.

    ``{"hmac": None}`` when there is no key (the vault was sealed at start) or the value is not JSON:
    the value is then withheld entirely rather than stored.
    """
    if key is None:
        return {HMAC_FIELD: None}
    try:
        return {HMAC_FIELD: arg_hmac(key, value)}
    except (TypeError, ValueError):
        return {HMAC_FIELD: None}


def mask_sensitive(
    args: Mapping[str, Any], names: AbstractSet[str], key: bytes | None, *, values: Mapping[str, Any]
) -> dict[str, Any]:
    """``args`` with each argument in ``names`` replaced by its ``hmac_marker``.

    Args:
        args: the arguments as they will be recorded (already scrubbed of vault values).
        names: the argument names the policy marks sensitive.
        key: the audit HMAC key, or None to withhold the values without a MAC.
        values: the arguments as the agent sent them; the MAC is taken over these, so that
            ``audit hash`` of what the agent really sent finds the record.
    """
    return {
        name: (hmac_marker(key, values[name]) if name in names and name in values else value)
        for name, value in args.items()
    }


def marker_matches(args: Mapping[str, Any], mac: str) -> bool:
    """Whether some argument in ``args`` is stored as ``{"hmac": mac}``."""
    return any(isinstance(v, Mapping) and dict(v) == {HMAC_FIELD: mac} for v in args.values())
