"""``PinGuard``: applies tool pins to every listing of every upstream, and answers "is it blocked?".

Each upstream connection hands its freshly listed tools to ``review`` (at connect, on
``notifications/tools/list_changed``, and on its periodic re-list) *before* it publishes them. For
each tool the guard compares the definition's hash with the pin:

- no pin: pin it (``tool_pinned`` audited once). With ``new_tools: approve``, a tool that appears on
  an upstream that already has pins is instead blocked until approved; an upstream's first listing
  is always pinned (trust on first use);
- same hash: fine; if the tool was blocked and the upstream went back to the approved definition,
  it is unblocked (audited as ``tool_changed``/``reverted``);
- different hash: blocked for every agent, at once, then ``tool_changed``/``blocked`` is audited
  once per distinct presented definition, with a redacted unified diff.

The hot path never reads the store: ``Gateway`` filters the catalog by the in-memory blocked set and
asks ``is_blocked`` only for names in it. Only while something is blocked does ``refresh`` read one
generation counter, and re-reads pins only when an approval (``mcp-gateway upstreams approve``, in
another process) has changed it, so an approval takes effect without a restart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import anyio

from mcp_gateway.audit.log import AuditLog
from mcp_gateway.errors import AuditUnavailable
from mcp_gateway.pins.model import Pin, PinStore, definition_diff, definition_hash, definition_text
from mcp_gateway.redact import Redactor
from mcp_gateway.types import AuditEvent, ToolSpec

logger = logging.getLogger(__name__)

NewTools = Literal["auto", "approve"]

# An upstream controls the size of its descriptions; keep one audit record bounded.
_MAX_DIFF_CHARS = 32_768


@dataclass(frozen=True, slots=True)
class Blocked:
    """A tool the gateway refuses: what the upstream presents and why it is not approved."""

    upstream: str
    tool: str
    presented_hash: str
    reason: Literal["changed", "new"]


def approval_hint(name: str, reason: Literal["changed", "new"] = "changed") -> str:
    """The refusal an agent sees for a blocked tool; it says what an admin must do."""
    what = "changed since it was approved" if reason == "changed" else "is new and not approved yet"
    return f"tool `{name}` {what}; an admin must run `mcp-gateway upstreams approve {name}`"


def _bounded(diff: str) -> str:
    if len(diff) <= _MAX_DIFF_CHARS:
        return diff
    return diff[:_MAX_DIFF_CHARS] + f"\n... diff truncated ({len(diff)} characters in all)\n"


class PinGuard:
    """Pins upstream tool definitions and blocks tools whose definitions changed.

    Args:
        store: where pins live (shared with the admin CLI).
        audit: the audit log for ``tool_pinned`` and ``tool_changed`` records.
        redactor: the current redactor; presented definitions may echo secrets, so every stored
            definition and every diff goes through it.
        new_tools: ``auto`` pins tools that appear later on first sight; ``approve`` blocks them
            until an admin approves (an upstream's very first listing is pinned either way).
    """

    def __init__(
        self,
        store: PinStore,
        audit: AuditLog,
        redactor: Callable[[], Redactor],
        *,
        new_tools: NewTools = "auto",
    ) -> None:
        self.store = store
        self._audit = audit
        self._redactor = redactor
        self.new_tools = new_tools
        self._blocked: dict[str, Blocked] = {}
        self._generation: int | None = None
        self._lock = anyio.Lock()

    @property
    def blocked(self) -> Mapping[str, Blocked]:
        """The blocked tools by public name (``upstream.tool``); read-only view, no store access."""
        return self._blocked

    def is_blocked(self, name: str) -> bool:
        """Whether calls to ``name`` must be refused; reads the store only if ``name`` is blocked."""
        if name not in self._blocked:
            return False
        self.refresh()
        return name in self._blocked

    def refresh(self) -> None:
        """Unblock tools an admin approved since the last look. No store access when nothing is blocked."""
        if not self._blocked:
            return
        generation = self.store.generation()
        if generation == self._generation:
            return
        self._generation = generation
        for name, entry in list(self._blocked.items()):
            pin = self.store.get(entry.upstream, entry.tool)
            if pin is not None and pin.hash == entry.presented_hash:
                del self._blocked[name]
                logger.info("tool %s approved; unblocked", name)

    async def review(self, upstream: str, tools: Mapping[str, ToolSpec]) -> None:
        """Check a fresh listing of ``upstream`` against the pins; block, pin and audit as needed.

        Blocks take effect before anything is awaited. Pins and presented definitions are written
        only after their audit records are durable, so a failed audit is retried at the next review.

        Args:
            upstream: the upstream's name.
            tools: its tools by public name, as the connection is about to publish them.

        Raises:
            sqlite3.Error: the pin store could not be written (the blocks stay in force).
        """
        async with self._lock:
            events, writes = self._decide(upstream, tools)
            if events:
                try:
                    await self._audit.append_many(events)
                except AuditUnavailable as exc:
                    logger.error("audit unavailable while recording pins of upstream %s: %s", upstream, exc)
                    return
            if writes:

                def write_all() -> None:
                    for write in writes:
                        write()

                await anyio.to_thread.run_sync(write_all)

    def _decide(
        self, upstream: str, tools: Mapping[str, ToolSpec]
    ) -> tuple[list[AuditEvent], list[Callable[[], None]]]:
        redactor = self._redactor()
        trust_on_first_use = self.new_tools == "auto" or not self.store.has_pins(upstream)
        events: list[AuditEvent] = []
        writes: list[Callable[[], None]] = []
        for name in [n for n, b in self._blocked.items() if b.upstream == upstream and n not in tools]:
            del self._blocked[name]  # removed upstream: it just disappears
        for name, spec in tools.items():
            # A malicious upstream can put a secret in a tool's *name*: everything recorded (audit
            # records, the pin store) uses the scrubbed name; only the in-memory block set is keyed
            # by the name the catalog uses.
            tool = redactor.scrub_text(spec.upstream_tool)
            shown = redactor.scrub_text(name)
            raw: dict[str, Any] = {**spec.definition, "name": spec.upstream_tool}
            new_hash = definition_hash(raw)
            text = redactor.scrub_text(definition_text(raw))
            pin = self.store.get(upstream, tool)
            facts = {"upstream": upstream, "tool": tool}
            if pin is None or not pin.hash:
                if trust_on_first_use:
                    self._blocked.pop(name, None)
                    detail = {**facts, "hash": new_hash}
                    events.append(AuditEvent(kind="tool_pinned", tool=shown, status="pinned", detail=detail))
                    writes.append(partial(self.store.pin, upstream, tool, new_hash, text))
                    continue
                self._blocked[name] = Blocked(upstream, tool, new_hash, "new")
                if pin is None or pin.presented_hash != new_hash:
                    events.append(self._changed_event(shown, facts, pin, new_hash, text, redactor, "new"))
                    writes.append(partial(self.store.present, upstream, tool, new_hash, text))
                continue
            if pin.hash == new_hash:
                if self._blocked.pop(name, None) is not None or pin.presented_hash:
                    events.append(
                        AuditEvent(
                            kind="tool_changed",
                            tool=shown,
                            status="reverted",
                            detail={**facts, "old_hash": pin.presented_hash, "new_hash": new_hash},
                        )
                    )
                    writes.append(partial(self.store.clear_presented, upstream, tool))
                continue
            self._blocked[name] = Blocked(upstream, tool, new_hash, "changed")
            if pin.presented_hash != new_hash:
                # Once per distinct presented definition: a reconnect or restart that sees the same
                # change again keeps it blocked without a second record.
                events.append(self._changed_event(shown, facts, pin, new_hash, text, redactor, "changed"))
                writes.append(partial(self.store.present, upstream, tool, new_hash, text))
                logger.warning("tool %s changed its definition since it was approved; blocked", shown)
        return events, writes

    @staticmethod
    def _changed_event(
        name: str,
        facts: dict[str, str],
        pin: Pin | None,
        new_hash: str,
        text: str,
        redactor: Redactor,
        change: Literal["changed", "new"],
    ) -> AuditEvent:
        old_text = pin.definition if pin is not None else ""
        # Both texts were redacted when made; scrub the diff again in case the secrets changed since.
        diff = redactor.scrub_text(definition_diff(old_text, text, label=name))
        return AuditEvent(
            kind="tool_changed",
            tool=name,
            status="blocked",
            detail={
                **facts,
                "change": change,
                "old_hash": pin.hash if pin is not None else "",
                "new_hash": new_hash,
                "diff": _bounded(diff),
            },
        )
