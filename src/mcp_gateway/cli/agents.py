"""``mcp-gateway agents``."""

from __future__ import annotations

from typing import Annotated

import typer

from mcp_gateway.cli import tokens
from mcp_gateway.cli.common import ConfigOpt, ExpiresOpt, JsonOpt, load_cli_settings, read_settings

agents_app = typer.Typer(help="Issue, list and revoke agent tokens.", no_args_is_help=True)


@agents_app.command("create")
def agents_create(
    name: Annotated[str, typer.Argument(metavar="NAME", help="the agent's name, as policy names it")],
    config: ConfigOpt = None,
    expires: ExpiresOpt = None,
) -> None:
    """Issue a token for agent NAME. The token is printed once and stored only as a salted hash."""
    from mcp_gateway.app.wiring import open_agents

    settings = load_cli_settings(config)
    tokens.issue(open_agents(settings), name, expires, settings)


@agents_app.command("list")
def agents_list(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """List issued tokens (ids and dates only)."""
    from mcp_gateway.app.wiring import open_agents
    from mcp_gateway.config import SQLiteStore

    settings = read_settings(config)
    if isinstance(settings.agents, SQLiteStore):
        tokens.require_store(settings.data_path(settings.agents.path), "agent token")
    tokens.show(open_agents(settings, read_only=True), as_json)


@agents_app.command("revoke")
def agents_revoke(
    name_or_token_id: Annotated[
        str,
        typer.Argument(
            metavar="NAME|TOKEN_ID", help="an agent's name (all its live tokens) or one token's id"
        ),
    ],
    config: ConfigOpt = None,
) -> None:
    """Revoke every token of an agent, or one token by its id."""
    from mcp_gateway.app.wiring import open_agents

    settings = load_cli_settings(config)
    tokens.revoke(open_agents(settings), name_or_token_id, "", settings)
