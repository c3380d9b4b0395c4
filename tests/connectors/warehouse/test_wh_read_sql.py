"""``sqlcheck``: what a read-only query may be, how masked columns are confined, and the SQL text that
runs (PostgreSQL, DuckDB for Iceberg, Snowflake as text: no Snowflake is reachable here)."""

from __future__ import annotations

import pytest

from mcp_gateway.connectors.warehouse.base import Predicate, QueryRefused, UnknownTable
from mcp_gateway.connectors.warehouse.read_snowflake import SnowflakeReader
from mcp_gateway.connectors.warehouse.sqlcheck import TableRef, parse_query, plan_query, real_tables
from mcp_gateway.policy.masking import ColumnMask

CUSTOMERS = TableRef("crm", "customers")
ORDERS = TableRef("crm", "orders")
COLUMNS = {CUSTOMERS: ["id", "name", "email"], ORDERS: ["id", "customer_id", "amount"]}
MASKS = {CUSTOMERS: {"email": ColumnMask(mode="hash")}}


def _plan(sql: str, dialect: str = "postgres", cap: int = 10) -> tuple[str, list[str | None], bool]:
    root = parse_query(sql, dialect)
    plan, cut = plan_query(root, dialect, COLUMNS, MASKS, lambda r: ["crm", f"{r.name}__branch__fix"], cap)
    return plan.sql, [m.mode if m else None for m in plan.masks], cut


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("", "syntax"),
        ("SELEC id FROM crm.orders", "syntax"),
        ("SELECT 1; SELECT 2", "multiple_statements"),
        ("SELECT 1 ; DELETE FROM crm.orders", "multiple_statements"),
        ("SELECT 1 /* */ ; /* */ DROP TABLE crm.orders", "multiple_statements"),
        ("UPDATE crm.orders SET amount = 0", "not_a_select"),
        (
            "MERGE INTO crm.orders o USING crm.orders p ON o.id = p.id WHEN MATCHED THEN DELETE",
            "not_a_select",
        ),
        ("CREATE TABLE crm.x AS SELECT 1", "not_a_select"),
        ("CALL crm.proc()", "not_a_select"),
        ("VALUES (1)", "not_a_select"),
        ("SELECT * INTO crm.copy FROM crm.orders", "write"),
        ("WITH u AS (UPDATE crm.orders SET amount = 0 RETURNING id) SELECT id FROM u", "write"),
        ("SELECT id FROM crm.orders FOR SHARE", "locking"),
        ("SELECT id FROM crm.orders WHERE id = $1", "parameter"),
        ("SELECT id FROM crm.orders o, LATERAL (SELECT o.id AS x) l", "lateral"),
        ("WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r) SELECT n FROM r", "recursive"),
        ("SELECT id FROM crm.orders FETCH FIRST 1 ROWS ONLY", "row_cap"),
        ("SELECT pg_sleep(1)", "denied_function"),
        ("SELECT PG_SLEEP(1)", "denied_function"),
        ('SELECT "pg_sleep"(1)', "denied_function"),
        ("SELECT pg_catalog.pg_read_binary_file('/etc/shadow')", "denied_function"),
        ("SELECT lo_export(1, '/tmp/x')", "denied_function"),
        ("SELECT txid_current()", "denied_function"),
        ("SELECT nextval('crm.seq')", "denied_function"),
        ("SELECT ts_stat('select 1')", "denied_function"),
        ("SELECT version()", "denied_function"),
        ("SELECT unknown_fn(1)", "unknown_function"),
        ("SELECT * FROM generate_series(1, 10)", "table_function"),
        ("SELECT * FROM orders", "unqualified_table"),
    ],
)
def test_a_query_that_is_not_one_plain_read_is_refused_before_anything_runs(sql: str, kind: str) -> None:
    with pytest.raises(QueryRefused) as refused:
        root = parse_query(sql, "postgres")
        real_tables(root)
    assert refused.value.kind == kind


def test_duckdb_file_and_network_readers_are_refused_for_iceberg_queries() -> None:
    for sql in ("SELECT * FROM read_csv('/etc/passwd')", "SELECT getenv('HOME')", "SELECT * FROM glob('*')"):
        with pytest.raises(QueryRefused) as refused:
            real_tables(parse_query(sql, "duckdb"))
        assert refused.value.kind in ("denied_function", "table_function"), sql


def test_real_tables_are_found_in_ctes_subqueries_and_joins_but_ctes_are_not_tables() -> None:
    sql = (
        "WITH recent AS (SELECT * FROM crm.orders WHERE id > 1) "
        "SELECT c.id FROM crm.customers c JOIN recent r ON r.customer_id = c.id "
        "WHERE c.id IN (SELECT customer_id FROM wh.crm.secret)"
    )
    found = real_tables(parse_query(sql, "postgres"))
    assert sorted(found) == [CUSTOMERS, ORDERS, TableRef("crm", "secret")]
    assert next(t for t in found if t.name == "secret").catalog == "wh"


def test_identifiers_are_normalized_as_the_database_does() -> None:
    assert real_tables(parse_query('SELECT 1 FROM CRM.Orders, "CRM"."Orders"', "postgres")) == [
        ORDERS,
        TableRef("CRM", "Orders"),
    ]
    assert real_tables(parse_query("SELECT 1 FROM crm.orders", "snowflake")) == [TableRef("CRM", "ORDERS")]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT id FROM crm.customers WHERE email IS NULL",
        "SELECT c.id FROM crm.customers c JOIN crm.customers d ON c.email = d.email",
        "SELECT c.id FROM crm.customers c JOIN crm.customers d USING (email)",
        "SELECT email || '' AS e FROM crm.customers",
        "SELECT CAST(email AS int) AS e FROM crm.customers",
        "SELECT (email) AS e FROM crm.customers",
        "SELECT CASE WHEN email > 'm' THEN 1 END AS e FROM crm.customers",
        "SELECT max(email) AS e FROM crm.customers",
        "SELECT count(email) AS e FROM crm.customers",
        "SELECT email FROM crm.customers GROUP BY email",
        "SELECT id FROM crm.customers GROUP BY id HAVING min(email) > 'a'",
        "SELECT email AS x FROM crm.customers ORDER BY x",
        "SELECT email FROM crm.customers ORDER BY 1 DESC",
        "SELECT DISTINCT email FROM crm.customers",
        "SELECT email FROM crm.customers INTERSECT SELECT 'guess'",
        "SELECT email FROM crm.customers EXCEPT SELECT 'guess'",
        "SELECT email FROM crm.customers UNION ALL SELECT name FROM crm.customers",
        "SELECT id FROM crm.orders WHERE EXISTS (SELECT 1 FROM crm.customers c WHERE c.email = 'guess')",
        "SELECT id FROM crm.orders o WHERE customer_id = (SELECT id FROM crm.customers WHERE email = 'g')",
        "SELECT (SELECT email FROM crm.customers LIMIT 1) AS e FROM crm.orders",
        "WITH x AS (SELECT email AS e FROM crm.customers) SELECT e FROM x ORDER BY e",
        "WITH x AS (SELECT email AS e FROM crm.customers) SELECT lower(e) AS l FROM x",
        "SELECT t.e FROM (SELECT email AS e FROM crm.customers) t WHERE t.e LIKE 'a%'",
        "SELECT row_number() OVER (PARTITION BY email) AS r FROM crm.customers",
        "SELECT id FROM crm.customers LIMIT (SELECT length(email) FROM crm.customers LIMIT 1)",
    ],
)
def test_a_masked_column_cannot_leave_a_plain_projection_by_any_route(sql: str) -> None:
    with pytest.raises(QueryRefused) as refused:
        _plan(sql)
    assert refused.value.kind in ("masked_column", "row_cap"), refused.value
    assert "guess" not in str(refused.value)


def test_a_masked_column_selected_as_it_is_carries_its_mask_through_ctes_derived_tables_and_stars() -> None:
    assert _plan("SELECT * FROM crm.customers")[1] == [None, None, "hash"]
    assert _plan(
        "SELECT c.email AS contact, o.amount FROM crm.customers c JOIN crm.orders o ON o.customer_id = c.id"
    )[1] == ["hash", None]
    assert _plan(
        "WITH x AS (SELECT email AS e, id FROM crm.customers) SELECT t.* FROM (SELECT e, id FROM x) t"
    )[1] == ["hash", None]
    assert _plan("SELECT name FROM crm.customers UNION SELECT 'n'")[1] == [None]


def test_the_sql_that_runs_is_generated_from_the_checked_tree_with_physical_names_and_the_row_cap() -> None:
    sql, masks, cut = _plan(
        "WITH big AS (SELECT * FROM crm.orders WHERE amount > 100) -- ; DROP TABLE crm.orders\n"
        "SELECT b.id, c.email FROM big b JOIN crm.customers c ON c.id = b.customer_id /* hidden */"
    )
    assert sql == (
        'WITH "_q1" AS (SELECT "orders"."id" AS "id", "orders"."customer_id" AS "customer_id", '
        '"orders"."amount" AS "amount" FROM "crm"."orders__branch__fix" AS "orders" '
        'WHERE "orders"."amount" > 100) SELECT "b"."id" AS "id", "c"."email" AS "email" '
        'FROM "_q1" AS "b" JOIN "crm"."customers__branch__fix" AS "c" '
        'ON "c"."id" = "b"."customer_id" LIMIT 11'
    )
    assert masks == [None, "hash"] and cut is True
    assert _plan("SELECT id FROM crm.orders LIMIT 3")[0].endswith("LIMIT 3")
    with pytest.raises(QueryRefused, match="over the row cap of 10"):
        _plan("SELECT id FROM crm.orders LIMIT 11")
    with pytest.raises(QueryRefused, match="whole number"):
        _plan("SELECT id FROM crm.orders LIMIT 1 + 1")


def test_snowflake_reads_are_generated_as_text_with_quoted_identifiers_and_bound_values() -> None:
    reader = SnowflakeReader("ANALYTICS", "CRM", {})
    root = parse_query("SELECT c.email, count(*) AS n FROM crm.customers c GROUP BY c.email", "snowflake")
    assert real_tables(root) == [TableRef("CRM", "CUSTOMERS")]
    columns = {TableRef("CRM", "CUSTOMERS"): ["ID", "EMAIL"]}
    plan, cut = plan_query(root, "snowflake", columns, {}, lambda r: reader.physical(r, "fix"), 50)
    assert plan.sql == (
        'SELECT "C"."EMAIL" AS "EMAIL", COUNT(*) AS "N" '
        'FROM "ANALYTICS"."CRM"."CUSTOMERS__branch__fix" AS "C" GROUP BY "C"."EMAIL" LIMIT 51'
    )
    assert cut is True
    assert reader.sql.timeout(2500) == "ALTER SESSION SET STATEMENT_TIMEOUT_IN_SECONDS = 3"
    text, params = reader.sql.sample(
        "CUSTOMERS", [Predicate(column="ID", op="in", value=[1, 2])], ["ID", "EMAIL"], 21
    )
    assert text == 'SELECT "ID", "EMAIL" FROM "ANALYTICS"."CRM"."CUSTOMERS" WHERE "ID" IN (?, ?) LIMIT 21'
    assert params == [1, 2]
    assert reader.sql.ordered_columns().endswith("ORDER BY ORDINAL_POSITION")
    with pytest.raises(UnknownTable):
        reader.physical(TableRef("CRM", "_GATEWAY_BRANCHES"), None)
