"""How fresh each upstream's reviewed listings are, and the re-check a call waits for when they are not.

A listing is *fresh* for ``bound`` seconds after the request that fetched it was sent, unless the
upstream announced a change (``notifications/*/list_changed``, or an event on a 2026-07-28
``subscriptions/listen`` stream) after that request was sent. A call to an item of an upstream whose
listing is not fresh re-lists first (``ensure``); concurrent calls share one re-list per upstream and
family. ``bound`` None turns the call-time re-check off (change notifications and the periodic re-list
still review in the background).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Literal

import anyio

Family = Literal["tools", "prompts", "resources"]
"""What one re-list covers (``resources``: resources and resource templates)."""

Part = Literal["tools", "prompts", "resources", "templates"]
"""What one reviewed listing covers; a family is fresh when each of its parts is."""

_PARTS: dict[Family, tuple[Part, ...]] = {
    "tools": ("tools",),
    "prompts": ("prompts",),
    "resources": ("resources", "templates"),
}

Recheck = Callable[[Family], Awaitable[None]]
"""Re-list one family of an upstream and have it reviewed; returns without listing if disconnected."""


class Freshness:
    """When each (upstream, family) was last reviewed and last announced changed.

    Args:
        bound: seconds a reviewed listing stays fresh; 0: re-list before every call; None: never.
        clock: a monotonic time source.
    """

    def __init__(self, bound: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.bound = bound
        self.now = clock
        self._checked: dict[tuple[str, Part], float] = {}
        self._stale_at: dict[tuple[str, Part], float] = {}
        self._rechecks: dict[str, Recheck] = {}
        self._locks: dict[tuple[str, Family], anyio.Lock] = {}

    def attach(self, upstream: str, recheck: Recheck) -> None:
        """Register how to re-list ``upstream`` (its connection does this once)."""
        self._rechecks[upstream] = recheck

    def reviewed(self, upstream: str, part: Part, started: float) -> None:
        """A listing whose request was sent at ``started`` (``now()``) has been reviewed."""
        key = (upstream, part)
        self._checked[key] = max(self._checked.get(key, -math.inf), started)

    def stale(self, upstream: str, family: Family) -> None:
        """The upstream announced a change: no listing fetched before now counts as fresh."""
        now = self.now()
        for part in _PARTS[family]:
            self._stale_at[(upstream, part)] = now

    def fresh(self, upstream: str, family: Family) -> bool:
        if self.bound is None:
            return False
        now = self.now()
        for part in _PARTS[family]:
            key = (upstream, part)
            checked = self._checked.get(key, -math.inf)
            if checked <= self._stale_at.get(key, -math.inf) or now - checked > self.bound:
                return False
        return True

    async def ensure(self, upstream: str, family: Family) -> None:
        """Re-list ``upstream``'s ``family`` unless its listing is fresh (one re-list at a time).

        Raises:
            Exception: whatever the re-list raised (the caller refuses the call: no fail-open).
        """
        if self.bound is None or self.fresh(upstream, family):
            return
        recheck = self._rechecks.get(upstream)
        if recheck is None:
            return
        lock = self._locks.setdefault((upstream, family), anyio.Lock())
        async with lock:
            if not self.fresh(upstream, family):  # another call's re-list may have just finished
                await recheck(family)
