"""Masked columns in a qualified query: where they may appear, and which output columns carry a mask.

The rule is simple on purpose: a masked column may only be *selected as it is*. In every scope (the
query, each CTE, derived table and subquery) a column that resolves to a masked one (directly, or
through a CTE or derived table that selected it as it is) may appear only as a plain projection
(``email`` or ``email AS e``). Anywhere else (WHERE, JOIN ... ON/USING, GROUP BY, HAVING, ORDER BY,
a window, DISTINCT, any function or expression, a scalar/EXISTS/IN subquery's output, a set
operation's branch) the query is refused, because each of those lets the raw value shape the answer
(``WHERE email LIKE 'a%'`` is a one-bit oracle; ``UNION`` deduplicates raw values; ``length(email)``
is a function of it). The mask itself is applied to the result rows (``policy/masking.py``).

Resolution is sqlglot's (``qualify`` has made every column ``"alias"."name"`` and expanded ``*``);
a column it cannot place is refused, not assumed unmasked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from sqlglot import exp
from sqlglot.optimizer.scope import Scope, ScopeType

from mcp_gateway.connectors.warehouse.base import QueryRefused
from mcp_gateway.policy.masking import STRICTNESS, ColumnMask

_PLAIN_ONLY = (
    "may only be selected as it is: not in WHERE, JOIN, GROUP BY, HAVING, ORDER BY, DISTINCT, a window, "
    "a function, an expression, a subquery expression or a set operation"
)


def _refused(message: str) -> QueryRefused:
    return QueryRefused("masked_column", message)


def _stricter(a: ColumnMask | None, b: ColumnMask | None) -> ColumnMask | None:
    if a is None or b is None:
        return a or b
    return a if STRICTNESS[a.mode] >= STRICTNESS[b.mode] else b


def _resolve(
    scope: Scope,
    column: exp.Column,
    table_masks: Callable[[exp.Table], Mapping[str, ColumnMask]],
    outputs: Mapping[int, Mapping[str, ColumnMask]],
) -> ColumnMask | None:
    """The mask a qualified column carries, looked up in its scope or an enclosing one."""
    current: Scope | None = scope
    while current is not None:
        source = current.sources.get(column.table)
        if isinstance(source, exp.Table):
            return table_masks(source).get(column.name.casefold())
        if isinstance(source, Scope):
            return outputs.get(id(source.expression), {}).get(column.name)
        current = current.parent
    raise _refused(f"column `{column.table}.{column.name}` cannot be placed in the query")


def _check_scope(
    scope: Scope,
    table_masks: Callable[[exp.Table], Mapping[str, ColumnMask]],
    outputs: dict[int, dict[str, ColumnMask]],
    placed: set[int],
) -> list[ColumnMask | None]:
    select = scope.expression
    if isinstance(select, exp.SetOperation):
        for branch in (select.left, select.right):
            if outputs.get(id(branch)):
                raise _refused(f"a masked column {_PLAIN_ONLY} (here: a set operation)")
        outputs[id(select)] = {}
        return [None] * len(select.named_selects)
    if not isinstance(select, exp.Select):
        raise _refused("the query has a part the mask check does not understand")
    projections: dict[int, int] = {}
    for index, projection in enumerate(select.expressions):
        inner = projection.this if isinstance(projection, exp.Alias) else projection
        if isinstance(inner, exp.Column):
            projections[id(inner)] = index
    per_output: list[ColumnMask | None] = [None] * len(select.expressions)
    for column in scope.columns:
        if not column.table:
            continue
        mask = _resolve(scope, column, table_masks, outputs)
        placed.add(id(column))
        if mask is None:
            continue
        at = projections.get(id(column))
        if at is None:
            raise _refused(f"column `{column.name}` is masked ({mask.mode}) and {_PLAIN_ONLY}")
        per_output[at] = _stricter(per_output[at], mask)
    by_name: dict[str, ColumnMask] = {}
    for projection, mask in zip(select.expressions, per_output, strict=True):
        if mask is not None:
            name = projection.alias_or_name
            by_name[name] = _stricter(by_name.get(name), mask) or mask
    if by_name:
        if select.args.get("distinct"):
            raise _refused(f"a masked column {_PLAIN_ONLY} (here: DISTINCT)")
        if scope.scope_type in (ScopeType.SUBQUERY, ScopeType.UDTF, ScopeType.UNION):
            raise _refused(f"a masked column {_PLAIN_ONLY} (here: a subquery expression or set operation)")
        # ORDER BY may name an output by its alias or position (qualify turns positions into aliases).
        for column in select.find_all(exp.Column):
            if not column.table and column.name in by_name:
                raise _refused(f"column `{column.name}` is masked and {_PLAIN_ONLY}")
    outputs[id(select)] = by_name
    return per_output


def output_masks(
    root: exp.Query,
    scopes: Sequence[Scope],
    table_masks: Callable[[exp.Table], Mapping[str, ColumnMask]],
) -> list[ColumnMask | None]:
    """The mask of each output column of ``root`` (None: unmasked), after checking every scope.

    Args:
        root: the qualified query.
        scopes: ``traverse_scope(root)`` (inner scopes first, the root last).
        table_masks: a real table's masks by lower-cased column name.

    Raises:
        QueryRefused: a masked column used beyond a plain projection, or a column that cannot be placed.
    """
    outputs: dict[int, dict[str, ColumnMask]] = {}
    placed: set[int] = set()
    result: list[ColumnMask | None] = []
    for scope in scopes:
        per_output = _check_scope(scope, table_masks, outputs, placed)
        if scope.expression is root:
            result = per_output
    for column in root.find_all(exp.Column):
        if column.table and id(column) not in placed:
            raise _refused(f"column `{column.table}.{column.name}` cannot be placed in the query")
    return result
