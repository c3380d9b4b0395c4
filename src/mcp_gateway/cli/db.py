"""``mcp-gateway db``: the shared database's schema (versioned migrations).

``migrate`` applies what is missing to every PostgreSQL store the config names (the gateway also does
this when it starts, under the same advisory lock); ``status`` only reads and creates nothing.
"""

from __future__ import annotations

import typer

from mcp_gateway.cli.common import ConfigOpt, fail, read_settings
from mcp_gateway.errors import GatewayError

db_app = typer.Typer(help="Create or upgrade the shared database's schema.", no_args_is_help=True)

_NONE = "no store of this config is on postgresql (set `store:` in gateway.yaml): nothing to do"


@db_app.command("migrate")
def db_migrate(config: ConfigOpt = None) -> None:
    """Create or upgrade the schema of every store on PostgreSQL; a no-op when up to date."""
    from mcp_gateway.app.databases import migrate_all

    settings = read_settings(config)
    try:
        done = migrate_all(settings)
    except GatewayError as exc:
        raise fail(str(exc)) from None
    if not done:
        typer.echo(_NONE, err=True)
    for component, applied in done:
        what = f"applied {', '.join(map(str, applied))}" if applied else "up to date"
        typer.echo(f"{component.name}\t{component.schema}\tversion {component.latest}\t{what}")


@db_app.command("status")
def db_status(config: ConfigOpt = None) -> None:
    """Show each PostgreSQL store's schema version (reads only). Exits 1 when any needs a migration."""
    from mcp_gateway.app.databases import schema_status

    settings = read_settings(config)
    try:
        found = schema_status(settings)
    except GatewayError as exc:
        raise fail(str(exc)) from None
    if not found:
        typer.echo(_NONE, err=True)
    behind = False
    for component, version in found:
        if version == 0:
            state = "not set up"
        elif version < component.latest:
            state = f"{component.latest - version} pending"
        elif version > component.latest:
            state = "newer than this gateway"
        else:
            state = "up to date"
        behind |= version != component.latest
        typer.echo(f"{component.name}\t{component.schema}\tversion {version} of {component.latest}\t{state}")
    if behind:
        raise typer.Exit(1)
