"""What the pin guard keeps and records: a block, the refusal an agent sees, the change record."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from mcp_gateway.pins.fresh import Part
from mcp_gateway.pins.model import (
    LEGACY_FIELDS,
    PIN_VERSION,
    Kind,
    Pin,
    changed_fields,
    definition_diff,
    pin_name,
)
from mcp_gateway.redact import Redactor
from mcp_gateway.types import AuditEvent

# An upstream controls the size of its descriptions; keep one audit record bounded.
_MAX_DIFF_CHARS = 32_768
PART: dict[Kind, Part] = {
    "tool": "tools",
    "prompt": "prompts",
    "resource": "resources",
    "template": "templates",
}
NOUN: dict[Kind, str] = {
    "tool": "tool",
    "prompt": "prompt",
    "resource": "resource",
    "template": "resource template",
}
ID_FIELD: dict[str, str] = {"prompt": "name", "resource": "uri", "template": "uriTemplate"}


@dataclass(frozen=True, slots=True)
class Blocked:
    """An item the gateway refuses: what the upstream presents and why it is not approved."""

    upstream: str
    tool: str
    presented_hash: str
    reason: Literal["changed", "new"]
    kind: Kind = "tool"
    pattern: re.Pattern[str] | None = None
    """For a resource template: the URIs it expands to (a read of one of them is refused too)."""

    @property
    def name(self) -> str:
        return pin_name(self.kind, self.upstream, self.tool)


def approval_hint(
    name: str, reason: Literal["changed", "new"] = "changed", *, noun: str = "tool", pin: str | None = None
) -> str:
    """The refusal an agent sees for a blocked item; it says what an admin must do."""
    what = "changed since it was approved" if reason == "changed" else "is new and not approved yet"
    return f"{noun} `{name}` {what}; an admin must run `mcp-gateway upstreams approve {pin or name}`"


def template_pattern(template: str) -> re.Pattern[str]:
    """A regex matching the URIs an RFC 6570 template expands to (``{x}``: one segment, ``{+x}``: any)."""
    parts: list[str] = []
    for literal, expr in re.findall(r"([^{]*)(\{[^}]*\})?", template):
        parts.append(re.escape(literal))
        if expr:
            parts.append(".+" if expr[1:2] in "+#" else r"[^/?#]+")
    return re.compile("".join(parts) + r"\Z")


def _bounded(diff: str) -> str:
    if len(diff) <= _MAX_DIFF_CHARS:
        return diff
    return diff[:_MAX_DIFF_CHARS] + f"\n... diff truncated ({len(diff)} characters in all)\n"


def changed_event(
    name: str,
    facts: dict[str, Any],
    pin: Pin | None,
    new_hash: str,
    text: str,
    redactor: Redactor,
    change: Literal["changed", "new"],
) -> AuditEvent:
    """The ``<kind>_changed``/``blocked`` record of a presented definition: the changed fields' names,
    the hashes and a redacted, bounded diff (never more than the redactor leaves)."""
    old_text = pin.definition if pin is not None else ""
    # Both texts were redacted when made; scrub the diff again in case the secrets changed since.
    diff = redactor.scrub_text(definition_diff(old_text, text, label=name))
    legacy = pin is not None and pin.version < PIN_VERSION
    fields = changed_fields(old_text, text, only=LEGACY_FIELDS if legacy else None)
    return AuditEvent(
        kind=f"{facts['kind']}_changed",
        tool=name,
        status="blocked",
        detail={
            **facts,
            "change": change,
            "old_hash": pin.hash if pin is not None else "",
            "new_hash": new_hash,
            "changed_fields": fields,
            "pin_version": pin.version if pin is not None else PIN_VERSION,
            "diff": _bounded(diff),
        },
    )
