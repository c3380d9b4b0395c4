"""Audit search on both stores: filters, tool globs, free text, keyset paging, errors and indexes."""

from __future__ import annotations

import fnmatch
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from conftest import PG_DSN
from mcp_gateway.audit.postgres import MIGRATIONS, PostgresAuditSink
from mcp_gateway.audit.rows import SEARCH_INDEXES
from mcp_gateway.audit.search import AuditSearch, AuditSearchError, parse_glob
from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.audit.verify import verify
from mcp_gateway.errors import GatewayError
from mcp_gateway.storage.migrate import migrate, versions
from mcp_gateway.types import AuditEvent, AuditRecord

Sink = SQLiteAuditSink | PostgresAuditSink


TS0 = 1_700_000_000.0


class Tick:
    """A clock one second further on each call: the n-th append has ts ``TS0 + n``."""

    def __init__(self) -> None:
        self.now = TS0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Sink]:
    """An empty audit store of each kind (PostgreSQL: a schema of its own, dropped afterwards)."""
    if request.param == "sqlite":
        with SQLiteAuditSink(tmp_path / "audit.db", clock=Tick()) as sink:
            yield sink
        return
    schema = request.getfixturevalue("pg_schema")
    with PostgresAuditSink(PG_DSN, schema=schema, clock=Tick()) as pg:
        yield pg


TOOLS = [
    "data.query",
    "data.export",
    "data_query",
    "dataXquery",
    "ops.rerun_job",
    "sf.update",
    "100%",
    "100x",
    "a_b",
    "axb",
    "o'brien",
    "back\\slash",
    "star*tool",
    "q?mark",
    "br[a]cket",
    "Data.Query",
]


def fill(store: Sink, n: int = 64) -> list[AuditRecord]:
    """``n`` records, one per append, cycling through tools, agents, decisions, statuses and reasons
    (in an empty store: ts = TS0 + seq)."""
    events = [
        AuditEvent(
            kind=("intent", "outcome", "denied")[i % 3],
            call_id=f"c{i // 2}",
            agent=("alice", "bob", "carol")[i % 3],
            tool=TOOLS[i % len(TOOLS)],
            decision="deny" if i % 5 == 0 else "allow",
            status=("ok", "error", "")[i % 3],
            detail={"reasons": [f"Rule R{i % 4} said {'Budget EXCEEDED' if i % 7 == 0 else 'fine'}"]},
        )
        for i in range(n)
    ]
    return [record for event in events for record in store.append([event])]


def everything(store: Sink, query: AuditSearch) -> list[AuditRecord]:
    """Every record ``query`` matches, newest first, read page by page."""
    out: list[AuditRecord] = []
    before = query.before_seq
    while True:
        page = store.search(_with(query, before_seq=before))
        out.extend(page.records)
        if page.next_before is None:
            return out
        before = page.next_before


def _with(query: AuditSearch, **changes: Any) -> AuditSearch:
    fields = {name: getattr(query, name) for name in AuditSearch.__dataclass_fields__}
    return AuditSearch(**{**fields, **changes})


def newest_first(records: list[AuditRecord], keep: Callable[[AuditRecord], bool]) -> list[int]:
    return [r.seq for r in reversed(records) if keep(r)]


FILTERS: list[tuple[AuditSearch, Callable[[AuditRecord], bool]]] = [
    (AuditSearch(agent="bob"), lambda r: r.agent == "bob"),
    (AuditSearch(decision="deny"), lambda r: r.decision == "deny"),
    (AuditSearch(status="error"), lambda r: r.status == "error"),
    (AuditSearch(kind="denied"), lambda r: r.kind == "denied"),
    (AuditSearch(call_id="c7"), lambda r: r.call_id == "c7"),
    (AuditSearch(tool="data.query"), lambda r: r.tool == "data.query"),
    (AuditSearch(tool="data.*"), lambda r: r.tool.startswith("data.")),
    (AuditSearch(tool="*_*"), lambda r: "_" in r.tool),
    (AuditSearch(since=1_700_000_010.0, until=1_700_000_020.0), lambda r: 10 <= r.seq < 20),
    (AuditSearch(text="budget exceeded"), lambda r: "EXCEEDED" in str(r.detail)),
    (
        AuditSearch(agent="alice", decision="deny", tool="*.*", since=1_700_000_002.0),
        lambda r: r.agent == "alice" and r.decision == "deny" and "." in r.tool and r.seq >= 2,
    ),
]


@pytest.mark.parametrize(("query", "keep"), FILTERS, ids=[repr(q) for q, _ in FILTERS])
def test_each_filter_returns_exactly_the_matching_records_newest_first(
    store: Sink, query: AuditSearch, keep: Callable[[AuditRecord], bool]
) -> None:
    records = fill(store)
    expected = newest_first(records, keep)
    assert expected, "the fixture must hold matching records"
    assert [r.seq for r in everything(store, _with(query, limit=4))] == expected
    assert [r.seq for r in store.search(_with(query, limit=500)).records] == expected


def test_paging_reads_every_record_once_while_new_records_are_appended(store: Sink) -> None:
    fill(store, 50)
    seen: list[int] = []
    page = store.search(AuditSearch(limit=7))
    while True:
        seen.extend(r.seq for r in page.records)
        # A busy gateway keeps writing between two clicks on "next page".
        store.append([AuditEvent(kind="intent", agent="late", tool="data.query")] * 3)
        if page.next_before is None:
            break
        page = store.search(AuditSearch(limit=7, before_seq=page.next_before))
    assert seen == list(range(50, 0, -1))  # none lost, none twice, none of the later ones mixed in

    # Reading forward (an export cursor) from the start picks up the appended ones too, once each.
    forward: list[int] = []
    cursor = 0
    while True:
        page = store.search(AuditSearch(limit=9, after_seq=cursor, order="oldest"))
        forward.extend(r.seq for r in page.records)
        assert page.next_after is not None
        cursor = page.next_after
        if len(page.records) < 9:
            break
        if len(forward) < 60:
            store.append([AuditEvent(kind="outcome", agent="later")])
    head = store.head()
    assert head is not None and forward == list(range(1, head[0] + 1))


def test_after_and_before_cursors_bound_a_page_from_both_sides(store: Sink) -> None:
    fill(store, 30)
    page = store.search(AuditSearch(after_seq=10, before_seq=20, limit=5))
    assert [r.seq for r in page.records] == [19, 18, 17, 16, 15] and page.next_before == 15
    last = store.search(AuditSearch(after_seq=10, before_seq=15, limit=5))
    assert [r.seq for r in last.records] == [14, 13, 12, 11] and last.next_before is None


ATTACKS = [
    ("100%", ["100%"]),  # `%` is not a LIKE wildcard here: 100x must not match
    ("a_b", ["a_b"]),  # `_` is not "any character": axb must not match
    ("o'brien", ["o'brien"]),
    ("' OR '1'='1", []),
    ("x'; DROP TABLE audit; --", []),
    ("back\\slash", ["back\\slash"]),
    ("back\\*", ["back\\slash"]),
    ("star[*]tool", ["star*tool"]),
    ("q[?]mark", ["q?mark"]),
    ("br[[]a]cket", ["br[a]cket"]),
    ("%", []),
    ("_*", []),
    ("*%*", ["100%"]),
    ("*'*", ["o'brien"]),
    ("data?query", ["dataXquery", "data_query", "data.query"]),
]


@pytest.mark.parametrize(("glob", "tools"), ATTACKS)
def test_sql_and_like_metacharacters_in_a_tool_glob_match_only_themselves(
    store: Sink, glob: str, tools: list[str]
) -> None:
    records = fill(store, len(TOOLS))
    found = store.search(AuditSearch(tool=glob, limit=500)).records
    assert [r.tool for r in found] == tools
    # The store is untouched and still a valid chain: nothing was executed.
    assert store.records() == records and verify(store.records()).ok


def store_folds_unicode(store: Sink) -> bool:
    """PostgreSQL lowers any letter (its locale); SQLite's ``lower`` only ASCII ones."""
    return isinstance(store, PostgresAuditSink)


def test_free_text_is_case_insensitive_and_literal(store: Sink) -> None:
    store.append(
        [
            AuditEvent(kind="denied", detail={"reasons": ['Argument "limit" is 100% over the BUDGET']}),
            AuditEvent(kind="denied", detail={"reasons": ["under budget"]}),
            AuditEvent(kind="denied", detail={"reasons": ["a_b and o'brien"]}),
            AuditEvent(kind="denied", detail={"reasons": ["naïve \\ path C:\\tmp"]}),
        ]
    )
    assert [r.seq for r in store.search(AuditSearch(text="NAÏVE")).records] == (
        [4] if store_folds_unicode(store) else []
    )
    assert [r.seq for r in store.search(AuditSearch(text="naïve \\ path c:\\TMP")).records] == [4]
    assert [r.seq for r in store.search(AuditSearch(text="budget")).records] == [2, 1]
    assert [r.seq for r in store.search(AuditSearch(text='"LIMIT" IS 100%')).records] == [1]
    assert [r.seq for r in store.search(AuditSearch(text="%")).records] == [1]
    assert [r.seq for r in store.search(AuditSearch(text="a_b and o'Brien")).records] == [3]
    assert store.search(AuditSearch(text="a%b")).records == []


BAD = [
    (AuditSearch(limit=0), "page size `0` is not between 1 and 500"),
    (AuditSearch(limit=501), "page size `501` is not between 1 and 500"),
    (AuditSearch(tool="data.[abc"), "invalid tool glob `data.[abc`: a `[` is not closed"),
    (AuditSearch(tool="x[!]"), "invalid tool glob `x[!]`: a `[` is not closed"),
    (AuditSearch(tool="[z-a]*"), "invalid tool glob `[z-a]*`: range `z-a` runs backwards"),
    (AuditSearch(tool="[^a]"), "invalid tool glob `[^a]`: write `[!...]` to negate"),
    (AuditSearch(tool="*" * 257), "tool glob is longer than 256 characters"),
    (AuditSearch(since=10.0, until=5.0), "the time range ends before it starts"),
    (AuditSearch(before_seq=-1), "before_seq `-1` is negative"),
]


@pytest.mark.parametrize(("query", "message"), BAD, ids=[m for _, m in BAD])
def test_an_invalid_glob_limit_or_range_is_a_clear_error(
    store: Sink, query: AuditSearch, message: str
) -> None:
    with pytest.raises(AuditSearchError) as caught:
        store.search(query)
    assert str(caught.value).startswith(message)
    assert isinstance(caught.value, GatewayError)


GLOB_CHARS = st.sampled_from(list("ab.-_%'\\*?[]!^"))
NAMES = [
    "a",
    "b",
    "ab",
    "a.b",
    "a-b",
    "a_b",
    "a%b",
    "a'b",
    "a\\b",
    "a*b",
    "a?b",
    "a[b",
    "a]b",
    "a!b",
    "a^b",
    "",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(glob=st.text(GLOB_CHARS, min_size=1, max_size=6))
def test_a_tool_glob_matches_what_a_shell_glob_matches(store: Sink, glob: str) -> None:
    if not store.records():
        store.append([AuditEvent(kind="intent", tool=name) for name in NAMES])
    try:
        parse_glob(glob)
    except AuditSearchError:
        return  # refused with a message (tested above); fnmatch would guess
    found = {r.tool for r in store.search(AuditSearch(tool=glob, limit=500)).records}
    assert found == {name for name in NAMES if fnmatch.fnmatchcase(name, glob)}


def test_a_sqlite_store_from_before_search_gets_its_indexes_and_drops_the_old_ones(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with SQLiteAuditSink(path) as sink:
        sink.append([AuditEvent(kind="intent", agent="a", decision="deny")])
    with sqlite3.connect(path) as conn:  # as the gateway before this version left it
        for name in SEARCH_INDEXES:
            conn.execute(f"DROP INDEX {name}")
        conn.execute("CREATE INDEX audit_agent ON audit (agent)")
        conn.execute("PRAGMA user_version = 0")
    conn.close()
    with SQLiteAuditSink(path) as sink:
        assert [r.seq for r in sink.search(AuditSearch(decision="deny")).records] == [1]
        plan = sink._conn.execute(
            "EXPLAIN QUERY PLAN SELECT seq FROM audit WHERE decision = 'deny' ORDER BY seq DESC LIMIT 51"
        ).fetchall()
    with sqlite3.connect(path) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.close()
    assert set(SEARCH_INDEXES) <= names and "audit_agent" not in names
    assert "audit_decision_seq" in str(plan)


def test_a_postgres_audit_schema_at_version_1_is_migrated_to_the_search_indexes(pg_schema: str) -> None:
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        migrate(conn, pg_schema, "audit", MIGRATIONS[:1])
        with PostgresAuditSink(PG_DSN, schema=pg_schema) as sink:
            sink.append([AuditEvent(kind="intent", tool="data.q")])
            assert [r.seq for r in sink.search(AuditSearch(tool="data.*")).records] == [1]
        assert (versions(conn, pg_schema) or {})["audit"] == 2
        rows = conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = %s", (pg_schema,)).fetchall()
        names = {row[0] for row in rows}
        assert set(SEARCH_INDEXES) <= names and not {"audit_agent", "audit_tool"} & names
        conn.execute("SET enable_seqscan = off")
        plan = conn.execute(
            sql.SQL("EXPLAIN SELECT seq FROM {} WHERE tool LIKE 'data.%%' ORDER BY seq DESC LIMIT 51").format(
                sql.Identifier(pg_schema, "audit")
            )
        ).fetchall()
        assert "audit_tool_seq" in str(plan)


@pytest.mark.parametrize(
    "query",
    [AuditSearch(text="rule r1", limit=3), AuditSearch(tool="data*", limit=3)],
    ids=["free text", "tool glob"],
)
def test_a_search_without_an_index_looks_at_a_bounded_window_and_paging_continues_it(
    store: Sink, query: AuditSearch, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mcp_gateway.audit.search.MAX_SCAN", 10)
    records = fill(store, 64)
    keep = (lambda r: "R1" in str(r.detail)) if query.text else (lambda r: r.tool.startswith("data"))
    first = store.search(query)
    # The newest 10 seqs (55..64) were searched, no further: the page says where it stopped.
    in_window = [seq for seq in newest_first(records, keep) if seq > 54]
    assert [r.seq for r in first.records] == in_window[:3]
    if len(in_window) < 3:
        assert first.searched_to == first.next_before == 55
    pages, before, seen = 0, None, list[int]()
    while True:
        page = store.search(_with(query, before_seq=before))
        assert page.searched_to is None or page.next_before == page.searched_to
        seen.extend(r.seq for r in page.records)
        pages += 1
        if page.next_before is None:
            break
        before = page.next_before
    assert seen == newest_first(records, keep) and pages >= 7
    # Forward, from the start: the same records, oldest first, each once.
    forward, after = list[int](), 0
    for _ in range(100):
        page = store.search(_with(query, after_seq=after, order="oldest"))
        forward.extend(r.seq for r in page.records)
        if len(page.records) < 3 and page.searched_to is None:
            break
        assert page.next_after is not None
        after = page.next_after
    assert forward == sorted(seen)
