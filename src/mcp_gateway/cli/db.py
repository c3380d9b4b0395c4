"""``mcp-gateway db``: the shared database's schema (versioned migrations)."""

from __future__ import annotations

import typer

db_app = typer.Typer(help="Create or upgrade the shared database's schema.", no_args_is_help=True)
