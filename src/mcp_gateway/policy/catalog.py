"""Do the policy's grants name tools that exist? (pure: the caller passes what exists.)

A grant of a tool nobody offers grants nothing: the admin believes in a permission the gateway will
never give (``data.update_row`` when the tool is ``data.update_rows``). Two strengths of evidence:

- built-in toolsets are known exactly (the gateway's own code), so a name under a built-in prefix
  (``data.``, ``ops.``, ``salesforce.``, ``gateway.``) that no built-in tool has, or a glob there
  that matches none, is an **error**;
- an upstream's tools are known only from its last listing (the pinned catalog), which can lag the
  live server, so a grant under an upstream's prefix matching none of its pinned tools, or under no
  known prefix at all, is a **warning**.

Every finding is ``file:line: message`` (the grant's ``source``), like ``PolicyLoadError``'s problems.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from mcp_gateway.policy.model import CompiledGrant, Policy, is_glob

__all__ = ["CatalogFindings", "UpstreamCatalog", "builtin_name_problems", "check_catalog"]


@dataclass(frozen=True, slots=True)
class UpstreamCatalog:
    """What is known of one upstream's tools.

    Attributes:
        prefix: the public prefix of its tools (``time.``; may be empty).
        tools: the public names of its pinned tools; None when it has never been listed (unknown).
    """

    prefix: str
    tools: frozenset[str] | None


@dataclass(frozen=True, slots=True)
class CatalogFindings:
    """``errors`` make a policy wrong; ``warnings`` make it suspicious."""

    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def _literal_prefix(pattern: str) -> str:
    """The part of ``pattern`` before its first wildcard (all of it for an exact name)."""
    cut = min((i for i, ch in enumerate(pattern) if ch in "*?["), default=len(pattern))
    return pattern[:cut]


def _matches(pattern: str, names: Collection[str]) -> bool:
    if not is_glob(pattern):
        return pattern in names
    match = re.compile(fnmatch.translate(pattern)).match  # as the evaluator matches (case-sensitive)
    return any(match(name) for name in names)


def _grants(policy: Policy) -> list[CompiledGrant]:
    return [grant for grants in policy.agents.values() for grant in grants]


def _where(grant: CompiledGrant) -> str:
    return grant.source or "<policy>"


def _suggest(tool: str, names: Collection[str]) -> str:
    close = difflib.get_close_matches(tool, sorted(names), n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else ""


def builtin_name_problems(policy: Policy, builtin: Mapping[str, Collection[str]]) -> list[str]:
    """Grants under a built-in toolset's prefix that match none of its tools (errors).

    Args:
        policy: the compiled policy.
        builtin: toolset name (``data``) → every tool name it has (``data.query``, ...), whether or not
            this gateway configures it (a grant for an unconfigured toolset is not a typo).
    """
    problems: list[str] = []
    for grant in _grants(policy):
        head = _literal_prefix(grant.tool)
        for toolset in builtin:
            # Only a toolset whose prefix the grant names is looked up (the gateway's lookups build it).
            if not head.startswith(f"{toolset}.") or _matches(grant.tool, names := builtin[toolset]):
                continue
            kind = "pattern" if is_glob(grant.tool) else "tool"
            problems.append(
                f"{_where(grant)}: grant `{grant.id}` names unknown built-in {kind} `{grant.tool}`"
                f" (no `{toolset}` tool matches; it would grant nothing){_suggest(grant.tool, names)}"
            )
    return problems


def _owner(tool: str, upstreams: Mapping[str, UpstreamCatalog]) -> str | None:
    """The upstream whose prefix ``tool``'s literal part starts with (the longest such prefix)."""
    head = _literal_prefix(tool)
    owners = [(len(up.prefix), name) for name, up in upstreams.items() if head.startswith(up.prefix)]
    return max(owners)[1] if owners else None


def check_catalog(
    policy: Policy,
    builtin: Mapping[str, Collection[str]],
    upstreams: Mapping[str, UpstreamCatalog] | None = None,
) -> CatalogFindings:
    """Check every grant's tool against the built-in tools (errors) and, if given, the upstreams'
    pinned catalogs (warnings).

    Args:
        policy: the compiled policy.
        builtin: toolset name → its tool names (see ``builtin_name_problems``).
        upstreams: upstream name → its prefix and pinned tools; None: upstreams are not checked.
    """
    errors = builtin_name_problems(policy, builtin)
    if upstreams is None:
        return CatalogFindings(tuple(errors))
    builtin_prefixes = tuple(f"{toolset}." for toolset in builtin)
    every_builtin = frozenset(name for names in builtin.values() for name in names)
    warnings: list[str] = []
    unknown: set[str] = set()
    for grant in _grants(policy):
        tool = grant.tool
        if _literal_prefix(tool).startswith(builtin_prefixes):
            continue  # judged exactly above
        owner = _owner(tool, upstreams)
        if owner is None:
            if is_glob(tool):
                known = [up.tools for up in upstreams.values()]
                if all(names is not None for names in known) and not _matches(
                    tool, every_builtin.union(*(n for n in known if n is not None))
                ):
                    warnings.append(
                        f"{_where(grant)}: grant `{grant.id}` pattern `{tool}` matches no built-in tool"
                        " and no tool in any upstream's pinned catalog"
                    )
                continue
            warnings.append(
                f"{_where(grant)}: grant `{grant.id}` names tool `{tool}`, which is under no built-in"
                " toolset and no configured upstream's prefix"
            )
            continue
        catalog = upstreams[owner]
        if catalog.tools is None:
            unknown.add(owner)
        elif not _matches(tool, catalog.tools):
            kind = "pattern" if is_glob(tool) else "tool"
            warnings.append(
                f"{_where(grant)}: grant `{grant.id}` {kind} `{tool}` matches no tool in upstream"
                f" `{owner}`'s pinned catalog ({len(catalog.tools)} tools){_suggest(tool, catalog.tools)}"
            )
    warnings.extend(
        f"upstream `{name}` has no pinned catalog yet (the gateway has not listed it): its grants"
        " were not checked"
        for name in sorted(unknown)
    )
    return CatalogFindings(tuple(errors), tuple(warnings))
