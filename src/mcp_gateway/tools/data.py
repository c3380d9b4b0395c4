"""The governed ``data`` toolset: "git for data" over the configured warehouses.

Agents clone a production table to a branch, fix rows there (structured predicates, a row cap from
the grant), measure the branch, and switch it in. Switch-in runs the table's policy checks on the
branch first, asks for approval when policy says so, and only fast-forwards. Production (``main``)
is never written in place. Tables are named ``<warehouse>.<namespace>.<table>``. A rollback that would
discard production commits made after the switch-in it undoes is refused, naming them, unless the call
says ``discard_later_commits: true`` (which a grant's ``approval: {when: [{args: ...}]}`` can send to a
human); what a rollback discarded goes on the audit record.

Policy sections read from ``ctx.policy_extra``:
    tables:  {fnmatch pattern: {switch_in_checks: [check, ...], switch_in_approval: bool,
              metrics: [named metric names agents may run],
              switch_in_dbt: {project: <dbt_core orchestrator>, select: <dbt selector>}}
             (an exact name wins over patterns; dbt tests run on the branch after the checks)
    metrics: {name: {sql: "SELECT ... FROM {table}", description: ...}}   (admin-trusted SQL)
"""

from __future__ import annotations

import fnmatch
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import anyio.to_thread
from pydantic import ConfigDict, Field, ValidationError

from mcp_gateway.connectors.warehouse.base import (
    Check,
    LaterCommitsFound,
    NamedMetric,
    Predicate,
    RowCapExceeded,
    Warehouse,
    WarehouseError,
)
from mcp_gateway.connectors.warehouse.metrics import judge, resolve_named
from mcp_gateway.connectors.warehouse.registry import AnySettings, WarehouseRegistry
from mcp_gateway.tools.base import BuiltinTool, NeedsApproval, ToolContext, ToolFailure, ToolInput, Toolset
from mcp_gateway.tools.data_read import refuse_masked_metrics
from mcp_gateway.types import SecretValue

T = TypeVar("T")
DbtGate = Callable[[str, str, Any], Awaitable[dict[str, Any]]]
"""``(table, branch, switch_in_dbt rule) -> result with passed / failed_tests`` (``tools/dbt_runs.py``)."""
DEFAULT_MAX_ROWS = 100

_TABLE = Field(description="`<warehouse>.<namespace>.<table>`, e.g. `lake.sales.opportunities`")
_BRANCH = Field(description="branch name: lowercase letters, digits, underscores; never `main`")


class CloneInput(ToolInput):
    table: str = _TABLE
    branch: str = _BRANCH


class UpdateInput(ToolInput):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    table: str = _TABLE
    branch: str = _BRANCH
    where: list[Predicate] = Field(
        min_length=1, description="all must hold; ops = != < <= > >= in is_null not_null"
    )
    values: dict[str, Any] = Field(alias="set", min_length=1, description="{column: new value}")


class DeleteInput(ToolInput):
    table: str = _TABLE
    branch: str = _BRANCH
    where: list[Predicate] = Field(min_length=1, description="all must hold")


class QualityInput(ToolInput):
    table: str = _TABLE
    branch: str | None = Field(default=None, description="measure this branch; production when omitted")
    checks: list[Check] = Field(
        default_factory=list, description="defaults to row_count + the switch-in checks"
    )
    metrics: list[str] = Field(default_factory=list, description="named metrics allowed for this table")


class SwitchInput(ToolInput):
    table: str = _TABLE
    branch: str = _BRANCH


class RollbackInput(ToolInput):
    table: str = _TABLE
    to_snapshot: str = Field(description="a snapshot/backup handle from an earlier switch_in or rollback")
    discard_later_commits: bool = Field(
        default=False,
        description=(
            "also discard production commits made after the switch-in being rolled back (a rollback "
            "that would discard any is refused, naming them, unless this is true); policy may ask "
            "a human to approve it"
        ),
    )


def table_rule(ctx: ToolContext, table: str) -> Mapping[str, Any]:
    """The policy rule for ``table``: the exact entry, else the first matching pattern, else none."""
    rules = ctx.policy_extra.get("tables") or {}
    if table in rules:
        return dict(rules[table])
    for pattern, rule in rules.items():
        if fnmatch.fnmatchcase(table, pattern):
            return dict(rule)
    return {}


def _named_metrics(ctx: ToolContext) -> dict[str, NamedMetric]:
    defined = ctx.policy_extra.get("metrics") or {}
    return {name: NamedMetric(name, str(spec["sql"])) for name, spec in defined.items() if "sql" in spec}


def _rule_checks(rule: Mapping[str, Any], table: str) -> list[Check]:
    try:
        return [Check.model_validate(c) for c in rule.get("switch_in_checks") or ()]
    except ValidationError as exc:
        raise ToolFailure(f"policy switch-in checks for `{table}` are invalid") from exc


def _failure(exc: WarehouseError) -> ToolFailure:
    detail: dict[str, Any] = {"error": type(exc).__name__}
    if isinstance(exc, RowCapExceeded):
        detail.update(rows_matched=exc.matched, max_rows=exc.max_rows, rows_written=0)
    if isinstance(exc, LaterCommitsFound):
        detail.update(later_commits=[c.as_dict() for c in exc.commits], rolled_back=False)
    return ToolFailure(str(exc), detail)


async def _dbt_tests(
    gate: DbtGate | None, ctx: ToolContext, table: str, branch: str, rule: Any, checks: list[Any]
) -> dict[str, Any]:
    """Run the table's ``switch_in_dbt`` tests on the branch (``tools/dbt_runs.py``); refuse if one fails."""
    if gate is None:
        raise ToolFailure(f"switch-in of `{table}` refused: its dbt tests need a `dbt_core` orchestrator")
    result = await gate(table, branch, rule)
    ctx.audit_detail.update(dbt_tests=result)
    if not result["passed"]:
        said = ", ".join(
            f"{t['name']} ({t['status']}, {t.get('failing_rows', 0)} failing rows)"
            for t in result["failed_tests"]
        )
        raise ToolFailure(
            f"switch-in of `{table}` refused, failing dbt tests: {said or result.get('message')}",
            {"checks": checks, "dbt_tests": result},
        )
    return result


def build_data_toolset(
    warehouses: Mapping[str, AnySettings],
    resolve_secret: Callable[[str], SecretValue],
    dbt_gate: DbtGate | None = None,
) -> Toolset:
    """The ``data`` toolset over ``warehouses`` (warehouse name → settings).

    Args:
        warehouses: parsed settings; the name is the first part of every table name.
        resolve_secret: vault lookup for ``secret://NAME`` references, used when a warehouse opens.
        dbt_gate: runs a table's ``switch_in_dbt`` tests on a branch (None: no dbt Core configured).
    """
    registry = WarehouseRegistry(warehouses, resolve_secret)

    async def call(table: str, fn: Callable[[Warehouse, str], T]) -> T:
        def work() -> T:
            name, inner = registry.split(table)
            return fn(registry.get(name), inner)

        try:
            return await anyio.to_thread.run_sync(work)
        except WarehouseError as exc:
            raise _failure(exc) from exc

    async def measure(
        ctx: ToolContext, table: str, branch: str | None, checks: Sequence[Check]
    ) -> list[dict[str, Any]]:
        try:
            named = resolve_named(checks, _named_metrics(ctx))
        except WarehouseError as exc:
            raise _failure(exc) from exc
        values = await call(table, lambda wh, t: wh.metrics(t, branch, checks, named))
        return [judge(c, v) for c, v in zip(checks, values, strict=True)]

    async def clone_table(ctx: ToolContext, args: CloneInput) -> dict[str, Any]:
        handle = await call(args.table, lambda wh, t: wh.clone(t, args.branch))
        name, _ = registry.split(args.table)
        caps = registry.get(name).capabilities
        ctx.audit_detail.update(branch=args.branch, branch_handle=handle)
        return {
            "table": args.table,
            "branch": args.branch,
            "handle": handle,
            "zero_copy": caps.zero_copy,
            "note": "branch is a zero-copy ref" if caps.zero_copy else "branch is a full copy of the table",
        }

    async def update_rows(ctx: ToolContext, args: UpdateInput) -> dict[str, Any]:
        cap = int(ctx.grant_limits.get("max_rows", DEFAULT_MAX_ROWS))
        count = await call(
            args.table, lambda wh, t: wh.update_rows(t, args.branch, args.where, args.values, cap)
        )
        ctx.audit_detail.update(branch=args.branch, rows_updated=count, max_rows=cap)
        return {"table": args.table, "branch": args.branch, "rows_updated": count}

    async def delete_rows(ctx: ToolContext, args: DeleteInput) -> dict[str, Any]:
        cap = int(ctx.grant_limits.get("max_rows", DEFAULT_MAX_ROWS))
        count = await call(args.table, lambda wh, t: wh.delete_rows(t, args.branch, args.where, cap))
        ctx.audit_detail.update(branch=args.branch, rows_deleted=count, max_rows=cap)
        return {"table": args.table, "branch": args.branch, "rows_deleted": count}

    async def query_quality_metrics(ctx: ToolContext, args: QualityInput) -> dict[str, Any]:
        rule = table_rule(ctx, args.table)
        allowed = set(rule.get("metrics") or ())
        asked = [*args.metrics, *(str(c.name) for c in args.checks if c.metric == "named")]
        for name in asked:
            if name not in allowed:
                raise ToolFailure(f"named metric `{name}` is not allowed for table `{args.table}`")
        refuse_masked_metrics(ctx, args.table, args.checks)
        checks = list(args.checks) or _rule_checks(rule, args.table)
        if not args.checks and not any(c.metric == "row_count" for c in checks):
            checks.insert(0, Check(metric="row_count"))
        # A named metric already among the checks (with its bounds) is not measured twice.
        measured = {c.name for c in checks if c.metric == "named"}
        checks += [Check(metric="named", name=n) for n in dict.fromkeys(args.metrics) if n not in measured]
        results = await measure(ctx, args.table, args.branch, checks)
        return {
            "table": args.table,
            "branch": args.branch or "main",
            "results": results,
            "passed": all(r["passed"] for r in results),
        }

    async def switch_in(ctx: ToolContext, args: SwitchInput) -> dict[str, Any]:
        rule = table_rule(ctx, args.table)
        gates = _rule_checks(rule, args.table)
        dbt_rule = rule.get("switch_in_dbt")
        if not gates and not dbt_rule:
            # "Verified" must mean something: a table policy attaches no checks to is never switched in.
            raise ToolFailure(
                f"switch-in of `{args.table}` refused: policy attaches no `switch_in_checks` to this table"
            )
        results = await measure(ctx, args.table, args.branch, gates) if gates else []
        ctx.audit_detail.update(branch=args.branch, checks=results)
        failing = [r for r in results if not r["passed"]]
        if failing:
            said = "; ".join(f"{r['check']} = {r['value']} (want [{r['min']}, {r['max']}])" for r in failing)
            raise ToolFailure(
                f"switch-in of `{args.table}` refused, failing checks: {said}", {"checks": results}
            )
        tested = (
            await _dbt_tests(dbt_gate, ctx, args.table, args.branch, dbt_rule, results) if dbt_rule else None
        )
        if rule.get("switch_in_approval") and not ctx.approved:
            # A human is asked only about a switch that can happen: not one production moved away from.
            await call(args.table, lambda wh, t: wh.check_fast_forward(t, args.branch))
            passed = f" (dbt tests `{tested['select']}` passed on the branch)" if tested else ""
            raise NeedsApproval(
                f"switching branch `{args.branch}` into `{args.table}` needs approval{passed}",
                {"checks": results, **({"dbt_tests": tested} if tested else {})},
            )
        result = await call(args.table, lambda wh, t: wh.switch_in(t, args.branch))
        ctx.audit_detail.update(before_snapshot=result.before, after_snapshot=result.after)
        return {
            "table": args.table,
            "branch": args.branch,
            "before_snapshot": result.before,
            "after_snapshot": result.after,
            "checks": results,
        }

    async def rollback_table(ctx: ToolContext, args: RollbackInput) -> dict[str, Any]:
        flag = args.discard_later_commits
        result = await call(args.table, lambda wh, t: wh.rollback(t, args.to_snapshot, flag))
        discarded = [c.as_dict() for c in result.discarded]
        # What was thrown away goes on the record; `before_snapshot` still reaches it.
        ctx.audit_detail.update(
            before_snapshot=result.before, after_snapshot=result.after, discarded_later_commits=discarded
        )
        return {
            "table": args.table,
            "before_snapshot": result.before,
            "after_snapshot": result.after,
            "discarded_later_commits": discarded,
        }

    async def discard_branch(ctx: ToolContext, args: CloneInput) -> dict[str, Any]:
        await call(args.table, lambda wh, t: wh.discard_branch(t, args.branch))
        ctx.audit_detail.update(branch=args.branch, discarded=True)
        return {"table": args.table, "branch": args.branch, "discarded": True}

    async def stop() -> None:
        await anyio.to_thread.run_sync(registry.close)

    tools: list[BuiltinTool[Any]] = [
        BuiltinTool(
            "data.clone_table", "Cut a branch of a production table to fix data on.", CloneInput, clone_table
        ),
        BuiltinTool(
            "data.update_rows",
            "Set columns on the branch rows matching `where` (capped; refuses if more rows match).",
            UpdateInput,
            update_rows,
        ),
        BuiltinTool(
            "data.delete_rows", "Delete the branch rows matching `where` (capped).", DeleteInput, delete_rows
        ),
        BuiltinTool(
            "data.query_quality_metrics",
            "Measure a branch or production: row count, null rate, duplicates, freshness, min/max, named.",
            QualityInput,
            query_quality_metrics,
            read_only=True,
            idempotent=True,
        ),
        BuiltinTool(
            "data.switch_in",
            "Make a branch production (fast-forward only) after the table's policy checks pass on it.",
            SwitchInput,
            switch_in,
            destructive=True,
        ),
        BuiltinTool(
            "data.rollback_table",
            "Set production back to an earlier snapshot handle. Refused, naming them, if production "
            "commits were made after the switch-in being undone, unless `discard_later_commits`.",
            RollbackInput,
            rollback_table,
            destructive=True,
        ),
        BuiltinTool("data.discard_branch", "Drop a branch.", CloneInput, discard_branch, destructive=True),
    ]
    return Toolset(name="data", tools={t.name: t for t in tools}, stop=stop)
