"""``mcp-gateway config``: check a whole gateway config (settings and policies) before serving it."""

from __future__ import annotations

import typer

config_app = typer.Typer(help="Check a gateway config and its policies.", no_args_is_help=True)
