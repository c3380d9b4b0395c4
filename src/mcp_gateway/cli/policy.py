"""``mcp-gateway policy``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mcp_gateway.cli.common import (
    ConfigOpt,
    fail,
    load_cli_settings,
)

policy_app = typer.Typer(help="Check and explain policy.", no_args_is_help=True)


@policy_app.command("check")
def policy_check(path: Annotated[Path | None, typer.Argument()] = None, config: ConfigOpt = None) -> None:
    """Validate policy files; prints every problem as file:line."""
    from mcp_gateway.errors import PolicyLoadError
    from mcp_gateway.policy.load import load_policy

    target = path if path is not None else load_cli_settings(config).policies
    try:
        policy = load_policy(target)
    except PolicyLoadError as exc:
        for problem in exc.problems:
            typer.echo(problem, err=True)
        raise typer.Exit(1) from None
    typer.echo(f"ok: {target} ({len(policy.agents)} agents)")


@policy_app.command("explain")
def policy_explain(
    agent: str,
    tool: str,
    args_json: Annotated[str, typer.Argument(metavar="ARGS-JSON")] = "{}",
    config: ConfigOpt = None,
    path: Annotated[Path | None, typer.Option("--policy", help="policy file or directory")] = None,
) -> None:
    """Show the decision for AGENT calling TOOL with ARGS-JSON, and the rule that decided it."""
    from mcp_gateway.errors import PolicyLoadError
    from mcp_gateway.policy.explain import explain
    from mcp_gateway.policy.load import load_policy

    try:
        args = json.loads(args_json)
    except json.JSONDecodeError as exc:
        raise fail(f"ARGS-JSON is not valid JSON: {exc.msg}") from None
    if not isinstance(args, dict):
        raise fail("ARGS-JSON must be a JSON object")
    target = path if path is not None else load_cli_settings(config).policies
    try:
        policy = load_policy(target)
    except PolicyLoadError as exc:
        raise fail("; ".join(exc.problems)) from None
    typer.echo(explain(policy, agent, tool, args))
