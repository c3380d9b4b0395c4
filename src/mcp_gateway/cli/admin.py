"""``mcp-gateway admin``: tokens for the admin HTTP API (``mga_...``; never valid on ``/mcp``)."""

from __future__ import annotations

from typing import Annotated

import typer

from mcp_gateway.cli import tokens
from mcp_gateway.cli.common import ConfigOpt, ExpiresOpt, JsonOpt, load_cli_settings, read_settings
from mcp_gateway.config import Settings
from mcp_gateway.identity.admin_tokens import AdminTokens

admin_app = typer.Typer(help="Issue, list and revoke admin API tokens.", no_args_is_help=True)


def _store(settings: Settings, *, read_only: bool = False) -> AdminTokens:
    # The same store a running gateway opens (``admins:`` or the shared ``store:``).
    from mcp_gateway.app.wiring import open_admins

    return open_admins(settings, read_only=read_only)


@admin_app.command("create")
def admin_create(
    name: Annotated[str, typer.Argument(metavar="NAME", help="the admin's name")],
    config: ConfigOpt = None,
    expires: ExpiresOpt = None,
) -> None:
    """Issue an admin token for NAME. It is printed once and stored only as a salted hash."""
    settings = load_cli_settings(config)
    tokens.issue(_store(settings), name, expires, settings)


@admin_app.command("list")
def admin_list(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """List admin tokens (ids and dates only)."""
    settings = read_settings(config)
    from mcp_gateway.app.wiring import sqlite_store_path

    path = sqlite_store_path(settings, "admins")
    if path is not None:
        tokens.require_store(path, "admin token")
    tokens.show(_store(settings, read_only=True), as_json)


@admin_app.command("revoke")
def admin_revoke(
    name_or_token_id: Annotated[
        str,
        typer.Argument(
            metavar="NAME|TOKEN_ID", help="an admin's name (all its live tokens) or one token's id"
        ),
    ],
    config: ConfigOpt = None,
) -> None:
    """Revoke every token of an admin, or one token by its id."""
    settings = load_cli_settings(config)
    tokens.revoke(_store(settings), name_or_token_id, "admin ", settings)
