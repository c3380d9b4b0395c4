"""MCP Gateway: a governed Model Context Protocol gateway."""

__version__ = "0.1.0"
