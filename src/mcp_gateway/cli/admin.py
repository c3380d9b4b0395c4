"""``mcp-gateway admin``: tokens for the admin HTTP API (``mga_...``; never valid on ``/mcp``)."""

from __future__ import annotations

from typing import Annotated

import typer

from mcp_gateway.cli import tokens
from mcp_gateway.cli.common import ConfigOpt, load_cli_settings, read_settings
from mcp_gateway.config import Settings
from mcp_gateway.identity.admin_tokens import SQLiteAdminStore, admin_store_path

admin_app = typer.Typer(help="Issue, list and revoke admin API tokens.", no_args_is_help=True)


def _store(settings: Settings) -> SQLiteAdminStore:
    return SQLiteAdminStore(admin_store_path(settings.data_dir))


@admin_app.command("create")
def admin_create(
    name: str,
    config: ConfigOpt = None,
    expires: Annotated[str | None, typer.Option(help="30d, 12h, or an ISO-8601 time")] = None,
) -> None:
    """Issue an admin token for NAME. It is printed once and stored only as a salted hash."""
    settings = load_cli_settings(config)
    tokens.issue(_store(settings), name, expires, settings)


@admin_app.command("list")
def admin_list(config: ConfigOpt = None) -> None:
    """List admin tokens (ids and dates only)."""
    settings = read_settings(config)
    tokens.require_store(admin_store_path(settings.data_dir), "admin token")
    tokens.show(_store(settings))


@admin_app.command("revoke")
def admin_revoke(name_or_token_id: str, config: ConfigOpt = None) -> None:
    """Revoke every token of an admin, or one token by its id."""
    settings = load_cli_settings(config)
    tokens.revoke(_store(settings), name_or_token_id, "admin ", settings)
