"""``mcp-gateway policy``: check policy files (and the tools they name) and explain decisions."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mcp_gateway.cli.common import (
    ConfigOpt,
    fail,
    load_cli_settings,
)
from mcp_gateway.errors import GatewayError

if TYPE_CHECKING:
    from mcp_gateway.config import Settings
    from mcp_gateway.policy.catalog import UpstreamCatalog

policy_app = typer.Typer(help="Check and explain policy.", no_args_is_help=True)


def pinned_catalog(settings: Settings) -> dict[str, UpstreamCatalog]:
    """Each configured upstream's prefix and pinned tool names, read from the pin store read-only.

    The store is opened with SQLite's ``mode=ro``: checking a policy never writes (or migrates) the
    store a running gateway uses. Both pin-store layouts are read (``pins`` with a ``kind``, and the
    older ``tool_pins``).

    Raises:
        GatewayError: there is no pin store, or it cannot be read.
    """
    from mcp_gateway.policy.catalog import UpstreamCatalog

    path = settings.data_path(settings.pinning.path)
    if not path.is_file():
        raise GatewayError(
            f"no pin store at `{path}`: start the gateway once so it lists and pins its upstreams' tools"
        )
    pinned: dict[str, set[str]] = {}
    listed: set[str] = set()
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "pins" in tables:
                rows = db.execute("SELECT upstream, name FROM pins WHERE kind = 'tool'").fetchall()
                if "pin_listed" in tables:
                    listed = {r[0] for r in db.execute("SELECT upstream FROM pin_listed WHERE kind = 'tool'")}
            elif "tool_pins" in tables:
                rows = db.execute("SELECT upstream, tool FROM tool_pins").fetchall()
            else:
                rows = []
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise GatewayError(f"cannot read the pin store `{path}`: {type(exc).__name__}") from None
    for upstream, tool in rows:
        pinned.setdefault(upstream, set()).add(tool)
    catalog: dict[str, UpstreamCatalog] = {}
    for name, upstream in settings.upstreams.items():
        prefix = upstream.prefix if upstream.prefix is not None else f"{name}."
        known = name in pinned or name in listed
        tools = frozenset(prefix + tool for tool in pinned.get(name, ())) if known else None
        catalog[name] = UpstreamCatalog(prefix, tools)
    return catalog


@policy_app.command("check")
def policy_check(
    path: Annotated[
        Path | None,
        typer.Argument(metavar="PATH", help="a policy file or directory (default: the config's `policies`)"),
    ] = None,
    config: ConfigOpt = None,
    catalog: Annotated[
        bool,
        typer.Option(
            "--catalog", help="also warn about grants matching no tool in the upstreams' pinned catalogs"
        ),
    ] = False,
    strict: Annotated[bool, typer.Option("--strict", help="exit 1 on warnings too")] = False,
) -> None:
    """Validate policy files; prints every problem as file:line.

    A grant under a built-in toolset's prefix (data., ops., salesforce., gateway.) naming no built-in
    tool is an error. With --catalog, a grant matching no tool of an upstream's pinned catalog is a
    warning (the pin store is opened read-only).
    """
    from mcp_gateway.app.toolsets import builtin_tool_names
    from mcp_gateway.errors import PolicyLoadError
    from mcp_gateway.policy.catalog import check_catalog
    from mcp_gateway.policy.load import load_policy

    try:
        # A file checked on its own needs no gateway.yaml; the policy directory and --catalog do.
        settings = load_cli_settings(config) if catalog or path is None else None
        target = path or (settings.policies if settings is not None else Path("policies"))
        builtin = builtin_tool_names()
        upstreams = pinned_catalog(settings) if catalog and settings is not None else None
    except GatewayError as exc:
        raise fail(str(exc)) from None
    try:
        policy = load_policy(target, builtin_tools=builtin)
    except PolicyLoadError as exc:
        for problem in exc.problems:
            typer.echo(problem, err=True)
        raise typer.Exit(1) from None
    findings = check_catalog(policy, builtin, upstreams)
    for warning in findings.warnings:
        typer.echo(f"warning: {warning}", err=True)
    count = len(findings.warnings)
    suffix = f", {count} warning{'s' if count != 1 else ''}" if count else ""
    # The version the gateway will report for these files (/readyz, policy_reload and call records).
    typer.echo(f"ok: {target} ({len(policy.agents)} agents{suffix}; version {policy.version})")
    if strict and count:
        raise typer.Exit(1)


@policy_app.command("explain")
def policy_explain(
    agent: Annotated[str, typer.Argument(metavar="AGENT", help="the calling agent")],
    tool: Annotated[str, typer.Argument(metavar="TOOL", help="the tool it calls, as the agent sees it")],
    args_json: Annotated[
        str, typer.Argument(metavar="ARGS-JSON", help="the call's arguments, a JSON object")
    ] = "{}",
    config: ConfigOpt = None,
    path: Annotated[
        Path | None,
        typer.Option("--policy", metavar="PATH", help="policy file or directory (default: the config's)"),
    ] = None,
) -> None:
    """Show the decision for AGENT calling TOOL with ARGS-JSON, the rule that decided it, and the
    approvals and quotas that apply."""
    from mcp_gateway.errors import PolicyLoadError
    from mcp_gateway.policy.explain import explain
    from mcp_gateway.policy.load import load_policy

    try:
        args = json.loads(args_json)
    except json.JSONDecodeError as exc:
        raise fail(f"ARGS-JSON is not valid JSON: {exc.msg}") from None
    if not isinstance(args, dict):
        raise fail("ARGS-JSON must be a JSON object")
    try:
        settings = load_cli_settings(config)
    except GatewayError as exc:
        raise fail(str(exc)) from None
    target = path if path is not None else settings.policies
    try:
        policy = load_policy(target)
    except PolicyLoadError as exc:
        raise fail("; ".join(exc.problems)) from None
    typer.echo(explain(policy, agent, tool, args, min_approvers=settings.approvals.min_approvers))
