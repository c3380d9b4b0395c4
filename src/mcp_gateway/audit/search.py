"""Audit search: the filters the console, the CLI and the SIEM export share, and keyset paging.

INTERFACE FIRST (being implemented this session): ``AuditSearch`` is the query; each audit sink
(SQLite, PostgreSQL) gets ``search(query) -> AuditPage``.
"""

from __future__ import annotations

from dataclasses import dataclass

from mcp_gateway.types import AuditRecord


@dataclass(frozen=True, slots=True)
class AuditSearch:
    """Which records, newest first.

    Attributes:
        agent, decision, status, kind, call_id: exact matches.
        tool: a glob (``data.*``, ``*.rerun_job``); exact when it holds no ``*``/``?``/``[``.
        since, until: epoch seconds, ``since <= ts < until``.
        text: free text, matched case-insensitively in the record's reasons (``detail``).
        before_seq: keyset cursor: only records with ``seq < before_seq`` (the previous page's last).
        after_seq: only records with ``seq > after_seq`` (live tail / export cursor).
        limit: page size (at most 500).
    """

    agent: str | None = None
    tool: str | None = None
    decision: str | None = None
    status: str | None = None
    kind: str | None = None
    call_id: str | None = None
    since: float | None = None
    until: float | None = None
    text: str | None = None
    before_seq: int | None = None
    after_seq: int | None = None
    limit: int = 50


@dataclass(frozen=True, slots=True)
class AuditPage:
    """One page: ``records`` newest first; ``next_before`` is the cursor for the next page (None: last)."""

    records: list[AuditRecord]
    next_before: int | None
