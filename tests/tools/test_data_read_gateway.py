"""``data.query`` and ``data.sample_rows`` attacked through the real gateway (policy, audit, MCP SDK
client) on a real PostgreSQL schema: every refusal is a tool error naming its rule, is on the audit
record with that rule, changes nothing, and no masked or ungranted value ever comes back raw, in an
answer, an error or the audit log."""

# ruff: noqa: S608  # the SQL text is the agent's input under test, sent to the gateway

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from read_support import PG_DSN, RAW_VALUES, PgData, masks_for, pg_data

from conftest import GatewayFactory, RunningGateway, connect

__all__ = ["pg_data"]

pytestmark = pytest.mark.anyio

# (sql with {s} for the schema, the rule that refuses it, a fragment of the message)
ATTACKS: list[tuple[str, str, str]] = [
    # writes and statements that are not one plain SELECT
    ("DELETE FROM {s}.orders", "not_a_select", "only a SELECT may run"),
    ("SELECT 1; DROP TABLE {s}.orders", "multiple_statements", "exactly one statement"),
    ("SELECT id FROM {s}.orders;; UPDATE {s}.orders SET amount = 0", "multiple_statements", "exactly one"),
    (
        "SELECT id FROM {s}.orders /* hidden */; DELETE FROM {s}.orders -- tail",
        "multiple_statements",
        "exactly one",
    ),
    ("SELECT * INTO {s}.stolen FROM {s}.orders", "write", "not allowed in a read-only query"),
    ("WITH d AS (DELETE FROM {s}.orders RETURNING *) SELECT id FROM d", "write", "`DELETE`"),
    ("SELECT id FROM {s}.orders FOR UPDATE", "locking", "not allowed"),
    ("SET statement_timeout = 0", "not_a_select", "only a SELECT"),
    ("COPY {s}.orders TO '/tmp/x'", "not_a_select", "only a SELECT"),
    # functions an attacker reaches for
    ("SELECT pg_sleep(5)", "denied_function", "`pg_sleep` is on the deny list"),
    ("SELECT pg_read_file('/etc/passwd')", "denied_function", "`pg_read_file`"),
    ("SELECT lo_import('/etc/passwd')", "denied_function", "`lo_import`"),
    ("SELECT set_config('statement_timeout', '0', false)", "denied_function", "`set_config`"),
    ("SELECT current_setting('data_directory')", "denied_function", "`current_setting`"),
    ("SELECT query_to_xml('select * from {s}.secret', true, true, '')", "denied_function", "`query_to_xml`"),
    ("SELECT pg_catalog.pg_ls_dir('.')", "denied_function", "`pg_ls_dir`"),
    ("SELECT * FROM dblink('host=x', 'select 1') AS t(a int)", "denied_function", "`dblink`"),
    ("SELECT * FROM generate_series(1, 3) AS g", "table_function", "table functions"),
    ("SELECT my_exfiltrate(id) FROM {s}.orders", "unknown_function", "`my_exfiltrate` is not allowed"),
    # tables the grant does not name, however they are reached
    ("SELECT * FROM {s}.secret", "table_not_granted", "secret` is not readable"),
    ("WITH x AS (SELECT * FROM {s}.secret) SELECT * FROM x", "table_not_granted", "not readable"),
    (
        "SELECT id FROM {s}.orders WHERE id IN (SELECT id FROM {s}.secret)",
        "table_not_granted",
        "not readable",
    ),
    (
        "SELECT o.id, x.payload FROM {s}.orders o JOIN {s}.secret x ON x.id = o.id",
        "table_not_granted",
        "not readable",
    ),
    ("SELECT * FROM pg_catalog.pg_authid", "table_not_granted", "not readable"),
    ("SELECT * FROM secret", "unqualified_table", "neither a CTE"),
    (
        "WITH a AS (SELECT * FROM secret), secret AS (SELECT 1 AS z) SELECT * FROM a",
        "unqualified_table",
        "neither",
    ),
    # over the row cap
    ("SELECT id FROM {s}.orders LIMIT 100", "row_cap", "over the row cap of 5"),
    # masked columns: only selected as they are
    ("SELECT id FROM {s}.customers WHERE email = 'guess@example.org'", "masked_column", "`email` is masked"),
    ("SELECT id FROM {s}.customers WHERE email LIKE 'a%'", "masked_column", "`email` is masked"),
    ("SELECT upper(email) FROM {s}.customers", "masked_column", "`email` is masked"),
    ("SELECT email AS id FROM {s}.customers ORDER BY id", "masked_column", "`id` is masked"),
    ("SELECT email FROM {s}.customers ORDER BY 1", "masked_column", "masked"),
    ("SELECT length(phone) AS n FROM {s}.customers", "masked_column", "`phone` is masked"),
    ("SELECT c.id FROM {s}.customers c JOIN {s}.orders o ON o.note = c.email", "masked_column", "`email`"),
    (
        "WITH x AS (SELECT email AS e FROM {s}.customers) SELECT e FROM x WHERE e > 'm'",
        "masked_column",
        "`e`",
    ),
    ("SELECT email FROM {s}.customers UNION SELECT 'guess@example.org'", "masked_column", "set operation"),
    ("SELECT (SELECT email FROM {s}.customers LIMIT 1) AS e", "masked_column", "subquery"),
    ("SELECT DISTINCT email FROM {s}.customers", "masked_column", "DISTINCT"),
    ("SELECT count(*) AS n FROM {s}.customers GROUP BY email", "masked_column", "`email`"),
    ("SELECT row_number() OVER (ORDER BY phone) AS r FROM {s}.customers", "masked_column", "`phone`"),
    ("SELECT ssn FROM {s}.customers", "column", "column `ssn` could not be resolved"),
    ("SELECT c FROM {s}.customers c", "column", "could not be resolved"),
    ("SELECT row_to_json(c) FROM {s}.customers c", "unknown_function", "`row_to_json`"),
]


def _policy(schema: str) -> str:
    readable = [f"pg.{schema}.customers", f"pg.{schema}.orders", f"pg.{schema}.big"]
    read = {"tables": readable, "production": True, "timeout_ms": 300}
    document = {
        "version": 1,
        "agents": {
            "reader": {
                "grants": [
                    {"id": "reads", "tool": "data.query", "max_rows": 5, "read": read},
                    {"id": "samples", "tool": "data.sample_rows", "max_rows": 5, "read": read},
                ]
            },
            "brancher": {
                "grants": [{"id": "branch-reads", "tool": "data.query", "read": {"tables": readable}}]
            },
        },
        "tables": masks_for("pg", schema),
    }
    return yaml.safe_dump(document)


def _gateway(make_gateway: GatewayFactory, pg_data: PgData) -> RunningGateway:
    warehouses = {"pg": {"kind": "postgres", "dsn": PG_DSN, "schema": pg_data.schema}}
    return make_gateway(
        _policy(pg_data.schema),
        agents=("reader", "brancher"),
        upstreams={},
        config={"warehouses": warehouses},
    )


def _text(result: Any) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


def _last_outcome(gw: RunningGateway, tool: str) -> Any:
    return [r for r in gw.audit() if r.kind == "outcome" and r.tool == tool][-1]


def _no_raw_value_anywhere(gw: RunningGateway, *answers: str) -> None:
    logged = json.dumps([[r.args, r.detail] for r in gw.audit()], default=str)
    for raw in RAW_VALUES:
        assert raw not in logged
        assert not any(raw in answer for answer in answers)


async def test_every_attack_on_data_query_is_refused_audited_with_its_rule_and_changes_nothing(
    make_gateway: GatewayFactory, pg_data: PgData
) -> None:
    gw = _gateway(make_gateway, pg_data)
    before = {t: pg_data.rows(t) for t in ("orders", "customers", "secret")}
    answers: list[str] = []
    async with connect(gw.url, gw.tokens["reader"]) as client:
        for template, kind, fragment in ATTACKS:
            sql = template.format(s=pg_data.schema)
            result = await client.call_tool("data.query", {"sql": sql})
            text = _text(result)
            answers.append(text)
            assert result.is_error, sql
            assert fragment in text, (sql, text)
            outcome = _last_outcome(gw, "data.query")
            intent = next(r for r in gw.audit() if r.kind == "intent" and r.call_id == outcome.call_id)
            assert outcome.status == "error" and intent.args == {"sql": sql}
            assert outcome.detail["facts"]["refused"] == kind, (sql, outcome.detail)
            assert outcome.detail["facts"]["rows_returned"] == 0
        over = await client.call_tool(
            "data.query", {"sql": f"SELECT id FROM {pg_data.schema}.orders", "limit": 6}
        )
        assert over.is_error and "over the row cap of 5" in _text(over)
        assert _last_outcome(gw, "data.query").detail["facts"]["refused"] == "row_cap"
        answers.append(_text(over))
    assert {t: pg_data.rows(t) for t in before} == before
    _no_raw_value_anywhere(gw, *answers)


async def test_a_query_over_its_timeout_is_cancelled_and_audited(
    make_gateway: GatewayFactory, pg_data: PgData
) -> None:
    gw = _gateway(make_gateway, pg_data)
    s = pg_data.schema
    async with connect(gw.url, gw.tokens["reader"]) as client:
        slow = await client.call_tool(
            "data.query", {"sql": f"SELECT count(*) AS n FROM {s}.big a, {s}.big b, {s}.big c"}
        )
    assert slow.is_error and "statement timeout of 300 ms" in _text(slow)
    facts = _last_outcome(gw, "data.query").detail["facts"]
    assert facts["refused"] == "timeout" and facts["tables"] == [f"pg.{s}.big"]


async def test_a_granted_read_returns_masked_rows_and_the_record_names_tables_columns_and_count(
    make_gateway: GatewayFactory, pg_data: PgData
) -> None:
    gw = _gateway(make_gateway, pg_data)
    s = pg_data.schema
    async with connect(gw.url, gw.tokens["reader"]) as client:
        read = await client.call_tool(
            "data.query", {"sql": f"SELECT id, email, phone FROM {s}.customers -- ; DROP TABLE {s}.orders"}
        )
        sample = await client.call_tool(
            "data.sample_rows",
            {"table": f"pg.{s}.customers", "where": [{"column": "name", "op": "=", "value": "Ada"}]},
        )
        filtered = await client.call_tool(
            "data.sample_rows",
            {"table": f"pg.{s}.customers", "where": [{"column": "phone", "op": "is_null"}]},
        )
    assert not read.is_error, _text(read)
    body = read.structured_content
    assert body is not None and body["columns"] == ["id", "email", "phone"] and body["row_count"] == 3
    assert all(row[1].startswith("hmac:") for row in body["rows"])
    facts = [r for r in gw.audit() if r.kind == "outcome" and r.tool == "data.query"][-1].detail["facts"]
    assert facts == {
        "branch": "main",
        "warehouse": "pg",
        "tables": [f"pg.{s}.customers"],
        "columns": ["id", "email", "phone"],
        "masked": {"email": "hash", "phone": "partial"},
        "rows_returned": 3,
        "truncated": False,
        "max_rows": 5,
    }
    assert pg_data.rows("orders")  # the comment stayed a comment
    assert not sample.is_error and sample.structured_content is not None
    assert [row[1] for row in sample.structured_content["rows"]] == ["Ada"]
    assert filtered.is_error and "`phone` is masked (partial)" in _text(filtered)
    refused = _last_outcome(gw, "data.sample_rows")
    assert refused.status == "error" and refused.detail["facts"]["refused"] == "masked_column"
    _no_raw_value_anywhere(gw, _text(read), _text(sample), _text(filtered))


async def test_a_grant_without_production_reads_only_branches(
    make_gateway: GatewayFactory, pg_data: PgData
) -> None:
    gw = _gateway(make_gateway, pg_data)
    async with connect(gw.url, gw.tokens["brancher"]) as client:
        on_main = await client.call_tool("data.query", {"sql": f"SELECT id FROM {pg_data.schema}.orders"})
        no_branch = await client.call_tool(
            "data.query", {"sql": f"SELECT id FROM {pg_data.schema}.orders", "branch": "fix"}
        )
    assert on_main.is_error and "reads branches only" in _text(on_main)
    assert no_branch.is_error and "has no branch `fix`" in _text(no_branch)
    records = [r for r in gw.audit() if r.kind == "outcome" and r.tool == "data.query"]
    assert [r.detail["facts"]["refused"] for r in records] == ["production_not_granted", "UnknownTable"]
