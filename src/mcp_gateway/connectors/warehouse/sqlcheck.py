"""Read-only SQL for ``data.query``: parsed, checked and rewritten with sqlglot before anything runs.

    parse_query   one statement, a SELECT (or a set operation of SELECTs), nothing that writes, locks,
                  sets, copies or calls out; no function on the deny list, no function sqlglot does not
                  know (an unknown name is refused, not guessed at); identifiers normalized per dialect
    real_tables   every table that is not a CTE (resolved by sqlglot's scopes, as the database scopes
                  them), each of which must be ``<namespace>.<table>`` (or ``<warehouse>.<ns>.<table>``)
    plan_query    columns qualified against the readable schema (``*`` expanded; a dropped column does
                  not exist), masked columns checked (``sqlmask.py``), tables rewritten to their physical
                  names, CTEs renamed, the row cap set as ``LIMIT``; the SQL text that runs is generated
                  from the checked tree (comments dropped), never the agent's text

The database still runs the statement in a read-only transaction with a timeout: these checks are what
keeps masked values and ungranted tables out of reach, the transaction is defence in depth.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp
from sqlglot.errors import OptimizeError, ParseError, TokenError
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, traverse_scope
from sqlglot.schema import MappingSchema

from mcp_gateway.connectors.warehouse.base import QueryRefused
from mcp_gateway.connectors.warehouse.sqlmask import output_masks
from mcp_gateway.policy.masking import ColumnMask

# Functions that read files, reach the network, sleep, change settings, run SQL given as text, take
# locks, touch sequences or large objects, or signal other sessions. Unknown functions are refused
# anyway; this list names the ones worth a clear message, and blocks them even where sqlglot knows them.
DENIED_FUNCTIONS = frozenset(
    {
        "current_setting",
        "set_config",
        "version",
        "nextval",
        "setval",
        "currval",
        "lastval",
        "ts_stat",
        "query_to_xml",
        "query_to_xml_and_xmlschema",
        "query_to_xmlschema",
        "table_to_xml",
        "cursor_to_xml",
        "schema_to_xml",
        "database_to_xml",
        "read_csv",
        "read_csv_auto",
        "read_parquet",
        "read_json",
        "read_json_auto",
        "read_text",
        "read_blob",
        "getenv",
        "glob",
        "system",
        "copy",
        "load_file",
        "sleep",
        "benchmark",
    }
)
DENIED_PREFIXES = ("pg_", "lo_", "dblink", "txid_", "system$", "inet_", "duckdb_", "sys_", "xp_")
_DENIED_CLASSES: tuple[type[exp.Expression], ...] = (exp.ReadCSV, exp.ReadParquet, exp.NextValueFor)

# Statement shapes that are not a plain read, wherever they appear (a data-modifying CTE included).
_FORBIDDEN: dict[str, str] = {
    "DDL": "write",
    "DML": "write",
    "Alter": "write",
    "Drop": "write",
    "TruncateTable": "write",
    "Merge": "write",
    "Into": "write",
    "Returning": "write",
    "OnConflict": "write",
    "Command": "not_a_select",
    "Copy": "write",
    "LoadData": "write",
    "Export": "write",
    "Put": "write",
    "Get": "write",
    "Lock": "locking",
    "LockingStatement": "locking",
    "Set": "session",
    "SetItem": "session",
    "AlterSession": "session",
    "Use": "session",
    "Pragma": "session",
    "Transaction": "session",
    "Commit": "session",
    "Rollback": "session",
    "Declare": "session",
    "Kill": "session",
    "Grant": "write",
    "Revoke": "write",
    "Analyze": "write",
    "Cache": "write",
    "Uncache": "write",
    "Refresh": "write",
    "Attach": "session",
    "Detach": "session",
    "Install": "session",
    "Describe": "not_a_select",
    "Show": "not_a_select",
    "Summarize": "not_a_select",
    "UserDefinedFunction": "write",
    "Placeholder": "parameter",
    "Parameter": "parameter",
    "SessionParameter": "parameter",
    "Lateral": "lateral",
    "Fetch": "row_cap",
}
_QUOTED_COLUMN = re.compile(r"""Column '"?([^"']*)"?'""")
_FORBIDDEN_CLASSES: tuple[tuple[type[exp.Expression], str], ...] = tuple(
    (getattr(exp, name), kind) for name, kind in _FORBIDDEN.items() if hasattr(exp, name)
)


@dataclass(frozen=True, order=True)
class TableRef:
    """A table as the query names it, normalized: ``namespace.name`` (``catalog`` when written)."""

    namespace: str
    name: str
    catalog: str | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return f"{self.namespace}.{self.name}"


@dataclass(frozen=True)
class QueryPlan:
    """What runs: the SQL text, and what each output column is.

    Attributes:
        sql: the generated statement.
        columns: the output column names, in order.
        masks: the mask of each output column (None: unmasked), in order.
        tables: the real tables read.
    """

    sql: str
    columns: tuple[str, ...]
    masks: tuple[ColumnMask | None, ...]
    tables: tuple[TableRef, ...]


def _function_name(node: exp.Func) -> str:
    name: str = node.name if isinstance(node, exp.Anonymous) else node.sql_name()  # type: ignore[no-untyped-call]  # sqlglot leaves it untyped
    return name.casefold()


def _check_function(node: exp.Func) -> None:
    name = _function_name(node)
    if isinstance(node, _DENIED_CLASSES) or name in DENIED_FUNCTIONS or name.startswith(DENIED_PREFIXES):
        raise QueryRefused("denied_function", f"function `{name}` is on the deny list")
    if isinstance(node, exp.Anonymous):
        raise QueryRefused(
            "unknown_function",
            f"function `{name}` is not allowed: only functions the gateway's SQL parser knows may be used",
        )


def parse_query(sql: str, dialect: str) -> exp.Query:
    """Parse ``sql`` as exactly one read-only query in ``dialect``.

    Raises:
        QueryRefused: it does not parse, is not exactly one SELECT, or uses a forbidden construct or
            function (the message names the rule and the construct, never a value).
    """
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except (ParseError, TokenError):
        raise QueryRefused("syntax", f"the query does not parse as {dialect} SQL") from None
    if len(statements) != 1:
        raise QueryRefused(
            "multiple_statements" if statements else "syntax",
            f"exactly one statement may run, got {len(statements)}",
        )
    root = statements[0]
    if not isinstance(root, exp.Select | exp.SetOperation):
        raise QueryRefused("not_a_select", f"only a SELECT may run, not `{root.key.upper()}`")
    for node in root.walk():
        for cls, kind in _FORBIDDEN_CLASSES:
            if isinstance(node, cls):
                what = "FETCH FIRST (use LIMIT)" if kind == "row_cap" else node.key.upper()
                raise QueryRefused(kind, f"`{what}` is not allowed in a read-only query")
        if isinstance(node, exp.With) and node.args.get("recursive"):
            raise QueryRefused("recursive", "recursive CTEs are not allowed")
        if isinstance(node, exp.Func):
            _check_function(node)
    normalized = normalize_identifiers(root, dialect=dialect)
    assert isinstance(normalized, exp.Query)  # noqa: S101 - normalizing keeps the node type
    return normalized


def _scopes(root: exp.Query) -> list[Scope]:
    try:
        return list(traverse_scope(root))
    except OptimizeError as exc:
        raise QueryRefused("syntax", f"the query's scopes cannot be resolved ({exc})"[:300]) from None


def _cte_refs(scopes: Sequence[Scope]) -> dict[int, exp.CTE]:
    """Table nodes that name a CTE visible where they stand (id → the CTE they name)."""
    refs: dict[int, exp.CTE] = {}
    for scope in scopes:
        for node, source in scope.selected_sources.values():
            if isinstance(node, exp.Table) and isinstance(source, Scope):
                cte = source.expression.parent
                if isinstance(cte, exp.CTE):
                    refs[id(node)] = cte
    return refs


def real_tables(root: exp.Query) -> list[TableRef]:
    """The tables ``root`` reads that are not CTEs, in order of appearance, without repeats.

    Raises:
        QueryRefused: a table is a function call, or is not qualified with its namespace.
    """
    ctes = _cte_refs(_scopes(root))
    out: list[TableRef] = []
    for node in root.find_all(exp.Table):
        if id(node) in ctes:
            continue
        if not isinstance(node.this, exp.Identifier):
            raise QueryRefused("table_function", "table functions are not allowed in FROM")
        if not node.db:
            raise QueryRefused(
                "unqualified_table",
                f"table `{node.name}` is neither a CTE nor `<namespace>.<table>`: name its namespace",
            )
        ref = TableRef(node.db, node.name, node.catalog or None)
        if ref not in out:
            out.append(ref)
    return out


def _set_row_cap(root: exp.Query, max_rows: int) -> tuple[exp.Query, bool]:
    """``root`` with a LIMIT within ``max_rows``; True when the cap + 1 was added (truncation shows)."""
    limit = root.args.get("limit")
    if limit is None:
        return root.limit(max_rows + 1, copy=False), True
    value = limit.expression if isinstance(limit, exp.Limit) else None
    if not isinstance(value, exp.Literal) or value.is_string or not str(value.this).isdigit():
        raise QueryRefused("row_cap", "LIMIT must be a whole number")
    if int(value.this) > max_rows:
        raise QueryRefused("row_cap", f"LIMIT {value.this} is over the row cap of {max_rows}")
    return root, False


def plan_query(
    root: exp.Query,
    dialect: str,
    columns: Mapping[TableRef, Sequence[str]],
    masks: Mapping[TableRef, Mapping[str, ColumnMask]],
    physical: Callable[[TableRef], Sequence[str]],
    max_rows: int,
) -> tuple[QueryPlan, bool]:
    """Qualify, mask-check and rewrite ``root`` (from ``parse_query``) into the SQL that runs.

    Args:
        columns: each real table's readable columns (dropped columns left out), by ``TableRef``.
        masks: each real table's masks (``policy.masking.table_masks``), hash/partial ones matter here.
        physical: the quoted-name parts of the relation a table reads (a branch table, a registered view).
        max_rows: the row cap; a larger ``LIMIT`` is refused, none gets ``LIMIT max_rows + 1``.

    Returns:
        The plan, and whether the caller must cut the answer at ``max_rows`` (True: LIMIT cap + 1).

    Raises:
        QueryRefused: an unknown column, a masked column used beyond a plain projection, a LIMIT over
            the cap, a ``*`` that cannot be expanded.
    """
    tree = root.copy()
    for node in tree.find_all(exp.Table):
        node.set("catalog", None)  # the warehouse part was checked by the caller
    nested: dict[str, dict[str, dict[str, str]]] = {}
    for ref, cols in columns.items():
        nested.setdefault(ref.namespace, {})[ref.name] = dict.fromkeys(cols, "text")
    # Names are the database's own (not normalized again): a quoted "Email" stays "Email".
    schema = MappingSchema(nested, dialect=dialect, normalize=False)
    try:
        qualified = qualify(
            tree, dialect=dialect, schema=schema, infer_schema=False, identify=True, expand_stars=True
        )
    except OptimizeError as exc:
        # sqlglot says `Column '"x"' could not be resolved`: restate it in the house style.
        said = _QUOTED_COLUMN.sub(lambda m: f"column `{m.group(1)}`", str(exc))
        raise QueryRefused("column", (said[:1].lower() + said[1:])[:300]) from None
    assert isinstance(qualified, exp.Query)  # noqa: S101 - qualifying keeps the node type
    for star in qualified.find_all(exp.Star):
        if not isinstance(star.parent, exp.Count):
            raise QueryRefused("column", "`*` could not be expanded here: name the columns")
    scopes = _scopes(qualified)
    ctes = _cte_refs(scopes)

    def table_masks(node: exp.Table) -> Mapping[str, ColumnMask]:
        return masks.get(TableRef(node.db, node.name), {})

    out_masks = output_masks(qualified, scopes, table_masks)
    tables: list[TableRef] = []
    renamed: dict[int, str] = {}
    for node in list(qualified.find_all(exp.Table)):
        cte = ctes.get(id(node))
        if cte is not None:
            new = renamed.setdefault(id(cte), f"_q{len(renamed) + 1}")
            alias = node.alias or node.name
            node.set("this", exp.to_identifier(new, quoted=True))
            node.set("alias", exp.TableAlias(this=exp.to_identifier(alias, quoted=True)))
            continue
        ref = TableRef(node.db, node.name)
        if ref not in columns:
            raise QueryRefused("table_not_granted", f"table `{ref}` is not readable")
        if ref not in tables:
            tables.append(ref)
        parts = [exp.to_identifier(p, quoted=True) for p in physical(ref)]
        alias = node.alias or node.name
        node.set("this", parts[-1])
        node.set("db", parts[-2] if len(parts) > 1 else None)
        node.set("catalog", parts[-3] if len(parts) > 2 else None)
        node.set("alias", exp.TableAlias(this=exp.to_identifier(alias, quoted=True)))
    for cte in list(qualified.find_all(exp.CTE)):
        cte_alias = cte.args.get("alias")
        if id(cte) in renamed and isinstance(cte_alias, exp.TableAlias):
            cte_alias.set("this", exp.to_identifier(renamed[id(cte)], quoted=True))
    capped, cut = _set_row_cap(qualified, max_rows)
    plan = QueryPlan(
        sql=capped.sql(dialect=dialect, comments=False, identify=True),
        columns=tuple(capped.named_selects),
        masks=tuple(out_masks),
        tables=tuple(tables),
    )
    return plan, cut
