"""A rollback never silently discards production commits made after the switch-in it undoes.

Real Iceberg tables through pyiceberg (SQLite and PostgreSQL catalogs) and real PostgreSQL tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pytest
from psycopg import sql
from wh_support import PG_DSN, Backend, backend, make_ctx

from mcp_gateway.connectors.warehouse.base import LaterCommitsFound, Predicate
from mcp_gateway.connectors.warehouse.iceberg import IcebergWarehouse
from mcp_gateway.demo.lake import FAT_FINGER_ID
from mcp_gateway.tools.base import ToolFailure

__all__ = ["backend"]

pytestmark = pytest.mark.anyio

FIX = [{"column": "id", "op": "=", "value": FAT_FINGER_ID}]


def _pipeline_appends_a_row(backend: Backend) -> Any:
    """A pipeline appends one row to production after the switch-in; its snapshot id (Iceberg)."""
    if backend.kind == "iceberg":
        backend.write_production("opportunities")
        return backend.snapshot("opportunities")
    schema = backend.prefix.split(".")[1]
    table = sql.Identifier(schema, "opportunities")
    with psycopg.connect(PG_DSN) as conn:
        conn.execute(sql.SQL("CREATE TEMP TABLE late AS SELECT * FROM {} WHERE id = 1").format(table))
        conn.execute("UPDATE late SET id = 99")
        conn.execute(sql.SQL("INSERT INTO {} SELECT * FROM late").format(table))
    return None


async def _switch_in_a_fix(backend: Backend) -> dict[str, Any]:
    table = backend.table("opportunities")
    await backend.call("clone_table", {"table": table, "branch": "fix"})
    await backend.call(
        "update_rows", {"table": table, "branch": "fix", "where": FIX, "set": {"amount": 1_000_000}}
    )
    return await backend.call("switch_in", {"table": table, "branch": "fix"})


async def test_a_rollback_that_would_discard_a_later_pipeline_commit_is_refused_and_names_it(
    backend: Backend,
) -> None:
    table = backend.table("opportunities")
    switched = await _switch_in_a_fix(backend)
    late_snapshot = _pipeline_appends_a_row(backend)
    production = backend.rows("opportunities"), backend.snapshot("opportunities")
    assert len(production[0]) == 6

    with pytest.raises(ToolFailure, match="would discard 1 later production commit") as refused:
        await backend.call("rollback_table", {"table": table, "to_snapshot": switched["before_snapshot"]})

    assert (backend.rows("opportunities"), backend.snapshot("opportunities")) == production
    assert refused.value.detail["rolled_back"] is False
    [later] = refused.value.detail["later_commits"]
    if backend.kind == "iceberg":
        assert later["id"] == str(late_snapshot)
        assert f"snapshot {late_snapshot} (append at " in str(refused.value)
        assert (later["operation"], later["rows_added"], later["rows_total"]) == ("append", 1, 6)
        assert later["at"].startswith("20")
    else:
        assert "writes since the switch-in at" in str(refused.value)
        assert later["operation"] == "writes"
        assert (later["rows_at_switch_in"], later["rows_total"], later["rows_added"]) == (5, 6, 1)
        assert later["rows_removed"] == 0
    assert "`discard_later_commits: true`" in str(refused.value)


async def test_with_discard_later_commits_the_rollback_runs_and_records_what_it_discarded(
    backend: Backend,
) -> None:
    table = backend.table("opportunities")
    original = backend.rows("opportunities")
    switched = await _switch_in_a_fix(backend)
    _pipeline_appends_a_row(backend)
    args = {"table": table, "to_snapshot": switched["before_snapshot"]}
    with pytest.raises(ToolFailure) as refused:
        await backend.call("rollback_table", args)

    ctx = make_ctx()
    rolled = await backend.call("rollback_table", {**args, "discard_later_commits": True}, ctx)

    assert backend.rows("opportunities") == original
    assert rolled["discarded_later_commits"] == refused.value.detail["later_commits"]
    assert ctx.audit_detail["discarded_later_commits"] == rolled["discarded_later_commits"]
    assert ctx.audit_detail["before_snapshot"] == rolled["before_snapshot"]
    if backend.kind == "postgres":
        # The discarded state is kept as a backup table: rolling forward to it brings the row back.
        await backend.call("rollback_table", {"table": table, "to_snapshot": rolled["before_snapshot"]})
        assert 99 in {row["id"] for row in backend.rows("opportunities")}


async def test_a_rollback_with_no_later_commits_needs_no_flag_and_discards_nothing(backend: Backend) -> None:
    table = backend.table("opportunities")
    original = backend.rows("opportunities")
    switched = await _switch_in_a_fix(backend)
    ctx = make_ctx()
    rolled = await backend.call(
        "rollback_table", {"table": table, "to_snapshot": switched["before_snapshot"]}, ctx
    )
    assert rolled["discarded_later_commits"] == []
    assert ctx.audit_detail["discarded_later_commits"] == []
    assert backend.rows("opportunities") == original


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_postgres_swap_the_gateway_never_recorded_cannot_be_rolled_back_without_the_flag(
    backend: Backend,
) -> None:
    table = backend.table("opportunities")
    switched = await _switch_in_a_fix(backend)
    schema = backend.prefix.split(".")[1]
    with psycopg.connect(PG_DSN) as conn:  # as if switched in by a gateway from before swap records
        conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(schema, "_gateway_swaps")))
    production = backend.rows("opportunities")
    with pytest.raises(ToolFailure, match="later writes cannot be ruled out"):
        await backend.call("rollback_table", {"table": table, "to_snapshot": switched["before_snapshot"]})
    assert backend.rows("opportunities") == production
    with pytest.raises(ToolFailure, match="no table"):
        await backend.call("clone_table", {"table": f"{backend.prefix}._gateway_swaps", "branch": "x"})


# ---- Iceberg lineage details, on the adapter ---------------------------------------------------------

SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.string())])


@pytest.fixture
def lake(tmp_path: Path) -> Iterator[IcebergWarehouse]:
    wh = IcebergWarehouse.connect(f"sqlite:///{tmp_path / 'c.db'}", (tmp_path / "w").as_uri(), "unit")
    wh._catalog.create_namespace("s")
    table = wh._catalog.create_table(("s", "t"), schema=SCHEMA)
    table.append(pa.table({"id": [1, 2, 3], "v": ["a", "b", "c"]}, schema=SCHEMA))
    yield wh
    wh.close()


def _append(wh: IcebergWarehouse, ident: int) -> int:
    table = wh._catalog.load_table(("s", "t"))
    table.append(pa.table({"id": [ident], "v": ["late"]}, schema=SCHEMA))
    snap = wh._catalog.load_table(("s", "t")).current_snapshot()
    assert snap is not None
    return snap.snapshot_id


def test_the_switch_ins_own_branch_commits_are_not_later_commits(lake: IcebergWarehouse) -> None:
    before = lake.current_snapshot("s.t")
    assert before is not None
    lake.clone("s.t", "b")
    lake.delete_rows("s.t", "b", [Predicate(column="id", op="=", value=1)], 10)
    lake.update_rows("s.t", "b", [Predicate(column="id", op="=", value=2)], {"v": "B"}, 10)
    lake.switch_in("s.t", "b")
    result = lake.rollback("s.t", before)
    assert (result.after, result.discarded) == (before, ())


def test_every_commit_after_the_switch_in_is_named_newest_first(lake: IcebergWarehouse) -> None:
    before = lake.current_snapshot("s.t")
    assert before is not None
    lake.clone("s.t", "b")
    lake.delete_rows("s.t", "b", [Predicate(column="id", op="=", value=1)], 10)
    switched = lake.switch_in("s.t", "b")
    first, second = _append(lake, 10), _append(lake, 11)
    with pytest.raises(LaterCommitsFound) as refused:
        lake.rollback("s.t", before)
    assert [c.id for c in refused.value.commits] == [str(second), str(first)]
    assert lake.current_snapshot("s.t") == str(second)
    # Rolling back only to the switch-in's result discards the same two appends, and only them.
    with pytest.raises(LaterCommitsFound) as partial:
        lake.rollback("s.t", switched.after)
    assert [c.id for c in partial.value.commits] == [str(second), str(first)]


def test_a_target_main_never_stood_at_counts_every_dropped_commit(lake: IcebergWarehouse) -> None:
    lake.clone("s.t", "b")
    lake.delete_rows("s.t", "b", [Predicate(column="id", op="=", value=1)], 10)
    middle = str(lake._catalog.load_table(("s", "t")).metadata.refs["b"].snapshot_id)
    lake.delete_rows("s.t", "b", [Predicate(column="id", op="=", value=2)], 10)
    head = lake.switch_in("s.t", "b").after
    # `middle` was a branch commit, never production's head: which commits are "the switch-in" is
    # unknowable, so everything above it counts and the flag is needed.
    with pytest.raises(LaterCommitsFound) as refused:
        lake.rollback("s.t", middle)
    assert [c.id for c in refused.value.commits] == [head]
    assert lake.rollback("s.t", middle, discard_later_commits=True).discarded[0].id == head


# ---- Snowflake: no server is reachable here, so a scripted cursor stands in for the connector --------


class ScriptedCursor:
    """Answers the adapter's queries from fixed facts and records every statement."""

    def __init__(self, recorded: tuple[str, int, str] | None, now: tuple[int, str]) -> None:
        self.recorded = recorded
        self.now = now
        self.statements: list[str] = []
        self._answer: Any = None

    def execute(self, text: str, params: Any = None) -> None:
        self.statements.append(text)
        if "INFORMATION_SCHEMA.COLUMNS" in text:
            self._answer = [("ID",)]
        elif text.startswith("SELECT CHECKSUM, ROWS, SWAPPED_AT"):
            self._answer = self.recorded
        elif "HASH_AGG" in text:
            self._answer = self.now
        else:
            self._answer = None

    def fetchone(self) -> Any:
        return self._answer

    def fetchall(self) -> Any:
        return self._answer


def _snowflake(cursor: ScriptedCursor) -> Any:
    from contextlib import contextmanager

    from mcp_gateway.connectors.warehouse.snowflake import SnowflakeWarehouse

    wh = SnowflakeWarehouse("ANALYTICS", "SALES", {"password": "hunter2"})

    @contextmanager
    def scripted() -> Iterator[ScriptedCursor]:
        yield cursor

    wh._cursor = scripted  # type: ignore[method-assign]
    return wh


@pytest.mark.parametrize("handle", ["OPP__backup__20261124020000000000", "offset:-3600"])
def test_a_snowflake_rollback_after_production_changed_is_refused_before_any_swap(handle: str) -> None:
    cursor = ScriptedCursor(("rows=5:hash=111", 5, "2026-11-24T02:00:00+00:00"), (6, "222"))
    wh = _snowflake(cursor)
    with pytest.raises(LaterCommitsFound, match=r"writes since the switch-in at 2026-11-24T02:00:00") as no:
        wh.rollback("SALES.OPP", handle)
    assert [(c.rows_at_switch_in, c.rows_total) for c in no.value.commits] == [(5, 6)]
    assert not any("SWAP WITH" in text for text in cursor.statements)
    if handle.startswith("offset:"):  # the time-travel restore clone is not left behind
        assert cursor.statements[-1].startswith("DROP TABLE IF EXISTS")


def test_a_snowflake_rollback_with_the_flag_swaps_and_records_the_swap() -> None:
    cursor = ScriptedCursor(("rows=5:hash=111", 5, "2026-11-24T02:00:00+00:00"), (6, "222"))
    result = _snowflake(cursor).rollback(
        "SALES.OPP", "OPP__backup__20261124020000000000", discard_later_commits=True
    )
    assert [c.rows_total for c in result.discarded] == [6]
    assert any("SWAP WITH" in text for text in cursor.statements)
    assert "_GATEWAY_SWAPS" in cursor.statements[-1] and cursor.statements[-1].startswith("INSERT")


def test_an_unchanged_snowflake_table_rolls_back_without_the_flag() -> None:
    cursor = ScriptedCursor(("rows=5:hash=111", 5, "2026-11-24T02:00:00+00:00"), (5, "111"))
    result = _snowflake(cursor).rollback("SALES.OPP", "OPP__backup__20261124020000000000")
    assert result.discarded == ()
