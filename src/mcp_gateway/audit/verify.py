"""The pure check of a tamper-evident audit log: ``verify`` and the problems it reports.

``verify`` walks a log and says not only *that* it was altered but *how* and *where*: a record edited
in place (even if the editor recomputed its hash), deleted, forged and inserted, or stored out of
order. Removing the newest records leaves a shorter valid chain; that is only caught against a head
kept elsewhere (``expected_head``), as with CloudTrail's digest files.

No I/O happens here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Literal

from mcp_gateway.audit.record import GENESIS, content_hash
from mcp_gateway.types import AuditRecord

ProblemKind = Literal[
    "modified",
    "deleted",
    "inserted",
    "reordered",
    "truncated",
    "forged_checkpoint",
    "missing_checkpoint",
    "forged_seal",
    "unauthenticated",
]
"""``forged_checkpoint`` and ``missing_checkpoint`` come from checking signed checkpoints
(``checkpoint.verify_with_checkpoints``); ``forged_seal`` and ``unauthenticated`` from checking the
records' MACs (``seal.authenticate``)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Problem:
    """One way the log differs from an untouched chain.

    Attributes:
        seq: the seq the problem is about: the record's place in the chain (``modified``,
            ``reordered``), the first missing seq (``deleted``, ``truncated``), or the seq a
            forged record claims (``inserted``).
        kind: what happened.
        message: lowercase, names the seq.
        end: the last seq of a range the problem spans (``unauthenticated``), else None.
    """

    seq: int
    kind: ProblemKind
    message: str
    end: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of ``verify``: ``ok`` is true exactly when ``problems`` is empty."""

    ok: bool
    checked: int
    problems: list[Problem]


def verify(
    records: Iterable[AuditRecord],
    *,
    expected_head: tuple[int, str] | None = None,
    anchor: tuple[int, str] = (0, GENESIS),
) -> VerifyReport:
    """Check a log (records in stored order) and classify every alteration found.

    Args:
        records: the whole log, or a slice of it starting right after ``anchor``.
        expected_head: ``(seq, hash)`` of a record the log is known to contain (kept elsewhere);
            catches removal of the newest records (``truncated``) and a rewritten newest record.
        anchor: ``(seq, hash)`` of the record before the first one given; the default means the
            log must start at seq 1.

    A single alteration is reported once, as its kind, at its seq; several alterations are each
    reported, though interacting ones may be described differently than they were made.
    """
    return _Verifier(list(records), expected_head, anchor).run()


@dataclasses.dataclass(frozen=True, slots=True)
class _Link:
    """The last record accepted into the chain walk."""

    seq: int
    hashes: frozenset[str]  # what the next record's prev_hash may be (stored and content hash)
    pos: int | None = None  # None for the anchor
    clean: bool = False  # accepted without any problem
    lenient: bool = False  # its hash was recomputed after an edit: the next link is known broken


class _Verifier:
    def __init__(
        self, recs: list[AuditRecord], head: tuple[int, str] | None, anchor: tuple[int, str]
    ) -> None:
        self.recs, self.head, self.anchor = recs, head, anchor
        n = len(recs)
        self.computed = [content_hash(r) for r in recs]
        self.by_hash: dict[str, int] = {}
        for i, r in enumerate(recs):
            self.by_hash.setdefault(r.hash, i)
        # seq[i]: the seq record i really has. A record whose hash only fits another seq had its seq
        # rewritten: that is how rows are reordered in a seq-keyed table.
        self.seq: list[int] = [r.seq for r in recs]
        self.valid = [self.computed[i] == r.hash for i, r in enumerate(recs)]
        self.renumbered = [False] * n
        for i in range(n):
            self._resolve_seq(i)
        self.at_seq: dict[int, list[int]] = {}
        for i in range(n):
            self.at_seq.setdefault(self.seq[i], []).append(i)
        self.visited = [False] * n
        self.displaced: dict[int, int] = {}  # seq -> position of a record stored too early
        self.problems: list[Problem] = []
        self.flagged: set[int] = set()
        self.prev = _Link(anchor[0], frozenset({anchor[1]}))
        self.before_prev: _Link | None = None
        self.head_hashes = self.prev.hashes if head is not None and head[0] == anchor[0] else None

    def _resolve_seq(self, i: int) -> None:
        # Walk back along prev_hash links (iteratively; links may form loops in forged data).
        path: list[int] = []
        j: int | None = i
        while j is not None and not self.valid[j] and not self.renumbered[j] and j not in path:
            path.append(j)
            j = self.by_hash.get(self.recs[j].prev_hash)
        for k in reversed(path):
            r = self.recs[k]
            parent = self.by_hash.get(r.prev_hash)
            if r.prev_hash == self.anchor[1]:
                candidate = self.anchor[0] + 1
            elif parent is not None and parent != k:
                candidate = self.seq[parent] + 1
            else:
                continue
            if candidate != r.seq and content_hash(dataclasses.replace(r, seq=candidate)) == r.hash:
                self.seq[k], self.valid[k], self.renumbered[k] = candidate, True, True

    def run(self) -> VerifyReport:
        for p in range(len(self.recs)):
            if not self.visited[p]:
                self._advance_displaced()
                self.visited[p] = True
                self._step(p)
        self._advance_displaced()
        self._check_head()
        problems = sorted(self.problems, key=lambda problem: problem.seq)
        return VerifyReport(ok=not problems, checked=len(self.recs), problems=problems)

    def _report(self, seq: int, kind: ProblemKind, message: str) -> None:
        self.problems.append(Problem(seq, kind, message))
        if kind == "modified":
            self.flagged.add(seq)

    def _modified(self, seq: int, why: str) -> None:
        self._report(seq, "modified", f"record {seq} was modified: {why}")

    def _accept(self, pos: int, seq: int, *, clean: bool = True, lenient: bool = False) -> None:
        hashes = frozenset({self.recs[pos].hash, self.computed[pos]})
        self.visited[pos] = True
        self.before_prev, self.prev = self.prev, _Link(seq, hashes, pos, clean, lenient)
        if self.head is not None and seq == self.head[0]:
            self.head_hashes = hashes

    def _advance_displaced(self) -> None:
        while (pos := self.displaced.get(self.prev.seq + 1)) is not None and self._links(pos):
            del self.displaced[self.prev.seq + 1]
            self._accept(pos, self.seq[pos])

    def _links(self, pos: int) -> bool:
        return self.recs[pos].prev_hash in self.prev.hashes

    def _next(self, p: int) -> int | None:
        q = p + 1
        while q < len(self.recs) and self.visited[q]:
            q += 1
        return q if q < len(self.recs) else None

    def _later(self, p: int, seq: int) -> int | None:
        """An unvisited intact record stored after ``p`` that has ``seq`` and links to the chain."""
        for q in self.at_seq.get(seq, ()):
            if q > p and not self.visited[q] and self.valid[q] and self._links(q):
                return q
        return None

    def _head_says(self, pos: int) -> bool | None:
        """Whether the expected head confirms record ``pos`` (None: it says nothing about it)."""
        if self.head is None or self.head[0] != self.seq[pos]:
            return None
        return self.head[1] == self.recs[pos].hash

    def _stored(self, pos: int) -> str:
        return f" (stored as seq {self.recs[pos].seq})" if self.renumbered[pos] else ""

    def _step(self, p: int) -> None:
        r, seq, valid, prev = self.recs[p], self.seq[p], self.valid[p], self.prev
        expected, links = prev.seq + 1, r.prev_hash in prev.hashes or prev.lenient
        if valid and seq == expected and links:
            self._accept(p, seq, clean=not self.renumbered[p])
            if self.renumbered[p]:
                self._modified(seq, f"its seq was changed to {r.seq}")
            return
        # The record the chain expects next is stored later, and this one belongs right after it.
        x = self._later(p, expected)
        if x is not None and valid and r.prev_hash == self.recs[x].hash and seq == expected + 1:
            adjacent = x == self._next(p) and not self.displaced
            self._report(expected, "reordered", f"record {expected} is stored out of order{self._stored(x)}")
            if adjacent:  # a swap of neighbours: both are out of place
                self._report(seq, "reordered", f"record {seq} is stored out of order{self._stored(p)}")
            self._accept(x, expected)
            self._accept(p, seq)
            return
        # This intact record belongs after one stored later: it was moved up.
        parent = self.by_hash.get(r.prev_hash)
        if valid and seq > expected and parent is not None and parent > p and not self.visited[parent]:
            if self.seq[parent] + 1 == seq:
                self._report(seq, "reordered", f"record {seq} is stored out of order{self._stored(p)}")
                self.displaced[seq] = p
                return
        # Without this record, the next one links to the chain: it was forged and inserted.
        q = self._next(p)
        if q is not None and self.valid[q] and self.seq[q] == expected and self._links(q):
            claim = f"a record claiming seq {r.seq}"
            self._report(r.seq, "inserted", f"{claim} was inserted after seq {prev.seq}")
            return
        # Two intact records claim the same predecessor: one of them is forged.
        if valid and prev.clean and self.before_prev is not None and prev.pos is not None:
            if seq == prev.seq and r.prev_hash in self.before_prev.hashes:
                if self._is_genuine(p):
                    forged = self.recs[prev.pos].seq
                    self._report(forged, "inserted", f"a record claiming seq {forged} was inserted")
                    self.prev = self.before_prev
                    self._accept(p, seq)
                else:
                    self._report(r.seq, "inserted", f"a record claiming seq {r.seq} was inserted")
                return
        if seq > expected and not links:
            gap = f"record {expected} is" if seq == expected + 1 else f"records {expected} to {seq - 1} are"
            self._report(expected, "deleted", f"{gap} missing")
            self._accept(p, seq, clean=valid)
            if not valid:
                self._modified(seq, "its hash does not match its content")
            return
        if not valid:
            claims = f" (it claims seq {r.seq})" if r.seq != expected else ""
            self._modified(expected, f"its hash does not match its content{claims}")
            self._accept(p, expected, clean=False)
        elif links:  # intact and linked, but the seq is wrong: the seq was edited, the hash recomputed
            self._modified(expected, f"it claims seq {seq}")
            self._accept(p, expected, clean=False, lenient=True)
        elif seq == expected:
            self._broken_link(p)
        else:  # an intact record from earlier in the chain, replayed
            self._report(seq, "inserted", f"a copy of record {seq} was inserted after seq {prev.seq}")

    def _is_genuine(self, p: int) -> bool:
        q = self._next(p)
        if q is not None:
            return self.recs[q].prev_hash == self.recs[p].hash
        return self._head_says(p) is True

    def _broken_link(self, p: int) -> None:
        """An intact record in the right place whose link to the previous record is broken."""
        seq, prev = self.seq[p], self.prev
        q = self._next(p)
        if q is not None:
            rewritten = self.recs[q].prev_hash != self.recs[p].hash
        else:
            rewritten = self._head_says(p) is False
        if prev.pos is None or rewritten or not prev.clean:
            # Its own prev_hash was edited and its hash recomputed; the next link breaks too.
            self._modified(seq, f"its link to record {prev.seq} is broken")
            self._accept(p, seq, clean=False, lenient=True)
        else:
            self._modified(prev.seq, f"its hash was recomputed; record {seq} no longer links to it")
            self._accept(p, seq)

    def _check_head(self) -> None:
        if self.head is None:
            return
        seq, expected_hash = self.head
        if self.prev.seq < seq:
            self._report(
                self.prev.seq + 1,
                "truncated",
                f"the log ends at seq {self.prev.seq} but the expected head is seq {seq}",
            )
        elif seq not in self.flagged and self.head_hashes and expected_hash not in self.head_hashes:
            self._modified(seq, "it does not match the expected head")
