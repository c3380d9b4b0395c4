"""``mcp-gateway init``: scaffold a working config folder."""

from __future__ import annotations

import typer


def init(directory: str = typer.Argument(".", help="the folder to create")) -> None:
    """Scaffold a config folder (gateway.yaml, a policy, a key file, .gitignore)."""
    raise typer.Exit(2)
