"""Tool-definition pinning, the pure core: what is pinned, its hash, and a readable diff.

An upstream MCP server can change a tool's description or schema after an admin has looked at it
(a "rug pull"): the new text reaches the model as instructions. The gateway therefore pins each
upstream tool on first sight to a SHA-256 over the canonical JSON of the fields a model reads, and
blocks the tool when a later listing presents anything else, until an admin approves the change.

Pinned fields: ``name``, ``title``, ``description``, ``inputSchema``, ``outputSchema`` and
``annotations``. ``title`` is not in MCP's list of what defines a tool's behaviour, but clients show
it to models in place of the name, so it can carry an injection as well as the description can.
``_meta``, ``icons`` and ``execution`` are not pinned: they carry nothing a model reads as
instructions, and upstreams may legitimately vary them between listings.

This module does no I/O. The store is ``pin_store.py``; the guard that applies pins is ``pin_guard.py``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from mcp_gateway.audit.record import canonical

PINNED_FIELDS = ("name", "title", "description", "inputSchema", "outputSchema", "annotations")
"""The keys of an MCP ``Tool`` (wire form, camelCase) that a pin covers."""

PinStatus = Literal["pinned", "changed", "new"]
"""``pinned``: the presented definition is the approved one. ``changed``: the upstream now presents a
different definition (blocked). ``new``: first seen while new tools need approval (blocked)."""


def pinned_definition(tool: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a tool definition a pin covers; absent and ``None`` fields are left out alike.

    Args:
        tool: an MCP ``Tool`` as a JSON-ready dict (``model_dump(by_alias=True, mode="json")``),
            with the name the upstream gave it.
    """
    return {key: tool[key] for key in PINNED_FIELDS if tool.get(key) is not None}


def definition_hash(tool: Mapping[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON of ``pinned_definition(tool)``.

    Key order does not matter; any change to a pinned field (a character of the description, a
    schema keyword, an annotation flag) does.

    Raises:
        TypeError: the definition holds something JSON cannot represent.
    """
    return hashlib.sha256(canonical(pinned_definition(tool))).hexdigest()


def definition_text(tool: Mapping[str, Any]) -> str:
    """The pinned definition as indented, key-sorted JSON: stable across listings, and diffable."""
    return json.dumps(pinned_definition(tool), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


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


@dataclass(frozen=True, slots=True)
class Pin:
    """One upstream tool's pin, as stored.

    Attributes:
        upstream: the upstream's name in ``gateway.yaml``.
        tool: the tool's name at the upstream.
        hash: the approved definition's hash; empty for a ``new`` tool awaiting its first approval.
        definition: the approved definition's text (redacted); empty for a ``new`` tool.
        presented_hash: the hash of a different definition the upstream presents now, else empty.
        presented_definition: that definition's text (redacted), else empty.
        pinned_at: when the approved definition was pinned or approved (seconds since the epoch).
        changed_at: when the presented definition was first seen, or None.
    """

    upstream: str
    tool: str
    hash: str
    definition: str
    presented_hash: str = ""
    presented_definition: str = ""
    pinned_at: float = 0.0
    changed_at: float | None = None

    @property
    def name(self) -> str:
        """The public name agents see: ``upstream.tool``."""
        return f"{self.upstream}.{self.tool}"

    @property
    def status(self) -> PinStatus:
        if not self.hash:
            return "new"
        return "changed" if self.presented_hash and self.presented_hash != self.hash else "pinned"


class PinStore(Protocol):
    """Durable pins, shared by a running gateway and the admin CLI.

    ``generation`` changes whenever any pin is written, so a reader can tell cheaply whether to re-read.
    """

    def get(self, upstream: str, tool: str) -> Pin | None: ...

    def all(self) -> list[Pin]: ...

    def has_pins(self, upstream: str) -> bool:
        """Whether any tool of ``upstream`` was ever pinned (so it is past trust-on-first-use)."""
        ...

    def pin(self, upstream: str, tool: str, hash: str, definition: str) -> None:
        """Pin a first-seen tool (the presented definition becomes the approved one)."""
        ...

    def present(self, upstream: str, tool: str, hash: str, definition: str) -> None:
        """Record a definition the upstream presents that differs from the pin (or awaits approval)."""
        ...

    def clear_presented(self, upstream: str, tool: str) -> None:
        """The upstream presents the approved definition again: forget the differing one."""
        ...

    def approve(self, upstream: str, tool: str, *, expected_hash: str | None = None) -> Pin:
        """Make the presented definition the approved one. Raises ``PinError``."""
        ...

    def generation(self) -> int: ...

    def close(self) -> None: ...
