"""``mcp-gateway quota``: see and reset quota usage (admin, audited)."""

from __future__ import annotations

import typer

quota_app = typer.Typer(help="See and reset quota usage.", no_args_is_help=True)
