"""``mcp-gateway agents``."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from mcp_gateway.cli.common import (
    ConfigOpt,
    fail,
    iso,
    load_cli_settings,
    parse_expiry,
)
from mcp_gateway.errors import GatewayError

agents_app = typer.Typer(help="Issue, list and revoke agent tokens.", no_args_is_help=True)


@agents_app.command("create")
def agents_create(
    name: str,
    config: ConfigOpt = None,
    expires: Annotated[str | None, typer.Option(help="30d, 12h, or an ISO-8601 time")] = None,
) -> None:
    """Issue a token for agent NAME. The token is printed once and stored only as a salted hash."""
    from mcp_gateway.wiring import open_agents

    settings = load_cli_settings(config)
    store = open_agents(settings)
    try:
        expires_at = parse_expiry(expires, time.time()) if expires else None
        record, token = store.create(name, expires_at=expires_at)
    except GatewayError as exc:
        raise fail(str(exc)) from None
    finally:
        store.close()
    typer.echo(
        f"agent {record.name} (token id {record.token_id}, expires {iso(record.expires_at)})", err=True
    )
    typer.echo(token)


@agents_app.command("list")
def agents_list(config: ConfigOpt = None) -> None:
    """List issued tokens (ids and dates only)."""
    from mcp_gateway.wiring import open_agents

    store = open_agents(load_cli_settings(config))
    try:
        for rec in store.list():
            state = (
                "revoked"
                if rec.revoked_at
                else ("expired" if rec.expires_at and rec.expires_at < time.time() else "live")
            )
            typer.echo(
                f"{rec.name}\t{rec.token_id}\t{state}"
                f"\tcreated {iso(rec.created_at)}\texpires {iso(rec.expires_at)}"
            )
    finally:
        store.close()


@agents_app.command("revoke")
def agents_revoke(name_or_token_id: str, config: ConfigOpt = None) -> None:
    """Revoke every token of an agent, or one token by its id."""
    from mcp_gateway.wiring import open_agents

    store = open_agents(load_cli_settings(config))
    try:
        count = store.revoke(name_or_token_id)
    finally:
        store.close()
    if count == 0:
        raise fail(f"no live token matches `{name_or_token_id}`")
    typer.echo(f"revoked {count} token(s)")
