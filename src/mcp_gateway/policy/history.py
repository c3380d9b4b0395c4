"""Policy history: every policy load (at start and on each reload, good or failed) and the files of each
version, so the console can list them, diff any two, and show the last failed reload with its problems.

A version is ``policy_version`` of its files (``version.py``): the same files give the same version on
every replica, so each version's files are stored once however many replicas load them; each *load*
is a row of its own saying when, where, by which replica and on what trigger. No I/O here: the store
is ``history_store.py``.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Literal, Protocol

from mcp_gateway.errors import PolicyError

__all__ = [
    "PolicyFiles",
    "PolicyHistoryError",
    "PolicyLoadEvent",
    "PolicyRecorder",
    "Trigger",
    "policy_diff",
]

Trigger = Literal["start", "watch", "sighup", "reload", "admin"]
"""What made the gateway (re)load its policy: its start, the file watcher, SIGHUP, an unspecified
reload (``PolicyHolder.reload`` called without saying), or an admin action."""


class PolicyHistoryError(PolicyError):
    """The policy history cannot answer (an unknown version, an unreadable store)."""


@dataclass(frozen=True, slots=True)
class PolicyFiles:
    """The files of one policy version, each ``(base name, text)`` in load order."""

    version: str
    files: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, version: str, sources: Sequence[tuple[str, str]]) -> PolicyFiles:
        """From ``load``'s ``(path, text)`` sources: paths cut to base names, as the version hashes them."""
        return cls(version, tuple((PurePath(name).name, text) for name, text in sources))


@dataclass(frozen=True, slots=True)
class PolicyLoadEvent:
    """One load of the policy, as recorded.

    Attributes:
        id: the row's number (0 before it is stored); higher is later.
        at: when (epoch seconds).
        ok: the files loaded and are now in force.
        version: the version in force after this load (on failure, still the previous one).
        previous: the version in force before ("" at start).
        path: the policy file or directory.
        trigger: what caused it (``Trigger``).
        replica: which gateway process (``host:pid``).
        problems: why it failed, each ``file:line: message`` (empty when ``ok``).
        files: the loaded files (None on failure, or when read back without them).
    """

    at: float
    ok: bool
    version: str
    previous: str
    path: str
    trigger: str
    replica: str
    problems: tuple[str, ...] = ()
    files: PolicyFiles | None = None
    id: int = 0


class PolicyRecorder(Protocol):
    """Where ``PolicyHolder`` reports each load (``SQLPolicyHistory``)."""

    def record(self, event: PolicyLoadEvent) -> None:
        """Store ``event`` durably. Raises ``GatewayError`` (logged by the caller: a load never fails)."""
        ...

    def close(self) -> None:
        """Release the store; idempotent."""
        ...


def policy_diff(old: PolicyFiles, new: PolicyFiles, *, context: int = 3) -> str:
    """A unified diff from ``old`` to ``new``, file by file (a file only on one side diffs against nothing).

    Headers name each file with its version (``a/<version>/<file>``, ``b/<version>/<file>``); the
    result is empty when the versions hold the same files.
    """
    before, after = dict(old.files), dict(new.files)
    names = [name for name, _ in old.files] + [name for name, _ in new.files if name not in before]
    out: list[str] = []
    for name in names:
        a, b = before.get(name), after.get(name)
        if a == b:
            continue
        out.extend(
            difflib.unified_diff(
                (a or "").splitlines(keepends=True),
                (b or "").splitlines(keepends=True),
                fromfile=f"a/{old.version}/{name}" if a is not None else "/dev/null",
                tofile=f"b/{new.version}/{name}" if b is not None else "/dev/null",
                n=context,
            )
        )
        if out and not out[-1].endswith("\n"):
            out[-1] += "\n\\ No newline at end of file\n"
    return "".join(out)
