"""``PinGuard``: applies pins to every listing of every upstream, and answers "may this be used?".

Each upstream connection hands its freshly listed tools to ``review`` (at connect, on
``notifications/tools/list_changed``, on its periodic re-list, and before a call when the last review
is older than ``recheck_seconds``) *before* it publishes them; prompts, resources and resource
templates go through ``review_listing`` each time they are listed. For each item the guard compares
the definition's hash (every field an agent sees, ``model.py``) with the pin:

- no pin: pin it (``<kind>_pinned`` audited once). With ``new_tools: approve`` (the default), an item
  that appears on an upstream whose items of that kind were listed before is instead blocked until
  approved; the first listing of each kind is pinned (trust on first use). Concrete resources follow
  ``new_resources`` (default ``auto``: they come and go with the data behind them);
- same hash: fine; if the item was blocked and the upstream went back to the approved definition,
  it is unblocked (audited as ``<kind>_changed``/``reverted``);
- a format-1 pin whose covered fields are unchanged: re-pinned in format 2 (``pin_upgraded``);
- different hash: blocked for every agent, at once, then ``<kind>_changed``/``blocked`` is audited
  once per distinct presented definition, with the names of the changed fields and a redacted diff.

``check`` is the pins step of the governed skeleton: it re-lists the target's upstream first if its
listing is not fresh (``fresh.py``), then refuses a blocked target. The hot path reads no store: only
while something is blocked does ``refresh`` read one generation counter, and re-reads pins only when
an approval (``mcp-gateway upstreams approve``, in another process) has changed it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import anyio

from mcp_gateway.audit.log import AuditLog
from mcp_gateway.errors import AuditUnavailable, CallRefused, PinRecheckFailed, ToolDefinitionChanged
from mcp_gateway.pins.events import (
    ID_FIELD,
    NOUN,
    PART,
    Blocked,
    approval_hint,
    changed_event,
    template_pattern,
)
from mcp_gateway.pins.fresh import Family, Freshness, Recheck
from mcp_gateway.pins.model import (
    LEGACY_FIELDS,
    PIN_VERSION,
    Kind,
    PinStore,
    definition_hash,
    definition_text,
    pin_name,
    pinned_definition,
)
from mcp_gateway.redact import Redactor
from mcp_gateway.types import AuditEvent, ToolSpec

logger = logging.getLogger(__name__)

NewItems = Literal["auto", "approve"]
NewTools = NewItems


@dataclass(frozen=True, slots=True)
class _Entry:
    key: str  # what the governed skeleton calls the target
    name: str  # the item's name at the upstream
    raw: Mapping[str, Any]


class PinGuard:
    """Pins upstream definitions and blocks items whose definitions changed.

    Args:
        store: where pins live (shared with the admin CLI).
        audit: the audit log for ``*_pinned``, ``*_changed`` and ``pin_upgraded`` records.
        redactor: the current redactor; presented definitions may echo secrets, so every stored
            definition and every diff goes through it.
        new_tools: tools, prompts and resource templates that appear later: ``approve`` blocks them
            until an admin approves, ``auto`` pins them on first sight.
        new_resources: the same for concrete resources.
        recheck_seconds: how old a reviewed listing may be when a call uses one of its items before
            the call re-lists first (0: always; None: never).
        clock: a monotonic time source.
    """

    def __init__(
        self,
        store: PinStore,
        audit: AuditLog,
        redactor: Callable[[], Redactor],
        *,
        new_tools: NewItems = "approve",
        new_resources: NewItems = "auto",
        recheck_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self._audit = audit
        self._redactor = redactor
        self.new_tools = new_tools
        self.new_resources = new_resources
        self.freshness = Freshness(recheck_seconds, clock)
        self._blocked: dict[str, Blocked] = {}
        self._owners: dict[str, tuple[str, Family]] = {}  # tools by public name
        self._prefixes: dict[str, str] = {}
        self._approved: dict[tuple[Kind, str, str], str] = {}
        self._listed: set[tuple[str, Kind]] = set()  # known to be past trust-on-first-use
        self._generation: int | None = None
        self._lock = anyio.Lock()

    @property
    def blocked(self) -> Mapping[str, Blocked]:
        """The blocked items by target (``up.tool``, ``prompt:up.name``, ``resource:up:URI``,
        ``template:up:TEMPLATE``); read-only view, no store access."""
        return self._blocked

    def is_blocked(self, name: str) -> bool:
        """Whether calls to ``name`` must be refused; reads the store only if ``name`` is blocked."""
        if name not in self._blocked:
            return False
        self.refresh()
        return name in self._blocked

    def refresh(self) -> None:
        """Unblock items an admin approved since the last look. No store access when nothing is blocked."""
        if not self._blocked:
            return
        generation = self.store.generation()
        if generation == self._generation:
            return
        self._generation = generation
        for name, entry in list(self._blocked.items()):
            pin = self.store.get(entry.upstream, entry.tool, entry.kind)
            if pin is not None and pin.hash == entry.presented_hash:
                del self._blocked[name]
                logger.info("%s approved; unblocked", pin.name)

    # --- the pins step --------------------------------------------------------------------------

    def attach(self, upstream: str, prefix: str, recheck: Recheck) -> None:
        """Register how to re-list ``upstream`` (whose prompts are ``<prefix><name>``) before a call;
        its connection does this."""
        self._prefixes[upstream] = prefix
        self.freshness.attach(upstream, recheck)

    def stale(self, upstream: str, family: Family) -> None:
        """The upstream announced a change of ``family``: the next call to one of its items re-lists."""
        self.freshness.stale(upstream, family)

    def now(self) -> float:
        return self.freshness.now()

    async def check(self, target: str, shown: str) -> CallRefused | None:
        """The refusal for a call to ``target`` (as the skeleton names it), or None if it may proceed.

        Re-lists the target's upstream first when its listing is not fresh; a re-list that fails
        refuses the call (it must not fail open).

        Args:
            target: the exchange's target (``up.tool``, ``prompt:up.name``, ``resource:up:URI``,
                ``completion:...``).
            shown: the target as a refusal may name it (scrubbed).
        """
        key = target.removeprefix("completion:")
        owner = self._owner(key)
        # `fresh` first: the common answer needs no coroutine (`ensure` asks it again under its lock).
        if owner is not None and not self.freshness.fresh(*owner):
            try:
                await self.freshness.ensure(*owner)
            except Exception as exc:
                logger.warning("re-checking `%s` against its pin failed: %s", shown, type(exc).__name__)
                return PinRecheckFailed(
                    f"`{shown}` could not be re-checked against its approved definition; try again later"
                )
        entry = self._find(key) if self._blocked else None
        if entry is None:
            return None
        label = shown.removeprefix("completion:")
        if entry.kind == "prompt":
            label = label.removeprefix("prompt:")
        elif entry.kind != "tool":
            label = label.split(":", 2)[-1]
        return ToolDefinitionChanged(
            approval_hint(label, entry.reason, noun=NOUN[entry.kind], pin=entry.name)
        )

    def _owner(self, key: str) -> tuple[str, Family] | None:
        """The upstream and listing a target's definition comes from, if an upstream's."""
        if key.startswith("resource:"):
            return key.split(":", 2)[1], "resources"
        if key.startswith("prompt:"):
            name = key[len("prompt:") :]
            matches = [up for up, prefix in self._prefixes.items() if name.startswith(prefix)]
            best = max(matches, key=lambda up: len(self._prefixes[up]), default=None)
            return (best, "prompts") if best is not None else None
        return self._owners.get(key)

    def _find(self, key: str) -> Blocked | None:
        if not self._blocked:
            return None
        if self.is_blocked(key):
            return self._blocked[key]
        if key.startswith("resource:"):
            _, upstream, uri = key.split(":", 2)
            for name, entry in list(self._blocked.items()):
                if entry.kind == "template" and entry.upstream == upstream and self.is_blocked(name):
                    if entry.tool == uri or (entry.pattern is not None and entry.pattern.match(uri)):
                        return entry
        return None

    # --- reviews --------------------------------------------------------------------------------

    async def review(
        self, upstream: str, tools: Mapping[str, ToolSpec], *, started: float | None = None
    ) -> None:
        """Check a fresh listing of ``upstream``'s tools against the pins; block, pin and audit as needed.

        Blocks take effect before anything is awaited. Pins and presented definitions are written
        only after their audit records are durable, so a failed audit is retried at the next review.

        Args:
            upstream: the upstream's name.
            tools: its tools by public name, as the connection is about to publish them.
            started: when the listing's request was sent (``now()``); None: now.

        Raises:
            sqlite3.Error: the pin store could not be written (the blocks stay in force).
        """
        entries = [
            _Entry(name, spec.upstream_tool, {**spec.definition, "name": spec.upstream_tool})
            for name, spec in tools.items()
        ]
        await self._review(upstream, "tool", entries, started)

    async def review_listing(
        self,
        upstream: str,
        kind: Literal["prompt", "resource", "template"],
        prefix: str,
        items: Sequence[Mapping[str, Any]],
        *,
        started: float | None = None,
    ) -> frozenset[str]:
        """Review a fresh listing of ``upstream``'s prompts, resources or resource templates.

        Args:
            upstream: the upstream's name.
            kind: what was listed.
            prefix: the upstream's public prefix (prompts are named ``<prefix><name>``).
            items: the listed items as JSON-ready dicts, with the upstream's own names.
            started: when the listing's request was sent (``now()``); None: now.

        Returns:
            The names (prompt names, URIs, URI templates) of the listed items that are blocked.

        Raises:
            sqlite3.Error: the pin store could not be written (the blocks stay in force).
        """
        field = ID_FIELD[kind]
        entries: list[_Entry] = []
        for item in items:
            name = str(item.get(field, ""))
            if kind == "prompt":
                key = f"prompt:{prefix}{name}"
            elif kind == "resource":
                key = f"resource:{upstream}:{name}"
            else:
                key = f"template:{upstream}:{name}"
            entries.append(_Entry(key, name, item))
        await self._review(upstream, kind, entries, started)
        return frozenset(e.name for e in entries if e.key in self._blocked)

    async def _review(self, upstream: str, kind: Kind, entries: list[_Entry], started: float | None) -> None:
        started = self.now() if started is None else started
        async with self._lock:
            if kind == "tool":
                for key in [k for k, o in self._owners.items() if o[0] == upstream]:
                    del self._owners[key]
                self._owners.update((e.key, (upstream, "tools")) for e in entries)
            events, writes = self._decide(upstream, kind, entries)
            # After the blocks above are in force, before any await: the listing counts as reviewed.
            self.freshness.reviewed(upstream, PART[kind], started)
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
        self, upstream: str, kind: Kind, entries: list[_Entry]
    ) -> tuple[list[AuditEvent], list[Callable[[], None]]]:
        store = self.store
        redactor = self._redactor()
        listed = {e.key for e in entries}
        for key in [k for k, b in self._blocked.items() if b.upstream == upstream and b.kind == kind]:
            if key not in listed:
                del self._blocked[key]  # removed upstream: it just disappears
        policy = self.new_resources if kind == "resource" else self.new_tools
        first_listing = (upstream, kind) not in self._listed and not store.was_listed(upstream, kind)
        trust_on_first_use = policy == "auto" or first_listing
        events: list[AuditEvent] = []
        writes: list[Callable[[], None]] = []
        for entry in entries:
            new_hash = definition_hash(entry.raw, kind)
            cache_key = (kind, upstream, entry.name)
            if self._approved.get(cache_key) == new_hash and entry.key not in self._blocked:
                continue  # unchanged since it was last confirmed: no store read
            # A malicious upstream can put a secret in a *name*: everything recorded (audit records,
            # the pin store) uses the scrubbed name; only the in-memory block set uses the raw key.
            name = redactor.scrub_text(entry.name)
            shown = redactor.scrub_text(pin_name(kind, upstream, entry.name))
            text = redactor.scrub_text(definition_text(entry.raw, kind))
            pin = store.get(upstream, name, kind)
            facts: dict[str, Any] = {"upstream": upstream, "tool": name, "kind": kind}
            if pin is None or not pin.hash:
                if trust_on_first_use:
                    self._blocked.pop(entry.key, None)
                    self._approved[cache_key] = new_hash
                    detail = {**facts, "hash": new_hash}
                    events.append(
                        AuditEvent(kind=f"{kind}_pinned", tool=shown, status="pinned", detail=detail)
                    )
                    writes.append(partial(store.pin, upstream, name, new_hash, text, kind))
                    continue
                self._block(entry, upstream, name, kind, new_hash, "new")
                if pin is None or pin.presented_hash != new_hash:
                    events.append(changed_event(shown, facts, pin, new_hash, text, redactor, "new"))
                    writes.append(partial(store.present, upstream, name, new_hash, text, kind))
                continue
            if pin.version < PIN_VERSION and definition_hash(entry.raw, kind, pin.version) == pin.hash:
                # The fields the old format covered are unchanged: cover the rest from now on.
                self._blocked.pop(entry.key, None)
                self._approved[cache_key] = new_hash
                added = sorted(set(pinned_definition(entry.raw, kind)) - set(LEGACY_FIELDS))
                detail = {**facts, "old_hash": pin.hash, "new_hash": new_hash, "fields_now_pinned": added}
                events.append(AuditEvent(kind="pin_upgraded", tool=shown, status="pinned", detail=detail))
                writes.append(partial(store.upgrade, upstream, name, kind, pin.hash, new_hash, text))
                continue
            if pin.hash == new_hash:
                self._approved[cache_key] = new_hash
                if self._blocked.pop(entry.key, None) is not None or pin.presented_hash:
                    detail = {**facts, "old_hash": pin.presented_hash, "new_hash": new_hash}
                    events.append(
                        AuditEvent(kind=f"{kind}_changed", tool=shown, status="reverted", detail=detail)
                    )
                    writes.append(partial(store.clear_presented, upstream, name, kind))
                continue
            self._approved.pop(cache_key, None)
            self._block(entry, upstream, name, kind, new_hash, "changed")
            if pin.presented_hash != new_hash:
                # Once per distinct presented definition: a reconnect or restart that sees the same
                # change again keeps it blocked without a second record.
                events.append(changed_event(shown, facts, pin, new_hash, text, redactor, "changed"))
                writes.append(partial(store.present, upstream, name, new_hash, text, kind))
                logger.warning("%s changed its definition since it was approved; blocked", shown)
        if first_listing:
            writes.append(partial(store.mark_listed, upstream, kind))
        else:
            self._listed.add((upstream, kind))
        return events, writes

    def _block(
        self,
        entry: _Entry,
        upstream: str,
        name: str,
        kind: Kind,
        new_hash: str,
        reason: Literal["changed", "new"],
    ) -> None:
        pattern = template_pattern(entry.name) if kind == "template" else None
        self._blocked[entry.key] = Blocked(upstream, name, new_hash, reason, kind, pattern)
