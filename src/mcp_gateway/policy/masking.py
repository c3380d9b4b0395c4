"""Column masking for the read tools: what policy says about a column, and a value masked by it.

A table rule (``tables:`` in policy) may mask columns::

    tables:
      "pg.crm.customers":
        mask:
          email: hash                       # a keyed HMAC: equal values stay equal, the value is gone
          phone: {mode: partial, keep_last: 2}   # "****42"
          ssn: drop                         # the column does not exist for the read tools

Every rule whose name or pattern matches a table contributes its masks, and the strictest mode wins
for a column (``drop`` over ``hash`` over ``partial``): a broad pattern cannot be undone by a narrower
rule. Column names match case-insensitively (Snowflake folds to upper case, PostgreSQL to lower).

Pure: no I/O. The HMAC key is the deployment's audit HMAC key from the vault (the caller resolves it),
under a domain of its own so a masked value never equals an audit record's HMAC of the same value.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MaskMode = Literal["drop", "hash", "partial"]
STRICTNESS: dict[str, int] = {"partial": 1, "hash": 2, "drop": 3}
PARTIAL_FILL = "****"
HASH_PREFIX = "hmac:"
# Domain separation from audit/sensitive.py's argument HMACs made with the same key.
_DOMAIN = b"mcp-gateway data mask v1\x00"


class ColumnMask(BaseModel):
    """How one column is masked: ``drop``, ``hash`` or ``partial`` (``keep_last`` characters shown)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: MaskMode
    keep_last: int = Field(default=4, ge=0, le=16)
    """For ``partial``: characters kept at the end, and only of a value at least twice that long."""

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: object) -> object:
        # `email: hash` is the common spelling.
        return {"mode": value} if isinstance(value, str) else value


def table_masks(tables: Mapping[str, Any], table: str) -> dict[str, ColumnMask]:
    """The masks for ``table`` (``<warehouse>.<namespace>.<table>``), keyed by lower-cased column.

    Args:
        tables: the policy's ``tables`` section as plain data (``ToolContext.policy_extra["tables"]``).
        table: the full table name.
    """
    out: dict[str, ColumnMask] = {}
    for pattern, rule in tables.items():
        if pattern != table and not fnmatch.fnmatchcase(table, pattern):
            continue
        for column, spec in (rule or {}).get("mask", {}).items():
            mask = ColumnMask.model_validate(spec)
            key = column.casefold()
            if key not in out or STRICTNESS[mask.mode] > STRICTNESS[out[key].mode]:
                out[key] = mask
    return out


def mask_for(masks: Mapping[str, ColumnMask], column: str) -> ColumnMask | None:
    """The mask of ``column`` in ``masks`` (as ``table_masks`` returns them), or None."""
    return masks.get(column.casefold())


def mask_value(value: Any, mask: ColumnMask, key: bytes | None) -> Any:
    """``value`` as the agent may see it under ``mask``.

    ``hash``: ``"hmac:<32 hex>"`` of the value's JSON text under ``key`` (None stays None). ``partial``:
    ``"****"`` plus the last ``keep_last`` characters of the value's text when it is at least twice as
    long, else ``"****"`` alone. ``drop`` never reaches here (the column is not read).

    Raises:
        ValueError: a ``hash`` mask without a key (the caller refuses the read: fail closed).
    """
    if value is None:
        return None
    if mask.mode == "hash":
        if key is None:
            raise ValueError("no key to hash masked values with")
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
        return HASH_PREFIX + hmac.new(key, _DOMAIN + text.encode(), hashlib.sha256).hexdigest()[:32]
    if mask.mode == "partial":
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        keep = mask.keep_last
        if keep and len(text) >= 2 * keep:
            return PARTIAL_FILL + text[-keep:]
        return PARTIAL_FILL
    raise ValueError(f"mask mode `{mask.mode}` is applied by not reading the column")
