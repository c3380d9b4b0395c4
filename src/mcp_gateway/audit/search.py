"""Audit search: the filters the console, the CLI and the SIEM export share, and keyset paging.

``AuditSearch`` is the query; each audit sink (SQLite, PostgreSQL) answers ``search(query)`` with an
``AuditPage`` through ``run_search``, and ``search_sql`` builds the one statement both run, so the two
stores cannot drift. No I/O here: the sinks pass in how to run a statement.

Paging is by keyset on ``seq``: a page never skips or repeats a record, however many are appended
while someone pages, and the n-th page costs what the first does. Each equality filter has an index
whose second column is ``seq`` (SQLite ``user_version`` 2, PostgreSQL audit migration 2), so "the
newest 50 denials" reads about 50 index entries, not the table; a time range uses the ``ts`` index.
Free text and tool globs with wildcards have no index to narrow them: such a page looks through at
most ``MAX_SCAN`` consecutive seqs and says where it stopped (``AuditPage.searched_to``).

Tool globs (``glob.py``) are escaped for each store's pattern language and always bound as
parameters: ``%``, ``_``, ``'`` and ``\\`` in a glob match only themselves.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from mcp_gateway.audit.glob import MAX_PATTERN, AuditSearchError, Dialect, parse_glob, tool_condition
from mcp_gateway.types import AuditRecord

__all__ = [
    "MAX_LIMIT",
    "MAX_SCAN",
    "AuditPage",
    "AuditSearch",
    "AuditSearchError",
    "SearchableSink",
    "page_of",
    "parse_glob",
    "run_search",
    "scans",
    "search_sql",
    "validate",
]

MAX_LIMIT = 500
"""The largest page a search returns."""
MAX_SCAN = 50_000
"""The most consecutive seqs one page of a query without an index to narrow it (free text, a tool
glob) looks through: its first page stays fast on any log, and paging on continues the search."""


@dataclass(frozen=True, slots=True)
class AuditSearch:
    """Which records, newest first.

    Attributes:
        agent, decision, status, kind, call_id: exact matches.
        tool: a glob (``data.*``, ``*.rerun_job``, ``db.[rw]*``); exact when it holds no
            ``*``/``?``/``[``. Case-sensitive; every other character matches only itself.
        since, until: epoch seconds, ``since <= ts < until``.
        text: free text, matched case-insensitively in the record's reasons (``detail``).
        before_seq: keyset cursor: only records with ``seq < before_seq`` (the previous page's last).
        after_seq: only records with ``seq > after_seq`` (live tail / export cursor).
        limit: page size (1 to ``MAX_LIMIT``).
        order: ``newest`` first (the console), or ``oldest`` first (reading forward from
            ``after_seq``: an export cursor, ``audit tail --follow``).
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
    order: Literal["newest", "oldest"] = "newest"


@dataclass(frozen=True, slots=True)
class AuditPage:
    """One page: ``records`` in the query's order.

    Attributes:
        records: newest first (``order="oldest"``: oldest first).
        next_before: newest first: the ``before_seq`` of the next page; None when this is the last.
        next_after: oldest first: the ``after_seq`` to continue from (the last seq of this page, or
            the query's ``after_seq`` when it is empty); a page shorter than ``limit`` means the
            reader has caught up, and a follower polls again from here. None when newest first.
        searched_to: set when a query that ``scans`` (free text, a tool glob) stopped at its
            window's end before the log's: newest first, records below this seq were not searched
            yet; oldest first, records above it. The cursor continues there; a page may then hold
            fewer than ``limit`` records (even none) though more matches follow.
    """

    records: list[AuditRecord]
    next_before: int | None
    next_after: int | None = None
    searched_to: int | None = None


class SearchableSink(Protocol):
    """An audit store that answers searches (both shipped stores do)."""

    def search(self, query: AuditSearch) -> AuditPage:
        """One page of the records matching ``query``. Raises ``AuditSearchError``, ``AuditError``."""
        ...


def validate(query: AuditSearch) -> None:
    """Refuse a query no store should run.

    Raises:
        AuditSearchError: naming the field.
    """
    if not 1 <= query.limit <= MAX_LIMIT:
        raise AuditSearchError(f"page size `{query.limit}` is not between 1 and {MAX_LIMIT}")
    for name in ("before_seq", "after_seq"):
        value = getattr(query, name)
        if value is not None and value < 0:
            raise AuditSearchError(f"{name} `{value}` is negative")
    if query.since is not None and query.until is not None and query.since > query.until:
        raise AuditSearchError("the time range ends before it starts")
    if query.text is not None and len(query.text) > MAX_PATTERN:
        raise AuditSearchError(f"search text is longer than {MAX_PATTERN} characters")
    if query.order not in ("newest", "oldest"):
        raise AuditSearchError(f"order `{query.order}` is neither `newest` nor `oldest`")


def search_sql(query: AuditSearch, columns: str, dialect: Dialect) -> tuple[str, list[Any]]:
    """The statement answering ``query`` (one row more than a page, to tell whether another follows).

    Args:
        query: the search.
        columns: the column list to select (trusted text).
        dialect: whose pattern syntax the tool glob becomes.

    Returns:
        SQL text with ``{audit}`` for the table and ``%s`` parameters, and the parameters.

    Raises:
        AuditSearchError: the query is invalid (``validate``, ``parse_glob``).
    """
    validate(query)
    where: list[str] = []
    params: list[Any] = []
    for column in ("agent", "decision", "status", "kind", "call_id"):
        value = getattr(query, column)
        if value is not None:
            where.append(f"{column} = %s")
            params.append(value)
    if query.tool is not None:
        condition, pattern = tool_condition(query.tool, dialect)
        where.append(condition)
        params.append(pattern)
    if query.since is not None:
        where.append("ts >= %s")
        params.append(query.since)
    if query.until is not None:
        where.append("ts < %s")
        params.append(query.until)
    if query.text:
        # detail is stored as JSON text: look for the text as JSON would write it (quotes escaped).
        encoded = _json_inner(query.text)
        find = "strpos" if dialect == "postgres" else "instr"
        where.append(f"{find}(lower(detail), lower(%s)) > 0")
        params.append(encoded)
    if query.before_seq is not None:
        where.append("seq < %s")
        params.append(query.before_seq)
    if query.after_seq is not None:
        where.append("seq > %s")
        params.append(query.after_seq)
    condition = " AND ".join(where) or "1 = 1"
    direction = "DESC" if query.order == "newest" else "ASC"
    text = f"SELECT {columns} FROM {{audit}} WHERE {condition} ORDER BY seq {direction} LIMIT %s"  # noqa: S608 - constant columns, bound values
    return text, [*params, query.limit + 1]


def _json_inner(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)[1:-1]


def page_of(records: list[AuditRecord], query: AuditSearch) -> AuditPage:
    """The page for ``records`` as fetched by ``search_sql`` (at most ``limit + 1`` of them)."""
    more = len(records) > query.limit
    shown = records[: query.limit]
    if query.order == "newest":
        return AuditPage(shown, shown[-1].seq if more and shown else None)
    return AuditPage(shown, None, shown[-1].seq if shown else query.after_seq)


def scans(query: AuditSearch) -> bool:
    """Whether no index bounds ``query``'s work (free text, a tool glob with wildcards): such a page
    looks at no more than ``MAX_SCAN`` consecutive seqs."""
    if query.text:
        return True
    return query.tool is not None and any(c in query.tool for c in "*?[")


Select = Callable[[str, list[Any]], list[AuditRecord]]
"""Runs a statement of ``search_sql`` (with ``{audit}`` and ``%s`` still to fill) and decodes its rows."""


def run_search(
    query: AuditSearch,
    dialect: Dialect,
    columns: str,
    select: Select,
    head: Callable[[], tuple[int, str] | None],
) -> AuditPage:
    """Answer ``query`` on a store: the shared body of every sink's ``search``.

    A query that ``scans`` is run over a window of at most ``MAX_SCAN`` seqs below ``before_seq``
    (above ``after_seq`` when oldest first); when the window ends before the log does, the page may
    hold fewer than ``limit`` records, ``searched_to`` says where the search stopped and the cursor
    continues from there, so paging on still reads every record once.

    Raises:
        AuditSearchError: the query is invalid.
    """
    validate(query)
    if not scans(query):
        return page_of(select(*search_sql(query, columns, dialect)), query)
    floor = query.after_seq or 0
    if query.order == "newest":
        if query.before_seq is not None:
            top = query.before_seq
        else:
            newest = head()
            top = (newest[0] if newest is not None else 0) + 1
        low = max(floor, top - 1 - MAX_SCAN)
        window = replace(query, before_seq=top, after_seq=low)
        page = page_of(select(*search_sql(window, columns, dialect)), window)
        if page.next_before is None and low > floor:
            return AuditPage(page.records, low + 1, searched_to=low + 1)
        return page
    newest = head()
    end = newest[0] if newest is not None else 0
    if query.before_seq is not None:
        end = min(end, query.before_seq - 1)
    high = min(end, floor + MAX_SCAN)
    window = replace(query, after_seq=floor, before_seq=high + 1)
    page = page_of(select(*search_sql(window, columns, dialect)), window)
    if len(page.records) < query.limit and high < end:
        return AuditPage(page.records, None, high, searched_to=high)
    return page
