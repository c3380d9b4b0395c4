"""Pure parts of the warehouse layer: predicate and check validation, judging, SQL quoting, config."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError
from wh_support import make_ctx

from mcp_gateway.connectors.warehouse.base import (
    Check,
    Predicate,
    ProductionWriteRefused,
    WarehouseError,
    check_branch,
)
from mcp_gateway.connectors.warehouse.config import (
    IcebergSettings,
    PostgresSettings,
    SnowflakeSettings,
    WarehouseSettings,
)
from mcp_gateway.connectors.warehouse.metrics import age_seconds, judge, metric_sql
from mcp_gateway.connectors.warehouse.open import expand_secrets
from mcp_gateway.connectors.warehouse.postgres import where_sql
from mcp_gateway.tools.data import UpdateInput, build_data_toolset, table_rule
from mcp_gateway.types import SecretValue


@pytest.mark.parametrize(
    "raw",
    [
        {"column": "a", "op": "=", "value": None},
        {"column": "a", "op": "in", "value": []},
        {"column": "a", "op": "in", "value": [1, None]},
        {"column": "a", "op": "is_null", "value": 1},
        {"column": "a", "op": "like", "value": "%"},
        {"column": "a", "op": "=", "value": {"sql": "1=1"}},
        {"column": "a", "op": "=", "value": 1, "raw": "OR 1=1"},
    ],
)
def test_malformed_predicates_are_rejected(raw: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Predicate.model_validate(raw)


@pytest.mark.parametrize(
    "raw",
    [
        {"metric": "null_rate"},
        {"metric": "duplicate_count"},
        {"metric": "named"},
        {"metric": "max"},
        {"metric": "p99"},
    ],
)
def test_checks_missing_their_arguments_are_rejected(raw: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Check.model_validate(raw)


@pytest.mark.parametrize(
    ("check", "value", "passed"),
    [
        (Check(metric="row_count", min=1), 0, False),
        (Check(metric="row_count", min=1), 1, True),
        (Check(metric="max", column="a", max=5), 5.0, True),
        (Check(metric="max", column="a", max=5), 5.5, False),
        (Check(metric="max", column="a", max=5), None, False),
        (Check(metric="max", column="a"), None, True),
        (Check(metric="min", column="a", min=0), "2024-01-01", False),
        (Check(metric="null_rate", column="a", min=0, max=0.1), float("nan"), False),
    ],
)
def test_a_check_passes_only_when_its_value_is_within_bounds(check: Check, value: Any, passed: bool) -> None:
    assert judge(check, value)["passed"] is passed


@pytest.mark.parametrize("branch", ["main", "Main!", "a-b", "", "x" * 41, "ok; drop"])
def test_branch_names_are_refused_unless_plain_and_not_main(branch: str) -> None:
    error = ProductionWriteRefused if branch == "main" else WarehouseError
    with pytest.raises(error):
        check_branch(branch)


def test_postgres_metric_sql_quotes_every_identifier() -> None:
    sql = metric_sql(Check(metric="duplicate_count", columns=('we"ird', "id")), ["s", 'T"x'], "postgres")
    assert sql == (
        'SELECT COALESCE(SUM("n" - 1), 0) FROM (SELECT COUNT(*) AS "n" FROM "s"."T""x" '
        'GROUP BY "we""ird", "id" HAVING COUNT(*) > 1) AS d'
    )


def test_postgres_where_binds_values_and_quotes_columns() -> None:
    import psycopg

    cond, params = where_sql(
        [Predicate(column='a"; DROP', op="in", value=[1, 2]), Predicate(column="b", op="<=", value="x")]
    )
    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test") as conn:
        assert cond.as_string(conn) == '"a""; DROP" IN (%s, %s) AND "b" <= %s'
    assert params == [1, 2, "x"]


def test_freshness_of_a_naive_timestamp_is_taken_as_utc() -> None:
    now = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
    assert age_seconds(dt.datetime(2026, 1, 1, 11), now) == 3600
    assert age_seconds(dt.date(2026, 1, 1), now) == 12 * 3600
    assert age_seconds(None, now) is None


def test_settings_are_discriminated_by_kind_and_reject_unknown_keys() -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(dict[str, WarehouseSettings])
    parsed = adapter.validate_python(
        {
            "lake": {"kind": "iceberg", "catalog_uri": "sqlite:///c.db", "warehouse": "/w"},
            "pg": {"kind": "postgres", "dsn": "secret://pg-dsn", "schema": "sales"},
            "sf": {
                "kind": "snowflake",
                "account": "a",
                "user": "u",
                "password": "secret://sf",
                "database": "D",
                "schema": "S",
                "warehouse": "W",
            },
        }
    )
    assert isinstance(parsed["lake"], IcebergSettings)
    assert isinstance(parsed["pg"], PostgresSettings) and parsed["pg"].schema_name == "sales"
    assert isinstance(parsed["sf"], SnowflakeSettings)
    with pytest.raises(ValidationError):
        adapter.validate_python({"pg": {"kind": "postgres", "dsn": "x", "sql": "DROP"}})


def test_secret_references_are_expanded_only_through_the_resolver() -> None:
    asked: list[str] = []

    def resolve(name: str) -> SecretValue:
        asked.append(name)
        return SecretValue(name, b"pw")

    assert expand_secrets("postgresql://u:secret://pg-pass@h/db", resolve) == "postgresql://u:pw@h/db"
    assert asked == ["pg-pass"]
    with pytest.raises(Exception, match="no vault"):
        expand_secrets("secret://x", None)


def test_an_unreachable_postgres_error_never_shows_the_resolved_dsn() -> None:
    import anyio

    from mcp_gateway.tools.base import ToolFailure

    settings = PostgresSettings(dsn="secret://pg-dsn", schema="public")
    toolset = build_data_toolset(
        {"pg": settings},
        lambda name: SecretValue(name, b"host=127.0.0.1 port=1 user=hunter2 password=hunter2"),
    )
    tool = toolset.tools["data.clone_table"]

    async def go() -> None:
        await tool.run(make_ctx(), tool.input_model.model_validate({"table": "pg.public.t", "branch": "b"}))

    with pytest.raises(ToolFailure) as failed:
        anyio.run(go)
    assert "hunter2" not in str(failed.value) and "hunter2" not in repr(failed.value.detail)


def test_update_input_takes_set_and_forbids_free_sql() -> None:
    ok = UpdateInput.model_validate(
        {
            "table": "lake.s.t",
            "branch": "b",
            "where": [{"column": "id", "op": "=", "value": 1}],
            "set": {"a": 1},
        }
    )
    assert ok.values == {"a": 1}
    assert "set" in UpdateInput.model_json_schema()["properties"]
    with pytest.raises(ValidationError):
        UpdateInput.model_validate({"table": "lake.s.t", "branch": "b", "where": [], "set": {"a": 1}})
    with pytest.raises(ValidationError):
        UpdateInput.model_validate(
            {
                "table": "lake.s.t",
                "branch": "b",
                "where": [{"column": "id", "op": "=", "value": 1}],
                "set": {"a": 1},
                "sql": "DELETE",
            }
        )


def test_an_exact_table_rule_wins_over_a_matching_pattern() -> None:
    policy = {"tables": {"*.*.t": {"switch_in_approval": False}, "lake.s.t": {"switch_in_approval": True}}}
    assert table_rule(make_ctx(policy=policy), "lake.s.t") == {"switch_in_approval": True}
    assert table_rule(make_ctx(policy=policy), "pg.s.t") == {"switch_in_approval": False}
    assert table_rule(make_ctx(policy=policy), "pg.s.other") == {}


def test_the_data_toolset_annotations_are_honest() -> None:
    tools = build_data_toolset({}, lambda name: SecretValue(name, b"")).tools
    assert tools["data.query_quality_metrics"].read_only
    assert all(tools[f"data.{n}"].destructive for n in ("switch_in", "rollback_table", "discard_branch"))
    assert not any(t.read_only for n, t in tools.items() if n != "data.query_quality_metrics")
    assert sorted(tools) == [
        "data.clone_table",
        "data.delete_rows",
        "data.discard_branch",
        "data.query_quality_metrics",
        "data.rollback_table",
        "data.switch_in",
        "data.update_rows",
    ]
