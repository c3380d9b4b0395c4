"""Build the built-in toolsets that ``gateway.yaml`` configures (each imported only when configured).

``gateway`` (always: ``gateway.echo``), ``data`` (warehouses), ``ops`` (orchestrators and jobs) and
``salesforce`` (orgs). A toolset whose section is empty is not offered at all, so its tools appear in
no catalog. Every tool still needs a grant: a toolset that is offered is not a tool that is allowed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mcp_gateway.config import Settings
from mcp_gateway.errors import GatewayError
from mcp_gateway.tools.base import Toolset
from mcp_gateway.tools.gateway_info import build_gateway_toolset
from mcp_gateway.types import SecretValue

Resolve = Callable[[str], SecretValue]


def build_toolsets(settings: Settings, resolve_secret: Resolve) -> list[Toolset]:
    """The toolsets for the configured sections, in a fixed order."""
    toolsets: list[Toolset] = [build_gateway_toolset()]
    if settings.warehouses:
        from mcp_gateway.tools.data import build_data_toolset

        toolsets.append(build_data_toolset(settings.warehouses, resolve_secret))
    if settings.jobs:
        from mcp_gateway.tools.ops import build_ops_toolset

        toolsets.append(
            build_ops_toolset(settings.orchestrators, settings.jobs, settings.data_dir, resolve_secret)
        )
    if settings.salesforce:
        from mcp_gateway.tools.salesforce import build_salesforce_toolset

        toolsets.append(build_salesforce_toolset(settings.salesforce, resolve_secret))
    return toolsets


def builtin_tool_names() -> dict[str, frozenset[str]]:
    """Every built-in toolset's tool names, configured or not (building a toolset opens nothing).

    Policy loading refuses a grant under a built-in prefix that names no such tool (``data.update_row``
    would otherwise drop the permission without a word).
    """
    from mcp_gateway.tools.data import build_data_toolset
    from mcp_gateway.tools.ops import build_ops_toolset
    from mcp_gateway.tools.salesforce import build_salesforce_toolset

    def no_secrets(name: str) -> SecretValue:
        raise GatewayError(f"secret `{name}` is not needed to list tool names")

    toolsets = (
        build_gateway_toolset(),
        build_data_toolset({}, no_secrets),
        build_ops_toolset({}, {}, Path("."), no_secrets),
        build_salesforce_toolset({}, no_secrets),
    )
    return {toolset.name: frozenset(toolset.tools) for toolset in toolsets}
