"""``mcp-gateway admin``: tokens for the admin HTTP API (``mga_...``; never valid on ``/mcp``)."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from mcp_gateway.cli.common import ConfigOpt, fail, iso, load_cli_settings, parse_expiry
from mcp_gateway.errors import GatewayError

admin_app = typer.Typer(help="Issue, list and revoke admin API tokens.", no_args_is_help=True)


@admin_app.command("create")
def admin_create(
    name: str,
    config: ConfigOpt = None,
    expires: Annotated[str | None, typer.Option(help="30d, 12h, or an ISO-8601 time")] = None,
) -> None:
    """Issue an admin token for NAME. It is printed once and stored only as a salted hash."""
    from mcp_gateway.admin import SQLiteAdminStore, admin_store_path

    store = SQLiteAdminStore(admin_store_path(load_cli_settings(config).data_dir))
    try:
        expires_at = parse_expiry(expires, time.time()) if expires else None
        record, token = store.create(name, expires_at=expires_at)
    except GatewayError as exc:
        raise fail(str(exc)) from None
    finally:
        store.close()
    typer.echo(
        f"admin {record.name} (token id {record.token_id}, expires {iso(record.expires_at)})", err=True
    )
    typer.echo(token)


@admin_app.command("list")
def admin_list(config: ConfigOpt = None) -> None:
    """List admin tokens (ids and dates only)."""
    from mcp_gateway.admin import SQLiteAdminStore, admin_store_path

    store = SQLiteAdminStore(admin_store_path(load_cli_settings(config).data_dir))
    try:
        records = store.list()
    finally:
        store.close()
    now = time.time()
    for rec in records:
        state = (
            "revoked"
            if rec.revoked_at
            else ("expired" if rec.expires_at and rec.expires_at < now else "live")
        )
        typer.echo(
            f"{rec.name}\t{rec.token_id}\t{state}"
            f"\tcreated {iso(rec.created_at)}\texpires {iso(rec.expires_at)}"
        )


@admin_app.command("revoke")
def admin_revoke(name_or_token_id: str, config: ConfigOpt = None) -> None:
    """Revoke every token of an admin, or one token by its id."""
    from mcp_gateway.admin import SQLiteAdminStore, admin_store_path

    store = SQLiteAdminStore(admin_store_path(load_cli_settings(config).data_dir))
    try:
        count = store.revoke(name_or_token_id)
    finally:
        store.close()
    if count == 0:
        raise fail(f"no live admin token matches `{name_or_token_id}`")
    typer.echo(f"revoked {count} admin token(s)")
