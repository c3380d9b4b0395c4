"""Build the built-in toolsets that ``gateway.yaml`` configures (each imported only when configured).

``data`` (warehouses), ``ops`` (orchestrators and jobs) and ``salesforce`` (orgs). A toolset whose
section is empty is not offered at all, so its tools appear in no catalog.
"""

from __future__ import annotations

from collections.abc import Callable

from mcp_gateway.config import Settings
from mcp_gateway.tools.base import Toolset
from mcp_gateway.types import SecretValue

Resolve = Callable[[str], SecretValue]


def build_toolsets(settings: Settings, resolve_secret: Resolve) -> list[Toolset]:
    """The toolsets for the configured sections, in a fixed order."""
    toolsets: list[Toolset] = []
    return toolsets
