"""The read tools of the ``data`` toolset: ``data.sample_rows`` and ``data.query``, bounded and masked.

An agent fixing data must first find the bad rows. ``data.sample_rows`` takes a table, structured
predicates (as ``data.update_rows``) and a limit; ``data.query`` takes one read-only SELECT, checked
and rewritten by ``connectors/warehouse/sqlcheck.py`` before it runs. Both read only what the grant's
``read`` limits allow::

    - tool: data.query
      max_rows: 50                      # the row cap (default 100, never over 1,000)
      read:
        tables: ["pg.crm.*"]            # fnmatch patterns of `<warehouse>.<namespace>.<table>`
        production: true                # may read production (default false: branches only)
        timeout_ms: 2000                # default: the warehouse's statement_timeout_ms; at most 30 s

and mask what the policy's ``tables:`` rules mask (``policy/masking.py``): a dropped column does not
exist for these tools; a hashed or partly masked column may only be selected as it is, and its values
are masked in the rows returned. The outcome audit record holds the warehouse, tables, branch, output
columns, masks and row count, never a row. A refusal is a tool error whose audit record says which
rule refused it (``refused``).
"""

from __future__ import annotations

import fnmatch
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio.to_thread
import sqlglot
from pydantic import Field
from sqlglot import exp

from mcp_gateway.audit.keys import HMAC_KEY_NAME
from mcp_gateway.connectors.warehouse.base import (
    MAIN_BRANCH,
    Check,
    Predicate,
    QueryRefused,
    UnknownTable,
    WarehouseError,
    split_table,
)
from mcp_gateway.connectors.warehouse.config import IcebergSettings, PostgresSettings, SnowflakeSettings
from mcp_gateway.connectors.warehouse.reading import HARD_TIMEOUT_MS, Reader, Rows, open_reader
from mcp_gateway.connectors.warehouse.sqlcheck import TableRef, parse_query, plan_query, real_tables
from mcp_gateway.errors import GatewayError
from mcp_gateway.policy.masking import ColumnMask, mask_for, mask_value, table_masks
from mcp_gateway.tools.base import BuiltinTool, ToolContext, ToolFailure, ToolInput
from mcp_gateway.types import SecretValue

AnySettings = IcebergSettings | PostgresSettings | SnowflakeSettings
DEFAULT_MAX_ROWS = 100
HARD_MAX_ROWS = 1000
DEFAULT_SAMPLE = 20

_BRANCH = Field(default=None, description="read this branch; production when omitted (if the grant allows)")
_LIMIT = Field(default=None, ge=1, description="rows wanted; over the grant's row cap is refused")


class SampleInput(ToolInput):
    table: str = Field(description="`<warehouse>.<namespace>.<table>`, e.g. `lake.sales.opportunities`")
    branch: str | None = _BRANCH
    where: list[Predicate] = Field(
        default_factory=list, description="all must hold; ops = != < <= > >= in is_null not_null"
    )
    columns: list[str] | None = Field(default=None, description="columns to return (default: all readable)")
    limit: int | None = _LIMIT


class QueryInput(ToolInput):
    sql: str = Field(
        min_length=1,
        max_length=20_000,
        description=(
            "one read-only SELECT; tables as `<namespace>.<table>` (or `<warehouse>.<namespace>.<table>`); "
            "masked columns may only be selected as they are"
        ),
    )
    warehouse: str | None = Field(default=None, description="the warehouse (default: the one the SQL names)")
    branch: str | None = _BRANCH
    limit: int | None = _LIMIT


class _Readers:
    """Opens each warehouse's reader on first use (resolving its secrets then) and keeps it."""

    def __init__(self, settings: Mapping[str, AnySettings], resolve: Callable[[str], SecretValue]) -> None:
        self.settings = dict(settings)
        self._resolve = resolve
        self._open: dict[str, Reader] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Reader:
        if name not in self.settings:
            raise QueryRefused("table_not_granted", f"unknown warehouse `{name}`")
        with self._lock:
            if name not in self._open:
                self._open[name] = open_reader(self.settings[name], self._resolve)
            return self._open[name]

    def close(self) -> None:
        with self._lock:
            for reader in self._open.values():
                reader.close()
            self._open.clear()


def row_cap(ctx: ToolContext, asked: int | None, default: int | None = None) -> int:
    """The rows this call may return: ``asked`` within the grant's cap (and ``HARD_MAX_ROWS``).

    Raises:
        QueryRefused: ``asked`` is over the cap.
    """
    cap = min(int(ctx.grant_limits.get("max_rows", DEFAULT_MAX_ROWS)), HARD_MAX_ROWS)
    if asked is not None and asked > cap:
        raise QueryRefused("row_cap", f"limit {asked} is over the row cap of {cap}")
    return asked if asked is not None else min(default or cap, cap)


def _branch(value: str | None) -> str | None:
    return None if value in (None, MAIN_BRANCH) else value


def check_access(ctx: ToolContext, tables: Sequence[str], branch: str | None) -> None:
    """Refuse unless the grant's ``read`` limits allow every table and this branch (or production)."""
    read = ctx.grant_limits.get("read") or {}
    patterns = tuple(read.get("tables") or ())
    for table in tables:
        if not any(fnmatch.fnmatchcase(table, p) for p in patterns):
            raise QueryRefused("table_not_granted", f"table `{table}` is not readable under this grant")
    if branch is None and not read.get("production", False):
        raise QueryRefused("production_not_granted", "this grant reads branches only: pass `branch`")
    if branch is not None and not read.get("branches", True):
        raise QueryRefused("branch_not_granted", "this grant reads production only")


def refuse_masked_metrics(ctx: ToolContext, table: str, checks: Sequence[Check]) -> None:
    """Refuse an agent's ``min``/``max``/``freshness_seconds`` check on a masked column (for
    ``data.query_quality_metrics``): its value is a raw value of the column. Counts stay allowed."""
    masks = table_masks(ctx.policy_extra.get("tables") or {}, table)
    for check in checks:
        if check.metric in ("min", "max", "freshness_seconds") and check.column:
            if (mask := mask_for(masks, check.column)) is not None:
                raise ToolFailure(
                    f"column `{check.column}` of `{table}` is masked ({mask.mode}): "
                    f"metric `{check.metric}` would show a raw value",
                    {"refused": "masked_column"},
                )


def _timeout(ctx: ToolContext, reader: Reader) -> int:
    asked = (ctx.grant_limits.get("read") or {}).get("timeout_ms")
    return min(int(asked or reader.default_timeout_ms), HARD_TIMEOUT_MS)


def _readable(columns: Sequence[str], masks: Mapping[str, ColumnMask]) -> list[str]:
    return [c for c in columns if (m := mask_for(masks, c)) is None or m.mode != "drop"]


def _guess_warehouse(sql: str, readers: _Readers) -> str:
    if len(readers.settings) == 1:
        return next(iter(readers.settings))
    try:
        named = {t.catalog for t in sqlglot.parse_one(sql).find_all(exp.Table) if t.catalog}
    except sqlglot.errors.SqlglotError:
        named = set()
    found = [name for name in readers.settings if name in named]
    if len(found) != 1:
        raise QueryRefused("table_not_granted", "pass `warehouse`, or name tables `<warehouse>.<ns>.<table>`")
    return found[0]


def _masked_rows(rows: Rows, masks: Sequence[ColumnMask | None], key: bytes | None) -> list[list[Any]]:
    return [
        [v if m is None else mask_value(v, m, key) for v, m in zip(row, masks, strict=True)]
        for row in rows.rows
    ]


def _refusal(exc: WarehouseError, facts: Mapping[str, Any]) -> ToolFailure:
    kind = exc.kind if isinstance(exc, QueryRefused) else type(exc).__name__
    return ToolFailure(str(exc), {"refused": kind, "rows_returned": 0, **facts})


def _hash_key(ctx: ToolContext, masks: Sequence[ColumnMask | None]) -> bytes | None:
    if not any(m is not None and m.mode == "hash" for m in masks):
        return None
    try:
        if ctx.resolve_secret is None:
            raise GatewayError("no vault")
        return ctx.resolve_secret(HMAC_KEY_NAME).reveal()
    except GatewayError:
        # Fail closed: without the key a hashed column cannot be shown at all.
        raise QueryRefused(
            "masked_column", "hashed columns need the vault unsealed: nothing was read"
        ) from None


def build_read_tools(
    warehouses: Mapping[str, AnySettings], resolve_secret: Callable[[str], SecretValue]
) -> tuple[list[BuiltinTool[Any]], Callable[[], None]]:
    """``data.sample_rows`` and ``data.query`` over ``warehouses``, and a function closing their readers."""
    readers = _Readers(warehouses, resolve_secret)

    async def sample_rows(ctx: ToolContext, args: SampleInput) -> dict[str, Any]:
        branch = _branch(args.branch)
        facts: dict[str, Any] = {"tables": [args.table], "branch": branch or MAIN_BRANCH}
        masks_all = table_masks(ctx.policy_extra.get("tables") or {}, args.table)

        def work() -> tuple[Rows, list[ColumnMask | None], int]:
            cap = row_cap(ctx, args.limit, DEFAULT_SAMPLE)
            name, _, inner = args.table.partition(".")
            reader = readers.get(name)
            namespace, table = split_table(inner)
            check_access(ctx, [args.table], branch)
            ref = TableRef(namespace, table)
            known = reader.columns([ref], branch)[ref]
            readable = _readable(known, masks_all)
            for column in [*(args.columns or ()), *(p.column for p in args.where)]:
                if column not in readable:
                    raise UnknownTable(f"table `{args.table}` has no column `{column}`")
            for p in args.where:
                if (mask := mask_for(masks_all, p.column)) is not None:
                    raise QueryRefused(
                        "masked_column",
                        f"column `{p.column}` is masked ({mask.mode}) and cannot be filtered on",
                    )
            wanted = list(args.columns or readable)
            rows = reader.sample(ref, branch, args.where, wanted, cap + 1, _timeout(ctx, reader))
            return rows, [mask_for(masks_all, c) for c in rows.columns], cap

        try:
            rows, masks, cap = await anyio.to_thread.run_sync(work)
            key = _hash_key(ctx, masks)
        except WarehouseError as exc:
            raise _refusal(exc, facts) from exc
        return _answer(ctx, facts, rows, masks, key, cap)

    async def query(ctx: ToolContext, args: QueryInput) -> dict[str, Any]:
        branch = _branch(args.branch)
        facts: dict[str, Any] = {"branch": branch or MAIN_BRANCH}
        policy_tables = ctx.policy_extra.get("tables") or {}

        def plan() -> tuple[Any, Reader, dict[TableRef, list[str]], bool, int]:
            cap = row_cap(ctx, args.limit)
            name = args.warehouse or _guess_warehouse(args.sql, readers)
            facts["warehouse"] = name
            reader = readers.get(name)
            root = parse_query(args.sql, reader.dialect)
            refs = real_tables(root)
            full = {ref: f"{name}.{ref}" for ref in refs}
            facts["tables"] = sorted(full.values())
            for ref in refs:
                if ref.catalog is not None and ref.catalog.casefold() != name.casefold():
                    raise QueryRefused("table_not_granted", f"table `{ref.catalog}.{ref}` is not in `{name}`")
            check_access(ctx, list(full.values()), branch)
            masks = {ref: table_masks(policy_tables, full[ref]) for ref in refs}
            known = reader.columns(refs, branch)
            readable = {ref: _readable(cols, masks[ref]) for ref, cols in known.items()}
            checked, cut = plan_query(
                root, reader.dialect, readable, masks, lambda r: reader.physical(r, branch), cap
            )
            return checked, reader, readable, cut, cap

        try:
            checked, reader, readable, cut, cap = await anyio.to_thread.run_sync(plan)
            key = _hash_key(ctx, checked.masks)
            timeout = _timeout(ctx, reader)
            rows = await anyio.to_thread.run_sync(
                lambda: reader.run_query(checked, branch, readable, cap + 1 if cut else cap, timeout)
            )
        except WarehouseError as exc:
            raise _refusal(exc, facts) from exc
        return _answer(ctx, facts, rows, list(checked.masks), key, cap)

    tools: list[BuiltinTool[Any]] = [
        BuiltinTool(
            "data.sample_rows",
            "Read up to `limit` rows of a table (production or a branch) matching `where`; masked "
            "columns come back masked and cannot be filtered on.",
            SampleInput,
            sample_rows,
            read_only=True,
            idempotent=True,
        ),
        BuiltinTool(
            "data.query",
            "Run one read-only SELECT on a warehouse (production or a branch), capped in rows and time; "
            "masked columns may only be selected as they are and come back masked.",
            QueryInput,
            query,
            read_only=True,
            idempotent=True,
        ),
    ]
    return tools, readers.close


def _answer(
    ctx: ToolContext,
    facts: dict[str, Any],
    rows: Rows,
    masks: Sequence[ColumnMask | None],
    key: bytes | None,
    cap: int,
) -> dict[str, Any]:
    truncated = len(rows.rows) > cap
    shown = Rows(rows.columns, rows.rows[:cap])
    masked = {c: m.mode for c, m in zip(shown.columns, masks, strict=True) if m is not None}
    # The record names what was read, never a value.
    ctx.audit_detail.update(
        facts,
        columns=list(shown.columns),
        masked=masked,
        rows_returned=len(shown.rows),
        truncated=truncated,
        max_rows=cap,
    )
    return {
        **facts,
        "columns": list(shown.columns),
        "rows": _masked_rows(shown, masks, key),
        "row_count": len(shown.rows),
        "truncated": truncated,
        "masked": masked,
    }
