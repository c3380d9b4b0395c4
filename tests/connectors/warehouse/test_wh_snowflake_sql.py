"""Snowflake SQL text, pinned by golden files (no Snowflake is reachable from the tests)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp

from mcp_gateway.connectors.warehouse.base import Check, Predicate, WarehouseError
from mcp_gateway.connectors.warehouse.metrics import metric_sql
from mcp_gateway.connectors.warehouse.snowflake import SnowflakeSql, SnowflakeWarehouse

GOLDEN = Path(__file__).parent / "golden"
SQL = SnowflakeSql("ANALYTICS", "SALES")
WHERE = [
    Predicate(column="Id", op="=", value=3),
    Predicate(column="stage", op="in", value=["won", "open"]),
    Predicate(column="closed_at", op="is_null"),
    Predicate(column="amount", op="!=", value=0),
]


def _statements() -> dict[str, str]:
    update, update_params = SQL.update(
        "OPPORTUNITIES__branch__fix", WHERE, {"Amount": 1_000_000, "note": "x"}
    )
    delete, delete_params = SQL.delete("OPPORTUNITIES__branch__fix", WHERE)
    count, _ = SQL.count("OPPORTUNITIES__branch__fix", WHERE)
    assert update_params == [1_000_000, "x", 3, "won", "open", 0]
    assert delete_params == [3, "won", "open", 0]
    return {
        "clone": SQL.clone("OPPORTUNITIES__branch__fix", "OPPORTUNITIES"),
        "swap": SQL.swap("OPPORTUNITIES", "OPPORTUNITIES__branch__fix"),
        "clone_at_offset": SQL.clone_at("OPPORTUNITIES__restore", "OPPORTUNITIES", offset_seconds=-3600),
        "clone_at_statement": SQL.clone_at(
            "OPPORTUNITIES__restore", "OPPORTUNITIES", statement="01b2c3d4-0000-1111-2222-333344445555"
        ),
        "update": update,
        "delete": delete,
        "count": count,
        "duplicate_count": metric_sql(
            Check(metric="duplicate_count", columns=("Id",)), SQL.parts("T"), "snowflake"
        ),
        "null_rate": metric_sql(Check(metric="null_rate", column="amount"), SQL.parts("T"), "snowflake"),
    }


@pytest.mark.parametrize("name", sorted(_statements()))
def test_generated_snowflake_sql_matches_its_golden_file(name: str) -> None:
    golden = (GOLDEN / f"snowflake_{name}.sql").read_text().strip()
    assert _statements()[name] == golden


@pytest.mark.parametrize("name", sorted(_statements()))
def test_generated_snowflake_sql_parses_as_snowflake(name: str) -> None:
    sqlglot.parse_one(_statements()[name].replace("?", "1"), read="snowflake")


@pytest.mark.parametrize(
    "nasty",
    ['we"ird', "dotted.name", "ünïcödé_表", "select", "drop table x; --", "a'b", " spaced "],
)
def test_hostile_identifiers_stay_one_quoted_identifier(nasty: str) -> None:
    text = SQL.clone(nasty, "SRC")
    created = sqlglot.parse_one(text, read="snowflake")
    tables = list(created.find_all(exp.Table))
    assert [t.name for t in tables] == [nasty, "SRC"]
    assert all(t.catalog == "ANALYTICS" and t.db == "SALES" for t in tables)
    update, params = SQL.update("T", [Predicate(column=nasty, op="=", value="v")], {nasty: 1})
    parsed = sqlglot.parse_one(update, read="snowflake")
    assert {c.name for c in parsed.find_all(exp.Column)} == {nasty}
    assert params == [1, "v"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"offset_seconds": 60}, "zero or negative"),
        ({"statement": "1'; DROP TABLE x; --"}, "not a snowflake query id"),
        ({}, "exactly one"),
    ],
)
def test_time_travel_arguments_are_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(WarehouseError, match=message):
        SQL.clone_at("R", "T", **kwargs)  # type: ignore[arg-type]


def test_snowflake_adapter_reports_its_capabilities_and_refuses_main_without_connecting() -> None:
    wh = SnowflakeWarehouse("ANALYTICS", "SALES", {"password": "hunter2"})
    assert (wh.capabilities.zero_copy, wh.capabilities.atomic_switch, wh.capabilities.time_travel) == (
        True,
    ) * 3
    assert "hunter2" not in repr(wh)
    with pytest.raises(WarehouseError, match="`main` is production"):
        wh.update_rows("SALES.OPPORTUNITIES", "main", WHERE, {"amount": 1}, 10)
