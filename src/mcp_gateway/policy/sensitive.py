"""Which arguments of a call the policy marks ``sensitive: true``, and reasons that do not quote them.

Pure, and apart from the evaluator on purpose: sensitivity changes what the *audit record* holds
(a keyed HMAC instead of the value), never whether a call is allowed, so the decision path does not
pay for it. Marks are indexed once per compiled ``Policy`` (exact tool names in a dict, globs in a
list), so a call costs one dict lookup plus one match per glob grant that marks something.

A mark on a tool applies to every caller of that tool, not only to the agents whose grants carry it:
a caller without a grant is audited too (its call is denied), and its copy of a password must not
be stored in clear either.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from mcp_gateway.policy.model import CompiledConstraint, CompiledGrant, Policy, is_glob
from mcp_gateway.types import Decision

WITHHELD = "(sensitive, value withheld) violates a constraint"


@dataclass(frozen=True, slots=True)
class _Index:
    exact: Mapping[str, frozenset[str]]
    globs: tuple[tuple[Callable[[str], object], frozenset[str]], ...]


def _marked(constraints: Iterable[CompiledConstraint]) -> set[str]:
    return {c.arg for c in constraints if c.sensitive}


def _grant_marks(grant: CompiledGrant) -> set[str]:
    names = _marked(grant.constraints)
    for rule in grant.deny_rules:
        names |= _marked(rule.conditions)
    return names


def _build(policy: Policy) -> _Index:
    exact: dict[str, set[str]] = {}
    globs: list[tuple[Callable[[str], object], frozenset[str]]] = []
    for grants in policy.agents.values():
        for grant in grants:
            names = _grant_marks(grant)
            if not names:
                continue
            if is_glob(grant.tool):
                globs.append((re.compile(fnmatch.translate(grant.tool)).match, frozenset(names)))
            else:
                exact.setdefault(grant.tool, set()).update(names)
    return _Index({tool: frozenset(names) for tool, names in exact.items()}, tuple(globs))


# One index, for the policy in force; a reload makes a new Policy object and so a new index.
_cache: tuple[Policy, _Index] | None = None
_cache_lock = threading.Lock()


def _index(policy: Policy) -> _Index:
    global _cache
    cached = _cache
    if cached is not None and cached[0] is policy:
        return cached[1]
    index = _build(policy)
    with _cache_lock:
        _cache = (policy, index)
    return index


def sensitive_args(policy: Policy, agent: str, tool: str) -> frozenset[str]:
    """The names of the arguments of ``tool`` whose values must be audited only as an HMAC.

    Args:
        policy: the compiled policy.
        agent: the caller; its grants mark arguments, and so do other agents' grants for the same
            tool (see the module docstring), so the answer does not depend on it today.
        tool: the tool name as called (matched against exact grant names and globs).

    Returns:
        The marked argument names; empty when no grant matching ``tool`` marks any.
    """
    del agent  # part of the query's contract; marks are deliberately per tool (module docstring)
    index = _index(policy)
    names = index.exact.get(tool, frozenset())
    for match, marked in index.globs:
        if match(tool):
            names = names | marked
    return names


def withhold_reasons(decision: Decision, names: AbstractSet[str]) -> Decision:
    """``decision`` with every reason that quotes a value of an argument in ``names`` rewritten.

    A constraint failure reads ``argument `NAME` = VALUE ...``; for a sensitive argument it becomes
    ``argument `NAME` (sensitive, value withheld) violates a constraint``. The decision's rule ids
    still say which grant refused it.

    Args:
        decision: the evaluator's decision.
        names: the sensitive argument names (``sensitive_args``).
    """
    if not names:
        return decision
    prefixes = tuple((name, f"argument `{name}` = ") for name in names)

    def withhold(reason: str) -> str:
        for name, prefix in prefixes:
            if reason.startswith(prefix):
                return f"argument `{name}` {WITHHELD}"
        return reason

    reasons = tuple(withhold(reason) for reason in decision.reasons)
    return decision if reasons == decision.reasons else dataclasses.replace(decision, reasons=reasons)
