"""``mcp-gateway admin``: tokens for the admin HTTP API (``mga_...``; never valid on ``/mcp``)."""

from __future__ import annotations

from mcp_gateway.cli.tokens import token_commands

admin_app = token_commands(
    "admins", "admin", "the admin's name", help_text="Issue, list and revoke admin API tokens."
)
