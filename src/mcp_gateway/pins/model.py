"""Definition pinning, the pure core: what is pinned, its hash, and a readable diff.

An upstream MCP server can change a tool's (prompt's, resource's) definition after an admin has looked
at it (a "rug pull"): the new text reaches the model as instructions. The gateway therefore pins each
upstream item on first sight to a SHA-256 over the canonical JSON of its definition, and blocks the
item when a later listing presents anything else, until an admin approves the change.

What is pinned (format 2): every field the upstream presents and the gateway passes on to agents:
``name``, ``title``, ``description``, the schemas, ``annotations``, ``icons``, ``execution`` and
``_meta`` alike. A client may show an icon, a title or a ``_meta`` note to the model or the user, so
each can carry an injection or a lure. Two resource fields are left out because they change by
themselves and carry no text: ``size``, and ``annotations.lastModified`` when it is a timestamp (any
other value in it is text, and pinned).

Format 1 (pins taken before this change) covered only ``name``, ``title``, ``description``, ``inputSchema``,
``outputSchema`` and ``annotations`` of tools. A format-1 pin is upgraded in place when the fields it
covered are unchanged (``pin_upgraded`` audited, with the fields newly covered), and blocked like any
change when they are not.

This module does no I/O. The store is ``store.py``; the guard that applies pins is ``gate.py``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from mcp_gateway.audit.record import canonical

Kind = Literal["tool", "prompt", "resource", "template"]
"""What a pin is of: a tool, a prompt, a concrete resource, or a resource template."""

KINDS: tuple[Kind, ...] = ("tool", "prompt", "resource", "template")

PIN_VERSION = 2
"""The current pin format: every presented field (see the module doc)."""

LEGACY_FIELDS = ("name", "title", "description", "inputSchema", "outputSchema", "annotations")
"""The keys of an MCP ``Tool`` a format-1 pin covered."""

PinStatus = Literal["pinned", "changed", "new"]
"""``pinned``: the presented definition is the approved one. ``changed``: the upstream now presents a
different definition (blocked). ``new``: first seen while new items need approval (blocked)."""


def _timestamp(value: object) -> bool:
    if not isinstance(value, str) or len(value) > 64:
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def pinned_definition(
    item: Mapping[str, Any], kind: Kind = "tool", version: int = PIN_VERSION
) -> dict[str, Any]:
    """The part of a definition a pin covers; absent and ``None`` fields are left out alike.

    Args:
        item: an MCP ``Tool``/``Prompt``/``Resource``/``ResourceTemplate`` as a JSON-ready dict
            (``model_dump(by_alias=True, mode="json")``), with the name the upstream gave it.
        kind: what the item is.
        version: the pin format (1: the legacy tool fields only).
    """
    if version == 1:
        return {key: item[key] for key in LEGACY_FIELDS if item.get(key) is not None}
    pinned = {key: value for key, value in item.items() if value is not None}
    if kind == "resource":
        pinned.pop("size", None)
        annotations = pinned.get("annotations")
        if isinstance(annotations, Mapping) and _timestamp(annotations.get("lastModified")):
            pinned["annotations"] = {k: v for k, v in annotations.items() if k != "lastModified"}
    return pinned


def definition_hash(item: Mapping[str, Any], kind: Kind = "tool", version: int = PIN_VERSION) -> str:
    """SHA-256 hex of the canonical JSON of ``pinned_definition(item, kind, version)``.

    Key order does not matter; any change to a pinned field (a character of the description, a
    schema keyword, an icon URL, a ``_meta`` entry) does.

    Raises:
        TypeError: the definition holds something JSON cannot represent.
    """
    return hashlib.sha256(canonical(pinned_definition(item, kind, version))).hexdigest()


def definition_text(item: Mapping[str, Any], kind: Kind = "tool", version: int = PIN_VERSION) -> str:
    """The pinned definition as indented, key-sorted JSON: stable across listings, and diffable."""
    return (
        json.dumps(pinned_definition(item, kind, version), sort_keys=True, indent=2, ensure_ascii=False)
        + "\n"
    )


def definition_diff(old_text: str, new_text: str, *, label: str) -> str:
    """A unified diff from the approved definition text to the presented one.

    Args:
        old_text: ``definition_text`` of the pinned definition (empty when there was none).
        new_text: ``definition_text`` of the presented definition.
        label: what the diff is of, e.g. ``upstream.tool``; shown in the ``---``/``+++`` lines.
    """
    lines = difflib.unified_diff(
        old_text.splitlines(keepends=True),
        new_text.splitlines(keepends=True),
        fromfile=f"{label} (approved)",
        tofile=f"{label} (presented)",
    )
    return "".join(lines)


def changed_fields(old_text: str, new_text: str, *, only: tuple[str, ...] | None = None) -> list[str]:
    """The top-level fields that differ between two definition texts (names only, never values).

    Args:
        old_text: the approved definition text (empty when there was none).
        new_text: the presented definition text.
        only: compare just these fields (a format-1 pin covered fewer).
    """
    try:
        old = json.loads(old_text) if old_text else {}
        new = json.loads(new_text)
    except ValueError:
        return ["(unreadable)"]
    if not isinstance(old, dict) or not isinstance(new, dict):
        return ["(unreadable)"]
    keys = set(old) | set(new)
    if only is not None:
        keys &= set(only)
    return sorted(key for key in keys if old.get(key) != new.get(key))


def pin_name(kind: Kind, upstream: str, name: str) -> str:
    """How the CLI and audit records name a pin: ``up.tool``, ``prompt:up.name``,
    ``resource:up:URI``, ``template:up:URI-TEMPLATE``."""
    if kind == "tool":
        return f"{upstream}.{name}"
    if kind == "prompt":
        return f"prompt:{upstream}.{name}"
    return f"{kind}:{upstream}:{name}"


def parse_pin_name(text: str) -> tuple[Kind, str, str] | None:
    """The inverse of ``pin_name``: (kind, upstream, name), or None if ``text`` is not one."""
    kinds: tuple[Kind, ...] = ("resource", "template")
    for kind in kinds:
        if text.startswith(f"{kind}:"):
            upstream, colon, name = text[len(kind) + 1 :].partition(":")
            return (kind, upstream, name) if upstream and colon and name else None
    kind_: Kind = "tool"
    if text.startswith("prompt:"):
        kind_, text = "prompt", text[len("prompt:") :]
    upstream, dot, name = text.partition(".")
    return (kind_, upstream, name) if upstream and dot and name else None


@dataclass(frozen=True, slots=True)
class Pin:
    """One upstream item's pin, as stored.

    Attributes:
        upstream: the upstream's name in ``gateway.yaml``.
        tool: the item's name at the upstream (a tool's or prompt's name, a resource's URI, a
            template's URI template).
        hash: the approved definition's hash; empty for a ``new`` item awaiting its first approval.
        definition: the approved definition's text (redacted); empty for a ``new`` item.
        presented_hash: the hash of a different definition the upstream presents now, else empty.
        presented_definition: that definition's text (redacted), else empty.
        pinned_at: when the approved definition was pinned or approved (seconds since the epoch).
        changed_at: when the presented definition was first seen, or None.
        kind: what the item is.
        version: the format of ``hash`` (``PIN_VERSION``, or 1 for a pin taken before format 2).
    """

    upstream: str
    tool: str
    hash: str
    definition: str
    presented_hash: str = ""
    presented_definition: str = ""
    pinned_at: float = 0.0
    changed_at: float | None = None
    kind: Kind = "tool"
    version: int = PIN_VERSION

    @property
    def name(self) -> str:
        """The name the CLI takes (``pin_name``)."""
        return pin_name(self.kind, self.upstream, self.tool)

    @property
    def status(self) -> PinStatus:
        if not self.hash:
            return "new"
        return "changed" if self.presented_hash and self.presented_hash != self.hash else "pinned"


class PinStore(Protocol):
    """Durable pins, shared by a running gateway and the admin CLI.

    ``generation`` changes whenever any pin is written, so a reader can tell cheaply whether to re-read.
    """

    def get(self, upstream: str, tool: str, kind: Kind = "tool") -> Pin | None: ...

    def all(self) -> list[Pin]: ...

    def was_listed(self, upstream: str, kind: Kind) -> bool:
        """Whether ``upstream``'s items of ``kind`` were ever listed (so it is past trust-on-first-use)."""
        ...

    def mark_listed(self, upstream: str, kind: Kind) -> None:
        """Record that ``upstream``'s items of ``kind`` have been listed (even if there were none)."""
        ...

    def pin(self, upstream: str, tool: str, hash: str, definition: str, kind: Kind = "tool") -> None:
        """Pin a first-seen item (the presented definition becomes the approved one)."""
        ...

    def upgrade(
        self, upstream: str, tool: str, kind: Kind, old_hash: str, hash: str, definition: str
    ) -> None:
        """Re-pin a format-1 pin whose covered fields are unchanged, if it still has ``old_hash``."""
        ...

    def present(self, upstream: str, tool: str, hash: str, definition: str, kind: Kind = "tool") -> None:
        """Record a definition the upstream presents that differs from the pin (or awaits approval)."""
        ...

    def clear_presented(self, upstream: str, tool: str, kind: Kind = "tool") -> None:
        """The upstream presents the approved definition again: forget the differing one."""
        ...

    def approve(
        self, upstream: str, tool: str, *, kind: Kind = "tool", expected_hash: str | None = None
    ) -> Pin:
        """Make the presented definition the approved one. Raises ``PinError``."""
        ...

    def generation(self) -> int: ...

    def close(self) -> None: ...
