"""``python -m mcp_gateway.schemas``: regenerate the shipped JSON Schema files from the models."""

from mcp_gateway.schemas import main

main()
