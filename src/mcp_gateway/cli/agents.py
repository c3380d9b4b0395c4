"""``mcp-gateway agents``: tokens agents present on ``/mcp``."""

from __future__ import annotations

from mcp_gateway.cli.tokens import token_commands

agents_app = token_commands(
    "agents",
    "agent",
    "the agent's name, as policy names it",
    help_text="Issue, list and revoke agent tokens.",
)
